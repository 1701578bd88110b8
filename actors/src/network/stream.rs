//! A connection's two halves, whether it is plain TCP or TLS: the endpoint and the client
//! sessions read and write through these alone.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The reading half of a connection.
pub(crate) type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of a connection.
pub(crate) type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// The halves of a plain TCP connection (no lock between them).
pub(crate) fn split_plain(stream: TcpStream) -> (ReadHalf, WriteHalf) {
    let (read, write) = stream.into_split();
    (Box::new(read), Box::new(write))
}

/// The halves of a TLS connection.
pub(crate) fn split_tls<S>(stream: S) -> (ReadHalf, WriteHalf)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (read, write) = tokio::io::split(stream);
    (Box::new(read), Box::new(write))
}
