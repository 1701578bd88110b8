pub mod client;
pub mod codec;
pub mod tcp;
pub use tcp::UpdatePeers;
