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

use raftor_core::NodeId;
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::path::{Path, PathBuf};
use std::sync::Arc;
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

/// The CA certificates a PEM file's text holds, as the trust roots of a configuration.
pub fn roots_from_pem(what: &str, pem: &[u8]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates_from_pem(what, pem)? {
        roots.add(certificate).map_err(|e| invalid(what, e))?;
    }
    Ok(Arc::new(roots))
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
/// (and the leader, when it forwards a client's request).
#[derive(Clone)]
pub struct NodeTls {
    /// This node's id, which its certificate must name.
    id: NodeId,
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

impl NodeTls {
    /// Reads the files and checks that the certificate is signed by the CA, names node `id`, and
    /// goes with the key.
    pub fn load(id: NodeId, files: &TlsFiles) -> Result<NodeTls, TlsError> {
        let ca = read(&files.ca)?;
        let cert = read(&files.cert)?;
        let key = read(&files.key)?;
        Self::from_pem(id, &ca, &cert, &key).map_err(|error| match error {
            TlsError::Invalid { what, reason } => {
                let path = match what.as_str() {
                    "CA certificate" => &files.ca,
                    "private key" => &files.key,
                    _ => &files.cert,
                };
                invalid(format!("{what} ({})", path.display()), reason)
            }
            other => other,
        })
    }

    /// [`NodeTls::load`] from the files' PEM text.
    pub fn from_pem(id: NodeId, ca: &[u8], cert: &[u8], key: &[u8]) -> Result<NodeTls, TlsError> {
        let roots = roots_from_pem("CA certificate", ca)?;
        let chain = certificates_from_pem("node certificate", cert)?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| invalid("private key", e))?;
        let names = names_in_certificate(&chain[0]).map_err(|e| invalid("node certificate", e))?;
        if !certificate_names_node(&chain[0], id) {
            return Err(invalid(
                "node certificate",
                format!(
                    "it does not name node {} ({}); it names {names:?}",
                    id.0,
                    node_name(id)
                ),
            ));
        }
        let provider = provider();
        // The certificate must verify against the CA as a peer will verify it.
        verify_own_certificate(id, roots.clone(), &chain, provider.clone())?;
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| invalid("CA certificate", e))?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("TLS", e))?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| invalid("node certificate", e))?;
        let mut https = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("TLS", e))?
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| invalid("node certificate", e))?;
        https.alpn_protocols = vec![HTTP_1_1.to_vec()];
        let mut https_client = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("TLS", e))?
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        https_client.alpn_protocols = vec![HTTP_1_1.to_vec()];
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("TLS", e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| invalid("node certificate", e))?;
        Ok(NodeTls {
            id,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
            https: Arc::new(https),
            https_client: Arc::new(https_client),
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
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

/// Checks that the node's certificate is one a peer accepts: signed by the CA, valid now, and
/// naming node `id`.
fn verify_own_certificate(
    id: NodeId,
    roots: Arc<RootCertStore>,
    chain: &[CertificateDer<'static>],
    provider: Arc<CryptoProvider>,
) -> Result<(), TlsError> {
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider)
        .build()
        .map_err(|e| invalid("CA certificate", e))?;
    let name = ServerName::try_from(node_name(id)).map_err(|e| invalid("node id", e))?;
    verifier
        .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| invalid("node certificate", e))
}

/// How a client reaches a node over TLS: the CA it trusts, and optionally a certificate it
/// presents (members only). Cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    /// The name the node's certificate must carry; `None`: the host of the address dialled.
    server_name: Option<String>,
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

    /// Trust the CA certificates in this PEM text; no client certificate.
    pub fn from_ca_pem(pem: &[u8]) -> Result<ClientTls, TlsError> {
        let roots = roots_from_pem("CA certificate", pem)?;
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("TLS", e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ClientTls {
            config: Arc::new(config),
            server_name: None,
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
