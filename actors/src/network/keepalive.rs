//! How a node finds out that the other end of a connection it accepted is gone.
//!
//! A connection whose other end vanishes (its machine lost power, a partition that never heals)
//! tells nothing to the side that only waits to read from it: TCP sends nothing on an idle
//! connection, so without probes it stays open for good, holding a descriptor, a task and, for
//! a client session, one of the node's `max_client_sessions`. A peer that reconnects after a
//! power loss opens a new connection and the old one lingers the same way. So every accepted
//! connection (peers', native client sessions', HTTP clients') gets:
//! - TCP keepalive: after [`KEEPALIVE_IDLE`] without traffic the kernel probes every
//!   [`KEEPALIVE_INTERVAL`], and closes the connection after [`KEEPALIVE_PROBES`] unanswered
//!   probes. A live client's kernel answers the probes, so an idle session stays open however
//!   long its program sleeps (Go's listeners, etcd's among them, enable keepalive on every
//!   accepted connection the same way, with 15 s periods);
//! - a bound on unacknowledged data ([`UNACKED_DATA_TIMEOUT`], `TCP_USER_TIMEOUT` where the
//!   platform has it): data written and not acknowledged that long closes the connection, where
//!   the kernel's retransmissions alone would keep it for about a quarter of an hour.
//!
//! A client that is alive but stops reading its answers acknowledges the kernel's window probes,
//! so keepalive does not close its connection; Linux (since 5.1) applies `TCP_USER_TIMEOUT` to
//! those probes too, and closes it once its window has stayed shut that long (seen on this
//! project's machines: silent HTTP clients closed 30–40 s after they stopped reading). Meanwhile
//! what such a session may hold is bounded by `client::MAX_REQUESTS_IN_FLIGHT` and the session's
//! and node's budgets of `answer_budget` (a session that stops taking answers while others wait
//! for the node's room is closed sooner).

use std::time::Duration;
use tokio::net::TcpStream;

/// Quiet time on a connection before the first keepalive probe.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);

/// Time between keepalive probes while none is answered.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// Unanswered keepalive probes after which the connection is closed: a dead client's connection
/// closes about [`KEEPALIVE_IDLE`] + `KEEPALIVE_PROBES` × [`KEEPALIVE_INTERVAL`] = 30 s after its
/// last traffic.
pub const KEEPALIVE_PROBES: u32 = 3;

/// How long written data may stay unacknowledged before the connection is closed.
pub const UNACKED_DATA_TIMEOUT: Duration = Duration::from_secs(30);

/// Sets up a connection this node accepted: no Nagle delay, keepalive probes and a bound on
/// unacknowledged data (see the module's documentation). A setting the platform refuses is
/// logged and skipped: the connection works as before without it.
pub fn configure_accepted(stream: &TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot turn off Nagle's algorithm on an accepted connection");
    }
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new().with_time(KEEPALIVE_IDLE);
    // Elsewhere the system's interval and count stand.
    #[cfg(any(target_os = "linux", target_os = "macos"))]
    let keepalive = keepalive
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    if let Err(error) = socket.set_tcp_keepalive(&keepalive) {
        tracing::debug!(%error, "cannot turn on TCP keepalive on an accepted connection");
    }
    bound_unacknowledged_data(stream, UNACKED_DATA_TIMEOUT);
}

/// Closes `stream` once data written on it stays unacknowledged for `timeout`
/// (`TCP_USER_TIMEOUT`, on Linux). Elsewhere, or if the kernel refuses (logged), the kernel's
/// retransmissions decide, and the connection works as before. Accepted connections use
/// [`UNACKED_DATA_TIMEOUT`]; a node's own connections to its peers a shorter bound, so a
/// partition fails them promptly (`tcp::peer`).
pub(crate) fn bound_unacknowledged_data(stream: &TcpStream, timeout: Duration) {
    #[cfg(target_os = "linux")]
    if let Err(error) = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(timeout)) {
        tracing::debug!(%error, "cannot bound unacknowledged data (TCP_USER_TIMEOUT)");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (stream, timeout);
}
