//! sockgate's eBPF programs.
//!
//! `sockgate_sockops` (cgroup sock_ops): counts connections accepted on every
//! listener port the agent serves, in `LISTENER_STATS`, so the kernel's view of
//! each listener is visible with `bpftool map dump name LISTENER_STATS`.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, BPF_ANY},
    macros::{map, sock_ops},
    maps::{HashMap, PerCpuHashMap},
    programs::SockOpsContext,
};
use gateway_common::{ListenerInfo, ListenerPort, ListenerStats, MAX_LISTENERS};

/// Listener ports the agent serves (written by the agent).
#[map]
static LISTENERS: HashMap<ListenerPort, ListenerInfo> = HashMap::with_max_entries(MAX_LISTENERS, 0);

/// Per-listener counters (written here, read by the agent and bpftool).
/// Per-CPU so increments need no atomics (the BPF target has no 64-bit
/// fetch_add in `core`); readers sum the CPUs' values.
#[map]
static LISTENER_STATS: PerCpuHashMap<ListenerPort, ListenerStats> =
    PerCpuHashMap::with_max_entries(MAX_LISTENERS, 0);

#[sock_ops]
pub fn sockgate_sockops(ctx: SockOpsContext) -> u32 {
    if ctx.op() == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB {
        // local_port is in host byte order for sock_ops.
        let port: ListenerPort = ctx.local_port();
        // Only ports the agent serves: other sockets in the cgroup are not ours.
        if unsafe { LISTENERS.get(&port) }.is_some() {
            count_accept(port);
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
            let first = ListenerStats { accepted: 1 };
            let _ = LISTENER_STATS.insert(&port, &first, BPF_ANY as u64);
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
