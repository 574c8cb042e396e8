//! ICMP errors about a flow's datagram, translated for the flow's other end.
//!
//! A backend with no socket on the port answers the node's datagram with a
//! port unreachable that quotes it (node:nat_port → endpoint). Without this,
//! the node's stack would take that error for a socket of its own and the
//! client would wait for an answer that never comes; translated, the
//! client's connected socket reports ECONNREFUSED at once, as without a
//! gateway. The quoted datagram is swapped back into the flow table's key,
//! whose entry says what the other end sent or expects: the quote becomes
//! the datagram the client sent (client → listener), the outer header goes
//! from the listener's address to the client. The same holds the other way,
//! for a client's error about a reply. Errors that quote a datagram: 3
//! (destination unreachable, "fragmentation needed" included), 11 (time
//! exceeded), 12 (parameter problem).
//!
//! Checksums: the outer IPv4 header's by the kernel's helper; the ICMP
//! checksum (no pseudo-header) by the helper, word by word, for every byte
//! changed in the quote; the quote's own IPv4 and UDP checksums by hand
//! (`checksum.rs`), the UDP one only when the sender set one.
use aya_ebpf::programs::TcContext;

use super::checksum::{replace16, replace32};
use super::{count, redirect, rewrite_addresses, ETH_HLEN, IPPROTO_UDP, IPV4_CHECKSUM, IPV4_DST, IPV4_SRC, UDP_CHECKSUM, UDP_NAT_FLOWS};
use gateway_common::UdpFlowKey;

const ICMP_CHECKSUM: usize = 2;
/// The quoted datagram starts after the ICMP header's 8 bytes.
const ICMP_HEADER: usize = 8;
const DEST_UNREACHABLE: u8 = 3;
const TIME_EXCEEDED: u8 = 11;
const PARAMETER_PROBLEM: u8 = 12;

#[inline(always)]
pub fn translate(ctx: &TcContext) -> Result<i32, ()> {
    let l3 = ETH_HLEN;
    let fragment = u16::from_be(ctx.load::<u16>(l3 + super::IPV4_FRAGMENT).map_err(|_| ())?);
    if fragment & super::FRAGMENT_OFFSET != 0 {
        return Err(());
    }
    let ihl = usize::from(ctx.load::<u8>(l3).map_err(|_| ())? & 0x0f) * 4;
    if ihl < 20 {
        return Err(());
    }
    let icmp = l3 + ihl;
    let kind: u8 = ctx.load(icmp).map_err(|_| ())?;
    if kind != DEST_UNREACHABLE && kind != TIME_EXCEEDED && kind != PARAMETER_PROBLEM {
        return Err(());
    }
    let inner = icmp + ICMP_HEADER;
    if ctx.load::<u8>(inner + 9).map_err(|_| ())? != IPPROTO_UDP {
        return Err(());
    }
    let inner_ihl = usize::from(ctx.load::<u8>(inner).map_err(|_| ())? & 0x0f) * 4;
    if inner_ihl < 20 {
        return Err(());
    }
    let inner_udp = inner + inner_ihl;
    let quoted_src: [u8; 4] = ctx.load(inner + IPV4_SRC).map_err(|_| ())?;
    let quoted_dst: [u8; 4] = ctx.load(inner + IPV4_DST).map_err(|_| ())?;
    let quoted_sport: [u8; 2] = ctx.load(inner_udp).map_err(|_| ())?;
    let quoted_dport: [u8; 2] = ctx.load(inner_udp + 2).map_err(|_| ())?;
    // The key of a datagram coming back the way the quoted one went.
    let key = UdpFlowKey { src_addr: quoted_dst, dst_addr: quoted_src, src_port: u16::from_be_bytes(quoted_dport), dst_port: u16::from_be_bytes(quoted_sport) };
    // SAFETY: a copy of the map value is taken at once.
    let Some(back) = UDP_NAT_FLOWS.get_ptr(&key).map(|e| unsafe { *e }) else { return Err(()) };
    // What the other end sent, or expects: the reverse of where `back` sends.
    let (new_src, new_dst) = (back.out_dst_addr, back.out_src_addr);
    let (new_sport, new_dport) = (back.out_dst_port.to_be_bytes(), back.out_src_port.to_be_bytes());

    let icmp_checksum = icmp + ICMP_CHECKSUM;
    let mut ip_sum: u16 = ctx.load(inner + IPV4_CHECKSUM).map_err(|_| ())?;
    let mut udp_sum: u16 = ctx.load(inner_udp + UDP_CHECKSUM).map_err(|_| ())?;
    let had_udp_sum = udp_sum != 0;
    let (old_ip_sum, old_udp_sum) = (ip_sum, udp_sum);
    for (at, old, new) in [(inner + IPV4_SRC, quoted_src, new_src), (inner + IPV4_DST, quoted_dst, new_dst)] {
        if old == new {
            continue;
        }
        ip_sum = replace32(ip_sum, old, new);
        udp_sum = replace32(udp_sum, old, new);
        ctx.store(at, &new, 0).map_err(|_| ())?;
        ctx.l4_csum_replace(icmp_checksum, u64::from(u32::from_ne_bytes(old)), u64::from(u32::from_ne_bytes(new)), 4).map_err(|_| ())?;
    }
    for (at, old, new) in [(inner_udp, quoted_sport, new_sport), (inner_udp + 2, quoted_dport, new_dport)] {
        if old == new {
            continue;
        }
        let (old, new) = (u16::from_ne_bytes(old), u16::from_ne_bytes(new));
        udp_sum = replace16(udp_sum, old, new);
        ctx.store(at, &new, 0).map_err(|_| ())?;
        ctx.l4_csum_replace(icmp_checksum, u64::from(old), u64::from(new), 2).map_err(|_| ())?;
    }
    // A zero UDP checksum means "none" and stays so; a computed 0 is sent as 0xffff.
    let udp_sum = if !had_udp_sum { 0 } else if udp_sum == 0 { 0xffff } else { udp_sum };
    for (at, old, new) in [(inner + IPV4_CHECKSUM, old_ip_sum, ip_sum), (inner_udp + UDP_CHECKSUM, old_udp_sum, udp_sum)] {
        if old != new {
            ctx.store(at, &new, 0).map_err(|_| ())?;
            ctx.l4_csum_replace(icmp_checksum, u64::from(old), u64::from(new), 2).map_err(|_| ())?;
        }
    }
    rewrite_addresses(ctx, back.out_src_addr, back.out_dst_addr)?;
    let verdict = redirect(back.listener_port, back.out_ifindex);
    if verdict != aya_ebpf::bindings::TC_ACT_SHOT as i32 {
        count(back.listener_port, |s| s.icmp_translated += 1);
    }
    Ok(verdict)
}
