//! The kernel splice's start-up self-test: what this node's kernel must show
//! before `auto` picks the kernel path (and before `ebpf` trusts it).
//!
//! 1. **The program translates a segment exactly as its flow entry says.** A
//!    made-up segment, IPv4 and then IPv6, with timestamps, a SACK block and
//!    a payload, is run through the loaded `sockgate_tcp_splice` with
//!    `BPF_PROG_TEST_RUN`, against an entry written for it under ports 0
//!    (no real segment carries them, so no real flow is touched). The output
//!    must carry the other leg's addresses and ports; the sequence and
//!    acknowledgement numbers, the timestamps and the SACK edges moved by the
//!    entry's deltas; the window rescaled; valid IP and TCP checksums; the
//!    payload unchanged. The verdict must be a redirect, and the entry must
//!    have counted the segment. This is the part a kernel could get wrong
//!    while loading the program fine (a helper that behaves otherwise).
//! 2. **TCP_REPAIR works on this node's sockets**: a loopback pair enters
//!    repair mode, its sequence numbers are read, it leaves it quietly (the
//!    handover reads both legs so and silences the sockets with it; it needs
//!    CAP_NET_ADMIN in the socket's network namespace).
//! 3. **A raw TCP socket opens** (the resets and window updates the agent
//!    sends a spliced flow's peers itself; it needs CAP_NET_RAW).
//!
//! What it cannot see at start (an interface whose segments never reach the
//! program, a pair whose legs negotiated different options) is judged per
//! connection, which then stays on splice(2), counted by reason.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::Context;
use gateway_common::{FlowEntry, FlowKey, FLOW_SPLICED};

use super::craft::{checksum, fold};
use super::tcp_state;
use super::translation::{key, mapped};
use super::KernelSplice;

/// TC_ACT_REDIRECT (linux/pkt_cls.h): the program sent the segment on.
const TC_ACT_REDIRECT: u32 = 7;
const PAYLOAD: usize = 64;

/// Ok when every check above passed; the error names the first that failed.
pub fn verify(kernel: &KernelSplice) -> anyhow::Result<()> {
    for v6 in [false, true] {
        translates_a_segment(kernel, v6).with_context(|| format!("the TC program's translation of an IPv{} segment", if v6 { 6 } else { 4 }))?;
    }
    repair_mode_works().context("TCP_REPAIR on a loopback connection (the handover needs CAP_NET_ADMIN)")?;
    let _raw = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::RAW, Some(socket2::Protocol::TCP))
        .context("opening a raw TCP socket (the kernel splice's resets need CAP_NET_RAW)")?;
    Ok(())
}

fn translates_a_segment(kernel: &KernelSplice, v6: bool) -> anyhow::Result<()> {
    let probe = Probe::new(v6);
    let input = probe.segment();
    kernel.set(&probe.key(), &probe.entry())?;
    let ran = kernel.test_run_splice(&input);
    let counted = kernel.get(&probe.key());
    kernel.remove(&probe.key());
    kernel.forget_listener_stats(0);
    let (verdict, output) = ran?;
    anyhow::ensure!(verdict == TC_ACT_REDIRECT, "the verdict was {verdict}, not a redirect ({TC_ACT_REDIRECT})");
    probe.check(&output).map_err(anyhow::Error::msg)?;
    let counted = counted.context("the probe's entry vanished")?;
    anyhow::ensure!(counted.packets == 1 && counted.bytes == PAYLOAD as u64, "the entry counted {} segments and {} bytes, not 1 and {PAYLOAD}", counted.packets, counted.bytes);
    Ok(())
}

fn repair_mode_works() -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let client = std::net::TcpStream::connect(listener.local_addr()?)?;
    let (_server, _) = listener.accept()?;
    tcp_state::repair_on(&client)?;
    let read = tcp_state::sequences(&client);
    tcp_state::repair_off_quietly(&client)?;
    read?;
    Ok(())
}

/// The made-up segment, its entry, and what the program must make of it.
struct Probe {
    from: SocketAddr,
    to: SocketAddr,
    out_from: SocketAddr,
    out_to: SocketAddr,
    seq: u32,
    ack: u32,
    window: u16,
    tsval: u32,
    tsecr: u32,
    sack: (u32, u32),
    delta: Deltas,
}

struct Deltas {
    seq: u32,
    ack: u32,
    tsval: u32,
    tsecr: u32,
    shift_in: u8,
    shift_out: u8,
}

/// Offsets in the Ethernet frame.
const L3: usize = 14;

impl Probe {
    fn new(v6: bool) -> Probe {
        // Documentation ranges: the segment never leaves the test run.
        let ip = |last: u8| -> IpAddr { if v6 { Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(last)).into() } else { Ipv4Addr::new(192, 0, 2, last).into() } };
        Probe {
            from: SocketAddr::new(ip(1), 0),
            to: SocketAddr::new(ip(2), 0),
            out_from: SocketAddr::new(ip(3), 40_000),
            out_to: SocketAddr::new(ip(4), 3_000),
            // Deltas that carry across 2^32 and flip high bits, where a wrong
            // incremental checksum shows.
            seq: 0xfff0_0000,
            ack: 0x0000_1234,
            window: 1000,
            tsval: 0xffff_ff00,
            tsecr: 77,
            sack: (0x0000_2000, 0x0000_2400),
            delta: Deltas { seq: 0x8000_0001, ack: 0xfedc_ba98, tsval: 0x0100_0000, tsecr: 0xffff_0000, shift_in: 7, shift_out: 9 },
        }
    }

    fn v6(&self) -> bool {
        self.from.is_ipv6()
    }

    fn key(&self) -> FlowKey {
        key(self.from, self.to)
    }

    fn entry(&self) -> FlowEntry {
        FlowEntry {
            state: FLOW_SPLICED,
            listener_port: 0,
            out_src_addr: mapped(self.out_from.ip()),
            out_dst_addr: mapped(self.out_to.ip()),
            out_src_port: self.out_from.port(),
            out_dst_port: self.out_to.port(),
            seq_delta: self.delta.seq,
            ack_delta: self.delta.ack,
            tsval_delta: self.delta.tsval,
            tsecr_delta: self.delta.tsecr,
            window_shift_in: self.delta.shift_in,
            window_shift_out: self.delta.shift_out,
            ipv6: u8::from(self.v6()),
            // Any interface: a test run records the redirect and sends nothing.
            out_ifindex: 1,
            ..FlowEntry::default()
        }
    }

    fn l4(&self) -> usize {
        L3 + if self.v6() { 40 } else { 20 }
    }

    /// An Ethernet frame: IP, then TCP with `NOP NOP TS` and `NOP NOP SACK`
    /// (one block), then the payload; every checksum complete.
    fn segment(&self) -> Vec<u8> {
        self.frame(self.from, self.to, self.seq, self.ack, self.window, self.tsval, self.tsecr, self.sack)
    }

    /// What the translated segment must be, built from scratch.
    fn translated(&self) -> Vec<u8> {
        let d = &self.delta;
        let window = ((u32::from(self.window) << d.shift_in) >> d.shift_out).min(0xffff) as u16;
        let sack = (self.sack.0.wrapping_add(d.ack), self.sack.1.wrapping_add(d.ack));
        self.frame(self.out_from, self.out_to, self.seq.wrapping_add(d.seq), self.ack.wrapping_add(d.ack), window, self.tsval.wrapping_add(d.tsval), self.tsecr.wrapping_add(d.tsecr), sack)
    }

    #[allow(clippy::too_many_arguments)]
    fn frame(&self, from: SocketAddr, to: SocketAddr, seq: u32, ack: u32, window: u16, tsval: u32, tsecr: u32, sack: (u32, u32)) -> Vec<u8> {
        let mut tcp = Vec::with_capacity(44 + PAYLOAD);
        tcp.extend_from_slice(&from.port().to_be_bytes());
        tcp.extend_from_slice(&to.port().to_be_bytes());
        tcp.extend_from_slice(&seq.to_be_bytes());
        tcp.extend_from_slice(&ack.to_be_bytes());
        tcp.push(11 << 4); // 44 bytes of header
        tcp.push(0x18); // PSH, ACK
        tcp.extend_from_slice(&window.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
        tcp.extend_from_slice(&[1, 1, 8, 10]);
        tcp.extend_from_slice(&tsval.to_be_bytes());
        tcp.extend_from_slice(&tsecr.to_be_bytes());
        tcp.extend_from_slice(&[1, 1, 5, 10]);
        tcp.extend_from_slice(&sack.0.to_be_bytes());
        tcp.extend_from_slice(&sack.1.to_be_bytes());
        tcp.extend((0..PAYLOAD).map(|i| (i * 7 + 3) as u8));
        let sum = checksum(from.ip(), to.ip(), &tcp);
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
        let mut frame = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        match (from.ip(), to.ip()) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                frame.extend_from_slice(&[0x08, 0x00]);
                let mut ip = vec![0x45, 0];
                ip.extend_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
                ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
                ip.extend_from_slice(&a.octets());
                ip.extend_from_slice(&b.octets());
                let sum = ipv4_checksum(&ip);
                ip[10..12].copy_from_slice(&sum.to_be_bytes());
                frame.extend_from_slice(&ip);
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                frame.extend_from_slice(&[0x86, 0xdd]);
                frame.extend_from_slice(&[0x60, 0, 0, 0]);
                frame.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
                frame.extend_from_slice(&[6, 64]);
                frame.extend_from_slice(&a.octets());
                frame.extend_from_slice(&b.octets());
            }
            _ => unreachable!("a probe's addresses are of one family"),
        }
        frame.extend_from_slice(&tcp);
        frame
    }

    /// Compares the program's output with the segment built from scratch,
    /// naming the first field that differs, and verifies its checksums (an
    /// incremental update may write 0xffff where a fresh sum writes 0: both
    /// are valid, so the checksum fields are verified, not compared).
    fn check(&self, output: &[u8]) -> Result<(), String> {
        let expected = self.translated();
        if output.len() != expected.len() {
            return Err(format!("{} bytes came out, {} went in", output.len(), expected.len()));
        }
        let l4 = self.l4();
        let fields: [(&str, std::ops::Range<usize>); 8] = [
            ("addresses", if self.v6() { L3 + 8..L3 + 40 } else { L3 + 12..L3 + 20 }),
            ("ports", l4..l4 + 4),
            ("sequence number", l4 + 4..l4 + 8),
            ("acknowledgement number", l4 + 8..l4 + 12),
            ("window", l4 + 14..l4 + 16),
            ("timestamps", l4 + 24..l4 + 32),
            ("SACK edges", l4 + 36..l4 + 44),
            ("payload", l4 + 44..expected.len()),
        ];
        for (name, range) in fields {
            if output[range.clone()] != expected[range.clone()] {
                return Err(format!("the {name} came out as {:02x?}, not {:02x?}", &output[range.clone()], &expected[range]));
            }
        }
        if checksum(self.out_from.ip(), self.out_to.ip(), &output[l4..]) != 0 {
            return Err("the TCP checksum does not verify".into());
        }
        if !self.v6() && ipv4_checksum(&output[L3..L3 + 20]) != 0 {
            return Err("the IPv4 header checksum does not verify".into());
        }
        let without_checksums = |frame: &[u8]| {
            let mut frame = frame.to_vec();
            frame[l4 + 16..l4 + 18].fill(0);
            if !self.v6() {
                frame[L3 + 10..L3 + 12].fill(0);
            }
            frame
        };
        let (got, want) = (without_checksums(output), without_checksums(&expected));
        if let Some(at) = got.iter().zip(&want).position(|(a, b)| a != b) {
            return Err(format!("byte {at} of the frame came out as {:#04x}, not {:#04x}", got[at], want[at]));
        }
        Ok(())
    }
}

/// The IPv4 header checksum (0 over a header that carries a correct one).
fn ipv4_checksum(header: &[u8]) -> u16 {
    fold(&[header])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_segment_has_valid_checksums_and_its_expected_translation_is_what_the_deltas_say() {
        for v6 in [false, true] {
            let probe = Probe::new(v6);
            let (input, output) = (probe.segment(), probe.translated());
            let l4 = probe.l4();
            let tcp = |frame: &[u8], from: SocketAddr, to: SocketAddr| checksum(from.ip(), to.ip(), &frame[l4..]);
            assert_eq!(tcp(&input, probe.from, probe.to), 0, "the input's TCP checksum");
            assert_eq!(tcp(&output, probe.out_from, probe.out_to), 0, "the expected output's TCP checksum");
            if !v6 {
                assert_eq!(ipv4_checksum(&output[L3..L3 + 20]), 0);
            }
            let word = |f: &[u8], at: usize| u32::from_be_bytes(f[at..at + 4].try_into().unwrap());
            assert_eq!(word(&output, l4 + 4), 0x7ff0_0001, "the sequence number wraps");
            assert_eq!(u16::from_be_bytes([output[l4 + 14], output[l4 + 15]]), 250, "1000 << 7 >> 9");
            assert_eq!(word(&output, l4 + 36), 0x2000u32.wrapping_add(0xfedc_ba98));
            // The check accepts the expected output and names a wrong field.
            assert_eq!(probe.check(&output), Ok(()));
            let mut wrong = output.clone();
            wrong[l4 + 7] ^= 1;
            assert!(probe.check(&wrong).unwrap_err().contains("sequence number"));
            assert!(probe.check(&input).is_err(), "an untranslated segment must fail the check");
            let mut bad_sum = output.clone();
            bad_sum[l4 + 16] ^= 0x40;
            assert!(probe.check(&bad_sum).unwrap_err().contains("TCP checksum"));
        }
    }
}
