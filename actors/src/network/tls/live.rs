//! A member's TLS credentials, replaceable while it runs: its certificate and key, and the CA
//! certificates it trusts. Every rustls configuration of a [`super::NodeTls`] asks [`Live`] at
//! each handshake, so new files take effect on the next connection without a restart (as etcd
//! reloads its certificates); a connection already open is closed once the new credentials no
//! longer accept the certificate its other side presented, or once that certificate (or the CA
//! certificate it chains to) expires ([`Live::until_distrusted`]).

use super::anchors::Anchors;
use super::{
    certificate_names_node, certificates_from_pem, invalid, names_in_certificate, node_name,
    provider, TlsError,
};
use raftor_core::NodeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::sync::{Arc, PoisonError, RwLock};

/// The PEM text of a member's three TLS files: the CA certificates, its certificate (chain), its
/// private key.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Pem {
    pub(super) ca: Vec<u8>,
    pub(super) cert: Vec<u8>,
    pub(super) key: Vec<u8>,
}

/// What one set of files gives: checked as a whole, replaced as a whole.
pub(super) struct Credentials {
    /// The text these were made from, to tell whether the files changed.
    pub(super) pem: Pem,
    /// This node's certificate chain, signed by the CA, valid when loaded, naming this node
    /// ([`node_name`]), with the private key that goes with its first certificate.
    certified: Arc<CertifiedKey>,
    /// The CA file's certificates, each trusted within its own validity only.
    anchors: Anchors,
    /// The last second at which the CA accepts this node's certificate chain (its end
    /// certificate's `notAfter`, an intermediate's or the CA certificate's if that comes
    /// first): after it, no peer accepts a connection of this node, nor this node's own checks
    /// (`from_pem`) a reload.
    pub(super) not_after: UnixTime,
}

impl Credentials {
    /// Checks that the certificate is signed by a CA certificate, both valid now, that it names
    /// node `id`, and goes with the key.
    pub(super) fn from_pem(id: NodeId, pem: Pem) -> Result<Credentials, TlsError> {
        let provider = provider();
        let anchors = Anchors::from_pem(&pem.ca, &provider)?;
        let now = UnixTime::now();
        let chain = certificates_from_pem("node certificate", &pem.cert)?;
        let key = PrivateKeyDer::from_pem_slice(&pem.key).map_err(|e| invalid("private key", e))?;
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
        // The certificate must verify against the CA as a peer will verify it.
        let name = ServerName::try_from(node_name(id)).map_err(|e| invalid("node id", e))?;
        anchors
            .verify_server(&chain[0], &chain[1..], &name, &[], now)
            .map_err(|e| invalid("node certificate", e))?;
        let certified = CertifiedKey::from_der(chain.clone(), key, &provider)
            .map_err(|e| invalid("private key", format!("{e} (is it the certificate's?)")))?;
        let not_after = last_second_accepted(&anchors, &chain, &name, now);
        Ok(Credentials {
            pem,
            certified: Arc::new(certified),
            anchors,
            not_after,
        })
    }
}

/// The last second at which `anchors` accept `chain` as `name`'s, given that they do at
/// `accepted`: found by bisection with the verifiers themselves (about 40 checks, at each load),
/// so it is the date a peer's check goes by, whatever certificate of the chain, or CA
/// certificate, expires first.
fn last_second_accepted(
    anchors: &Anchors,
    chain: &[CertificateDer<'static>],
    name: &ServerName<'static>,
    accepted: UnixTime,
) -> UnixTime {
    let accepts = |second: u64| {
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(second));
        accepts_server(anchors, chain, name, at)
    };
    // The first second past the last date X.509 can write (9999-12-31T23:59:59Z).
    let mut refused = accepted.as_secs().max(253_402_300_800);
    let mut accepted = accepted.as_secs();
    debug_assert!(accepts(accepted) && !accepts(refused));
    while refused - accepted > 1 {
        let middle = accepted + (refused - accepted) / 2;
        if accepts(middle) {
            accepted = middle;
        } else {
            refused = middle;
        }
    }
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(accepted))
}

/// Whether `anchors` accept `chain` as `name`'s at `at`, as a handshake then would (an empty
/// chain: nothing to refuse).
fn accepts_server(
    anchors: &Anchors,
    chain: &[CertificateDer<'static>],
    name: &ServerName<'static>,
    at: UnixTime,
) -> bool {
    let Some((end, rest)) = chain.split_first() else {
        return true;
    };
    anchors.verify_server(end, rest, name, &[], at).is_ok()
}

/// The credentials in force. Each handshake takes the current ones; [`Live::replace`] puts new
/// ones in force for every later handshake.
pub(super) struct Live {
    current: RwLock<Arc<Credentials>>,
    /// Counts the replacements: connections watch it to check their peer's certificate again.
    replaced: tokio::sync::watch::Sender<u64>,
    /// The provider's signature algorithms, which check the handshake's signatures whatever the
    /// files hold (as rustls's webpki verifiers do).
    algorithms: WebPkiSupportedAlgorithms,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

impl Live {
    pub(super) fn new(credentials: Credentials) -> Live {
        Live {
            current: RwLock::new(Arc::new(credentials)),
            replaced: tokio::sync::watch::Sender::new(0),
            algorithms: provider().signature_verification_algorithms,
        }
    }

    pub(super) fn current(&self) -> Arc<Credentials> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn replace(&self, credentials: Credentials) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(credentials);
        self.replaced
            .send_modify(|replacements| *replacements = replacements.wrapping_add(1));
    }

    /// Whether the credentials in force accept `presented`, as a handshake at `at` would.
    fn trusts(&self, presented: &Presented, at: UnixTime) -> bool {
        let (Presented::Client(chain) | Presented::Server(chain, _)) = presented;
        let Some((end, rest)) = chain.split_first() else {
            return true;
        };
        let current = self.current();
        match presented {
            Presented::Client(_) => current.anchors.verify_client(end, rest, at).is_ok(),
            Presented::Server(_, name) => accepts_server(&current.anchors, chain, name, at),
        }
    }

    /// Resolves once the credentials in force no longer accept `presented`: checked now, again
    /// at each replacement, and as time passes, so a certificate that expires while its
    /// connection is open (TLS checks it only at the handshake) is cut a second or two after
    /// its expiry. Pending for as long as they accept it.
    pub(super) async fn until_distrusted(&self, presented: Presented) {
        let mut replaced = self.replaced.subscribe();
        loop {
            // Between replacements only time changes a verdict, and only by expiry (the
            // handshake found every certificate of the chain, and the CA certificate, valid
            // already): a chain accepted a minute ahead is accepted now, and one that is not
            // expires before the next look, or has. (Unless the CA file holds a CA certificate
            // that becomes valid later, with a gap before it: a chain it accepts a minute ahead
            // may be cut up to a minute late, at the gap's start.)
            let now = UnixTime::now();
            let ahead = UnixTime::since_unix_epoch(
                std::time::Duration::from_secs(now.as_secs()) + EXPIRY_LOOK_AHEAD,
            );
            let wait = if self.trusts(&presented, ahead) {
                EXPIRY_LOOK_AHEAD
            } else if self.trusts(&presented, now) {
                EXPIRY_LOOK_CLOSE
            } else {
                return;
            };
            tokio::select! {
                changed = replaced.changed() => {
                    if changed.is_err() {
                        tokio::time::sleep(wait).await;
                    }
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// How far ahead [`Live::until_distrusted`] looks for an expiry, and how long it then waits to
/// look again: one verification a minute per connection holding a certificate.
const EXPIRY_LOOK_AHEAD: std::time::Duration = std::time::Duration::from_secs(60);
/// How often it looks in the last [`EXPIRY_LOOK_AHEAD`] of a certificate's validity.
const EXPIRY_LOOK_CLOSE: std::time::Duration = std::time::Duration::from_secs(1);

/// The certificate chain the other side of a connection presented at its handshake, and how it
/// was checked.
pub(crate) enum Presented {
    /// A dialler's: a member's, or a client's that chose to present one.
    Client(Vec<CertificateDer<'static>>),
    /// The dialled member's, which must carry this name.
    Server(Vec<CertificateDer<'static>>, ServerName<'static>),
}

/// Serving: this node's certificate.
impl ResolvesServerCert for Live {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().certified.clone())
    }
}

/// Dialling a member: this node's certificate, which makes the connection a member's.
impl ResolvesClientCert for Live {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current().certified.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Accepting: a dialler's certificate, if it presents one, checked against the CA in force.
impl ClientCertVerifier for Live {
    /// Asked for, not required: a client without one authenticates with a token (a peer `Hello`
    /// without one is refused later).
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    /// None: the CA names cannot be lent out of the lock, and they only help a client that holds
    /// several certificates choose (a member holds one).
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()
            .anchors
            .verify_client(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Dialling: the certificate of the member (or HTTPS server) reached, checked against the CA in
/// force.
impl ServerCertVerifier for Live {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.current().anchors.verify_server(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
