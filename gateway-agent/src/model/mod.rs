//! The translator: a pure function from a [`Snapshot`] to the data plane
//! configuration and the status of every object sockgate owns. No I/O, no
//! clock (creation times come in the snapshot), deterministic output.
pub mod attach;
pub mod backends;
pub mod changes;
pub mod config;
pub mod ignored;
pub mod listeners;
pub mod policies;
pub mod routes;
pub mod status;
pub mod transitions;
#[cfg(test)]
mod policy_tests;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod udp_tests;

use std::collections::BTreeMap;

use config::{DataplaneConfig, ListenerConfig};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use listeners::RouteKind;
use status::{reasons, types, Condition, GatewayStatus, ListenerStatus, StatusReport};

use crate::resources::{Gateway, ObjectKey, Snapshot};

pub const DEFAULT_CONTROLLER_NAME: &str = "sockgate.io/gateway-controller";

/// What the translator needs besides the snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// GatewayClasses with this controllerName are sockgate's.
    pub controller_name: String,
    /// Addresses of the nodes serving the Gateways (their `status.addresses`).
    pub gateway_addresses: Vec<std::net::IpAddr>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { controller_name: DEFAULT_CONTROLLER_NAME.to_string(), gateway_addresses: Vec::new() }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Translation {
    pub dataplane: DataplaneConfig,
    pub status: StatusReport,
}

/// Creation time then namespace/name: the spec's order of precedence.
fn age_order(meta: &ObjectMeta, key: &ObjectKey) -> (Option<k8s_openapi::jiff::Timestamp>, ObjectKey) {
    (meta.creation_timestamp.as_ref().map(|t| t.0), key.clone())
}

pub fn translate(snapshot: &Snapshot, settings: &Settings) -> Translation {
    let controller_name = settings.controller_name.as_str();
    let mut status = StatusReport::default();

    // GatewayClasses of this controller.
    let mut our_classes = Vec::new();
    for (key, class) in &snapshot.gateway_classes {
        if class.spec.controller_name == controller_name {
            our_classes.push(key.name.clone());
            status
                .gateway_classes
                .insert(key.clone(), vec![Condition::new(types::ACCEPTED, true, reasons::ACCEPTED, "")]);
        }
    }

    // Gateways of those classes, oldest first (the oldest keeps a contested port).
    let mut gateways: Vec<(&ObjectKey, &Gateway)> = snapshot
        .gateways
        .iter()
        .filter(|(_, g)| our_classes.contains(&g.spec.gateway_class_name))
        .collect();
    gateways.sort_by_key(|(k, g)| age_order(&g.metadata, k));
    let verdicts = listeners::judge(&gateways);
    // By Gateway, once: filtering all verdicts for each route's parent was quadratic.
    let mut verdicts_by_gateway: BTreeMap<&ObjectKey, Vec<&listeners::ListenerVerdict>> = BTreeMap::new();
    for verdict in &verdicts {
        verdicts_by_gateway.entry(&verdict.gateway).or_default().push(verdict);
    }
    let verdicts_of = |gateway: &ObjectKey| -> &[&listeners::ListenerVerdict] { verdicts_by_gateway.get(gateway).map(Vec::as_slice).unwrap_or_default() };
    let gateway_by_key: BTreeMap<&ObjectKey, &Gateway> = gateways.iter().copied().collect();
    let backends = backends::Backends::new(snapshot);

    let namespace_labels = |ns: &str| -> BTreeMap<String, String> {
        let mut labels = snapshot
            .namespaces
            .get(&ObjectKey::cluster(ns))
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default();
        // The API server sets this label on every namespace (since 1.21).
        labels.insert("kubernetes.io/metadata.name".into(), ns.to_string());
        labels
    };
    let parents = routes::Parents { gateways: &gateway_by_key, verdicts: &verdicts_of, namespace_labels: &namespace_labels };
    let tcp = routes::route(RouteKind::Tcp, snapshot.tcp_routes.iter().map(|(k, r)| (k, &r.route.metadata, &r.route.spec)), &parents, &backends);
    let udp = routes::route(RouteKind::Udp, snapshot.udp_routes.iter().map(|(k, r)| (k, &r.route.metadata, &r.route.spec)), &parents, &backends);
    let routed_of = |kind: RouteKind| match kind {
        RouteKind::Tcp => &tcp,
        RouteKind::Udp => &udp,
    };

    // Listeners: status, and the data plane entry of every valid one.
    let mut dataplane = DataplaneConfig::default();
    for (gateway_key, gateway) in &gateways {
        let mut listener_statuses = Vec::new();
        for verdict in verdicts_of(gateway_key) {
            let listener = &gateway.spec.listeners[verdict.index];
            let routed = verdict.kind.map(routed_of);
            let routes = routed.and_then(|r| r.attached.get(&((*gateway_key).clone(), verdict.index)).cloned()).unwrap_or_default();
            listener_statuses.push(ListenerStatus {
                name: listener.name.clone(),
                attached_routes: routes.len() as u32,
                supported_kinds: verdict.supported_kinds.clone(),
                conditions: verdict.conditions.clone(),
            });
            let (Some(kind), Some(routed), true) = (verdict.kind, routed, verdict.valid) else {
                continue;
            };
            // `attached` lists routes in age order: the first one wins the traffic.
            let winner = routes.first().cloned();
            let backends = winner.as_ref().map(|r| routed.resolved[r].clone()).unwrap_or_default();
            let config = ListenerConfig { gateway: (*gateway_key).clone(), listener: listener.name.clone(), route: winner, backends, policy: Default::default() };
            let by_port = match kind {
                RouteKind::Tcp => &mut dataplane.listeners,
                RouteKind::Udp => &mut dataplane.udp_listeners,
            };
            by_port.insert(listener.port as u16, config);
        }
        let all_valid = verdicts_of(gateway_key).iter().all(|v| v.valid);
        let any_valid = verdicts_of(gateway_key).iter().any(|v| v.valid);
        let accepted = if all_valid {
            Condition::new(types::ACCEPTED, true, reasons::ACCEPTED, "")
        } else if any_valid {
            Condition::new(types::ACCEPTED, true, reasons::LISTENERS_NOT_VALID, "some listeners are not valid")
        } else {
            Condition::new(types::ACCEPTED, false, reasons::LISTENERS_NOT_VALID, "no listener is valid")
        };
        let programmed = if any_valid {
            Condition::new(types::PROGRAMMED, true, reasons::PROGRAMMED, "")
        } else {
            Condition::new(types::PROGRAMMED, false, reasons::INVALID, "no listener is valid")
        };
        status.gateways.insert(
            (*gateway_key).clone(),
            GatewayStatus { addresses: settings.gateway_addresses.clone(), conditions: vec![accepted, programmed], listeners: listener_statuses },
        );
    }
    status.routes = tcp.status;
    status.udp_routes = udp.status;
    status.policies = policies::apply(snapshot, &gateways, &mut dataplane);
    set_observed_generations(snapshot, &mut status);
    Translation { dataplane, status }
}

/// Every condition records the generation of the object it describes (an
/// object without one, as on disk, counts as generation 1, its first).
fn set_observed_generations(snapshot: &Snapshot, status: &mut StatusReport) {
    let generation = |meta: Option<&ObjectMeta>| meta.and_then(|m| m.generation).unwrap_or(1);
    for (key, conditions) in status.gateway_classes.iter_mut() {
        let g = generation(snapshot.gateway_classes.get(key).map(|o| &o.metadata));
        conditions.iter_mut().for_each(|c| c.observed_generation = g);
    }
    for (key, gateway) in status.gateways.iter_mut() {
        let g = generation(snapshot.gateways.get(key).map(|o| &o.metadata));
        gateway.conditions.iter_mut().chain(gateway.listeners.iter_mut().flat_map(|l| l.conditions.iter_mut())).for_each(|c| c.observed_generation = g);
    }
    for (key, parents) in status.routes.iter_mut() {
        let g = generation(snapshot.tcp_routes.get(key).map(|o| &o.route.metadata));
        parents.iter_mut().flat_map(|p| p.conditions.iter_mut()).for_each(|c| c.observed_generation = g);
    }
    for (key, parents) in status.udp_routes.iter_mut() {
        let g = generation(snapshot.udp_routes.get(key).map(|o| &o.route.metadata));
        parents.iter_mut().flat_map(|p| p.conditions.iter_mut()).for_each(|c| c.observed_generation = g);
    }
    for ((kind, key), ancestors) in status.policies.iter_mut() {
        let meta = match kind {
            status::PolicyKind::Listener => snapshot.listener_policies.get(key).map(|o| &o.metadata),
            status::PolicyKind::Backend => snapshot.backend_policies.get(key).map(|o| &o.metadata),
        };
        let g = generation(meta);
        ancestors.iter_mut().flat_map(|a| a.conditions.iter_mut()).for_each(|c| c.observed_generation = g);
    }
}
