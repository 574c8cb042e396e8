//! The relay's flow table: one entry per client address (the client's
//! 5-tuple, the listener fixing the rest), each bound to one endpoint for its
//! life, so every datagram of a flow reaches the same backend.
//!
//! Endpoint changes: a new flow picks from the new endpoint set at once. An
//! existing flow whose endpoint is still a ready endpoint of the route stays
//! on it; one whose endpoint left ends at once (`EndpointRemoved`), and the
//! client's next datagram starts a new flow on a current endpoint: flows
//! *move* on their next datagram, nothing waits for an idle timeout. A flow
//! whose share went to an invalid backend (it drops its datagrams) ends when
//! the route's backends change at all, so it is picked afresh too.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use super::counters::{FlowEnd, UdpCounters};
use crate::model::config::ListenerConfig;
use crate::resources::ObjectKey;

/// One client's flow.
pub struct Flow {
    /// The endpoint its datagrams go to; None: its share belongs to a
    /// backendRef that cannot serve, and its datagrams are dropped.
    pub endpoint: Option<SocketAddr>,
    /// The socket toward the endpoint (connected to it, so only its replies arrive).
    pub socket: Option<Arc<tokio::net::UdpSocket>>,
    pub counters: Arc<UdpCounters>,
    pub activity: Arc<FlowActivity>,
    /// Carries the endpoint's replies back to the client; aborted with the flow.
    pub replies: Option<JoinHandle<()>>,
    /// Its place in the relay's flow budget, given back with the flow.
    pub slot: Option<Slot>,
}

impl std::ops::Drop for Flow {
    fn drop(&mut self) {
        if let Some(task) = &self.replies {
            task.abort();
        }
    }
}

/// How many flows the relay may hold, all listeners together: each flow is
/// a socket, and a flood of new client addresses must not take the
/// descriptors TCP connections need.
#[derive(Debug)]
pub struct Budget {
    pub max: usize,
    used: AtomicUsize,
}

impl Budget {
    pub fn new(max: usize) -> Arc<Budget> {
        Arc::new(Budget { max, used: AtomicUsize::new(0) })
    }

    /// A slot, unless all are taken.
    pub fn take(self: &Arc<Self>) -> Option<Slot> {
        self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1)).ok()?;
        Some(Slot(Arc::clone(self)))
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// One taken slot of a [`Budget`], returned on drop.
#[derive(Debug)]
pub struct Slot(Arc<Budget>);

impl std::ops::Drop for Slot {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a flow did, shared with its reply task.
#[derive(Debug, Default)]
pub struct FlowActivity {
    /// Milliseconds since the relay's epoch of the last datagram either way.
    pub last_seen_ms: AtomicU64,
    pub created_ms: AtomicU64,
    pub datagrams_from_client: AtomicU64,
    pub datagrams_to_client: AtomicU64,
    pub bytes_from_client: AtomicU64,
    pub bytes_to_client: AtomicU64,
}

impl FlowActivity {
    pub fn new(now_ms: u64) -> Self {
        let a = FlowActivity::default();
        a.last_seen_ms.store(now_ms, Ordering::Relaxed);
        a.created_ms.store(now_ms, Ordering::Relaxed);
        a
    }

    pub fn seen(&self, now_ms: u64) {
        self.last_seen_ms.fetch_max(now_ms, Ordering::Relaxed);
    }
}

/// A flow as `inspect` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowView {
    pub client: SocketAddr,
    /// None: its datagrams are dropped (invalid backend).
    pub endpoint: Option<SocketAddr>,
    pub idle_ms: u64,
    pub age_ms: u64,
    pub datagrams_from_client: u64,
    pub datagrams_to_client: u64,
    pub bytes_from_client: u64,
    pub bytes_to_client: u64,
}

#[derive(Default)]
pub struct FlowTable {
    flows: HashMap<SocketAddr, Flow>,
    /// The route the flows belong to (all flows of a listener serve its one route).
    route: Option<ObjectKey>,
}

impl FlowTable {
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn get(&self, client: &SocketAddr) -> Option<&Flow> {
        self.flows.get(client)
    }

    pub fn insert(&mut self, client: SocketAddr, flow: Flow) {
        flow.counters.flows_created.fetch_add(1, Ordering::Relaxed);
        self.flows.insert(client, flow);
    }

    /// Ends flows idle for `idle_ms` or longer; returns how many.
    pub fn expire_idle(&mut self, now_ms: u64, idle_ms: u64) -> usize {
        self.end_where(FlowEnd::Idle, |_, f| now_ms.saturating_sub(f.activity.last_seen_ms.load(Ordering::Relaxed)) >= idle_ms)
    }

    /// Brings the table in line with a new configuration of its listener (see the module's rules).
    pub fn reconcile(&mut self, before: &ListenerConfig, after: &ListenerConfig) {
        if before.route != after.route || self.route != after.route {
            self.end_where(FlowEnd::RouteChanged, |_, _| true);
            self.route = after.route.clone();
            return;
        }
        let backends_changed = before.backends != after.backends;
        let still_ready = |e: &SocketAddr| after.backends.iter().any(|g| g.weight > 0 && g.endpoints.contains(e));
        self.end_where(FlowEnd::EndpointRemoved, |_, f| match f.endpoint {
            Some(e) => !still_ready(&e),
            None => backends_changed,
        });
    }

    /// Ends every flow (the listener goes away).
    pub fn clear(&mut self, why: FlowEnd) -> usize {
        self.end_where(why, |_, _| true)
    }

    fn end_where(&mut self, why: FlowEnd, mut end: impl FnMut(&SocketAddr, &Flow) -> bool) -> usize {
        let before = self.flows.len();
        self.flows.retain(|client, flow| {
            if end(client, flow) {
                flow.counters.ended(why, 1);
                false
            } else {
                true
            }
        });
        before - self.flows.len()
    }

    pub fn views(&self, now_ms: u64) -> Vec<FlowView> {
        let mut views: Vec<FlowView> = self
            .flows
            .iter()
            .map(|(client, f)| {
                let a = &f.activity;
                let get = |x: &AtomicU64| x.load(Ordering::Relaxed);
                FlowView {
                    client: *client,
                    endpoint: f.endpoint,
                    idle_ms: now_ms.saturating_sub(get(&a.last_seen_ms)),
                    age_ms: now_ms.saturating_sub(get(&a.created_ms)),
                    datagrams_from_client: get(&a.datagrams_from_client),
                    datagrams_to_client: get(&a.datagrams_to_client),
                    bytes_from_client: get(&a.bytes_from_client),
                    bytes_to_client: get(&a.bytes_to_client),
                }
            })
            .collect();
        views.sort_by_key(|v| v.client);
        views
    }

    pub fn set_route(&mut self, route: Option<ObjectKey>) {
        self.route = route;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::BackendGroup;

    fn config(route: &str, groups: &[(u32, &[&str])]) -> ListenerConfig {
        ListenerConfig {
            gateway: ObjectKey::new("default", "gw"),
            listener_set: None,
            listener: "dns".into(),
            route: (!route.is_empty()).then(|| ObjectKey::new("default", route)),
            backends: groups
                .iter()
                .map(|(weight, eps)| BackendGroup { weight: *weight, endpoints: eps.iter().map(|e| e.parse().unwrap()).collect(), ..Default::default() })
                .collect(),
            policy: Default::default(),
            load_balancer: Default::default(),
        }
    }

    fn flow(endpoint: Option<&str>, last_seen_ms: u64, counters: &Arc<UdpCounters>) -> Flow {
        Flow { endpoint: endpoint.map(|e| e.parse().unwrap()), socket: None, counters: counters.clone(), activity: Arc::new(FlowActivity::new(last_seen_ms)), replies: None, slot: None }
    }

    fn clients(t: &FlowTable) -> Vec<u16> {
        let mut ports: Vec<u16> = t.flows.keys().map(|c| c.port()).collect();
        ports.sort();
        ports
    }

    fn table(counters: &Arc<UdpCounters>, cfg: &ListenerConfig) -> FlowTable {
        let mut t = FlowTable::default();
        t.set_route(cfg.route.clone());
        t.insert("198.18.1.1:1001".parse().unwrap(), flow(Some("198.18.2.2:53"), 0, counters));
        t.insert("198.18.1.1:1002".parse().unwrap(), flow(Some("198.18.3.2:53"), 500, counters));
        t.insert("198.18.1.1:1003".parse().unwrap(), flow(None, 900, counters));
        t
    }

    #[test]
    fn idle_flows_expire_and_are_counted() {
        let counters = Arc::new(UdpCounters::default());
        let cfg = config("r", &[(1, &["198.18.2.2:53", "198.18.3.2:53"]), (1, &[])]);
        let mut t = table(&counters, &cfg);
        assert_eq!(t.expire_idle(1000, 1000), 1);
        assert_eq!(clients(&t), [1002, 1003]);
        assert_eq!(t.expire_idle(1600, 1000), 1);
        assert_eq!(counters.read().flows_ended[0], ("idle".to_string(), 2));
        assert_eq!(counters.read().flows_created, 3);
    }

    #[test]
    fn a_removed_endpoint_ends_its_flows_only_and_new_backends_end_dropping_flows() {
        let counters = Arc::new(UdpCounters::default());
        let before = config("r", &[(1, &["198.18.2.2:53", "198.18.3.2:53"]), (1, &[])]);
        let mut t = table(&counters, &before);
        let after = config("r", &[(1, &["198.18.3.2:53"]), (1, &[])]);
        t.reconcile(&before, &after);
        // 1001's endpoint left; 1003 (an invalid backend's share) is picked again because the backends changed.
        assert_eq!(clients(&t), [1002]);
        let values = counters.read();
        assert!(values.flows_ended.contains(&("endpoint_removed".to_string(), 2)), "{values:?}");
        // Same backends again: nothing ends.
        t.reconcile(&after, &after);
        assert_eq!(clients(&t), [1002]);
        // Weight 0: its endpoints take no flows, existing ones move.
        t.reconcile(&after, &config("r", &[(0, &["198.18.3.2:53"]), (1, &["198.18.2.2:53"])]));
        assert!(t.is_empty());
    }

    #[test]
    fn the_budget_gives_out_max_slots_and_takes_them_back() {
        let budget = Budget::new(2);
        let (a, b) = (budget.take().unwrap(), budget.take().unwrap());
        assert!(budget.take().is_none());
        drop(a);
        assert_eq!(budget.used(), 1);
        assert!(budget.take().is_some(), "a returned slot is free again");
        drop(b);
    }

    #[test]
    fn another_route_ends_every_flow() {
        let counters = Arc::new(UdpCounters::default());
        let before = config("r", &[(1, &["198.18.2.2:53", "198.18.3.2:53"])]);
        let mut t = table(&counters, &before);
        t.reconcile(&before, &config("other", &[(1, &["198.18.2.2:53", "198.18.3.2:53"])]));
        assert!(t.is_empty());
        assert!(counters.read().flows_ended.contains(&("route_changed".to_string(), 3)));
    }
}
