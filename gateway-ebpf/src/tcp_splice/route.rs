//! Sending a rewritten segment on its way: out of the interface the other
//! leg's own segments arrive on, to the next hop the node's routing table
//! gives for the new destination (`bpf_redirect_neigh` looks the route and
//! the neighbour up itself, as an output route: the node need not forward).
use aya_ebpf::{helpers::generated::bpf_redirect_neigh, programs::TcContext};
use gateway_common::FlowEntry;

use super::headers::Segment;

#[inline(always)]
pub fn forward(_ctx: &TcContext, _segment: &Segment, entry: &FlowEntry) -> Result<i32, ()> {
    if entry.out_ifindex == 0 {
        return Err(());
    }
    // SAFETY: a helper call; null parameters ask it to resolve the next hop.
    let verdict = unsafe { bpf_redirect_neigh(entry.out_ifindex, core::ptr::null_mut(), 0, 0) };
    if verdict == aya_ebpf::bindings::TC_ACT_REDIRECT as i64 {
        Ok(verdict as i32)
    } else {
        Err(())
    }
}
