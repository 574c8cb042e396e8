//! The listener sockets, applied as a diff of [`DataplaneConfig`]s.
//!
//! A port that stays keeps its socket and its established connections; only
//! its route's backends are swapped. Connections are stopped (reset) only when
//! their listener goes away or the route serving them is no longer the one the
//! listener serves.
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::balancer::{retry_pick, Pick, Picker};
use super::path::{DataPath, End};
use super::sockets::{connect, listen, reset};
use crate::model::config::{DataplaneConfig, ListenerConfig};

/// How many endpoints one new connection may try before it is reset.
const CONNECT_ATTEMPTS: usize = 3;

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
    accept_task: JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        // Closing the accept loop drops the socket; dropping `config` tells
        // every connection of this listener to stop.
        self.accept_task.abort();
    }
}

pub struct ListenerSet {
    bind_ip: IpAddr,
    path: Arc<dyn DataPath>,
    connect_timeout: Duration,
    served: BTreeMap<u16, Served>,
    /// Ports the config wants but that could not be bound (e.g. in use), with why.
    unbound: BTreeMap<u16, String>,
    desired: DataplaneConfig,
}

impl ListenerSet {
    pub fn new(bind_ip: IpAddr, path: Arc<dyn DataPath>, connect_timeout: Duration) -> Self {
        ListenerSet { bind_ip, path, connect_timeout, served: BTreeMap::new(), unbound: BTreeMap::new(), desired: DataplaneConfig::default() }
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
        let (config, watcher) = watch::channel(Arc::new(listener));
        let counters = Arc::new(ListenerCounters::default());
        let picker = Arc::new(std::sync::Mutex::new(Picker::default()));
        let accept_task = tokio::spawn(accept_loop(socket, watcher, picker.clone(), counters.clone(), self.path.clone(), self.connect_timeout));
        self.served.insert(port, Served { config, picker, counters, accept_task });
    }
}

async fn accept_loop(
    socket: TcpListener,
    config: watch::Receiver<Arc<ListenerConfig>>,
    picker: Arc<std::sync::Mutex<Picker>>,
    counters: Arc<ListenerCounters>,
    path: Arc<dyn DataPath>,
    connect_timeout: Duration,
) {
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
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        // Picked here, in accept order, so the round-robin follows arrivals.
        let first = picker.lock().unwrap().pick(&config.borrow().backends);
        tokio::spawn(serve(client, peer, first, config.clone(), counters.clone(), path.clone(), connect_timeout));
    }
}

/// One connection: pick a backend, connect (retrying others), forward, account.
#[allow(clippy::too_many_arguments)]
async fn serve(
    client: TcpStream,
    peer: SocketAddr,
    first: Pick,
    mut config: watch::Receiver<Arc<ListenerConfig>>,
    counters: Arc<ListenerCounters>,
    path: Arc<dyn DataPath>,
    connect_timeout: Duration,
) {
    let listener = config.borrow_and_update().clone();
    let Some(route) = listener.route.clone() else {
        counters.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer, "no route on {}/{}: reset", listener.gateway, listener.listener);
        return reset(client);
    };
    let Some(backend) = connect_backend(&listener, first, connect_timeout, &counters).await else {
        counters.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer, %route, "no backend could take the connection: reset");
        return reset(client);
    };
    let _ = client.set_nodelay(true);
    let _ = backend.set_nodelay(true);

    // Stop the connection if its route stops being this listener's route.
    let stop = CancellationToken::new();
    let watch_route = {
        let stop = stop.clone();
        let route = route.clone();
        async move {
            loop {
                if config.changed().await.is_err() || config.borrow().route.as_ref() != Some(&route) {
                    stop.cancel();
                    return;
                }
            }
        }
    };
    counters.active.fetch_add(1, Ordering::Relaxed);
    let mut forwarding = path.forward(client, backend, stop.clone());
    let result = tokio::select! {
        result = &mut forwarding => result,
        // The route went away and `stop` fired: forwarding resets both sides and ends.
        _ = watch_route => forwarding.await,
    };
    counters.active.fetch_sub(1, Ordering::Relaxed);
    match result {
        Ok(t) => {
            counters.bytes_client_to_backend.fetch_add(t.client_to_backend, Ordering::Relaxed);
            counters.bytes_backend_to_client.fetch_add(t.backend_to_client, Ordering::Relaxed);
            if t.end == End::Stopped {
                tracing::info!(%peer, %route, "connection stopped: its route no longer serves this listener");
            }
            tracing::debug!(%peer, %route, path = path.name(), up = t.client_to_backend, down = t.backend_to_client, end = ?t.end, "connection ended");
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
