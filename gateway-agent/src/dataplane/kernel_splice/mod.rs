//! The kernel TCP splice: userspace sets a connection up, then a TC program
//! (`sockgate_tcp_splice`, gateway-ebpf/src/tcp_splice) carries it, rewriting
//! each segment of one leg into a segment of the other. This module loads the
//! program, attaches it to the node's interfaces, owns the `FLOWS` map, and
//! counts what it spliced and what it left on splice(2), by reason.
//! [`path::KernelPath`] is the data path; [`handover`] moves a pair into the kernel.
pub mod handover;
pub mod path;
pub mod craft;
pub mod selftest;
pub mod tcp_state;
pub mod translation;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use anyhow::Context;
use aya::maps::{HashMap, MapData, PerCpuHashMap};
use aya::programs::{SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use gateway_common::{FlowEntry, FlowKey, ListenerPort, SpliceStats, FLOWS_MAP, FLOW_SPLICED, SPLICE_STATS_MAP, TCP_HOLD_PROGRAM, TCP_SPLICE_PROGRAM};

use super::kernel::{discard_incompatible_pin, prepare_pin_dir, OBJECT};
use translation::Refusal;

const PINNED: [&str; 2] = [FLOWS_MAP, SPLICE_STATS_MAP];

/// The loaded program, its attachments and its maps.
pub struct KernelSplice {
    ebpf: Mutex<Ebpf>,
    flows: Mutex<HashMap<MapData, FlowKey, FlowEntry>>,
    pin_dir: PathBuf,
    interfaces: Vec<String>,
    /// Connections handed to the kernel, and kept on splice(2) by reason.
    pub spliced: AtomicU64,
    refused: BTreeMap<Refusal, AtomicU64>,
    /// Handovers that found every queue empty at once, and those that had to
    /// hold the peers' data segments back while queues drained.
    pub quiet_handovers: AtomicU64,
    pub held_handovers: AtomicU64,
    /// The entries this agent wrote; any other entry in the (shared, pinned)
    /// map was left by an agent before it.
    own: Mutex<HashSet<FlowKey>>,
    inherited_taken: AtomicBool,
    /// Spliced connections this agent stopped watching for a takeover: the
    /// successor inherits them; if the takeover fails, they are this agent's
    /// again (`take_inherited` returns them).
    let_go: Mutex<Vec<Inherited>>,
}

/// A connection an earlier agent on this node spliced and left in the
/// kernel (handed over, or killed): the map still carries it, and this agent
/// watches it from here on as its own.
#[derive(Clone, Debug)]
pub struct Inherited {
    pub listener_port: u16,
    pub keys: [FlowKey; 2],
    pub client: SocketAddr,
    pub client_local: SocketAddr,
    pub backend: SocketAddr,
    pub backend_local: SocketAddr,
}

impl KernelSplice {
    /// Loads the program and attaches it (TC ingress) to `interfaces`, or to
    /// every interface of this network namespace but loopback when none are
    /// given; pins `FLOWS` and `SPLICE_STATS` under `pin_dir`.
    pub fn load(pin_dir: &Path, interfaces: &[String]) -> anyhow::Result<KernelSplice> {
        // SAFETY: sysconf(3) only reads a constant.
        let page = (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).max(4096) as u32;
        // The flow table and its counters live in pins that outlast an agent:
        // a successor (takeover) or a restarted agent (after a crash) loads
        // its programs onto the same maps, so the kernel goes on carrying the
        // spliced connections, and takes them over (`take_inherited`).
        prepare_pin_dir(pin_dir, &[])?;
        discard_incompatible_pin(&pin_dir.join(FLOWS_MAP), (std::mem::size_of::<FlowKey>(), std::mem::size_of::<FlowEntry>()), None, "the connections it carried are lost")?;
        discard_incompatible_pin(&pin_dir.join(SPLICE_STATS_MAP), (std::mem::size_of::<ListenerPort>(), std::mem::size_of::<SpliceStats>()), None, "its counters start again")?;
        let (flows_pin, stats_pin) = (pin_dir.join(FLOWS_MAP), pin_dir.join(SPLICE_STATS_MAP));
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("AYA_LOGS", page)
            .map_pin_path(FLOWS_MAP, flows_pin.as_path())
            .map_pin_path(SPLICE_STATS_MAP, stats_pin.as_path())
            .load(OBJECT)
            .context("loading sockgate's eBPF object")?;
        let program: &mut SchedClassifier =
            ebpf.program_mut(TCP_SPLICE_PROGRAM).context("TC splice program missing from the eBPF object")?.try_into()?;
        program.load().context("loading the TC splice program (the verifier refused it, or BPF is unavailable)")?;
        let interfaces = if interfaces.is_empty() { node_interfaces()? } else { interfaces.to_vec() };
        for interface in &interfaces {
            program
                .attach(interface, TcAttachType::Ingress)
                .with_context(|| format!("attaching the TC splice program to {interface} (ingress)"))?;
        }
        let hold: &mut SchedClassifier = ebpf.program_mut(TCP_HOLD_PROGRAM).context("TC hold program missing from the eBPF object")?.try_into()?;
        hold.load().context("loading the TC hold program")?;
        for interface in &interfaces {
            hold.attach(interface, TcAttachType::Egress).with_context(|| format!("attaching the TC hold program to {interface} (egress)"))?;
        }
        let flows = HashMap::try_from(ebpf.take_map(FLOWS_MAP).context("FLOWS map")?)?;
        Ok(KernelSplice {
            ebpf: Mutex::new(ebpf),
            flows: Mutex::new(flows),
            pin_dir: pin_dir.to_path_buf(),
            interfaces,
            spliced: AtomicU64::new(0),
            refused: Refusal::ALL.iter().map(|r| (*r, AtomicU64::new(0))).collect(),
            quiet_handovers: AtomicU64::new(0),
            held_handovers: AtomicU64::new(0),
            own: Mutex::default(),
            inherited_taken: AtomicBool::new(false),
            let_go: Mutex::default(),
        })
    }

    pub fn interfaces(&self) -> &[String] {
        &self.interfaces
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    pub fn set(&self, key: &FlowKey, entry: &FlowEntry) -> anyhow::Result<()> {
        self.own.lock().unwrap().insert(*key);
        self.flows.lock().unwrap().insert(key, entry, 0).context("writing a FLOWS entry")
    }

    pub fn get(&self, key: &FlowKey) -> Option<FlowEntry> {
        self.flows.lock().unwrap().get(key, 0).ok()
    }

    pub fn remove(&self, key: &FlowKey) {
        let _ = self.flows.lock().unwrap().remove(key);
        self.own.lock().unwrap().remove(key);
    }

    /// The connections an earlier agent left in the flow table, once (the
    /// first call; later calls return none). Entries of handovers it had not
    /// finished, and legs without their other half, are removed: no socket
    /// is left for them. Called once the earlier agent is gone (a takeover
    /// done) or known dead, so nothing else writes those entries any more.
    ///
    /// Also returns, at every call, the connections this agent let go of for
    /// a takeover ([`let_go`](Self::let_go)): called after the takeover
    /// failed, they are watched again.
    pub fn take_inherited(&self) -> Vec<Inherited> {
        let mut taken = std::mem::take(&mut *self.let_go.lock().unwrap());
        if self.inherited_taken.swap(true, Ordering::SeqCst) {
            return taken;
        }
        let own = self.own.lock().unwrap().clone();
        let left: BTreeMap<FlowKey, FlowEntry> = self.flows().into_iter().filter(|(k, _)| !own.contains(k)).collect();
        let mut paired = HashSet::new();
        for (key, entry) in &left {
            // The client leg: its segments leave toward the backend, from a port other than the listener's.
            let client_leg = entry.state == FLOW_SPLICED && u32::from(entry.out_src_port) != entry.listener_port;
            if !client_leg {
                continue;
            }
            let other = FlowKey { src_addr: entry.out_dst_addr, dst_addr: entry.out_src_addr, src_port: entry.out_dst_port, dst_port: entry.out_src_port };
            if !left.get(&other).is_some_and(|e| e.state == FLOW_SPLICED) {
                continue;
            }
            let (client, client_local) = translation::addresses(key);
            let (backend, backend_local) = translation::addresses(&other);
            paired.extend([*key, other]);
            taken.push(Inherited { listener_port: entry.listener_port as u16, keys: [*key, other], client, client_local, backend, backend_local });
        }
        let stale: Vec<&FlowKey> = left.keys().filter(|k| !paired.contains(*k)).collect();
        for key in &stale {
            let _ = self.flows.lock().unwrap().remove(*key);
        }
        if !taken.is_empty() || !stale.is_empty() {
            tracing::info!(connections = taken.len(), stale_entries = stale.len(), "took over the connections an earlier agent left in the kernel splice");
        }
        // From here on they are this agent's: its watch removes them.
        self.own.lock().unwrap().extend(paired);
        taken
    }

    /// A spliced connection this agent stops watching for a takeover; its
    /// entries stay for the successor (or for this agent, should it fail).
    pub fn let_go(&self, flow: Inherited) {
        self.let_go.lock().unwrap().push(flow);
    }

    pub fn refuse(&self, reason: Refusal) {
        self.refused[&reason].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections kept on splice(2), per reason (every reason, zeros included).
    pub fn refusals(&self) -> BTreeMap<Refusal, u64> {
        self.refused.iter().map(|(r, n)| (*r, n.load(Ordering::Relaxed))).collect()
    }

    /// Every entry of `FLOWS` now.
    pub fn flows(&self) -> Vec<(FlowKey, FlowEntry)> {
        self.flows.lock().unwrap().iter().filter_map(Result::ok).collect()
    }

    /// Runs `frame` (an Ethernet frame) through the loaded splice program
    /// with BPF_PROG_TEST_RUN, as if it had arrived: the program's verdict and
    /// the frame as it left it. Nothing is sent (a redirect is only recorded).
    pub fn test_run_splice(&self, frame: &[u8]) -> anyhow::Result<(u32, Vec<u8>)> {
        use std::os::fd::{AsFd, AsRawFd};
        let ebpf = self.ebpf.lock().unwrap();
        let program: &SchedClassifier = ebpf.program(TCP_SPLICE_PROGRAM).context("TC splice program")?.try_into()?;
        let fd = program.fd()?.as_fd().as_raw_fd();
        test_run(fd, frame).context("BPF_PROG_TEST_RUN of the TC splice program")
    }

    /// Removes a listener's row of `SPLICE_STATS` (the self-test's, port 0).
    pub fn forget_listener_stats(&self, port: ListenerPort) {
        let mut ebpf = self.ebpf.lock().unwrap();
        if let Some(map) = ebpf.map_mut(SPLICE_STATS_MAP) {
            if let Ok(mut stats) = PerCpuHashMap::<_, ListenerPort, SpliceStats>::try_from(map) {
                let _ = stats.remove(&port);
            }
        }
    }

    /// Per-listener totals of what the kernel forwarded (CPUs summed).
    pub fn stats(&self) -> anyhow::Result<BTreeMap<ListenerPort, SpliceStats>> {
        let ebpf = self.ebpf.lock().unwrap();
        let map: PerCpuHashMap<_, ListenerPort, SpliceStats> = PerCpuHashMap::try_from(ebpf.map(SPLICE_STATS_MAP).context("SPLICE_STATS map")?)?;
        Ok(sum_stats(map.iter().filter_map(Result::ok).map(|(port, per_cpu)| (port, per_cpu.iter().copied().collect::<Vec<_>>()))))
    }
}

/// A snapshot of the kernel splice's counters, for /metrics.
#[derive(Clone, Debug, Default)]
pub struct SpliceReport {
    pub spliced: u64,
    pub quiet_handovers: u64,
    pub held_handovers: u64,
    pub refused: BTreeMap<Refusal, u64>,
    /// Entries in FLOWS (two per spliced connection, and those being handed over).
    pub flow_entries: usize,
    pub per_listener: BTreeMap<ListenerPort, SpliceStats>,
}

impl KernelSplice {
    pub fn report(&self) -> SpliceReport {
        SpliceReport {
            spliced: self.spliced.load(Ordering::Relaxed),
            quiet_handovers: self.quiet_handovers.load(Ordering::Relaxed),
            held_handovers: self.held_handovers.load(Ordering::Relaxed),
            refused: self.refusals(),
            flow_entries: self.flows.lock().unwrap().keys().count(),
            per_listener: self.stats().unwrap_or_default(),
        }
    }
}

impl Drop for KernelSplice {
    /// The pins go with the last flow: while the table still carries
    /// connections (this agent handed over to a successor, which shares it),
    /// they stay for the agent that carries on.
    fn drop(&mut self) {
        if let Ok(mut flows) = self.flows.lock() {
            // Flows whose FINs or RST have passed sit out their TIME_WAIT hold
            // in a task of their own, which ends with the agent: nobody would
            // carry them on, so they go now, and with them the pins if empty.
            let entries: std::collections::HashMap<FlowKey, FlowEntry> = flows.iter().filter_map(Result::ok).collect();
            for (key, entry) in &entries {
                let other = FlowKey { src_addr: entry.out_dst_addr, dst_addr: entry.out_src_addr, src_port: entry.out_dst_port, dst_port: entry.out_src_port };
                let other = entries.get(&other);
                let ended = entry.state == FLOW_SPLICED && (entry.rst != 0 || other.is_some_and(|o| o.rst != 0 || (o.fin != 0 && entry.fin != 0)));
                if ended {
                    let _ = flows.remove(key);
                }
            }
        }
        if self.flows.lock().map(|f| f.keys().next().is_none()).unwrap_or(false) {
            for name in PINNED {
                let _ = std::fs::remove_file(self.pin_dir.join(name));
            }
        }
        // The directory is shared by every eBPF part: whichever goes last
        // finds it empty and removes it (an earlier attempt fails, harmlessly).
        let _ = std::fs::remove_dir(&self.pin_dir);
    }
}

fn sum_stats(rows: impl Iterator<Item = (ListenerPort, Vec<SpliceStats>)>) -> BTreeMap<ListenerPort, SpliceStats> {
    rows.map(|(port, cpus)| {
        let total = cpus.iter().fold(SpliceStats::default(), |a, s| SpliceStats {
            packets_from_clients: a.packets_from_clients + s.packets_from_clients,
            bytes_from_clients: a.bytes_from_clients + s.bytes_from_clients,
            packets_to_clients: a.packets_to_clients + s.packets_to_clients,
            bytes_to_clients: a.bytes_to_clients + s.bytes_to_clients,
        });
        (port, total)
    })
    .collect()
}

/// Reads the pinned `FLOWS` map of a running agent (for `inspect`).
pub fn read_pinned_flows(pin_dir: &Path) -> anyhow::Result<Vec<(FlowKey, FlowEntry)>> {
    let path = pin_dir.join(FLOWS_MAP);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let map: HashMap<_, FlowKey, FlowEntry> = HashMap::try_from(aya::maps::Map::HashMap(data))?;
    Ok(map.iter().filter_map(Result::ok).collect())
}

/// Reads the pinned `SPLICE_STATS` of a running agent (for `inspect`): per
/// listener, what the kernel forwarded (CPUs summed).
pub fn read_pinned_splice_stats(pin_dir: &Path) -> anyhow::Result<BTreeMap<ListenerPort, SpliceStats>> {
    let path = pin_dir.join(SPLICE_STATS_MAP);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let map: PerCpuHashMap<_, ListenerPort, SpliceStats> = PerCpuHashMap::try_from(aya::maps::Map::PerCpuHashMap(data))?;
    Ok(sum_stats(map.iter().filter_map(Result::ok).map(|(port, per_cpu)| (port, per_cpu.iter().copied().collect::<Vec<_>>()))))
}

/// Every interface of this network namespace but loopback: where clients'
/// and backends' segments may arrive. From if_nameindex(3), which asks the
/// kernel of the calling thread's namespace (/sys/class/net may show another's).
fn node_interfaces() -> anyhow::Result<Vec<String>> {
    // SAFETY: if_nameindex returns an array ended by a zero entry, freed below.
    let list = unsafe { libc::if_nameindex() };
    if list.is_null() {
        return Err(std::io::Error::last_os_error()).context("listing the network interfaces");
    }
    let mut names = Vec::new();
    let mut at = list;
    // SAFETY: walking the array up to its terminating entry.
    unsafe {
        while (*at).if_index != 0 {
            let name = std::ffi::CStr::from_ptr((*at).if_name).to_string_lossy().into_owned();
            if name != "lo" {
                names.push(name);
            }
            at = at.add(1);
        }
        libc::if_freenameindex(list);
    }
    names.sort();
    Ok(names)
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the struct.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn flow_map_types_have_the_layout_the_program_uses() {
        assert_eq!(std::mem::size_of::<gateway_common::FlowKey>(), 36);
        assert_eq!(std::mem::size_of::<gateway_common::FlowEntry>(), 160);
    }
}

/// `union bpf_attr` for BPF_PROG_TEST_RUN (include/uapi/linux/bpf.h); the
/// kernel zero-fills the rest of the union.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// aya has no test-run call: bpf(2) directly. (verdict, frame out).
fn test_run(prog_fd: std::os::fd::RawFd, frame: &[u8]) -> std::io::Result<(u32, Vec<u8>)> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut attr = TestRunAttr {
        prog_fd: prog_fd as u32,
        data_size_in: frame.len() as u32,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ..TestRunAttr::default()
    };
    // SAFETY: attr is a valid prefix of union bpf_attr; data_in and data_out
    // point at buffers of the sizes given, which outlive the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_TEST_RUN, &mut attr as *mut TestRunAttr, std::mem::size_of::<TestRunAttr>()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    out.truncate(attr.data_size_out as usize);
    Ok((attr.retval, out))
}
