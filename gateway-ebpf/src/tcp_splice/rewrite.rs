//! Rewriting a segment of one leg into a segment of the other, with every
//! checksum updated incrementally.
//!
//! The helpers do the right thing for each kind of packet: for a complete
//! checksum they fold the change into the TCP checksum field; for a
//! CHECKSUM_PARTIAL packet (a local sender's, or a GSO super-packet) the field
//! holds only the pseudo-header sum, so only address changes (flagged
//! `BPF_F_PSEUDO_HDR`) touch it, and the device or the segmentation computes
//! the rest over the rewritten bytes.
use aya_ebpf::{bindings::BPF_F_PSEUDO_HDR, programs::TcContext};
use gateway_common::FlowEntry;

use super::headers::{Segment, TCP_ACK_SEQ, TCP_CHECKSUM, TCP_SEQ, TCP_WINDOW};

/// Offsets in the IPv4 header.
const IPV4_CHECKSUM: usize = 10;
const IPV4_SRC: usize = 12;
const IPV4_DST: usize = 16;
/// Offsets in the IPv6 header.
const IPV6_SRC: usize = 8;
const IPV6_DST: usize = 24;

#[inline(always)]
pub fn translate(ctx: &TcContext, segment: &Segment, entry: &FlowEntry) -> Result<(), ()> {
    let tcp_checksum = segment.l4 + TCP_CHECKSUM;
    addresses(ctx, segment, entry)?;
    // Ports: plain TCP header words.
    replace16(ctx, segment.l4, entry.out_src_port.to_be(), tcp_checksum)?;
    replace16(ctx, segment.l4 + 2, entry.out_dst_port.to_be(), tcp_checksum)?;
    add32(ctx, segment.l4 + TCP_SEQ, entry.seq_delta, tcp_checksum)?;
    if segment.has_ack() {
        add32(ctx, segment.l4 + TCP_ACK_SEQ, entry.ack_delta, tcp_checksum)?;
    }
    window(ctx, segment, entry)?;
    if segment.timestamp_at != 0 {
        let at = segment.l4 + segment.timestamp_at;
        add32(ctx, at + 2, entry.tsval_delta, tcp_checksum)?;
        add32(ctx, at + 6, entry.tsecr_delta, tcp_checksum)?;
    }
    if segment.sack_at != 0 {
        // Every edge acknowledges data of the other direction, like the ACK field.
        let first = segment.l4 + segment.sack_at + 2;
        let edges = (segment.sack_len - 2) / 4;
        for i in 0..8 {
            if i >= edges {
                break;
            }
            add32(ctx, first + i * 4, entry.ack_delta, tcp_checksum)?;
        }
    }
    Ok(())
}

/// The IP addresses, and the pseudo-header's share of the TCP checksum.
#[inline(always)]
fn addresses(ctx: &TcContext, segment: &Segment, entry: &FlowEntry) -> Result<(), ()> {
    let tcp_checksum = segment.l4 + TCP_CHECKSUM;
    if !segment.ipv6 {
        let ip_checksum = segment.l3 + IPV4_CHECKSUM;
        for (field, new) in [(IPV4_SRC, &entry.out_src_addr), (IPV4_DST, &entry.out_dst_addr)] {
            let at = segment.l3 + field;
            let old: u32 = ctx.load(at).map_err(|_| ())?;
            let new = u32::from_ne_bytes([new[12], new[13], new[14], new[15]]);
            if old == new {
                continue;
            }
            ctx.store(at, &new, 0).map_err(|_| ())?;
            ctx.l3_csum_replace(ip_checksum, u64::from(old), u64::from(new), 4).map_err(|_| ())?;
            ctx.l4_csum_replace(tcp_checksum, u64::from(old), u64::from(new), u64::from(BPF_F_PSEUDO_HDR) | 4).map_err(|_| ())?;
        }
        return Ok(());
    }
    for (field, new) in [(IPV6_SRC, &entry.out_src_addr), (IPV6_DST, &entry.out_dst_addr)] {
        for word in 0..4 {
            let at = segment.l3 + field + word * 4;
            let old: u32 = ctx.load(at).map_err(|_| ())?;
            let b = word * 4;
            let new = u32::from_ne_bytes([new[b], new[b + 1], new[b + 2], new[b + 3]]);
            if old == new {
                continue;
            }
            ctx.store(at, &new, 0).map_err(|_| ())?;
            ctx.l4_csum_replace(tcp_checksum, u64::from(old), u64::from(new), u64::from(BPF_F_PSEUDO_HDR) | 4).map_err(|_| ())?;
        }
    }
    Ok(())
}

/// The window, rescaled from this sender's scale to the one the other
/// receiver applies to the node's windows. Rounds down and saturates: never
/// offers more than the sender did.
#[inline(always)]
fn window(ctx: &TcContext, segment: &Segment, entry: &FlowEntry) -> Result<(), ()> {
    let at = segment.l4 + TCP_WINDOW;
    let raw: u16 = ctx.load(at).map_err(|_| ())?;
    let offered = u64::from(u16::from_be(raw)) << (entry.window_shift_in & 15);
    let scaled = (offered >> (entry.window_shift_out & 15)).min(0xffff) as u16;
    replace16(ctx, at, scaled.to_be(), segment.l4 + TCP_CHECKSUM)
}

/// Advertises a zero window (the handover's hold).
#[inline(always)]
pub fn zero_window(ctx: &TcContext, segment: &Segment) -> Result<(), ()> {
    replace16(ctx, segment.l4 + TCP_WINDOW, 0, segment.l4 + TCP_CHECKSUM)
}

/// Stores a 16-bit field (given in network order) and folds the change in.
#[inline(always)]
fn replace16(ctx: &TcContext, at: usize, new: u16, checksum: usize) -> Result<(), ()> {
    let old: u16 = ctx.load(at).map_err(|_| ())?;
    if old == new {
        return Ok(());
    }
    ctx.store(at, &new, 0).map_err(|_| ())?;
    ctx.l4_csum_replace(checksum, u64::from(old), u64::from(new), 2).map_err(|_| ())
}

/// Adds `delta` (mod 2^32) to a 32-bit field in network order.
#[inline(always)]
fn add32(ctx: &TcContext, at: usize, delta: u32, checksum: usize) -> Result<(), ()> {
    if delta == 0 {
        return Ok(());
    }
    let old: u32 = ctx.load(at).map_err(|_| ())?;
    let new = u32::from_be(old).wrapping_add(delta).to_be();
    ctx.store(at, &new, 0).map_err(|_| ())?;
    ctx.l4_csum_replace(checksum, u64::from(old), u64::from(new), 4).map_err(|_| ())
}
