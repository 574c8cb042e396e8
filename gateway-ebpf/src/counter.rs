//! Counters in map values that more than one CPU may bump at once.
//!
//! A flow's segments can be handled on two CPUs at the same moment (each
//! direction's softirq runs where its sender's does), so a plain `+=` on a
//! shared hash map's value can lose counts. These compile to BPF atomic adds
//! (`lock *(u64 *)(r + off) += r`) whose result is unused, which every kernel
//! that runs these programs supports. (`AtomicU64::fetch_add` does not exist
//! for the BPF target: its target spec has no compare-and-swap, so the
//! intrinsic is called directly.) Per-CPU maps need none of this.
use core::intrinsics::{atomic_xadd, AtomicOrdering};

#[inline(always)]
pub fn add64(counter: &mut u64, n: u64) {
    // SAFETY: `counter` is a live, aligned u64 in a map value.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, n) };
}

#[inline(always)]
pub fn add32(counter: &mut u32, n: u32) {
    // SAFETY: as for add64.
    unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(counter, n) };
}
