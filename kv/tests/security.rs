//! Security over real TCP: mutual TLS between members (a connection without a certificate, with
//! one from another CA, an expired one, or one naming another node is refused before any frame
//! reaches the rules), HTTPS and native TLS for clients, bearer tokens with roles (401 without a
//! valid token, 403 with a role too weak), token, certificate and CA rotation without a
//! restart, and open connections cut once the certificate they were shown expires or is no
//! longer trusted.

#[cfg(target_os = "linux")]
#[path = "../../actors/tests/support/accepted_socket.rs"]
mod accepted_socket;
mod common;

use common::free_base_port;
use futures::{SinkExt, StreamExt};
use raftor_actors::network::client::{
    ClientConnectOptions, ClientConnection, ClientConnectionError,
};
use raftor_actors::network::codec::{Frame, FrameCodec, PROTOCOL_VERSION};
use raftor_actors::network::tls::{
    certificates_from_pem, node_name, provider, ClientTls, NodeTls, TlsFiles,
};
use raftor_core::{AppendEntries, Envelope, LogId, LogIndex, Message, NodeId, Term};
use raftor_kv::auth::{new_token, Role, TokensFile};
use raftor_kv::certs::{self, Ca};
use raftor_kv::config::NodeConfig;
use raftor_kv::local_cluster::{local_credentials, quick_timing, secure};
use raftor_kv::protocol::Consistency;
use raftor_kv::server::RunningNode;
use raftor_kv::{Client, ClientError, ClientOptions};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::codec::Framed;

struct SecureCluster {
    nodes: Vec<RunningNode>,
    base: u16,
    http_base: u16,
    dir: tempfile::TempDir,
}

impl SecureCluster {
    async fn start() -> SecureCluster {
        Self::start_with(3, |_| {}).await
    }

    /// `size` founding members with TLS and tokens, each configuration then adjusted by
    /// `adjust`; certificates for one node more, which may join later.
    async fn start_with(size: u64, adjust: impl Fn(&mut NodeConfig)) -> SecureCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("certs");
        local_credentials(&certs, size + 1).expect("credentials");
        let (nodes, base, http_base) = common::start_on_free_ports(size, dir.path(), |config| {
            quick_timing(config);
            secure(config, &certs);
            adjust(config);
        })
        .await;
        SecureCluster {
            nodes,
            base,
            http_base,
            dir,
        }
    }

    fn certs(&self) -> std::path::PathBuf {
        self.dir.path().join("certs")
    }

    fn token(&self, role: Role) -> String {
        std::fs::read_to_string(certs::token_path(&self.certs(), role))
            .expect("token file")
            .trim()
            .to_owned()
    }

    fn tls(&self) -> ClientTls {
        ClientTls::from_ca_file(&certs::ca_cert_path(&self.certs())).expect("CA")
    }

    fn endpoints(&self) -> Vec<String> {
        (1..=3)
            .map(|i| format!("127.0.0.1:{}", self.base + i))
            .collect()
    }

    fn client(&self, token: Option<String>) -> Client {
        let options = ClientOptions {
            tls: Some(self.tls()),
            token,
            operation_timeout: Duration::from_secs(10),
            ..ClientOptions::default()
        };
        Client::new(self.endpoints(), options).expect("client")
    }

    fn https(&self, id: u64) -> String {
        format!("https://localhost:{}", self.http_base + id as u16)
    }

    async fn term_of(&self, id: u64) -> Term {
        self.nodes[id as usize - 1]
            .handle
            .status()
            .await
            .expect("status")
            .term
    }

    async fn shutdown(self) {
        for node in &self.nodes {
            node.shutdown().await;
        }
    }
}

/// A rustls client configuration trusting `ca_pem`, presenting `identity` (certificate and key,
/// PEM) if given.
fn tls_client(ca_pem: &[u8], identity: Option<(&str, &str)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(certificate.expect("PEM")).expect("root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let (chain, key) = pem_identity(cert, key);
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        }
    };
    Arc::new(config)
}

/// A certificate of `ca` for node `id` that expires in `seconds`: (certificate, key), PEM.
fn expiring_node_certificate(ca: &Ca, id: u64, seconds: i64) -> (String, String) {
    let now = time::OffsetDateTime::now_utc();
    ca.issue_valid(
        &format!("raftor node {id}"),
        vec![node_name(NodeId(id))],
        now - time::Duration::days(30),
        now + time::Duration::seconds(seconds),
    )
    .expect("a certificate")
}

/// A certificate chain and its private key from their PEM text.
fn pem_identity(cert: &str, key: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    (
        certificates_from_pem("certificate", cert.as_bytes()).expect("chain"),
        PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
    )
}

/// An AppendEntries claiming to come from `from` at `term`: if it reached node 1's rules, node 1
/// would move to that term.
fn forged_append(from: u64, term: u64) -> Frame {
    Frame::Raft(Envelope {
        from: NodeId(from),
        to: NodeId(1),
        message: Message::AppendEntries(AppendEntries {
            term: Term(term),
            prev_log_id: LogId::new(Term(0), LogIndex(0)),
            entries: vec![],
            leader_commit: LogIndex(0),
            sync_may_wait: false,
            request_id: 1,
        }),
    })
}

/// Dials node 1's Raft port over TLS with `config`, says hello as node `claim` and sends a forged
/// AppendEntries at `term`; true if the connection was still open afterwards (the node reads
/// and keeps a peer connection it accepts; it closes one it refuses).
async fn attack(addr: &str, config: Arc<rustls::ClientConfig>, claim: u64, term: u64) -> bool {
    member_connection(addr, config, claim, term).await.is_some()
}

/// A peer connection to node 1 as [`attack`] makes it, if node 1 kept it.
async fn member_connection(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
    claim: u64,
    term: u64,
) -> Option<Framed<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, FrameCodec>> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = ServerName::try_from(node_name(NodeId(1))).expect("name");
    // Refused at the handshake, if so.
    let stream = connector.connect(name, stream).await.ok()?;
    let mut framed = Framed::new(stream, FrameCodec::new(1 << 20));
    let hello = Frame::Hello {
        protocol_version: PROTOCOL_VERSION,
        cluster_id: "raftor-local".into(),
        node_id: NodeId(claim),
    };
    if framed.send(hello).await.is_err() || framed.send(forged_append(claim, term)).await.is_err() {
        return None;
    }
    // A refused connection is closed by the node (with TLS 1.3 the client learns a refused
    // certificate only now, too); an accepted one stays open and silent.
    match tokio::time::timeout(Duration::from_millis(1500), framed.next()).await {
        Err(_elapsed) => Some(framed),
        Ok(_closed_or_error) => None,
    }
}

#[actix_rt::test]
async fn members_without_a_valid_certificate_naming_them_never_reach_the_rules() {
    let cluster = SecureCluster::start().await;
    let certs = cluster.certs();
    let addr = format!("127.0.0.1:{}", cluster.base + 1);
    let ca_pem = std::fs::read(certs::ca_cert_path(&certs)).expect("CA");
    let read = |path: std::path::PathBuf| std::fs::read_to_string(path).expect("read");
    let node3 = (
        read(certs::node_cert_path(&certs, 3)),
        read(certs::node_key_path(&certs, 3)),
    );
    let foreign = Ca::generate(30).expect("another CA");
    let foreign2 = foreign.issue_node(2, &[], 30).expect("cert");
    // From the right CA, naming node 2, but expired.
    let own_ca = Ca::read(&certs).expect("the CA raftor certs kept");
    let expired = expiring_node_certificate(&own_ca, 2, -86_400);
    let before = cluster.term_of(1).await;
    let far = before.0 + 1000;
    let cases: Vec<(&str, Arc<rustls::ClientConfig>, u64)> = vec![
        ("no certificate", tls_client(&ca_pem, None), 2),
        (
            "a certificate from another CA",
            tls_client(&ca_pem, Some((&foreign2.0, &foreign2.1))),
            2,
        ),
        (
            "an expired certificate",
            tls_client(&ca_pem, Some((&expired.0, &expired.1))),
            2,
        ),
        (
            "node 3's certificate claiming node 2",
            tls_client(&ca_pem, Some((&node3.0, &node3.1))),
            2,
        ),
    ];
    for (what, config, claim) in cases {
        assert!(
            !attack(&addr, config, claim, far).await,
            "{what}: the connection must be refused"
        );
        assert!(
            cluster.term_of(1).await < Term(far),
            "{what}: the forged message reached the rules"
        );
    }
    // Plain TCP to a TLS port: the handshake fails, nothing is read as a frame.
    let mut plain = Framed::new(
        tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect"),
        FrameCodec::new(1 << 20),
    );
    let _ = plain
        .send(Frame::Hello {
            protocol_version: PROTOCOL_VERSION,
            cluster_id: "raftor-local".into(),
            node_id: NodeId(2),
        })
        .await;
    let _ = plain.send(forged_append(2, far)).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), plain.next()).await;
    assert!(closed.is_ok(), "plain TCP is closed");
    assert!(
        cluster.term_of(1).await < Term(far),
        "plain TCP reached the rules"
    );

    // The control: node 3's own certificate as node 3 is accepted, and its message does reach
    // the rules (so the refusals above are what kept the term).
    let config = tls_client(&ca_pem, Some((&node3.0, &node3.1)));
    assert!(attack(&addr, config, 3, far).await, "a member is accepted");
    let mut reached = false;
    for _ in 0..50 {
        if cluster.term_of(1).await >= Term(far) {
            reached = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reached, "a member's message reaches the rules");
    cluster.shutdown().await;
}

#[actix_rt::test]
async fn a_tls_cluster_with_tokens_replicates_and_checks_roles_natively() {
    let cluster = SecureCluster::start().await;
    let writer = cluster.client(Some(cluster.token(Role::ReadWrite)));
    // Writes go through whichever node answers (forwarded over TLS as a member when it is a
    // follower) and are read back from each node.
    for i in 0..10 {
        writer
            .put(&format!("k{i}"), format!("v{i}"))
            .await
            .expect("put");
    }
    let reader = cluster.client(Some(cluster.token(Role::Read)));
    assert_eq!(
        reader
            .get("k9", Consistency::Linearizable)
            .await
            .expect("get")
            .as_deref(),
        Some(&b"v9"[..])
    );
    assert!(matches!(
        reader.put("k0", "nope").await,
        Err(ClientError::Forbidden(_))
    ));
    assert!(matches!(
        writer.transfer_leader(2).await,
        Err(ClientError::Forbidden(_))
    ));
    for token in [
        None,
        Some("rft_0123456789abcdef_".to_owned() + &"0".repeat(64)),
    ] {
        let anonymous = cluster.client(token);
        assert!(matches!(
            anonymous.get("k0", Consistency::Linearizable).await,
            Err(ClientError::Unauthenticated(_))
        ));
    }
    // A client that does not trust the cluster's CA cannot even connect.
    let stranger = Client::new(
        cluster.endpoints(),
        ClientOptions {
            tls: Some(
                ClientTls::from_ca_pem(Ca::generate(1).expect("CA").cert_pem.as_bytes())
                    .expect("tls"),
            ),
            token: Some(cluster.token(Role::Admin)),
            operation_timeout: Duration::from_secs(2),
            ..ClientOptions::default()
        },
    )
    .expect("client");
    assert!(matches!(
        stranger.get("k0", Consistency::Linearizable).await,
        Err(ClientError::Unavailable(_))
    ));
    cluster.shutdown().await;
}

/// An HTTPS request over HTTP/1.1 with an optional bearer token; (status, body, challenged).
async fn https(
    cluster: &SecureCluster,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String, bool) {
    https_as(cluster, false, method, path, token, body.as_bytes()).await
}

/// As [`https`], over HTTP/2 when `http2` (offered by ALPN, as curl does).
async fn https_as(
    cluster: &SecureCluster,
    http2: bool,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, String, bool) {
    let config = tls_client(
        &std::fs::read(certs::ca_cert_path(&cluster.certs())).expect("CA"),
        None,
    );
    let mut config = Arc::unwrap_or_clone(config);
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    let client = awc::Client::builder()
        .connector(awc::Connector::new().rustls_0_23(Arc::new(config)))
        .timeout(Duration::from_secs(10))
        .finish();
    let url = format!("{}{path}", cluster.https(1));
    let mut request = client.request(method.parse().expect("method"), &url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let mut response = request
        .send_body(body.to_owned())
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let expected = if http2 {
        awc::http::Version::HTTP_2
    } else {
        awc::http::Version::HTTP_11
    };
    assert_eq!(response.version(), expected);
    let challenged = response.headers().contains_key("www-authenticate");
    let body = response.body().await.expect("body");
    (
        response.status().as_u16(),
        String::from_utf8_lossy(&body).into_owned(),
        challenged,
    )
}

#[actix_rt::test]
async fn https_needs_a_token_with_the_role_of_each_route() {
    let cluster = SecureCluster::start().await;
    let read = cluster.token(Role::Read);
    let write = cluster.token(Role::ReadWrite);
    let admin = cluster.token(Role::Admin);
    // Probes and metrics stay open (orchestrators and Prometheus scrape them).
    for path in ["/livez", "/metrics", "/ui"] {
        assert_eq!(
            https(&cluster, "GET", path, None, "").await.0,
            200,
            "{path}"
        );
    }
    let (status, _, challenged) = https(&cluster, "GET", "/v1/kv/a", None, "").await;
    assert_eq!((status, challenged), (401, true));
    let (status, body, _) = https(&cluster, "GET", "/v1/status", Some("rft_bad"), "").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        https(&cluster, "PUT", "/v1/kv/a", Some(&read), "x").await.0,
        403
    );
    assert_eq!(
        https(&cluster, "PUT", "/v1/kv/a", Some(&write), "x")
            .await
            .0,
        200
    );
    assert_eq!(
        https(&cluster, "GET", "/v1/kv/a", Some(&read), "").await.0,
        200
    );
    assert_eq!(
        https(&cluster, "GET", "/v1/cluster", Some(&read), "")
            .await
            .0,
        200
    );
    for (method, path) in [
        ("POST", "/v1/admin/snapshot"),
        ("POST", "/v1/leader/transfer"),
        ("POST", "/v1/members"),
        ("DELETE", "/v1/members/3"),
    ] {
        let (status, body, _) = https(&cluster, method, path, Some(&write), "{}").await;
        assert_eq!(status, 403, "{method} {path}: {body}");
    }
    let (status, body, _) = https(&cluster, "POST", "/v1/admin/snapshot", Some(&admin), "").await;
    assert_eq!(status, 200, "{body}");
    cluster.shutdown().await;
}

/// Over HTTP/2 an answer given before the request's body was read (401 and 403 from the token
/// check, 413 from the value limit) reaches the client: the server reads the rest of the body
/// first, so the stream ends without a reset (curl reported a stream error instead of the answer).
#[actix_rt::test]
async fn answers_before_the_body_reach_an_http2_client() {
    let cluster = SecureCluster::start().await;
    let read = cluster.token(Role::Read);
    let write = cluster.token(Role::ReadWrite);
    let value = vec![b'v'; 300 * 1024];
    for round in 0..20 {
        let (status, body, challenged) =
            https_as(&cluster, true, "PUT", "/v1/kv/a", None, &value).await;
        assert_eq!((status, challenged), (401, true), "round {round}: {body}");
        let (status, body, _) =
            https_as(&cluster, true, "PUT", "/v1/kv/a", Some(&read), &value).await;
        assert_eq!(status, 403, "round {round}: {body}");
    }
    let over_the_limit = vec![b'v'; 3 * 1024 * 1024];
    let (status, body, _) = https_as(
        &cluster,
        true,
        "PUT",
        "/v1/kv/big",
        Some(&write),
        &over_the_limit,
    )
    .await;
    assert_eq!(status, 413, "{body}");
    let (status, body, _) = https_as(&cluster, true, "PUT", "/v1/kv/a", Some(&write), b"x").await;
    assert_eq!(status, 200, "{body}");
    cluster.shutdown().await;
}

#[actix_rt::test]
async fn tokens_rotate_without_a_restart() {
    let cluster = SecureCluster::start().await;
    let tokens_path = certs::tokens_path(&cluster.certs());
    let old = cluster.token(Role::ReadWrite);
    let (new, record) = new_token("rotated", Role::ReadWrite, None);
    let mut file = TokensFile::read(&tokens_path).expect("tokens");
    file.tokens.push(record);
    file.write(&tokens_path).expect("write");
    let works = |token: String| {
        let client = cluster.client(Some(token));
        async move {
            for _ in 0..40 {
                match client.put("rotation", "x").await {
                    Ok(_) => return true,
                    Err(ClientError::Unauthenticated(_)) => {
                        tokio::time::sleep(Duration::from_millis(250)).await
                    }
                    Err(other) => panic!("{other}"),
                }
            }
            false
        }
    };
    assert!(works(new.clone()).await, "the new token is taken up");
    assert!(
        works(old.clone()).await,
        "the old one still works meanwhile"
    );
    // Revoke the old token.
    let old_id = old.split('_').nth(1).expect("id").to_owned();
    file.tokens.retain(|record| record.id != old_id);
    file.write(&tokens_path).expect("write");
    let mut refused = false;
    for _ in 0..40 {
        let client = cluster.client(Some(old.clone()));
        if matches!(
            client.put("rotation", "y").await,
            Err(ClientError::Unauthenticated(_))
        ) {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(refused, "the revoked token is refused");
    assert!(works(new).await, "the new one goes on working");
    cluster.shutdown().await;
}

#[actix_rt::test]
async fn a_node_refuses_to_start_with_another_nodes_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    local_credentials(&certs, 2).expect("credentials");
    let base = free_base_port(2);
    let mut config = raftor_kv::local_cluster::local_node_config(1, 2, base, None, dir.path());
    secure(&mut config, &certs);
    if let Some(tls) = &mut config.security.tls {
        tls.cert = certs::node_cert_path(&certs, 2);
        tls.key = certs::node_key_path(&certs, 2);
    }
    let error = match raftor_kv::server::start_node(&config).await {
        Ok(_) => panic!("started with node 2's certificate"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("does not name node 1"), "{error}");
}

#[actix_rt::test]
async fn tokens_without_tls_are_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    local_credentials(&certs, 1).expect("credentials");
    let base = free_base_port(1);
    let mut config = raftor_kv::local_cluster::local_node_config(1, 1, base, None, dir.path());
    secure(&mut config, &certs);
    config.security.tls = None;
    let error = match raftor_kv::server::start_node(&config).await {
        Ok(_) => panic!("started with tokens and no TLS"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("--auth-tokens needs TLS"), "{error}");
}

/// A node joins a secure cluster: it asks a member's HTTPS API with an admin token, is added and
/// promoted, and talks mutual TLS with the others; without a token it is refused and says why.
#[actix_rt::test]
async fn a_node_joins_a_secure_cluster_with_an_admin_token() {
    let cluster = SecureCluster::start().await;
    let certs = cluster.certs();
    let base4 = free_base_port(1);
    let mut config =
        raftor_kv::local_cluster::local_node_config(4, 4, base4 - 3, None, cluster.dir.path());
    quick_timing(&mut config);
    secure(&mut config, &certs);
    config.peers.clear();
    config.join = Some(raftor_kv::config::JoinConfig {
        url: Some(cluster.https(1)),
        advertise: format!("127.0.0.1:{}", base4 + 1),
        members: Default::default(),
    });
    config.security.token = Some(cluster.token(Role::Admin));
    let joiner = raftor_kv::server::start_node(&config)
        .await
        .expect("node 4 starts");
    let mut promoted = false;
    for _ in 0..200 {
        let voters = cluster.nodes[0]
            .handle
            .status()
            .await
            .map(|s| s.voters)
            .unwrap_or_default();
        if voters.contains(&NodeId(4)) {
            promoted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(promoted, "node 4 was added and promoted");
    let writer = cluster.client(Some(cluster.token(Role::ReadWrite)));
    writer.put("after-join", "yes").await.expect("put");
    let mut applied = false;
    for _ in 0..100 {
        let status = joiner.handle.status().await.expect("status");
        let leader = cluster.nodes[0].handle.status().await.expect("status");
        if status.applied_index >= leader.commit_index {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(applied, "node 4 replicates over mutual TLS");
    joiner.shutdown().await;
    cluster.shutdown().await;
}

/// An HTTPS connection accepted by actix-web's worker threads (`http_workers`; it reaches the
/// service as a TLS stream, not a TCP one) is probed with keepalive and bounds unacknowledged
/// data, as every accepted connection is.
#[cfg(target_os = "linux")]
#[actix_rt::test]
async fn https_connections_on_worker_threads_find_out_when_the_client_is_gone() {
    let cluster = SecureCluster::start_with(1, |config| config.http_workers = 2).await;
    let server = cluster.nodes[0].http_addr.expect("HTTPS is served");
    let tcp = tokio::net::TcpStream::connect(server)
        .await
        .expect("connect");
    let client = tcp.local_addr().expect("address");
    let config = tls_client(
        &std::fs::read(certs::ca_cert_path(&cluster.certs())).expect("CA"),
        None,
    );
    let name = ServerName::try_from(node_name(NodeId(1))).expect("name");
    let mut stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    common::status_answered(&mut stream).await;
    accepted_socket::assert_probed(server, client, "HTTPS on worker threads");
    cluster.shutdown().await;
}

/// Whether a GET of `/v1/kv/rotation` at node `id` over HTTPS, trusting only `ca_pem`, is
/// answered (with a read token).
async fn https_answers_trusting(cluster: &SecureCluster, id: u64, ca_pem: &[u8]) -> bool {
    let client = awc::Client::builder()
        .connector(awc::Connector::new().rustls_0_23(tls_client(ca_pem, None)))
        .timeout(Duration::from_secs(5))
        .finish();
    let url = format!("{}/v1/kv/rotation", cluster.https(id));
    client
        .get(&url)
        .bearer_auth(cluster.token(Role::Read))
        .send()
        .await
        .is_ok()
}

/// A write through a native client trusting only `ca_pem` is answered within `seconds`.
async fn writes_trusting(cluster: &SecureCluster, ca_pem: &[u8], seconds: u64) -> bool {
    let options = ClientOptions {
        tls: Some(ClientTls::from_ca_pem(ca_pem).expect("CA")),
        token: Some(cluster.token(Role::ReadWrite)),
        operation_timeout: Duration::from_secs(seconds),
        ..ClientOptions::default()
    };
    let client = Client::new(cluster.endpoints(), options).expect("client");
    client.put("rotation", "x").await.is_ok()
}

/// Polls `check` every 250 ms for up to 20 s (the nodes look at their files every 2 s).
async fn eventually<F: std::future::Future<Output = bool>>(mut check: impl FnMut() -> F) -> bool {
    for _ in 0..80 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

/// Node `id`'s applied index.
async fn applied(cluster: &SecureCluster, id: u64) -> raftor_core::LogIndex {
    let node = cluster
        .nodes
        .iter()
        .find(|node| node.handle.id() == NodeId(id))
        .expect("running");
    node.handle.status().await.expect("status").applied_index
}

/// Writes node `id`'s key, then (once the node has looked at its files with a key that does not
/// match its certificate, and kept serving the old pair) its certificate, both of `ca`.
async fn renew(cluster: &SecureCluster, id: u64, ca: &Ca, old_ca: &[u8]) {
    let certs = cluster.certs();
    let (cert, key) = ca.issue_node(id, &[], 365).expect("issue");
    std::fs::write(certs::node_key_path(&certs, id), key).expect("write key");
    tokio::time::sleep(RELOAD_WAIT).await;
    assert!(
        https_answers_trusting(cluster, id, old_ca).await,
        "node {id} serves its old certificate meanwhile"
    );
    std::fs::write(certs::node_cert_path(&certs, id), cert).expect("write cert");
}

#[actix_rt::test]
async fn certificates_and_the_ca_rotate_without_a_restart() {
    let cluster = SecureCluster::start().await;
    let certs = cluster.certs();
    let ca_path = certs::ca_cert_path(&certs);
    let old_ca = std::fs::read(&ca_path).expect("CA");
    let old_identity = (
        std::fs::read_to_string(certs::node_cert_path(&certs, 2)).expect("cert"),
        std::fs::read_to_string(certs::node_key_path(&certs, 2)).expect("key"),
    );
    let new_ca = Ca::generate(365).expect("CA");
    let new_ca_only = new_ca.cert_pem.as_bytes();
    let both = [old_ca.as_slice(), new_ca_only].concat();
    let node1 = format!("127.0.0.1:{}", cluster.base + 1);
    assert!(writes_trusting(&cluster, &old_ca, 10).await);
    assert!(!writes_trusting(&cluster, new_ca_only, 2).await);
    assert!(!https_answers_trusting(&cluster, 1, new_ca_only).await);

    // 1. Every node trusts both CAs. 2. Nodes 1 and 3 get certificates of the new CA; node 2
    // keeps its old one for now.
    std::fs::write(&ca_path, &both).expect("write CA");
    for id in [1, 3] {
        renew(&cluster, id, &new_ca, &old_ca).await;
    }
    assert!(
        eventually(|| writes_trusting(&cluster, new_ca_only, 2)).await,
        "the nodes present the new CA's certificates to clients"
    );
    for id in [1, 3] {
        assert!(
            eventually(|| https_answers_trusting(&cluster, id, new_ca_only)).await,
            "node {id} serves HTTPS with its new certificate"
        );
    }
    let old_member = tls_client(&both, Some((&old_identity.0, &old_identity.1)));
    let mut held = member_connection(&node1, old_member.clone(), 2, 0)
        .await
        .expect("a member's certificate of the old CA is still trusted");
    // A client session at node 1 presenting node 2's old certificate (as a follower forwarding
    // to the leader does).
    let old_node_2 = NodeTls::from_pem(
        NodeId(2),
        &both,
        old_identity.0.as_bytes(),
        old_identity.1.as_bytes(),
    )
    .expect("node 2's old credentials");
    let session = Client::new(
        vec![node1.clone()],
        ClientOptions {
            tls: Some(old_node_2.member_client(NodeId(1))),
            operation_timeout: Duration::from_secs(3),
            ..ClientOptions::default()
        },
    )
    .expect("client");
    session
        .put("session", "open")
        .await
        .expect("a member's session");

    // 3. The old CA is dropped: its certificates are refused on new connections, and the
    // connections they opened are closed, the held one and node 2's with the others (both ways).
    std::fs::write(&ca_path, new_ca_only).expect("write CA");
    let closed = tokio::time::timeout(Duration::from_secs(10), held.next()).await;
    assert!(
        matches!(closed, Ok(None | Some(Err(_)))),
        "the connection of a certificate no longer trusted is closed"
    );
    assert!(
        !attack(&node1, old_member, 2, 0).await,
        "a member's certificate of the old CA is refused"
    );
    assert!(
        session.put("session", "closed").await.is_err(),
        "the session is closed, and a new one refused"
    );
    // Every node has looked at the files since (node 1 had when it closed the held one): nodes
    // 1 and 3 cut node 2 off (node 2 keeps its old files, which the new CA file does not verify).
    tokio::time::sleep(RELOAD_WAIT * 2).await;
    assert!(writes_trusting(&cluster, new_ca_only, 10).await);
    // Applied by the leader (node 1 or 3) when the write was answered.
    let written = applied(&cluster, 1).await.max(applied(&cluster, 3).await);
    tokio::time::sleep(RELOAD_WAIT).await;
    assert!(
        applied(&cluster, 2).await < written,
        "node 2, whose certificate the others no longer trust, is cut off"
    );

    // 4. Node 2 gets its certificate of the new CA: members dial each other again with what
    // they reloaded (each presenting its new certificate, trusting only the new CA), and node 2
    // catches up.
    renew(&cluster, 2, &new_ca, &old_ca).await;
    assert!(
        eventually(|| async { applied(&cluster, 2).await >= written }).await,
        "node 2 is back"
    );
    assert!(eventually(|| https_answers_trusting(&cluster, 2, new_ca_only)).await);

    // A broken file is refused whole; the credentials in force stay.
    std::fs::write(certs::node_cert_path(&certs, 1), "not a certificate").expect("write");
    tokio::time::sleep(RELOAD_WAIT).await;
    assert!(https_answers_trusting(&cluster, 1, new_ca_only).await);
    assert!(writes_trusting(&cluster, new_ca_only, 10).await);
    cluster.shutdown().await;
}

/// Long enough for every node to have looked at its files again.
const RELOAD_WAIT: Duration = Duration::from_millis(2_500);

#[test]
fn a_reload_takes_only_files_that_pass_the_checks_made_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    local_credentials(&certs, 2).expect("credentials");
    let files = certs::node_tls_files(&certs, 1);
    let tls = NodeTls::load(NodeId(1), &files).expect("load");
    assert!(
        !tls.reload_if_changed().expect("unchanged"),
        "nothing changed"
    );
    let ca = Ca::read(&certs).expect("CA");
    let refused = |cert: &str, key: &str| {
        std::fs::write(&files.cert, cert).expect("write");
        std::fs::write(&files.key, key).expect("write");
        let error = tls.reload_if_changed().expect_err("refused");
        assert!(!error.again, "a new refusal: {error}");
        error.to_string()
    };
    let (other_cert, other_key) = ca.issue_node(2, &[], 30).expect("issue");
    let error = refused(&other_cert, &other_key);
    assert!(error.contains("does not name node 1"), "{error}");
    let (cert, key) = ca.issue_node(1, &[], 30).expect("issue");
    let error = refused(&cert, &other_key);
    assert!(error.contains("private key"), "{error}");
    let stranger = Ca::generate(30).expect("CA");
    let (strange_cert, strange_key) = stranger.issue_node(1, &[], 30).expect("issue");
    let error = refused(&strange_cert, &strange_key);
    // Another CA with the same name: its signature is not the cluster CA's.
    assert!(
        error.contains("invalid peer certificate: BadSignature"),
        "{error}"
    );
    let error = refused("garbage", &key);
    assert!(error.contains("no PEM certificate"), "{error}");
    let (expired_cert, expired_key) = expiring_node_certificate(&ca, 1, -86_400);
    let error = refused(&expired_cert, &expired_key);
    assert!(error.contains("expired"), "{error}");
    let error = tls.reload_if_changed().expect_err("still expired");
    assert!(error.again, "the same files, refused once: {error}");
    std::fs::write(&files.cert, &cert).expect("write");
    std::fs::write(&files.key, &key).expect("write");
    assert!(tls.reload_if_changed().expect("a good pair"), "taken");
    assert!(!tls.reload_if_changed().expect("unchanged"), "once");
    std::fs::remove_file(&files.key).expect("remove");
    let error = tls.reload_if_changed().expect_err("no key");
    assert!(error.to_string().contains("cannot read"), "{error}");
    assert!(!error.again);
    assert!(tls.reload_if_changed().expect_err("no key").again);
}

/// Serves TLS on a loopback port with `cert` and `key` (PEM), as rustls does by default: it
/// offers session resumption. Returns the address; every connection is handshaken and dropped.
async fn tls_server(cert: &str, key: &str) -> std::net::SocketAddr {
    tls_server_with(cert, key, false).await
}

/// [`tls_server`], which holds each connection open (reading until the dialler closes it) if
/// `hold`.
async fn tls_server_with(cert: &str, key: &str, hold: bool) -> std::net::SocketAddr {
    let (chain, key) = pem_identity(cert, key);
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    actix_rt::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            actix_rt::spawn(async move {
                if let Ok(mut stream) = acceptor.accept(stream).await {
                    if hold {
                        let mut sink = tokio::io::sink();
                        let _ = tokio::io::copy(&mut stream, &mut sink).await;
                    }
                    // Flush the session tickets TLS 1.3 sends after the handshake.
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
                }
            });
        }
    });
    addr
}

/// Node 1's TLS set-up, loaded from the files of fresh local credentials: (the directory that
/// holds them, node 1's files, its `NodeTls`, the CA).
fn node_1_alone() -> (tempfile::TempDir, TlsFiles, NodeTls, Ca) {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    local_credentials(&certs, 3).expect("credentials");
    let files = certs::node_tls_files(&certs, 1);
    let tls = NodeTls::load(NodeId(1), &files).expect("load");
    let ca = Ca::read(&certs).expect("CA");
    (dir, files, tls, ca)
}

/// Gives node 1 a new certificate of `ca` (trusting `ca` alone from then on if `only_ca`), and
/// has `tls` take it.
fn replace_node_1(tls: &NodeTls, files: &TlsFiles, ca: &Ca, only_ca: bool) {
    let (cert, key) = ca.issue_node(1, &[], 30).expect("issue");
    if only_ca {
        std::fs::write(&files.ca, &ca.cert_pem).expect("write");
    }
    std::fs::write(&files.key, key).expect("write");
    std::fs::write(&files.cert, cert).expect("write");
    assert!(tls.reload_if_changed().expect("reload"));
}

/// Whether node 1, with `tls`, completes a handshake dialling member 2 at `addr`.
async fn dials_member_2(tls: &NodeTls, addr: std::net::SocketAddr) -> bool {
    let client = tls.member_client(NodeId(2));
    let connector = tokio_rustls::TlsConnector::from(client.config());
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(node_name(NodeId(2))).expect("name");
    match connector.connect(name, stream).await {
        Ok(mut stream) => {
            // Read to the end, so the server's session tickets (if any) are taken.
            let mut rest = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest).await;
            true
        }
        Err(_) => false,
    }
}

#[actix_rt::test]
async fn a_member_dialling_after_a_reload_trusts_only_the_new_ca() {
    let (_dir, files, tls, old_ca) = node_1_alone();
    let (old_cert, old_key) = old_ca.issue_node(2, &[], 30).expect("issue");
    let old_member_2 = tls_server(&old_cert, &old_key).await;
    // Twice: the second connection may resume the first's session, if anything allows it.
    assert!(dials_member_2(&tls, old_member_2).await);
    assert!(dials_member_2(&tls, old_member_2).await);
    // Node 1 moves to a new CA alone.
    let new_ca = Ca::generate(30).expect("CA");
    replace_node_1(&tls, &files, &new_ca, true);
    assert!(
        !dials_member_2(&tls, old_member_2).await,
        "a member's certificate of the dropped CA is refused, resumption offered or not"
    );
    let (cert_3, key_3) = new_ca.issue_node(3, &[], 30).expect("issue");
    let member_3 = tls_server(&cert_3, &key_3).await;
    assert!(
        !dials_member_2(&tls, member_3).await,
        "the new CA's certificate of another member is refused"
    );
    let (cert_2, key_2) = new_ca.issue_node(2, &[], 30).expect("issue");
    let new_member_2 = tls_server(&cert_2, &key_2).await;
    assert!(dials_member_2(&tls, new_member_2).await);
}

/// Node 1, with `tls`, opens a client session to member 2 at `addr` as a member does to forward
/// a request.
async fn client_connection_to_member_2(
    tls: &NodeTls,
    addr: std::net::SocketAddr,
) -> Result<ClientConnection, ClientConnectionError> {
    let options = ClientConnectOptions {
        tls: Some(tls.member_client(NodeId(2))),
        ..ClientConnectOptions::new(1 << 20)
    };
    ClientConnection::connect_with(&addr.to_string(), &options).await
}

/// A node forwards requests to the leader over a connection it keeps (`ClientConnection`,
/// dialled with `NodeTls::member_client`): once the node's reloaded files no longer trust the
/// leader's certificate, that connection closes, as its Raft connections do, and the next
/// request dials afresh under the new CA. Files that still trust it leave it open.
#[actix_rt::test]
async fn a_members_client_connection_closes_once_its_files_distrust_the_node_dialled() {
    let (_dir, files, tls, old_ca) = node_1_alone();
    let (cert_2, key_2) = old_ca.issue_node(2, &[], 30).expect("issue");
    let member_2 = tls_server_with(&cert_2, &key_2, true).await;
    let connection = client_connection_to_member_2(&tls, member_2)
        .await
        .expect("connect");
    // Node 1 renews its certificate under the same CA: node 2's is still trusted.
    replace_node_1(&tls, &files, &old_ca, false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !connection.is_closed(),
        "a replacement that still trusts node 2 keeps the connection"
    );
    // Node 1 moves to a new CA alone.
    let new_ca = Ca::generate(30).expect("CA");
    replace_node_1(&tls, &files, &new_ca, true);
    assert!(
        eventually(|| async { connection.is_closed() }).await,
        "the connection to a node whose certificate the new CA did not sign is closed"
    );
    assert!(
        client_connection_to_member_2(&tls, member_2).await.is_err(),
        "and not dialled again"
    );
}

/// TLS checks a certificate only at the handshake; a node checks the certificates of its open
/// connections again as time passes, so one that expires is cut a second or two after its
/// expiry, not before: a member's connection to node 1 (the acceptor's side), and a member's
/// client connection to a node whose certificate expires (the dialler's side).
#[actix_rt::test]
async fn a_connection_closes_once_the_certificate_it_was_shown_expires() {
    let cluster = SecureCluster::start().await;
    let certs = cluster.certs();
    let ca = Ca::read(&certs).expect("CA");
    let ca_pem = std::fs::read(certs::ca_cert_path(&certs)).expect("CA");
    // Both certificates expire EXPIRES_IN from here (at most a second sooner: whole seconds).
    const EXPIRES_IN: i64 = 8;
    let issued = tokio::time::Instant::now();
    let (cert, key) = expiring_node_certificate(&ca, 2, EXPIRES_IN);
    let (server_cert, server_key) = expiring_node_certificate(&ca, 2, EXPIRES_IN);
    let node1 = format!("127.0.0.1:{}", cluster.base + 1);
    let mut held = member_connection(&node1, tls_client(&ca_pem, Some((&cert, &key))), 2, 0)
        .await
        .expect("accepted while the certificate is valid");
    let member_2 = tls_server_with(&server_cert, &server_key, true).await;
    let tls = NodeTls::load(NodeId(1), &certs::node_tls_files(&certs, 1)).expect("load");
    let connection = client_connection_to_member_2(&tls, member_2)
        .await
        .expect("connect");
    let seconds = |s: i64| Duration::from_secs(s as u64);
    let before_expiry = issued + seconds(EXPIRES_IN - 2);
    assert!(
        tokio::time::timeout_at(before_expiry, held.next())
            .await
            .is_err(),
        "node 1 keeps the connection while its certificate is valid"
    );
    assert!(!connection.is_closed(), "and so does the member");
    let closed = tokio::time::timeout_at(issued + seconds(EXPIRES_IN + 4), held.next()).await;
    assert!(
        matches!(closed, Ok(None | Some(Err(_)))),
        "node 1 closes the connection of a certificate that expired"
    );
    tokio::time::sleep_until(issued + seconds(EXPIRES_IN + 4)).await;
    assert!(
        connection.is_closed(),
        "a member closes its connection to a node whose certificate expired"
    );
    cluster.shutdown().await;
}

/// `raftor_tls_certificate_expiry_timestamp_seconds{node}`: the last second the node's
/// certificate in force is valid, for alerts; it follows a renewal without a restart.
#[actix_rt::test]
async fn a_nodes_certificate_expiry_is_a_metric_that_follows_renewals() {
    let cluster = SecureCluster::start().await;
    let certs = cluster.certs();
    let ca = Ca::read(&certs).expect("CA");
    let expiry = |text: &str| -> Option<i64> {
        text.lines()
            .find(|line| line.starts_with("raftor_tls_certificate_expiry_timestamp_seconds{"))
            .and_then(|line| line.split_whitespace().last())
            .and_then(|value| value.parse().ok())
    };
    let (status, body, _) = https(&cluster, "GET", "/metrics", None, "").await;
    assert_eq!(status, 200);
    let first = expiry(&body).unwrap_or_else(|| panic!("no certificate gauge: {body}"));
    let now = time::OffsetDateTime::now_utc();
    let in_a_year = (now + time::Duration::days(365)).unix_timestamp();
    assert!(
        (first - in_a_year).abs() < 2 * 3600,
        "the local credentials' certificate is valid for a year: {first}, not {in_a_year}"
    );
    // Node 1 renewed with a certificate valid until a second about 400 days from now.
    let not_after = (now + time::Duration::days(400)).unix_timestamp() + 17;
    let names = ["localhost", "127.0.0.1", "::1"].map(String::from);
    let (cert, key) = ca
        .issue_valid(
            "raftor node 1",
            [vec![node_name(NodeId(1))], names.to_vec()].concat(),
            now - time::Duration::days(1),
            time::OffsetDateTime::from_unix_timestamp(not_after).expect("date"),
        )
        .expect("issue");
    std::fs::write(certs::node_key_path(&certs, 1), key).expect("write key");
    std::fs::write(certs::node_cert_path(&certs, 1), cert).expect("write cert");
    assert!(
        eventually(|| async {
            expiry(&https(&cluster, "GET", "/metrics", None, "").await.1) == Some(not_after)
        })
        .await,
        "the gauge gives the renewed certificate's notAfter to the second"
    );
    cluster.shutdown().await;
}

/// A certificate for node `id` from `ca`, valid from an hour ago for 30 days whatever the CA's
/// own dates (`Ca::issue_node` would end it with its CA): what nodes make of a CA outside its
/// validity must not rest on the certificate's own dates.
fn past_its_ca(ca: &Ca, id: u64) -> (String, String) {
    let now = time::OffsetDateTime::now_utc();
    ca.issue_node_valid(
        id,
        &[],
        now - time::Duration::hours(1),
        now + time::Duration::days(30),
    )
    .expect("issue")
}

/// webpki checks no trust anchor's dates; a node does, as Go's `crypto/x509` (so etcd) and
/// OpenSSL do: a CA file whose certificates have all expired is refused at start with a clear
/// error, an expired CA certificate beside a valid one signs nothing trusted, and the valid one
/// goes on.
#[test]
fn an_expired_ca_certificate_is_refused_and_trusts_nothing() {
    let now = time::OffsetDateTime::now_utc();
    let expired = Ca::generate_valid(
        now - time::Duration::days(60),
        now - time::Duration::days(1),
    )
    .expect("CA");
    let (cert, key) = past_its_ca(&expired, 1);
    let error = NodeTls::from_pem(
        NodeId(1),
        expired.cert_pem.as_bytes(),
        cert.as_bytes(),
        key.as_bytes(),
    )
    .expect_err("an expired CA");
    let error = error.to_string();
    assert!(
        error.contains("CA certificate") && error.contains("none is valid now"),
        "{error}"
    );
    let not_yet = Ca::generate_valid(
        now + time::Duration::days(1),
        now + time::Duration::days(60),
    )
    .expect("CA");
    let (cert, key) = past_its_ca(&not_yet, 1);
    let error = NodeTls::from_pem(
        NodeId(1),
        not_yet.cert_pem.as_bytes(),
        cert.as_bytes(),
        key.as_bytes(),
    )
    .expect_err("a CA not valid yet")
    .to_string();
    assert!(error.contains("none is valid now"), "{error}");
    // Both CAs in the file: the valid one's certificates load, the expired one's do not.
    let valid = Ca::generate(30).expect("CA");
    let both = format!("{}{}", expired.cert_pem, valid.cert_pem);
    let (cert, key) = valid.issue_node(1, &[], 30).expect("issue");
    NodeTls::from_pem(NodeId(1), both.as_bytes(), cert.as_bytes(), key.as_bytes())
        .expect("the valid CA's certificate loads");
    let (cert, key) = past_its_ca(&expired, 1);
    let error = NodeTls::from_pem(NodeId(1), both.as_bytes(), cert.as_bytes(), key.as_bytes())
        .expect_err("the expired CA's certificate is refused")
        .to_string();
    assert!(
        error.contains("node certificate") && error.contains("its CA certificate is not valid now"),
        "the refusal names the expired CA, not the other's signature: {error}"
    );
    // A client (the CLI, the Rust client) trusting the expired CA alone is told so at once.
    let error = ClientTls::from_ca_pem(expired.cert_pem.as_bytes())
        .expect_err("a client's expired CA")
        .to_string();
    assert!(error.contains("none is valid now"), "{error}");
    ClientTls::from_ca_pem(both.as_bytes()).expect("a client's CA file with a valid CA");
}

/// A node trusts a CA certificate only until it expires: its own certificate's expiry (the
/// metric's date) is the CA's when that comes first, a connection it holds under that CA closes
/// a second or two after the CA's expiry, and no new one opens; before, webpki kept trusting the
/// CA for as long as the files stayed.
#[actix_rt::test]
async fn connections_close_once_their_ca_certificate_expires() {
    const EXPIRES_IN: i64 = 8;
    let issued = tokio::time::Instant::now();
    let now = time::OffsetDateTime::now_utc();
    let ca_not_after = now + time::Duration::seconds(EXPIRES_IN);
    let ca = Ca::generate_valid(now - time::Duration::days(1), ca_not_after).expect("CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let files = TlsFiles {
        ca: dir.path().join("ca.pem"),
        cert: dir.path().join("node-1.pem"),
        key: dir.path().join("node-1-key.pem"),
    };
    let (cert, key) = past_its_ca(&ca, 1);
    std::fs::write(&files.ca, &ca.cert_pem).expect("write");
    std::fs::write(&files.cert, cert).expect("write");
    std::fs::write(&files.key, key).expect("write");
    let tls = NodeTls::load(NodeId(1), &files).expect("load");
    let not_after = tls
        .certificate_not_after()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    assert_eq!(
        not_after as i64,
        ca_not_after.unix_timestamp(),
        "the node's certificate is good until its CA's expiry, to the second"
    );
    let (cert_2, key_2) = past_its_ca(&ca, 2);
    let member_2 = tls_server_with(&cert_2, &key_2, true).await;
    let connection = client_connection_to_member_2(&tls, member_2)
        .await
        .expect("connect while the CA is valid");
    let seconds = |s: i64| Duration::from_secs(s as u64);
    tokio::time::sleep_until(issued + seconds(EXPIRES_IN - 2)).await;
    assert!(!connection.is_closed(), "open while the CA is valid");
    tokio::time::sleep_until(issued + seconds(EXPIRES_IN + 4)).await;
    assert!(
        connection.is_closed(),
        "closed once the CA certificate expired"
    );
    let member_2_again = tls_server(&cert_2, &key_2).await;
    assert!(
        !dials_member_2(&tls, member_2_again).await,
        "and no handshake trusts the expired CA"
    );
}

/// A client's CA file (the CLI's and the Rust client's `--ca`) holding an expired CA beside a
/// valid one: a handshake with a node whose certificate the expired CA signed fails, one with
/// the valid CA's succeeds.
#[actix_rt::test]
async fn a_client_trusts_a_ca_certificate_only_while_it_is_valid() {
    let now = time::OffsetDateTime::now_utc();
    let expired = Ca::generate_valid(
        now - time::Duration::days(60),
        now - time::Duration::days(1),
    )
    .expect("CA");
    let valid = Ca::generate(30).expect("CA");
    let client =
        ClientTls::from_ca_pem(format!("{}{}", expired.cert_pem, valid.cert_pem).as_bytes())
            .expect("a CA file with a valid CA");
    let handshakes = |ca: &Ca| {
        let (cert, key) = past_its_ca(ca, 1);
        let client = client.clone();
        async move {
            let server = tls_server(&cert, &key).await;
            let stream = tokio::net::TcpStream::connect(server)
                .await
                .expect("connect");
            let name = ServerName::try_from(node_name(NodeId(1))).expect("name");
            tokio_rustls::TlsConnector::from(client.config())
                .connect(name, stream)
                .await
                .map(|_| ())
        }
    };
    handshakes(&valid).await.expect("the valid CA's node");
    let error = handshakes(&expired)
        .await
        .expect_err("the expired CA's node");
    assert!(
        error
            .to_string()
            .contains("its CA certificate is not valid now"),
        "{error}"
    );
}
