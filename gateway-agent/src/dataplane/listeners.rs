//! The listener sockets, applied as a diff of [`DataplaneConfig`]s.
//!
//! A port that stays keeps its socket and its established connections; only
//! its route's backends are swapped. Connections are stopped (reset) only when
//! their listener goes away or the route serving them is no longer the one the
//! listener serves. The whole set can also be drained (SIGTERM) or handed over
//! to another agent, sockets and connections alike ([`Handover`]).
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::balancer::{retry_pick, Pick, Picker};
use super::connections::{Connections, PausedConnection};
use super::endpoint_load::{EndpointLoad, LoadLease};
use super::health_checks::{HealthChecks, HealthState};
use super::outliers::Outliers;
use super::proxy_io;
use super::path::{Carried, Control, DataPath, End, Outcome};
use super::sockets::{accept_queued, classify_accept_error, connect, listen, reset, AcceptError};
use crate::model::config::{BackendPolicyConfig, DataplaneConfig, ListenerConfig};
use crate::resources::ObjectKey;

/// How many endpoints one new connection may try before it is reset.
pub const CONNECT_ATTEMPTS: usize = 3;

/// Counters of one listener, for logs and inspection.
#[derive(Debug, Default)]
pub struct ListenerCounters {
    pub accepted: AtomicU64,
    pub active: AtomicU64,
    pub rejected: AtomicU64,
    pub connect_failures: AtomicU64,
    pub bytes_client_to_backend: AtomicU64,
    pub bytes_backend_to_client: AtomicU64,
    /// Accepted and not yet ended (set-up or forwarding): what maxConnections limits.
    pub open: AtomicU64,
    /// Reset because the client's address is not allowed (clientCIDRs).
    pub denied: AtomicU64,
    /// Reset because maxConnections were already open.
    pub over_limit: AtomicU64,
    /// Closed because nothing moved for idleTimeout.
    pub idle_closed: AtomicU64,
    /// Endpoints ejected by outlier detection.
    pub ejections: AtomicU64,
}

/// Holds one of a listener's open connections; counts it out when dropped.
struct Open(Arc<ListenerCounters>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What counts a connection for its whole life, wherever it runs: in flight
/// (for a drain or a handover), open against maxConnections, and against its
/// endpoint's load. Moves with the connection when its watch gets a task of
/// its own (a kernel-spliced flow), and counts it out when dropped.
struct Held {
    _in_flight: super::connections::InFlight,
    _open: Open,
    _lease: Option<LoadLease>,
}

impl Held {
    /// Counts in a connection that arrives established (handed over, or
    /// inherited in the kernel splice): no maxConnections check, no lease.
    fn established(context: &Context) -> Held {
        let in_flight = context.connections.enter();
        context.counters.open.fetch_add(1, Ordering::Relaxed);
        Held { _in_flight: in_flight, _open: Open(context.counters.clone()), _lease: None }
    }
}

/// How long a client behind a PROXY-protocol load balancer may take to send the header.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

struct Served {
    config: watch::Sender<Arc<ListenerConfig>>,
    /// Round-robin state of the listener's route, started afresh when its backends change.
    picker: Arc<std::sync::Mutex<Picker>>,
    counters: Arc<ListenerCounters>,
    outliers: Arc<std::sync::Mutex<Outliers>>,
    /// The listening socket; None once drained.
    socket: Option<Arc<TcpListener>>,
    accept_task: Option<JoinHandle<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        // The accept loop's task (which holds the socket too) is dropped only
        // when the runtime gets to it: shutting the listening socket down here
        // stops new handshakes at once (the soak saw a removed listener still
        // completing them 1.3 s later). A drained or handed-over listener has
        // no socket here any more and is not touched. Dropping `config` tells
        // every connection of this listener to stop.
        // The task is told first, so that the shutdown's wake-up finds it
        // cancelled; if it is mid-poll on another thread it sees EINVAL from
        // accept and ends quietly (`AcceptError::ListenerClosed`).
        if let Some(task) = &self.accept_task {
            task.abort();
        }
        if let Some(socket) = &self.socket {
            let _ = socket2::SockRef::from(socket.as_ref()).shutdown(std::net::Shutdown::Read);
        }
    }
}

impl Served {
    /// Stops accepting and waits until the accept loop has let go of the socket.
    async fn stop_accepting(&mut self) {
        if let Some(task) = self.accept_task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Everything an agent hands to its successor: listening sockets with the
/// configuration they serve, and paused connections.
pub struct Handover {
    pub listeners: Vec<HandedListener>,
    pub connections: Vec<HandedConnection>,
}

pub struct HandedListener {
    pub port: u16,
    pub config: ListenerConfig,
    pub socket: std::net::TcpListener,
}

pub struct HandedConnection {
    pub port: u16,
    pub route: ObjectKey,
    pub peer: SocketAddr,
    pub client: std::net::TcpStream,
    pub backend: std::net::TcpStream,
    pub up: Carried,
    pub down: Carried,
}

/// What a drain did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Connections taken from the accept queues as the listeners closed.
    pub accepted_at_close: usize,
    /// Connections still open at the deadline, reset.
    pub reset_at_deadline: usize,
}

pub struct ListenerSet {
    bind_ip: IpAddr,
    path: Arc<dyn DataPath>,
    connect_timeout: Duration,
    served: BTreeMap<u16, Served>,
    /// Ports the config wants but that could not be bound (e.g. in use), with why.
    unbound: BTreeMap<u16, String>,
    desired: DataplaneConfig,
    connections: Arc<Connections>,
    /// Active health checks of the backends' endpoints (BackendPolicy healthCheck).
    health_checks: HealthChecks,
    /// Connections open to each endpoint (LeastConnections).
    load: Arc<EndpointLoad>,
}

/// Descriptors kept free for everything but connections (the manifests
/// directory, the API server, the health port, BPF maps): at the limit the
/// agent must still read its configuration.
const RESERVED_DESCRIPTORS: u64 = 256;

/// How many connections fit in this process's open-files limit with `path`.
fn connection_cap(path: &dyn DataPath) -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 { limit.rlim_cur } else { 1024 };
    soft.saturating_sub(RESERVED_DESCRIPTORS + path.idle_descriptors()) / path.descriptors_per_connection()
}

impl ListenerSet {
    pub fn new(bind_ip: IpAddr, path: Arc<dyn DataPath>, connect_timeout: Duration) -> Self {
        ListenerSet {
            bind_ip,
            path,
            connect_timeout,
            served: BTreeMap::new(),
            unbound: BTreeMap::new(),
            desired: DataplaneConfig::default(),
            connections: Arc::default(),
            health_checks: HealthChecks::default(),
            load: Arc::default(),
        }
    }

    /// Connections this agent takes at most, all listeners together: beyond
    /// it a new one is reset (and counted as over the limit) rather than let
    /// the process run out of descriptors, where it could no longer read its
    /// configuration (found by the soak at the fd limit).
    pub fn capacity(&self) -> u64 {
        connection_cap(self.path.as_ref())
    }

    /// Ports that could not be bound, with the error.
    pub fn unbound(&self) -> &BTreeMap<u16, String> {
        &self.unbound
    }

    /// Connections being forwarded now, per listener port.
    pub fn active(&self) -> BTreeMap<u16, u32> {
        self.served.iter().map(|(port, s)| (*port, s.counters.active.load(Ordering::Relaxed) as u32)).collect()
    }

    pub fn path_code(&self) -> u32 {
        self.path.code()
    }

    pub fn splice_report(&self) -> Option<super::kernel_splice::SpliceReport> {
        self.path.splice_report()
    }

    /// The endpoints' health check verdicts.
    pub fn health(&self) -> Arc<HealthState> {
        self.health_checks.state()
    }

    /// Connections open to each endpoint.
    pub fn endpoint_load(&self) -> Arc<EndpointLoad> {
        self.load.clone()
    }

    /// The counters of every served listener, by port.
    pub fn counters(&self) -> BTreeMap<u16, Arc<ListenerCounters>> {
        self.served.iter().map(|(port, s)| (*port, s.counters.clone())).collect()
    }

    /// Moves to `config`: closes listeners no longer wanted, updates the rest
    /// in place, opens new ones. A port that fails to bind is reported in
    /// `unbound()` and retried by `retry_unbound()`; the others are unaffected.
    pub fn apply(&mut self, config: &DataplaneConfig) {
        self.desired = config.clone();
        self.health_checks.apply(config);
        self.served.retain(|port, _| config.listeners.contains_key(port));
        self.unbound.retain(|port, _| config.listeners.contains_key(port));
        for (port, listener) in &config.listeners {
            match self.served.get(port) {
                Some(served) => {
                    if **served.config.borrow() != *listener {
                        *served.picker.lock().unwrap() = Picker::default();
                        served.config.send_replace(Arc::new(listener.clone()));
                    }
                }
                None => self.open(*port, listener.clone()),
            }
        }
        // Once this agent serves its listeners, it carries on what an earlier
        // agent left in the kernel (it took over from it, or it died).
        self.resume_inherited();
    }

    /// Watches the connections an earlier agent left in the kernel splice as
    /// this agent's own, under their listener's route, idle timeout and
    /// drain; those whose listener or route is gone are reset on both sides.
    fn resume_inherited(&self) {
        for flow in self.path.take_inherited() {
            let (port, peer) = (flow.listener_port, flow.client);
            let served = self.served.get(&port);
            let route = served.and_then(|s| s.config.borrow().route.clone());
            let (Some(served), Some(route)) = (served, route) else {
                tracing::info!(port, %peer, "a connection an earlier agent left in the kernel has no listener or route here: reset");
                let control = Control::default();
                control.stop.cancel();
                let path = self.path.clone();
                tokio::spawn(async move {
                    // Its watch, told to stop at once, resets both peers.
                    if let Ok(Outcome::Detached(watch)) = path.resume_inherited(flow, control).await {
                        watch.await;
                    }
                });
                continue;
            };
            tracing::debug!(port, %peer, %route, "carrying on a connection an earlier agent left in the kernel");
            let context = self.context(port, served);
            let held = Held::established(&context);
            tokio::spawn(forward(Start::Inherited(flow), route, peer, context, held));
        }
    }

    /// Tries again to bind the ports that failed before.
    pub fn retry_unbound(&mut self) {
        let ports: Vec<u16> = self.unbound.keys().copied().collect();
        for port in ports {
            if let Some(listener) = self.desired.listeners.get(&port).cloned() {
                self.open(port, listener);
            }
        }
    }

    fn open(&mut self, port: u16, listener: ListenerConfig) {
        let addr = SocketAddr::new(self.bind_ip, port);
        let socket = match listen(addr) {
            Ok(socket) => socket,
            Err(e) => {
                let message = format!("cannot listen on {addr}: {e}");
                if self.unbound.get(&port) != Some(&message) {
                    tracing::error!(port, listener = %listener.listener, gateway = %listener.gateway, "{message}");
                }
                self.unbound.insert(port, message);
                return;
            }
        };
        self.unbound.remove(&port);
        tracing::info!(%addr, "listening: {listener}");
        self.serve_socket(port, socket, listener);
    }

    fn serve_socket(&mut self, port: u16, socket: TcpListener, listener: ListenerConfig) {
        let (config, _) = watch::channel(Arc::new(listener));
        let counters = Arc::new(ListenerCounters::default());
        let picker = Arc::new(std::sync::Mutex::new(Picker::default()));
        let outliers = Arc::default();
        let socket = Arc::new(socket);
        let mut served = Served { config, picker, counters, outliers, socket: Some(socket.clone()), accept_task: None };
        let context = self.context(port, &served);
        served.accept_task = Some(tokio::spawn(accept_loop(socket, context, served.picker.clone())));
        self.served.insert(port, served);
    }

    fn context(&self, port: u16, served: &Served) -> Context {
        Context {
            port,
            config: served.config.subscribe(),
            counters: served.counters.clone(),
            outliers: served.outliers.clone(),
            health: self.health_checks.state(),
            load: self.load.clone(),
            path: self.path.clone(),
            connect_timeout: self.connect_timeout,
            connections: self.connections.clone(),
            capacity: self.capacity(),
        }
    }

    /// Takes over what another agent handed over: its listening sockets start
    /// accepting here at once with the configuration they had (the next
    /// `apply` moves them to this agent's), and its connections resume.
    pub fn adopt(&mut self, handover: Handover) -> anyhow::Result<()> {
        // A failed handover is resumed by the agent that paused it, whose pause has fired.
        let resuming = self.connections.pause.is_cancelled();
        if resuming {
            self.connections = Arc::default();
        }
        for handed in handover.listeners {
            handed.socket.set_nonblocking(true)?;
            let socket = TcpListener::from_std(handed.socket)?;
            tracing::info!(port = handed.port, "listening (socket taken over): {}", handed.config);
            self.unbound.remove(&handed.port);
            self.serve_socket(handed.port, socket, handed.config);
        }
        for handed in handover.connections {
            let Some(served) = self.served.get(&handed.port) else {
                tracing::warn!(port = handed.port, peer = %handed.peer, "a handed-over connection has no listener here: reset");
                continue;
            };
            let context = self.context(handed.port, served);
            handed.client.set_nonblocking(true)?;
            handed.backend.set_nonblocking(true)?;
            let (client, backend) = (TcpStream::from_std(handed.client)?, TcpStream::from_std(handed.backend)?);
            let held = Held::established(&context);
            tokio::spawn(forward(Start::Pair { client, backend, up: handed.up, down: handed.down }, handed.route, handed.peer, context, held));
        }
        if resuming {
            // The connections the kernel splice carried are this agent's
            // again: watched to their end, under their listener's rules.
            self.resume_inherited();
        }
        Ok(())
    }

    /// Stops accepting everywhere (the sockets stay open: new connections wait
    /// in their accept queues), pauses every connection at its next safe point
    /// and returns it all. Connections still connecting to a backend are given
    /// `settle_limit` to finish; any still in flight after it stay here.
    pub async fn hand_over(&mut self, settle_limit: Duration) -> Handover {
        for served in self.served.values_mut() {
            served.stop_accepting().await;
        }
        self.connections.pause.cancel();
        if !self.connections.settle(settle_limit).await {
            tracing::warn!(in_flight = self.connections.in_flight(), "some connections did not pause in time; they stay with this agent");
        }
        let mut listeners = Vec::new();
        for (port, served) in self.served.iter_mut() {
            let Some(socket) = served.socket.take() else { continue };
            // The accept loop has ended, so this is the only reference.
            let socket = Arc::try_unwrap(socket).expect("accept loop ended");
            match socket.into_std() {
                Ok(socket) => listeners.push(HandedListener { port: *port, config: (**served.config.borrow()).clone(), socket }),
                Err(e) => tracing::error!(port, error = %e, "cannot hand over a listening socket"),
            }
        }
        let mut connections = Vec::new();
        for paused in self.connections.take_paused() {
            let PausedConnection { port, route, peer, state } = paused;
            match (state.client.into_std(), state.backend.into_std()) {
                (Ok(client), Ok(backend)) => connections.push(HandedConnection { port, route, peer, client, backend, up: state.up, down: state.down }),
                _ => tracing::error!(%peer, "cannot hand over a paused connection"),
            }
        }
        Handover { listeners, connections }
    }

    /// Graceful shutdown: every listener stops accepting and closes (what its
    /// accept queue already holds is served, not reset), established
    /// connections finish on their own until `deadline`, then are reset.
    pub async fn drain(&mut self, deadline: Duration) -> Drained {
        let mut drained = Drained::default();
        let ports: Vec<u16> = self.served.keys().copied().collect();
        for port in ports {
            let Some(served) = self.served.get_mut(&port) else { continue };
            served.stop_accepting().await;
            let Some(socket) = served.socket.take() else { continue };
            let served = &self.served[&port];
            let context = self.context(port, served);
            for (client, peer) in accept_queued(&socket) {
                drained.accepted_at_close += 1;
                admit(client, peer, &context, &served.picker);
            }
            // Dropping the last reference closes the listening socket.
            drop(socket);
        }
        tracing::info!(in_flight = self.connections.in_flight(), ?deadline, "listeners closed; draining connections");
        if !self.connections.settle(deadline).await {
            drained.reset_at_deadline = self.connections.in_flight();
            tracing::warn!(connections = drained.reset_at_deadline, "drain deadline reached: resetting the rest");
            self.connections.abort.cancel();
            self.connections.settle(Duration::from_secs(2)).await;
        }
        drained
    }

    pub fn in_flight(&self) -> usize {
        self.connections.in_flight()
    }
}

/// What a connection of one listener needs from it.
#[derive(Clone)]
struct Context {
    port: u16,
    config: watch::Receiver<Arc<ListenerConfig>>,
    counters: Arc<ListenerCounters>,
    outliers: Arc<std::sync::Mutex<Outliers>>,
    health: Arc<HealthState>,
    load: Arc<EndpointLoad>,
    path: Arc<dyn DataPath>,
    connect_timeout: Duration,
    connections: Arc<Connections>,
    /// Connections the fd limit allows, all listeners together.
    capacity: u64,
}

async fn accept_loop(socket: Arc<TcpListener>, context: Context, picker: Arc<std::sync::Mutex<Picker>>) {
    loop {
        let (client, peer) = match socket.accept().await {
            Ok(accepted) => accepted,
            Err(e) => match classify_accept_error(&e) {
                AcceptError::ClientGone => {
                    tracing::debug!(port = context.port, error = %e, "a connection failed before it was accepted");
                    continue;
                }
                AcceptError::ListenerClosed => {
                    tracing::debug!(port = context.port, "listener shut down: accept loop ends");
                    return;
                }
                AcceptError::Resources => {
                    // EMFILE and friends: back off rather than spin; the listener stays.
                    tracing::warn!(port = context.port, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        admit(client, peer, &context, &picker);
    }
}

/// A just-accepted connection: the listener's limits first (client address,
/// maxConnections), then its own task to set up and forward.
fn admit(client: TcpStream, peer: SocketAddr, context: &Context, picker: &std::sync::Mutex<Picker>) {
    let counters = &context.counters;
    counters.accepted.fetch_add(1, Ordering::Relaxed);
    let listener = context.config.borrow().clone();
    // Behind a PROXY-protocol load balancer the peer is the balancer: the
    // client's own address is checked once its header is read.
    if !listener.policy.accept_proxy_protocol && !listener.policy.admits(peer.ip()) {
        counters.denied.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer, "client address not allowed on {}/{}: reset", listener.gateway, listener.listener);
        return reset(client);
    }
    if context.connections.in_flight() as u64 >= context.capacity {
        counters.over_limit.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer, capacity = context.capacity, "the agent holds as many connections as its open-files limit allows: reset");
        return reset(client);
    }
    if let Some(max) = listener.policy.max_connections {
        if counters.open.load(Ordering::Relaxed) >= u64::from(max) {
            counters.over_limit.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, max, "maxConnections reached on {}/{}: reset", listener.gateway, listener.listener);
            return reset(client);
        }
    }
    counters.open.fetch_add(1, Ordering::Relaxed);
    let open = Open(counters.clone());
    // Picked here, in accept order, so the round-robin follows arrivals
    // (behind a PROXY-protocol balancer, a consistent hash waits for the
    // client's own address in the header: see `serve`).
    let first = pick(&listener, peer.ip(), picker, context);
    // Counted against its endpoint from now on, so connections set up at once spread out.
    let lease = if let Pick::Endpoint(e) = first { Some(context.load.lease(e)) } else { None };
    let in_flight = context.connections.enter();
    let context = context.clone();
    tokio::spawn(serve(client, peer, first, lease, context, (in_flight, open)));
}

/// The first endpoint for a connection from `client`, by the listener's
/// algorithm, leaving out endpoints failing their health check.
fn pick(listener: &ListenerConfig, client: IpAddr, picker: &std::sync::Mutex<Picker>, context: &Context) -> Pick {
    let backends = healthy(listener, context);
    match listener.load_balancer {
        crate::model::config::LoadBalancing::RoundRobin => picker.lock().unwrap().pick(&backends),
        crate::model::config::LoadBalancing::LeastConnections => picker.lock().unwrap().pick_least(&backends, |e| context.load.open(e)),
        crate::model::config::LoadBalancing::ConsistentHash => super::balancer::consistent_pick(&backends, client),
    }
}

/// The listener's backends without endpoints failing their health check
/// (borrowed as they are in the common case where none fails).
fn healthy<'a>(listener: &'a ListenerConfig, context: &Context) -> std::borrow::Cow<'a, [crate::model::config::BackendGroup]> {
    match context.health.unhealthy() {
        None => std::borrow::Cow::Borrowed(&listener.backends),
        Some(excluded) => std::borrow::Cow::Owned(super::balancer::without(&listener.backends, &excluded)),
    }
}

/// One new connection: read a PROXY header if the listener expects one, pick
/// a backend, connect (retrying others), send a PROXY header if the backend
/// wants one, forward.
async fn serve(mut client: TcpStream, peer: SocketAddr, mut first: Pick, mut lease: Option<LoadLease>, mut context: Context, counted: (super::connections::InFlight, Open)) {
    let listener = context.config.borrow_and_update().clone();
    let Some(route) = listener.route.clone() else {
        context.counters.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer, "no route on {}/{}: reset", listener.gateway, listener.listener);
        return reset(client);
    };
    let mut up = Carried::default();
    // The destination is needed only for a PROXY header: asked of the kernel
    // (getsockname) only then, not for every connection.
    let (mut source, mut destination) = (peer, None);
    if listener.policy.accept_proxy_protocol {
        match proxy_io::read_header(&mut client, PROXY_HEADER_TIMEOUT).await {
            Ok((header, rest)) => {
                if let Some((src, dst)) = header.addresses {
                    (source, destination) = (src, Some(dst));
                }
                up.pending = rest;
            }
            Err(e) => {
                context.counters.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%peer, error = %e, "no valid PROXY header on {}/{}: reset", listener.gateway, listener.listener);
                return reset(client);
            }
        }
        if !listener.policy.admits(source.ip()) {
            context.counters.denied.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, client = %source, "client address (from its PROXY header) not allowed: reset");
            return reset(client);
        }
        // A consistent hash is on the client, not on the balancer in front of it.
        if listener.load_balancer == crate::model::config::LoadBalancing::ConsistentHash && source != peer {
            first = super::balancer::consistent_pick(&healthy(&listener, &context), source.ip());
            match (&first, lease.as_mut()) {
                (Pick::Endpoint(e), Some(lease)) => lease.move_to(*e),
                (Pick::Endpoint(e), None) => lease = Some(context.load.lease(*e)),
                (Pick::Reject, _) => lease = None,
            }
        }
    }
    let connected = tokio::select! {
        connected = connect_backend(&listener, first, context.connect_timeout, &context.counters, &context.outliers, &context.health) => connected,
        _ = context.connections.abort.cancelled() => None,
    };
    let Some((backend, endpoint, policy)) = connected else {
        context.counters.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer, %route, "no backend could take the connection: reset");
        return reset(client);
    };
    if let Some(lease) = lease.as_mut() {
        lease.move_to(endpoint);
    }
    let held = Held { _in_flight: counted.0, _open: counted.1, _lease: lease };
    if let Some(version) = policy.send_proxy_protocol {
        // Goes out before any client byte: the data path writes pending bytes first.
        let destination = destination.unwrap_or_else(|| client.local_addr().unwrap_or(peer));
        let mut header = proxy_io::encode(version, source, destination);
        header.append(&mut up.pending);
        up.pending = header;
    }
    let _ = client.set_nodelay(true);
    let _ = backend.set_nodelay(true);
    super::sockets::set_liveness(&client, &listener.policy.liveness);
    super::sockets::set_liveness(&backend, &policy.liveness);
    // Not kept for the connection's life: thousands of connections each
    // holding a copy of their listener's configuration add up.
    drop((listener, policy));
    forward(Start::Pair { client, backend, up, down: Carried::default() }, route, peer, context, held).await;
}

/// What a forwarded connection starts from.
enum Start {
    /// Its two sockets, and what an earlier owner had read and not written.
    Pair { client: TcpStream, backend: TcpStream, up: Carried, down: Carried },
    /// A connection an earlier agent left in the kernel splice.
    Inherited(super::kernel_splice::Inherited),
}

/// An established pair, new or handed over: forward until it ends, is
/// stopped (its route leaves the listener, or a drain deadline), or pauses.
/// A connection the kernel carries on (detached) is watched to its end in a
/// task of its own, which holds only what that needs.
async fn forward(start: Start, route: ObjectKey, peer: SocketAddr, context: Context, held: Held) {
    let control = Control { stop: CancellationToken::new(), pause: context.connections.pause.clone(), ..Control::default() };
    context.counters.active.fetch_add(1, Ordering::Relaxed);
    let forwarding = match start {
        Start::Pair { client, backend, up, down } => context.path.forward(client, backend, up, down, control.clone()),
        Start::Inherited(flow) => context.path.resume_inherited(flow, control.clone()),
    };
    match supervise(forwarding, &route, &context, &control).await {
        Ok(Outcome::Detached(rest)) => {
            tokio::spawn(async move {
                let result = supervise(async move { Ok(Outcome::Ended(rest.await)) }, &route, &context, &control).await;
                record_end(result, &route, peer, &context);
                drop(held);
            });
        }
        result => record_end(result, &route, peer, &context),
    }
}

/// Runs `forwarding` while watching the connection's route (a change fires
/// `stop`) and its idle time (the listener's idleTimeout fires `close`);
/// the path then ends the connection as asked.
async fn supervise(forwarding: impl std::future::Future<Output = std::io::Result<Outcome>>, route: &ObjectKey, context: &Context, control: &Control) -> std::io::Result<Outcome> {
    let mut config = context.config.clone();
    let idle_timeout = config.borrow().policy.idle_timeout;
    let watch_route = async {
        // Checked before the first wait too: a handed-over connection may
        // arrive when its listener already serves another route.
        while config.borrow_and_update().route.as_ref() == Some(route) {
            tokio::select! {
                changed = config.changed() => if changed.is_err() { break },
                _ = context.connections.abort.cancelled() => break,
            }
        }
        control.stop.cancel();
    };
    let idle = watch_idle(idle_timeout, control.activity.clone(), control.close.clone());
    tokio::pin!(forwarding);
    tokio::select! {
        result = &mut forwarding => result,
        // `stop` fired: forwarding resets both sides and ends.
        _ = watch_route => forwarding.await,
        // `close` fired: forwarding closes both sides and ends.
        _ = idle => forwarding.await,
    }
}

/// Counts and logs how a connection ended, or parks it for a handover.
fn record_end(result: std::io::Result<Outcome>, route: &ObjectKey, peer: SocketAddr, context: &Context) {
    let Context { port, counters, path, connections, .. } = context;
    counters.active.fetch_sub(1, Ordering::Relaxed);
    match result {
        Ok(Outcome::Ended(t)) => {
            counters.bytes_client_to_backend.fetch_add(t.client_to_backend, Ordering::Relaxed);
            counters.bytes_backend_to_client.fetch_add(t.backend_to_client, Ordering::Relaxed);
            if t.end == End::Idle {
                counters.idle_closed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, %route, "connection closed: idle for the listener's idleTimeout");
            }
            if t.end == End::Stopped {
                if connections.abort.is_cancelled() {
                    tracing::info!(%peer, %route, "connection reset: the drain deadline passed before it finished");
                } else {
                    tracing::info!(%peer, %route, port, "connection reset: its route no longer serves this listener");
                }
            }
            tracing::debug!(%peer, %route, path = path.name(), up = t.client_to_backend, down = t.backend_to_client, end = ?t.end, "connection ended");
        }
        Ok(Outcome::Paused(state)) => {
            counters.bytes_client_to_backend.fetch_add(state.client_to_backend, Ordering::Relaxed);
            counters.bytes_backend_to_client.fetch_add(state.backend_to_client, Ordering::Relaxed);
            tracing::debug!(%peer, %route, fd = state.client.as_raw_fd(), "connection paused for handover");
            connections.park(PausedConnection { port: *port, route: route.clone(), peer, state });
        }
        Ok(Outcome::Detached(_)) => unreachable!("a detached connection's watch ends it"),
        Err(e) => tracing::warn!(%peer, %route, error = %e, "forwarding failed"),
    }
}

/// Fires `close` once nothing moved for `limit` (never, without a limit).
async fn watch_idle(limit: Option<Duration>, activity: Arc<AtomicU64>, close: CancellationToken) {
    let Some(limit) = limit else { return std::future::pending().await };
    // Checked a few times per limit, so a quiet connection closes within a quarter of it.
    let every = (limit / 4).max(Duration::from_millis(20));
    let (mut seen, mut quiet_since) = (activity.load(Ordering::Relaxed), tokio::time::Instant::now());
    loop {
        tokio::time::sleep(every).await;
        let now = activity.load(Ordering::Relaxed);
        if now != seen {
            (seen, quiet_since) = (now, tokio::time::Instant::now());
        } else if quiet_since.elapsed() >= limit {
            close.cancel();
            return std::future::pending().await;
        }
    }
}

/// Connects to `first` or, when it fails, other endpoints (the first pick's
/// BackendPolicy says how many and how long each may take); skips endpoints
/// that outlier detection ejected or that fail their health check, unless
/// every endpoint is. The stream, its endpoint and the policy of the endpoint's backend.
async fn connect_backend(
    listener: &ListenerConfig,
    first: Pick,
    default_timeout: Duration,
    counters: &ListenerCounters,
    outliers: &std::sync::Mutex<Outliers>,
    health: &HealthState,
) -> Option<(TcpStream, SocketAddr, BackendPolicyConfig)> {
    // The thread's generator, taken at each use (it cannot be held across an
    // await): seeding one per connection from the OS was a getrandom(2) call
    // per connection, for draws only a retry or an ejected first pick makes.
    let Pick::Endpoint(first) = first else { return None };
    let policy_of = |addr: SocketAddr| listener.backends.iter().find(|g| g.endpoints.contains(&addr)).map(|g| g.policy.clone()).unwrap_or_default();
    let mut ejected = outliers.lock().unwrap().ejected(Instant::now());
    if let Some(unhealthy) = health.unhealthy() {
        ejected.extend(unhealthy.iter());
    }
    let first = if ejected.contains(&first) { retry_pick(&listener.backends, &ejected, &mut rand::rng()).unwrap_or(first) } else { first };
    let attempts = 1 + policy_of(first).retries.map(|r| r as usize).unwrap_or(CONNECT_ATTEMPTS - 1);
    let mut failed = BTreeSet::new();
    let mut next = Some(first);
    while let Some(addr) = next {
        let policy = policy_of(addr);
        match connect(addr, policy.connect_timeout.unwrap_or(default_timeout)).await {
            Ok(stream) => {
                outliers.lock().unwrap().succeeded(addr);
                return Some((stream, addr, policy));
            }
            Err(e) => {
                counters.connect_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(backend = %addr, error = %e, "backend connect failed");
                if let Some(outlier) = policy.outlier {
                    if outliers.lock().unwrap().failed(addr, outlier, Instant::now()) {
                        counters.ejections.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(backend = %addr, ejection = ?outlier.ejection, "endpoint ejected: {} connect failures in a row", outlier.consecutive_failures);
                    }
                }
                failed.insert(addr);
            }
        }
        let mut skip = failed.clone();
        skip.extend(outliers.lock().unwrap().ejected(Instant::now()));
        if let Some(unhealthy) = health.unhealthy() {
            skip.extend(unhealthy.iter());
        }
        next = if failed.len() < attempts {
            retry_pick(&listener.backends, &skip, &mut rand::rng()).or_else(|| retry_pick(&listener.backends, &failed, &mut rand::rng()))
        } else {
            None
        };
    }
    None
}
