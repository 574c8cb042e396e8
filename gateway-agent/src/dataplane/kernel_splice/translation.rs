//! The pure half of a handover: from what the two legs' sockets say at the
//! moment of the switch, the two `FLOWS` entries, or why the kernel cannot
//! take the pair.
//!
//! At the switch every queue is empty: the gateway delivered everything it
//! received and the peers acknowledged everything it sent. So on the
//! client leg the client's next byte is `client.rcv_nxt` and the backend
//! expects it at `backend.write_seq`: every client sequence number maps to a
//! backend-leg one by adding the difference, for the rest of the stream (and
//! for retransmissions of earlier bytes, which land on the same bytes). The
//! same holds the other way and for acknowledgements, which number the other
//! direction's bytes.
use std::net::{IpAddr, SocketAddr};

use gateway_common::{FlowEntry, FlowKey, FLOW_SPLICED};

use super::tcp_state::{Sequences, TcpInfo};

/// One leg as the gateway's socket on it sees it at the switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leg {
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub info: TcpInfo,
    pub seq: Sequences,
    /// The peer's last TSval, as the TC program recorded it.
    pub peer_tsval: Option<u32>,
    /// The interface the peer's segments arrive on (0: none seen).
    pub ifindex: u32,
}

/// Why a pair stays on splice(2): counted per reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Refusal {
    /// One leg is IPv4 and the other IPv6: the headers differ in size.
    MixedFamilies,
    /// Timestamps or SACK negotiated on one leg only.
    OptionsDiffer,
    /// One peer may send segments larger than the other accepts.
    MssMismatch,
    /// A peer on this host (loopback): its segments never pass a TC ingress.
    LocalPeer,
    /// No segment of a leg was seen by the program: its interface lacks it.
    NoProgramOnInterface,
    /// Timestamps in use, but no TSval of a peer was seen to offset from.
    NoTimestampSample,
    /// The queues did not empty within the handover's time limit.
    Busy,
    /// A side already ended its direction (FIN) or reset.
    Closing,
    /// The flow map is full.
    MapFull,
    /// A socket call failed (the message says which).
    SocketError,
    /// The connection ended on splice(2) before its handover was due
    /// (`--kernel-splice-after`): not a failure, the short ones are meant to.
    EndedFirst,
}

impl Refusal {
    pub const ALL: [Refusal; 11] = [
        Refusal::MixedFamilies,
        Refusal::OptionsDiffer,
        Refusal::MssMismatch,
        Refusal::LocalPeer,
        Refusal::NoProgramOnInterface,
        Refusal::NoTimestampSample,
        Refusal::Busy,
        Refusal::Closing,
        Refusal::MapFull,
        Refusal::SocketError,
        Refusal::EndedFirst,
    ];

    /// The label in metrics and `inspect`.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::MixedFamilies => "mixed_families",
            Refusal::OptionsDiffer => "options_differ",
            Refusal::MssMismatch => "mss_mismatch",
            Refusal::LocalPeer => "local_peer",
            Refusal::NoProgramOnInterface => "no_program_on_interface",
            Refusal::NoTimestampSample => "no_timestamp_sample",
            Refusal::Busy => "busy",
            Refusal::Closing => "closing",
            Refusal::MapFull => "map_full",
            Refusal::SocketError => "socket_error",
            Refusal::EndedFirst => "ended_before_handover",
        }
    }
}

/// What can be judged before the handover starts, from TCP_INFO and the
/// addresses alone.
pub fn eligible(client_local: SocketAddr, client_peer: SocketAddr, backend_local: SocketAddr, backend_peer: SocketAddr, client: &TcpInfo, backend: &TcpInfo) -> Result<(), Refusal> {
    if unmapped(client_peer.ip()).is_ipv4() != unmapped(backend_peer.ip()).is_ipv4() {
        return Err(Refusal::MixedFamilies);
    }
    let local = |a: SocketAddr| a.ip().is_loopback() || unmapped(a.ip()).is_loopback();
    if local(client_peer) || local(backend_peer) || client_peer.ip() == client_local.ip() || backend_peer.ip() == backend_local.ip() {
        return Err(Refusal::LocalPeer);
    }
    if client.timestamps != backend.timestamps || client.sack != backend.sack {
        return Err(Refusal::OptionsDiffer);
    }
    Ok(())
}

/// The two entries: the client leg's (keyed by the client's segments) and the
/// backend leg's. `now_ns` is CLOCK_MONOTONIC, for the entries' age.
pub fn entries(client: &Leg, backend: &Leg, listener_port: u16, now_ns: u64) -> Result<[(FlowKey, FlowEntry); 2], Refusal> {
    // Segments keep their size through the splice: each peer's must fit what
    // the other accepts (the MSS each peer announced to the gateway).
    if client.info.advmss > backend.seq.peer_mss || backend.info.advmss > client.seq.peer_mss {
        return Err(Refusal::MssMismatch);
    }
    if client.ifindex == 0 || backend.ifindex == 0 {
        return Err(Refusal::NoProgramOnInterface);
    }
    let (up_tsval, down_tsval) = if client.info.timestamps {
        let (Some(client_ts), Some(backend_ts)) = (client.peer_tsval, backend.peer_tsval) else {
            return Err(Refusal::NoTimestampSample);
        };
        // A peer's TSvals continue from its last one; offset them onto the
        // gateway's clock of the other leg, which that leg's peer last saw:
        // every translated TSval is then at least what it saw (PAWS).
        (backend.seq.ts_now.wrapping_sub(client_ts), client.seq.ts_now.wrapping_sub(backend_ts))
    } else {
        (0, 0)
    };
    let up = leg_entry(client, backend, up_tsval, down_tsval, listener_port, now_ns);
    let down = leg_entry(backend, client, down_tsval, up_tsval, listener_port, now_ns);
    Ok([(key(client.peer, client.local), up), (key(backend.peer, backend.local), down)])
}

/// The entry for segments arriving from `from`'s peer, sent on to `to`'s
/// peer. `tsval` offsets `from`'s peer's TSvals; that peer echoes the other
/// peer's, which were offset by `echoed_tsval`.
fn leg_entry(from: &Leg, to: &Leg, tsval: u32, echoed_tsval: u32, listener_port: u16, now_ns: u64) -> FlowEntry {
    FlowEntry {
        state: FLOW_SPLICED,
        listener_port: u32::from(listener_port),
        out_src_addr: mapped(to.local.ip()),
        out_dst_addr: mapped(to.peer.ip()),
        out_src_port: to.local.port(),
        out_dst_port: to.peer.port(),
        seq_delta: to.seq.write_seq.wrapping_sub(from.seq.rcv_nxt),
        ack_delta: to.seq.rcv_nxt.wrapping_sub(from.seq.write_seq),
        tsval_delta: tsval,
        tsecr_delta: echoed_tsval.wrapping_neg(),
        // The sender's windows are in its scale (this socket's snd_wscale);
        // the other peer reads the gateway's windows in the gateway's rcv_wscale.
        window_shift_in: from.info.snd_wscale,
        window_shift_out: to.info.rcv_wscale,
        ipv6: u8::from(!unmapped(from.peer.ip()).is_ipv4()),
        out_ifindex: to.ifindex,
        in_ifindex: from.ifindex,
        spliced_at_ns: now_ns,
        ..FlowEntry::default()
    }
}

/// The key of the segments `from` sends to `to`.
pub fn key(from: SocketAddr, to: SocketAddr) -> FlowKey {
    FlowKey { src_addr: mapped(from.ip()), dst_addr: mapped(to.ip()), src_port: from.port(), dst_port: to.port() }
}

/// The (sender, receiver) addresses of the segments `key` matches: the inverse of [`key`].
pub fn addresses(key: &FlowKey) -> (SocketAddr, SocketAddr) {
    let ip = |octets: [u8; 16]| unmapped(IpAddr::V6(std::net::Ipv6Addr::from(octets)));
    (SocketAddr::new(ip(key.src_addr), key.src_port), SocketAddr::new(ip(key.dst_addr), key.dst_port))
}

pub fn mapped(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The address a `FlowKey`/`FlowEntry` field holds, as a person writes it.
pub fn address(bytes: [u8; 16]) -> IpAddr {
    unmapped(IpAddr::V6(std::net::Ipv6Addr::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg(local: &str, peer: &str, write_seq: u32, rcv_nxt: u32, ts_now: u32, peer_tsval: u32, snd_wscale: u8, rcv_wscale: u8) -> Leg {
        Leg {
            local: local.parse().unwrap(),
            peer: peer.parse().unwrap(),
            info: TcpInfo { state: 1, timestamps: true, sack: true, window_scaling: true, snd_wscale, rcv_wscale, advmss: 1448, rtt_us: 50 },
            seq: Sequences { write_seq, rcv_nxt, ts_now, peer_mss: 1460 },
            peer_tsval: Some(peer_tsval),
            ifindex: 7,
        }
    }

    #[test]
    fn addresses_invert_key_for_ipv4_and_ipv6() {
        for (from, to) in [("198.18.1.1:40000", "198.18.1.2:9000"), ("[2001:db8::1]:40000", "[2001:db8::2]:9000")] {
            let (from, to): (SocketAddr, SocketAddr) = (from.parse().unwrap(), to.parse().unwrap());
            assert_eq!(addresses(&key(from, to)), (from, to));
        }
    }

    #[test]
    fn a_client_byte_lands_where_the_backend_expects_it_and_acks_map_back_across_the_wrap() {
        // The client's next byte is 100 on its leg; the backend expects 2^32 - 10.
        let client = leg("198.18.1.2:8088", "198.18.1.1:40000", 5_000, 100, 1_000, 777_000, 7, 9);
        let backend = leg("198.18.2.1:50000", "198.18.2.2:3000", u32::MAX - 9, 42, 9_000_000, 123, 14, 10);
        let [(up_key, up), (down_key, down)] = entries(&client, &backend, 8088, 5).unwrap();
        assert_eq!(up_key, key(client.peer, client.local));
        assert_eq!(down_key, key(backend.peer, backend.local));
        assert_eq!(100u32.wrapping_add(up.seq_delta), u32::MAX - 9);
        assert_eq!(130u32.wrapping_add(up.seq_delta), 20, "a later byte wraps with the stream");
        // The backend's byte 42 is the client's byte 5000, both ways.
        assert_eq!(42u32.wrapping_add(down.seq_delta), 5_000);
        assert_eq!(5_000u32.wrapping_add(up.ack_delta), 42, "the client acks 5000: the backend hears 42");
        assert_eq!((u32::MAX - 9).wrapping_add(down.ack_delta), 100);
        assert_eq!((up.out_src_port, up.out_dst_port, down.out_src_port, down.out_dst_port), (50000, 3000, 8088, 40000));
        // Windows: the client's in its scale 7, read by the backend in 10; the other way 14 → 9.
        assert_eq!((up.window_shift_in, up.window_shift_out, down.window_shift_in, down.window_shift_out), (7, 10, 14, 9));
    }

    #[test]
    fn translated_timestamps_never_fall_behind_what_each_peer_last_saw_and_echoes_map_back() {
        let client = leg("198.18.1.2:8088", "198.18.1.1:40000", 1, 1, 1_000, 4_000_000_000, 7, 7);
        let backend = leg("198.18.2.1:50000", "198.18.2.2:3000", 1, 1, 70, 55, 7, 7);
        let [(_, up), (_, down)] = entries(&client, &backend, 8088, 0).unwrap();
        // The client's next TSval (≥ its last) reaches the backend at ≥ the gateway's backend-leg clock.
        assert_eq!(4_000_000_000u32.wrapping_add(up.tsval_delta), 70);
        assert_eq!(4_000_000_010u32.wrapping_add(up.tsval_delta), 80);
        assert_eq!(55u32.wrapping_add(down.tsval_delta), 1_000);
        // The client echoes a translated backend TSval: the backend hears its own.
        let echoed_by_client = 60u32.wrapping_add(down.tsval_delta);
        assert_eq!(echoed_by_client.wrapping_add(up.tsecr_delta), 60);
        let echoed_by_backend = 4_000_000_005u32.wrapping_add(up.tsval_delta);
        assert_eq!(echoed_by_backend.wrapping_add(down.tsecr_delta), 4_000_000_005);
    }

    #[test]
    fn pairs_the_kernel_cannot_carry_are_refused_with_their_reason() {
        let client = leg("198.18.1.2:8088", "198.18.1.1:40000", 1, 1, 1, 1, 7, 7);
        let backend = leg("198.18.2.1:50000", "198.18.2.2:3000", 1, 1, 1, 1, 7, 7);
        let mut small = backend;
        small.seq.peer_mss = 1200;
        assert_eq!(entries(&client, &small, 1, 0).unwrap_err(), Refusal::MssMismatch);
        let mut unseen = backend;
        unseen.ifindex = 0;
        assert_eq!(entries(&client, &unseen, 1, 0).unwrap_err(), Refusal::NoProgramOnInterface);
        let mut silent = client;
        silent.peer_tsval = None;
        assert_eq!(entries(&silent, &backend, 1, 0).unwrap_err(), Refusal::NoTimestampSample);
        let mut no_ts = backend.info;
        no_ts.timestamps = false;
        assert_eq!(eligible(client.local, client.peer, backend.local, backend.peer, &client.info, &no_ts), Err(Refusal::OptionsDiffer));
        let v6: SocketAddr = "[2001:db8::2]:3000".parse().unwrap();
        assert_eq!(eligible(client.local, client.peer, backend.local, v6, &client.info, &backend.info), Err(Refusal::MixedFamilies));
        let here: SocketAddr = "127.0.0.1:3000".parse().unwrap();
        assert_eq!(eligible(client.local, client.peer, backend.local, here, &client.info, &backend.info), Err(Refusal::LocalPeer));
        assert_eq!(eligible(client.local, client.peer, backend.local, backend.peer, &client.info, &backend.info), Ok(()));
    }
}
