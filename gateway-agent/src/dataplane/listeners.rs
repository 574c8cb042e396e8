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
use std::time::Duration;

use rand::SeedableRng;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::balancer::{retry_pick, Pick, Picker};
use super::connections::{Connections, PausedConnection};
use super::path::{Carried, Control, DataPath, End, Outcome};
use super::sockets::{accept_queued, connect, listen, reset};
use crate::model::config::{DataplaneConfig, ListenerConfig};
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
}

struct Served {
    config: watch::Sender<Arc<ListenerConfig>>,
    /// Round-robin state of the listener's route, started afresh when its backends change.
    picker: Arc<std::sync::Mutex<Picker>>,
    counters: Arc<ListenerCounters>,
    /// The listening socket; None once drained.
    socket: Option<Arc<TcpListener>>,
    accept_task: Option<JoinHandle<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        // Closing the accept loop drops the socket; dropping `config` tells
        // every connection of this listener to stop.
        if let Some(task) = &self.accept_task {
            task.abort();
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
        }
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

    /// The counters of every served listener, by port.
    pub fn counters(&self) -> BTreeMap<u16, Arc<ListenerCounters>> {
        self.served.iter().map(|(port, s)| (*port, s.counters.clone())).collect()
    }

    /// Moves to `config`: closes listeners no longer wanted, updates the rest
    /// in place, opens new ones. A port that fails to bind is reported in
    /// `unbound()` and retried by `retry_unbound()`; the others are unaffected.
    pub fn apply(&mut self, config: &DataplaneConfig) {
        self.desired = config.clone();
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
        let socket = Arc::new(socket);
        let accept_task = tokio::spawn(accept_loop(socket.clone(), self.context(port, &config, &counters), picker.clone()));
        self.served.insert(port, Served { config, picker, counters, socket: Some(socket), accept_task: Some(accept_task) });
    }

    fn context(&self, port: u16, config: &watch::Sender<Arc<ListenerConfig>>, counters: &Arc<ListenerCounters>) -> Context {
        Context {
            port,
            config: config.subscribe(),
            counters: counters.clone(),
            path: self.path.clone(),
            connect_timeout: self.connect_timeout,
            connections: self.connections.clone(),
        }
    }

    /// Takes over what another agent handed over: its listening sockets start
    /// accepting here at once with the configuration they had (the next
    /// `apply` moves them to this agent's), and its connections resume.
    pub fn adopt(&mut self, handover: Handover) -> anyhow::Result<()> {
        // A failed handover is resumed by the agent that paused it, whose pause has fired.
        if self.connections.pause.is_cancelled() {
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
            let context = self.context(handed.port, &served.config, &served.counters);
            handed.client.set_nonblocking(true)?;
            handed.backend.set_nonblocking(true)?;
            let (client, backend) = (TcpStream::from_std(handed.client)?, TcpStream::from_std(handed.backend)?);
            let in_flight = context.connections.enter();
            tokio::spawn(async move {
                let _in_flight = in_flight;
                forward(client, backend, handed.up, handed.down, handed.route, handed.peer, context).await;
            });
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
        for (port, served) in self.served.iter_mut() {
            served.stop_accepting().await;
            let Some(socket) = served.socket.take() else { continue };
            let context = Context {
                port: *port,
                config: served.config.subscribe(),
                counters: served.counters.clone(),
                path: self.path.clone(),
                connect_timeout: self.connect_timeout,
                connections: self.connections.clone(),
            };
            for (client, peer) in accept_queued(&socket) {
                drained.accepted_at_close += 1;
                context.counters.accepted.fetch_add(1, Ordering::Relaxed);
                let first = served.picker.lock().unwrap().pick(&served.config.borrow().backends);
                let in_flight = self.connections.enter();
                let context = context.clone();
                tokio::spawn(async move {
                    let _in_flight = in_flight;
                    serve(client, peer, first, context).await;
                });
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
    path: Arc<dyn DataPath>,
    connect_timeout: Duration,
    connections: Arc<Connections>,
}

async fn accept_loop(socket: Arc<TcpListener>, context: Context, picker: Arc<std::sync::Mutex<Picker>>) {
    loop {
        let (client, peer) = match socket.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off rather than spin; the listener stays.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        context.counters.accepted.fetch_add(1, Ordering::Relaxed);
        // Picked here, in accept order, so the round-robin follows arrivals.
        let first = picker.lock().unwrap().pick(&context.config.borrow().backends);
        let in_flight = context.connections.enter();
        let context = context.clone();
        tokio::spawn(async move {
            let _in_flight = in_flight;
            serve(client, peer, first, context).await;
        });
    }
}

/// One new connection: pick a backend, connect (retrying others), forward.
async fn serve(client: TcpStream, peer: SocketAddr, first: Pick, mut context: Context) {
    let listener = context.config.borrow_and_update().clone();
    let Some(route) = listener.route.clone() else {
        context.counters.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer, "no route on {}/{}: reset", listener.gateway, listener.listener);
        return reset(client);
    };
    let connected = tokio::select! {
        connected = connect_backend(&listener, first, context.connect_timeout, &context.counters) => connected,
        _ = context.connections.abort.cancelled() => None,
    };
    let Some(backend) = connected else {
        context.counters.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer, %route, "no backend could take the connection: reset");
        return reset(client);
    };
    let _ = client.set_nodelay(true);
    let _ = backend.set_nodelay(true);
    forward(client, backend, Carried::default(), Carried::default(), route, peer, context).await;
}

/// An established pair, new or handed over: forward until it ends, is
/// stopped (its route leaves the listener, or a drain deadline), or pauses.
async fn forward(client: TcpStream, backend: TcpStream, up: Carried, down: Carried, route: ObjectKey, peer: SocketAddr, context: Context) {
    let Context { port, mut config, counters, path, connections, .. } = context;
    let stop = CancellationToken::new();
    let watch_route = {
        let stop = stop.clone();
        let route = route.clone();
        let abort = connections.abort.clone();
        async move {
            // Checked before the first wait too: a handed-over connection may
            // arrive when its listener already serves another route.
            while config.borrow_and_update().route.as_ref() == Some(&route) {
                tokio::select! {
                    changed = config.changed() => if changed.is_err() { break },
                    _ = abort.cancelled() => break,
                }
            }
            stop.cancel();
        }
    };
    counters.active.fetch_add(1, Ordering::Relaxed);
    let control = Control { stop: stop.clone(), pause: connections.pause.clone() };
    let mut forwarding = path.forward(client, backend, up, down, control);
    let result = tokio::select! {
        result = &mut forwarding => result,
        // `stop` fired: forwarding resets both sides and ends.
        _ = watch_route => forwarding.await,
    };
    counters.active.fetch_sub(1, Ordering::Relaxed);
    match result {
        Ok(Outcome::Ended(t)) => {
            counters.bytes_client_to_backend.fetch_add(t.client_to_backend, Ordering::Relaxed);
            counters.bytes_backend_to_client.fetch_add(t.backend_to_client, Ordering::Relaxed);
            if t.end == End::Stopped {
                tracing::info!(%peer, %route, "connection stopped: its route no longer serves this listener, or the drain deadline passed");
            }
            tracing::debug!(%peer, %route, path = path.name(), up = t.client_to_backend, down = t.backend_to_client, end = ?t.end, "connection ended");
        }
        Ok(Outcome::Paused(state)) => {
            counters.bytes_client_to_backend.fetch_add(state.client_to_backend, Ordering::Relaxed);
            counters.bytes_backend_to_client.fetch_add(state.backend_to_client, Ordering::Relaxed);
            tracing::debug!(%peer, %route, fd = state.client.as_raw_fd(), "connection paused for handover");
            connections.park(PausedConnection { port, route, peer, state });
        }
        Err(e) => tracing::warn!(%peer, %route, error = %e, "forwarding failed"),
    }
}

async fn connect_backend(listener: &ListenerConfig, first: Pick, timeout: Duration, counters: &ListenerCounters) -> Option<TcpStream> {
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let first = match first {
        Pick::Endpoint(addr) => addr,
        Pick::Reject => return None,
    };
    let mut failed = BTreeSet::new();
    let mut next = Some(first);
    while let Some(addr) = next {
        match connect(addr, timeout).await {
            Ok(stream) => return Some(stream),
            Err(e) => {
                counters.connect_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(backend = %addr, error = %e, "backend connect failed");
                failed.insert(addr);
            }
        }
        next = if failed.len() < CONNECT_ATTEMPTS { retry_pick(&listener.backends, &failed, &mut rng) } else { None };
    }
    None
}
