//! The health endpoint: `/healthz` (alive), `/readyz` (a configuration is
//! applied and every listener port it wants is bound: a port held by another
//! process makes the node not ready, naming the port) and `/metrics` (Prometheus text: per-listener counters).
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::dataplane::kernel_splice::SpliceReport;
use crate::dataplane::listeners::{ListenerCounters, ListenerSet};

/// A metric: name, type, help text, and how to read it from a listener's counters.
type Series = (&'static str, &'static str, &'static str, fn(&ListenerCounters) -> u64);

#[derive(Default)]
pub struct Health {
    ready: AtomicBool,
    /// Listener ports wanted and not bound, each with why ("TCP 9000: cannot listen on …").
    unbound: Mutex<Vec<String>>,
    counters: Mutex<BTreeMap<u16, Arc<ListenerCounters>>>,
    /// XDP drops per listener port: (packets, bytes).
    xdp_drops: Mutex<BTreeMap<u16, (u64, u64)>>,
    splice: Mutex<Option<SpliceReport>>,
    /// The UDP relay's listeners, read live on every scrape.
    udp: Mutex<Option<crate::dataplane::udp::Served>>,
    /// The kernel UDP NAT's listeners as of the last tick, and its unmatched fragments.
    udp_kernel: Mutex<(Vec<crate::dataplane::udp::state::ListenerState>, u64)>,
    /// The endpoints' health checks and open connections, read live on every scrape.
    endpoints: Mutex<Option<(Arc<crate::dataplane::health_checks::HealthState>, Arc<crate::dataplane::endpoint_load::EndpointLoad>)>>,
}

impl Health {
    /// Called after each applied configuration: ready, and these listeners' counters.
    pub fn publish(&self, listeners: &ListenerSet) {
        *self.counters.lock().unwrap() = listeners.counters();
        *self.endpoints.lock().unwrap() = Some((listeners.health(), listeners.endpoint_load()));
        self.ready.store(true, Ordering::Relaxed);
    }

    /// The listener ports that could not be bound (empty when all are).
    pub fn publish_unbound(&self, unbound: Vec<String>) {
        *self.unbound.lock().unwrap() = unbound;
    }

    /// `/readyz`: status line and body.
    fn readiness(&self) -> (&'static str, String) {
        if !self.ready.load(Ordering::Relaxed) {
            return ("503 Service Unavailable", "no configuration applied yet\n".to_string());
        }
        let unbound = self.unbound.lock().unwrap();
        if unbound.is_empty() {
            return ("200 OK", "ready\n".to_string());
        }
        ("503 Service Unavailable", format!("listener ports not bound (retried; free them to serve):\n{}\n", unbound.join("\n")))
    }

    pub fn publish_splice(&self, report: SpliceReport) {
        *self.splice.lock().unwrap() = Some(report);
    }

    /// The UDP relay's listeners (once: the handle stays live).
    pub fn publish_udp(&self, served: crate::dataplane::udp::Served) {
        *self.udp.lock().unwrap() = Some(served);
    }

    pub fn publish_udp_kernel(&self, listeners: Vec<crate::dataplane::udp::state::ListenerState>, unmatched_fragments: u64) {
        *self.udp_kernel.lock().unwrap() = (listeners, unmatched_fragments);
    }

    pub fn publish_xdp_drops(&self, drops: BTreeMap<u16, (u64, u64)>) {
        *self.xdp_drops.lock().unwrap() = drops;
    }

    fn metrics(&self) -> String {
        let counters = self.counters.lock().unwrap();
        let mut out = String::new();
        let series: [Series; 11] = [
            ("sockgate_connections_accepted_total", "counter", "Connections accepted on the listener.", |c| c.accepted.load(Ordering::Relaxed)),
            ("sockgate_connections_active", "gauge", "Connections being forwarded now.", |c| c.active.load(Ordering::Relaxed)),
            ("sockgate_connections_open", "gauge", "Connections accepted and not yet ended (what maxConnections limits).", |c| c.open.load(Ordering::Relaxed)),
            ("sockgate_connections_rejected_total", "counter", "Connections reset: no route, or no backend could take them.", |c| c.rejected.load(Ordering::Relaxed)),
            ("sockgate_connections_denied_total", "counter", "Connections reset in userspace because the client address is not allowed (clientCIDRs).", |c| c.denied.load(Ordering::Relaxed)),
            ("sockgate_connections_over_limit_total", "counter", "Connections reset because maxConnections were open.", |c| c.over_limit.load(Ordering::Relaxed)),
            ("sockgate_connections_idle_closed_total", "counter", "Connections closed after idleTimeout without a byte either way.", |c| c.idle_closed.load(Ordering::Relaxed)),
            ("sockgate_backend_connect_failures_total", "counter", "Failed connects to backend endpoints.", |c| c.connect_failures.load(Ordering::Relaxed)),
            ("sockgate_backend_ejections_total", "counter", "Endpoints ejected by outlier detection.", |c| c.ejections.load(Ordering::Relaxed)),
            ("sockgate_bytes_client_to_backend_total", "counter", "Bytes forwarded from clients to backends (counted when a connection ends).", |c| c.bytes_client_to_backend.load(Ordering::Relaxed)),
            ("sockgate_bytes_backend_to_client_total", "counter", "Bytes forwarded from backends to clients (counted when a connection ends).", |c| c.bytes_backend_to_client.load(Ordering::Relaxed)),
        ];
        for (name, kind, help, value) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (port, c) in counters.iter() {
                let _ = writeln!(out, "{name}{{port=\"{port}\"}} {}", value(c));
            }
        }
        if let Some(report) = self.splice.lock().unwrap().as_ref() {
            write_splice(&mut out, report);
        }
        let drops = self.xdp_drops.lock().unwrap();
        if !drops.is_empty() {
            let name = "sockgate_xdp_dropped_packets_total";
            let _ = writeln!(out, "# HELP {name} Packets from denied clients dropped by XDP before the TCP stack.\n# TYPE {name} counter");
            for (port, (packets, _)) in drops.iter() {
                let _ = writeln!(out, "{name}{{port=\"{port}\"}} {packets}");
            }
        }
        if let Some((health, load)) = self.endpoints.lock().unwrap().as_ref() {
            write_endpoints(&mut out, health, load);
        }
        let mut state = match self.udp.lock().unwrap().as_ref() {
            Some(served) => crate::dataplane::udp::state::UdpState::of(&served.lock().unwrap()),
            None => Default::default(),
        };
        let (kernel, unmatched) = self.udp_kernel.lock().unwrap().clone();
        state.listeners.extend(kernel);
        state.kernel_fragments_unmatched = unmatched;
        crate::dataplane::udp::metrics::render(&state, &mut out);
        out
    }
}

/// Per backend endpoint: its health check's verdict and counts (endpoints
/// with a check only), and the connections this agent holds open to it
/// (endpoints with one only). Bounded by the endpoints of the served routes.
fn write_endpoints(out: &mut String, health: &crate::dataplane::health_checks::HealthState, load: &crate::dataplane::endpoint_load::EndpointLoad) {
    let checks = health.snapshot();
    if !checks.is_empty() {
        let name = "sockgate_backend_endpoint_healthy";
        let _ = writeln!(out, "# HELP {name} 1 while the endpoint passes its active health check (or has not been checked yet), 0 while it is left out of the pick.\n# TYPE {name} gauge");
        for c in &checks {
            let _ = writeln!(out, "{name}{{endpoint=\"{}\",backend=\"{}\"}} {}", c.endpoint, c.backends.join(","), u8::from(c.healthy != Some(false)));
        }
        let name = "sockgate_backend_health_checks_total";
        let _ = writeln!(out, "# HELP {name} Active health checks of the endpoint, by result.\n# TYPE {name} counter");
        for c in &checks {
            let _ = writeln!(out, "{name}{{endpoint=\"{}\",result=\"passed\"}} {}", c.endpoint, c.checks_passed);
            let _ = writeln!(out, "{name}{{endpoint=\"{}\",result=\"failed\"}} {}", c.endpoint, c.checks_failed);
        }
    }
    let open = load.snapshot();
    let name = "sockgate_backend_endpoint_connections";
    let _ = writeln!(out, "# HELP {name} Connections this agent holds open to the endpoint (what LeastConnections compares).\n# TYPE {name} gauge");
    for (endpoint, n) in open {
        let _ = writeln!(out, "{name}{{endpoint=\"{endpoint}\"}} {n}");
    }
}

/// The kernel splice's counters (kernel-forwarded bytes are read from its
/// per-listener map, so they grow while connections live).
fn write_splice(out: &mut String, report: &SpliceReport) {
    fn header(out: &mut String, name: &str, kind: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    header(out, "sockgate_kernel_splice_connections_total", "counter", "Connections handed to the kernel TCP splice.");
    let _ = writeln!(out, "sockgate_kernel_splice_connections_total {}", report.spliced);
    header(out, "sockgate_kernel_splice_handovers_total", "counter", "Handovers by how they went: quiet (nothing in flight) or held (peers held back by a zero window).");
    let _ = writeln!(out, "sockgate_kernel_splice_handovers_total{{kind=\"quiet\"}} {}", report.quiet_handovers);
    let _ = writeln!(out, "sockgate_kernel_splice_handovers_total{{kind=\"held\"}} {}", report.held_handovers);
    let _ = writeln!(out, "# HELP sockgate_kernel_splice_fallbacks_total Connections kept on splice(2), by reason.\n# TYPE sockgate_kernel_splice_fallbacks_total counter");
    for (reason, n) in &report.refused {
        let _ = writeln!(out, "sockgate_kernel_splice_fallbacks_total{{reason=\"{}\"}} {n}", reason.name());
    }
    let _ = writeln!(out, "# HELP sockgate_kernel_splice_flow_entries Entries in the FLOWS map (two per spliced connection).\n# TYPE sockgate_kernel_splice_flow_entries gauge");
    let _ = writeln!(out, "sockgate_kernel_splice_flow_entries {}", report.flow_entries);
    for (name, help, value) in [
        ("sockgate_kernel_splice_bytes_from_clients_total", "TCP payload bytes the kernel splice forwarded from clients.", (|s: &gateway_common::SpliceStats| s.bytes_from_clients) as fn(&gateway_common::SpliceStats) -> u64),
        ("sockgate_kernel_splice_bytes_to_clients_total", "TCP payload bytes the kernel splice forwarded to clients.", |s| s.bytes_to_clients),
        ("sockgate_kernel_splice_packets_from_clients_total", "Segments the kernel splice forwarded from clients.", |s| s.packets_from_clients),
        ("sockgate_kernel_splice_packets_to_clients_total", "Segments the kernel splice forwarded to clients.", |s| s.packets_to_clients),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (port, stats) in &report.per_listener {
            let _ = writeln!(out, "{name}{{port=\"{port}\"}} {}", value(stats));
        }
    }
}

/// Binds `addr` and answers in the background until the handle is aborted.
/// A port still held (by an agent handing over to this one) is retried for `patience`.
/// What one client of the health port may take: it listens on the host
/// network, so a client that connects and says nothing (or a flood of them)
/// must not hold the agent's descriptors or tasks.
#[derive(Clone, Copy, Debug)]
pub struct HealthLimits {
    /// Connections served at once; beyond it a new one is closed at once.
    pub connections: usize,
    /// How long a client may take to send its request, and to read the answer.
    pub timeout: std::time::Duration,
}

impl Default for HealthLimits {
    fn default() -> Self {
        HealthLimits { connections: 64, timeout: std::time::Duration::from_secs(5) }
    }
}

pub async fn serve(addr: SocketAddr, health: Arc<Health>, patience: std::time::Duration) -> std::io::Result<tokio::task::JoinHandle<()>> {
    serve_with(addr, health, patience, HealthLimits::default()).await
}

pub async fn serve_with(addr: SocketAddr, health: Arc<Health>, patience: std::time::Duration, limits: HealthLimits) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let deadline = tokio::time::Instant::now() + patience;
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => break listener,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.connections));
    Ok(tokio::spawn(async move {
        loop {
            let mut stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                // Out of descriptors, or a client gone before accept: the
                // endpoint stays (a probe must work again once it can).
                Err(e) => {
                    tracing::debug!(error = %e, "health endpoint: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let health = health.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let mut buf = [0u8; 1024];
                let Ok(Ok(n)) = tokio::time::timeout(limits.timeout, stream.read(&mut buf)).await else { return };
                let request = String::from_utf8_lossy(&buf[..n]);
                let path = request.split_whitespace().nth(1).unwrap_or("/");
                let (status, body) = match path {
                    "/healthz" => ("200 OK", "ok\n".to_string()),
                    "/readyz" => health.readiness(),
                    "/metrics" => ("200 OK", health.metrics()),
                    _ => ("404 Not Found", "not found\n".to_string()),
                };
                let response = format!("HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = tokio::time::timeout(limits.timeout, stream.write_all(response.as_bytes())).await;
            });
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer).await;
        answer
    }

    #[tokio::test]
    async fn silent_clients_are_let_go_after_the_timeout_and_beyond_the_cap_a_new_one_is_closed_at_once() {
        let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let limits = HealthLimits { connections: 4, timeout: Duration::from_millis(500) };
        let _server = serve_with(addr, Arc::new(Health::default()), Duration::from_secs(2), limits).await.unwrap();
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200 OK"));
        // Four clients that never send a request take every slot.
        let mut silent = Vec::new();
        for _ in 0..4 {
            silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = std::time::Instant::now();
        assert_eq!(get(addr, "/healthz").await, "", "over the cap: closed without an answer");
        assert!(started.elapsed() < Duration::from_millis(400), "closed at once, not after a timeout");
        // The timeout frees them: each silent client sees its connection closed.
        for mut s in silent {
            let mut buf = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await.expect("the server let go");
            assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        }
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200 OK"), "probes are answered again");
    }
}
