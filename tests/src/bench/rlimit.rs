//! File descriptor limits. The bench holds the client ends of up to 10,000
//! idle connections; it raises its own soft limit to the hard one (and beyond,
//! up to /proc/sys/fs/nr_open, where the kernel lets it: that takes
//! CAP_SYS_RESOURCE). The programs it measures (the agent, HAProxy, nginx)
//! and the load tools start with the limit the machine gave the bench, as
//! they would when deployed: each copes with it in its own way (HAProxy and
//! nginx raise theirs as far as their configuration asks and the kernel
//! allows), and the report says when one cannot hold the connections.
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Result};

static INHERITED: OnceLock<libc::rlimit> = OnceLock::new();

/// More than the bench ever needs.
const WANTED: u64 = 1 << 18;

fn get() -> Result<libc::rlimit> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit fills the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        bail!("getrlimit(RLIMIT_NOFILE): {}", std::io::Error::last_os_error());
    }
    Ok(limit)
}

fn set(soft: u64, hard: u64) -> bool {
    // SAFETY: setrlimit reads the struct we pass.
    unsafe {
        libc::setrlimit(
            libc::RLIMIT_NOFILE,
            &libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            },
        ) == 0
    }
}

/// Remembers the limit this process was given, raises its own as far as the
/// kernel allows, and returns the soft limit it now has.
pub fn raise_own() -> Result<u64> {
    let inherited = *INHERITED.get_or_init(|| {
        get().unwrap_or(libc::rlimit {
            rlim_cur: 1024,
            rlim_max: 4096,
        })
    });
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(WANTED);
    let beyond = WANTED.min(nr_open);
    if beyond > inherited.rlim_max && set(beyond, beyond) {
        return Ok(beyond);
    }
    if !set(inherited.rlim_max, inherited.rlim_max) {
        bail!(
            "raising RLIMIT_NOFILE to its hard limit {}: {}",
            inherited.rlim_max,
            std::io::Error::last_os_error()
        );
    }
    Ok(inherited.rlim_max)
}

/// The limit the machine gave the bench (soft, hard): what the programs it starts get.
pub fn inherited() -> (u64, u64) {
    let l = INHERITED
        .get()
        .copied()
        .unwrap_or_else(|| get().unwrap_or(libc::rlimit { rlim_cur: 0, rlim_max: 0 }));
    (l.rlim_cur, l.rlim_max)
}

/// Whether this process may raise a hard limit (CAP_SYS_RESOURCE), for the report.
pub fn can_raise_hard_limits() -> bool {
    gateway_agent::requirements::effective_capabilities() & (1 << 24) != 0
}

/// Makes `command` start with the limit the machine gave the bench, not the raised one.
pub fn as_inherited(command: &mut Command) {
    let Some(limit) = INHERITED.get().copied() else { return };
    // SAFETY: only setrlimit(2), async-signal-safe, between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
