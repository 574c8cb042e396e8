//! `sockgate_tcp_splice` (TC ingress on the node's interfaces): the kernel
//! half of a spliced TCP connection.
//!
//! The agent accepts a client, connects to a backend and then hands the pair
//! over: it writes one `FLOWS` entry per leg, keyed by the 4-tuple its
//! segments arrive with. For a spliced leg this program rewrites every
//! segment into a segment of the other leg (addresses, ports, sequence and
//! acknowledgement numbers, window, timestamps, SACK edges; checksums updated
//! incrementally) and forwards it out of the interface the route to the other
//! peer says, so the node's TCP stack never sees it. The translation is an
//! affine map valid for the whole stream, so retransmissions and duplicates
//! pass through as harmlessly as they would between the two peers directly.
//!
//! Segments of a leg in `FLOW_RECORD` or `FLOW_HOLD` (the handover) pass to
//! the stack; in `FLOW_FREEZE` (the instant of the switch) those carrying
//! data, SYN or FIN are dropped, pure ACKs and RSTs pass. All three record
//! the peer's last TSval, window and interface for the agent.
//! Anything that is not TCP over IPv4/IPv6 without extension headers, or has
//! no entry, passes untouched.
mod headers;
mod rewrite;
mod route;

use aya_ebpf::{
    bindings::{__sk_buff, TC_ACT_OK, TC_ACT_SHOT, BPF_ANY},
    EbpfContext,
    btf_maps::{HashMap, PerCpuHashMap},
    helpers::bpf_ktime_get_ns,
    macros::{btf_map, classifier},
    programs::TcContext,
};
use gateway_common::{
    FlowEntry, FlowKey, ListenerPort, SpliceStats, FLOW_FREEZE, FLOW_HOLD, FLOW_SPLICED, MAX_FLOW_ENTRIES, MAX_LISTENERS,
    NO_PREALLOC,
};

use crate::counter;
use headers::{Segment, TCP_FIN, TCP_RST, TCP_SYN};

const MAX_FLOW_ENTRIES_: usize = MAX_FLOW_ENTRIES as usize;
const MAX_LISTENERS_: usize = MAX_LISTENERS as usize;
const NO_PREALLOC_: usize = NO_PREALLOC as usize;

/// One entry per leg of every connection being handed over or spliced.
#[btf_map]
static FLOWS: HashMap<FlowKey, FlowEntry, MAX_FLOW_ENTRIES_, NO_PREALLOC_> = HashMap::new();

/// Per-listener totals of what this program forwarded, per CPU.
#[btf_map]
static SPLICE_STATS: PerCpuHashMap<ListenerPort, SpliceStats, MAX_LISTENERS_, NO_PREALLOC_> = PerCpuHashMap::new();

#[classifier]
pub fn sockgate_tcp_splice(ctx: TcContext) -> i32 {
    match handle(&ctx) {
        Ok(verdict) => verdict,
        // Unparseable or not ours: the stack decides, as without this program.
        Err(()) => TC_ACT_OK as i32,
    }
}

fn handle(ctx: &TcContext) -> Result<i32, ()> {
    let segment = headers::parse(ctx)?;
    let entry = FLOWS.get_ptr_mut(&segment.key).ok_or(())?;
    // SAFETY: a pointer into the map's value for this run of the program; the
    // agent replaces whole values with map updates, never frees under us
    // (the kernel keeps an element alive for the program's RCU section).
    let entry = unsafe { &mut *entry };
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(tsval) = segment.tsval(ctx) {
        entry.peer_tsval = tsval;
        entry.ts_seen = 1;
    }
    entry.last_seen_ns = now;
    if let Ok(window) = ctx.load::<u16>(segment.l4 + headers::TCP_WINDOW) {
        entry.peer_window = u32::from(u16::from_be(window));
    }
    // SAFETY: the context pointer is the program's __sk_buff, readable for its run.
    entry.in_ifindex = unsafe { (*(ctx.as_ptr() as *const __sk_buff)).ingress_ifindex };
    match entry.state {
        FLOW_SPLICED => splice(ctx, &segment, entry),
        FLOW_HOLD => Ok(hold(&segment, entry)),
        FLOW_FREEZE => Ok(freeze(&segment, entry)),
        _ => Ok(TC_ACT_OK as i32),
    }
}

/// During the handover the peers are held back by a zero window (see
/// `sockgate_tcp_hold` below); what they had already sent still reaches the
/// sockets, which deliver it before the switch. Counted, for the handover's log.
fn hold(segment: &Segment, entry: &mut FlowEntry) -> i32 {
    if segment.payload > 0 || segment.flags & (TCP_SYN | TCP_FIN) != 0 {
        counter::add64(&mut entry.held_segments, 1);
    }
    TC_ACT_OK as i32
}

/// Between the agent's last look at the queues and the splice entry, nothing
/// may enter a socket's receive queue: it would be acknowledged by a socket
/// about to fall silent and never delivered. Dropped instead, for the sender
/// to retransmit into the splice. A RST passes: the agent checks the
/// sockets' state once the splice is in.
fn freeze(segment: &Segment, entry: &mut FlowEntry) -> i32 {
    if segment.payload > 0 || segment.flags & (TCP_SYN | TCP_FIN) != 0 {
        counter::add32(&mut entry.frozen_drops, 1);
        return TC_ACT_SHOT as i32;
    }
    TC_ACT_OK as i32
}

/// `sockgate_tcp_hold` (TC egress on the same interfaces): while a leg is in
/// `FLOW_HOLD` or `FLOW_FREEZE`, every segment the gateway's socket sends its peer advertises
/// a zero window, so the peer stops sending new data (it keeps acknowledging
/// ours, in pure ACKs) and the gateway's queues empty without dropping
/// anything. After the switch the peer learns the other peer's real window
/// from the first segment the splice forwards it.
#[classifier]
pub fn sockgate_tcp_hold(ctx: TcContext) -> i32 {
    let _ = close_window(&ctx);
    TC_ACT_OK as i32
}

fn close_window(ctx: &TcContext) -> Result<(), ()> {
    let segment = headers::parse(ctx)?;
    // The leg's entry is keyed by the peer's segments: the reverse of this one.
    let key = FlowKey { src_addr: segment.key.dst_addr, dst_addr: segment.key.src_addr, src_port: segment.key.dst_port, dst_port: segment.key.src_port };
    let entry = FLOWS.get_ptr(&key).ok_or(())?;
    // SAFETY: a map value pointer, valid for this run.
    let state = unsafe { (*entry).state };
    if state != FLOW_HOLD && state != FLOW_FREEZE {
        return Ok(());
    }
    rewrite::zero_window(ctx, &segment)
}

fn splice(ctx: &TcContext, segment: &Segment, entry: &mut FlowEntry) -> Result<i32, ()> {
    if !segment.options_readable {
        // Half-translated would be worse than lost: the sender retransmits.
        counter::add32(&mut entry.unreadable_options, 1);
        return Ok(TC_ACT_SHOT as i32);
    }
    // Recorded untranslated, before the rewrite: what a reset toward this
    // sender must carry (its own sequence space and its view of ours).
    let mut next_seq = segment.seq.wrapping_add(segment.payload);
    if segment.flags & (TCP_FIN | TCP_SYN) != 0 {
        next_seq = next_seq.wrapping_add(1);
    }
    // The agent starts both at the handover's values; they only move forward.
    if (next_seq.wrapping_sub(entry.next_seq) as i32) > 0 {
        entry.next_seq = next_seq;
    }
    if segment.has_ack() && (segment.ack.wrapping_sub(entry.last_ack) as i32) > 0 {
        entry.last_ack = segment.ack;
    }
    if segment.flags & TCP_FIN != 0 {
        entry.fin = 1;
    }
    if segment.flags & TCP_RST != 0 {
        entry.rst = 1;
    }
    rewrite::translate(ctx, segment, entry)?;
    counter::add64(&mut entry.packets, 1);
    counter::add64(&mut entry.bytes, u64::from(segment.payload));
    count(entry.listener_port, segment, entry.out_src_port as u32 == entry.listener_port);
    match route::forward(ctx, segment, entry) {
        Ok(verdict) => Ok(verdict),
        Err(()) => {
            // Rewritten already: handing it to the stack would be wrong, and the
            // sender retransmits once a route exists again.
            counter::add64(&mut entry.unroutable, 1);
            Ok(TC_ACT_SHOT as i32)
        }
    }
}

/// Per-listener totals. A segment leaving with the listener port as its
/// source goes to a client; any other segment of a flow came from one.
#[inline(always)]
fn count(port: ListenerPort, segment: &Segment, to_client: bool) {
    let payload = u64::from(segment.payload);
    match SPLICE_STATS.get_ptr_mut(&port) {
        // SAFETY: this CPU's slot, valid for this program run.
        Some(stats) => unsafe {
            if to_client {
                (*stats).packets_to_clients += 1;
                (*stats).bytes_to_clients += payload;
            } else {
                (*stats).packets_from_clients += 1;
                (*stats).bytes_from_clients += payload;
            }
        },
        None => {
            let mut first = SpliceStats::default();
            if to_client {
                first.packets_to_clients = 1;
                first.bytes_to_clients = payload;
            } else {
                first.packets_from_clients = 1;
                first.bytes_from_clients = payload;
            }
            let _ = SPLICE_STATS.insert(&port, &first, BPF_ANY as u64);
        }
    }
}
