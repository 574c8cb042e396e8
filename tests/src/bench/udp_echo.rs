//! The backend's UDP echo server for the datagram-rate workloads:
//! `sockgate-bench --udp-echo-server ADDR`, a process of its own (as the TCP
//! echo server is), answering every datagram with exactly its bytes to the
//! address it came from. It does not look at the content: the client checks
//! every answer, so whatever a forwarder changes shows there.
//!
//! One thread per CPU, each on a socket of its own bound with SO_REUSEPORT to
//! the same address: the kernel spreads the flows over them by 4-tuple, so
//! the backend is not one thread's speed behind every contender alike.
use std::net::{SocketAddr, UdpSocket};

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, Socket, Type};

/// Runs until killed.
pub fn run(addr: SocketAddr) -> Result<()> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let sockets = (0..threads).map(|_| bind(addr)).collect::<Result<Vec<_>>>()?;
    let handles: Vec<_> = sockets
        .into_iter()
        .map(|socket| {
            // Named, so that a whole-machine profile tells its threads from the others.
            std::thread::Builder::new().name("udp-echo-backend".into()).spawn(move || serve(socket))
        })
        .collect::<std::io::Result<_>>()?;
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

fn bind(addr: SocketAddr) -> Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into()).with_context(|| format!("binding {addr} (UDP)"))?;
    Ok(socket.into())
}

fn serve(socket: UdpSocket) {
    let mut buf = vec![0u8; 65_535];
    loop {
        match socket.recv_from(&mut buf) {
            // A full send buffer loses the answer, which the client then counts as unanswered.
            Ok((n, peer)) => {
                let _ = socket.send_to(&buf[..n], peer);
            }
            // ICMP errors of earlier answers (a client gone) surface here; they end nothing.
            Err(_) => continue,
        }
    }
}
