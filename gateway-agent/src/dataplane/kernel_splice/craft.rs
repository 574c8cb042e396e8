//! Segments the agent sends a peer of a spliced flow itself, through a raw
//! socket: the gateway's sockets are gone or silent.
//!
//! A window update after the handover: the hold advertised a zero window to
//! both peers; this ACK, carrying the other peer's real window, lets each
//! resume at once instead of at its persist timer (200 ms or more).
//!
//! A FIN (the idle timeout): as if the other peer had closed, with the
//! sequence number the peer expects next; see `path::end_with_fins`.
//!
//! A reset: the RST is built here and sent through a raw socket, with the
//! sequence number the peer expects next (the last acknowledgement it sent,
//! which the program recorded). Should the peer have moved on (data in
//! flight to it), RFC 5961 makes it answer with a challenge ACK instead; that
//! ACK finds no socket and no flow entry on the node any more, and the node's
//! stack answers it with a RST the peer accepts.
use std::io;
use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const TCP_FIN: u8 = 0x01;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// Sends `to` a RST|ACK from `from` with sequence number `seq` (what `to`
/// expects next) and acknowledgement `ack`.
pub fn send_reset(from: SocketAddr, to: SocketAddr, seq: u32, ack: u32) -> io::Result<()> {
    send(from, to, seq, ack, TCP_RST | TCP_ACK, 0, None)
}

/// Sends `to` a pure ACK advertising `window` (already in `to`'s view of the
/// node's scale), with the timestamp option (TSval, TSecr) when the leg uses it.
pub fn send_window_update(from: SocketAddr, to: SocketAddr, seq: u32, ack: u32, window: u16, timestamps: Option<(u32, u32)>) -> io::Result<()> {
    send(from, to, seq, ack, TCP_ACK, window, timestamps)
}

/// Sends `to` a FIN|ACK: `seq` what `to` expects next, `ack` all it sent,
/// with the timestamp option (TSval, TSecr) when the leg uses it.
pub fn send_fin(from: SocketAddr, to: SocketAddr, seq: u32, ack: u32, window: u16, timestamps: Option<(u32, u32)>) -> io::Result<()> {
    send(from, to, seq, ack, TCP_FIN | TCP_ACK, window, timestamps)
}

fn send(from: SocketAddr, to: SocketAddr, seq: u32, ack: u32, flags: u8, window: u16, timestamps: Option<(u32, u32)>) -> io::Result<()> {
    let (from_ip, to_ip) = (canonical(from.ip()), canonical(to.ip()));
    let mut header = [0u8; 32];
    let length = if timestamps.is_some() { 32 } else { 20 };
    header[0..2].copy_from_slice(&from.port().to_be_bytes());
    header[2..4].copy_from_slice(&to.port().to_be_bytes());
    header[4..8].copy_from_slice(&seq.to_be_bytes());
    header[8..12].copy_from_slice(&ack.to_be_bytes());
    header[12] = ((length / 4) as u8) << 4;
    header[13] = flags;
    header[14..16].copy_from_slice(&window.to_be_bytes());
    if let Some((tsval, tsecr)) = timestamps {
        header[20..24].copy_from_slice(&[1, 1, 8, 10]);
        header[24..28].copy_from_slice(&tsval.to_be_bytes());
        header[28..32].copy_from_slice(&tsecr.to_be_bytes());
    }
    let header = &mut header[..length];
    let sum = checksum(from_ip, to_ip, header);
    header[16..18].copy_from_slice(&sum.to_be_bytes());
    let domain = if from_ip.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let socket = Socket::new(domain, Type::RAW, Some(Protocol::TCP))?;
    // The kernel writes the IP header, from this source address.
    socket.bind(&SockAddr::from(SocketAddr::new(from_ip, 0)))?;
    socket.send_to(header, &SockAddr::from(SocketAddr::new(to_ip, 0)))?;
    Ok(())
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The TCP checksum over the pseudo-header and `segment`.
pub(super) fn checksum(from: IpAddr, to: IpAddr, segment: &[u8]) -> u16 {
    match (from, to) {
        (IpAddr::V4(a), IpAddr::V4(b)) => fold(&[&a.octets(), &b.octets(), &[0, 6], &(segment.len() as u16).to_be_bytes(), segment]),
        (a, b) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V6(v6) => v6.octets(),
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            };
            fold(&[&v6(a), &v6(b), &(segment.len() as u32).to_be_bytes(), &[0, 0, 0, 6], segment])
        }
    }
}

/// The Internet checksum (RFC 1071) of `parts` in turn, each read as 16-bit
/// big-endian words (an odd last byte padded with zero): the ones'
/// complement of their ones'-complement sum. 0 over data carrying a correct one.
pub(super) fn fold(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        for pair in part.chunks(2) {
            let word = if pair.len() == 2 { u16::from_be_bytes([pair[0], pair[1]]) } else { u16::from(pair[0]) << 8 };
            sum += u32::from(word);
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_of_a_segment_with_its_checksum_in_place_verifies() {
        let (a, b): (IpAddr, IpAddr) = ("198.18.1.2".parse().unwrap(), "198.18.1.1".parse().unwrap());
        let mut segment = [0u8; 20];
        segment[0..4].copy_from_slice(&[0x1f, 0x98, 0x9c, 0x40]);
        segment[12] = 0x50;
        segment[13] = TCP_RST | TCP_ACK;
        let sum = checksum(a, b, &segment);
        segment[16..18].copy_from_slice(&sum.to_be_bytes());
        // Summing again over a segment that carries its checksum gives 0 (all ones, complemented).
        assert_eq!(checksum(a, b, &segment), 0);
    }
}
