//! Daemons `cluster up` starts and `cluster down` stops, without systemd:
//! each in its own session (setsid), optionally inside the node's network
//! namespace, logging to target/cluster/NAME.log, known by a saved PID.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::{cluster_dir, kube_build, last_line};
use anyhow::{bail, Context, Result};

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A process `up` starts and `down` stops, known by its saved PID.
pub struct Daemon {
    pub name: &'static str,
    /// A program on PATH, or one of the Kubernetes binaries `kube_build` caches.
    pub program: &'static str,
    /// A network namespace (under /run/netns) to run in, else the caller's.
    pub netns: Option<&'static str>,
}

impl Daemon {
    fn path(&self) -> PathBuf {
        let cached = kube_build::binary(self.program);
        if cached.is_file() { cached } else { PathBuf::from(self.program) }
    }
}

/// Starts a daemon in its own session (a daemon left in the caller's process
/// group was seen killed when an unrelated command ended), logging to
/// target/cluster/NAME.log, and saves its PID for `down`.
pub fn spawn_daemon(daemon: &Daemon, args: &[String]) -> Result<()> {
    let log_path = log_path(daemon);
    let log = fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    // Our child is never a process-group leader, so setsid execs in place and
    // the child's PID is the daemon's.
    let mut command = Command::new("setsid");
    // nsenter execs the daemon after entering the namespace: the PID stays
    // the daemon's, and the mount namespace stays the host's (kubelet and
    // containerd must see the same mounts).
    if let Some(netns) = daemon.netns {
        command.arg("nsenter").arg(format!("--net=/run/netns/{netns}"));
    }
    let child = command
        .arg(daemon.path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", daemon.name))?;
    fs::write(pid_path(daemon), format!("{}\n", child.id())).with_context(|| format!("saving {}'s PID", daemon.name))?;
    // Until setsid (and nsenter) have exec'd, the PID does not look like the
    // daemon yet: wait for that, so `running` is meaningful from here on.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !alive(child.id(), daemon) && Instant::now() < deadline {
        if fs::read_to_string(format!("/proc/{}/stat", child.id())).map_or(true, |s| s.contains(") Z")) {
            break; // it exited: wait_until reports its log
        }
        sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Polls `ready` for up to a minute; fails early, with the daemon's last log
/// line, when the daemon exits instead.
pub fn wait_until(daemon: &Daemon, what: &str, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if ready() {
            return Ok(());
        }
        if running(daemon).is_none() {
            let log = log_path(daemon);
            bail!("{} exited: {} (see {})", daemon.name, last_line(&log), log.display());
        }
        if Instant::now() > deadline {
            bail!("timed out after {}s waiting for {what} (see {})", READY_TIMEOUT.as_secs(), log_path(daemon).display());
        }
        sleep(Duration::from_millis(300));
    }
}

/// SIGTERM, then SIGKILL if it is still there after 15 s; a no-op when it is not running.
pub fn stop(daemon: &Daemon) -> Result<()> {
    if let Some(pid) = running(daemon) {
        eprintln!("xtask: stopping {} (pid {pid})", daemon.name);
        signal(pid, "TERM")?;
        if !exits_within(daemon, pid, Duration::from_secs(15)) {
            eprintln!("xtask: {} ignored SIGTERM; killing it", daemon.name);
            signal(pid, "KILL")?;
            if !exits_within(daemon, pid, Duration::from_secs(5)) {
                bail!("{} (pid {pid}) survived SIGKILL", daemon.name);
            }
        }
    }
    match fs::remove_file(pid_path(daemon)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).context("removing a PID file"),
        _ => Ok(()),
    }
}

pub fn signal(pid: u32, signal: &str) -> Result<()> {
    // A process that exits between the check and the signal makes kill fail: fine.
    Command::new("kill").args(["-s", signal, &pid.to_string()]).stderr(Stdio::null()).status().context("running kill")?;
    Ok(())
}

pub fn exits_within(daemon: &Daemon, pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while alive(pid, daemon) {
        if Instant::now() > deadline {
            return false;
        }
        sleep(Duration::from_millis(100));
    }
    true
}

/// The saved PID, if that process is still this daemon.
pub fn running(daemon: &Daemon) -> Option<u32> {
    let pid = fs::read_to_string(pid_path(daemon)).ok()?.trim().parse().ok()?;
    alive(pid, daemon).then_some(pid)
}

/// Alive and still the daemon: not a zombie, and not a reused PID running
/// something else (its argv[0] names the daemon's program).
pub fn alive(pid: u32, daemon: &Daemon) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, None | Some("Z") | Some("X")) {
        return false;
    }
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let argv0 = String::from_utf8_lossy(cmdline.split(|b| *b == 0).next().unwrap_or_default()).into_owned();
    Path::new(&argv0).file_name() == Path::new(daemon.program).file_name()
}

pub fn pid_path(daemon: &Daemon) -> PathBuf {
    cluster_dir().join(format!("{}.pid", daemon.name))
}

pub fn log_path(daemon: &Daemon) -> PathBuf {
    cluster_dir().join(format!("{}.log", daemon.name))
}


