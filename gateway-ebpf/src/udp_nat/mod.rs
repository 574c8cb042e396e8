//! `sockgate_udp_nat` (TC ingress on the node's interfaces): UDP listeners
//! served as a per-flow NAT, with no socket on the node.
//!
//! A datagram to a node address (`UDP_NAT_NODE_ADDRS`) on a UDP listener port
//! (`UDP_NAT_LISTENERS`) from a client 4-tuple without a flow picks the next
//! slot of the listener's pick table (`UDP_NAT_SLOTS`, filled by the agent in
//! smooth weighted round-robin order, walked by a per-CPU cursor, so any run
//! of new flows follows the weights), claims a NAT port toward that endpoint
//! (random in 61000–65535, outside the node's ephemeral range, up to 4 tries,
//! `BPF_NOEXIST` so two flows never share one), and writes two entries into
//! the LRU table `UDP_NAT_FLOWS`: client → listener becomes node:nat_port →
//! endpoint, and endpoint → node:nat_port becomes listener → client. Each
//! datagram is rewritten (checksums updated incrementally; a zero UDP
//! checksum stays zero) and sent with `bpf_redirect_neigh`: the node's UDP
//! stack never sees it.
//!
//! A new flow is admitted first (`admission.rs`): the ListenerPolicy's
//! clientCIDRs and its maxConnections as a cap on live flows. Fragmented
//! datagrams are forwarded whole (`fragments.rs`): the first fragment, which
//! carries the UDP header, is translated as any datagram, and the later ones
//! follow it by IP ID. ICMP errors about a flow's datagram are translated
//! toward the flow's other end (`icmp.rs`), so a client sees a backend's port
//! unreachable. IP options are followed (any IHL).
//!
//! What passes to the stack untouched (the userspace relay, still bound to
//! the listener ports, serves it): IPv6, and fragments of a datagram whose
//! first fragment the program did not see first (counted in row 0 of
//! `UDP_NAT_STATS`). Idle flows and flows to endpoints that left the route
//! are removed by the agent's sweep; the LRU evicts under a flood.
mod admission;
mod checksum;
mod fragments;
mod icmp;

use aya_ebpf::{
    bindings::{__sk_buff, BPF_ANY, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_NOEXIST, TC_ACT_REDIRECT, TC_ACT_SHOT},
    btf_maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap},
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns, generated::bpf_redirect_neigh},
    macros::{btf_map, classifier},
    programs::TcContext,
    EbpfContext,
};
use gateway_common::{
    UdpFlowEntry, UdpFlowKey, UdpListenerPort, UdpNatEndpoint, UdpNatListener, UdpNatStats, UDP_NAT_MAX_FLOWS,
    UDP_NAT_MAX_LISTENERS, UDP_NAT_PORT_COUNT, UDP_NAT_PORT_MIN, UDP_NAT_SLOTS_PER_LISTENER,
};

const TC_ACT_UNSPEC: i32 = -1;
const MAX_FLOWS: usize = UDP_NAT_MAX_FLOWS as usize;
const MAX_LISTENERS: usize = UDP_NAT_MAX_LISTENERS as usize;
const SLOTS: usize = (UDP_NAT_MAX_LISTENERS * UDP_NAT_SLOTS_PER_LISTENER) as usize;
const MAX_NODE_ADDRS: usize = 4096;

#[btf_map]
static UDP_NAT_FLOWS: LruHashMap<UdpFlowKey, UdpFlowEntry, MAX_FLOWS> = LruHashMap::new();
#[btf_map]
static UDP_NAT_LISTENERS: HashMap<UdpListenerPort, UdpNatListener, MAX_LISTENERS> = HashMap::new();
#[btf_map]
static UDP_NAT_SLOTS: Array<UdpNatEndpoint, SLOTS> = Array::new();
/// Per listener index and CPU: the next slot a new flow takes.
#[btf_map]
static UDP_NAT_CURSOR: PerCpuArray<u32, MAX_LISTENERS> = PerCpuArray::new();
/// The node's IPv4 addresses (network order as written), value unused.
#[btf_map]
static UDP_NAT_NODE_ADDRS: HashMap<[u8; 4], u32, MAX_NODE_ADDRS> = HashMap::new();
#[btf_map]
static UDP_NAT_STATS: PerCpuHashMap<UdpListenerPort, UdpNatStats, MAX_LISTENERS> = PerCpuHashMap::new();

const ETH_HLEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_UDP: u8 = 17;
const IPV4_ID: usize = 4;
const IPV4_FRAGMENT: usize = 6;
const IPV4_CHECKSUM: usize = 10;
const IPV4_SRC: usize = 12;
const IPV4_DST: usize = 16;
const UDP_CHECKSUM: usize = 6;
/// The fragment offset's bits of the IPv4 flags-and-offset field, and "more fragments".
const FRAGMENT_OFFSET: u16 = 0x1fff;
const MORE_FRAGMENTS: u16 = 0x2000;

#[classifier]
pub fn sockgate_udp_nat(ctx: TcContext) -> i32 {
    match handle(&ctx) {
        Ok(verdict) => verdict,
        // Not ours: the next program on the interface (the TCP splice, which
        // tcx runs after this one) or the stack decides. TC_ACT_OK would end
        // tcx's chain and skip the programs attached after this one.
        Err(()) => TC_ACT_UNSPEC,
    }
}

struct Datagram {
    key: UdpFlowKey,
    l4: usize,
    /// UDP payload length.
    payload: u64,
}

fn handle(ctx: &TcContext) -> Result<i32, ()> {
    if u16::from_be(ctx.load::<u16>(12).map_err(|_| ())?) != ETH_P_IPV4 {
        return Err(());
    }
    let l3 = ETH_HLEN;
    let protocol: u8 = ctx.load(l3 + 9).map_err(|_| ())?;
    if protocol == IPPROTO_ICMP {
        return icmp::translate(ctx);
    }
    if protocol != IPPROTO_UDP {
        return Err(());
    }
    let dst: [u8; 4] = ctx.load(l3 + IPV4_DST).map_err(|_| ())?;
    let fragment = u16::from_be(ctx.load::<u16>(l3 + IPV4_FRAGMENT).map_err(|_| ())?);
    if fragment & FRAGMENT_OFFSET != 0 {
        return fragments::follow(ctx, dst);
    }
    let ihl = usize::from(ctx.load::<u8>(l3).map_err(|_| ())? & 0x0f) * 4;
    if ihl < 20 {
        return Err(());
    }
    let l4 = l3 + ihl;
    let key = UdpFlowKey {
        src_addr: ctx.load(l3 + IPV4_SRC).map_err(|_| ())?,
        dst_addr: dst,
        src_port: u16::from_be(ctx.load::<u16>(l4).map_err(|_| ())?),
        dst_port: u16::from_be(ctx.load::<u16>(l4 + 2).map_err(|_| ())?),
    };
    let udp_len = u64::from(u16::from_be(ctx.load::<u16>(l4 + 4).map_err(|_| ())?));
    let datagram = Datagram { key, l4, payload: udp_len.saturating_sub(8) };
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: the context pointer is the program's __sk_buff, readable for its run.
    let in_ifindex = unsafe { (*(ctx.as_ptr() as *const __sk_buff)).ingress_ifindex };
    let entry = match UDP_NAT_FLOWS.get_ptr_mut(&datagram.key) {
        Some(entry) => entry,
        None => match new_flow(&datagram, in_ifindex, now)? {
            Some(entry) => entry,
            None => return Ok(TC_ACT_SHOT as i32),
        },
    };
    // SAFETY: a pointer to the map value, valid for this run (RCU).
    let entry = unsafe { &mut *entry };
    entry.last_seen_ns = now;
    crate::counter::add64(&mut entry.packets, 1);
    crate::counter::add64(&mut entry.bytes, datagram.payload);
    let out = *entry;
    if fragment & MORE_FRAGMENTS != 0 {
        // The first of a datagram's fragments: the rest follow by its IP ID.
        let id: u16 = ctx.load(l3 + IPV4_ID).map_err(|_| ())?;
        fragments::record(&datagram.key, id, &out);
    }
    rewrite(ctx, &datagram, &out)?;
    let port = out.listener_port;
    let payload = datagram.payload;
    let verdict = redirect(port, out.out_ifindex);
    if verdict == TC_ACT_SHOT as i32 {
        return Ok(verdict);
    }
    if out.to_client != 0 {
        count(port, |s| {
            s.datagrams_to_clients += 1;
            s.bytes_to_clients += payload;
        });
    } else {
        count(port, |s| {
            s.datagrams_from_clients += 1;
            s.bytes_from_clients += payload;
        });
    }
    Ok(verdict)
}

/// A client's first datagram (or the first after its flow ended): admits
/// it, picks an endpoint, claims a NAT port, writes both entries. Err: not
/// a listener's, or nothing to forward it to (passes to the stack, where the
/// relay counts and drops it); Ok(None): refused by the listener's policy
/// (dropped here, counted).
#[inline(always)]
fn new_flow(datagram: &Datagram, in_ifindex: u32, now: u64) -> Result<Option<*mut UdpFlowEntry>, ()> {
    let key = &datagram.key;
    let port = u32::from(key.dst_port);
    let listener = UDP_NAT_LISTENERS.get_ptr(&port).ok_or(())?;
    if UDP_NAT_NODE_ADDRS.get_ptr(&key.dst_addr).is_none() {
        return Err(());
    }
    // SAFETY: map value pointer, valid for this run.
    let listener = unsafe { *listener };
    if listener.slots == 0 || listener.slots > UDP_NAT_SLOTS_PER_LISTENER || listener.index >= UDP_NAT_MAX_LISTENERS {
        count(port, |s| s.dropped_no_endpoint += 1);
        return Err(());
    }
    if !admission::admits(&listener, port, key.src_addr) {
        return Ok(None);
    }
    let cursor = UDP_NAT_CURSOR.get_ptr_mut(listener.index).ok_or(())?;
    // SAFETY: this CPU's slot of the cursor array.
    let slot = unsafe {
        let at = *cursor % listener.slots;
        *cursor = at + 1;
        at
    };
    let endpoint = UDP_NAT_SLOTS.get(listener.index * UDP_NAT_SLOTS_PER_LISTENER + slot).ok_or(())?;
    let endpoint = *endpoint;
    let forward = UdpFlowEntry {
        out_src_addr: endpoint.node_addr,
        out_dst_addr: endpoint.addr,
        out_src_port: 0,
        out_dst_port: endpoint.port,
        out_ifindex: endpoint.ifindex,
        listener_port: port,
        to_client: 0,
        last_seen_ns: now,
        packets: 0,
        bytes: 0,
        created_ns: now,
    };
    let reply = UdpFlowEntry {
        out_src_addr: key.dst_addr,
        out_dst_addr: key.src_addr,
        out_src_port: key.dst_port,
        out_dst_port: key.src_port,
        out_ifindex: in_ifindex,
        listener_port: port,
        to_client: 1,
        last_seen_ns: now,
        packets: 0,
        bytes: 0,
        created_ns: now,
    };
    let mut claimed = 0u16;
    for _ in 0..4 {
        let nat_port = UDP_NAT_PORT_MIN + (unsafe { bpf_get_prandom_u32() } % UDP_NAT_PORT_COUNT) as u16;
        let reverse = UdpFlowKey { src_addr: endpoint.addr, dst_addr: endpoint.node_addr, src_port: endpoint.port, dst_port: nat_port };
        if UDP_NAT_FLOWS.insert(&reverse, &reply, BPF_NOEXIST as u64).is_ok() {
            claimed = nat_port;
            break;
        }
    }
    if claimed == 0 {
        count(port, |s| s.dropped_no_port += 1);
        return Err(());
    }
    let forward = UdpFlowEntry { out_src_port: claimed, ..forward };
    if UDP_NAT_FLOWS.insert(key, &forward, BPF_NOEXIST as u64).is_err() {
        // Another CPU created this flow at the same instant: its entries win.
        let reverse = UdpFlowKey { src_addr: endpoint.addr, dst_addr: endpoint.node_addr, src_port: endpoint.port, dst_port: claimed };
        let _ = UDP_NAT_FLOWS.remove(&reverse);
    } else {
        count(port, |s| s.flows_created += 1);
        admission::created(&listener);
    }
    UDP_NAT_FLOWS.get_ptr_mut(key).ok_or(()).map(Some)
}

/// Addresses and ports, with the IPv4 and UDP checksums.
#[inline(always)]
fn rewrite(ctx: &TcContext, datagram: &Datagram, out: &UdpFlowEntry) -> Result<(), ()> {
    let l3 = ETH_HLEN;
    let udp_checksum = datagram.l4 + UDP_CHECKSUM;
    let mangled = u64::from(BPF_F_MARK_MANGLED_0);
    for (field, new) in [(IPV4_SRC, out.out_src_addr), (IPV4_DST, out.out_dst_addr)] {
        let old: u32 = ctx.load(l3 + field).map_err(|_| ())?;
        let new = u32::from_ne_bytes(new);
        if old == new {
            continue;
        }
        ctx.store(l3 + field, &new, 0).map_err(|_| ())?;
        ctx.l3_csum_replace(l3 + IPV4_CHECKSUM, u64::from(old), u64::from(new), 4).map_err(|_| ())?;
        ctx.l4_csum_replace(udp_checksum, u64::from(old), u64::from(new), u64::from(BPF_F_PSEUDO_HDR) | mangled | 4).map_err(|_| ())?;
    }
    for (at, new) in [(datagram.l4, out.out_src_port), (datagram.l4 + 2, out.out_dst_port)] {
        let old: u16 = ctx.load(at).map_err(|_| ())?;
        let new = new.to_be();
        if old == new {
            continue;
        }
        ctx.store(at, &new, 0).map_err(|_| ())?;
        ctx.l4_csum_replace(udp_checksum, u64::from(old), u64::from(new), mangled | 2).map_err(|_| ())?;
    }
    Ok(())
}

/// Sends the rewritten packet out by `ifindex`, resolving the next hop.
#[inline(always)]
fn redirect(port: UdpListenerPort, ifindex: u32) -> i32 {
    // SAFETY: a helper call; null parameters ask it to resolve the next hop.
    let verdict = unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) };
    if verdict != TC_ACT_REDIRECT as i64 {
        count(port, |s| s.dropped_unroutable += 1);
        return TC_ACT_SHOT as i32;
    }
    verdict as i32
}

/// Rewrites the outer IPv4 source and destination (and the header's checksum only).
#[inline(always)]
fn rewrite_addresses(ctx: &TcContext, src: [u8; 4], dst: [u8; 4]) -> Result<(), ()> {
    let l3 = ETH_HLEN;
    for (field, new) in [(IPV4_SRC, src), (IPV4_DST, dst)] {
        let old: u32 = ctx.load(l3 + field).map_err(|_| ())?;
        let new = u32::from_ne_bytes(new);
        if old != new {
            ctx.store(l3 + field, &new, 0).map_err(|_| ())?;
            ctx.l3_csum_replace(l3 + IPV4_CHECKSUM, u64::from(old), u64::from(new), 4).map_err(|_| ())?;
        }
    }
    Ok(())
}

#[inline(always)]
fn count(port: UdpListenerPort, add: impl FnOnce(&mut UdpNatStats)) {
    match UDP_NAT_STATS.get_ptr_mut(&port) {
        // SAFETY: this CPU's slot, valid for this run.
        Some(stats) => add(unsafe { &mut *stats }),
        None => {
            let mut first = UdpNatStats::default();
            add(&mut first);
            let _ = UDP_NAT_STATS.insert(&port, &first, BPF_ANY as u64);
        }
    }
}
