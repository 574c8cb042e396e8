//! The data plane: listener sockets, connection set-up, and the data paths that
//! move the bytes after set-up (behind one trait, [`path::DataPath`]).
pub mod balancer;
pub mod copy;
pub mod kernel;
pub mod listeners;
pub mod path;
pub mod sockets;

use std::path::Path;
use std::sync::Arc;

use anyhow::bail;
use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DataplaneMode {
    /// The fastest path proven safe on this kernel, with eBPF listener maps when BPF is available.
    Auto,
    /// The in-kernel sockmap splice (not in this version: see README, "Data paths").
    Ebpf,
    /// Userspace only: no BPF is loaded.
    Userspace,
}

/// What `select` decided, for the one start-up log line.
pub struct Selection {
    pub path: Arc<dyn path::DataPath>,
    pub kernel: Option<kernel::KernelListeners>,
    pub reason: String,
}

/// Chooses the data path for `mode` and loads what it needs.
pub fn select(mode: DataplaneMode, pin_dir: &Path, cgroup: Option<&Path>) -> anyhow::Result<Selection> {
    let copy: Arc<dyn path::DataPath> = Arc::new(copy::CopyPath);
    match mode {
        DataplaneMode::Userspace => Ok(Selection { path: copy, kernel: None, reason: "userspace copy, as requested (no BPF loaded)".into() }),
        DataplaneMode::Ebpf => bail!(
            "--dataplane ebpf: the in-kernel sockmap splice is not available in this version \
             (it corrupted streams on this kernel in probes and is not yet proven safe); use --dataplane auto or userspace"
        ),
        DataplaneMode::Auto => {
            let loaded = match cgroup {
                Some(c) => Ok(c.to_path_buf()),
                None => kernel::own_cgroup(),
            }
            .and_then(|cgroup| kernel::KernelListeners::load(pin_dir, &cgroup));
            match loaded {
                Ok(k) => {
                    let reason = format!(
                        "userspace copy (auto: no in-kernel splice is proven safe in this version); \
                         eBPF listener maps pinned in {} and sock_ops attached to {}",
                        k.pin_dir().display(),
                        k.cgroup().display()
                    );
                    Ok(Selection { path: copy, kernel: Some(k), reason })
                }
                Err(e) => Ok(Selection {
                    path: copy,
                    kernel: None,
                    reason: format!("userspace copy (auto); eBPF listener maps unavailable: {e:#}"),
                }),
            }
        }
    }
}
