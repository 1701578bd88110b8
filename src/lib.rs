//! raftor: Raft consensus built from actix actors, durable in RocksDB.
//!
//! - [`kv`]: the replicated key-value state machine.
//! - [`config`]: `raftor serve` settings from flags, environment and a TOML file.
//! - [`server`]: start one node on TCP and RocksDB; [`local_cluster`]: several in one process.
//!
//! The Raft rules are in `raftor-core`, the actors in `raftor-actors`, the log store in
//! `raftor-storage`; their main types are re-exported here.

pub mod bench;
pub mod client;
pub mod commands;
pub mod config;
pub mod http;
pub mod kv;
pub mod local_cluster;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod service;
pub mod sim_command;

pub use client::{Client, ClientError, ClientOptions, WriteResult};
pub use raftor_actors::{NodeHandle, NodeOptions, NodeStatus, ProposeError, StateMachine};
pub use raftor_core::{LogIndex, NodeId, RaftConfig, Role, Term};
