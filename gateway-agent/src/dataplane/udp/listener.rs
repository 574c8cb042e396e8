//! One UDP listener of the relay: a socket on the listener port, a task that
//! reads client datagrams and forwards each on its flow's own socket toward
//! the flow's endpoint, a task per flow carrying replies back, and a sweeper
//! that ends idle flows.
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use super::counters::{DropReason, FlowEnd, UdpCounters};
use super::flows::{Budget, Flow, FlowActivity, FlowTable, FlowView};
use crate::dataplane::balancer::{Pick, Picker};
use crate::model::config::ListenerConfig;
use crate::resources::ObjectKey;

/// A flow without a datagram either way for this long ends, when no
/// ListenerPolicy sets `idleTimeout`: Envoy's UDP proxy default, and longer
/// than the 30 s most NATs give an unanswered UDP flow, so request/response
/// protocols (DNS) and chatty ones (QUIC, game traffic) both keep their backend.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest UDP payload (IPv4: 65,535 less the IP and UDP headers).
const MAX_DATAGRAM: usize = 65_535;

/// State shared by the listener's tasks and the relay.
pub struct UdpListener {
    pub port: u16,
    socket: Arc<UdpSocket>,
    config: Mutex<Arc<ListenerConfig>>,
    /// Smooth weighted round-robin over new flows (not datagrams), started afresh when the backends change.
    picker: Mutex<Picker>,
    flows: Mutex<FlowTable>,
    /// Per route served on this listener (None: datagrams while it had no route).
    counters: Mutex<BTreeMap<Option<ObjectKey>, Arc<UdpCounters>>>,
    epoch: Instant,
    budget: Arc<Budget>,
    /// Replies name the address each client sent to as their source (see `pktinfo`).
    pktinfo: bool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl UdpListener {
    /// Binds `ip:port` and starts serving `config`.
    pub fn bind(ip: IpAddr, port: u16, config: ListenerConfig, epoch: Instant, budget: Arc<Budget>) -> std::io::Result<Arc<UdpListener>> {
        let socket = socket2::Socket::new(socket2::Domain::for_address(SocketAddr::new(ip, port)), socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        if ip.is_ipv6() {
            socket.set_only_v6(false)?; // `::` serves IPv4 clients too, as the TCP listeners do
        }
        socket.set_nonblocking(true)?;
        // Bursts of datagrams from many clients wait here while the task is busy.
        let _ = socket.set_recv_buffer_size(4 << 20);
        let pktinfo = super::pktinfo::wanted(ip);
        if pktinfo {
            super::pktinfo::enable(&socket)?;
        }
        socket.bind(&SocketAddr::new(ip, port).into())?;
        let socket = Arc::new(UdpSocket::from_std(socket.into())?);
        let mut flows = FlowTable::default();
        flows.set_route(config.route.clone());
        let listener = Arc::new(UdpListener {
            port,
            socket,
            config: Mutex::new(Arc::new(config)),
            picker: Mutex::new(Picker::default()),
            flows: Mutex::new(flows),
            counters: Mutex::new(BTreeMap::new()),
            epoch,
            budget,
            pktinfo,
            tasks: Mutex::new(Vec::new()),
        });
        let receive = tokio::spawn(receive(Arc::clone(&listener)));
        let sweep = tokio::spawn(sweep(Arc::downgrade(&listener)));
        listener.tasks.lock().unwrap().extend([receive, sweep]);
        Ok(listener)
    }

    pub fn config(&self) -> Arc<ListenerConfig> {
        self.config.lock().unwrap().clone()
    }

    /// Serves `config` from now on: new flows pick from its endpoints at once;
    /// existing flows follow [`FlowTable::reconcile`].
    pub fn update(&self, config: &ListenerConfig) {
        let mut current = self.config.lock().unwrap();
        if **current == *config {
            return;
        }
        if current.backends != config.backends {
            *self.picker.lock().unwrap() = Picker::default();
        }
        self.flows.lock().unwrap().reconcile(&current, config);
        *current = Arc::new(config.clone());
    }

    /// Ends every flow and stops the tasks (the listener goes away).
    pub fn stop(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
        self.flows.lock().unwrap().clear(FlowEnd::ListenerRemoved);
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn idle_timeout(&self) -> Duration {
        self.config().policy.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT)
    }

    fn counters_of(&self, route: Option<&ObjectKey>) -> Arc<UdpCounters> {
        self.counters.lock().unwrap().entry(route.cloned()).or_default().clone()
    }

    pub fn counter_sets(&self) -> Vec<(Option<ObjectKey>, Arc<UdpCounters>)> {
        self.counters.lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    pub fn flow_views(&self) -> Vec<FlowView> {
        self.flows.lock().unwrap().views(self.now_ms())
    }

    pub fn flow_count(&self) -> usize {
        self.flows.lock().unwrap().len()
    }

    /// One datagram from `client`: on its flow, or on a new flow when it is admitted.
    async fn forward(self: &Arc<Self>, data: &[u8], client: SocketAddr, local: Option<Ipv4Addr>) {
        let now = self.now_ms();
        let existing = self.flows.lock().unwrap().get(&client).map(|f| (f.socket.clone(), f.counters.clone(), f.activity.clone()));
        let (socket, counters, activity) = match existing {
            Some(flow) => flow,
            None => match self.new_flow(client, local, now) {
                Ok(flow) => flow,
                Err((counters, why)) => {
                    counters.from_client(data.len());
                    counters.dropped(why);
                    return;
                }
            },
        };
        counters.from_client(data.len());
        activity.seen(now);
        activity.datagrams_from_client.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        activity.bytes_from_client.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let Some(socket) = socket else {
            counters.dropped(DropReason::InvalidBackend);
            return;
        };
        if let Err(e) = socket.send(data).await {
            // ECONNREFUSED here reports an ICMP error for an earlier datagram.
            let why = if e.kind() == std::io::ErrorKind::ConnectionRefused { DropReason::BackendUnreachable } else { DropReason::SendFailed };
            counters.dropped(why);
        }
    }

    /// A flow for a client seen for the first time, or why its datagram is dropped.
    #[allow(clippy::type_complexity)]
    fn new_flow(self: &Arc<Self>, client: SocketAddr, local: Option<Ipv4Addr>, now: u64) -> Result<(Option<Arc<UdpSocket>>, Arc<UdpCounters>, Arc<FlowActivity>), (Arc<UdpCounters>, DropReason)> {
        let config = self.config();
        let counters = self.counters_of(config.route.as_ref());
        if config.route.is_none() {
            return Err((counters, DropReason::NoRoute));
        }
        if !config.policy.admits(client.ip()) {
            return Err((counters, DropReason::ClientDenied));
        }
        let mut flows = self.flows.lock().unwrap();
        if let Some(f) = flows.get(&client) {
            // Another datagram of this client made the flow meanwhile.
            return Ok((f.socket.clone(), f.counters.clone(), f.activity.clone()));
        }
        if config.policy.max_connections.is_some_and(|max| flows.len() >= max as usize) {
            return Err((counters, DropReason::FlowLimit));
        }
        let Some(slot) = self.budget.take() else {
            return Err((counters, DropReason::TableFull));
        };
        let endpoint = match self.picker.lock().unwrap().pick(&config.backends) {
            Pick::Endpoint(e) => Some(e),
            Pick::Reject => None,
        };
        let activity = Arc::new(FlowActivity::new(now));
        let (socket, replies) = match endpoint {
            None => (None, None),
            Some(endpoint) => {
                let socket = match backend_socket(endpoint) {
                    Ok(s) => Arc::new(s),
                    Err(e) => {
                        tracing::warn!(port = self.port, %endpoint, error = %e, "UDP: cannot open a socket toward the endpoint");
                        return Err((counters, DropReason::SendFailed));
                    }
                };
                let back = Back { listener: Arc::clone(&self.socket), client, from: local };
                let task = tokio::spawn(replies(Arc::clone(&socket), back, counters.clone(), activity.clone(), self.epoch));
                (Some(socket), Some(task))
            }
        };
        flows.insert(client, Flow { endpoint, socket: socket.clone(), counters: counters.clone(), activity: activity.clone(), replies, slot: Some(slot) });
        tracing::debug!(port = self.port, %client, endpoint = ?endpoint, "UDP flow created");
        Ok((socket, counters, activity))
    }
}

/// A socket connected to `endpoint` from an ephemeral port of the node: the
/// endpoint's replies come back to it, and only its replies (connected UDP).
fn backend_socket(endpoint: SocketAddr) -> std::io::Result<UdpSocket> {
    let any: IpAddr = if endpoint.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
    let socket = std::net::UdpSocket::bind(SocketAddr::new(any, 0))?;
    socket.connect(endpoint)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// Reads client datagrams until the listener stops.
async fn receive(listener: Arc<UdpListener>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let received = if listener.pktinfo {
            super::pktinfo::recv(&listener.socket, &mut buf).await
        } else {
            listener.socket.recv_from(&mut buf).await.map(|(n, client)| (n, client, None))
        };
        match received {
            Ok((n, client, local)) => listener.forward(&buf[..n], client, local).await,
            Err(e) => {
                tracing::warn!(port = listener.port, error = %e, "UDP: receiving from clients failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Where a flow's replies go: to the client, from the listener's socket (its
/// port) and, when known, from the address the client sent its first datagram to.
struct Back {
    listener: Arc<UdpSocket>,
    client: SocketAddr,
    from: Option<Ipv4Addr>,
}

impl Back {
    async fn send(&self, data: &[u8]) -> std::io::Result<usize> {
        match self.from {
            Some(from) => super::pktinfo::send(&self.listener, data, self.client, from).await,
            None => self.listener.send_to(data, self.client).await,
        }
    }
}

/// Carries one flow's replies from its endpoint back to its client.
async fn replies(backend: Arc<UdpSocket>, back: Back, counters: Arc<UdpCounters>, activity: Arc<FlowActivity>, epoch: Instant) {
    let client = back.client;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match backend.recv(&mut buf).await {
            Ok(n) => {
                activity.seen(epoch.elapsed().as_millis() as u64);
                activity.datagrams_to_client.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                activity.bytes_to_client.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                match back.send(&buf[..n]).await {
                    Ok(_) => counters.to_client(n),
                    Err(_) => counters.dropped(DropReason::SendFailed),
                }
            }
            // The endpoint's port was closed (ICMP port unreachable): that
            // datagram is lost; the flow stays, as the endpoint may be back.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => counters.dropped(DropReason::BackendUnreachable),
            Err(e) => {
                tracing::debug!(%client, error = %e, "UDP: the flow's backend socket failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Ends idle flows, checking a few times per idle timeout (at most every second).
async fn sweep(listener: std::sync::Weak<UdpListener>) {
    loop {
        let Some(l) = listener.upgrade() else { return };
        let idle = l.idle_timeout();
        let every = (idle / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
        let now = l.now_ms();
        let ended = l.flows.lock().unwrap().expire_idle(now, idle.as_millis() as u64);
        if ended > 0 {
            tracing::debug!(port = l.port, ended, "UDP flows ended after {idle:?} idle");
        }
        drop(l);
        tokio::time::sleep(every).await;
    }
}
