//! The userspace UDP relay: serves the UDP listeners (UDPRoutes) of a
//! [`DataplaneConfig`], applied as a diff.
//!
//! The kernel UDP NAT (`super::udp_nat`, with `--dataplane ebpf`) forwards
//! IPv4 flows without it; this relay serves every other mode, the datagrams
//! the kernel path passes on (fragments, IPv6), and everything when BPF is
//! unavailable. Semantics both keep:
//! a flow is a client address; its first datagram picks an endpoint by weight
//! (smooth weighted round-robin over flows, so weights hold across many
//! clients); every datagram of the flow goes to that endpoint from a socket of
//! its own (the node's address, so replies come back through the relay), and
//! replies go back from the listener's socket. Flows end after `idleTimeout`
//! (ListenerPolicy; [`listener::DEFAULT_IDLE_TIMEOUT`] without one);
//! endpoint changes follow [`flows`]' rules. `clientCIDRs` drop datagrams of
//! clients not allowed before any flow exists; `maxConnections` caps the flows.
//! All listeners together hold at most a quarter of the open-files limit in
//! flows: a flood of new client addresses gets its datagrams dropped
//! (`table_full`) while existing flows keep being served.
//!
//! A port that stays keeps its socket and flows; a port that goes closes its
//! socket and ends its flows. A port that cannot be bound (in use) is retried
//! on every tick, as TCP listeners are. A takeover does not carry UDP sockets
//! or flows: the new agent binds the ports once the old one let them go, and
//! clients' next datagrams start new flows.
pub mod counters;
pub mod flows;
pub mod listener;
pub mod metrics;
mod pktinfo;
pub mod state;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::model::config::ListenerConfig;
use listener::UdpListener;

/// The UDP listeners being served, shared with the metrics endpoint.
pub type Served = Arc<Mutex<BTreeMap<u16, Arc<UdpListener>>>>;

pub struct UdpRelay {
    bind_ip: IpAddr,
    budget: Arc<flows::Budget>,
    served: Served,
    /// Listeners whose port could not be bound yet, and why.
    unbound: BTreeMap<u16, (ListenerConfig, String)>,
    epoch: Instant,
    announced: bool,
    /// The kernel UDP NAT serves these listeners too (the relay gets only what it passes to the stack).
    kernel: bool,
}

impl UdpRelay {
    /// A relay holding at most a quarter of the open-files limit in flows
    /// (one socket each), leaving the rest to TCP connections and listeners.
    pub fn new(bind_ip: IpAddr) -> Self {
        let soft = crate::limits::current().map(|l| l.soft).unwrap_or(1024);
        Self::with_budget(bind_ip, (soft / 4).max(64) as usize)
    }

    pub fn with_budget(bind_ip: IpAddr, max_flows: usize) -> Self {
        UdpRelay { bind_ip, budget: flows::Budget::new(max_flows), served: Served::default(), unbound: BTreeMap::new(), epoch: Instant::now(), announced: false, kernel: false }
    }

    /// Whether the kernel UDP NAT serves the listeners in front of this relay (for the log).
    pub fn set_kernel(&mut self, kernel: bool) {
        self.kernel = kernel;
    }

    /// The listeners, for `/metrics` (read live, not copied).
    pub fn served(&self) -> Served {
        Arc::clone(&self.served)
    }

    /// Ports that could not be bound, and why.
    pub fn unbound(&self) -> impl Iterator<Item = (u16, &str)> {
        self.unbound.iter().map(|(p, (_, why))| (*p, why.as_str()))
    }

    /// Serves exactly the UDP listeners of `wanted`.
    pub fn apply(&mut self, wanted: &BTreeMap<u16, ListenerConfig>) {
        if !wanted.is_empty() && !self.announced {
            self.announced = true;
            if self.kernel {
                tracing::info!(max_flows = self.budget.max, "UDP relay bound behind the kernel UDP NAT: it serves only the datagrams the NAT passes to the stack (IPv4 fragments, IPv6)");
            } else {
            tracing::info!(
                max_flows = self.budget.max,
                "UDP data path: userspace relay (one socket per flow toward the backend); \
                 the kernel UDP NAT runs only with --dataplane ebpf, so every UDP listener is served here"
            );
            }
        }
        let mut served = self.served.lock().unwrap();
        served.retain(|port, listener| {
            let keep = wanted.contains_key(port);
            if !keep {
                listener.stop();
                tracing::info!(port, "UDP listener closed");
            }
            keep
        });
        self.unbound.retain(|port, _| wanted.contains_key(port));
        for (port, config) in wanted {
            match served.get(port) {
                Some(listener) => listener.update(config),
                None => match UdpListener::bind(self.bind_ip, *port, config.clone(), self.epoch, Arc::clone(&self.budget)) {
                    Ok(listener) => {
                        self.unbound.remove(port);
                        tracing::info!(port, route = ?config.route.as_ref().map(ToString::to_string), "UDP listener bound");
                        served.insert(*port, listener);
                    }
                    Err(e) => {
                        self.unbound.insert(*port, (config.clone(), e.to_string()));
                    }
                },
            }
        }
    }

    /// Binds ports that were busy (called on every tick).
    pub fn retry_unbound(&mut self) {
        if self.unbound.is_empty() {
            return;
        }
        let mut wanted: BTreeMap<u16, ListenerConfig> = self.served.lock().unwrap().iter().map(|(p, l)| (*p, (*l.config()).clone())).collect();
        wanted.extend(self.unbound.iter().map(|(p, (c, _))| (*p, c.clone())));
        self.apply(&wanted);
    }

    /// What `gateway-agent inspect` shows: every listener with its counters and flow table.
    pub fn state(&self) -> state::UdpState {
        state::UdpState::of(&self.served.lock().unwrap())
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        for listener in self.served.lock().unwrap().values() {
            listener.stop();
        }
    }
}
