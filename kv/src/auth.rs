//! Client authentication: bearer tokens carrying a role, checked on every HTTP request and once
//! per native session.
//!
//! A token reads `rft_<id>_<secret>`: `id` (16 hex digits) names it, `secret` (64 hex digits: 32
//! random bytes) proves it. Nodes keep only its SHA-256 digest, in a tokens file (TOML, one
//! `[[token]]` table each: `id`, `name`, `role`, `sha256`, optional `expires` in Unix seconds), and
//! compare digests in constant time. A plain digest suffices: the secret is 256 random bits, so
//! nothing is gained by a slow hash (as for GitHub's and Vault's tokens).
//!
//! Rotation without a restart: every node reads its tokens file again when it changes (checked
//! every [`RELOAD_PERIOD`]). Add the new token, hand it out, then remove the old one (or let its
//! `expires` pass); both work in between. A file that no longer parses is reported and the tokens
//! already loaded stay in force.
//!
//! Members' own sessions (a follower forwarding a request to the leader) present the member's
//! certificate instead, verified by TLS: they may do anything ([`Role::Admin`]).

use raftor_actors::network::client::ClientIdentity;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;
use thiserror::Error;

/// How often a node looks at its tokens file for changes.
pub const RELOAD_PERIOD: Duration = Duration::from_secs(2);

/// What a credential allows; each role allows what the roles before it do.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads: keys, the members, the status.
    Read,
    /// Reads and writes of keys (put, delete, compare-and-set).
    #[serde(rename = "readwrite")]
    #[value(name = "readwrite")]
    ReadWrite,
    /// Everything: membership changes, leadership transfer, snapshots.
    Admin,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Read => "read",
            Role::ReadWrite => "readwrite",
            Role::Admin => "admin",
        })
    }
}

/// Why a request is refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Refusal {
    /// No credential, or one that is not valid (HTTP 401).
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid credential whose role is too weak (HTTP 403).
    #[error("this needs the {needed} role; the token has {held}")]
    Forbidden { needed: Role, held: Role },
}

/// Why a tokens file cannot be used.
#[derive(Debug, Error)]
pub enum TokensError {
    #[error("cannot read the tokens file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the tokens file {path} is invalid: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot write the tokens file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One token as the tokens file records it (never the token itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// The token's public part, `rft_<id>_...`.
    pub id: String,
    /// What it is for (shown in logs).
    #[serde(default)]
    pub name: String,
    pub role: Role,
    /// The hex SHA-256 digest of the whole token.
    pub sha256: String,
    /// Refused from this Unix time on (seconds), if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
}

/// A tokens file's contents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensFile {
    #[serde(default, rename = "token")]
    pub tokens: Vec<TokenRecord>,
}

impl TokensFile {
    /// Reads and checks a tokens file.
    pub fn read(path: &Path) -> Result<TokensFile, TokensError> {
        parse_bytes(path, &read_bytes(path)?)
    }

    /// Parses and checks a tokens file's text: every digest is 64 hex digits, every id 16 and
    /// unique.
    pub fn parse(text: &str) -> Result<TokensFile, String> {
        let file: TokensFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut seen = std::collections::HashSet::new();
        for record in &file.tokens {
            if record.id.len() != ID_HEX || !is_hex(&record.id) {
                return Err(format!(
                    "token id {:?} is not {ID_HEX} hex digits",
                    record.id
                ));
            }
            if from_hex(&record.sha256).is_none_or(|digest| digest.len() != 32) {
                return Err(format!("token {}: sha256 must be 64 hex digits", record.id));
            }
            if !seen.insert(record.id.as_str()) {
                return Err(format!("token id {} appears twice", record.id));
            }
        }
        Ok(file)
    }

    /// Writes the file (owner-only permissions where the platform has them).
    pub fn write(&self, path: &Path) -> Result<(), TokensError> {
        let text = format!(
            "# raftor tokens: SHA-256 digests only, never the tokens themselves.\n\
             # Nodes read this file again when it changes; see `raftor token --help`.\n\n{}",
            toml::to_string(self).map_err(|e| TokensError::Invalid {
                path: path.to_owned(),
                reason: e.to_string(),
            })?
        );
        write_private(path, text.as_bytes()).map_err(|source| TokensError::Write {
            path: path.to_owned(),
            source,
        })
    }
}

/// Replaces the file at `path` with `contents`, readable by its owner only (on Unix), whole or
/// not at all (a node reloading the tokens never reads half a file, nor does one after a power
/// failure).
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    raftor_storage::durable::replace_file(path, contents, true)
}

const ID_HEX: usize = 16;
const SECRET_HEX: usize = 64;

fn is_hex(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !is_hex(text) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// A new random token for `role`: the token itself (to hand to its user) and its record (for the
/// tokens file).
pub fn new_token(name: &str, role: Role, expires: Option<u64>) -> (String, TokenRecord) {
    let mut random = [0u8; ID_HEX / 2 + SECRET_HEX / 2];
    rand::rngs::OsRng.fill_bytes(&mut random);
    let id = to_hex(&random[..ID_HEX / 2]);
    let token = format!("rft_{id}_{}", to_hex(&random[ID_HEX / 2..]));
    let record = TokenRecord {
        id,
        name: name.to_owned(),
        role,
        sha256: to_hex(&Sha256::digest(token.as_bytes())),
        expires,
    };
    (token, record)
}

/// The id of a token of the right shape.
fn token_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix("rft_")?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == ID_HEX && secret.len() == SECRET_HEX && is_hex(id) && is_hex(secret)).then_some(id)
}

/// The tokens in force, by id.
#[derive(Debug, Default)]
struct Loaded {
    by_id: HashMap<String, (TokenRecord, [u8; 32])>,
    /// The file's bytes when loaded, to notice a change.
    text: Vec<u8>,
}

impl Loaded {
    fn new(file: TokensFile, text: Vec<u8>) -> Loaded {
        let by_id = file
            .tokens
            .into_iter()
            .filter_map(|record| {
                let digest: [u8; 32] = from_hex(&record.sha256)?.try_into().ok()?;
                Some((record.id.clone(), (record, digest)))
            })
            .collect();
        Loaded { by_id, text }
    }
}

/// The tokens a node accepts, read from its tokens file and read again when it changes.
#[derive(Debug)]
pub struct TokenAuth {
    path: PathBuf,
    loaded: RwLock<Loaded>,
}

impl TokenAuth {
    /// Loads the tokens file (an error if it cannot be read or is invalid).
    pub fn load(path: &Path) -> Result<TokenAuth, TokensError> {
        let text = read_bytes(path)?;
        let file = parse_bytes(path, &text)?;
        Ok(TokenAuth {
            path: path.to_owned(),
            loaded: RwLock::new(Loaded::new(file, text)),
        })
    }

    /// How many tokens are in force.
    pub fn len(&self) -> usize {
        self.loaded.read().map_or(0, |loaded| loaded.by_id.len())
    }

    /// Whether no token is in force (every request is then refused).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the file again if it changed: `Ok(true)` if the tokens were replaced. On an error
    /// the tokens already loaded stay in force.
    pub fn reload_if_changed(&self) -> Result<bool, TokensError> {
        let text = read_bytes(&self.path)?;
        if self.loaded.read().is_ok_and(|loaded| loaded.text == text) {
            return Ok(false);
        }
        let file = parse_bytes(&self.path, &text)?;
        if let Ok(mut loaded) = self.loaded.write() {
            *loaded = Loaded::new(file, text);
        }
        Ok(true)
    }

    /// The role `token` grants at `now`, or why it grants none.
    pub fn authenticate(&self, token: &str, now: SystemTime) -> Result<Role, Refusal> {
        let invalid = || Refusal::Unauthenticated("the token is not valid".to_owned());
        let id = token_id(token).ok_or_else(invalid)?;
        let loaded = self.loaded.read().map_err(|_| invalid())?;
        let (record, digest) = loaded.by_id.get(id).ok_or_else(invalid)?;
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if !bool::from(presented.ct_eq(digest)) {
            return Err(invalid());
        }
        let seconds = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if record.expires.is_some_and(|expires| seconds >= expires) {
            return Err(Refusal::Unauthenticated("the token has expired".to_owned()));
        }
        Ok(record.role)
    }
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, TokensError> {
    std::fs::read(path).map_err(|source| TokensError::Read {
        path: path.to_owned(),
        source,
    })
}

fn parse_bytes(path: &Path, text: &[u8]) -> Result<TokensFile, TokensError> {
    let invalid = |reason: String| TokensError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let text = std::str::from_utf8(text).map_err(|e| invalid(e.to_string()))?;
    TokensFile::parse(text).map_err(invalid)
}

/// Who may do what on a node: everyone everything (no tokens file: the default, with a warning
/// at start), or what the tokens allow.
#[derive(Clone, Debug, Default)]
pub struct Access {
    tokens: Option<Arc<TokenAuth>>,
}

impl Access {
    /// Every request allowed.
    pub fn open() -> Access {
        Access { tokens: None }
    }

    /// Requests need a token from `tokens`.
    pub fn with_tokens(tokens: Arc<TokenAuth>) -> Access {
        Access {
            tokens: Some(tokens),
        }
    }

    /// Whether requests need a token.
    pub fn is_enforced(&self) -> bool {
        self.tokens.is_some()
    }

    /// The role of a client presenting `token` (an HTTP bearer token, or a native session's),
    /// or why it has none.
    pub fn role_of_token(&self, token: Option<&str>) -> Result<Role, Refusal> {
        let Some(tokens) = &self.tokens else {
            return Ok(Role::Admin);
        };
        match token {
            None => Err(Refusal::Unauthenticated(
                "this node needs a token (Authorization: Bearer ...; --token or RAFTOR_TOKEN)"
                    .to_owned(),
            )),
            Some(token) => tokens.authenticate(token, SystemTime::now()),
        }
    }

    /// The role of a native session: a member's (its certificate verified by TLS) may do
    /// anything, others what their token allows.
    pub fn role_of_session(&self, identity: &ClientIdentity) -> Result<Role, Refusal> {
        if identity.member.is_some() {
            return Ok(Role::Admin);
        }
        self.role_of_token(identity.token.as_ref().map(|t| t.0.as_str()))
    }
}

/// Whether `held` (or the reason there is none) allows what needs `needed`.
pub fn authorize(held: &Result<Role, Refusal>, needed: Role) -> Result<(), Refusal> {
    match held {
        Err(refusal) => Err(refusal.clone()),
        Ok(role) if *role >= needed => Ok(()),
        Ok(role) => Err(Refusal::Forbidden {
            needed,
            held: *role,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth_with(records: Vec<TokenRecord>) -> (tempfile::TempDir, PathBuf, TokenAuth) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.toml");
        TokensFile { tokens: records }.write(&path).expect("write");
        let auth = TokenAuth::load(&path).expect("load");
        (dir, path, auth)
    }

    #[test]
    fn a_token_grants_its_role_and_nothing_else_does() {
        let (token, record) = new_token("ci", Role::ReadWrite, None);
        let (_dir, _path, auth) = auth_with(vec![record.clone()]);
        let now = SystemTime::now();
        assert_eq!(auth.authenticate(&token, now), Ok(Role::ReadWrite));
        // Same id, another secret; a malformed token; a token of no record.
        let forged = format!("rft_{}_{}", record.id, "0".repeat(64));
        let (other, _) = new_token("x", Role::Admin, None);
        for bad in [forged.as_str(), "rft_short", "", "Bearer x", other.as_str()] {
            assert!(
                matches!(
                    auth.authenticate(bad, now),
                    Err(Refusal::Unauthenticated(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_expired_token_is_refused() {
        let (token, record) = new_token("old", Role::Admin, Some(1_000));
        let (_dir, _path, auth) = auth_with(vec![record]);
        let before = UNIX_EPOCH + Duration::from_secs(999);
        let after = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(auth.authenticate(&token, before), Ok(Role::Admin));
        assert_eq!(
            auth.authenticate(&token, after),
            Err(Refusal::Unauthenticated("the token has expired".into()))
        );
    }

    #[test]
    fn rotation_takes_effect_without_a_restart_and_a_broken_file_changes_nothing() {
        let (old, old_record) = new_token("old", Role::Admin, None);
        let (new, new_record) = new_token("new", Role::Admin, None);
        let (_dir, path, auth) = auth_with(vec![old_record.clone()]);
        let now = SystemTime::now();
        // Both in force while the new one is handed out...
        TokensFile {
            tokens: vec![old_record, new_record.clone()],
        }
        .write(&path)
        .expect("write");
        assert!(auth.reload_if_changed().expect("reload"));
        assert!(!auth.reload_if_changed().expect("unchanged"));
        assert!(auth.authenticate(&old, now).is_ok() && auth.authenticate(&new, now).is_ok());
        // ...then the old one goes.
        TokensFile {
            tokens: vec![new_record],
        }
        .write(&path)
        .expect("write");
        assert!(auth.reload_if_changed().expect("reload"));
        assert!(auth.authenticate(&old, now).is_err());
        assert!(auth.authenticate(&new, now).is_ok());
        std::fs::write(&path, "[[token]]\nid = 7\n").expect("write");
        assert!(auth.reload_if_changed().is_err());
        assert!(
            auth.authenticate(&new, now).is_ok(),
            "the loaded tokens stay"
        );
    }

    #[test]
    fn the_file_keeps_digests_only() {
        let (token, record) = new_token("ci", Role::Read, Some(5));
        let (_dir, path, _auth) = auth_with(vec![record]);
        let text = std::fs::read_to_string(&path).expect("read");
        let secret = token.rsplit('_').next().expect("secret");
        assert!(!text.contains(secret));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
            assert_eq!(mode & 0o077, 0, "owner only");
        }
    }

    #[test]
    fn invalid_files_are_refused_with_the_reason() {
        for (text, reason) in [
            (
                "[[token]]\nid = \"zz\"\nrole = \"read\"\nsha256 = \"00\"\n",
                "hex",
            ),
            (
                "[[token]]\nid = \"0123456789abcdef\"\nrole = \"root\"\nsha256 = \"00\"\n",
                "root",
            ),
            (
                "[[token]]\nid = \"0123456789abcdef\"\nrole = \"read\"\nsha256 = \"00\"\n",
                "sha256",
            ),
            ("colour = 1\n", "colour"),
        ] {
            let error = TokensFile::parse(text).expect_err(text);
            assert!(error.contains(reason), "{error}");
        }
    }

    #[test]
    fn roles_are_ordered_and_members_may_do_anything() {
        let read = Ok(Role::Read);
        assert!(authorize(&read, Role::Read).is_ok());
        assert_eq!(
            authorize(&read, Role::ReadWrite),
            Err(Refusal::Forbidden {
                needed: Role::ReadWrite,
                held: Role::Read
            })
        );
        assert!(authorize(&Ok(Role::Admin), Role::ReadWrite).is_ok());
        let (_dir, _path, auth) = auth_with(vec![]);
        let access = Access::with_tokens(Arc::new(auth));
        assert!(matches!(
            access.role_of_session(&ClientIdentity::default()),
            Err(Refusal::Unauthenticated(_))
        ));
        let member = ClientIdentity {
            member: Some(raftor_core::NodeId(2)),
            token: None,
        };
        assert_eq!(access.role_of_session(&member), Ok(Role::Admin));
        assert_eq!(Access::open().role_of_token(None), Ok(Role::Admin));
    }
}
