//! A cgroup v2 of a test's own, so an eBPF program attached to it sees only the
//! sockets of the processes the test put there. Removed on drop.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::netns::unique_name;

pub struct Cgroup {
    pub path: PathBuf,
}

impl Cgroup {
    pub fn create() -> Result<Cgroup> {
        let mount = gateway_agent::dataplane::kernel::cgroup2_mount().context("cargo xtask setup mounts one")?;
        let path = mount.join(unique_name("sockgate-test"));
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Cgroup { path })
    }

    /// Makes `command`'s process join this cgroup before it runs (so every socket it opens belongs here).
    pub fn enroll(&self, command: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        let procs = self.path.join("cgroup.procs");
        // SAFETY: the closure only does open/write/close, fine between fork and exec.
        unsafe {
            command.pre_exec(move || std::fs::write(&procs, b"0"));
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Processes must be gone first; the test's Process guards drop before this one.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
