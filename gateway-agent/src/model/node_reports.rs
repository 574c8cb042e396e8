//! What the nodes report back: listener ports an agent could not bind.
//!
//! The translator alone cannot know that a port is held by another process on
//! a node; each agent says so in its node Lease (see `status::lease`), and the
//! status writer feeds the live reports back in through [`Settings`](super::Settings).
//! A listener that is valid but not bound on some node is `Programmed=False`
//! with reason `Pending` (the agent retries the bind: it may yet be programmed)
//! and a message naming the port, the nodes and their errors; a Gateway or
//! ListenerSet none of whose served listeners is bound anywhere is
//! `Programmed=False/Pending` too. `Accepted` is untouched: the configuration is
//! valid, the node is not ready for it (a port in use is a fact about a node,
//! not about the manifest). The data plane is not changed either: the listener
//! stays wanted so the bind is retried and serves as soon as the port is free.
use std::collections::BTreeMap;

use super::config::{DataplaneConfig, ListenerConfig};
use super::status::{reasons, types, Condition, ListenerStatus, StatusReport};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

/// One node's failure to bind one listener port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct UnboundPort {
    pub node: String,
    pub protocol: Protocol,
    pub port: u16,
    pub error: String,
}

/// Marks the listeners (and their Gateways and ListenerSets) that `unbound`
/// says some of the `nodes` serving agents could not bind.
pub fn mark_unbound(unbound: &[UnboundPort], nodes: usize, dataplane: &DataplaneConfig, status: &mut StatusReport) {
    let mut by_port: BTreeMap<(Protocol, u16), Vec<&UnboundPort>> = BTreeMap::new();
    for u in unbound {
        by_port.entry((u.protocol, u.port)).or_default().push(u);
    }
    if by_port.is_empty() {
        return;
    }
    let served = dataplane.listeners.iter().map(|(p, c)| (Protocol::Tcp, *p, c)).chain(dataplane.udp_listeners.iter().map(|(p, c)| (Protocol::Udp, *p, c)));
    // Per Gateway and per ListenerSet: (listeners served, listeners bound on no node).
    let mut gateways: BTreeMap<_, (usize, usize)> = BTreeMap::new();
    let mut sets: BTreeMap<_, (usize, usize)> = BTreeMap::new();
    for (protocol, port, config) in served {
        let failures = by_port.get(&(protocol, port)).map(Vec::as_slice).unwrap_or_default();
        let nowhere = !failures.is_empty() && failures.len() >= nodes;
        let count = |e: &mut (usize, usize)| {
            e.0 += 1;
            e.1 += usize::from(nowhere);
        };
        count(gateways.entry(config.gateway.clone()).or_default());
        if let Some(set) = &config.listener_set {
            count(sets.entry(set.clone()).or_default());
        }
        if failures.is_empty() {
            continue;
        }
        let message = message(protocol, port, failures, nodes);
        if let Some(listener) = listener_status(status, config) {
            set_programmed(&mut listener.conditions, &message);
        }
    }
    for (key, (served, nowhere)) in gateways {
        if served == nowhere {
            if let Some(gateway) = status.gateways.get_mut(&key) {
                set_programmed(&mut gateway.conditions, "no listener could be bound on any node: see status.listeners");
            }
        }
    }
    for (key, (served, nowhere)) in sets {
        if served == nowhere {
            if let Some(set) = status.listener_sets.get_mut(&key) {
                set_programmed(&mut set.conditions, "no listener could be bound on any node: see status.listeners");
            }
        }
    }
}

/// "TCP port 9000 cannot be bound on 1 of 2 nodes (node-b: Address in use (os error 98)); retried every few seconds"
fn message(protocol: Protocol, port: u16, failures: &[&UnboundPort], nodes: usize) -> String {
    let mut failures = failures.to_vec();
    failures.sort();
    let detail: Vec<String> = failures.iter().map(|f| format!("{}: {}", f.node, f.error)).collect();
    format!(
        "{} port {port} cannot be bound on {} of {} node{} ({}); the agent retries the bind and serves as soon as the port is free",
        protocol.name(),
        failures.len(),
        nodes.max(failures.len()),
        if nodes.max(failures.len()) == 1 { "" } else { "s" },
        detail.join("; ")
    )
}

fn listener_status<'a>(status: &'a mut StatusReport, config: &ListenerConfig) -> Option<&'a mut ListenerStatus> {
    let listeners = match &config.listener_set {
        Some(set) => &mut status.listener_sets.get_mut(set)?.listeners,
        None => &mut status.gateways.get_mut(&config.gateway)?.listeners,
    };
    listeners.iter_mut().find(|l| l.name == config.listener)
}

fn set_programmed(conditions: &mut [Condition], message: &str) {
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == types::PROGRAMMED && c.status) {
        *c = Condition::new(types::PROGRAMMED, false, reasons::PENDING, message);
    }
}
