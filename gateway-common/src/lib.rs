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

// ---------------------------------------------------------------------------
// The kernel TCP splice (`sockgate_tcp_splice`, TC ingress on the node's
// interfaces): after the agent set a connection up, each of its two legs'
// 4-tuples has an entry in `FLOWS` that says how to rewrite a segment
// arriving on that leg into a segment of the other leg, and the program
// forwards it there. The node's TCP stack never sees the flow again.
// ---------------------------------------------------------------------------

/// A key of `FLOWS`: a segment's addresses and ports as it arrives at the node
/// (source = the peer, destination = the node). IPv4 as IPv4-mapped; ports in
/// host byte order, so bpftool prints the numbers a person expects.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
}

/// `FlowEntry::state`: segments of the leg pass to the node's stack; the
/// program only records the peer's timestamp (set-up, before a handover).
pub const FLOW_RECORD: u32 = 1;
/// Handover in progress: segments still reach the stack, and every segment
/// the gateway sends on the leg advertises a zero window (the TC egress
/// program), so the peer stops sending new data while the gateway's queues
/// drain.
pub const FLOW_HOLD: u32 = 2;
/// Spliced: every segment is rewritten to the other leg and forwarded.
pub const FLOW_SPLICED: u32 = 3;
/// The instant of the switch: as `FLOW_HOLD`, but segments carrying data,
/// SYN or FIN are dropped (pure ACKs and RSTs still reach the stack), so the
/// agent's last look at the queues and its reading of the sequence numbers
/// stay true until the splice takes over. A peer that sent before it saw the
/// zero window retransmits the dropped segment into the splice.
pub const FLOW_FREEZE: u32 = 4;

/// One leg of a spliced connection: how to translate a segment arriving on it
/// (written by the agent) and what the program saw of it (written by the program).
///
/// Sequence spaces: every field ending in `_delta` is added, modulo 2^32, to
/// the segment's field of that name. `seq_delta` maps this sender's sequence
/// numbers to the ones the other leg's receiver expects; `ack_delta` maps the
/// acknowledgement (and SACK block edges, which live in the same space).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEntry {
    pub state: u32,
    /// The listener port the connection came in on (for per-listener counters).
    pub listener_port: u32,
    /// The other leg's 4-tuple as its segments must carry it (source = node).
    pub out_src_addr: [u8; 16],
    pub out_dst_addr: [u8; 16],
    pub out_src_port: u16,
    pub out_dst_port: u16,
    pub seq_delta: u32,
    pub ack_delta: u32,
    pub tsval_delta: u32,
    pub tsecr_delta: u32,
    /// The window field arrives scaled by `window_shift_in` (this sender's
    /// scale) and leaves scaled by `window_shift_out` (the other receiver's
    /// view of the node's scale): `w' = min(65535, (w << in) >> out)`, which
    /// rounds down and so never offers more than the receiver did.
    pub window_shift_in: u8,
    pub window_shift_out: u8,
    /// 1 when the node's leg toward this sender is IPv6.
    pub ipv6: u8,
    pub _pad0: u8,
    /// The interface the other leg's segments leave by (written by the agent:
    /// the one that leg's own segments arrived on, as the program recorded).
    pub out_ifindex: u32,
    /// The interface this leg's segments arrive on (written by the program).
    pub in_ifindex: u32,
    /// Set by the agent: CLOCK_MONOTONIC nanoseconds at the handover (bpf_ktime_get_ns's clock).
    pub spliced_at_ns: u64,
    // --- written by the program ---
    /// Segments and TCP payload bytes forwarded from this sender.
    pub packets: u64,
    pub bytes: u64,
    /// Segments with data that arrived while in FLOW_HOLD (sent before the
    /// peer saw the zero window; the gateway delivered them).
    pub held_segments: u64,
    /// Segments that could not be forwarded (no route to the other leg).
    pub unroutable: u64,
    /// CLOCK_MONOTONIC nanoseconds of the last segment from this sender.
    pub last_seen_ns: u64,
    /// The last TSval this sender sent (valid when `ts_seen` is 1): the agent
    /// derives the timestamp offsets from it, so PAWS holds on both legs.
    pub peer_tsval: u32,
    pub ts_seen: u32,
    /// This sender's next sequence number after its last segment (seq + payload
    /// + FIN), and the last acknowledgement it sent, both untranslated: what a
    /// reset toward this sender must carry to be accepted.
    pub next_seq: u32,
    pub last_ack: u32,
    /// 1 once this sender sent a FIN / a RST.
    pub fin: u32,
    pub rst: u32,
    /// The window field of this sender's last segment, as sent (its own scale).
    pub peer_window: u32,
    /// Segments dropped because their TCP options are in a layout the
    /// program does not read (it rewrites timestamps and SACK blocks in the
    /// layout every common stack sends: NOP NOP TS, NOP NOP SACK).
    pub unreadable_options: u32,
    /// Segments dropped in FLOW_FREEZE (their senders retransmit them).
    pub frozen_drops: u32,
}

/// Per-listener totals of the kernel splice (`SPLICE_STATS`, per CPU; readers
/// sum the CPUs' values): segments and payload bytes each way.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpliceStats {
    pub packets_from_clients: u64,
    pub bytes_from_clients: u64,
    pub packets_to_clients: u64,
    pub bytes_to_clients: u64,
}

pub const FLOWS_MAP: &str = "FLOWS";
pub const SPLICE_STATS_MAP: &str = "SPLICE_STATS";
pub const TCP_SPLICE_PROGRAM: &str = "sockgate_tcp_splice";
pub const TCP_HOLD_PROGRAM: &str = "sockgate_tcp_hold";
/// Two entries per spliced connection: 2^18 entries hold 131,072 connections
/// (the goal is 100,000). Not preallocated: memory follows the entries
/// (about 200 bytes each with the key and the hash table's overhead, 50 MiB when full).
pub const MAX_FLOW_ENTRIES: u32 = 1 << 18;
/// `ListenerInfo::path` code of the kernel splice.
pub const PATH_KERNEL: u32 = 3;

// ---- The kernel UDP NAT (`sockgate_udp_nat`, gateway-ebpf/src/udp_nat) ----
// IPv4 only: a datagram of another family passes to the stack (the userspace relay).

/// Key of `UDP_NAT_FLOWS`: a datagram's 4-tuple as it arrives at the node.
/// Addresses in network byte order, ports in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UdpFlowKey {
    pub src_addr: [u8; 4],
    pub dst_addr: [u8; 4],
    pub src_port: u16,
    pub dst_port: u16,
}

/// What a datagram of a flow becomes. Two entries per flow: the client's
/// (`to_client` 0, keyed by client → listener) and the reply entry
/// (`to_client` 1, keyed by endpoint → node:nat_port).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpFlowEntry {
    pub out_src_addr: [u8; 4],
    pub out_dst_addr: [u8; 4],
    pub out_src_port: u16,
    pub out_dst_port: u16,
    /// Where the rewritten datagram leaves (`bpf_redirect_neigh`).
    pub out_ifindex: u32,
    pub listener_port: u32,
    pub to_client: u32,
    /// `bpf_ktime_get_ns` of its last datagram.
    pub last_seen_ns: u64,
    pub packets: u64,
    pub bytes: u64,
    /// `bpf_ktime_get_ns` of the flow's first datagram.
    pub created_ns: u64,
}

/// Key of `UDP_NAT_LISTENERS`: the listener's UDP port (host order).
pub type UdpListenerPort = u32;

/// A UDP listener the kernel serves (written by the agent).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpNatListener {
    /// Its row in `UDP_NAT_SLOTS` (slots `index * UDP_NAT_SLOTS_PER_LISTENER ..`) and in `UDP_NAT_CURSOR`.
    pub index: u32,
    /// Slots filled (by weight); 0: no endpoint, datagrams are dropped and counted.
    pub slots: u32,
    /// Flows idle this long are removed by the agent's sweep.
    pub idle_timeout_ns: u64,
    /// Flows the agent's sweep ended: idle, their endpoint left the route,
    /// their client no longer admitted by a changed policy.
    pub flows_expired: u64,
    pub flows_moved: u64,
    pub flows_denied: u64,
    /// Non-zero: the listener has an allow list (`UDP_NAT_ALLOW`), and a new
    /// flow of a client in none of its CIDRs is dropped.
    pub allow_cidrs: u32,
    /// ListenerPolicy maxConnections as a cap on live flows (0: none),
    /// against `UDP_NAT_LIVE[index]`.
    pub max_flows: u32,
}

/// Key data of `UDP_NAT_ALLOW` / `UDP_NAT_DENY` (LPM tries; the prefix
/// length counts the port's 32 bits first, then the address's).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpCidrKey {
    /// The listener port, big-endian, so the trie's first 32 bits match it whole.
    pub port: [u8; 4],
    pub addr: [u8; 4],
}

/// Key of `UDP_NAT_FRAGS`: an IPv4 datagram's identity as it arrives
/// (source, destination, IP ID), for its fragments after the first.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpFragKey {
    pub src_addr: [u8; 4],
    pub dst_addr: [u8; 4],
    pub id: u16,
    pub _pad: u16,
}

/// Where the first fragment of a datagram went: its later fragments get
/// the same addresses (they carry no UDP header) and leave by the same interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpFragEntry {
    pub out_src_addr: [u8; 4],
    pub out_dst_addr: [u8; 4],
    pub out_ifindex: u32,
    pub listener_port: u32,
}

/// One slot of a listener's pick table: an endpoint, the node's address on
/// the leg toward it and the interface that leg leaves by.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpNatEndpoint {
    pub addr: [u8; 4],
    pub node_addr: [u8; 4],
    pub port: u16,
    pub _pad: u16,
    pub ifindex: u32,
}

/// Per-listener counters of the kernel UDP NAT (`UDP_NAT_STATS`, per CPU).
/// Row 0 (no listener has port 0) counts what is not a listener's: IPv4
/// fragments to a node address (passed to the stack).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpNatStats {
    pub datagrams_from_clients: u64,
    pub bytes_from_clients: u64,
    pub datagrams_to_clients: u64,
    pub bytes_to_clients: u64,
    pub flows_created: u64,
    /// Datagrams dropped: no endpoint, no free NAT port, no route out.
    pub dropped_no_endpoint: u64,
    pub dropped_no_port: u64,
    pub dropped_unroutable: u64,
    /// Row 0: fragments after the first of a datagram the program did not
    /// see begin (its first fragment came later, or went elsewhere), passed
    /// to the stack, which cannot reassemble them into a listener's datagram.
    pub fragments_passed: u64,
    /// Fragments after the first, forwarded as their first fragment was.
    pub fragments_forwarded: u64,
    /// New flows dropped: the client is denied by the ListenerPolicy's
    /// clientCIDRs, or the listener holds its maxConnections flows.
    pub dropped_client_denied: u64,
    pub dropped_flow_limit: u64,
    /// ICMP errors about a flow's datagram (port unreachable, time exceeded,
    /// fragmentation needed...), translated and sent to the flow's other end.
    pub icmp_translated: u64,
}

pub const UDP_NAT_FLOWS_MAP: &str = "UDP_NAT_FLOWS";
pub const UDP_NAT_LISTENERS_MAP: &str = "UDP_NAT_LISTENERS";
pub const UDP_NAT_SLOTS_MAP: &str = "UDP_NAT_SLOTS";
pub const UDP_NAT_CURSOR_MAP: &str = "UDP_NAT_CURSOR";
pub const UDP_NAT_NODE_ADDRS_MAP: &str = "UDP_NAT_NODE_ADDRS";
pub const UDP_NAT_STATS_MAP: &str = "UDP_NAT_STATS";
pub const UDP_NAT_ALLOW_MAP: &str = "UDP_NAT_ALLOW";
pub const UDP_NAT_DENY_MAP: &str = "UDP_NAT_DENY";
pub const UDP_NAT_LIVE_MAP: &str = "UDP_NAT_LIVE";
pub const UDP_NAT_FRAGS_MAP: &str = "UDP_NAT_FRAGS";
/// CIDRs of all UDP listeners' allow (and, apart, deny) lists together.
pub const UDP_NAT_MAX_CIDRS: u32 = 16384;
/// Datagrams in flight as fragments at once (LRU: the oldest go first).
pub const UDP_NAT_MAX_FRAGMENTED: u32 = 8192;
pub const UDP_NAT_PROGRAM: &str = "sockgate_udp_nat";
pub const UDP_NAT_MAX_LISTENERS: u32 = 256;
pub const UDP_NAT_SLOTS_PER_LISTENER: u32 = 1024;
/// Entries of `UDP_NAT_FLOWS` as compiled, two per flow (the agent sizes it
/// at load: `--udp-nat-max-flows`). LRU: a flood of new 5-tuples evicts the
/// least recently used flows.
pub const UDP_NAT_MAX_FLOWS: u32 = 1 << 16;
/// NAT source ports toward endpoints: above Linux's default ephemeral range
/// (32768–60999), so no socket of the node that connect()s picks one.
pub const UDP_NAT_PORT_MIN: u16 = 61000;
pub const UDP_NAT_PORT_COUNT: u32 = 65536 - 61000;

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
    // SAFETY: repr(C), Copy; FlowKey is 16+16+2+2 bytes, FlowEntry's fields are
    // laid out with explicit padding (checked by the size test in the agent),
    // SpliceStats is 4 × u64.
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowEntry {}
    unsafe impl aya::Pod for super::SpliceStats {}
    // SAFETY: repr(C), Copy, no padding holes: UdpFlowKey 12 bytes, UdpFlowEntry
    // 24 bytes of u32/u16 fields then 4 × u64 (56), UdpNatListener 2 × u32 + 4 × u64
    // + 2 × u32 (48), UdpNatEndpoint 16 bytes with explicit padding, UdpNatStats
    // 13 × u64, UdpCidrKey 8 bytes, UdpFragKey 12 with explicit padding, UdpFragEntry 16.
    unsafe impl aya::Pod for super::UdpFlowKey {}
    unsafe impl aya::Pod for super::UdpFlowEntry {}
    unsafe impl aya::Pod for super::UdpNatListener {}
    unsafe impl aya::Pod for super::UdpNatEndpoint {}
    unsafe impl aya::Pod for super::UdpNatStats {}
    unsafe impl aya::Pod for super::UdpCidrKey {}
    unsafe impl aya::Pod for super::UdpFragKey {}
    unsafe impl aya::Pod for super::UdpFragEntry {}
}
