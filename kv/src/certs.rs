//! `raftor certs`: the credentials of a development cluster in one step — a CA, a certificate for
//! every node (naming it `node-<id>.raftor`, with the host names and addresses clients reach it
//! at), and a token of each role with the tokens file the nodes check them against.
//!
//! Certificates are ECDSA P-256 (rcgen, ring; a kept CA's key may be another kind rcgen signs
//! with: P-384, Ed25519, RSA). A directory that already holds a CA keeps it: only
//! the files missing are written, so nodes can be added to a cluster later, and nothing is ever
//! overwritten. A kept CA may be one of the operator's own (any name, key and key identifier): the
//! certificates it signs name it as it names itself, end no later than it does, and are refused
//! while it is not valid or when its key is not the key of a certificate in its file.

use crate::auth::{new_token, write_private, Role, TokensFile};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;
use time::{Duration as TimeSpan, OffsetDateTime};

/// A certificate of a kept CA's file that holds the CA's key ([`Ca::read`]).
struct KeyCertificate<'a> {
    der: &'a rustls::pki_types::CertificateDer<'static>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    /// The subject exactly as the certificate writes it.
    subject: Vec<u8>,
}

/// The subject of every CA `raftor certs` makes (a kept CA signs in its own certificate's name).
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
    /// What the operator should know of what was made (a certificate cut short by its CA).
    pub notes: Vec<String>,
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

/// A moment as nodes give certificates' dates: `Mon, 07 Dec 2026 16:00:00 GMT` (a date before
/// 1970 as 1970's first second, as nodes read it).
fn date(moment: OffsetDateTime) -> String {
    httpdate::fmt_http_date(moment.max(OffsetDateTime::UNIX_EPOCH).into())
}

/// A CA able to sign node certificates.
pub struct Ca {
    /// The CA's name, key identifier and key usages as its certificate gives them, with its key.
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM (for a kept CA, its whole file: during a move to a new CA it may
    /// hold both).
    pub cert_pem: String,
    /// The last moment the CA certificate is valid: nothing it signs is trusted after it.
    not_after: OffsetDateTime,
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
            not_after,
        })
    }

    /// The CA kept in `dir`: its key, and the certificate of its CA file that holds that key
    /// (one of two during a move to a new CA; of several with that key, the one valid now that
    /// ends last), which must be a CA certificate valid now. The certificates it signs take the
    /// issuer's name and key identifier from that certificate, so a CA of the operator's own,
    /// named otherwise than [`make`]'s, signs certificates that chain to it; a name rcgen cannot
    /// write again byte for byte is refused rather than signed under.
    pub fn read(dir: &Path) -> Result<Ca, CertsError> {
        let read = |path: PathBuf| {
            std::fs::read_to_string(&path).map_err(|source| CertsError::Read { path, source })
        };
        let (cert_path, key_path) = (ca_cert_path(dir), ca_key_path(dir));
        let refuse = |reason: String| {
            CertsError::Certificate(format!("the CA in {}: {reason}", cert_path.display()))
        };
        let cert_pem = read(cert_path.clone())?;
        let key = KeyPair::from_pem(&read(key_path.clone())?).map_err(|e| {
            CertsError::Certificate(format!(
                "{path}: cannot read the CA's private key ({e}): it must be unencrypted PKCS#8 \
                 PEM (\"BEGIN PRIVATE KEY\"; ECDSA P-256 or P-384, Ed25519 or RSA); convert \
                 another with `openssl pkcs8 -topk8 -nocrypt -in {path} -out {path}.pkcs8` and \
                 put that in its place",
                path = key_path.display()
            ))
        })?;
        let certificates = raftor_actors::network::tls::certificates_from_pem(
            &cert_path.display().to_string(),
            cert_pem.as_bytes(),
        )
        .map_err(certificate_error)?;
        let spki = key.subject_public_key_info();
        let now = OffsetDateTime::now_utc();
        // The key's certificates; those that cannot be read are named only if none is the
        // key's (an odd certificate beside the CA is no reason to refuse it).
        let (mut holding, mut unreadable) = (Vec::new(), Vec::new());
        for (position, certificate) in certificates.iter().enumerate() {
            match x509_parser::parse_x509_certificate(certificate.as_ref()) {
                Ok((_, parsed)) if parsed.public_key().raw == spki.as_slice() => {
                    if !parsed.is_ca() {
                        return Err(refuse(format!(
                            "certificate {} holds ca-key.pem's key but is not a CA certificate \
                             (its basic constraints do not say CA:TRUE)",
                            position + 1
                        )));
                    }
                    if let Ok(Some(usage)) = parsed.key_usage() {
                        if !usage.value.key_cert_sign() {
                            return Err(refuse(format!(
                                "certificate {} holds ca-key.pem's key but its key usage does \
                                 not allow signing certificates (keyCertSign)",
                                position + 1
                            )));
                        }
                    }
                    let validity = parsed.validity();
                    holding.push(KeyCertificate {
                        der: certificate,
                        not_before: validity.not_before.to_datetime(),
                        not_after: validity.not_after.to_datetime(),
                        subject: parsed.subject().as_raw().to_vec(),
                    });
                }
                Ok(_) => {}
                Err(e) => unreadable.push(format!("certificate {}: {e}", position + 1)),
            }
        }
        let chosen = holding
            .iter()
            .filter(|held| held.not_before <= now && now <= held.not_after)
            .max_by_key(|held| held.not_after);
        let Some(chosen) = chosen else {
            if let Some(last) = holding.iter().max_by_key(|held| held.not_after) {
                return Err(refuse(format!(
                    "its certificate is not valid now (valid from {} until {}): nodes and \
                     clients would refuse what it signs. Move ca.pem and ca-key.pem away and run \
                     again to make a new CA, then move the cluster to it (README, Security)",
                    date(last.not_before),
                    date(last.not_after)
                )));
            }
            return Err(CertsError::Certificate(format!(
                "{} is not the key of the certificate in {}{}{}: keep a CA's certificate and key \
                 together, or move both away to make a new CA",
                key_path.display(),
                cert_path.display(),
                if certificates.len() > 1 {
                    " (nor of any of its certificates)"
                } else {
                    ""
                },
                if unreadable.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({} could not be read: {})",
                        unreadable.len(),
                        unreadable.join("; ")
                    )
                }
            )));
        };
        let issuer = Issuer::from_ca_cert_der(chosen.der, key)
            .map_err(|e| refuse(format!("cannot sign in its name: {e}")))?;
        let ca = Ca {
            cert_pem,
            issuer,
            not_after: chosen.not_after,
        };
        // A certificate chains to its CA only if it names the CA byte for byte; rcgen writes the
        // name again from its parts, and cannot for every name (two values of one attribute, as
        // in DC=com, DC=example, keep only the last). A certificate made now shows whether it can.
        let (probe, _) = ca.issue_valid("raftor certs probe", Vec::new(), now, now)?;
        let probe = raftor_actors::network::tls::certificates_from_pem("probe", probe.as_bytes())
            .map_err(certificate_error)?;
        let issuer_named = x509_parser::parse_x509_certificate(probe[0].as_ref())
            .map(|(_, parsed)| parsed.issuer().as_raw() == chosen.subject.as_slice())
            .unwrap_or(false);
        if !issuer_named {
            return Err(refuse(
                "its name (subject) cannot be written again exactly as it is (rcgen keeps one \
                 value of each attribute type, and the usual string types), so what it signed \
                 would chain to nothing: sign the node certificates with your own tools (each \
                 must name node-<id>.raftor, for server and client use)"
                    .to_owned(),
            ));
        }
        Ok(ca)
    }

    /// The last moment the CA certificate is valid.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// The CA's private key, PEM.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A certificate for node `id` valid from an hour ago for `days`, or until the CA's own end
    /// if that comes first (nothing trusts it after), naming `node-<id>.raftor` and `names` (DNS
    /// names or IP addresses), for both serving and dialling: (certificate, key), PEM.
    pub fn issue_node(
        &self,
        id: u64,
        names: &[String],
        days: u32,
    ) -> Result<(String, String), CertsError> {
        let (not_before, not_after) = validity(days);
        self.issue_node_valid(id, names, not_before, not_after.min(self.not_after))
    }

    /// [`Ca::issue_node`]'s certificate valid from `not_before` to `not_after` as given, even
    /// outside the CA's own validity (for tests of what nodes make of such a certificate).
    pub fn issue_node_valid(
        &self,
        id: u64,
        names: &[String],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
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
        self.issue_valid(&format!("raftor node {id}"), all, not_before, not_after)
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
    let (ca_cert, ca_key) = (ca_cert_path(dir), ca_key_path(dir));
    let (has_cert, has_key) = (ca_cert.exists(), ca_key.exists());
    // One of the two without the other is an operator's CA half put in place (a key saved under
    // another name): writing a new CA would replace their certificate.
    if has_cert != has_key {
        let (there, missing) = if has_cert {
            (&ca_cert, &ca_key)
        } else {
            (&ca_key, &ca_cert)
        };
        return Err(CertsError::Certificate(format!(
            "{} is there but {} is not: a kept CA needs both (its certificate, and its key as \
             unencrypted PKCS#8 PEM); move the one away to make a new CA",
            there.display(),
            missing.display()
        )));
    }
    let ca = if has_cert {
        written.kept.push(ca_cert);
        let ca = Ca::read(dir)?;
        let (_, wanted) = validity(plan.days);
        if ca.not_after() < wanted
            && plan
                .nodes
                .keys()
                .any(|id| !node_cert_path(dir, *id).exists())
        {
            written.notes.push(format!(
                "the kept CA is valid only until {}: the certificates written now end then, \
                 not in {} days; make a new CA and move the cluster to it before that",
                date(ca.not_after()),
                plan.days.max(1)
            ));
        }
        ca
    } else {
        let ca = Ca::generate(plan.days.max(1).saturating_mul(10))?;
        write_public(&ca_cert, &ca.cert_pem, &mut written)?;
        write_secret(&ca_key, &ca.key_pem(), &mut written)?;
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
        let old = Ca::generate(30).expect("CA");
        let new = Ca::generate(30).expect("CA");
        assert_ne!(subject_key_id(&old.cert_pem), subject_key_id(&new.cert_pem));
        let (certificate, _) = new.issue_node(1, &[], 30).expect("issue");
        assert_eq!(
            authority_key_id(&certificate),
            subject_key_id(&new.cert_pem)
        );
        let dir = kept(&old.cert_pem, &old.key_pem());
        let read_back = Ca::read(dir.path()).expect("read");
        let (renewed, _) = read_back.issue_node(2, &[], 30).expect("issue");
        assert_eq!(authority_key_id(&renewed), subject_key_id(&old.cert_pem));
    }

    fn plan(dir: &Path, days: u32) -> CertsPlan {
        CertsPlan {
            out: dir.to_owned(),
            nodes: [(1, Vec::new()), (2, Vec::new())].into_iter().collect(),
            days,
            tokens: false,
        }
    }

    /// A node's certificate as a node loads it: signed by the CA file's CA, naming the node.
    fn node_loads(dir: &Path, id: u64) -> Result<(), String> {
        let read = |path: PathBuf| std::fs::read(path).expect("read");
        raftor_actors::network::tls::NodeTls::from_pem(
            raftor_core::NodeId(id),
            &read(ca_cert_path(dir)),
            &read(node_cert_path(dir, id)),
            &read(node_key_path(dir, id)),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    /// A certificate's `notAfter`.
    fn not_after(certificate: &str) -> OffsetDateTime {
        let der = der(certificate);
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).expect("parsed");
        parsed.validity().not_after.to_datetime()
    }

    /// A directory holding `certificate` and `key` as its kept CA.
    fn kept(certificate: &str, key: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(ca_cert_path(dir.path()), certificate).expect("write");
        std::fs::write(ca_key_path(dir.path()), key).expect("write");
        dir
    }

    /// A new key, and a CA's parameters naming `names` (not `raftor cluster CA`), valid from a
    /// day ago for `days_left` more.
    fn named_ca(names: &[(DnType, &str)], days_left: i64) -> (KeyPair, CertificateParams) {
        let now = OffsetDateTime::now_utc();
        let mut params = ca_params(now - TimeSpan::days(1), now + TimeSpan::days(days_left));
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (kind, value) in names {
            params.distinguished_name.push(kind.clone(), *value);
        }
        (KeyPair::generate().expect("key"), params)
    }

    /// A CA of the operator's own, kept in a directory: another name than `raftor certs`
    /// gives, a key identifier of its own (OpenSSL's SHA-1 kind), valid for `days_left` more:
    /// (the directory, the CA certificate, its key identifier).
    fn own_ca(days_left: i64) -> (tempfile::TempDir, String, Vec<u8>) {
        let names = [
            (DnType::OrganizationName, "My Corp"),
            (DnType::CommonName, "My Corp Root CA"),
        ];
        let (key, mut params) = named_ca(&names, days_left);
        let key_id = vec![0xab; 20];
        params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(key_id.clone());
        let cert = params.self_signed(&key).expect("CA").pem();
        (kept(&cert, &key.serialize_pem()), cert, key_id)
    }

    /// A kept CA named otherwise than `raftor certs` names its own signs node certificates that
    /// nodes load: issued under its own name and key identifier (they named `raftor cluster CA`
    /// and a SHA-256 identifier of the key, and chained to nothing).
    #[test]
    fn a_kept_ca_of_the_operators_own_signs_certificates_that_chain_to_it() {
        let (dir, _, key_id) = own_ca(365);
        let written = make(&plan(dir.path(), 30)).expect("made");
        assert!(written.notes.is_empty(), "{:?}", written.notes);
        for id in [1, 2] {
            node_loads(dir.path(), id).expect("the node's certificate chains to the kept CA");
            let certificate =
                std::fs::read_to_string(node_cert_path(dir.path(), id)).expect("read");
            assert_eq!(authority_key_id(&certificate), key_id);
        }
    }

    /// A certificate cannot outlive its CA: one asked for longer ends with the CA, and the
    /// summary says so.
    #[test]
    fn certificates_end_no_later_than_the_kept_ca() {
        let (dir, ca, _) = own_ca(5);
        let written = make(&plan(dir.path(), 30)).expect("made");
        let certificate = std::fs::read_to_string(node_cert_path(dir.path(), 1)).expect("read");
        assert_eq!(not_after(&certificate), not_after(&ca));
        assert_eq!(written.notes.len(), 1, "{:?}", written.notes);
        assert!(
            written.notes[0].contains("valid only until"),
            "{}",
            written.notes[0]
        );
        node_loads(dir.path(), 1).expect("loads");
    }

    /// A kept CA that is not valid now, or whose key is not its certificate's, signs nothing:
    /// the error says why, and no node file is written.
    #[test]
    fn a_kept_ca_that_is_not_valid_or_not_whole_signs_nothing() {
        let now = OffsetDateTime::now_utc();
        let expired =
            Ca::generate_valid(now - TimeSpan::days(20), now - TimeSpan::days(10)).expect("CA");
        let later =
            Ca::generate_valid(now + TimeSpan::days(10), now + TimeSpan::days(20)).expect("CA");
        let other = Ca::generate(30).expect("CA");
        for (ca_file, key, wanted) in [
            (&expired, &expired, "is not valid now (valid from"),
            (&later, &later, "is not valid now (valid from"),
            (&expired, &other, "is not the key of the certificate in"),
        ] {
            let dir = kept(&ca_file.cert_pem, &key.key_pem());
            let error = make(&plan(dir.path(), 30))
                .expect_err("refused")
                .to_string();
            assert!(error.contains(wanted), "{error}");
            assert!(!node_cert_path(dir.path(), 1).exists());
            assert!(!node_key_path(dir.path(), 1).exists());
        }
    }

    /// PEM text of DER bytes.
    fn pem(der: &[u8]) -> String {
        use base64::Engine;
        let text = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = text
            .as_bytes()
            .chunks(64)
            .map(|line| std::str::from_utf8(line).expect("base64"))
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
    }

    /// What a kept CA cannot sign for is refused, and nothing is written or replaced: a name
    /// rcgen would write otherwise (two values of one attribute type), a certificate that is
    /// not a CA's, a CA certificate without its key or a key without its certificate.
    #[test]
    fn a_kept_ca_is_refused_when_what_it_signs_would_not_chain() {
        let names = [
            (DnType::OrganizationName, "example"),
            (DnType::OrganizationalUnitName, "example"),
        ];
        let (key, params) = named_ca(&names, 30);
        let der = params.self_signed(&key).expect("CA").der().to_vec();
        // O=example becomes a second OU=example, in the subject and the issuer alike (no one
        // checks a kept CA's own signature: neither this tool nor webpki, for an anchor).
        let (organization, unit) = (
            [0x06, 0x03, 0x55, 0x04, 0x0a],
            [0x06, 0x03, 0x55, 0x04, 0x0b],
        );
        let mut twice = der.clone();
        let mut at = 0;
        while let Some(found) = twice[at..].windows(5).position(|w| w == organization) {
            twice[at + found..at + found + 5].copy_from_slice(&unit);
            at += found + 5;
        }
        assert_ne!(twice, der);
        let dir = kept(&pem(&twice), &key.serialize_pem());
        let error = make(&plan(dir.path(), 30))
            .expect_err("refused")
            .to_string();
        assert!(error.contains("cannot be written again"), "{error}");
        assert!(!node_cert_path(dir.path(), 1).exists());

        // Not a CA's certificate: a node's, with its key.
        let ca = Ca::generate(30).expect("CA");
        let (certificate, node_key) = ca.issue_node(7, &[], 30).expect("issue");
        let dir = kept(&certificate, &node_key);
        let error = make(&plan(dir.path(), 30))
            .expect_err("refused")
            .to_string();
        assert!(error.contains("is not a CA certificate"), "{error}");

        // Half a CA: nothing is made, and the half there is left as it was.
        for half in [ca_cert_path, ca_key_path] {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::write(half(dir.path()), "as the operator left it").expect("write");
            let error = make(&plan(dir.path(), 30))
                .expect_err("refused")
                .to_string();
            assert!(error.contains("a kept CA needs both"), "{error}");
            assert_eq!(
                std::fs::read_to_string(half(dir.path())).expect("read"),
                "as the operator left it"
            );
            assert!(!node_cert_path(dir.path(), 1).exists());
        }
    }

    /// Of two certificates of the kept key, the one valid now signs, whichever comes first; a
    /// certificate that cannot be read beside it is passed over, and named if the key is no
    /// certificate's.
    #[test]
    fn the_kept_keys_certificate_valid_now_signs_whatever_else_the_file_holds() {
        let now = OffsetDateTime::now_utc();
        let key = KeyPair::generate().expect("key");
        let reissued = |from: OffsetDateTime, until: OffsetDateTime| {
            ca_params(from, until).self_signed(&key).expect("CA").pem()
        };
        let expired = reissued(now - TimeSpan::days(60), now - TimeSpan::days(1));
        let current = reissued(now - TimeSpan::days(1), now + TimeSpan::days(400));
        let junk = pem(b"not a certificate at all");
        let dir = kept(&format!("{expired}{current}"), &key.serialize_pem());
        let written = make(&plan(dir.path(), 30)).expect("made");
        assert!(written.notes.is_empty(), "{:?}", written.notes);
        node_loads(dir.path(), 1).expect("loads");

        // (A node refuses a CA file with a certificate it cannot read; this tool signs anyway.)
        let dir = kept(&format!("{junk}{current}"), &key.serialize_pem());
        make(&plan(dir.path(), 30)).expect("made");
        assert!(node_cert_path(dir.path(), 1).exists());

        let other_key = KeyPair::generate().expect("key").serialize_pem();
        let dir = kept(&format!("{junk}{current}"), &other_key);
        let error = make(&plan(dir.path(), 30))
            .expect_err("refused")
            .to_string();
        assert!(
            error.contains("1 could not be read: certificate 1"),
            "{error}"
        );
    }

    /// During a move to a new CA the directory's CA file may hold both CA certificates: the
    /// kept key's own signs, whichever comes first.
    #[test]
    fn a_ca_file_holding_two_cas_signs_with_the_keys_own() {
        let old = Ca::generate(30).expect("CA");
        let new = Ca::generate(30).expect("CA");
        for (both, key) in [
            (format!("{}{}", old.cert_pem, new.cert_pem), &new),
            (format!("{}{}", new.cert_pem, old.cert_pem), &old),
        ] {
            let dir = kept(&both, &key.key_pem());
            make(&plan(dir.path(), 30)).expect("made");
            let certificate = std::fs::read_to_string(node_cert_path(dir.path(), 1)).expect("read");
            assert_eq!(
                authority_key_id(&certificate),
                subject_key_id(&key.cert_pem)
            );
            node_loads(dir.path(), 1).expect("loads with both CAs trusted");
        }
        let dir = kept(
            &format!("{}{}", old.cert_pem, new.cert_pem),
            &Ca::generate(30).expect("CA").key_pem(),
        );
        let error = make(&plan(dir.path(), 30))
            .expect_err("refused")
            .to_string();
        assert!(error.contains("nor of any of its certificates"), "{error}");
    }
}
