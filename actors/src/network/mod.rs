pub mod codec;
pub mod tcp;
