//! TLS on the Raft port (rustls with the `ring` provider): mutual TLS between members, and TLS
//! for client sessions on the same port.
//!
//! Every member holds a certificate signed by the cluster's CA that names it: the DNS name
//! [`node_name`] (`node-<id>.raftor`). A node dialling a peer checks that the peer's certificate
//! names the peer it meant to reach, and presents its own; the accepting node verifies that
//! certificate against the CA during the handshake, and refuses a peer `Hello` whose node id the
//! certificate does not name ([`certificate_names_node`]). So a node cannot impersonate another, and
//! nothing reaches the rules from a connection without a valid certificate.
//!
//! Clients share the port: a client certificate is optional at the handshake (clients
//! authenticate with tokens, checked by the service), but a peer `Hello` without one is refused.
//!
//! The certificate, its key and the CA certificates can be replaced while the node runs: the
//! endpoint reads the files every [`RELOAD_PERIOD`] and, when they changed and pass the checks
//! made at start, every later handshake uses them ([`live`]; the CA file may hold several CAs,
//! the old and the new, while a new CA is rolled out). Each CA certificate is trusted only
//! within its validity ([`anchors`]), by members and by clients alike.

mod anchors;
mod fixed_ca;
mod live;

use anchors::Anchors;
use fixed_ca::FixedCaVerifier;
pub(crate) use live::Presented;
use live::{Credentials, Live, Pem};
use raftor_core::NodeId;
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// The ALPN name of HTTP/1.1, which raftor's HTTPS clients and server speak.
const HTTP_1_1: &[u8] = b"http/1.1";

/// The DNS name a member's certificate carries: `node-<id>.raftor`.
pub fn node_name(id: NodeId) -> String {
    format!("node-{}.raftor", id.0)
}

/// The node a DNS name of the form [`node_name`] names, if it has that form.
fn node_of_name(name: &str) -> Option<NodeId> {
    let id = name.strip_prefix("node-")?.strip_suffix(".raftor")?;
    if id.starts_with('+') || (id.len() > 1 && id.starts_with('0')) {
        return None;
    }
    id.parse::<u64>().ok().map(NodeId)
}

/// The cryptography every TLS configuration of raftor uses: rustls's `ring` provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why TLS could not be set up.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
}

fn invalid(what: impl Into<String>, reason: impl std::fmt::Display) -> TlsError {
    TlsError::Invalid {
        what: what.into(),
        reason: reason.to_string(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every handshake a full one, served (here) and dialled (`Resumption::disabled` on the client
/// configurations): a resumed session skips the checks of the credentials in force, so it would
/// keep a certificate of a CA dropped since trusted for as long as the session lasted in a
/// cache. Members and clients hold their connections long; a browser or curl pays one more
/// signature per connection.
fn without_resumption(config: &mut ServerConfig) {
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
}

/// The certificate chain the other side of a connection presented at its handshake (empty if
/// none).
pub(crate) fn presented_chain(connection: &rustls::CommonState) -> Vec<CertificateDer<'static>> {
    connection
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .map(|certificate| certificate.clone().into_owned())
        .collect()
}

/// Why a connection is closed once [`until_distrusted`] resolves.
pub(crate) const DISTRUSTED: &str =
    "its certificate is no longer trusted (the TLS files changed, or it or its CA expired)";

/// [`NodeTls::until_distrusted`] for a connection that may have neither TLS nor a certificate
/// presented: then pending for good.
pub(crate) async fn until_distrusted(tls: Option<NodeTls>, presented: Option<Presented>) {
    match (tls, presented) {
        (Some(tls), Some(presented)) => tls.until_distrusted(presented).await,
        _ => std::future::pending().await,
    }
}

/// The text of a member's three files.
fn read_files(files: &TlsFiles) -> Result<Pem, TlsError> {
    Ok(Pem {
        ca: read(&files.ca)?,
        cert: read(&files.cert)?,
        key: read(&files.key)?,
    })
}

/// What errors about the CA file call it ([`naming_file`] finds the file by it).
const CA_CERTIFICATE: &str = "CA certificate";

/// `error`, naming the file it is about.
fn naming_file(error: TlsError, files: &TlsFiles) -> TlsError {
    match error {
        TlsError::Invalid { what, reason } => {
            let path = match what.as_str() {
                CA_CERTIFICATE => &files.ca,
                "private key" => &files.key,
                _ => &files.cert,
            };
            invalid(format!("{what} ({})", path.display()), reason)
        }
        other => other,
    }
}

/// Every certificate in a PEM file's text (at least one).
pub fn certificates_from_pem(
    what: &str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(what, e))?;
    if certificates.is_empty() {
        return Err(invalid(what, "no PEM certificate in it"));
    }
    Ok(certificates)
}

/// The paths of a member's TLS files, as PEM: the cluster's CA certificate, this node's
/// certificate (signed by that CA, naming [`node_name`]) and its private key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A member's TLS set-up: how it accepts connections (peers and clients) and how it dials peers
/// (and the leader, when it forwards a client's request). Clones share the credentials, which
/// [`NodeTls::reload_if_changed`] replaces for every later handshake.
#[derive(Clone)]
pub struct NodeTls {
    /// This node's id, which its certificate must name.
    id: NodeId,
    /// Where the credentials were read from; `None` when given as text.
    files: Option<TlsFiles>,
    /// What the files held when last refused, so a refusal is reported once per change.
    refused: Arc<Mutex<Option<Refused>>>,
    /// The credentials in force, which every configuration below asks at each handshake.
    live: Arc<Live>,
    acceptor: tokio_rustls::TlsAcceptor,
    connector: tokio_rustls::TlsConnector,
    /// The same certificate for HTTPS, without asking browsers for a client certificate.
    https: Arc<ServerConfig>,
    /// Trusts the CA, presents nothing: for HTTPS requests to other members.
    https_client: Arc<ClientConfig>,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeTls(node {})", self.id.0)
    }
}

/// Why [`NodeTls::reload_if_changed`] kept the credentials in force.
#[derive(Debug, Error)]
#[error("{source}")]
pub struct ReloadError {
    pub source: TlsError,
    /// The files were refused as they are at the last look too: the same refusal, to report
    /// once (its text may differ: an expiry's names the time).
    pub again: bool,
}

/// What a refused reload found.
#[derive(PartialEq, Eq)]
enum Refused {
    /// A file could not be read, for this reason.
    Unreadable(String),
    /// The files held this.
    Files(Pem),
}

/// How often a node looks at its TLS files for a change ([`NodeTls::reload_if_changed`]), as it
/// does at its tokens file.
pub const RELOAD_PERIOD: Duration = Duration::from_secs(2);

/// How long before its certificate expires a node starts to warn
/// ([`NodeTls::log_certificate_validity`]): at start, at each reload, and every
/// [`EXPIRY_CHECK_PERIOD`].
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86_400);

/// How often a node looks at how long its certificate has left.
pub const EXPIRY_CHECK_PERIOD: Duration = Duration::from_secs(86_400);

impl NodeTls {
    /// Reads the files and checks that the certificate is signed by the CA, names node `id`, and
    /// goes with the key.
    pub fn load(id: NodeId, files: &TlsFiles) -> Result<NodeTls, TlsError> {
        let credentials =
            Credentials::from_pem(id, read_files(files)?).map_err(|e| naming_file(e, files))?;
        let mut tls = Self::with_credentials(id, credentials)?;
        tls.files = Some(files.clone());
        Ok(tls)
    }

    /// [`NodeTls::load`] from the files' PEM text.
    pub fn from_pem(id: NodeId, ca: &[u8], cert: &[u8], key: &[u8]) -> Result<NodeTls, TlsError> {
        let pem = Pem {
            ca: ca.to_vec(),
            cert: cert.to_vec(),
            key: key.to_vec(),
        };
        Self::with_credentials(id, Credentials::from_pem(id, pem)?)
    }

    fn with_credentials(id: NodeId, credentials: Credentials) -> Result<NodeTls, TlsError> {
        let live = Arc::new(Live::new(credentials));
        let provider = provider();
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("TLS", e))?
            .with_client_cert_verifier(live.clone())
            .with_cert_resolver(live.clone());
        without_resumption(&mut server);
        let mut https = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("TLS", e))?
            .with_no_client_auth()
            .with_cert_resolver(live.clone());
        without_resumption(&mut https);
        https.alpn_protocols = vec![HTTP_1_1.to_vec()];
        let mut https_client = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("TLS", e))?
            .dangerous()
            .with_custom_certificate_verifier(live.clone())
            .with_no_client_auth();
        https_client.alpn_protocols = vec![HTTP_1_1.to_vec()];
        https_client.resumption = Resumption::disabled();
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("TLS", e))?
            .dangerous()
            .with_custom_certificate_verifier(live.clone())
            .with_client_cert_resolver(live.clone());
        client.resumption = Resumption::disabled();
        Ok(NodeTls {
            id,
            files: None,
            refused: Arc::new(Mutex::new(None)),
            live,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
            https: Arc::new(https),
            https_client: Arc::new(https_client),
        })
    }

    /// Reads the files again and, if they changed, puts them in force for every later
    /// handshake, of every clone: `Ok(true)`. They must pass [`NodeTls::load`]'s checks as a
    /// whole (a certificate written before its key is refused until the key is there too); on
    /// an error the credentials in force stay. A connection already open stays unless they no
    /// longer accept the certificate its other side presented ([`NodeTls::until_distrusted`]).
    /// `Ok(false)` when nothing changed, or the set-up was not read from files.
    pub fn reload_if_changed(&self) -> Result<bool, ReloadError> {
        let Some(files) = &self.files else {
            return Ok(false);
        };
        let outcome = match read_files(files) {
            Err(error) => Err((Refused::Unreadable(error.to_string()), error)),
            Ok(pem) if self.live.current().pem == pem => Ok(false),
            // Checked again even if refused before: a certificate not valid yet becomes valid.
            Ok(pem) => match Credentials::from_pem(self.id, pem.clone()) {
                Ok(credentials) => {
                    self.live.replace(credentials);
                    Ok(true)
                }
                Err(error) => Err((Refused::Files(pem), naming_file(error, files))),
            },
        };
        let mut refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        match outcome {
            Ok(changed) => {
                *refused = None;
                Ok(changed)
            }
            Err((what, source)) => {
                let again = refused.as_ref() == Some(&what);
                *refused = Some(what);
                Err(ReloadError { source, again })
            }
        }
    }

    /// Resolves once the credentials in force no longer accept the certificate the other side
    /// of a connection presented (after a reload that dropped its CA, say, or once it expired);
    /// pending for as long as they do. The connection is then closed: a new one is checked
    /// afresh.
    pub(crate) async fn until_distrusted(&self, presented: Presented) {
        self.live.until_distrusted(presented).await
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The last second the node's certificate in force is valid (its `notAfter`, as peers check
    /// it: an intermediate's or the CA certificate's if that expires first). Follows reloads;
    /// renew before it.
    pub fn certificate_not_after(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.live.current().not_after.as_secs())
    }

    /// Logs until when the certificate in force is valid if `always` (at start, at a reload); a
    /// warning whenever it expires within [`EXPIRY_WARNING`], an error once it has expired.
    pub fn log_certificate_validity(&self, always: bool) {
        let not_after = self.certificate_not_after();
        let node = self.id;
        let valid_until = httpdate::fmt_http_date(not_after);
        // Valid through the second `not_after`, so expired only past its end.
        let Ok(left) = (not_after + Duration::from_secs(1)).duration_since(SystemTime::now())
        else {
            tracing::error!(%node, %valid_until, "this node's TLS certificate (or its CA certificate) has expired: members refuse its connections until it is renewed (README, Security)");
            return;
        };
        let days_left = format!("{:.1}", left.as_secs_f64() / 86_400.0);
        if left < EXPIRY_WARNING {
            tracing::warn!(%node, %valid_until, %days_left, "this node's TLS certificate (or its CA certificate, if that comes first) expires soon: renew it (README, Security)");
        } else if always {
            tracing::info!(%node, %valid_until, %days_left, "TLS certificate in force");
        }
    }

    pub(crate) fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }

    pub(crate) fn connector(&self) -> &tokio_rustls::TlsConnector {
        &self.connector
    }

    /// How this node dials another member's Raft port as a client (to forward a request to the
    /// leader): trusting the CA, presenting this node's certificate (which makes the session a
    /// member's).
    pub fn member_client(&self, peer: NodeId) -> ClientTls {
        ClientTls {
            config: self.connector.config().clone(),
            server_name: Some(node_name(peer)),
            member: Some(self.clone()),
        }
    }

    /// A client configuration trusting the cluster's CA, presenting no certificate, speaking
    /// HTTP/1.1: for asking another member's HTTPS API (to join).
    pub fn https_client_config(&self) -> Arc<ClientConfig> {
        self.https_client.clone()
    }

    /// The configuration for serving HTTPS with this node's certificate.
    pub fn https_config(&self) -> Arc<ServerConfig> {
        self.https.clone()
    }
}

/// How a client reaches a node over TLS: the CA it trusts, and optionally a certificate it
/// presents (members only). Cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    /// The name the node's certificate must carry; `None`: the host of the address dialled.
    server_name: Option<String>,
    /// The member that dials, when a member dials ([`NodeTls::member_client`]): its reloaded
    /// files may stop trusting the dialled node's certificate, and the connection then closes.
    member: Option<NodeTls>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientTls(server name {:?})", self.server_name)
    }
}

impl ClientTls {
    /// Trust the CA certificates in this PEM file; no client certificate.
    pub fn from_ca_file(path: &Path) -> Result<ClientTls, TlsError> {
        let pem = read(path)?;
        Self::from_ca_pem(&pem).map_err(|error| match error {
            TlsError::Invalid { what, reason } => {
                invalid(format!("{what} ({})", path.display()), reason)
            }
            other => other,
        })
    }

    /// Trust the CA certificates in this PEM text, each within its validity (refused when none
    /// is valid now); no client certificate.
    pub fn from_ca_pem(pem: &[u8]) -> Result<ClientTls, TlsError> {
        let provider = provider();
        let verifier = FixedCaVerifier::new(Anchors::from_pem(pem, &provider)?, &provider);
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("TLS", e))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(ClientTls {
            config: Arc::new(config),
            server_name: None,
            member: None,
        })
    }

    /// The node's certificate must carry `name` whatever address is dialled (for example
    /// [`node_name`] of the node meant).
    pub fn with_server_name(mut self, name: impl Into<String>) -> ClientTls {
        self.server_name = Some(name.into());
        self
    }

    /// The rustls configuration.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// The same configuration for an HTTPS client (HTTP/1.1 asked for by ALPN).
    pub fn https_config(&self) -> Arc<ClientConfig> {
        let mut config = (*self.config).clone();
        config.alpn_protocols = vec![HTTP_1_1.to_vec()];
        Arc::new(config)
    }

    /// The name to check the node's certificate against when dialling `addr` (`host:port`).
    pub fn server_name_for(&self, addr: &str) -> Result<ServerName<'static>, TlsError> {
        let host = match &self.server_name {
            Some(name) => name.as_str(),
            None => host_of(addr),
        };
        ServerName::try_from(host.to_owned())
            .map_err(|e| invalid(format!("server name {host:?}"), e))
    }

    pub(crate) fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config.clone())
    }

    /// For a member's connection ([`NodeTls::member_client`]): what resolves once the dialling
    /// member's credentials no longer accept the certificate the dialled node presented as
    /// `name` ([`NodeTls::until_distrusted`]). `None` for a client's fixed CA: as with any TLS
    /// client, its connection is not cut when a certificate or the CA expires (the node's side
    /// cuts those it accepted; a new connection is checked afresh).
    pub(crate) fn distrust_watch(
        &self,
        chain: Vec<CertificateDer<'static>>,
        name: ServerName<'static>,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let member = self.member.clone()?;
        Some(async move {
            member
                .until_distrusted(Presented::Server(chain, name))
                .await
        })
    }
}

/// The host part of `host:port` (`[::1]:7001` gives `::1`).
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The DNS names in a certificate's subject alternative names.
fn names_in_certificate(certificate: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let parsed = webpki::EndEntityCert::try_from(certificate).map_err(|e| e.to_string())?;
    Ok(parsed.valid_dns_names().map(str::to_owned).collect())
}

/// The member a verified client certificate names ([`node_name`]), if any.
pub(crate) fn member_named_by(certificate: &CertificateDer<'_>) -> Option<NodeId> {
    let names = names_in_certificate(certificate).ok()?;
    let mut members = names.iter().filter_map(|name| node_of_name(name));
    let member = members.next()?;
    // A certificate naming two members names none.
    members.all(|other| other == member).then_some(member)
}

/// Whether a (verified) certificate names node `id`.
pub(crate) fn certificate_names_node(certificate: &CertificateDer<'_>, id: NodeId) -> bool {
    member_named_by(certificate) == Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_round_trip_and_nothing_else_parses() {
        assert_eq!(node_of_name(&node_name(NodeId(7))), Some(NodeId(7)));
        for name in [
            "node-.raftor",
            "node-07.raftor",
            "node-+7.raftor",
            "node-7.raftor.evil",
            "xnode-7.raftor",
            "node-7",
            "node-18446744073709551616.raftor",
        ] {
            assert_eq!(node_of_name(name), None, "{name}");
        }
    }

    #[test]
    fn host_of_handles_names_and_addresses() {
        assert_eq!(host_of("raftor1:7001"), "raftor1");
        assert_eq!(host_of("127.0.0.1:7001"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7001"), "::1");
    }
}
