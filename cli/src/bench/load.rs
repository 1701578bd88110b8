//! The closed-loop load: `--clients` workers, each sending one request at a time until the time
//! or the request budget is used up, recording every latency in an HDR histogram.

use super::http_load::HttpTarget;
use super::in_process::InProcessNode;
use super::report::NodeSample;
use super::{BenchArgs, Protocol};
use bytes::Bytes;
use hdrhistogram::Histogram;
use raftor_kv::client::{Client, ClientError, ClientOptions};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The largest latency recorded exactly, in microseconds (larger ones count as this).
const MAX_LATENCY_US: u64 = 120_000_000;

/// A histogram of latencies in microseconds, 3 significant digits.
pub(super) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant bounds are valid")
}

/// What the load found.
pub(super) struct Outcome {
    pub elapsed: Duration,
    /// Latency of every successful request (reads and writes).
    pub all: Histogram<u64>,
    pub writes: Histogram<u64>,
    pub reads: Histogram<u64>,
    /// Failed requests by kind of failure.
    pub failed: BTreeMap<String, u64>,
}

/// The cluster, as the load sees it.
pub(super) enum Target {
    /// Native protocol: endpoints are Raft addresses; clients get them with the leader's first.
    Native {
        endpoints: Vec<String>,
        leader_first: Vec<String>,
        /// TLS and the token every client uses (the rest: defaults).
        credentials: ClientOptions,
    },
    Http(HttpTarget),
    /// In this process (`--network memory`): the nodes' handles, the leader's first once known.
    InProcess {
        nodes: Vec<InProcessNode>,
    },
}

/// One request's result: `Ok` for an answer (a missing key is an answer), or the failure's kind.
type RequestResult = Result<(), String>;

impl Target {
    /// The load's view of the cluster at `endpoints` (any members; the leader is found later).
    /// `credentials`: the TLS set-up and token of every client (in [`ClientOptions`]).
    pub(super) fn new(
        protocol: Protocol,
        endpoints: &[String],
        credentials: ClientOptions,
    ) -> Result<Target, String> {
        if endpoints.is_empty() {
            return Err("no endpoints".into());
        }
        match protocol {
            Protocol::Native => Ok(Target::Native {
                endpoints: endpoints.to_vec(),
                leader_first: endpoints.to_vec(),
                credentials,
            }),
            Protocol::Http => Ok(Target::Http(HttpTarget::new(endpoints, &credentials)?)),
        }
    }

    /// Wait until a write goes through (a leader is elected and has committed its first entry),
    /// then aim at the leader, so the load goes straight to it instead of being forwarded.
    pub(super) async fn wait_until_writable(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut last_error = String::from("no attempt made");
        while Instant::now() < deadline {
            match self.ready_probe().await {
                Ok(()) => {
                    self.aim_at_leader().await;
                    return Ok(());
                }
                Err(error) => last_error = error,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "the cluster took no write within {:.1}s: {last_error}",
            timeout.as_secs_f64()
        ))
    }

    async fn ready_probe(&self) -> RequestResult {
        match self {
            Target::Native {
                endpoints,
                credentials,
                ..
            } => {
                let options = ClientOptions {
                    operation_timeout: Duration::from_secs(2),
                    ..credentials.clone()
                };
                let client = Client::new(endpoints.clone(), options).map_err(|e| e.to_string())?;
                client
                    .put("raftor-bench-ready", Bytes::new())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            Target::Http(http) => {
                http.put(http.leader(), "raftor-bench-ready", Bytes::new())
                    .await
            }
            Target::InProcess { nodes } => {
                let mut last = Err("no node".to_string());
                for node in nodes {
                    last = node
                        .put("raftor-bench-ready".into(), Bytes::new())
                        .await
                        .map_err(node_error_kind);
                    if last.is_ok() {
                        break;
                    }
                }
                last
            }
        }
    }

    async fn aim_at_leader(&mut self) {
        let statuses = self.statuses().await;
        let Some(position) = statuses
            .iter()
            .position(|status| status.as_ref().is_some_and(|s| s.role == "leader"))
        else {
            return;
        };
        match self {
            Target::Http(http) => http.set_leader(position),
            Target::InProcess { nodes } => {
                if let Some(leader) = statuses[position].as_ref().map(|status| status.id) {
                    nodes.sort_by_key(|node| node.id().0 != leader);
                }
            }
            Target::Native {
                endpoints,
                leader_first,
                ..
            } => {
                let leader = endpoints[position].clone();
                *leader_first = std::iter::once(leader.clone())
                    .chain(endpoints.iter().filter(|e| **e != leader).cloned())
                    .collect();
            }
        }
    }

    /// Each endpoint's status, in the order of the endpoints (`None` where it did not answer).
    pub(super) async fn statuses(&self) -> Vec<Option<NodeSample>> {
        let mut statuses = Vec::new();
        match self {
            Target::Native {
                endpoints,
                credentials,
                ..
            } => {
                for endpoint in endpoints {
                    let options = ClientOptions {
                        operation_timeout: Duration::from_secs(2),
                        request_timeout: Duration::from_secs(2),
                        ..credentials.clone()
                    };
                    let status = match Client::new(vec![endpoint.clone()], options) {
                        Ok(client) => client.status().await.ok(),
                        Err(_) => None,
                    };
                    statuses.push(status.map(|status| NodeSample::of_report(&status)));
                }
            }
            Target::Http(http) => {
                for endpoint in http.endpoints() {
                    let status = http.status(endpoint).await.ok();
                    statuses.push(status.map(|status| NodeSample::of_report(&status)));
                }
            }
            Target::InProcess { nodes } => {
                // In the order of the node ids, as the endpoints are named.
                let mut by_id = nodes.clone();
                by_id.sort_by_key(|node| node.id());
                for node in by_id {
                    let status = node.status().await;
                    statuses.push(status.map(|status| NodeSample::of_status(&status)));
                }
            }
        }
        statuses
    }
}

/// What every worker shares. The workers all run on the current thread, so they record into one
/// set of histograms: per-worker ones cost 270 KiB each (a quarter of a gigabyte at 1,000
/// clients, and a cache miss per request) and merging them took time from the run.
struct Shared {
    args: BenchArgs,
    value: Bytes,
    deadline: Option<Instant>,
    issued: AtomicU64,
    done: AtomicU64,
    writes: RefCell<Histogram<u64>>,
    reads: RefCell<Histogram<u64>>,
    /// Failed requests by kind of failure.
    failed: RefCell<BTreeMap<String, u64>>,
}

impl Shared {
    /// Whether the worker may send one more request, `now`.
    fn claim(&self, now: Instant) -> bool {
        if let Some(limit) = self.args.requests {
            return self.issued.fetch_add(1, Ordering::Relaxed) < limit;
        }
        self.deadline.is_none_or(|deadline| now < deadline)
    }

    /// Count one finished request: its latency if it was answered, else its kind of failure.
    fn record(&self, read: bool, micros: u64, answer: RequestResult) {
        match answer {
            Ok(()) => {
                let histogram = if read { &self.reads } else { &self.writes };
                histogram
                    .borrow_mut()
                    .saturating_record(micros.clamp(1, MAX_LATENCY_US));
            }
            Err(kind) => *self.failed.borrow_mut().entry(kind).or_default() += 1,
        }
        self.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// Run the load against `target` and collect what it found.
pub(super) async fn run(args: &BenchArgs, target: &Target) -> Outcome {
    let started = Instant::now();
    let shared = Rc::new(Shared {
        args: args.clone(),
        value: Bytes::from(vec![b'x'; usize::try_from(args.value_size).unwrap_or(0)]),
        deadline: match args.requests {
            Some(_) => None,
            None => Some(started + Duration::from_secs_f64(args.duration)),
        },
        issued: AtomicU64::new(0),
        done: AtomicU64::new(0),
        writes: RefCell::new(latency_histogram()),
        reads: RefCell::new(latency_histogram()),
        failed: RefCell::new(BTreeMap::new()),
    });
    let progress = super::report::Progress::start(args, shared_done(&shared));
    let mut workers = Vec::new();
    for worker in 0..args.clients {
        let shared = shared.clone();
        let client = match target {
            Target::Native {
                leader_first,
                credentials,
                ..
            } => Worker::Native(Client::new(leader_first.clone(), credentials.clone()).ok()),
            Target::Http(http) => Worker::Http(http.worker()),
            Target::InProcess { nodes } => Worker::InProcess(nodes[0].clone()),
        };
        workers.push(actix::spawn(
            async move { client.run(worker, &shared).await },
        ));
    }
    let mut crashed = 0;
    for worker in workers {
        if worker.await.is_err() {
            crashed += 1;
        }
    }
    let elapsed = started.elapsed();
    progress.finish();
    let mut failed = shared.failed.take();
    if crashed > 0 {
        *failed.entry("worker crashed".into()).or_default() += crashed;
    }
    let writes = shared.writes.replace(latency_histogram());
    let reads = shared.reads.replace(latency_histogram());
    let mut all = writes.clone();
    let _ = all.add(&reads);
    Outcome {
        elapsed,
        all,
        writes,
        reads,
        failed,
    }
}

/// A reader of the shared count of finished requests, for the progress bar.
fn shared_done(shared: &Rc<Shared>) -> impl Fn() -> u64 + 'static {
    let shared = shared.clone();
    move || shared.done.load(Ordering::Relaxed)
}

/// One client of the load.
enum Worker {
    /// `None` if the client could not be built (it then fails every request).
    Native(Option<Client>),
    Http(super::http_load::HttpWorker),
    /// The leader's handle.
    InProcess(InProcessNode),
}

impl Worker {
    async fn run(self, worker: u64, shared: &Shared) {
        let args = &shared.args;
        let mut rng =
            SmallRng::seed_from_u64(args.seed ^ worker.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        loop {
            let sent = Instant::now();
            if !shared.claim(sent) {
                break;
            }
            let key = format!("{}{}", args.key_prefix, rng.gen_range(0..args.keys));
            let read = args.read_ratio > 0.0 && rng.gen_bool(args.read_ratio);
            let answer = if read {
                self.get(&key, args).await
            } else {
                self.put(&key, shared.value.clone()).await
            };
            let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
            shared.record(read, micros, answer);
        }
    }

    async fn put(&self, key: &str, value: Bytes) -> RequestResult {
        match self {
            Worker::Native(Some(client)) => client.put(key, value).await.map(|_| ()).map_err(kind),
            Worker::Native(None) => Err("no client".into()),
            Worker::Http(http) => http.put(key, value).await,
            Worker::InProcess(node) => node
                .put(key.to_owned(), value)
                .await
                .map_err(node_error_kind),
        }
    }

    async fn get(&self, key: &str, args: &BenchArgs) -> RequestResult {
        match self {
            Worker::Native(Some(client)) => client
                .get(key, args.consistency)
                .await
                .map(|_| ())
                .map_err(kind),
            Worker::Native(None) => Err("no client".into()),
            Worker::Http(http) => http.get(key, args.consistency).await,
            Worker::InProcess(node) => node
                .get(key.to_owned(), args.consistency)
                .await
                .map_err(node_error_kind),
        }
    }
}

fn node_error_kind(error: raftor::Error) -> String {
    match error {
        raftor::Error::NotLeader { .. } => "not leader".into(),
        raftor::Error::Transferring { .. } => "transferring".into(),
        raftor::Error::Timeout(_) => "timeout".into(),
        raftor::Error::Dropped => "dropped".into(),
        raftor::Error::Shutdown { .. } => "shut down".into(),
        other => other.to_string(),
    }
}

fn kind(error: ClientError) -> String {
    match error {
        ClientError::Rejected(_) => "rejected",
        ClientError::Unavailable(_) => "unavailable",
        ClientError::Unknown(_) => "outcome unknown",
        ClientError::Superseded => "superseded",
        ClientError::SessionExpired => "session expired",
        ClientError::Conflict(_) => "conflict",
        ClientError::NotFound(_) => "not found",
        ClientError::Overloaded(_) => "overloaded",
        ClientError::Unauthenticated(_) => "unauthenticated",
        ClientError::Forbidden(_) => "forbidden",
        ClientError::Compacted { .. } => "compacted",
    }
    .to_string()
}
