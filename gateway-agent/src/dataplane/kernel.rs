//! sockgate's eBPF object in the kernel: the listener map and its counters.
//!
//! The agent writes every listener port it serves into `LISTENERS` and the
//! endpoints and weights of its route into `BACKENDS`; a sock_ops program
//! attached to the agent's cgroup counts the connections accepted on those
//! ports into `LISTENER_STATS` and logs them through aya-log. The maps are
//! pinned under the pin directory (default `/sys/fs/bpf/sockgate/`) so
//! `bpftool map dump pinned …` and `gateway-agent inspect` can read them.
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use aya::maps::{HashMap, Map, MapData, PerCpuHashMap};
use aya::programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, SockOps};
use aya::{include_bytes_aligned, Ebpf, EbpfLoader};
use gateway_common::{
    BackendEntry, BackendKey, ListenerInfo, ListenerPort, ListenerStats, BACKENDS_MAP, EGRESS_PROGRAM, INGRESS_PROGRAM, LISTENERS_MAP,
    LISTENER_STATS_MAP, SOCKOPS_PROGRAM,
};

use crate::model::config::DataplaneConfig;

pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/sockgate";

/// The eBPF object, built by build.rs from gateway-ebpf.
pub(crate) static OBJECT: &[u8] = include_bytes_aligned!(env!("SOCKGATE_EBPF_OBJECT"));

const BPF_FS_MAGIC: i64 = 0xcafe4a11;
const PINNED: [&str; 3] = [LISTENERS_MAP, BACKENDS_MAP, LISTENER_STATS_MAP];

pub struct KernelListeners {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    cgroup: PathBuf,
    /// What `LISTENERS` holds, so activity updates rewrite only what changed.
    written: BTreeMap<ListenerPort, ListenerInfo>,
    /// What `BACKENDS` holds after the last sync that succeeded whole; `None`
    /// until the first, or after a failed one: the next sync then reads the
    /// maps themselves. Diffing in memory keeps a one-route change at 10,000
    /// routes to that route's entries (reading back and counting every entry
    /// took 13 s; see BENCHMARKS.md).
    synced_backends: Option<BTreeMap<BackendKey, BackendEntry>>,
}

impl KernelListeners {
    /// Loads the object, pins its maps under `pin_dir` (replacing pins a
    /// crashed agent left) and attaches the sock_ops program to `cgroup`.
    pub fn load(pin_dir: &Path, cgroup: &Path) -> anyhow::Result<Self> {
        // The programs skip log records this agent's log would drop anyway:
        // sock_ops logs every accept at debug level, and each record, even one
        // filtered out here, cost a ring-buffer wake-up (an interrupt, a VM
        // exit on this VM) and a parse by the agent, about 5 % of a
        // connection's set-up in the connection-rate profile.
        let level = ebpf_log_level(tracing::level_filters::LevelFilter::current());
        let mut ebpf = EbpfLoader::new()
            .override_global(EBPF_LOG_LEVEL, &level, true)
            .load(OBJECT)
            .context("loading sockgate's eBPF object")?;
        forward_ebpf_logs(&mut ebpf);
        let program: &mut SockOps = ebpf
            .program_mut(SOCKOPS_PROGRAM)
            .context("sock_ops program missing from the eBPF object")?
            .try_into()?;
        program.load().context("loading the sock_ops program (is BPF available to this process?)")?;
        let cgroup_dir = File::open(cgroup).with_context(|| format!("opening cgroup {}", cgroup.display()))?;
        // A bpf_link (what aya creates on this kernel) always coexists with other
        // programs on the cgroup; the link API takes no multi-attach flag, and
        // aya 0.14 passes AllowMultiple through as a flag the kernel rejects.
        program
            .attach(&cgroup_dir, CgroupAttachMode::Single)
            .with_context(|| format!("attaching sock_ops to cgroup {}", cgroup.display()))?;
        for (name, direction) in [(INGRESS_PROGRAM, CgroupSkbAttachType::Ingress), (EGRESS_PROGRAM, CgroupSkbAttachType::Egress)] {
            let program: &mut CgroupSkb = ebpf.program_mut(name).with_context(|| format!("{name} missing from the eBPF object"))?.try_into()?;
            program.load().with_context(|| format!("loading {name}"))?;
            program.attach(&cgroup_dir, direction, CgroupAttachMode::Single).with_context(|| format!("attaching {name} to cgroup {}", cgroup.display()))?;
        }
        // The counters of the agent before this one (crashed, or handed over)
        // carry on: an upgrade or restart does not reset the listeners' totals.
        match carry_stats(&mut ebpf, pin_dir) {
            Ok(0) => {}
            Ok(ports) => tracing::info!(ports, "listener counters carried over from the previous agent's pinned map"),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "the previous agent's counters could not be carried over; starting from zero"),
        }
        // Pin last, so a failure above leaves nothing behind in bpffs.
        prepare_pin_dir(pin_dir, &PINNED)?;
        for name in PINNED {
            let map = ebpf.map(name).with_context(|| format!("map {name} missing from the eBPF object"))?;
            map.pin(pin_dir.join(name)).with_context(|| format!("pinning map {name} in {}", pin_dir.display()))?;
        }
        Ok(KernelListeners { ebpf, pin_dir: pin_dir.to_path_buf(), cgroup: cgroup.to_path_buf(), written: BTreeMap::new(), synced_backends: None })
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// Makes `LISTENERS` and `BACKENDS` hold exactly what `config` says, as a diff.
    pub fn sync(&mut self, config: &DataplaneConfig) -> anyhow::Result<()> {
        let desired = backend_entries(config);
        let result = self.write_diff(config, &desired);
        // After a failure the maps are somewhere between the two: read them next time.
        self.synced_backends = result.is_ok().then_some(desired);
        result
    }

    /// Writes what differs from what the maps hold: remembered from the last
    /// sync, or read from the maps on the first sync or after a failed one.
    fn write_diff(&mut self, config: &DataplaneConfig, desired: &BTreeMap<BackendKey, BackendEntry>) -> anyhow::Result<()> {
        let (previous, ports, rewrite_listeners) = match self.synced_backends.take() {
            Some(previous) => (previous, self.written.keys().copied().collect(), false),
            None => {
                let backends: HashMap<_, BackendKey, BackendEntry> = HashMap::try_from(self.ebpf.map(BACKENDS_MAP).context("BACKENDS map")?)?;
                let listeners: HashMap<_, ListenerPort, ListenerInfo> = HashMap::try_from(self.ebpf.map(LISTENERS_MAP).context("LISTENERS map")?)?;
                let ports: Vec<ListenerPort> = listeners.keys().filter_map(Result::ok).collect();
                (backends.iter().filter_map(Result::ok).collect(), ports, true)
            }
        };
        let mut backends: HashMap<_, BackendKey, BackendEntry> = HashMap::try_from(self.ebpf.map_mut(BACKENDS_MAP).context("BACKENDS map")?)?;
        for key in previous.keys().filter(|k| !desired.contains_key(k)) {
            backends.remove(key)?;
        }
        for (key, entry) in desired {
            if previous.get(key) != Some(entry) {
                backends.insert(key, entry, 0)?;
            }
        }
        let stale = ports.into_iter().filter(|port| !config.listeners.contains_key(&(*port as u16))).collect();
        self.write_listeners(config, desired, stale, rewrite_listeners)
    }

    /// Removes `stale` ports from `LISTENERS` and writes each listener's entry
    /// (all of them with `all`, else only those that changed).
    fn write_listeners(&mut self, config: &DataplaneConfig, desired: &BTreeMap<BackendKey, BackendEntry>, stale: Vec<ListenerPort>, all: bool) -> anyhow::Result<()> {
        let mut listeners: HashMap<_, ListenerPort, ListenerInfo> =
            HashMap::try_from(self.ebpf.map_mut(LISTENERS_MAP).context("LISTENERS map")?)?;
        for port in stale {
            listeners.remove(&port)?;
            self.written.remove(&port);
        }
        // Entries per port in one pass (the keys are ordered by port).
        let mut counts: BTreeMap<ListenerPort, u32> = BTreeMap::new();
        for key in desired.keys() {
            *counts.entry(key.port).or_default() += 1;
        }
        for (port, listener) in &config.listeners {
            let port = ListenerPort::from(*port);
            let previous = self.written.get(&port).copied();
            let info = ListenerInfo {
                backends: counts.get(&port).copied().unwrap_or(0),
                routed: u32::from(listener.route.is_some()),
                ..previous.unwrap_or_default()
            };
            if all || previous != Some(info) {
                listeners.insert(port, info, 0)?;
                self.written.insert(port, info);
            }
        }
        Ok(())
    }

    /// Publishes each listener's live connections and data path (`path` is a
    /// `PATH_*` code) for inspection; writes only entries that changed.
    pub fn publish_activity(&mut self, active: &BTreeMap<u16, u32>, path: u32) -> anyhow::Result<()> {
        let mut listeners: HashMap<_, ListenerPort, ListenerInfo> =
            HashMap::try_from(self.ebpf.map_mut(LISTENERS_MAP).context("LISTENERS map")?)?;
        for (port, info) in self.written.iter_mut() {
            let now = ListenerInfo { active: active.get(&(*port as u16)).copied().unwrap_or(0), path, ..*info };
            if now != *info {
                listeners.insert(*port, now, 0)?;
                *info = now;
            }
        }
        Ok(())
    }

    /// Removes the pins; the maps go when the last reference (this object) does.
    pub fn unpin(self) {
        for name in PINNED {
            let _ = std::fs::remove_file(self.pin_dir.join(name));
        }
        let _ = std::fs::remove_dir(&self.pin_dir);
    }
}

/// Copies the per-CPU counters of a previous agent's pinned `LISTENER_STATS`
/// (if there is one) into this object's map; how many ports it held.
fn carry_stats(ebpf: &mut Ebpf, pin_dir: &Path) -> anyhow::Result<usize> {
    let pin = pin_dir.join(LISTENER_STATS_MAP);
    if !pin.exists() {
        return Ok(0);
    }
    let old: PerCpuHashMap<_, ListenerPort, ListenerStats> = PerCpuHashMap::try_from(Map::PerCpuHashMap(MapData::from_pin(&pin)?))?;
    let mut new: PerCpuHashMap<_, ListenerPort, ListenerStats> =
        PerCpuHashMap::try_from(ebpf.map_mut(LISTENER_STATS_MAP).context("LISTENER_STATS map")?)?;
    let mut ports = 0;
    for entry in old.iter() {
        let (port, per_cpu) = entry?;
        new.insert(port, per_cpu, 0)?;
        ports += 1;
    }
    Ok(ports)
}

/// Creates `pin_dir` on bpffs and removes the pins `names` an earlier (crashed) agent left there.
pub(crate) fn prepare_pin_dir(pin_dir: &Path, names: &[&str]) -> anyhow::Result<()> {
    std::fs::create_dir_all(pin_dir).with_context(|| format!("creating {}", pin_dir.display()))?;
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    let c_path = std::ffi::CString::new(pin_dir.as_os_str().as_encoded_bytes())?;
    // SAFETY: c_path is a valid NUL-terminated string and fs a writable statfs.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut fs) } != 0 {
        bail!("statfs {}: {}", pin_dir.display(), std::io::Error::last_os_error());
    }
    if fs.f_type as i64 != BPF_FS_MAGIC {
        bail!("{} is not on a bpf filesystem (mount one: mount -t bpf bpf /sys/fs/bpf)", pin_dir.display());
    }
    for name in names {
        let stale = pin_dir.join(name);
        if stale.exists() {
            tracing::info!(pin = %stale.display(), "replacing a pin left by an earlier agent");
            std::fs::remove_file(&stale)?;
        }
    }
    Ok(())
}

/// A pin of another layout than `expected` (key and value sizes: an agent
/// of another version), or of another size when `max_entries` is given,
/// cannot be shared: it goes, with what it carried (`lost` says what, in the log).
pub(crate) fn discard_incompatible_pin(pin: &Path, expected: (usize, usize), max_entries: Option<u32>, lost: &str) -> anyhow::Result<()> {
    if !pin.exists() {
        return Ok(());
    }
    let found = aya::maps::MapData::from_pin(pin).and_then(|m| m.info()).map(|i| (i.key_size() as usize, i.value_size() as usize, i.max_entries()));
    let fits = found.as_ref().is_ok_and(|(k, v, n)| (*k, *v) == expected && max_entries.is_none_or(|m| m == *n));
    if !fits {
        tracing::warn!(pin = %pin.display(), ?found, ?expected, "a pinned map of another layout (an agent of another version?) is replaced; {lost}");
        std::fs::remove_file(pin).with_context(|| format!("removing {}", pin.display()))?;
    }
    Ok(())
}

/// Every listener's endpoints as `BACKENDS` entries: one per endpoint, and one
/// `reject` entry for a backendRef without endpoints (its share is reset).
pub fn backend_entries(config: &DataplaneConfig) -> BTreeMap<BackendKey, BackendEntry> {
    let mut entries = BTreeMap::new();
    for (port, listener) in &config.listeners {
        let mut index = 0;
        for (group, backend) in listener.backends.iter().enumerate() {
            let mut push = |addr: [u8; 16], port_number: u16, reject: u16| {
                let key = BackendKey { port: ListenerPort::from(*port), index };
                entries.insert(key, BackendEntry { addr, port: port_number, reject, weight: backend.weight, group: group as u32 });
                index += 1;
            };
            if backend.endpoints.is_empty() {
                push([0; 16], 0, 1);
            }
            for endpoint in &backend.endpoints {
                let addr = match endpoint.ip() {
                    std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                    std::net::IpAddr::V6(v6) => v6.octets(),
                };
                push(addr, endpoint.port(), 0);
            }
        }
    }
    entries
}

/// aya-log's level switch in the eBPF object: programs emit records at this
/// level and below (`aya_log_common::Level`: error 1 … trace 5, 0 for none).
const EBPF_LOG_LEVEL: &str = "AYA_LOG_LEVEL";

/// The eBPF log level for an agent whose most verbose log directive, for any
/// target, is `filter`: the records' target is the eBPF crate, which a
/// directive of its own may enable (`gateway_ebpf=debug`), so only levels
/// no directive enables are switched off in the kernel.
fn ebpf_log_level(filter: tracing::level_filters::LevelFilter) -> u8 {
    use tracing::level_filters::LevelFilter;
    match filter {
        LevelFilter::OFF => 0,
        LevelFilter::ERROR => 1,
        LevelFilter::WARN => 2,
        LevelFilter::INFO => 3,
        LevelFilter::DEBUG => 4,
        _ => 5,
    }
}

/// Sends the eBPF programs' aya-log records to the agent's log, as they come.
fn forward_ebpf_logs(ebpf: &mut Ebpf) {
    let logger = match aya_log::EbpfLogger::init(ebpf) {
        Ok(logger) => logger,
        Err(e) => {
            tracing::warn!(error = %e, "eBPF log records will not reach this log");
            return;
        }
    };
    // SAFETY: the logger owns its ring buffer's fd for as long as it lives, and
    // the AsyncFd owns the logger: the fd stays open and the same throughout.
    let Ok(mut readable) = (unsafe { tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }) else {
        tracing::warn!("eBPF log records will not reach this log: cannot poll their ring buffer");
        return;
    };
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = readable.readable_mut().await else { return };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}

/// The cgroup v2 this process runs in (where its listener sockets belong).
pub fn own_cgroup() -> anyhow::Result<PathBuf> {
    let relative = std::fs::read_to_string("/proc/self/cgroup")?
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        .context("this process is in no cgroup v2 (no 0:: line in /proc/self/cgroup)")?;
    Ok(cgroup2_mount()?.join(relative.trim_start_matches('/')))
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on hybrid hosts).
pub fn cgroup2_mount() -> anyhow::Result<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    mountinfo
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            right.starts_with("cgroup2 ").then(|| left.split(' ').nth(4).map(PathBuf::from)).flatten()
        })
        .context("no cgroup2 filesystem is mounted")
}

/// What the pinned maps say, for `gateway-agent inspect`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PinnedView {
    pub listeners: BTreeMap<ListenerPort, ListenerInfo>,
    pub backends: BTreeMap<BackendKey, BackendEntry>,
    /// Per-listener counters, summed over CPUs.
    pub stats: BTreeMap<ListenerPort, ListenerStats>,
}

pub fn read_pinned(pin_dir: &Path) -> anyhow::Result<PinnedView> {
    let open = |name: &str| {
        let pin = pin_dir.join(name);
        MapData::from_pin(&pin).with_context(|| format!("opening {} (is an agent running with this --bpf-pin-dir?)", pin.display()))
    };
    let mut view = PinnedView::default();
    let listeners: HashMap<_, ListenerPort, ListenerInfo> = HashMap::try_from(Map::HashMap(open(LISTENERS_MAP)?))?;
    for entry in listeners.iter() {
        let (port, info) = entry?;
        view.listeners.insert(port, info);
    }
    let backends: HashMap<_, BackendKey, BackendEntry> = HashMap::try_from(Map::HashMap(open(BACKENDS_MAP)?))?;
    for entry in backends.iter() {
        let (key, value) = entry?;
        view.backends.insert(key, value);
    }
    let stats: PerCpuHashMap<_, ListenerPort, ListenerStats> = PerCpuHashMap::try_from(Map::PerCpuHashMap(open(LISTENER_STATS_MAP)?))?;
    for entry in stats.iter() {
        let (port, per_cpu) = entry?;
        let total = per_cpu.iter().fold(ListenerStats::default(), |sum, s| ListenerStats {
            accepted: sum.accepted + s.accepted,
            bytes_from_clients: sum.bytes_from_clients + s.bytes_from_clients,
            bytes_to_clients: sum.bytes_to_clients + s.bytes_to_clients,
        });
        view.stats.insert(port, total);
    }
    Ok(view)
}
