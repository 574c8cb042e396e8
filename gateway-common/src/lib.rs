//! Types that cross the user/kernel boundary through eBPF maps.
//!
//! Both sides compile this file: the eBPF crate for `bpfel-unknown-none`, the
//! agent for the host (with the `user` feature, which adds `aya::Pod`). Every
//! type is `#[repr(C)]` with explicit padding so the layout is the same on both
//! sides and `bpftool` can print it from BTF.
#![no_std]

/// Key of the `LISTENERS` and `LISTENER_STATS` maps: a listener's TCP port in
/// host byte order (the same number a Gateway's `listeners[].port` holds).
pub type ListenerPort = u32;

/// What the agent tells the kernel about a listener it serves.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerInfo {
    /// Entries of this listener in `BACKENDS` (indexes 0..backends).
    pub backends: u32,
    /// 1 when the listener currently has a route attached that gets traffic.
    pub routed: u32,
    /// Connections being forwarded now (the agent refreshes it every second or so).
    pub active: u32,
    /// The data path forwarding them: one of the `PATH_*` codes.
    pub path: u32,
}

/// `ListenerInfo::path` codes.
pub const PATH_COPY: u32 = 1;
pub const PATH_SPLICE: u32 = 2;

/// Key of the `BACKENDS` map: a listener port and a position in its route's endpoints.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct BackendKey {
    pub port: ListenerPort,
    pub index: u32,
}

/// One endpoint of the route serving a listener, as the agent picks from them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendEntry {
    /// IPv6 address, or IPv4-mapped (::ffff:a.b.c.d).
    pub addr: [u8; 16],
    pub port: u16,
    /// 1: this entry stands for a backendRef without endpoints, whose share is reset.
    pub reject: u16,
    /// The weight of the backendRef (shared equally by its endpoints).
    pub weight: u32,
    /// Which backendRef of the route (0-based) the endpoint belongs to.
    pub group: u32,
}

/// Counters the kernel keeps per listener port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerStats {
    /// TCP connections accepted on the listener port (passive opens that
    /// reached ESTABLISHED), counted by the sock_ops program.
    pub accepted: u64,
    /// TCP payload bytes from clients to the listener, and from the listener
    /// to clients, counted by the cgroup_skb programs (retransmissions included).
    pub bytes_from_clients: u64,
    pub bytes_to_clients: u64,
}

/// Names of the maps, pinned under `/sys/fs/bpf/sockgate/`.
pub const LISTENERS_MAP: &str = "LISTENERS";
pub const LISTENER_STATS_MAP: &str = "LISTENER_STATS";
pub const BACKENDS_MAP: &str = "BACKENDS";
/// Names of the programs in the object.
pub const SOCKOPS_PROGRAM: &str = "sockgate_sockops";
pub const INGRESS_PROGRAM: &str = "sockgate_ingress";
pub const EGRESS_PROGRAM: &str = "sockgate_egress";
/// Upper bound on listeners a node serves; the maps are sized for it.
pub const MAX_LISTENERS: u32 = 65_536;
/// Upper bound on endpoints across all listeners. Maps are created without
/// preallocation, so the bound costs nothing until used.
pub const MAX_BACKENDS: u32 = 1 << 20;
/// BPF_F_NO_PREALLOC: hash map memory grows with the entries, not the bound.
pub const NO_PREALLOC: u32 = 1;

// ---------------------------------------------------------------------------
// The XDP client-address filter (`sockgate_xdp_filter`): per listener port, an
// allow and a deny list of client CIDRs, enforced on the node's ingress
// interfaces before the TCP stack sees a packet.
// ---------------------------------------------------------------------------

/// The data of an `XDP_ALLOW` / `XDP_DENY` LPM-trie key: a listener port, then
/// a client address (IPv6, or IPv4 as IPv4-mapped `::ffff:a.b.c.d`).
///
/// The trie matches bits of this struct from its first byte, so an entry's
/// prefix length is [`CIDR_PORT_BITS`] (the whole port, always) plus the
/// address bits: 32 + 96 + n for an IPv4 /n, 32 + n for an IPv6 /n. The port
/// is in host byte order; as its bits are always matched whole, their order
/// in memory does not matter, and bpftool prints it as the number it is.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClientCidr {
    pub port: ListenerPort,
    pub addr: [u8; 16],
}

/// Prefix bits of an `XDP_ALLOW` / `XDP_DENY` key taken by the listener port.
pub const CIDR_PORT_BITS: u32 = 32;
/// Prefix length of the lookup key for one client address: port and all 128 address bits.
pub const CIDR_FULL_PREFIX: u32 = CIDR_PORT_BITS + 128;

/// The value of an `XDP_ALLOW` / `XDP_DENY` entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClientCidrEntry {
    /// 1: the addresses under this prefix are in the list. 0: they are not.
    /// A 0 entry sits at `::ffff:0:0/96` under an IPv6 prefix that covers the
    /// IPv4-mapped range (such as `::/0`): being the longer match for every
    /// IPv4 client, it keeps IPv6 CIDRs from matching IPv4 clients.
    pub listed: u32,
}

/// The value of `XDP_PORTS`, keyed by listener port: the port is filtered
/// exactly while it has an entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpPortFilter {
    /// CIDRs in the port's allow list; non-zero puts the allow list in force
    /// (a client matching none of them is dropped).
    pub allow_cidrs: u32,
    /// CIDRs in the port's deny list (for people reading the map: the program
    /// consults the deny trie of every filtered port whatever this says).
    pub deny_cidrs: u32,
}

/// A key of `XDP_NODE_ADDRS`: a destination address the filter applies to
/// (IPv4 as IPv4-mapped). Like a listening socket's address, the unspecified
/// addresses are wildcards: [`NODE_ANY_IPV4`] (`0.0.0.0`) stands for every
/// IPv4 destination, [`NODE_ANY`] (`::`) for every destination of either family.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeAddress {
    pub addr: [u8; 16],
}

/// `XDP_NODE_ADDRS` key meaning "every IPv4 destination" (`::ffff:0.0.0.0`).
pub const NODE_ANY_IPV4: NodeAddress = NodeAddress { addr: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0] };
/// `XDP_NODE_ADDRS` key meaning "every destination, IPv4 or IPv6" (`::`, like a dual-stack listener).
pub const NODE_ANY: NodeAddress = NodeAddress { addr: [0; 16] };

/// Per-port counters of the XDP filter (`XDP_STATS`, per CPU; readers sum the
/// CPUs' values). Only TCP packets to a filtered port on a node address count.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpPortStats {
    pub dropped_packets: u64,
    /// Bytes of the dropped frames as they arrived (link-layer header included).
    pub dropped_bytes: u64,
    pub passed_packets: u64,
    pub passed_bytes: u64,
}

/// Names of the XDP filter's maps (pinned under the pin directory) and program.
pub const XDP_ALLOW_MAP: &str = "XDP_ALLOW";
pub const XDP_DENY_MAP: &str = "XDP_DENY";
pub const XDP_PORTS_MAP: &str = "XDP_PORTS";
pub const XDP_NODE_ADDRS_MAP: &str = "XDP_NODE_ADDRS";
pub const XDP_STATS_MAP: &str = "XDP_STATS";
pub const XDP_FILTER_PROGRAM: &str = "sockgate_xdp_filter";
/// Upper bound on allow plus deny entries across all ports, per list map
/// (LPM tries are never preallocated: the bound costs nothing until used).
pub const MAX_CLIENT_CIDRS: u32 = 1 << 20;
/// Upper bound on node addresses the filter applies to.
pub const MAX_NODE_ADDRESSES: u32 = 4096;

#[cfg(feature = "user")]
mod user {
    // SAFETY: both types are repr(C), Copy, and have no padding holes
    // (4 × u32, 3 × u64), so any byte pattern of their size is a valid value.
    unsafe impl aya::Pod for super::ListenerInfo {}
    unsafe impl aya::Pod for super::ListenerStats {}
    // SAFETY: repr(C), Copy, no padding: u32+u32 and [u8;16]+u16+u16+u32+u32.
    unsafe impl aya::Pod for super::BackendKey {}
    unsafe impl aya::Pod for super::BackendEntry {}
    // SAFETY: repr(C), Copy, no padding: u32+[u8;16], u32, u32+u32, [u8;16], 4 × u64.
    unsafe impl aya::Pod for super::ClientCidr {}
    unsafe impl aya::Pod for super::ClientCidrEntry {}
    unsafe impl aya::Pod for super::XdpPortFilter {}
    unsafe impl aya::Pod for super::NodeAddress {}
    unsafe impl aya::Pod for super::XdpPortStats {}
}
