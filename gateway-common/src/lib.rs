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

#[cfg(feature = "user")]
mod user {
    // SAFETY: both types are repr(C), Copy, and have no padding holes
    // (4 × u32, 3 × u64), so any byte pattern of their size is a valid value.
    unsafe impl aya::Pod for super::ListenerInfo {}
    unsafe impl aya::Pod for super::ListenerStats {}
    // SAFETY: repr(C), Copy, no padding: u32+u32 and [u8;16]+u16+u16+u32+u32.
    unsafe impl aya::Pod for super::BackendKey {}
    unsafe impl aya::Pod for super::BackendEntry {}
}
