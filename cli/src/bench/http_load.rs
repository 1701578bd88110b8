//! The HTTP side of `raftor bench`: one keep-alive connection per client (awc, actix's client),
//! `PUT`/`GET /v1/kv/{key}` against the leader's HTTP address, `GET /v1/status` for the figures.

use bytes::Bytes;
use raftor_kv::protocol::{Consistency, StatusReport};
use raftor_kv::ClientOptions;
use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// How long one HTTP request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How every request reaches the cluster: `http` or `https` (trusting the cluster's CA), with a
/// bearer token or none.
#[derive(Clone)]
struct Transport {
    scheme: &'static str,
    tls: Option<Arc<rustls::ClientConfig>>,
    authorization: Option<String>,
}

impl Transport {
    /// A client that keeps one connection open and reuses it, sending the token with every
    /// request.
    fn client(&self) -> awc::Client {
        let mut connector = awc::Connector::new().limit(1);
        if let Some(tls) = &self.tls {
            connector = connector.rustls_0_23(tls.clone());
        }
        let mut builder = awc::Client::builder()
            .connector(connector)
            .timeout(REQUEST_TIMEOUT);
        if let Some(authorization) = &self.authorization {
            builder = builder.add_default_header(("Authorization", authorization.clone()));
        }
        builder.finish()
    }
}

/// The cluster's HTTP addresses and which of them leads.
pub(super) struct HttpTarget {
    endpoints: Vec<String>,
    /// The position in `endpoints` of the node the load goes to.
    leader: Rc<Cell<usize>>,
    transport: Transport,
    /// For status and the readiness probe.
    client: awc::Client,
}

impl HttpTarget {
    /// `credentials`: the TLS set-up (HTTPS) and token of every request.
    pub(super) fn new(
        endpoints: &[String],
        credentials: &ClientOptions,
    ) -> Result<HttpTarget, String> {
        for endpoint in endpoints {
            if endpoint.contains('/') || !endpoint.contains(':') {
                return Err(format!(
                    "'{endpoint}' is not host:port (give HTTP addresses without http://)"
                ));
            }
        }
        let tls = credentials.tls.as_ref().map(|tls| tls.https_config());
        let transport = Transport {
            scheme: if tls.is_some() { "https" } else { "http" },
            tls,
            authorization: credentials
                .token
                .as_ref()
                .map(|token| format!("Bearer {token}")),
        };
        Ok(HttpTarget {
            endpoints: endpoints.to_vec(),
            leader: Rc::new(Cell::new(0)),
            client: transport.client(),
            transport,
        })
    }

    pub(super) fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    pub(super) fn leader(&self) -> &str {
        &self.endpoints[self.leader.get().min(self.endpoints.len() - 1)]
    }

    pub(super) fn set_leader(&self, position: usize) {
        self.leader.set(position);
    }

    /// A worker with a connection of its own to the leader.
    pub(super) fn worker(&self) -> HttpWorker {
        HttpWorker {
            base: format!("{}://{}/v1/kv/", self.transport.scheme, self.leader()),
            client: self.transport.client(),
        }
    }

    pub(super) async fn put(&self, endpoint: &str, key: &str, value: Bytes) -> Result<(), String> {
        put(
            &self.client,
            &format!("{}://{endpoint}/v1/kv/{key}", self.transport.scheme),
            value,
        )
        .await
    }

    pub(super) async fn status(&self, endpoint: &str) -> Result<StatusReport, String> {
        let mut response = self
            .client
            .get(format!("{}://{endpoint}/v1/status", self.transport.scheme))
            .send()
            .await
            .map_err(|_| "connection".to_string())?;
        let body = response
            .body()
            .limit(1024 * 1024)
            .await
            .map_err(|_| "connection".to_string())?;
        if !response.status().is_success() {
            return Err(format!("http {}", response.status().as_u16()));
        }
        serde_json::from_slice(&body).map_err(|e| format!("bad status: {e}"))
    }
}

/// One client's keep-alive connection.
pub(super) struct HttpWorker {
    base: String,
    client: awc::Client,
}

impl HttpWorker {
    pub(super) async fn put(&self, key: &str, value: Bytes) -> Result<(), String> {
        put(&self.client, &format!("{}{key}", self.base), value).await
    }

    pub(super) async fn get(&self, key: &str, consistency: Consistency) -> Result<(), String> {
        let url = format!(
            "{}{key}?consistency={}",
            self.base,
            consistency_name(consistency)
        );
        let mut response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|_| "connection".to_string())?;
        // Read the whole body, so the connection can carry the next request.
        let _ = response.body().limit(usize::MAX).await;
        match response.status().as_u16() {
            200 | 404 => Ok(()),
            code => Err(format!("http {code}")),
        }
    }
}

fn consistency_name(consistency: Consistency) -> &'static str {
    match consistency {
        Consistency::Linearizable => "linearizable",
        Consistency::Lease => "lease",
        Consistency::Local => "local",
    }
}

async fn put(client: &awc::Client, url: &str, value: Bytes) -> Result<(), String> {
    let mut response = client
        .put(url)
        .insert_header(("Content-Type", "application/octet-stream"))
        .send_body(value)
        .await
        .map_err(|_| "connection".to_string())?;
    let _ = response.body().limit(usize::MAX).await;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("http {}", response.status().as_u16()))
    }
}
