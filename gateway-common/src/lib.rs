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
    /// Number of ready backend endpoints the listener's route resolves to now.
    pub backends: u32,
    /// 1 when the listener currently has a route attached that gets traffic.
    pub routed: u32,
}

/// Counters the kernel keeps per listener port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerStats {
    /// TCP connections accepted on the listener port (passive opens that
    /// reached ESTABLISHED), counted by the sock_ops program.
    pub accepted: u64,
}

/// Names of the maps, pinned under `/sys/fs/bpf/sockgate/`.
pub const LISTENERS_MAP: &str = "LISTENERS";
pub const LISTENER_STATS_MAP: &str = "LISTENER_STATS";
/// Name of the sock_ops program in the object.
pub const SOCKOPS_PROGRAM: &str = "sockgate_sockops";
/// Upper bound on listeners a node serves; the maps are sized for it.
pub const MAX_LISTENERS: u32 = 65_536;

#[cfg(feature = "user")]
mod user {
    // SAFETY: both types are repr(C), Copy, and have no padding holes
    // (u32+u32, u64), so any byte pattern of their size is a valid value.
    unsafe impl aya::Pod for super::ListenerInfo {}
    unsafe impl aya::Pod for super::ListenerStats {}
}
