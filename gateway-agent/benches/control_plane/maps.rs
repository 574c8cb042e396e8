//! The agent's kernel maps, loaded for the benchmark into a cgroup and a pin
//! directory of its own (so nothing else's sockets meet its programs), and
//! removed again on drop.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use gateway_agent::dataplane::kernel::{cgroup2_mount, KernelListeners};
use gateway_agent::model::config::DataplaneConfig;

pub struct Maps {
    kernel: Option<KernelListeners>,
    pin_dir: PathBuf,
    cgroup: PathBuf,
    // Last: the eBPF log forwarder the loader spawns lives on it, and goes after the maps.
    _runtime: tokio::runtime::Runtime,
}

impl Maps {
    /// Loads sockgate's eBPF object as the agent does (needs root and BPF).
    pub fn load(name: &str) -> Result<Maps> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let unique = format!("sockgate-bench-{name}-{}", std::process::id());
        let cgroup = cgroup2_mount()?.join(&unique);
        std::fs::create_dir(&cgroup).with_context(|| format!("creating cgroup {}", cgroup.display()))?;
        let mut maps = Maps {
            kernel: None,
            pin_dir: PathBuf::from("/sys/fs/bpf").join(&unique),
            cgroup,
            _runtime: runtime,
        };
        let _context = maps._runtime.enter();
        maps.kernel = Some(KernelListeners::load(&maps.pin_dir, &maps.cgroup).context("loading the agent's eBPF object (root and BPF needed)")?);
        Ok(maps)
    }

    /// Makes the maps hold `config`, as a diff (what the agent does on every change).
    pub fn sync(&mut self, config: &DataplaneConfig) -> Result<()> {
        self.kernel.as_mut().expect("loaded").sync(config)
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }
}

impl Drop for Maps {
    fn drop(&mut self) {
        if let Some(kernel) = self.kernel.take() {
            kernel.unpin();
        }
        let _ = std::fs::remove_dir(&self.pin_dir);
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}
