//! UDP test peers: echo backends that say who they are, and a client that
//! checks every answer byte for byte (and by checksum) against what it sent.
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use sha2::{Digest, Sha256};

use crate::netns::NetNs;

/// A UDP echo server on `port` of host `ns` answering each datagram with
/// `name|datagram`; it stops when dropped (or when its namespace goes).
pub struct UdpEcho {
    stop: Arc<AtomicBool>,
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub fn udp_echo(ns: &NetNs, port: u16, name: &'static str) -> Result<UdpEcho> {
    let socket = ns.enter(move || UdpSocket::bind(("0.0.0.0", port)))??;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_535];
        while !stopped.load(Ordering::Relaxed) {
            if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                let mut reply = format!("{name}|").into_bytes();
                reply.extend_from_slice(&buf[..n]);
                let _ = socket.send_to(&reply, peer);
            }
        }
    });
    Ok(UdpEcho { stop })
}

/// A datagram that carries its own checksum: 32 bytes of SHA-256 over the rest
/// (a sequence number, then bytes from `seed`), `len` bytes in all (at least 40).
pub fn checksummed(seed: u64, len: usize) -> Vec<u8> {
    let body: Vec<u8> = seed.to_be_bytes().into_iter().chain(crate::integrity::pattern(seed, len.max(40) - 40)).collect();
    let mut d: Vec<u8> = Sha256::digest(&body).to_vec();
    d.extend(body);
    d
}

fn checksum_holds(datagram: &[u8]) -> bool {
    datagram.len() >= 40 && Sha256::digest(&datagram[32..])[..] == datagram[..32]
}

/// A client socket on host `ns`, with a read timeout.
pub fn client(ns: &NetNs, timeout: Duration) -> Result<UdpSocket> {
    let socket = ns.enter(|| UdpSocket::bind("0.0.0.0:0"))??;
    socket.set_read_timeout(Some(timeout))?;
    Ok(socket)
}

/// Sends `datagram` to `to` and returns the name of the backend that answered,
/// after checking the answer is `name|datagram` exactly and its checksum holds;
/// None when nothing came back in time.
pub fn ask(socket: &UdpSocket, to: SocketAddr, datagram: &[u8]) -> Result<Option<String>> {
    socket.send_to(datagram, to)?;
    let mut buf = vec![0u8; 65_535];
    let n = match socket.recv(&mut buf) {
        Ok(n) => n,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some(bar) = buf[..n].iter().position(|b| *b == b'|') else { bail!("an answer without a name: {:?}", &buf[..n.min(64)]) };
    let echoed = &buf[bar + 1..n];
    if echoed != datagram || !checksum_holds(echoed) {
        bail!("the answer differs from the datagram sent ({} bytes sent, {} came back)", datagram.len(), echoed.len());
    }
    Ok(Some(String::from_utf8_lossy(&buf[..bar]).into_owned()))
}

/// A Service with one UDP port (→ `target_port`) and its EndpointSlice.
pub fn udp_service(name: &str, port: u16, target_port: u16, endpoints: &[&str]) -> String {
    let eps: Vec<String> = endpoints.iter().map(|e| format!("{{addresses: [\"{e}\"]}}")).collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{name: udp, protocol: UDP, port: {port}, targetPort: {target_port}}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\n\
         ports: [{{name: udp, protocol: UDP, port: {target_port}}}]\nendpoints: [{}]\n",
        eps.join(", ")
    )
}

/// A UDPRoute (v1) with any parentRefs and backendRefs (YAML flow lists).
pub fn udp_route(name: &str, parent_refs: &str, backend_refs: &str) -> String {
    format!("apiVersion: gateway.networking.k8s.io/v1\nkind: UDPRoute\nmetadata: {{name: {name}}}\nspec:\n  parentRefs: {parent_refs}\n  rules:\n  - backendRefs: {backend_refs}\n")
}
