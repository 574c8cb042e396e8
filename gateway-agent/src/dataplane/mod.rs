//! The data plane: listener sockets, connection set-up, and the data paths that
//! move the bytes after set-up (behind one trait, [`path::DataPath`]).
pub mod balancer;
pub mod copy;
pub mod kernel;
pub mod listeners;
pub mod path;
pub mod selftest;
pub mod sockets;
pub mod splice;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DataplaneMode {
    /// The fastest path that passes its start-up self-test, with eBPF listener maps when BPF is available.
    Auto,
    /// The in-kernel sockmap splice (not offered yet: see README, "Data paths").
    Ebpf,
    /// The best userspace path that passes its self-test (splice, else copy); no BPF is loaded.
    Userspace,
    /// splice(2) through pipes; refused if its self-test fails. No BPF is loaded.
    Splice,
    /// Plain read/write copy. No BPF is loaded.
    Copy,
}

/// What `select` decided, for the one start-up log line.
pub struct Selection {
    pub path: Arc<dyn path::DataPath>,
    pub kernel: Option<kernel::KernelListeners>,
    pub reason: String,
}

/// Chooses the data path for `mode`, proving it first, and loads what it needs.
pub async fn select(mode: DataplaneMode, pin_dir: &Path, cgroup: Option<&Path>) -> anyhow::Result<Selection> {
    let selection = |path: Arc<dyn path::DataPath>, reason: String| Selection { path, kernel: None, reason };
    match mode {
        DataplaneMode::Copy => Ok(selection(Arc::new(copy::CopyPath), "copy, as requested (no BPF loaded)".into())),
        DataplaneMode::Splice => {
            let started = Instant::now();
            selftest::verify(Arc::new(splice::SplicePath)).await.map_err(|e| anyhow::anyhow!("--dataplane splice: the self-test failed: {e:#}"))?;
            Ok(selection(Arc::new(splice::SplicePath), format!("splice, as requested; self-test passed in {:?} (no BPF loaded)", started.elapsed())))
        }
        DataplaneMode::Userspace => {
            let (path, why) = best_userspace().await;
            Ok(selection(path, format!("{why} (userspace requested: no BPF loaded)")))
        }
        DataplaneMode::Ebpf => bail!(
            "--dataplane ebpf: the in-kernel sockmap splice is not available in this version \
             (it corrupted streams on this kernel in probes and is not yet proven safe); use --dataplane auto or userspace"
        ),
        DataplaneMode::Auto => {
            let (path, why) = best_userspace().await;
            let loaded = match cgroup {
                Some(c) => Ok(c.to_path_buf()),
                None => kernel::own_cgroup(),
            }
            .and_then(|cgroup| kernel::KernelListeners::load(pin_dir, &cgroup));
            Ok(match loaded {
                Ok(k) => {
                    let reason = format!(
                        "{why}; the in-kernel sockmap splice is not offered (not proven safe on this kernel); \
                         eBPF listener maps pinned in {} and sock_ops attached to {}",
                        k.pin_dir().display(),
                        k.cgroup().display()
                    );
                    Selection { path, kernel: Some(k), reason }
                }
                Err(e) => selection(path, format!("{why}; eBPF listener maps unavailable: {e:#}")),
            })
        }
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
