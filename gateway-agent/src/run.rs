//! `gateway-agent run`: the reconcile loop.
//!
//! source → snapshot → translate → data plane (and, in Kubernetes mode, status
//! written by the elected leader). The source is a manifests directory
//! (standalone) or the API server's reflectors (Kubernetes mode); everything
//! after the snapshot is the same. A source that fails or disappears leaves
//! the last good configuration serving.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::jiff::Timestamp;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::cli::{AfterHandover, RunArgs};
use crate::dataplane::listeners::ListenerSet;
use crate::dataplane::udp::UdpRelay;
use crate::dataplane::xdp::{ClientCidrs, XdpFilter};
use crate::dataplane::{kernel::KernelListeners, load_kernel, select_path, KernelSpliceSettings};
use crate::health::Health;
use crate::model::config::DataplaneConfig;
use crate::model::status::StatusReport;
use crate::model::transitions::carry;
use crate::model::{translate, Settings};
use crate::sources::creation::CreationClock;
use crate::sources::manifests::{load_dir, Loaded};
use crate::sources::watch::fingerprint;
use crate::status::lease::Leases;
use crate::status::render::status_objects;
use crate::status::writer::StatusWriter;
use crate::takeover::{self, Offer};

pub fn now() -> Timestamp {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp::new(since_epoch.as_secs() as i64, since_epoch.subsec_nanos() as i32).unwrap_or(Timestamp::UNIX_EPOCH)
}

pub async fn run(args: RunArgs) -> Result<()> {
    let started = std::time::Instant::now();
    // The eBPF maps are for counting and inspection, not for serving: they are
    // loaded beside the path's self-test and installed when the verifier is
    // done (hundreds of milliseconds on a busy node), so a restart serves at once.
    crate::requirements::warn_missing(args.dataplane, &args.bpf_pin_dir, args.cgroup.is_some());
    let (mode, pin_dir, cgroup) = (args.dataplane, args.bpf_pin_dir.clone(), args.cgroup.clone());
    let kernel_loading = tokio::task::spawn_blocking(move || load_kernel(mode, &pin_dir, cgroup.as_deref()));
    let splice_settings = KernelSpliceSettings { pin_dir: args.bpf_pin_dir.clone(), interfaces: args.splice_interfaces.clone(), handover_after: args.kernel_splice_after };
    let (path, path_reason) = select_path(args.dataplane, &splice_settings).await?;
    tracing::info!(path = path.name(), "data path: {path_reason}");
    let mut listeners = ListenerSet::new(args.listen_address, Arc::clone(&path), args.connect_timeout);
    tracing::info!(capacity = listeners.capacity(), "connections this agent takes at most, all listeners together (its open-files limit allows no more)");
    // Before the takeover: the UDP NAT's program goes first in each chain and
    // carries the flows of the shared table at once, while the running
    // agent's, now after it, still starts the new flows until it goes.
    let udp_nat = load_udp_nat(&args);
    take_over(&args, &mut listeners).await?;
    let health = Arc::new(Health::default());
    let health_task = match args.health_address {
        Some(addr) => Some(crate::health::serve(addr, health.clone(), HEALTH_PATIENCE).await.with_context(|| format!("health endpoint on {addr}"))?),
        None => None,
    };
    let offer = Offer::bind(&args.takeover_socket)?;
    let xdp = load_xdp(&args);
    let mut udp = UdpRelay::new(args.listen_address);
    udp.set_kernel(udp_nat.is_some());
    health.publish_udp(udp.served());
    let mut applier = Applier {
        listeners,
        udp,
        udp_nat,
        udp_state_file: args.udp_state_file.clone(),
        backend_health_file: args.backend_health_file.clone(),
        listeners_file: args.listeners_file.clone(),
        bpf_pin_dir: args.bpf_pin_dir.clone(),
        xdp,
        xdp_unattached: args.xdp_interfaces.clone(),
        bind_address: args.listen_address,
        kernel: None,
        kernel_loading: Some(kernel_loading),
        dataplane: DataplaneConfig::default(),
        clock: first_seen_clock(args.source.first_seen_file().as_deref().filter(|_| args.source.manifests.is_some())),
        first_seen_file: args.source.first_seen_file().filter(|_| args.source.manifests.is_some()),
        first_seen_unsaved: false,
        status: StatusReport::default(),
        settings: Settings { controller_name: args.source.controller_name.clone(), gateway_addresses: args.source.gateway_addresses.clone(), ..Settings::default() },
        health: health.clone(),
        settle_limit: settle_limit(&args),
        applied_once: false,
        said: Default::default(),
    };
    tracing::info!(elapsed = ?started.elapsed(), "serving");
    // Loading the eBPF objects freed what parsing the kernel's BTF took.
    crate::memory::release_free();
    let mut stop = Stop::new()?;
    let ending = match args.source.manifests.clone() {
        Some(dir) => standalone(dir, args.reload_interval, &mut applier, &mut stop, &offer).await,
        None => kubernetes(&args, &mut applier, &mut stop, &offer).await,
    };
    match ending {
        Ok(Ending::Signalled) => {
            let drained = applier.listeners.drain(args.drain_timeout).await;
            tracing::info!(
                "drained; shutting down: {} connection{} taken from the accept queues as the listeners closed, {} still open at the deadline and reset",
                drained.accepted_at_close,
                if drained.accepted_at_close == 1 { "" } else { "s" },
                drained.reset_at_deadline
            );
            applier.shutdown().await;
            Ok(())
        }
        Ok(Ending::HandedOver(conn)) => {
            // Release what the successor needs (programs, health port, the
            // takeover socket) before closing the connection it waits on.
            if let Some(task) = health_task {
                task.abort();
                let _ = task.await;
            }
            drop(applier);
            drop(offer);
            drop(conn);
            tracing::info!("handed over to the new agent; this one serves nothing more");
            if args.after_handover == AfterHandover::WaitForSignal {
                stopping(&mut stop.ending).await;
            }
            Ok(())
        }
        Err(e) => {
            tracing::info!("shutting down: closing listeners and connections");
            applier.shutdown().await;
            Err(e)
        }
    }
}

/// The XDP client filter on the interfaces asked for; without it (none asked
/// for, or loading failed) clientCIDRs are still enforced when accepting.
fn load_xdp(args: &RunArgs) -> Option<XdpFilter> {
    if args.xdp_interfaces.is_empty() {
        return None;
    }
    let filter = match XdpFilter::load(&args.bpf_pin_dir) {
        Ok(filter) => filter,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "the XDP client filter could not be loaded; clientCIDRs are enforced at accept only");
            return None;
        }
    };
    Some(filter)
}

/// The first-seen times a previous agent kept (standalone mode), or none.
fn first_seen_clock(file: Option<&std::path::Path>) -> CreationClock {
    let Some(file) = file else { return CreationClock::default() };
    match CreationClock::load(file) {
        Ok(clock) => clock,
        Err(e) => {
            tracing::warn!("{e}; every object counts as first seen now, so the order that settles conflicts may differ from before the restart");
            CreationClock::default()
        }
    }
}

/// A health port still held by the agent this one takes over from is retried this long.
const HEALTH_PATIENCE: Duration = Duration::from_secs(5);

/// How long connections still connecting to a backend may take before a
/// handover goes on without them: every attempt of one connection, and a margin.
fn settle_limit(args: &RunArgs) -> Duration {
    args.connect_timeout * crate::dataplane::listeners::CONNECT_ATTEMPTS as u32 + Duration::from_secs(1)
}

/// Asks an agent already running on this node for its sockets and connections.
async fn take_over(args: &RunArgs, listeners: &mut ListenerSet) -> Result<()> {
    let socket = args.takeover_socket.clone();
    let timeout = settle_limit(args) + Duration::from_secs(10);
    let asked = std::time::Instant::now();
    let Some((handover, conn)) = tokio::task::spawn_blocking(move || takeover::request(&socket, timeout)).await?? else {
        return Ok(());
    };
    let (sockets, connections) = (handover.listeners.len(), handover.connections.len());
    listeners.adopt(handover)?;
    tracing::info!(listeners = sockets, connections, pause = ?asked.elapsed(), "took over from the running agent");
    tokio::task::spawn_blocking(move || takeover::wait_released(conn, Duration::from_secs(3))).await?;
    Ok(())
}

/// Why the main loop ended.
enum Ending {
    Signalled,
    /// Everything went to a new agent, which waits on this connection's close.
    HandedOver(socket2::Socket),
}

/// SIGTERM and SIGINT end the agent; SIGHUP forces a reload.
struct Stop {
    ending: (Signal, Signal),
    hangup: Signal,
}

impl Stop {
    fn new() -> Result<Stop> {
        Ok(Stop { ending: (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?), hangup: signal(SignalKind::hangup())? })
    }
}

async fn stopping(ending: &mut (Signal, Signal)) {
    tokio::select! {
        _ = ending.0.recv() => {},
        _ = ending.1.recv() => {},
    }
}

/// Standalone: poll the directory, apply each change.
async fn standalone(dir: PathBuf, interval: Duration, applier: &mut Applier, stop: &mut Stop, offer: &Offer) -> Result<Ending> {
    let mut tick = tokio::time::interval(interval);
    let mut last_seen: Option<u64> = None;
    loop {
        let forced = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.hangup.recv() => true,
            loaded = Applier::kernel_loaded(&mut applier.kernel_loading), if applier.kernel_loading.is_some() => {
                applier.install_kernel(loaded);
                continue;
            }
            _ = stopping(&mut stop.ending) => return Ok(Ending::Signalled),
            asked = offer.requested() => {
                if let Some(conn) = applier.hand_over(asked?).await {
                    return Ok(Ending::HandedOver(conn));
                }
                continue;
            }
        };
        applier.tick();
        let current = match fingerprint(&dir) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot read the manifests directory; still serving the last good configuration");
                continue;
            }
        };
        if !forced && last_seen == Some(current) {
            continue;
        }
        last_seen = Some(current);
        match load_dir(&dir) {
            Ok(loaded) => applier.apply(loaded),
            Err(errors) => {
                for e in &errors.0 {
                    tracing::error!("{e}");
                }
                let problems = match errors.0.len() {
                    1 => "1 problem".to_string(),
                    n => format!("{n} problems"),
                };
                if applier.applied_once {
                    tracing::error!("manifests rejected ({problems}); still serving the last good configuration");
                } else {
                    tracing::error!("manifests rejected ({problems}); no configuration has been applied yet, so nothing is served until it is fixed");
                }
            }
        }
    }
}

/// How long a new agent may take to acknowledge a handover.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// How often leases are renewed; a lease lapses after three missed renewals.
const LEASE_RENEW: Duration = Duration::from_secs(2);
const LEASE_DURATION: Duration = Duration::from_secs(6);
/// The leader re-reads the CRDs' bundle versions every this many renewals (30 s).
const CRD_RECHECK_TICKS: u64 = 15;

/// Kubernetes mode: reflectors feed snapshots; every agent programs its own
/// node; the leader alone writes status.
async fn kubernetes(args: &RunArgs, applier: &mut Applier, stop: &mut Stop, offer: &Offer) -> Result<Ending> {
    let client = kube::Client::try_default().await.context("connecting to the API server (in-cluster config or KUBECONFIG)")?;
    let resources = crate::sources::kube::discover(&client).await?;
    applier.settings.crds = crate::sources::kube::installed_crds(&client, &resources).await;
    let crd_resources = resources.clone();
    let mut snapshots = crate::sources::kube::start(client.clone(), resources.clone());
    let mut writer = StatusWriter::new(client.clone(), resources, &applier.settings.controller_name);
    let node = args.node_name.clone().unwrap_or_else(hostname);
    let lease_client = client.clone();
    let leases = Leases::new(client, &args.lease_namespace, &node, LEASE_DURATION);
    let own_addresses = applier.settings.gateway_addresses.clone();
    let mut leader = false;
    let mut last: Option<Arc<Loaded>> = None;
    let mut tick = tokio::time::interval(LEASE_RENEW);
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            changed = snapshots.changed() => {
                if changed.is_err() {
                    anyhow::bail!("the Kubernetes source stopped");
                }
                let Some(loaded) = snapshots.borrow_and_update().clone() else { continue };
                applier.apply((*loaded).clone());
                last = Some(loaded);
            }
            _ = tick.tick() => {
                applier.tick();
                if let Err(e) = leases.announce(&node, &own_addresses, &applier.unbound()).await {
                    tracing::warn!(error = %e, "renewing this node's lease failed; the data plane keeps serving");
                }
                let was_leader = leader;
                leader = leases.lead().await.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "leader election failed this round");
                    false
                });
                if leader != was_leader {
                    tracing::info!(node = %node, leader, "status writer {}", if leader { "elected: this agent writes status" } else { "is another agent" });
                    writer.forget();
                }
                ticks += 1;
                if leader && ticks % CRD_RECHECK_TICKS == 0 {
                    // CRDs are upgraded in place: SupportedVersion follows within half a minute.
                    let crds = crate::sources::kube::installed_crds(&lease_client, &crd_resources).await;
                    if crds != applier.settings.crds {
                        applier.settings.crds = crds;
                        if let Some(loaded) = &last {
                            applier.apply((**loaded).clone());
                        }
                    }
                }
                if leader {
                    match leases.reports().await {
                        Ok(reports) => {
                            if applier.take_node_reports(reports) {
                                if let Some(loaded) = &last {
                                    applier.apply((**loaded).clone());
                                }
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "listing node leases failed"),
                    }
                }
            }
            _ = stop.hangup.recv() => {}
            loaded = Applier::kernel_loaded(&mut applier.kernel_loading), if applier.kernel_loading.is_some() => applier.install_kernel(loaded),
            _ = stopping(&mut stop.ending) => {
                if leader {
                    leases.resign().await;
                }
                return Ok(Ending::Signalled);
            }
            asked = offer.requested() => {
                if let Some(conn) = applier.hand_over(asked?).await {
                    if leader {
                        leases.resign().await;
                    }
                    return Ok(Ending::HandedOver(conn));
                }
            }
        }
        if leader {
            if let Some(loaded) = &last {
                let objects = status_objects(&loaded.snapshot, &applier.status, &applier.settings.controller_name);
                let applied = writer.write(&objects).await;
                if applied > 0 {
                    tracing::info!(applied, "status written");
                }
            }
        }
    }
}

/// The kernel UDP NAT, with `--dataplane ebpf`; None (the relay serves UDP
/// alone) in other modes or when it cannot load. The log says which runs.
fn load_udp_nat(args: &crate::cli::RunArgs) -> Option<crate::dataplane::udp_nat::UdpNat> {
    if args.dataplane != crate::dataplane::DataplaneMode::Ebpf {
        return None;
    }
    match crate::dataplane::udp_nat::UdpNat::load(&args.bpf_pin_dir, &args.splice_interfaces, args.udp_nat_max_flows) {
        Ok(nat) => {
            tracing::info!(interfaces = %nat.interfaces().join(", "), pins = %args.bpf_pin_dir.display(), "UDP data path: kernel UDP NAT (TC ingress, LRU flow table; no socket per flow); the userspace relay stays bound for IPv6");
            Some(nat)
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "UDP data path: the kernel UDP NAT cannot load here; the userspace relay serves every UDP listener");
            None
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "unknown".into())
}

/// Everything after the snapshot: translate, program, remember.
struct Applier {
    listeners: ListenerSet,
    /// UDP listeners: the userspace relay (no in-kernel UDP path yet).
    udp: UdpRelay,
    /// The kernel UDP NAT (`--dataplane ebpf`), serving UDP listeners in TC;
    /// the relay stays bound beside it for what passes to the stack (fragments, IPv6).
    udp_nat: Option<crate::dataplane::udp_nat::UdpNat>,
    udp_state_file: PathBuf,
    backend_health_file: PathBuf,
    /// What each listener serves, by name, for `inspect` (the maps hold ports and addresses only).
    listeners_file: PathBuf,
    /// Written into the listeners file, so `inspect` names ports only for these pins.
    bpf_pin_dir: PathBuf,
    xdp: Option<XdpFilter>,
    /// Interfaces the filter goes on once it holds the first rules: attached
    /// empty, it would let denied clients through (or, taking over a running
    /// agent's filter in place, reopen what that one kept shut).
    xdp_unattached: Vec<String>,
    /// The listeners' address (for the XDP filter's destination check).
    bind_address: std::net::IpAddr,
    kernel: Option<KernelListeners>,
    kernel_loading: Option<tokio::task::JoinHandle<(Option<KernelListeners>, String)>>,
    /// The last configuration applied, for the kernel maps once they are loaded.
    dataplane: DataplaneConfig,
    clock: CreationClock,
    /// Standalone mode: where `clock` is kept across restarts.
    first_seen_file: Option<PathBuf>,
    /// Saving failed (said once, until it works again).
    first_seen_unsaved: bool,
    /// The last status, so a condition's lastTransitionTime survives changes that do not flip it.
    status: StatusReport,
    settings: Settings,
    health: Arc<Health>,
    settle_limit: Duration,
    /// Whether any configuration was applied yet (a rejected first load serves nothing).
    applied_once: bool,
    /// What was last said about skipped objects and notes, so each is logged once, at start and on change.
    said: std::collections::BTreeSet<String>,
}

impl Applier {
    /// Logs each skipped object and loader note once: when it first appears, and when it goes.
    fn announce(&mut self, loaded: &Loaded) {
        let mut lines = std::collections::BTreeMap::new();
        for i in &loaded.ignored {
            lines.insert(format!("{} {} {} ({}): a kind sockgate does not read", i.api_version, i.kind, i.name, i.file.display()), false);
        }
        for i in crate::model::ignored::ignored(&loaded.snapshot, &self.settings.controller_name) {
            lines.insert(i.to_string(), i.suspicious);
        }
        for note in &loaded.notes {
            lines.insert(note.clone(), true);
        }
        for (line, warn) in &lines {
            if self.said.contains(line) {
                continue;
            }
            if *warn {
                tracing::warn!("{line}");
            } else {
                tracing::info!("ignored: {line}");
            }
        }
        for gone in self.said.iter().filter(|l| !lines.contains_key(*l)) {
            tracing::info!("no longer the case: {gone}");
        }
        self.said = lines.into_keys().collect();
    }

    fn apply(&mut self, mut loaded: Loaded) {
        let first = !self.applied_once;
        self.applied_once = true;
        self.announce(&loaded);
        let now = now();
        self.clock.stamp(&mut loaded.snapshot, now);
        if let Some(file) = &self.first_seen_file {
            match self.clock.save(file) {
                Ok(()) => self.first_seen_unsaved = false,
                Err(e) if !self.first_seen_unsaved => {
                    self.first_seen_unsaved = true;
                    tracing::warn!(file = %file.display(), error = %e, "cannot save first-seen times: after a restart the oldest route or policy may no longer win its conflicts (give --first-seen-file a writable path)");
                }
                Err(_) => {}
            }
        }
        let mut translation = translate(&loaded.snapshot, &self.settings);
        carry(&self.status, &mut translation.status, now);
        if !first && translation.dataplane == self.dataplane && translation.status == self.status {
            // One line, not the whole status again (an edit that changes nothing sockgate uses).
            tracing::info!(objects = loaded.snapshot.object_count(), "configuration applied: nothing changed");
            return;
        }
        for change in crate::model::changes::port_changes(&self.dataplane, &translation.dataplane) {
            tracing::info!("{change}");
        }
        self.listeners.apply(&translation.dataplane);
        self.udp.apply(&translation.dataplane.udp_listeners);
        if let Some(nat) = &self.udp_nat {
            nat.apply(&translation.dataplane.udp_listeners);
        }
        self.program_xdp(&translation.dataplane);
        if let Some(kernel) = self.kernel.as_mut() {
            if let Err(e) = kernel.sync(&translation.dataplane) {
                tracing::error!(error = %format!("{e:#}"), "updating the eBPF listener map failed");
            }
        }
        self.publish_activity();
        self.health.publish(&self.listeners);
        self.dataplane = translation.dataplane.clone();
        let file = crate::inspect::ListenersFile { bpf_pin_dir: self.bpf_pin_dir.clone(), config: self.dataplane.clone() };
        if let Err(e) = crate::state_file::write_json(&self.listeners_file, &file) {
            tracing::debug!(file = %self.listeners_file.display(), error = %e, "writing the listeners file failed");
        }
        tracing::info!(
            objects = loaded.snapshot.object_count(),
            ignored = loaded.ignored.len(),
            listeners = translation.dataplane.listeners.len(),
            udp_listeners = translation.dataplane.udp_listeners.len(),
            "configuration applied"
        );
        for line in translation.status.lines() {
            tracing::info!("status: {line}");
        }
        for (port, why) in self.listeners.unbound() {
            tracing::error!(port, "status: listener not programmed: {why}");
        }
        for (port, why) in self.udp.unbound() {
            tracing::error!(port, "status: UDP listener not programmed: {why}");
        }
        self.publish_unbound();
        self.status = translation.status;
    }

    /// Waits for the eBPF object being loaded (forever if none is).
    async fn kernel_loaded(loading: &mut Option<tokio::task::JoinHandle<(Option<KernelListeners>, String)>>) -> (Option<KernelListeners>, String) {
        match loading {
            Some(handle) => handle.await.unwrap_or_else(|e| (None, format!("eBPF listener maps unavailable: the loader failed: {e}"))),
            None => std::future::pending().await,
        }
    }

    fn install_kernel(&mut self, (kernel, why): (Option<KernelListeners>, String)) {
        self.kernel_loading = None;
        if !why.is_empty() {
            tracing::info!("eBPF: {why}");
        }
        self.kernel = kernel;
        if let Some(kernel) = self.kernel.as_mut() {
            if let Err(e) = kernel.sync(&self.dataplane) {
                tracing::error!(error = %format!("{e:#}"), "updating the eBPF listener map failed");
            }
        }
        self.publish_activity();
    }

    /// The listener ports this agent wants and could not bind, for its node Lease.
    fn unbound(&self) -> Vec<crate::status::lease::Unbound> {
        use crate::model::node_reports::Protocol;
        let tcp = self.listeners.unbound().iter().map(|(port, why)| (Protocol::Tcp, *port, why.to_string()));
        let udp = self.udp.unbound().map(|(port, why)| (Protocol::Udp, port, why.to_string()));
        tcp.chain(udp).map(|(protocol, port, error)| crate::status::lease::Unbound { protocol, port, error }).collect()
    }

    /// Tells `/readyz` which listener ports are not bound.
    fn publish_unbound(&self) {
        self.health.publish_unbound(self.unbound().iter().map(|u| format!("{} {}: {}", u.protocol.name(), u.port, u.error)).collect());
    }

    /// The leader's view of the nodes, for the next translation; true if it changed.
    fn take_node_reports(&mut self, reports: crate::status::lease::NodeReports) -> bool {
        let s = &mut self.settings;
        if (&s.gateway_addresses, s.serving_nodes, &s.unbound) == (&reports.addresses, reports.nodes, &reports.unbound) {
            return false;
        }
        s.gateway_addresses = reports.addresses;
        s.serving_nodes = reports.nodes;
        s.unbound = reports.unbound;
        true
    }

    /// Periodic work: bind ports that were busy, publish live connections to the eBPF map.
    fn tick(&mut self) {
        crate::dataplane::splice::sweep_idle_pipes();
        crate::memory::release_free_now_and_then();
        self.listeners.retry_unbound();
        self.udp.retry_unbound();
        self.publish_unbound();
        if let Some(nat) = &self.udp_nat {
            nat.sweep();
        }
        self.write_udp_state();
        if let Err(e) = crate::dataplane::health_checks::write_state(&self.listeners.health(), &self.backend_health_file) {
            tracing::debug!(file = %self.backend_health_file.display(), error = %e, "writing the backends' health checks failed");
        }
        self.publish_activity();
        if let Some(report) = self.listeners.splice_report() {
            self.health.publish_splice(report);
        }
        if let Some(xdp) = &self.xdp {
            match xdp.drops() {
                Ok(drops) => self.health.publish_xdp_drops(drops),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "reading the XDP drop counters failed"),
            }
        }
    }

    /// The UDP counters and flows (relay and kernel NAT), for `gateway-agent
    /// inspect` (another process) and `/metrics`.
    fn write_udp_state(&self) {
        let mut state = self.udp.state();
        if let Some(nat) = &self.udp_nat {
            let (kernel, unmatched) = nat.state(&self.dataplane.udp_listeners);
            self.health.publish_udp_kernel(kernel.clone(), unmatched);
            state.listeners.splice(0..0, kernel);
            state.kernel_fragments_unmatched = unmatched;
        }
        if let Err(e) = state.write(&self.udp_state_file) {
            tracing::debug!(file = %self.udp_state_file.display(), error = %e, "writing the UDP relay state failed");
        }
    }

    /// Writes each listener's client CIDRs into the XDP filter, as a diff.
    /// A listener that takes clients from a PROXY-protocol load balancer is
    /// left out: XDP sees the balancer's address, not the client's.
    fn program_xdp(&mut self, config: &DataplaneConfig) {
        let Some(xdp) = self.xdp.as_mut() else { return };
        let rules = config
            .listeners
            .iter()
            .filter(|(_, l)| !l.policy.accept_proxy_protocol && !(l.policy.allow.is_empty() && l.policy.deny.is_empty()))
            .map(|(port, l)| (*port, ClientCidrs { allow: l.policy.allow.clone(), deny: l.policy.deny.clone() }))
            .collect();
        let result = xdp.set_node_addresses(&[self.bind_address]).and_then(|()| xdp.set_rules(&rules));
        if let Err(e) = result {
            tracing::error!(error = %format!("{e:#}"), "updating the XDP client filter failed; clientCIDRs are still enforced at accept");
        }
        for interface in std::mem::take(&mut self.xdp_unattached) {
            match xdp.attach(&interface) {
                Ok(mode) => tracing::info!(interface, %mode, "XDP client filter attached"),
                Err(e) => tracing::error!(interface, error = %format!("{e:#}"), "the XDP client filter could not be attached here; clientCIDRs are enforced at accept"),
            }
        }
    }

    fn publish_activity(&mut self) {
        if let Some(kernel) = self.kernel.as_mut() {
            if let Err(e) = kernel.publish_activity(&self.listeners.active(), self.listeners.path_code()) {
                tracing::warn!(error = %format!("{e:#}"), "publishing live connections to the eBPF map failed");
            }
        }
    }

    /// Hands every socket and connection to the agent on `conn`; the
    /// connection back when it acknowledged, None (everything resumed here) if not.
    async fn hand_over(&mut self, conn: socket2::Socket) -> Option<socket2::Socket> {
        let started = std::time::Instant::now();
        let handover = self.listeners.hand_over(self.settle_limit).await;
        let (sockets, connections) = (handover.listeners.len(), handover.connections.len());
        let sent = tokio::task::spawn_blocking(move || {
            let result = takeover::hand_over(&conn, &handover, ACK_TIMEOUT);
            (result, conn, handover)
        })
        .await;
        match sent {
            Ok((Ok(()), conn, _sent)) => {
                tracing::info!(listeners = sockets, connections, pause = ?started.elapsed(), "handed over to a new agent");
                Some(conn)
            }
            Ok((Err(e), _, handover)) => {
                tracing::error!(error = %e, "the handover failed; this agent resumes everything");
                if let Err(e) = self.listeners.adopt(handover) {
                    tracing::error!(error = %format!("{e:#}"), "resuming after a failed handover");
                }
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "the handover task failed; its sockets are lost");
                None
            }
        }
    }

    async fn shutdown(mut self) {
        drop(self.listeners);
        drop(self.udp);
        let _ = std::fs::remove_file(&self.udp_state_file);
        let _ = std::fs::remove_file(&self.backend_health_file);
        // The listeners file stays: a successor that took over has written
        // its own there already, and it is rewritten only on a change.
        // A load still running would pin maps after we are gone: wait for it.
        if let Some(loading) = self.kernel_loading.take() {
            self.kernel = loading.await.ok().and_then(|(kernel, _)| kernel);
        }
        if let Some(kernel) = self.kernel {
            kernel.unpin();
        }
        if let Some(nat) = self.udp_nat {
            nat.unpin();
        }
    }
}

