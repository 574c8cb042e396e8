//! Fragmented datagrams. Only the first fragment carries the UDP header, so
//! it alone can be matched to a flow; it is translated as any datagram (its
//! UDP checksum covers the whole datagram, and only the pseudo-header and
//! ports change, so the incremental update holds) and recorded here by its
//! IP identity. Every later fragment with that identity gets the same
//! addresses and leaves by the same interface; the endpoint (or client)
//! reassembles the datagram, whose checksum then matches.
//!
//! A later fragment that arrives before its first one (reordered on the
//! way) finds no record: it passes to the stack, counted in row 0 of
//! `UDP_NAT_STATS`, and that datagram is lost, as it would be at any NAT that
//! does not reassemble. Two clients' datagrams fragmented at the same moment
//! toward one endpoint keep their own IP IDs; should those be equal, the
//! endpoint cannot tell their fragments apart (a NAT that does not
//! reassemble shares this with every such NAT).
use aya_ebpf::{bindings::TC_ACT_SHOT, btf_maps::LruHashMap, macros::btf_map, programs::TcContext};
use gateway_common::{UdpFlowEntry, UdpFlowKey, UdpFragEntry, UdpFragKey, UDP_NAT_MAX_FRAGMENTED};

use super::{count, redirect, rewrite_addresses, ETH_HLEN, IPV4_ID, IPV4_SRC, UDP_NAT_NODE_ADDRS};

const MAX_FRAGMENTED: usize = UDP_NAT_MAX_FRAGMENTED as usize;

#[btf_map]
static UDP_NAT_FRAGS: LruHashMap<UdpFragKey, UdpFragEntry, MAX_FRAGMENTED> = LruHashMap::new();

/// The first fragment of the datagram `key` (IP ID `id`, as on the wire) goes as `out` says.
#[inline(always)]
pub fn record(key: &UdpFlowKey, id: u16, out: &UdpFlowEntry) {
    let frag = UdpFragKey { src_addr: key.src_addr, dst_addr: key.dst_addr, id, _pad: 0 };
    let entry = UdpFragEntry { out_src_addr: out.out_src_addr, out_dst_addr: out.out_dst_addr, out_ifindex: out.out_ifindex, listener_port: out.listener_port };
    let _ = UDP_NAT_FRAGS.insert(&frag, &entry, 0);
}

/// A fragment after the first (offset non-zero) of an IPv4 UDP datagram to `dst`.
#[inline(always)]
pub fn follow(ctx: &TcContext, dst: [u8; 4]) -> Result<i32, ()> {
    let l3 = ETH_HLEN;
    let frag = UdpFragKey { src_addr: ctx.load(l3 + IPV4_SRC).map_err(|_| ())?, dst_addr: dst, id: ctx.load(l3 + IPV4_ID).map_err(|_| ())?, _pad: 0 };
    // SAFETY: a copy of the map value is taken at once.
    let Some(entry) = UDP_NAT_FRAGS.get_ptr(&frag).map(|e| unsafe { *e }) else {
        if UDP_NAT_NODE_ADDRS.get_ptr(&dst).is_some() {
            count(0, |s| s.fragments_passed += 1);
        }
        return Err(());
    };
    rewrite_addresses(ctx, entry.out_src_addr, entry.out_dst_addr)?;
    let verdict = redirect(entry.listener_port, entry.out_ifindex);
    if verdict != TC_ACT_SHOT as i32 {
        count(entry.listener_port, |s| s.fragments_forwarded += 1);
    }
    Ok(verdict)
}
