//! The kernel UDP NAT (`--dataplane ebpf`): UDP listeners served by
//! `sockgate_udp_nat` (gateway-ebpf/src/udp_nat), a per-flow NAT in TC
//! ingress, so no socket of the node sees the forwarded datagrams.
//!
//! This module loads and attaches the program (first in each interface's tcx
//! chain, before the TCP splice: it passes everything not its own on), writes
//! each UDP listener's pick table, and sweeps the flow table:
//! - **Weights**: each listener has `UDP_NAT_SLOTS_PER_LISTENER` slots filled
//!   in smooth weighted round-robin order (a backendRef's weight shared
//!   equally by its endpoints); new flows take the slots in turn (a per-CPU
//!   cursor), so any run of new flows follows the weights within a slot or two.
//! - **Endpoint changes**: the table is rewritten at once (new flows see the
//!   new set). Existing flows to an endpoint that left are *moved*: the sweep
//!   removes both their entries, and the client's next datagram starts a new
//!   flow to a current endpoint. Flows to endpoints that stay keep theirs.
//! - **Idle**: a flow whose two entries saw no datagram for the listener's
//!   `idleTimeout` (ListenerPolicy; the relay's default of 60 s without one)
//!   is removed by the sweep (every [`SWEEP_INTERVAL`]); under a flood of new
//!   5-tuples the LRU table evicts the least recently used entries first.
//! - **Policy**: the ListenerPolicy's clientCIDRs (IPv4 CIDRs, and IPv4-mapped
//!   IPv6 ones, in the `UDP_NAT_ALLOW`/`UDP_NAT_DENY` tries) are judged at a
//!   flow's first datagram; when they change, the sweep ends the flows of
//!   clients no longer admitted. maxConnections caps the live flows
//!   (`UDP_NAT_LIVE`, recounted by every sweep; between two sweeps the
//!   program counts the flows it creates, so the cap holds within the flows
//!   the LRU evicted since the last one).
//! - **Fragments and ICMP** are handled in the program (a datagram of up to
//!   64 KiB arrives as ~45 fragments; a backend's port unreachable reaches
//!   the client translated).
//! - **What stays in userspace**: IPv6 passes to the stack, where the relay,
//!   still bound to every UDP listener port, serves it; so do fragments whose
//!   first fragment the program did not see first (counted in row 0 of
//!   `UDP_NAT_STATS`; their datagram is lost).
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, MapData, PerCpuHashMap};
use aya::programs::tc::TcAttachOptions;
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use gateway_common::{
    UdpCidrKey, UdpFlowEntry, UdpFlowKey, UdpNatEndpoint, UdpNatListener, UdpNatStats, UDP_NAT_ALLOW_MAP, UDP_NAT_DENY_MAP, UDP_NAT_FLOWS_MAP,
    UDP_NAT_LISTENERS_MAP, UDP_NAT_LIVE_MAP, UDP_NAT_MAX_LISTENERS, UDP_NAT_NODE_ADDRS_MAP, UDP_NAT_PROGRAM, UDP_NAT_SLOTS_MAP,
    UDP_NAT_SLOTS_PER_LISTENER, UDP_NAT_STATS_MAP,
};

use super::kernel::{discard_incompatible_pin, prepare_pin_dir, OBJECT};
use super::udp::listener::DEFAULT_IDLE_TIMEOUT;
use crate::dataplane::xdp::Cidr;
use crate::dataplane::udp::state::ListenerState;
use crate::model::config::{BackendGroup, ListenerConfig, ListenerPolicyConfig};

mod state;

pub const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// What a listener's table holds now.
#[derive(Clone, Debug)]
struct Served {
    index: u32,
    endpoints: BTreeSet<SocketAddrV4>,
    idle: Duration,
    policy: ListenerPolicyConfig,
    info: UdpNatListener,
}

pub struct UdpNat {
    ebpf: Mutex<Ebpf>,
    interfaces: Vec<String>,
    served: Mutex<BTreeMap<u16, Served>>,
    /// The flow table as the last sweep left it, for [`UdpNat::state`].
    swept: Mutex<BTreeMap<UdpFlowKey, UdpFlowEntry>>,
    /// No sweep before the first configuration is written: flows an earlier
    /// agent left would all look like flows of listeners no longer served.
    applied: AtomicBool,
    pin_dir: PathBuf,
}

/// The maps `bpftool` reads from the pin directory. The flow table and the
/// counters outlast an agent (a successor, or an agent restarted after a
/// crash, loads its program onto them, so the flows go on with their NAT
/// ports and endpoints); the listener tables are each agent's own, written
/// afresh (an earlier agent's entries would never be taken out).
const CARRIED: [&str; 2] = [UDP_NAT_FLOWS_MAP, UDP_NAT_STATS_MAP];
const OWN: [&str; 3] = [UDP_NAT_LISTENERS_MAP, UDP_NAT_ALLOW_MAP, UDP_NAT_DENY_MAP];

impl UdpNat {
    /// Loads the program and attaches it to `interfaces` (every one but
    /// loopback when empty), at the head of each ingress chain.
    pub fn load(pin_dir: &Path, interfaces: &[String], max_flows: u32) -> anyhow::Result<UdpNat> {
        // Two entries per flow: the client's and the reply's.
        let entries = max_flows.saturating_mul(2);
        // SAFETY: sysconf(3) only reads a constant.
        let page = (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).max(4096) as u32;
        // Pinned for bpftool (`bpftool map dump pinned DIR/UDP_NAT_STATS`).
        prepare_pin_dir(pin_dir, &OWN)?;
        discard_incompatible_pin(&pin_dir.join(UDP_NAT_FLOWS_MAP), (std::mem::size_of::<UdpFlowKey>(), std::mem::size_of::<UdpFlowEntry>()), Some(entries), "the UDP flows it carried start again")?;
        discard_incompatible_pin(&pin_dir.join(UDP_NAT_STATS_MAP), (4, std::mem::size_of::<UdpNatStats>()), None, "its counters start again")?;
        let pins: Vec<(&str, PathBuf)> = CARRIED.iter().chain(&OWN).map(|n| (*n, pin_dir.join(n))).collect();
        let mut loader = EbpfLoader::new();
        loader.map_max_entries("AYA_LOGS", page);
        loader.map_max_entries(UDP_NAT_FLOWS_MAP, entries);
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(OBJECT).context("loading sockgate's eBPF object")?;
        let program: &mut SchedClassifier = ebpf.program_mut(UDP_NAT_PROGRAM).context("UDP NAT program missing from the eBPF object")?.try_into()?;
        program.load().context("loading the UDP NAT program (the verifier refused it, or BPF is unavailable)")?;
        let interfaces = if interfaces.is_empty() { node_interfaces()?.into_iter().map(|(n, _)| n).collect::<BTreeSet<_>>().into_iter().collect() } else { interfaces.to_vec() };
        for interface in &interfaces {
            program
                .attach_with_options(interface, TcAttachType::Ingress, TcAttachOptions::TcxOrder(LinkOrder::first()))
                .with_context(|| format!("attaching the UDP NAT program to {interface} (ingress)"))?;
        }
        let nat = UdpNat { ebpf: Mutex::new(ebpf), interfaces, served: Mutex::default(), swept: Mutex::default(), applied: AtomicBool::new(false), pin_dir: pin_dir.to_path_buf() };
        nat.write_node_addresses()?;
        let carried = nat.flow_entries().len() / 2;
        if carried > 0 {
            tracing::info!(flows = carried, "carrying on the UDP flows an earlier agent left in the kernel NAT");
        }
        Ok(nat)
    }

    /// At a plain stop (no successor): the pins go, and with them the flows
    /// (the program leaves with this agent, so nothing would carry them).
    /// After a handover, or a crash, the pins stay for the agent that follows.
    pub fn unpin(self) {
        for name in CARRIED.iter().chain(&OWN) {
            let _ = std::fs::remove_file(self.pin_dir.join(name));
        }
        // Shared with the other eBPF parts' pins: removed by the last to go.
        let _ = std::fs::remove_dir(&self.pin_dir);
    }

    fn flow_entries(&self) -> BTreeMap<UdpFlowKey, UdpFlowEntry> {
        let mut ebpf = self.ebpf.lock().unwrap();
        let Some(map) = ebpf.map_mut(UDP_NAT_FLOWS_MAP) else { return BTreeMap::new() };
        let Ok(flows) = HashMap::<_, UdpFlowKey, UdpFlowEntry>::try_from(map) else { return BTreeMap::new() };
        flows.iter().filter_map(Result::ok).collect()
    }

    pub fn interfaces(&self) -> &[String] {
        &self.interfaces
    }

    /// Every IPv4 address of this namespace, for the program's destination check.
    fn write_node_addresses(&self) -> anyhow::Result<()> {
        let mut ebpf = self.ebpf.lock().unwrap();
        let mut map: HashMap<_, [u8; 4], u32> = HashMap::try_from(ebpf.map_mut(UDP_NAT_NODE_ADDRS_MAP).context("UDP_NAT_NODE_ADDRS")?)?;
        for (_, addr) in node_addresses()? {
            map.insert(addr.octets(), 1, 0)?;
        }
        Ok(())
    }

    /// Serves exactly the UDP listeners of `wanted` in the kernel.
    pub fn apply(&self, wanted: &BTreeMap<u16, ListenerConfig>) {
        if let Err(e) = self.try_apply(wanted) {
            tracing::error!(error = %format!("{e:#}"), "writing the UDP NAT tables failed");
        }
    }

    fn try_apply(&self, wanted: &BTreeMap<u16, ListenerConfig>) -> anyhow::Result<()> {
        let _ = self.write_node_addresses();
        let mut served = self.served.lock().unwrap();
        let mut ebpf = self.ebpf.lock().unwrap();
        let gone: Vec<u16> = served.keys().filter(|p| !wanted.contains_key(p)).copied().collect();
        {
            let mut listeners: HashMap<_, u32, UdpNatListener> = HashMap::try_from(ebpf.map_mut(UDP_NAT_LISTENERS_MAP).context("UDP_NAT_LISTENERS")?)?;
            for port in &gone {
                let _ = listeners.remove(&u32::from(*port));
            }
        }
        for port in &gone {
            if let Some(old) = served.remove(port) {
                write_cidrs(&mut ebpf, *port, &ListenerPolicyConfig::default(), &old.policy, Write::RemoveStale)?;
            }
        }
        for (port, config) in wanted {
            let endpoints = pick_table(&config.backends);
            let set: BTreeSet<SocketAddrV4> = endpoints.iter().copied().collect();
            let idle = config.policy.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT);
            let current = served.get(port).cloned();
            if current.as_ref().is_some_and(|c| c.endpoints == set && c.idle == idle && c.policy == config.policy && c.info.slots == endpoints.len() as u32) {
                continue;
            }
            let index = match &current {
                Some(c) => c.index,
                None => {
                    let free = (0..UDP_NAT_MAX_LISTENERS).find(|i| !served.values().any(|s| s.index == *i)).context("more UDP listeners than the kernel table holds")?;
                    // A listener that had this row before may have left its count.
                    let mut live: Array<_, u64> = Array::try_from(ebpf.map_mut(UDP_NAT_LIVE_MAP).context("UDP_NAT_LIVE")?)?;
                    live.set(free, 0, 0)?;
                    free
                }
            };
            let mut slots: Array<_, UdpNatEndpoint> = Array::try_from(ebpf.map_mut(UDP_NAT_SLOTS_MAP).context("UDP_NAT_SLOTS")?)?;
            let mut legs = BTreeMap::new();
            let mut filled = 0u32;
            for endpoint in &endpoints {
                let leg = match legs.get(endpoint) {
                    Some(leg) => *leg,
                    None => match leg_toward(*endpoint) {
                        Ok(leg) => *legs.entry(*endpoint).or_insert(leg),
                        Err(e) => {
                            tracing::warn!(endpoint = %endpoint, error = %format!("{e:#}"), "no route toward a UDP endpoint: left out of the kernel table");
                            continue;
                        }
                    },
                };
                let (node_addr, ifindex) = leg;
                let entry = UdpNatEndpoint { addr: endpoint.ip().octets(), node_addr: node_addr.octets(), port: endpoint.port(), _pad: 0, ifindex };
                slots.set(index * UDP_NAT_SLOTS_PER_LISTENER + filled, entry, 0)?;
                filled += 1;
            }
            let mut info = current.as_ref().map(|c| c.info).unwrap_or_default();
            info.index = index;
            info.slots = filled;
            info.idle_timeout_ns = idle.as_nanos() as u64;
            info.allow_cidrs = u32::from(!config.policy.allow.is_empty());
            info.max_flows = config.policy.max_connections.unwrap_or(0);
            let old_policy = current.as_ref().map(|c| c.policy.clone()).unwrap_or_default();
            // New CIDR entries first, then the listener's switch, then the old
            // entries out: no client both policies admit is refused meanwhile,
            // and none both refuse is admitted.
            write_cidrs(&mut ebpf, *port, &config.policy, &old_policy, Write::Insert)?;
            let mut listeners: HashMap<_, u32, UdpNatListener> = HashMap::try_from(ebpf.map_mut(UDP_NAT_LISTENERS_MAP).context("UDP_NAT_LISTENERS")?)?;
            listeners.insert(u32::from(*port), info, 0)?;
            write_cidrs(&mut ebpf, *port, &config.policy, &old_policy, Write::RemoveStale)?;
            tracing::info!(port, slots = filled, endpoints = set.len(), idle = ?idle, "UDP listener served in the kernel (UDP NAT)");
            served.insert(*port, Served { index, endpoints: set, idle, policy: config.policy.clone(), info });
        }
        drop(ebpf);
        drop(served);
        self.applied.store(true, Ordering::Relaxed);
        // Flows of listeners that went, or to endpoints that left: at once.
        self.sweep();
        Ok(())
    }

    /// Removes idle flows, flows of listeners no longer served and flows to
    /// endpoints no longer in their listener's table; counts them.
    pub fn sweep(&self) {
        if !self.applied.load(Ordering::Relaxed) {
            return;
        }
        let now = super::kernel_splice::monotonic_ns();
        let mut served = self.served.lock().unwrap();
        let mut ebpf = self.ebpf.lock().unwrap();
        let Ok(map) = ebpf.map_mut(UDP_NAT_FLOWS_MAP).context("UDP_NAT_FLOWS") else { return };
        let Ok(mut flows) = HashMap::<_, UdpFlowKey, UdpFlowEntry>::try_from(map) else { return };
        let entries: BTreeMap<UdpFlowKey, UdpFlowEntry> = flows.iter().filter_map(Result::ok).collect();
        let mut doomed = Vec::new();
        let mut changed = BTreeSet::new();
        for (key, entry) in &entries {
            let port = entry.listener_port as u16;
            if entry.to_client != 0 {
                // A reply entry whose client entry is gone (evicted, or moved): it goes once idle.
                let orphan = !entries.values().any(|e| e.to_client == 0 && e.out_dst_addr == key.src_addr && e.out_dst_port == key.src_port && e.out_src_port == key.dst_port);
                let idle = served.get(&port).map(|s| s.idle).unwrap_or_default();
                if orphan && now.saturating_sub(entry.last_seen_ns) > idle.as_nanos() as u64 {
                    doomed.push(*key);
                }
                continue;
            }
            let reverse = UdpFlowKey { src_addr: entry.out_dst_addr, dst_addr: entry.out_src_addr, src_port: entry.out_dst_port, dst_port: entry.out_src_port };
            let last = entries.get(&reverse).map_or(entry.last_seen_ns, |r| r.last_seen_ns.max(entry.last_seen_ns));
            let Some(listener) = served.get_mut(&port) else {
                doomed.extend([*key, reverse]);
                continue;
            };
            let endpoint = SocketAddrV4::new(Ipv4Addr::from(entry.out_dst_addr), entry.out_dst_port);
            if !listener.policy.admits(IpAddr::V4(Ipv4Addr::from(key.src_addr))) {
                // The policy changed since this flow began: it ends, and the
                // client's next datagram is judged by the new one (and dropped).
                listener.info.flows_denied += 1;
                changed.insert(port);
                doomed.extend([*key, reverse]);
            } else if !listener.endpoints.contains(&endpoint) {
                listener.info.flows_moved += 1;
                changed.insert(port);
                doomed.extend([*key, reverse]);
            } else if now.saturating_sub(last) > listener.idle.as_nanos() as u64 {
                listener.info.flows_expired += 1;
                changed.insert(port);
                doomed.extend([*key, reverse]);
            }
        }
        for key in &doomed {
            let _ = flows.remove(key);
        }
        let doomed: BTreeSet<UdpFlowKey> = doomed.into_iter().collect();
        let mut entries = entries;
        entries.retain(|key, _| !doomed.contains(key));
        let mut live: BTreeMap<u16, u64> = served.keys().map(|p| (*p, 0)).collect();
        for entry in entries.values().filter(|e| e.to_client == 0) {
            *live.entry(entry.listener_port as u16).or_default() += 1;
        }
        *self.swept.lock().unwrap() = entries;
        if let Ok(mut counts) = ebpf.map_mut(UDP_NAT_LIVE_MAP).context("UDP_NAT_LIVE").and_then(|m| Ok(Array::<_, u64>::try_from(m)?)) {
            for (port, n) in &live {
                if let Some(s) = served.get(port) {
                    let _ = counts.set(s.index, n, 0);
                }
            }
        }
        if changed.is_empty() {
            return;
        }
        let Ok(map) = ebpf.map_mut(UDP_NAT_LISTENERS_MAP).context("UDP_NAT_LISTENERS") else { return };
        let Ok(mut listeners) = HashMap::<_, u32, UdpNatListener>::try_from(map) else { return };
        for port in changed {
            let s = &served[&port];
            // The program reads only index/slots/idle; the counters are the agent's, for bpftool.
            let _ = listeners.insert(u32::from(port), s.info, 0);
        }
    }

    /// Per-listener counters, CPUs summed; row 0 counts fragments.
    fn stats(&self) -> BTreeMap<u32, UdpNatStats> {
        let ebpf = self.ebpf.lock().unwrap();
        let Some(map) = ebpf.map(UDP_NAT_STATS_MAP) else { return BTreeMap::new() };
        let Ok(stats) = PerCpuHashMap::<&MapData, u32, UdpNatStats>::try_from(map) else { return BTreeMap::new() };
        stats.iter().filter_map(Result::ok).map(|(port, cpus)| (port, cpus.iter().fold(UdpNatStats::default(), add_stats))).collect()
    }

    /// The kernel's UDP listeners among `wanted`, for `inspect` and
    /// `/metrics`, and the fragments it could match to no datagram.
    pub fn state(&self, wanted: &BTreeMap<u16, ListenerConfig>) -> (Vec<ListenerState>, u64) {
        let stats = self.stats();
        let served = self.served.lock().unwrap();
        let flows = self.swept.lock().unwrap();
        let now = super::kernel_splice::monotonic_ns();
        let listeners = served
            .iter()
            .filter_map(|(port, s)| {
                let config = wanted.get(port)?;
                let counts = stats.get(&u32::from(*port)).copied().unwrap_or_default();
                Some(state::listener_state(*port, config, &counts, &s.info, &flows, now))
            })
            .collect();
        (listeners, stats.get(&0).map_or(0, |s| s.fragments_passed))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Write {
    /// Every entry of the new lists.
    Insert,
    /// Entries of the old lists the new ones do not have.
    RemoveStale,
}

/// A listener's CIDR list entries as trie keys: IPv4 CIDRs and IPv4-mapped
/// IPv6 ones (the program sees IPv4 clients only; other IPv6 CIDRs match
/// none of them, though they still make an allow list exist).
fn cidr_keys(list: &[Cidr]) -> BTreeSet<(u32, [u8; 4])> {
    list.iter()
        .filter_map(|c| match c.addr() {
            IpAddr::V4(a) => Some((u32::from(c.prefix_len()), a.octets())),
            IpAddr::V6(a) => a.to_ipv4_mapped().filter(|_| c.prefix_len() >= 96).map(|v4| (u32::from(c.prefix_len() - 96), v4.octets())),
        })
        .map(|(prefix, addr)| (32 + prefix, addr))
        .collect()
}

fn write_cidrs(ebpf: &mut Ebpf, port: u16, new: &ListenerPolicyConfig, old: &ListenerPolicyConfig, write: Write) -> anyhow::Result<()> {
    for (name, new_list, old_list) in [(UDP_NAT_ALLOW_MAP, &new.allow, &old.allow), (UDP_NAT_DENY_MAP, &new.deny, &old.deny)] {
        let mut trie: LpmTrie<_, UdpCidrKey, u32> = LpmTrie::try_from(ebpf.map_mut(name).with_context(|| name.to_string())?)?;
        let (new_keys, old_keys) = (cidr_keys(new_list), cidr_keys(old_list));
        let key = |(bits, addr): (u32, [u8; 4])| Key::new(bits, UdpCidrKey { port: u32::from(port).to_be_bytes(), addr });
        match write {
            Write::Insert => {
                for k in &new_keys {
                    trie.insert(&key(*k), 1, 0).with_context(|| format!("writing {name} for UDP port {port}"))?;
                }
            }
            Write::RemoveStale => {
                for k in old_keys.difference(&new_keys) {
                    let _ = trie.remove(&key(*k));
                }
            }
        }
    }
    Ok(())
}

fn add_stats(a: UdpNatStats, s: &UdpNatStats) -> UdpNatStats {
    UdpNatStats {
        datagrams_from_clients: a.datagrams_from_clients + s.datagrams_from_clients,
        bytes_from_clients: a.bytes_from_clients + s.bytes_from_clients,
        datagrams_to_clients: a.datagrams_to_clients + s.datagrams_to_clients,
        bytes_to_clients: a.bytes_to_clients + s.bytes_to_clients,
        flows_created: a.flows_created + s.flows_created,
        dropped_no_endpoint: a.dropped_no_endpoint + s.dropped_no_endpoint,
        dropped_no_port: a.dropped_no_port + s.dropped_no_port,
        dropped_unroutable: a.dropped_unroutable + s.dropped_unroutable,
        fragments_passed: a.fragments_passed + s.fragments_passed,
        fragments_forwarded: a.fragments_forwarded + s.fragments_forwarded,
        dropped_client_denied: a.dropped_client_denied + s.dropped_client_denied,
        dropped_flow_limit: a.dropped_flow_limit + s.dropped_flow_limit,
        icmp_translated: a.icmp_translated + s.icmp_translated,
    }
}

/// The slots of a listener's pick table: its IPv4 endpoints in smooth
/// weighted round-robin order, `UDP_NAT_SLOTS_PER_LISTENER` of them. A
/// backendRef's weight is shared equally by its endpoints; a backendRef
/// without endpoints (or weight 0) gets no slot (IPv6 endpoints are left to
/// the relay and get none either). Empty: no endpoint at all.
pub fn pick_table(backends: &[BackendGroup]) -> Vec<SocketAddrV4> {
    let mut candidates: Vec<(SocketAddrV4, f64)> = Vec::new();
    for group in backends {
        let v4: Vec<SocketAddrV4> = group.endpoints.iter().filter_map(|e| match e { SocketAddr::V4(a) => Some(*a), SocketAddr::V6(_) => None }).collect();
        if group.weight == 0 || v4.is_empty() {
            continue;
        }
        let share = f64::from(group.weight) / v4.len() as f64;
        candidates.extend(v4.into_iter().map(|a| (a, share)));
    }
    if candidates.is_empty() {
        return Vec::new();
    }
    let total: f64 = candidates.iter().map(|c| c.1).sum();
    let mut current = vec![0f64; candidates.len()];
    let mut slots = Vec::with_capacity(UDP_NAT_SLOTS_PER_LISTENER as usize);
    for _ in 0..UDP_NAT_SLOTS_PER_LISTENER {
        for (c, (_, w)) in current.iter_mut().zip(&candidates) {
            *c += w;
        }
        let best = (0..candidates.len()).max_by(|a, b| current[*a].total_cmp(&current[*b]).then(b.cmp(a))).unwrap();
        current[best] -= total;
        slots.push(candidates[best].0);
    }
    slots
}

/// The node's address on the leg toward `endpoint` (the source the routing
/// table picks) and the interface that address is on.
fn leg_toward(endpoint: SocketAddrV4) -> anyhow::Result<(Ipv4Addr, u32)> {
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.connect(endpoint)?;
    let IpAddr::V4(local) = socket.local_addr()?.ip() else { anyhow::bail!("an IPv6 source toward an IPv4 endpoint") };
    let (name, _) = node_addresses()?.into_iter().find(|(_, a)| *a == local).with_context(|| format!("no interface holds {local}"))?;
    if name == "lo" {
        anyhow::bail!("{endpoint} is the node itself");
    }
    let c_name = std::ffi::CString::new(name.clone())?;
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if ifindex == 0 {
        anyhow::bail!("interface {name} has no index");
    }
    Ok((local, ifindex))
}

/// (interface, IPv4 address) of this namespace, from getifaddrs(3).
fn node_addresses() -> anyhow::Result<Vec<(String, Ipv4Addr)>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills the pointer with a list freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getifaddrs");
    }
    let mut out = Vec::new();
    let mut at = list;
    // SAFETY: walking the list getifaddrs returned, up to its null end.
    unsafe {
        while !at.is_null() {
            let addr = (*at).ifa_addr;
            if !addr.is_null() && i32::from((*addr).sa_family) == libc::AF_INET {
                let sin = &*(addr as *const libc::sockaddr_in);
                let name = std::ffi::CStr::from_ptr((*at).ifa_name).to_string_lossy().into_owned();
                out.push((name, Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))));
            }
            at = (*at).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    Ok(out)
}

/// Interfaces holding an IPv4 address, but loopback.
fn node_interfaces() -> anyhow::Result<Vec<(String, Ipv4Addr)>> {
    Ok(node_addresses()?.into_iter().filter(|(n, _)| n != "lo").collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(weight: u32, endpoints: &[&str]) -> BackendGroup {
        BackendGroup { name: "ns/svc:53".into(), weight, endpoints: endpoints.iter().map(|e| e.parse().unwrap()).collect(), ..Default::default() }
    }

    #[test]
    fn map_types_have_the_layout_the_program_uses() {
        assert_eq!(std::mem::size_of::<UdpFlowKey>(), 12);
        assert_eq!(std::mem::size_of::<UdpFlowEntry>(), 56);
        assert_eq!(std::mem::size_of::<UdpNatListener>(), 48);
        assert_eq!(std::mem::size_of::<UdpNatEndpoint>(), 16);
        assert_eq!(std::mem::size_of::<UdpNatStats>(), 104);
    }

    #[test]
    fn the_pick_table_follows_the_weights_in_every_run_of_slots() {
        let table = pick_table(&[group(80, &["198.18.2.2:53"]), group(20, &["198.18.3.2:53", "198.18.3.3:53"])]);
        assert_eq!(table.len(), UDP_NAT_SLOTS_PER_LISTENER as usize);
        let a: SocketAddrV4 = "198.18.2.2:53".parse().unwrap();
        // Any 100 consecutive slots (a per-CPU cursor's run of new flows): 80 ± 1 to the first.
        for start in 0..(table.len() - 100) {
            let n = table[start..start + 100].iter().filter(|e| **e == a).count();
            assert!((79..=81).contains(&n), "slots {start}..: {n}");
        }
        let b = table.iter().filter(|e| e.to_string() == "198.18.3.2:53").count();
        let c = table.iter().filter(|e| e.to_string() == "198.18.3.3:53").count();
        assert!(b.abs_diff(c) <= 1 && b + c > 190, "{b} {c}");
    }

    #[test]
    fn backends_without_endpoints_or_weight_get_no_slot() {
        assert!(pick_table(&[group(1, &[]), group(0, &["198.18.2.2:53"])]).is_empty());
        let table = pick_table(&[group(1, &[]), group(3, &["198.18.2.2:53", "[2001:db8::1]:53"])]);
        assert!(table.iter().all(|e| e.to_string() == "198.18.2.2:53"));
    }
}
