//! `raftor certs`: the credentials of a development cluster in one step — a CA, a certificate for
//! every node (naming it `node-<id>.raftor`, with the host names and addresses clients reach it
//! at), and a token of each role with the tokens file the nodes check them against.
//!
//! Certificates are ECDSA P-256 (rcgen, ring). A directory that already holds a CA keeps it: only
//! the files missing are written, so nodes can be added to a cluster later, and nothing is ever
//! overwritten.

use crate::auth::{new_token, write_private, Role, TokensFile};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;
use time::{Duration as TimeSpan, OffsetDateTime};

/// The CA's subject: fixed, so a CA kept in a directory signs new certificates as it did the first.
const CA_NAME: &str = "raftor cluster CA";

#[derive(Debug, Error)]
pub enum CertsError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Certificate(String),
    #[error(transparent)]
    Tokens(#[from] crate::auth::TokensError),
}

fn certificate_error(error: impl std::fmt::Display) -> CertsError {
    CertsError::Certificate(error.to_string())
}

/// What to make.
#[derive(Clone, Debug)]
pub struct CertsPlan {
    /// Where the files go (created if missing).
    pub out: PathBuf,
    /// The nodes, with the extra names (host names, addresses) each one's certificate carries
    /// besides `node-<id>.raftor`, `localhost`, `127.0.0.1` and `::1`.
    pub nodes: BTreeMap<u64, Vec<String>>,
    /// How long the certificates are valid, in days.
    pub days: u32,
    /// Whether to make a token of each role (and the tokens file) when the directory has none.
    pub tokens: bool,
}

/// What was written (paths), for the summary.
#[derive(Debug, Default)]
pub struct CertsWritten {
    pub written: Vec<PathBuf>,
    pub kept: Vec<PathBuf>,
}

/// The file names in a credentials directory.
pub fn ca_cert_path(dir: &Path) -> PathBuf {
    dir.join("ca.pem")
}
pub fn ca_key_path(dir: &Path) -> PathBuf {
    dir.join("ca-key.pem")
}
pub fn node_cert_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("node-{id}.pem"))
}
pub fn node_key_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("node-{id}-key.pem"))
}
/// Node `id`'s three TLS files in a credentials directory: the CA, its certificate, its key.
pub fn node_tls_files(dir: &Path, id: u64) -> raftor_actors::network::tls::TlsFiles {
    raftor_actors::network::tls::TlsFiles {
        ca: ca_cert_path(dir),
        cert: node_cert_path(dir, id),
        key: node_key_path(dir, id),
    }
}
pub fn tokens_path(dir: &Path) -> PathBuf {
    dir.join("tokens.toml")
}
pub fn token_path(dir: &Path, role: Role) -> PathBuf {
    dir.join(format!("{role}.token"))
}

fn write_public(path: &Path, text: &str, written: &mut CertsWritten) -> Result<(), CertsError> {
    raftor_storage::durable::replace_file(path, text.as_bytes(), false).map_err(|source| {
        CertsError::Write {
            path: path.to_owned(),
            source,
        }
    })?;
    written.written.push(path.to_owned());
    Ok(())
}

fn write_secret(path: &Path, text: &str, written: &mut CertsWritten) -> Result<(), CertsError> {
    write_private(path, text.as_bytes()).map_err(|source| CertsError::Write {
        path: path.to_owned(),
        source,
    })?;
    written.written.push(path.to_owned());
    Ok(())
}

/// From an hour ago (slack for clocks a few minutes apart) for `days`.
fn validity(days: u32) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (
        now - TimeSpan::hours(1),
        now + TimeSpan::days(i64::from(days.max(1))),
    )
}

fn ca_params(not_before: OffsetDateTime, not_after: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (params.not_before, params.not_after) = (not_before, not_after);
    params
}

/// A CA able to sign node certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub cert_pem: String,
}

impl Ca {
    /// A new CA valid for `days`.
    pub fn generate(days: u32) -> Result<Ca, CertsError> {
        let (not_before, not_after) = validity(days);
        Self::generate_valid(not_before, not_after)
    }

    /// A new CA valid from `not_before` to `not_after`.
    pub fn generate_valid(
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Ca, CertsError> {
        let key = KeyPair::generate().map_err(certificate_error)?;
        let params = ca_params(not_before, not_after);
        let cert = params.self_signed(&key).map_err(certificate_error)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA kept in `dir` (its certificate and key, as [`make`] wrote them).
    pub fn read(dir: &Path) -> Result<Ca, CertsError> {
        let read = |path: PathBuf| {
            std::fs::read_to_string(&path).map_err(|source| CertsError::Read { path, source })
        };
        let cert_pem = read(ca_cert_path(dir))?;
        let key = KeyPair::from_pem(&read(ca_key_path(dir))?).map_err(certificate_error)?;
        let (not_before, not_after) = validity(1);
        Ok(Ca {
            cert_pem,
            // The issuer's dates are not the certificates' it signs: any will do.
            issuer: Issuer::new(ca_params(not_before, not_after), key),
        })
    }

    /// The CA's private key, PEM.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A certificate for node `id` valid for `days`, naming `node-<id>.raftor` and `names`
    /// (DNS names or IP addresses), for both serving and dialling: (certificate, key), PEM.
    pub fn issue_node(
        &self,
        id: u64,
        names: &[String],
        days: u32,
    ) -> Result<(String, String), CertsError> {
        let mut all = vec![
            raftor_actors::network::tls::node_name(raftor_core::NodeId(id)),
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        for name in names {
            if !all.contains(name) {
                all.push(name.clone());
            }
        }
        self.issue(&format!("raftor node {id}"), all, days)
    }

    /// A certificate naming `names`, signed by this CA, valid from an hour ago for `days`:
    /// (certificate, key), PEM.
    pub fn issue(
        &self,
        common_name: &str,
        names: Vec<String>,
        days: u32,
    ) -> Result<(String, String), CertsError> {
        let (not_before, not_after) = validity(days);
        self.issue_valid(common_name, names, not_before, not_after)
    }

    /// A certificate naming `names`, signed by this CA, valid from `not_before` to `not_after`
    /// (an expired one, for tests): (certificate, key), PEM.
    pub fn issue_valid(
        &self,
        common_name: &str,
        names: Vec<String>,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<(String, String), CertsError> {
        let key = KeyPair::generate().map_err(certificate_error)?;
        let mut params = CertificateParams::new(names).map_err(certificate_error)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        // The CA's key identifier: clients that pick an issuer by name alone (OpenSSL: curl,
        // Python) would take the first of two CAs of the same name in a CA file, as during a
        // move to a new CA, and fail on the other's certificates.
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(certificate_error)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// Writes what `plan` asks for that `plan.out` does not hold yet.
pub fn make(plan: &CertsPlan) -> Result<CertsWritten, CertsError> {
    let dir = &plan.out;
    raftor_storage::durable::create_dir_durable(dir).map_err(|source| CertsError::Write {
        path: dir.clone(),
        source,
    })?;
    let mut written = CertsWritten::default();
    let ca = if ca_cert_path(dir).exists() && ca_key_path(dir).exists() {
        written.kept.push(ca_cert_path(dir));
        Ca::read(dir)?
    } else {
        let ca = Ca::generate(plan.days.max(1).saturating_mul(10))?;
        write_public(&ca_cert_path(dir), &ca.cert_pem, &mut written)?;
        write_secret(&ca_key_path(dir), &ca.key_pem(), &mut written)?;
        ca
    };
    for (id, names) in &plan.nodes {
        let (cert_path, key_path) = (node_cert_path(dir, *id), node_key_path(dir, *id));
        if cert_path.exists() {
            written.kept.push(cert_path);
            continue;
        }
        let (cert, key) = ca.issue_node(*id, names, plan.days)?;
        write_public(&cert_path, &cert, &mut written)?;
        write_secret(&key_path, &key, &mut written)?;
    }
    if plan.tokens {
        if tokens_path(dir).exists() {
            written.kept.push(tokens_path(dir));
        } else {
            let mut file = TokensFile::default();
            for role in [Role::Admin, Role::ReadWrite, Role::Read] {
                let (token, record) = new_token(&format!("{role} (raftor certs)"), role, None);
                write_secret(&token_path(dir, role), &format!("{token}\n"), &mut written)?;
                file.tokens.push(record);
            }
            file.write(&tokens_path(dir))?;
            written.written.push(tokens_path(dir));
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftor_actors::network::tls::certificates_from_pem;

    /// The DER bytes of `pem`'s first certificate.
    fn der(pem: &str) -> Vec<u8> {
        certificates_from_pem("certificate", pem.as_bytes()).expect("PEM")[0].to_vec()
    }

    /// The value of the extension whose OID ends in `2.5.29.<last>`: the bytes inside its
    /// OCTET STRING wrapper.
    fn extension(der: &[u8], last: u8) -> &[u8] {
        let oid = [0x06, 0x03, 0x55, 0x1d, last];
        let at = der
            .windows(oid.len())
            .position(|window| window == oid)
            .unwrap_or_else(|| panic!("no extension 2.5.29.{last}"));
        let wrapped = &der[at + oid.len()..];
        assert_eq!(wrapped[0], 0x04, "an OCTET STRING");
        &wrapped[2..2 + usize::from(wrapped[1])]
    }

    /// A CA certificate's subject key identifier.
    fn subject_key_id(ca: &str) -> Vec<u8> {
        let der = der(ca);
        let value = extension(&der, 0x0e);
        assert_eq!(value[0], 0x04, "an OCTET STRING");
        value[2..].to_vec()
    }

    /// A certificate's authority key identifier (its `keyIdentifier` field).
    fn authority_key_id(certificate: &str) -> Vec<u8> {
        let der = der(certificate);
        let value = extension(&der, 0x23);
        assert_eq!(value[..1], [0x30], "a SEQUENCE");
        assert_eq!(value[2], 0x80, "[0] keyIdentifier");
        value[4..4 + usize::from(value[3])].to_vec()
    }

    /// Every CA has the same name, so a CA file holding two (during a move to a new CA) can be
    /// told apart only by key: a node certificate names its CA's key, whether the CA was just
    /// made or read back from its directory to sign a renewal.
    #[test]
    fn a_node_certificate_names_its_cas_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = Ca::generate(30).expect("CA");
        let new = Ca::generate(30).expect("CA");
        assert_ne!(subject_key_id(&old.cert_pem), subject_key_id(&new.cert_pem));
        let (certificate, _) = new.issue_node(1, &[], 30).expect("issue");
        assert_eq!(
            authority_key_id(&certificate),
            subject_key_id(&new.cert_pem)
        );
        std::fs::write(ca_cert_path(dir.path()), &old.cert_pem).expect("write");
        std::fs::write(ca_key_path(dir.path()), old.key_pem()).expect("write");
        let kept = Ca::read(dir.path()).expect("read");
        let (renewed, _) = kept.issue_node(2, &[], 30).expect("issue");
        assert_eq!(authority_key_id(&renewed), subject_key_id(&old.cert_pem));
    }
}
