//! What the soak reads of the agent: its log, its descriptors and memory
//! (/proc), its listen queues (TcpExt counters of the node's namespace) and
//! its pinned eBPF maps (`gateway-agent inspect`).
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use gateway_agent::limits::OpenFiles;

use super::report::AgentSample;
use crate::netns::NetNs;

/// Reads what the agent logged since the last call.
pub(super) struct LogTail {
    path: PathBuf,
    offset: u64,
    pub(super) applied: usize,
}

impl LogTail {
    pub(super) fn new(path: &Path) -> LogTail {
        let mut tail = LogTail { path: path.to_path_buf(), offset: 0, applied: 0 };
        tail.poll().ok();
        tail
    }

    /// Counts new "configuration applied" lines; fails on a rejected configuration.
    fn poll(&mut self) -> Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = std::fs::File::open(&self.path)?;
        file.seek(SeekFrom::Start(self.offset))?;
        let mut new = Vec::new();
        file.read_to_end(&mut new)?;
        // Only whole lines; a partial last line is read again next time.
        let whole = new.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let text = String::from_utf8_lossy(&new[..whole]);
        self.offset += whole as u64;
        self.applied += text.matches("configuration applied").count();
        if let Some(line) = text.lines().find(|l| l.contains("manifests rejected")) {
            bail!("the agent refused the soak's configuration: {line}");
        }
        Ok(())
    }

    /// Waits for the next "configuration applied" after `before`.
    pub(super) fn wait_applied(&mut self, before: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.poll()?;
            if self.applied > before {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the agent applied no configuration within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// TcpExt counters of `ns` (ListenOverflows, ListenDrops): read from
/// /proc/thread-self/net, which shows the reading thread's network namespace.
pub(super) fn listen_counters(ns: &NetNs) -> Result<(u64, u64)> {
    let text = ns.enter(|| std::fs::read_to_string("/proc/thread-self/net/netstat"))??;
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let [names, values] = lines[..] else { bail!("no TcpExt lines in /proc/net/netstat") };
    let counter = |name: &str| -> u64 {
        let at = names.split_whitespace().position(|n| n == name);
        at.and_then(|i| values.split_whitespace().nth(i)?.parse().ok()).unwrap_or(0)
    };
    Ok((counter("ListenOverflows"), counter("ListenDrops")))
}

/// Whether a socket listens on `port` in `ns` (`ss -ltn`, run inside it).
pub(super) fn listening(ns: &NetNs, port: u16) -> Result<bool> {
    let out = ns.command("ss").args(["-Hltn", &format!("sport = :{port}")]).output()?;
    if !out.status.success() {
        bail!("ss: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(!out.stdout.trim_ascii().is_empty())
}

pub(super) fn sample(pid: u32) -> AgentSample {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0);
    let (rss_kib, data_kib) = (field("VmRSS:"), field("VmData:"));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<f64> = after.split_whitespace().map(|f| f.parse().unwrap_or(0.0)).collect();
    let ticks = 100.0; // USER_HZ
    let cpu_seconds = (fields.get(11).unwrap_or(&0.0) + fields.get(12).unwrap_or(&0.0)) / ticks;
    AgentSample { fds, rss_kib, data_kib, cpu_seconds }
}

/// The "Max open files" line of /proc/PID/limits.
pub(super) fn open_files_limit(pid: u32) -> Option<OpenFiles> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let parse = |w: &str| if w == "unlimited" { Some(libc::RLIM_INFINITY) } else { w.parse().ok() };
    Some(OpenFiles { soft: parse(words[3])?, hard: parse(words[4])? })
}

/// The pinned LISTENERS map as `gateway-agent inspect --output json` prints it.
pub(super) fn inspect(pin_dir: &str) -> Result<serde_json::Value> {
    let out = std::process::Command::new(crate::workspace_bin("gateway-agent")?).args(["inspect", "--bpf-pin-dir", pin_dir, "--output", "json"]).output()?;
    if !out.status.success() {
        bail!("gateway-agent inspect: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

pub(super) fn live_connections(view: &serde_json::Value) -> Vec<(u64, u64)> {
    view["listeners"]
        .as_array()
        .map(|ls| ls.iter().map(|l| (l["port"].as_u64().unwrap_or(0), l["activeConnections"].as_u64().unwrap_or(u64::MAX))).collect())
        .unwrap_or_default()
}
