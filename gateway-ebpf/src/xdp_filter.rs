//! `sockgate_xdp_filter` (XDP, on the node's ingress interfaces): per listener
//! port, drops the packets of clients the port's deny list matches, or that
//! its allow list (when it has one) does not, before the TCP stack sees them.
//!
//! Only TCP packets to a filtered port (`XDP_PORTS`) on a node address
//! (`XDP_NODE_ADDRS`) are judged; everything else passes untouched: other
//! protocols, other ports, non-first fragments (they carry no ports; without
//! their first fragment, which is judged, they never reassemble), packets too
//! short or malformed to parse, IPv6 packets with more than
//! `MAX_IPV6_EXTENSIONS` extension headers or an unparsed one (AH, ESP...).
//!
//! Verdict for a judged packet, client address `a` on port `p`:
//! drop if `a` is in p's deny list; else drop if p has an allow list and `a`
//! is not in it; else pass. Deny wins over allow; no lists, no filtering.
//! "In a list" is the longest-prefix match in the list's LPM trie, keyed by
//! (port, address) with IPv4 as IPv4-mapped IPv6, whose entry says `listed`.
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    btf_maps::{lpm_trie::Key, HashMap, LpmTrie, PerCpuHashMap},
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use gateway_common::{
    ClientCidr, ClientCidrEntry, ListenerPort, NodeAddress, XdpPortFilter, XdpPortStats,
    CIDR_FULL_PREFIX, MAX_CLIENT_CIDRS, MAX_LISTENERS, MAX_NODE_ADDRESSES, NODE_ANY, NODE_ANY_IPV4,
    NO_PREALLOC,
};

const MAX_CLIENT_CIDRS_: usize = MAX_CLIENT_CIDRS as usize;
const MAX_LISTENERS_: usize = MAX_LISTENERS as usize;
const MAX_NODE_ADDRESSES_: usize = MAX_NODE_ADDRESSES as usize;
const NO_PREALLOC_: usize = NO_PREALLOC as usize;

/// Allow lists, all ports in one trie (the port is the key's first 32 bits).
/// LPM tries are never preallocated (the map type's default flags).
#[btf_map]
static XDP_ALLOW: LpmTrie<ClientCidr, ClientCidrEntry, MAX_CLIENT_CIDRS_> = LpmTrie::new();

/// Deny lists, keyed like `XDP_ALLOW`.
#[btf_map]
static XDP_DENY: LpmTrie<ClientCidr, ClientCidrEntry, MAX_CLIENT_CIDRS_> = LpmTrie::new();

/// The filtered ports and whether each has an allow list, a deny list.
#[btf_map]
static XDP_PORTS: HashMap<ListenerPort, XdpPortFilter, MAX_LISTENERS_, NO_PREALLOC_> =
    HashMap::new();

/// Destination addresses the filter applies to (wildcards: see `NodeAddress`).
#[btf_map]
static XDP_NODE_ADDRS: HashMap<NodeAddress, u32, MAX_NODE_ADDRESSES_, NO_PREALLOC_> =
    HashMap::new();

/// Dropped and passed packets and bytes per filtered port, per CPU. The agent
/// creates a port's entry before filtering it and removes it after: this
/// program only updates existing entries, so it never resurrects a removed one.
#[btf_map]
static XDP_STATS: PerCpuHashMap<ListenerPort, XdpPortStats, MAX_LISTENERS_, NO_PREALLOC_> =
    PerCpuHashMap::new();

const ETH_HLEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_TCP: u8 = 6;
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DEST_OPTIONS: u8 = 60;
/// Extension headers walked before the TCP header; a legitimate packet has at
/// most a few (hop-by-hop, destination options, routing, fragment).
const MAX_IPV6_EXTENSIONS: usize = 4;

#[xdp]
pub fn sockgate_xdp_filter(ctx: XdpContext) -> u32 {
    match judge(&ctx) {
        Some(true) => XDP_DROP,
        _ => XDP_PASS,
    }
}

/// A TCP packet's client address, the destination address and port.
struct Flow {
    client: [u8; 16],
    destination: [u8; 16],
    port: u16,
    ipv4: bool,
}

/// Some(true): drop. Some(false) or None (not ours to judge): pass.
#[inline(always)]
fn judge(ctx: &XdpContext) -> Option<bool> {
    let flow = parse(ctx)?;
    let port = ListenerPort::from(flow.port);
    // SAFETY: a copy is taken at once; the agent replaces values whole.
    let filter = unsafe { *XDP_PORTS.get_ptr(&port)? };
    if !is_node_address(&flow.destination, flow.ipv4) {
        return None;
    }
    let key = Key::new(
        CIDR_FULL_PREFIX,
        ClientCidr {
            port,
            addr: flow.client,
        },
    );
    // The deny trie is consulted even when the port's deny list is empty: a
    // flag skipping it would retire old deny entries the moment a port's
    // settings switch, before its allow list is narrowed (see the agent's plan.rs).
    let drop =
        listed(XDP_DENY.get(&key)) || (filter.allow_cidrs != 0 && !listed(XDP_ALLOW.get(&key)));
    count(port, drop, (ctx.data_end() - ctx.data()) as u64);
    Some(drop)
}

#[inline(always)]
fn listed(entry: Option<&ClientCidrEntry>) -> bool {
    matches!(entry, Some(e) if e.listed != 0)
}

#[inline(always)]
fn is_node_address(destination: &[u8; 16], ipv4: bool) -> bool {
    let exact = NodeAddress { addr: *destination };
    XDP_NODE_ADDRS.get_ptr(&exact).is_some()
        || (ipv4 && XDP_NODE_ADDRS.get_ptr(&NODE_ANY_IPV4).is_some())
        || XDP_NODE_ADDRS.get_ptr(&NODE_ANY).is_some()
}

#[inline(always)]
fn count(port: ListenerPort, dropped: bool, bytes: u64) {
    let Some(stats) = XDP_STATS.get_ptr_mut(&port) else {
        return;
    };
    // SAFETY: this CPU's slot of an existing entry, valid for this program run;
    // no other CPU writes it.
    unsafe {
        if dropped {
            (*stats).dropped_packets += 1;
            (*stats).dropped_bytes += bytes;
        } else {
            (*stats).passed_packets += 1;
            (*stats).passed_bytes += bytes;
        }
    }
}

/// A pointer to a `T` at `offset` bytes into the packet, if the packet holds it
/// whole (the bounds check the verifier requires before every access).
#[inline(always)]
fn at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    if start + offset + core::mem::size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + offset) as *const T)
}

#[inline(always)]
fn byte(ctx: &XdpContext, offset: usize) -> Option<u8> {
    // SAFETY: `at` checked the byte lies inside the packet.
    Some(unsafe { *at::<u8>(ctx, offset)? })
}

#[inline(always)]
fn be16(ctx: &XdpContext, offset: usize) -> Option<u16> {
    // SAFETY: `at` checked both bytes lie inside the packet.
    let bytes = unsafe { at::<[u8; 2]>(ctx, offset)?.read_unaligned() };
    Some(u16::from_be_bytes(bytes))
}

#[inline(always)]
fn parse(ctx: &XdpContext) -> Option<Flow> {
    let mut ethertype = be16(ctx, 12)?;
    let mut l3 = ETH_HLEN;
    // Up to two VLAN tags (802.1ad outer, 802.1Q inner) when the NIC left them in.
    if ethertype == ETH_P_8021AD || ethertype == ETH_P_8021Q {
        ethertype = be16(ctx, l3 + 2)?;
        l3 += 4;
        if ethertype == ETH_P_8021Q {
            ethertype = be16(ctx, l3 + 2)?;
            l3 += 4;
        }
    }
    match ethertype {
        ETH_P_IPV4 => parse_ipv4(ctx, l3),
        ETH_P_IPV6 => parse_ipv6(ctx, l3),
        _ => None,
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, l3: usize) -> Option<Flow> {
    let version_ihl = byte(ctx, l3)?;
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4 || header_len < 20 {
        return None;
    }
    // Fragment offset non-zero: a later fragment, without ports.
    if be16(ctx, l3 + 6)? & 0x1fff != 0 || byte(ctx, l3 + 9)? != IPPROTO_TCP {
        return None;
    }
    // SAFETY: `at` checked the 8 address bytes lie inside the packet.
    let addresses = unsafe { at::<[u8; 8]>(ctx, l3 + 12)?.read_unaligned() };
    let port = be16(ctx, l3 + header_len + 2)?;
    let mapped = |a: &[u8]| {
        [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
        ]
    };
    Some(Flow {
        client: mapped(&addresses[0..4]),
        destination: mapped(&addresses[4..8]),
        port,
        ipv4: true,
    })
}

#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, l3: usize) -> Option<Flow> {
    if byte(ctx, l3)? >> 4 != 6 {
        return None;
    }
    let mut next = byte(ctx, l3 + 6)?;
    // SAFETY: `at` checked the 32 address bytes lie inside the packet.
    let addresses = unsafe { at::<[[u8; 16]; 2]>(ctx, l3 + 8)?.read_unaligned() };
    let mut offset = l3 + 40;
    for _ in 0..MAX_IPV6_EXTENSIONS {
        if next == IPPROTO_TCP {
            break;
        }
        if next != IPV6_HOP_BY_HOP
            && next != IPV6_ROUTING
            && next != IPV6_DEST_OPTIONS
            && next != IPV6_FRAGMENT
        {
            return None;
        }
        // Every extension header starts with next-header and a length byte
        // and is at least 8 bytes long.
        // SAFETY: `at` checked the 8 bytes lie inside the packet.
        let header = unsafe { at::<[u8; 8]>(ctx, offset)?.read_unaligned() };
        let length = if next == IPV6_FRAGMENT {
            // Fragment offset non-zero: a later fragment, without ports.
            if u16::from_be_bytes([header[2], header[3]]) & 0xfff8 != 0 {
                return None;
            }
            8
        } else {
            (usize::from(header[1]) + 1) * 8
        };
        next = header[0];
        offset += length;
    }
    if next != IPPROTO_TCP {
        return None;
    }
    let port = be16(ctx, offset + 2)?;
    Some(Flow {
        client: addresses[0],
        destination: addresses[1],
        port,
        ipv4: false,
    })
}
