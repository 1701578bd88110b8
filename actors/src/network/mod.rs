pub mod answer_budget;
pub mod client;
pub mod codec;
pub mod keepalive;
pub(crate) mod stream;
pub mod tcp;
pub mod tls;
pub use tcp::UpdatePeers;
