//! The data plane: listener sockets, connection set-up, and the data paths that
//! move the bytes after set-up (behind one trait, [`path::DataPath`]).
//!
//! The kernel path is [`kernel_splice`]: a TC program splices the two TCP
//! connections at the packet level after userspace set them up.
//!
//! # Why sockmap is not used on this kernel (6.18)
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
pub mod endpoint_load;
pub mod health_checks;
pub mod kernel;
pub mod kernel_splice;
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
pub mod udp_nat;
pub mod xdp;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DataplaneMode {
    /// The kernel TCP splice when it passes its start-up self-test here, else the best userspace path; with eBPF listener maps when BPF is available.
    Auto,
    /// The kernel TCP splice: set-up in userspace, then a TC program rewrites and forwards every segment; pairs it cannot take stay on splice(2).
    Ebpf,
    /// The best userspace path that passes its self-test (splice, else copy); no BPF is loaded.
    Userspace,
    /// splice(2) through pipes; refused if its self-test fails. No BPF is loaded.
    Splice,
    /// Plain read/write copy. No BPF is loaded.
    Copy,
}

/// Where the kernel splice keeps its maps and which interfaces it attaches to
/// (none: every interface that is up, but loopback).
#[derive(Clone, Debug, Default)]
pub struct KernelSpliceSettings {
    pub pin_dir: std::path::PathBuf,
    pub interfaces: Vec<String>,
    /// How long a connection runs on splice(2) before its handover.
    pub handover_after: std::time::Duration,
}

/// Chooses the data path for `mode`, proving it first; and why, for the log.
pub async fn select_path(mode: DataplaneMode, kernel: &KernelSpliceSettings) -> anyhow::Result<(Arc<dyn path::DataPath>, String)> {
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
        DataplaneMode::Ebpf => {
            // A named interface that does not exist is the operator's to fix:
            // refused, naming it. Anything else that stops the kernel path
            // (no BPF, a verifier, no bpffs at the pin directory, a failed
            // self-test) is this machine's: one line says why, and splice(2) serves.
            if let Some(missing) = missing_interface(kernel) {
                anyhow::bail!("--dataplane ebpf: the kernel TCP splice cannot run here: no interface {missing} (--splice-interface); use --dataplane auto or splice");
            }
            match kernel_path(kernel).await {
                Ok((path, why)) => Ok((path, format!("ebpf, as requested: {why}"))),
                Err(e) => {
                    let reason = format!("{e:#}");
                    tracing::error!(error = %reason, "--dataplane ebpf: the kernel TCP splice cannot run here; every connection is served on splice(2)");
                    let started = Instant::now();
                    selftest::verify(Arc::new(splice::SplicePath)).await.map_err(|e| anyhow::anyhow!("--dataplane ebpf: the kernel TCP splice cannot run ({reason}) and splice(2) failed its self-test: {e:#}"))?;
                    Ok((Arc::new(splice::SplicePath), format!("splice: the kernel TCP splice cannot run here ({reason}); splice(2)'s self-test passed in {:?}", started.elapsed())))
                }
            }
        }
        DataplaneMode::Auto => {
            if let Some(missing) = missing_interface(kernel) {
                anyhow::bail!("the kernel TCP splice cannot run here: no interface {missing} (--splice-interface)");
            }
            match kernel_path(kernel).await {
                Ok((path, why)) => Ok((path, format!("ebpf, chosen by auto: {why}"))),
                Err(e) => {
                    let reason = format!("{e:#}");
                    // Said once here; the requirement check at start has
                    // already named a missing capability or mount.
                    tracing::warn!(error = %reason, "auto: the kernel TCP splice cannot run here; a userspace path serves");
                    let (path, why) = best_userspace().await;
                    Ok((path, format!("{why}; not the kernel TCP splice: {reason}")))
                }
            }
        }
    }
}

fn missing_interface(kernel: &KernelSpliceSettings) -> Option<&String> {
    kernel.interfaces.iter().find(|name| !interface_exists(name))
}

/// The kernel splice loaded, attached and proven by its self-test (and the
/// splice(2) path it starts connections on and falls back to proven by its
/// own); and what runs, for the log. Err says what failed.
async fn kernel_path(kernel: &KernelSpliceSettings) -> anyhow::Result<(Arc<dyn path::DataPath>, String)> {
    let settings = kernel.clone();
    let handover_after = kernel.handover_after;
    let started = Instant::now();
    let kernel = tokio::task::spawn_blocking(move || -> anyhow::Result<kernel_splice::KernelSplice> {
        let kernel = kernel_splice::KernelSplice::load(&settings.pin_dir, &settings.interfaces)?;
        kernel_splice::selftest::verify(&kernel).context("its self-test failed")?;
        Ok(kernel)
    })
    .await??;
    selftest::verify(Arc::new(splice::SplicePath)).await.context("splice(2), which connections start on and fall back to, failed its self-test")?;
    let why = format!(
        "the kernel TCP splice on {} (self-tests passed in {:?}; maps pinned in {}; a connection is handed to the kernel once it has been open {:?}, the shorter ones and pairs it cannot take stay on splice(2), counted by reason)",
        kernel.interfaces().join(", "),
        started.elapsed(),
        kernel.pin_dir().display(),
        handover_after
    );
    Ok((Arc::new(kernel_splice::path::KernelPath::new(Arc::new(kernel), handover_after)), why))
}

fn interface_exists(name: &str) -> bool {
    let Ok(name) = std::ffi::CString::new(name) else { return false };
    // SAFETY: a NUL-terminated name; if_nametoindex only reads it.
    unsafe { libc::if_nametoindex(name.as_ptr()) != 0 }
}

/// Loads the eBPF listener maps and programs when `mode` wants them (auto, ebpf);
/// None, and why, otherwise or when BPF is unavailable (the agent serves anyway).
pub fn load_kernel(mode: DataplaneMode, pin_dir: &Path, cgroup: Option<&Path>) -> (Option<kernel::KernelListeners>, String) {
    if !matches!(mode, DataplaneMode::Auto | DataplaneMode::Ebpf) {
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
                "eBPF listener maps pinned in {} and sock_ops attached to {} (sockmap is not used: it corrupts or stalls streams on this kernel)",
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
