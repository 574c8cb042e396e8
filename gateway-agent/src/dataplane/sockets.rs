//! Socket set-up the data paths share: listening, connecting, resetting.
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Listens on `addr` with SO_REUSEADDR, so a restarted agent can bind while old
/// connections sit in TIME_WAIT (a port held by a live listener still fails).
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // `[::]` serves IPv4 too, as a dual-stack node expects.
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog())?;
    TcpListener::from_std(socket.into())
}

/// The kernel's ceiling for accept queues (net.core.somaxconn, 4096 by default
/// on current kernels): a burst of thousands of connects (the soak's ramp) overflowed 1024.
fn backlog() -> i32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(4096)
}

/// Connects with a deadline; a slow SYN must not hold the client forever.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    match tokio::time::timeout(timeout, socket.connect(addr)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, format!("connect to {addr} timed out after {timeout:?}"))),
    }
}

/// Closes with an RST (SO_LINGER 0): how a proxy passes on a reset, and how it
/// refuses a connection it accepted but cannot serve.
/// Keepalive and TCP_USER_TIMEOUT on one side of a connection. Failure only
/// costs the early detection of a vanished peer, so it is logged, not fatal.
pub fn set_liveness(stream: &TcpStream, liveness: &crate::model::config::Liveness) {
    let socket = SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new().with_time(liveness.keepalive_idle).with_interval(liveness.keepalive_interval).with_retries(liveness.keepalive_probes);
    if let Err(e) = socket.set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "setting TCP keepalive failed");
    }
    if let Some(timeout) = liveness.user_timeout {
        if let Err(e) = socket.set_tcp_user_timeout(Some(timeout)) {
            tracing::debug!(error = %e, "setting TCP_USER_TIMEOUT failed");
        }
    }
}

/// Turns keepalive off: a socket handed to the kernel splice must send
/// nothing more, and a keepalive probe is a segment (its peer's liveness is
/// then the flow's idle timeout's business).
pub fn stop_keepalive(fd: &impl std::os::fd::AsFd) -> io::Result<()> {
    SockRef::from(fd).set_keepalive(false)
}

pub fn reset(stream: TcpStream) {
    let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// What an `accept(2)` error means for the accept loop.
#[derive(Debug, PartialEq, Eq)]
pub enum AcceptError {
    /// One client's connection failed between its handshake and the accept
    /// (it reset, or the network went away): accept(2) reports that connection's
    /// error, the man page says to treat these like EAGAIN. Accept the next one.
    ClientGone,
    /// The listening socket was shut down (EINVAL): this agent removed the
    /// listener and the loop is about to be cancelled. Stop quietly.
    ListenerClosed,
    /// Out of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) or
    /// anything unexpected: worth a warning, and a pause before trying again.
    Resources,
}

pub fn classify_accept_error(error: &io::Error) -> AcceptError {
    match error.raw_os_error() {
        Some(
            libc::ECONNABORTED | libc::EPROTO | libc::ENETDOWN | libc::ENOPROTOOPT | libc::EHOSTDOWN | libc::ENONET | libc::EHOSTUNREACH
            | libc::EOPNOTSUPP | libc::ENETUNREACH | libc::EPERM | libc::EINTR,
        ) => AcceptError::ClientGone,
        Some(libc::EINVAL) => AcceptError::ListenerClosed,
        _ => AcceptError::Resources,
    }
}

/// Accepts whatever sits in `listener`'s accept queue now, without waiting:
/// what a closing listener still owes to clients whose handshake completed.
pub fn accept_queued(listener: &TcpListener) -> Vec<(TcpStream, SocketAddr)> {
    let mut accepted = Vec::new();
    loop {
        match SockRef::from(listener).accept() {
            Ok((socket, peer)) => {
                let stream = socket.set_nonblocking(true).and_then(|()| TcpStream::from_std(socket.into()));
                match (stream, peer.as_socket()) {
                    (Ok(stream), Some(peer)) => accepted.push((stream, peer)),
                    (Err(e), _) => tracing::warn!(error = %e, "a queued connection could not be taken"),
                    (Ok(_), None) => {}
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // WouldBlock: the queue is empty. Anything else: nothing more to take.
            Err(_) => return accepted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_on_a_listener_this_agent_shut_down_is_listener_closed_not_a_failure() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        SockRef::from(&listener).shutdown(std::net::Shutdown::Read).unwrap();
        let error = listener.accept().unwrap_err();
        assert_eq!(classify_accept_error(&error), AcceptError::ListenerClosed, "{error}");
    }

    #[test]
    fn a_clients_early_reset_is_skipped_and_running_out_of_descriptors_is_a_failure() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(classify_accept_error(&os(libc::ECONNABORTED)), AcceptError::ClientGone);
        assert_eq!(classify_accept_error(&os(libc::EPROTO)), AcceptError::ClientGone);
        assert_eq!(classify_accept_error(&os(libc::EMFILE)), AcceptError::Resources);
        assert_eq!(classify_accept_error(&os(libc::ENFILE)), AcceptError::Resources);
        assert_eq!(classify_accept_error(&os(libc::ENOBUFS)), AcceptError::Resources);
    }
}
