//! A client's check of the node it dials, against a CA file that does not change (the CLI's
//! and the Rust client's `--ca`): each CA certificate trusted within its validity only
//! ([`super::anchors`]).

use super::anchors::Anchors;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{
    verify_tls12_signature, verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms,
};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// As rustls's webpki verifier, with each CA certificate trusted within its validity only.
#[derive(Debug)]
pub(super) struct FixedCaVerifier {
    anchors: Anchors,
    /// The provider's signature algorithms, which check the handshake's signatures.
    algorithms: WebPkiSupportedAlgorithms,
}

impl FixedCaVerifier {
    pub(super) fn new(anchors: Anchors, provider: &CryptoProvider) -> FixedCaVerifier {
        FixedCaVerifier {
            anchors,
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for FixedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.anchors
            .verify_server(end_entity, intermediates, server_name, ocsp_response, now)
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
