//! The data plane: listener sockets, connection set-up, and the data paths that
//! move the bytes after set-up (behind one trait, [`path::DataPath`]).
//!
//! # Why the in-kernel sockmap splice is not offered on this kernel (6.18)
//!
//! Reproduced with `cargo xtask sockmap-repro` (tools/sockmap-repro/README.md
//! has the evidence): a proxy whose sockets sit in a SOCKHASH with an sk_skb
//! verdict program redirecting each skb to the peer (`bpf_sk_redirect_hash`,
//! egress) corrupted 12 of 139 transfers of 1 GiB each way on loopback; copy
//! (0/37) and splice(2) (0/43) never did. The verdict program itself saw the
//! duplicate bytes: one skb whose first 65,483 bytes it had already forwarded,
//! the stream then shifted by exactly one (or two) segments. The cause is on
//! the receive side, not in the egress backlog: a retransmitted segment that
//! partly overlaps data already received is queued untrimmed; `tcp_recvmsg`
//! skips the overlap, but `tcp_read_skb` (which feeds a verdict program that
//! has no stream parser) hands the whole skb over, so the overlap is forwarded
//! twice. Every run showed tens of such retransmissions (zero-window periods,
//! reordering across CPUs). Adding a stream parser (the `tcp_read_sock` path,
//! which honours the offset) stopped the corruption (0 of 230) but stalled the
//! tail of the stream in 6 of 236 full-speed runs until the sender sent more:
//! a request/response connection would hang. sk_msg is clean but only sees
//! local senders, and sockgate's clients and backends are remote. So no use of
//! sockmap is safe for a TCP proxy here, and `auto` picks the fastest path that
//! is: splice(2), which matched sockmap's throughput in the same runs (~0.75
//! GiB/s per direction).
pub mod balancer;
pub mod connections;
pub mod copy;
pub mod kernel;
pub mod listeners;
pub mod outliers;
pub mod path;
pub mod proxy_io;
#[cfg(test)]
mod pause_tests;
pub mod selftest;
pub mod sockets;
pub mod splice;
pub mod udp;
pub mod xdp;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DataplaneMode {
    /// The fastest path that passes its start-up self-test, with eBPF listener maps when BPF is available.
    Auto,
    /// The in-kernel sockmap splice: refused, no use of it is safe on this kernel (see above).
    Ebpf,
    /// The best userspace path that passes its self-test (splice, else copy); no BPF is loaded.
    Userspace,
    /// splice(2) through pipes; refused if its self-test fails. No BPF is loaded.
    Splice,
    /// Plain read/write copy. No BPF is loaded.
    Copy,
}

/// Chooses the data path for `mode`, proving it first; and why, for the log.
pub async fn select_path(mode: DataplaneMode) -> anyhow::Result<(Arc<dyn path::DataPath>, String)> {
    match mode {
        DataplaneMode::Copy => Ok((Arc::new(copy::CopyPath), "copy, as requested (no BPF loaded)".into())),
        DataplaneMode::Splice => {
            let started = Instant::now();
            selftest::verify(Arc::new(splice::SplicePath)).await.map_err(|e| anyhow::anyhow!("--dataplane splice: the self-test failed: {e:#}"))?;
            Ok((Arc::new(splice::SplicePath), format!("splice, as requested; self-test passed in {:?} (no BPF loaded)", started.elapsed())))
        }
        DataplaneMode::Userspace => {
            let (path, why) = best_userspace().await;
            Ok((path, format!("{why} (userspace requested: no BPF loaded)")))
        }
        DataplaneMode::Ebpf => bail!(
            "--dataplane ebpf: the in-kernel sockmap splice is not available: on this kernel a verdict program \
             forwards overlapping TCP retransmissions twice (12 of 139 GiB transfers corrupted; `cargo xtask sockmap-repro`), \
             and with a stream parser stream tails stall; use --dataplane auto (splice) or userspace"
        ),
        DataplaneMode::Auto => Ok(best_userspace().await),
    }
}

/// Loads the eBPF listener maps and programs when `mode` wants them (auto);
/// None, and why, otherwise or when BPF is unavailable (the agent serves anyway).
pub fn load_kernel(mode: DataplaneMode, pin_dir: &Path, cgroup: Option<&Path>) -> (Option<kernel::KernelListeners>, String) {
    if mode != DataplaneMode::Auto {
        return (None, String::new());
    }
    let loaded = match cgroup {
        Some(c) => Ok(c.to_path_buf()),
        None => kernel::own_cgroup(),
    }
    .and_then(|cgroup| kernel::KernelListeners::load(pin_dir, &cgroup));
    match loaded {
        Ok(k) => {
            let why = format!(
                "the in-kernel sockmap splice is not offered (it corrupts or stalls streams on this kernel); \
                 eBPF listener maps pinned in {} and sock_ops attached to {}",
                k.pin_dir().display(),
                k.cgroup().display()
            );
            (Some(k), why)
        }
        Err(e) => (None, format!("eBPF listener maps unavailable: {e:#}")),
    }
}

/// splice(2) when it passes its self-test on this kernel, else the copy path; and why.
async fn best_userspace() -> (Arc<dyn path::DataPath>, String) {
    let started = Instant::now();
    match selftest::verify(Arc::new(splice::SplicePath)).await {
        Ok(()) => (Arc::new(splice::SplicePath), format!("splice (zero-copy through pipes; its self-test passed in {:?})", started.elapsed())),
        Err(e) => (Arc::new(copy::CopyPath), format!("copy (splice failed its self-test: {e:#})")),
    }
}
