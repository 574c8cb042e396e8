//! sockgate's eBPF programs.
//!
//! `sockgate_sockops` (cgroup sock_ops): counts connections accepted on every
//! listener port the agent serves, in `LISTENER_STATS`, so the kernel's view of
//! each listener is visible with `bpftool map dump name LISTENER_STATS`, and
//! says so through aya-log (debug level, in the agent's log).
//! `sockgate_ingress` / `sockgate_egress` (cgroup_skb): count the TCP payload
//! bytes each way between clients and each listener, in the same map.
#![no_std]
#![no_main]
// Atomic adds on map values (see `counter`).
#![feature(core_intrinsics)]
#![allow(internal_features)]

use aya_ebpf::{
    bindings::{BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, BPF_ANY},
    btf_maps::{HashMap, PerCpuHashMap},
    macros::{btf_map, cgroup_skb, sock_ops},
    programs::{SkBuffContext, SockOpsContext},
};
use aya_log_ebpf::debug;
use gateway_common::{BackendEntry, BackendKey, ListenerInfo, ListenerPort, ListenerStats, MAX_BACKENDS, MAX_LISTENERS, NO_PREALLOC};

/// Atomic adds for counters in shared (not per-CPU) map values.
mod counter;

/// `sockgate_xdp_filter`: per-listener client CIDR allow/deny lists, in XDP.
mod xdp_filter;

/// `sockgate_tcp_splice`: spliced TCP connections, rewritten and forwarded in TC.
mod tcp_splice;

/// `sockgate_udp_nat`: UDP listeners as a per-flow NAT in TC.
mod udp_nat;

// BTF map definitions (`.maps`): the kernel then knows the key and value
// types, and `bpftool map dump` prints their fields by name.
const MAX_LISTENERS_: usize = MAX_LISTENERS as usize;
const MAX_BACKENDS_: usize = MAX_BACKENDS as usize;
const NO_PREALLOC_: usize = NO_PREALLOC as usize;

/// Listener ports the agent serves (written by the agent).
#[btf_map]
static LISTENERS: HashMap<ListenerPort, ListenerInfo, MAX_LISTENERS_, NO_PREALLOC_> = HashMap::new();

/// Each listener's endpoints with their weights (written by the agent, for
/// inspection with bpftool; connection set-up picks in userspace).
#[btf_map]
static BACKENDS: HashMap<BackendKey, BackendEntry, MAX_BACKENDS_, NO_PREALLOC_> = HashMap::new();

/// Per-listener counters (written here, read by the agent and bpftool).
/// Per-CPU so increments need no atomics (the BPF target has no 64-bit
/// fetch_add in `core`); readers sum the CPUs' values.
#[btf_map]
static LISTENER_STATS: PerCpuHashMap<ListenerPort, ListenerStats, MAX_LISTENERS_, NO_PREALLOC_> = PerCpuHashMap::new();

#[sock_ops]
pub fn sockgate_sockops(ctx: SockOpsContext) -> u32 {
    if ctx.op() == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB {
        // local_port is in host byte order for sock_ops.
        let port: ListenerPort = ctx.local_port();
        // Only ports the agent serves: other sockets in the cgroup are not ours.
        if LISTENERS.get_ptr(&port).is_some() {
            count_accept(port);
            debug!(&ctx, "connection accepted on listener port {}", port);
        }
    }
    0
}

#[inline(always)]
fn count_accept(port: ListenerPort) {
    match LISTENER_STATS.get_ptr_mut(&port) {
        // SAFETY: the pointer comes from the lookup of this CPU's slot and is
        // valid for this program run; no other CPU writes this slot.
        Some(stats) => unsafe { (*stats).accepted += 1 },
        None => {
            let first = ListenerStats { accepted: 1, ..ListenerStats::default() };
            let _ = LISTENER_STATS.insert(&port, &first, BPF_ANY as u64);
        }
    }
}

/// Client → gateway payload on listener ports (cgroup ingress of the agent's sockets).
#[cgroup_skb(ingress)]
pub fn sockgate_ingress(ctx: SkBuffContext) -> i32 {
    count_bytes(&ctx, true);
    1 // always let the packet through: this program only counts
}

/// Gateway → client payload on listener ports (cgroup egress).
#[cgroup_skb(egress)]
pub fn sockgate_egress(ctx: SkBuffContext) -> i32 {
    count_bytes(&ctx, false);
    1
}

#[inline(always)]
fn count_bytes(ctx: &SkBuffContext, from_client: bool) {
    // The socket's local port: a listener port only on client-facing sockets
    // (backend-facing ones have ephemeral local ports).
    let port: ListenerPort = ctx.skb.local_port();
    if LISTENERS.get_ptr(&port).is_none() {
        return;
    }
    let payload = tcp_payload(ctx);
    if payload == 0 {
        return;
    }
    match LISTENER_STATS.get_ptr_mut(&port) {
        // SAFETY: this CPU's slot, valid for this program run.
        Some(stats) => unsafe {
            if from_client {
                (*stats).bytes_from_clients += payload;
            } else {
                (*stats).bytes_to_clients += payload;
            }
        },
        None => {
            let mut first = ListenerStats::default();
            if from_client {
                first.bytes_from_clients = payload;
            } else {
                first.bytes_to_clients = payload;
            }
            let _ = LISTENER_STATS.insert(&port, &first, BPF_ANY as u64);
        }
    }
}

/// TCP payload length of the packet: its length less the IP and TCP headers
/// (cgroup_skb data starts at the network header; a GSO packet carries one set).
#[inline(always)]
fn tcp_payload(ctx: &SkBuffContext) -> u64 {
    const AF_INET: u32 = 2;
    const AF_INET6: u32 = 10;
    let ip_header = match ctx.skb.family() {
        AF_INET => match ctx.load::<u8>(0) {
            Ok(version_ihl) => u64::from(version_ihl & 0x0f) * 4,
            Err(_) => return 0,
        },
        AF_INET6 => 40,
        _ => return 0,
    };
    let tcp_header = match ctx.load::<u8>(ip_header as usize + 12) {
        Ok(data_offset) => u64::from(data_offset >> 4) * 4,
        Err(_) => return 0,
    };
    u64::from(ctx.len()).saturating_sub(ip_header + tcp_header)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
