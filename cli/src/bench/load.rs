//! The closed-loop load: `--clients` workers, each sending one request at a time until the time
//! or the request budget is used up, recording every latency in an HDR histogram.

use super::http_load::HttpTarget;
use super::{BenchArgs, Protocol};
use bytes::Bytes;
use hdrhistogram::Histogram;
use raftor_kv::client::{Client, ClientError, ClientOptions};
use raftor_kv::protocol::StatusReport;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
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
    pub(super) async fn statuses(&self) -> Vec<Option<StatusReport>> {
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
                    statuses.push(status);
                }
            }
            Target::Http(http) => {
                for endpoint in http.endpoints() {
                    statuses.push(http.status(endpoint).await.ok());
                }
            }
        }
        statuses
    }
}

/// What every worker shares.
struct Shared {
    args: BenchArgs,
    value: Bytes,
    deadline: Option<Instant>,
    issued: AtomicU64,
    done: AtomicU64,
}

impl Shared {
    /// Whether the worker may send one more request.
    fn claim(&self) -> bool {
        if let Some(limit) = self.args.requests {
            return self.issued.fetch_add(1, Ordering::Relaxed) < limit;
        }
        self.deadline
            .is_none_or(|deadline| Instant::now() < deadline)
    }
}

struct WorkerResult {
    writes: Histogram<u64>,
    reads: Histogram<u64>,
    failed: BTreeMap<String, u64>,
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
        };
        workers.push(actix::spawn(
            async move { client.run(worker, &shared).await },
        ));
    }
    let mut outcome = Outcome {
        elapsed: Duration::ZERO,
        all: latency_histogram(),
        writes: latency_histogram(),
        reads: latency_histogram(),
        failed: BTreeMap::new(),
    };
    for worker in workers {
        match worker.await {
            Ok(result) => {
                let _ = outcome.writes.add(&result.writes);
                let _ = outcome.reads.add(&result.reads);
                for (kind, count) in result.failed {
                    *outcome.failed.entry(kind).or_default() += count;
                }
            }
            Err(_) => *outcome.failed.entry("worker crashed".into()).or_default() += 1,
        }
    }
    outcome.elapsed = started.elapsed();
    let _ = outcome.all.add(&outcome.writes);
    let _ = outcome.all.add(&outcome.reads);
    progress.finish();
    outcome
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
}

impl Worker {
    async fn run(self, worker: u64, shared: &Shared) -> WorkerResult {
        let args = &shared.args;
        let mut rng =
            SmallRng::seed_from_u64(args.seed ^ worker.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut result = WorkerResult {
            writes: latency_histogram(),
            reads: latency_histogram(),
            failed: BTreeMap::new(),
        };
        while shared.claim() {
            let key = format!("{}{}", args.key_prefix, rng.gen_range(0..args.keys));
            let read = args.read_ratio > 0.0 && rng.gen_bool(args.read_ratio);
            let sent = Instant::now();
            let answer = if read {
                self.get(&key, args).await
            } else {
                self.put(&key, shared.value.clone()).await
            };
            let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
            match answer {
                Ok(()) => {
                    let histogram = if read {
                        &mut result.reads
                    } else {
                        &mut result.writes
                    };
                    histogram.saturating_record(micros.clamp(1, MAX_LATENCY_US));
                }
                Err(kind) => *result.failed.entry(kind).or_default() += 1,
            }
            shared.done.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn put(&self, key: &str, value: Bytes) -> RequestResult {
        match self {
            Worker::Native(Some(client)) => client.put(key, value).await.map(|_| ()).map_err(kind),
            Worker::Native(None) => Err("no client".into()),
            Worker::Http(http) => http.put(key, value).await,
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
        }
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
