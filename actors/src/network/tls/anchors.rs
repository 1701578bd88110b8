//! The CA certificates a member or a client trusts, each only within its own validity.
//!
//! webpki checks no trust anchor's dates: a CA certificate that has expired (or is not valid yet)
//! goes on signing trusted chains. Go's `crypto/x509` (so etcd) and OpenSSL refuse a chain whose
//! root is outside its validity, and so does raftor: each CA certificate gets verifiers of its
//! own, asked only while it is valid, and a CA file none of whose certificates is valid now is
//! refused with a clear error. Members ask them through `live.rs`, clients through
//! `fixed_ca.rs`.

use super::{certificates_from_pem, invalid, TlsError, CA_CERTIFICATE};
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, OtherError, RootCertStore};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// The certificates of a CA file: at least one, and at least one valid when they were read.
pub(super) struct Anchors(Vec<Anchor>);

impl std::fmt::Debug for Anchors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Anchors({} CA certificates)", self.0.len())
    }
}

/// One certificate of a CA file, as a trust anchor that holds only within its validity.
struct Anchor {
    /// Its `notBefore` and `notAfter`, in seconds since the epoch, both included.
    not_before: u64,
    not_after: u64,
    /// Checks a dialler's certificate against this CA certificate (whether one must be
    /// presented is the configuration's to say: `Live`'s `offer_client_auth`).
    clients: Arc<dyn ClientCertVerifier>,
    /// Checks the certificate of a member (or HTTPS server) dialled against it.
    servers: Arc<WebPkiServerVerifier>,
}

impl Anchors {
    /// Each certificate of a CA file's PEM text, with its validity; refused when none is valid
    /// now.
    pub(super) fn from_pem(
        pem: &[u8],
        provider: &Arc<CryptoProvider>,
    ) -> Result<Anchors, TlsError> {
        let anchors = certificates_from_pem(CA_CERTIFICATE, pem)?
            .into_iter()
            .map(|certificate| Anchor::new(certificate, provider))
            .collect::<Result<Vec<_>, _>>()?;
        let now = UnixTime::now();
        if !anchors.iter().any(|anchor| anchor.valid_at(now)) {
            let windows: Vec<String> = anchors.iter().map(Anchor::window).collect();
            return Err(invalid(
                CA_CERTIFICATE,
                format!("none is valid now (valid {})", windows.join("; ")),
            ));
        }
        Ok(Anchors(anchors))
    }

    /// Verifies a dialled member's (or HTTPS server's) chain as a handshake at `at` does: some
    /// CA certificate valid then must accept it.
    pub(super) fn verify_server(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp_response: &[u8],
        at: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.first_accepting(at, |anchor| {
            anchor
                .servers
                .verify_server_cert(end_entity, intermediates, name, ocsp_response, at)
        })
    }

    /// Verifies a dialler's chain as a handshake at `at` does: some CA certificate valid then
    /// must accept it.
    pub(super) fn verify_client(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        at: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.first_accepting(at, |anchor| {
            anchor
                .clients
                .verify_client_cert(end_entity, intermediates, at)
        })
    }

    /// What `verify` gives for the first anchor valid at `at` that accepts; else why not: the
    /// most telling refusal of those anchors (a CA file holding two CAs of one name, as during a
    /// CA move, has the other answer `BadSignature` or `UnknownIssuer`, which says nothing), or,
    /// when an anchor outside its validity would have accepted, that its CA certificate expired
    /// (or is not valid yet), with its dates.
    fn first_accepting<T>(
        &self,
        at: UnixTime,
        verify: impl Fn(&Anchor) -> Result<T, rustls::Error>,
    ) -> Result<T, rustls::Error> {
        let mut refusal: Option<rustls::Error> = None;
        for anchor in self.0.iter().filter(|anchor| anchor.valid_at(at)) {
            match verify(anchor) {
                Ok(verified) => return Ok(verified),
                Err(error) => {
                    if refusal.as_ref().is_none_or(says_nothing) {
                        refusal = Some(error);
                    }
                }
            }
        }
        // No anchor valid at `at` signed the chain: perhaps one outside its validity did.
        for anchor in self.0.iter().filter(|anchor| !anchor.valid_at(at)) {
            if !refusal.as_ref().is_none_or(says_nothing) {
                break;
            }
            match verify(anchor) {
                Ok(_) => {
                    return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                        OtherError(Arc::new(CaOutsideValidity {
                            window: anchor.window(),
                        })),
                    )))
                }
                // It signed the chain, which is refused for a reason of its own (expired too).
                Err(error) if !says_nothing(&error) => refusal = Some(error),
                Err(_) => {}
            }
        }
        Err(refusal.unwrap_or(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        )))
    }
}

/// Whether a refusal only says that this CA certificate did not sign the chain.
fn says_nothing(error: &rustls::Error) -> bool {
    matches!(
        error,
        rustls::Error::InvalidCertificate(
            CertificateError::BadSignature | CertificateError::UnknownIssuer
        )
    )
}

/// A chain refused because the CA certificate that signed it is outside its validity.
#[derive(thiserror::Error)]
#[error("its CA certificate is not valid now (valid {window})")]
struct CaOutsideValidity {
    window: String,
}

/// As its `Display`: rustls shows an `OtherError` by its `Debug`, and operators read it.
impl std::fmt::Debug for CaOutsideValidity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl Anchor {
    fn new(
        certificate: CertificateDer<'static>,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Anchor, TlsError> {
        let (not_before, not_after) =
            validity(&certificate).map_err(|e| invalid(CA_CERTIFICATE, e))?;
        let mut roots = RootCertStore::empty();
        roots
            .add(certificate)
            .map_err(|e| invalid(CA_CERTIFICATE, e))?;
        let roots = Arc::new(roots);
        let servers = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| invalid(CA_CERTIFICATE, e))?;
        Ok(Anchor {
            not_before,
            not_after,
            clients: client_verifier(roots, provider.clone())?,
            servers,
        })
    }

    fn valid_at(&self, at: UnixTime) -> bool {
        (self.not_before..=self.not_after).contains(&at.as_secs())
    }

    /// "from <date> until <date>", for errors.
    fn window(&self) -> String {
        let date = |seconds| httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(seconds));
        format!(
            "from {} until {}",
            date(self.not_before),
            date(self.not_after)
        )
    }
}

/// A certificate's `notBefore` and `notAfter`, in seconds since the epoch (dates before 1970 as
/// 0).
fn validity(certificate: &CertificateDer<'_>) -> Result<(u64, u64), String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref())
        .map_err(|e| format!("cannot read its validity: {e}"))?;
    let seconds = |time: x509_parser::time::ASN1Time| u64::try_from(time.timestamp()).unwrap_or(0);
    let validity = parsed.validity();
    Ok((seconds(validity.not_before), seconds(validity.not_after)))
}

/// Verifies client certificates against `roots` (`allow_unauthenticated` only so that it
/// builds: `Live`, which asks it, says itself whether a certificate must be presented).
fn client_verifier(
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    WebPkiClientVerifier::builder_with_provider(roots, provider)
        .allow_unauthenticated()
        .build()
        .map_err(|e| invalid(CA_CERTIFICATE, e))
}
