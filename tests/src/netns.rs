//! Network namespaces that delete themselves.
use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other namespace of this machine has: prefix, pid and a counter.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Runs a command, failing with its stderr when it fails.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program).args(args).stdin(Stdio::null()).output().with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!("{program} {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace, deleted (with every process still in it) on drop.
#[derive(Debug)]
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn create(prefix: &str) -> Result<NetNs> {
        let name = unique_name(prefix);
        run("ip", &["netns", "add", &name])?;
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// A command that will run inside the namespace. Only the network namespace
    /// changes (setns before exec): unlike `ip netns exec`, which remounts /sys,
    /// the program still sees bpffs and the cgroup mounts.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(program);
        match File::open(self.path()) {
            Ok(file) => {
                // SAFETY: the closure only calls setns(2), async-signal-safe, in the child.
                unsafe {
                    c.pre_exec(move || {
                        if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            }
            Err(e) => {
                // Make the spawn fail with the reason rather than run in the wrong namespace.
                let message = format!("opening {}: {e}", self.path());
                unsafe { c.pre_exec(move || Err(std::io::Error::other(message.clone()))) };
            }
        }
        c
    }

    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// Runs `f` on a thread that entered this namespace, so sockets it creates
    /// live there (a socket keeps its namespace for life, whoever uses it).
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let path = self.path();
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        std::thread::spawn(move || {
            // SAFETY: setns on this thread only, with a valid namespace fd.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(anyhow::anyhow!("setns: {}", std::io::Error::last_os_error()));
            }
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in namespace panicked"))?
    }

    /// As `enter`, without waiting: `f` runs on its own thread in this namespace.
    pub fn spawn<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<std::thread::JoinHandle<T>> {
        let path = self.path();
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        Ok(std::thread::spawn(move || {
            // SAFETY: setns on this thread only, with a valid namespace fd.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                panic!("setns: {}", std::io::Error::last_os_error());
            }
            f()
        }))
    }

    fn kill_processes(&self) {
        if let Ok(pids) = run("ip", &["netns", "pids", &self.name]) {
            for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
                // SAFETY: plain kill(2).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        self.kill_processes();
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// Connects two namespaces with a veth pair and gives each end an address (CIDR).
pub fn link(a: &NetNs, a_addr: &str, b: &NetNs, b_addr: &str) -> Result<()> {
    // Short fixed names: each end lives in its own namespace, so they cannot clash.
    let (a_if, b_if) = (format!("to-{}", tail(&b.name)), format!("to-{}", tail(&a.name)));
    run("ip", &["link", "add", &a_if, "netns", &a.name, "type", "veth", "peer", "name", &b_if, "netns", &b.name])?;
    a.ip(&["addr", "add", a_addr, "dev", &a_if])?;
    b.ip(&["addr", "add", b_addr, "dev", &b_if])?;
    a.ip(&["link", "set", &a_if, "up"])?;
    b.ip(&["link", "set", &b_if, "up"])?;
    Ok(())
}

/// The role part of a namespace name ("client" of "sg-client-12-3"), shortened
/// to fit an interface name.
fn tail(name: &str) -> String {
    let role = name.split('-').nth(1).unwrap_or(name);
    role.chars().take(10).collect()
}
