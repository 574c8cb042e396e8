//! What /proc says about the machine and the forwarder's processes.
use anyhow::{Context, Result};

/// The machine's CPU time since boot, in seconds, by where it was spent.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTimes {
    pub user: f64,
    pub system: f64,
    pub softirq: f64,
    /// Everything not idle or waiting for I/O (user, nice, system, irq, softirq, steal).
    pub busy: f64,
}

impl CpuTimes {
    pub fn now() -> Result<CpuTimes> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        let line = stat.lines().next().context("empty /proc/stat")?;
        let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
        anyhow::ensure!(v.len() >= 8, "unexpected /proc/stat: {line}");
        // USER_HZ is 100 on Linux (sysconf(_SC_CLK_TCK)).
        let s = |i: usize| v[i] / 100.0;
        // user nice system idle iowait irq softirq steal (guest time is already in user).
        Ok(CpuTimes {
            user: s(0) + s(1),
            system: s(2),
            softirq: s(6),
            busy: s(0) + s(1) + s(2) + s(5) + s(6) + s(7),
        })
    }

    pub fn since(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user - earlier.user,
            system: self.system - earlier.system,
            softirq: self.softirq - earlier.softirq,
            busy: self.busy - earlier.busy,
        }
    }
}

/// A process and all its descendants (nginx's master and workers, say).
pub fn with_descendants(pid: u32) -> Vec<u32> {
    let mut family = vec![pid];
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|p| Some((p, parent_of(p)?)))
                .collect()
        })
        .unwrap_or_default();
    let mut i = 0;
    while i < family.len() {
        let parent = family[i];
        family.extend(parents.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    family
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may contain spaces and parentheses: fields start after the last ')'.
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// Resident set of one process (VmRSS), in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("process {pid} is gone"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no VmRSS for process {pid}"))?;
    Ok(kib * 1024)
}

/// Open descriptors of one process (entries of /proc/PID/fd).
pub fn open_fds(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd")).with_context(|| format!("process {pid} is gone"))?.count())
}

/// User and system CPU seconds of a process so far (its threads included).
pub fn process_cpu(pid: u32) -> Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat.rsplit_once(')').context("odd /proc/PID/stat")?.1.split_whitespace().collect();
    // After the command: state(0) ppid(1) ... utime(11) stime(12), in clock ticks.
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
    Ok((tick(11), tick(12)))
}

/// One line about the machine: CPU model and count, memory, kernel, distribution.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / (1 << 20) as f64;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let debian = std::fs::read_to_string("/etc/debian_version").unwrap_or_default();
    format!(
        "{cpus} vCPUs ({model}), {mem_gib:.0} GiB RAM, kernel {}, Debian {}",
        kernel.trim(),
        debian.trim()
    )
}

/// `Udp: InDatagrams` of the network namespace `ns`: datagrams its own UDP
/// sockets received (a datagram a kernel path forwards never reaches one).
pub fn udp_in_datagrams(ns: &crate::netns::NetNs) -> Result<u64> {
    // /proc/net is per namespace: read it from a process inside `ns`.
    let out = ns.command("cat").arg("/proc/net/snmp").output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut rows = text.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (rows.next().context("no Udp: rows in /proc/net/snmp")?, rows.next().context("no Udp: values")?);
    let i = names.split_whitespace().position(|n| n == "InDatagrams").context("no Udp InDatagrams")?;
    values.split_whitespace().nth(i).and_then(|v| v.parse().ok()).context("an unreadable Udp InDatagrams")
}

/// The 1-minute load average (how busy the shared machine was).
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}
