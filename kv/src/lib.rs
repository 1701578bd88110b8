//! raftor's replicated key-value service, built on the [`raftor`] library like any embedding
//! application: what `raftor serve`, `raftor cluster` and the docker-compose cluster run.
//!
//! - [`auth`]: who may do what (bearer tokens with a role, members by their certificates);
//! - [`backup`]: consistent backups of the state machine, streamed (`GET /v1/admin/backup`);
//! - [`certs`]: a development cluster's CA, node certificates and tokens (`raftor certs`);
//! - [`store`]: the state machine (a key-value map with revisions, exactly-once client sessions,
//!   transactions, leases and the recent history that watches replay);
//! - [`watch`]: watches of a key, a range or a prefix, replayed from history then live;
//! - [`lessor`]: the leader's lease deadlines, and the expiry it proposes;
//! - [`lock`]: a distributed lock on a lease and a transaction, with a fencing token;
//! - [`protocol`]: the requests and answers, shared by the HTTP API, the native TCP protocol and
//!   forwarding between nodes;
//! - [`client`]: [`Client`], the native protocol's client, following the leader;
//! - [`service`]: one node's request handling (forwarding to the leader, read consistency);
//! - [`http`]: the HTTP API (`/v1/kv`, members, leadership, snapshots, health);
//! - [`metrics`]: the Prometheus metrics served on `/metrics`;
//! - [`config`]: a node's settings (flags, environment, config file);
//! - [`server`]: one running node (Raft, the service and its HTTP API);
//! - [`local_cluster`]: several nodes in one process on loopback (`raftor cluster`, the tests).

pub mod auth;
pub mod backup;
pub mod certs;
pub mod client;
pub mod config;
pub mod http;
pub mod lessor;
pub mod local_cluster;
pub mod lock;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod service;
pub mod store;
pub mod ui;
pub mod watch;

pub use client::{Client, ClientError, ClientOptions, WriteResult};
