//! Which listeners of sockgate's Gateways are valid, and who owns each port.
//!
//! One agent serves every Gateway of its class on the node's addresses, so a
//! port can carry one listener only: inside a Gateway two TCP listeners on one
//! port conflict (both `Conflicted`), and across Gateways the oldest Gateway
//! keeps the port and later ones get `Accepted=False/PortUnavailable`.
use std::collections::BTreeMap;

use super::status::{reasons, types, Condition};
use crate::resources::gateway_api::{Listener, RouteGroupKind, GROUP};
use crate::resources::{Gateway, ObjectKey};

pub const TCP_ROUTE_KIND: &str = "TCPRoute";

/// The verdict on one listener before routes are considered.
#[derive(Clone, Debug)]
pub struct ListenerVerdict {
    pub gateway: ObjectKey,
    pub index: usize,
    /// Usable: accepted, not conflicted, with a valid route kind.
    pub valid: bool,
    pub supported_kinds: Vec<RouteGroupKind>,
    pub conditions: Vec<Condition>,
}

fn tcp_route_kind() -> RouteGroupKind {
    RouteGroupKind { group: Some(GROUP.to_string()), kind: TCP_ROUTE_KIND.to_string() }
}

/// The route kinds a TCP listener admits: TCPRoute, or of `allowedRoutes.kinds`
/// those that are TCPRoute. Returns (supported, had invalid kinds).
fn supported_kinds(listener: &Listener) -> (Vec<RouteGroupKind>, bool) {
    let Some(kinds) = listener.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref()) else {
        return (vec![tcp_route_kind()], false);
    };
    if kinds.is_empty() {
        return (vec![tcp_route_kind()], false);
    }
    let (ok, bad): (Vec<_>, Vec<_>) = kinds
        .iter()
        .partition(|k| k.kind == TCP_ROUTE_KIND && k.group.as_deref().unwrap_or(GROUP) == GROUP);
    let supported = if ok.is_empty() { vec![] } else { vec![tcp_route_kind()] };
    (supported, !bad.is_empty())
}

/// Judges the listeners of `gateways` (sockgate's, oldest first).
pub fn judge(gateways: &[(&ObjectKey, &Gateway)]) -> Vec<ListenerVerdict> {
    let mut verdicts = Vec::new();
    // port → owning Gateway (the first, i.e. oldest, to claim it).
    let mut port_owner: BTreeMap<i32, &ObjectKey> = BTreeMap::new();
    for (key, gateway) in gateways {
        let listeners = &gateway.spec.listeners;
        let mut tcp_ports: BTreeMap<i32, usize> = BTreeMap::new();
        for l in listeners.iter().filter(|l| l.protocol == "TCP") {
            *tcp_ports.entry(l.port).or_default() += 1;
        }
        for (index, l) in listeners.iter().enumerate() {
            let mut conditions = Vec::new();
            let mut valid = true;
            let (kinds, bad_kinds) = supported_kinds(l);
            if l.protocol != "TCP" {
                valid = false;
                conditions.push(Condition::new(types::ACCEPTED, false, reasons::UNSUPPORTED_PROTOCOL,
                    format!("sockgate serves TCP listeners only, not {}", l.protocol)));
            } else if port_owner.get(&l.port).is_some_and(|owner| owner != key) {
                valid = false;
                conditions.push(Condition::new(types::ACCEPTED, false, reasons::PORT_UNAVAILABLE,
                    format!("port {} is served for Gateway {}", l.port, port_owner[&l.port])));
            } else {
                conditions.push(Condition::new(types::ACCEPTED, true, reasons::ACCEPTED, ""));
            }
            if l.protocol == "TCP" && tcp_ports[&l.port] > 1 {
                valid = false;
                conditions.push(Condition::new(types::CONFLICTED, true, reasons::PROTOCOL_CONFLICT,
                    format!("more than one TCP listener uses port {}", l.port)));
            } else {
                conditions.push(Condition::new(types::CONFLICTED, false, reasons::NO_CONFLICTS, ""));
            }
            if bad_kinds {
                conditions.push(Condition::new(types::RESOLVED_REFS, false, reasons::INVALID_ROUTE_KINDS,
                    "only TCPRoute is supported on a TCP listener"));
                valid &= !kinds.is_empty();
            } else {
                conditions.push(Condition::new(types::RESOLVED_REFS, true, reasons::RESOLVED_REFS, ""));
            }
            conditions.push(if valid {
                Condition::new(types::PROGRAMMED, true, reasons::PROGRAMMED, "")
            } else {
                Condition::new(types::PROGRAMMED, false, reasons::INVALID, "the listener is not valid")
            });
            verdicts.push(ListenerVerdict { gateway: (*key).clone(), index, valid, supported_kinds: kinds, conditions });
        }
        for l in listeners.iter().filter(|l| l.protocol == "TCP") {
            port_owner.entry(l.port).or_insert(key);
        }
    }
    verdicts
}
