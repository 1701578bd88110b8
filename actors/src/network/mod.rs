pub mod client;
pub mod codec;
pub(crate) mod stream;
pub mod tcp;
pub mod tls;
pub use tcp::UpdatePeers;
