//! The XDP client-address filter: per listener port, allow and deny lists of
//! client CIDRs, enforced by `sockgate_xdp_filter` on the node's ingress
//! interfaces before the TCP stack spends anything on a packet.
//!
//! Semantics (per port): a client in the deny list is dropped; else, if the
//! port has an allow list, a client in none of its CIDRs is dropped; else it
//! passes. Deny wins over allow; a port with neither list is not filtered.
//! IPv4 and IPv6 CIDRs both work, and each only matches its own family (an
//! IPv4-mapped CIDR such as `::ffff:10.0.0.0/104` counts as IPv4).
//!
//! Only TCP packets to a filtered port whose destination is a node address
//! ([`XdpFilter::set_node_addresses`]) are judged; the filter judges nothing
//! until it is given node addresses. `0.0.0.0` stands for every IPv4
//! destination and `::` for every destination, as a listening socket's address
//! does: with those, packets the node forwards (not addressed to it) to a
//! filtered port are judged too. Non-first fragments pass (their first
//! fragment is judged); so do IPv6 packets with more than four extension
//! headers or an AH/ESP header, and 802.1Q/802.1ad frames with more than two tags.
//!
//! Rules change as a diff (`xdp/plan.rs`): entries that tighten go in before a port
//! switches to its new settings, entries that loosen come out after, so while
//! a change is being written no client is dropped that both the old and the
//! new rules pass, and none passes that both drop.
//!
//! Use: [`XdpFilter::load`], then [`set_node_addresses`](XdpFilter::set_node_addresses)
//! and [`set_rules`](XdpFilter::set_rules), then [`attach`](XdpFilter::attach)
//! to each ingress interface. In that order a new agent that takes over from a
//! running one (an upgrade) judges every packet by the rules from the moment
//! its program replaces the old one in the old one's bpf_link.
//!
//! The maps are pinned in the pin directory (default `/sys/fs/bpf/sockgate`)
//! with BTF: `bpftool map dump pinned /sys/fs/bpf/sockgate/XDP_DENY` prints
//! each entry's port, address and prefix by name. The ports' counters are
//! kept across such a takeover (carried over from the pinned `XDP_STATS`).
mod cidr;
mod netlink;
mod plan;
mod stale;

pub use cidr::{Cidr, CidrError};

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap, Map, MapData, MapInfo, PerCpuHashMap, PerCpuValues};
use aya::programs::{Xdp, XdpMode};
use aya::util::nr_cpus;
use aya::{Ebpf, EbpfLoader};
use gateway_common::{
    ClientCidr, ClientCidrEntry, ListenerPort, NodeAddress, XdpPortFilter, XdpPortStats, NODE_ANY,
    NODE_ANY_IPV4, XDP_ALLOW_MAP, XDP_DENY_MAP, XDP_FILTER_PROGRAM, XDP_NODE_ADDRS_MAP,
    XDP_PORTS_MAP, XDP_STATS_MAP,
};

use self::plan::{List, Op, Tables};
use self::stale::Existing;
use super::kernel::{prepare_pin_dir, OBJECT};

const PINNED: [&str; 5] = [
    XDP_ALLOW_MAP,
    XDP_DENY_MAP,
    XDP_PORTS_MAP,
    XDP_NODE_ADDRS_MAP,
    XDP_STATS_MAP,
];

/// One port's client CIDR lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientCidrs {
    pub allow: Vec<Cidr>,
    pub deny: Vec<Cidr>,
}

/// How the program runs on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Native XDP, in the driver's receive path.
    Driver,
    /// Generic XDP, after the kernel built an skb: slower, works on any interface.
    Generic,
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::Driver => "driver",
            AttachMode::Generic => "generic (skb)",
        })
    }
}

/// The loaded filter. Dropping it detaches the program from every interface
/// (unless a newer agent has taken an attachment over) and removes the pins
/// (unless a newer agent has replaced them). Load, attach and drop it in the
/// network namespace of the interfaces: interface names and netlink requests
/// resolve in the calling thread's namespace.
pub struct XdpFilter {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    /// Each pin made, with the id of the map it pins.
    pins: Vec<(PathBuf, u32)>,
    attachments: Vec<(String, AttachMode)>,
    /// Links taken over from an earlier agent (it may still hold them too).
    adopted: Vec<OwnedFd>,
    /// What the maps hold, as written, so changes write only differences.
    written: Tables,
    node_addresses: BTreeSet<NodeAddress>,
    /// The counters an earlier agent's pinned map held, per port, until the
    /// port is filtered again here.
    carried: BTreeMap<ListenerPort, PerCpuValues<XdpPortStats>>,
}

impl XdpFilter {
    /// Loads the program and pins its maps under `pin_dir`, replacing pins an
    /// earlier agent left there (and carrying its per-port counters over).
    /// Attaches nothing: give it rules and node addresses, then
    /// [`attach`](Self::attach) it, so it judges from its first packet on.
    pub fn load(pin_dir: &Path) -> anyhow::Result<XdpFilter> {
        // SAFETY: sysconf(3) only reads a constant.
        let page = (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).max(4096) as u32;
        // The object's other programs log through a 128 KiB ring buffer that
        // this instance never reads: one page is enough for the map to exist.
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("AYA_LOGS", page)
            .load(OBJECT)
            .context("loading sockgate's eBPF object")?;
        let program: &mut Xdp = ebpf
            .program_mut(XDP_FILTER_PROGRAM)
            .context("XDP program missing from the eBPF object")?
            .try_into()?;
        program
            .load()
            .context("loading the XDP filter program (is BPF available to this process?)")?;
        let carried = match carried_stats(pin_dir) {
            Ok(carried) => carried,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "the earlier agent's XDP counters could not be carried over; starting from zero");
                BTreeMap::new()
            }
        };
        prepare_pin_dir(pin_dir, &PINNED)?;
        // From here on, dropping `filter` undoes what is done (pins, links).
        let mut filter = XdpFilter {
            ebpf,
            pin_dir: pin_dir.to_path_buf(),
            pins: Vec::new(),
            attachments: Vec::new(),
            adopted: Vec::new(),
            written: Tables::default(),
            node_addresses: BTreeSet::new(),
            carried,
        };
        for name in PINNED {
            let path = pin_dir.join(name);
            let map = filter
                .ebpf
                .map(name)
                .with_context(|| format!("map {name} missing from the eBPF object"))?;
            map.pin(&path)
                .with_context(|| format!("pinning map {name} in {}", pin_dir.display()))?;
            let id = MapInfo::from_pin(&path)
                .map(|info| info.id())
                .with_context(|| format!("reading back the pin {}", path.display()))?;
            filter.pins.push((path, id));
        }
        Ok(filter)
    }

    /// Runs the filter on `interface`: in driver mode, or in generic mode where
    /// the driver refuses. A sockgate filter an earlier agent attached through
    /// a bpf_link is taken over in place (the link runs this program from one
    /// packet to the next, in its mode); one attached through netlink is
    /// replaced. Another program's XDP is never replaced: attaching fails
    /// saying whose it is.
    pub fn attach(&mut self, interface: &str) -> anyhow::Result<AttachMode> {
        if let Some((_, mode)) = self.attachments.iter().find(|(i, _)| i == interface) {
            return Ok(*mode);
        }
        let c_name = std::ffi::CString::new(interface)
            .with_context(|| format!("interface name {interface:?}"))?;
        // SAFETY: a valid NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
        if ifindex == 0 {
            bail!("no interface {interface:?} in this network namespace");
        }
        let existing = stale::find(ifindex, interface)?;
        let program: &mut Xdp = self
            .ebpf
            .program_mut(XDP_FILTER_PROGRAM)
            .context("XDP program")?
            .try_into()?;
        if let [Existing::Link {
            link,
            program: old,
            mode,
        }] = existing[..]
        {
            let fd = stale::take_over(link, program.fd()?.as_fd()).with_context(|| {
                format!("taking over the earlier agent's XDP link on {interface}")
            })?;
            self.adopted.push(fd);
            let mode = if mode == netlink::XDP_FLAGS_DRV_MODE {
                AttachMode::Driver
            } else {
                AttachMode::Generic
            };
            tracing::info!(interface, link, replaced_program = old, %mode, "took over the XDP filter of an earlier agent in place");
            self.attachments.push((interface.to_string(), mode));
            return Ok(mode);
        }
        for stale in &existing {
            match *stale {
                Existing::Link { link, .. } => stale::detach_link(link)
                    .with_context(|| format!("detaching XDP link {link} from {interface}"))?,
                Existing::Netlink { program: old, mode } => netlink::detach(ifindex, mode)
                    .with_context(|| format!("detaching XDP program {old} from {interface}"))?,
            }
            tracing::info!(
                interface,
                ?stale,
                "removed the XDP filter an earlier agent left attached"
            );
        }
        let mode = match program.attach_to_if_index(ifindex, XdpMode::Driver) {
            Ok(_) => AttachMode::Driver,
            Err(driver) => match program.attach_to_if_index(ifindex, XdpMode::Skb) {
                Ok(_) => {
                    tracing::info!(interface, reason = %driver, "the driver refused native XDP; the filter runs in generic (skb) mode");
                    AttachMode::Generic
                }
                Err(generic) => bail!(
                    "attaching the XDP filter to {interface}: driver mode: {driver}; generic mode: {generic}"
                ),
            },
        };
        self.attachments.push((interface.to_string(), mode));
        Ok(mode)
    }

    /// Each interface the program is attached to, and how it runs there.
    pub fn attachments(&self) -> &[(String, AttachMode)] {
        &self.attachments
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Makes the filter enforce exactly `rules` (listener port → CIDR lists;
    /// ports absent or with empty lists are not filtered), writing only what
    /// changed, in an order that never lets through a client both the old and
    /// the new rules drop. On an error the maps hold a state between the two;
    /// calling again with the same rules finishes the change.
    pub fn set_rules(&mut self, rules: &BTreeMap<u16, ClientCidrs>) -> anyhow::Result<()> {
        let desired = Tables::for_rules(rules);
        let ops = plan::plan(&self.written, &desired);
        let added: Vec<ListenerPort> = desired
            .ports
            .keys()
            .filter(|p| !self.written.ports.contains_key(p))
            .copied()
            .collect();
        let removed: Vec<ListenerPort> = self
            .written
            .ports
            .keys()
            .filter(|p| !desired.ports.contains_key(p))
            .copied()
            .collect();
        // A port's counters exist before it is filtered (the program only
        // updates existing entries) and go after it no longer is.
        let mut stats: PerCpuHashMap<_, ListenerPort, XdpPortStats> =
            PerCpuHashMap::try_from(self.ebpf.map_mut(XDP_STATS_MAP).context("XDP_STATS")?)?;
        let cpus = nr_cpus().map_err(|(_, e)| e)?;
        for port in &added {
            let initial = match self.carried.remove(port) {
                Some(carried) => carried,
                None => PerCpuValues::try_from(vec![XdpPortStats::default(); cpus])?,
            };
            stats
                .insert(port, initial, 0)
                .with_context(|| format!("creating the XDP counters of port {port}"))?;
        }
        for op in &ops {
            self.write(op)
                .with_context(|| format!("updating the XDP filter ({op:?})"))?;
            self.written.apply(op);
        }
        let mut stats: PerCpuHashMap<_, ListenerPort, XdpPortStats> =
            PerCpuHashMap::try_from(self.ebpf.map_mut(XDP_STATS_MAP).context("XDP_STATS")?)?;
        for port in &removed {
            stats
                .remove(port)
                .with_context(|| format!("removing the XDP counters of port {port}"))?;
        }
        Ok(())
    }

    fn write(&mut self, op: &Op) -> anyhow::Result<()> {
        match *op {
            Op::Insert(list, key, entry) => {
                self.trie(list)?
                    .insert(&Key::new(key.prefix_len, key.data), entry, 0)?
            }
            Op::Remove(list, key) => self
                .trie(list)?
                .remove(&Key::new(key.prefix_len, key.data))?,
            Op::SetPort(port, filter) => self.ports()?.insert(port, filter, 0)?,
            Op::RemovePort(port) => self.ports()?.remove(&port)?,
        }
        Ok(())
    }

    fn trie(
        &mut self,
        list: List,
    ) -> anyhow::Result<LpmTrie<&mut MapData, ClientCidr, ClientCidrEntry>> {
        let name = match list {
            List::Allow => XDP_ALLOW_MAP,
            List::Deny => XDP_DENY_MAP,
        };
        Ok(LpmTrie::try_from(
            self.ebpf
                .map_mut(name)
                .with_context(|| format!("{name} map"))?,
        )?)
    }

    fn ports(&mut self) -> anyhow::Result<HashMap<&mut MapData, ListenerPort, XdpPortFilter>> {
        Ok(HashMap::try_from(
            self.ebpf.map_mut(XDP_PORTS_MAP).context("XDP_PORTS map")?,
        )?)
    }

    /// The destination addresses the filter applies to: the node's addresses
    /// its listeners serve. `0.0.0.0` means every IPv4 destination, `::` every
    /// destination (IPv4 included, like a dual-stack listener). Empty: the
    /// filter judges nothing. Added before removed, as a diff.
    pub fn set_node_addresses(&mut self, addresses: &[IpAddr]) -> anyhow::Result<()> {
        let desired: BTreeSet<NodeAddress> = addresses.iter().map(|a| node_address(*a)).collect();
        let mut map: HashMap<_, NodeAddress, u32> = HashMap::try_from(
            self.ebpf
                .map_mut(XDP_NODE_ADDRS_MAP)
                .context("XDP_NODE_ADDRS map")?,
        )?;
        for address in desired.difference(&self.node_addresses) {
            map.insert(address, 1, 0)
                .context("adding a node address to the XDP filter")?;
        }
        for address in self.node_addresses.difference(&desired) {
            map.remove(address)
                .context("removing a node address from the XDP filter")?;
        }
        self.node_addresses = desired;
        Ok(())
    }

    /// Packets and bytes dropped per filtered port since it became filtered
    /// (with what an earlier agent counted, when this one took over from it).
    pub fn drops(&self) -> anyhow::Result<BTreeMap<u16, (u64, u64)>> {
        Ok(self
            .stats()?
            .into_iter()
            .map(|(port, s)| (port, (s.dropped_packets, s.dropped_bytes)))
            .collect())
    }

    /// All counters per filtered port (dropped and passed), summed over CPUs.
    pub fn stats(&self) -> anyhow::Result<BTreeMap<u16, XdpPortStats>> {
        let map = self.ebpf.map(XDP_STATS_MAP).context("XDP_STATS map")?;
        summed_stats(&PerCpuHashMap::try_from(map)?)
    }
}

/// The counters in the pinned `XDP_STATS` under `pin_dir`, per filtered port,
/// summed over CPUs: what [`XdpFilter::stats`] says, for another process
/// (`gateway-agent inspect`).
pub fn read_pinned_stats(pin_dir: &Path) -> anyhow::Result<BTreeMap<u16, XdpPortStats>> {
    let pin = pin_dir.join(XDP_STATS_MAP);
    let data = MapData::from_pin(&pin).with_context(|| {
        format!(
            "opening {} (is an agent with the XDP filter running with this --bpf-pin-dir?)",
            pin.display()
        )
    })?;
    summed_stats(&PerCpuHashMap::try_from(Map::PerCpuHashMap(data))?)
}

fn summed_stats<T: std::borrow::Borrow<MapData>>(
    map: &PerCpuHashMap<T, ListenerPort, XdpPortStats>,
) -> anyhow::Result<BTreeMap<u16, XdpPortStats>> {
    let mut out = BTreeMap::new();
    for entry in map.iter() {
        let (port, per_cpu) = entry?;
        let total = per_cpu
            .iter()
            .fold(XdpPortStats::default(), |sum, s| XdpPortStats {
                dropped_packets: sum.dropped_packets + s.dropped_packets,
                dropped_bytes: sum.dropped_bytes + s.dropped_bytes,
                passed_packets: sum.passed_packets + s.passed_packets,
                passed_bytes: sum.passed_bytes + s.passed_bytes,
            });
        out.insert(port as u16, total);
    }
    Ok(out)
}

impl Drop for XdpFilter {
    fn drop(&mut self) {
        let program = self
            .ebpf
            .program_mut(XDP_FILTER_PROGRAM)
            .and_then(|p| <&mut Xdp>::try_from(p).ok());
        if let Some(program) = program {
            // Links taken over from an earlier agent: that agent may hold them
            // too, so closing ours would not detach them; detach them unless
            // a newer agent has taken them over in turn.
            if let Ok(id) = program.info().map(|info| info.id()) {
                for link in &self.adopted {
                    let _ = stale::detach_if_running(link, id);
                }
            }
            // Closes this program's own links now, not whenever `ebpf` goes
            // (a link a newer agent took over stays: that agent holds it too).
            let _ = program.unload();
        }
        for (path, id) in &self.pins {
            // Only pins still ours: a newer agent may have replaced them.
            if MapInfo::from_pin(path).is_ok_and(|info| info.id() == *id) {
                let _ = std::fs::remove_file(path);
            }
        }
        // Shared with the listener maps' pins: removed only once empty.
        let _ = std::fs::remove_dir(&self.pin_dir);
    }
}

/// The per-CPU counters of an earlier agent's pinned `XDP_STATS`, if any.
fn carried_stats(
    pin_dir: &Path,
) -> anyhow::Result<BTreeMap<ListenerPort, PerCpuValues<XdpPortStats>>> {
    let pin = pin_dir.join(XDP_STATS_MAP);
    if !pin.exists() {
        return Ok(BTreeMap::new());
    }
    let old: PerCpuHashMap<_, ListenerPort, XdpPortStats> =
        PerCpuHashMap::try_from(Map::PerCpuHashMap(MapData::from_pin(&pin)?))?;
    let mut carried = BTreeMap::new();
    for entry in old.iter() {
        let (port, per_cpu) = entry?;
        carried.insert(port, per_cpu);
    }
    Ok(carried)
}

/// `addr` as an `XDP_NODE_ADDRS` key (IPv4 as IPv4-mapped; the unspecified
/// addresses become the wildcards).
fn node_address(addr: IpAddr) -> NodeAddress {
    match addr {
        IpAddr::V4(v4) if v4.is_unspecified() => NODE_ANY_IPV4,
        IpAddr::V6(v6) if v6.is_unspecified() => NODE_ANY,
        IpAddr::V4(v4) => NodeAddress {
            addr: v4.to_ipv6_mapped().octets(),
        },
        IpAddr::V6(v6) => NodeAddress { addr: v6.octets() },
    }
}
