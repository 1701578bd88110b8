//! For tests of what a node sets on the connections it accepts (Linux): the accepted socket of a
//! connection, found among this process's open descriptors. Included by path from the actors'
//! and the key-value service's tests, which both start endpoints in the test's own process.

use raftor_actors::network::keepalive::{
    KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_PROBES, UNACKED_DATA_TIMEOUT,
};
use std::net::SocketAddr;

/// The socket this process accepted for the connection `client` opened to `server`: found among
/// the process's open descriptors by its two addresses (`None` until the endpoint has accepted it).
fn accepted_socket(
    server: SocketAddr,
    client: SocketAddr,
) -> Option<std::os::fd::BorrowedFd<'static>> {
    use std::os::fd::BorrowedFd;
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // SAFETY: the descriptor is this process's and stays open while the endpoint serves the
        // connection, which the caller keeps open; the borrow is only read from.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&borrowed);
        let local = socket.local_addr().ok().and_then(|a| a.as_socket());
        let peer = socket.peer_addr().ok().and_then(|a| a.as_socket());
        if local == Some(server) && peer == Some(client) {
            return Some(borrowed);
        }
    }
    None
}

/// Asserts that the connection `client` opened to `server` (`what`, for the message) was set up
/// as `raftor_actors::network::keepalive::configure_accepted` sets up every accepted connection:
/// keepalive probes and a bound on unacknowledged data.
pub fn assert_probed(server: SocketAddr, client: SocketAddr, what: &str) {
    let accepted = accepted_socket(server, client)
        .unwrap_or_else(|| panic!("{what}: no accepted socket from {client} to {server}"));
    let socket = socket2::SockRef::from(&accepted);
    assert!(socket.keepalive().expect("reads"), "{what}: keepalive on");
    assert_eq!(
        socket.tcp_keepalive_time().expect("reads"),
        KEEPALIVE_IDLE,
        "{what}"
    );
    assert_eq!(
        socket.tcp_keepalive_interval().expect("reads"),
        KEEPALIVE_INTERVAL,
        "{what}"
    );
    assert_eq!(
        socket.tcp_keepalive_retries().expect("reads"),
        KEEPALIVE_PROBES,
        "{what}"
    );
    assert_eq!(
        socket.tcp_user_timeout().expect("reads"),
        Some(UNACKED_DATA_TIMEOUT),
        "{what}"
    );
}
