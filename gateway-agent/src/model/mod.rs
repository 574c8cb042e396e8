//! The translator: a pure function from a [`Snapshot`] to the data plane
//! configuration and the status of every object sockgate owns. No I/O, no
//! clock (creation times come in the snapshot), deterministic output.
pub mod attach;
pub mod backends;
pub mod changes;
pub mod config;
pub mod ignored;
pub mod listener_sets;
pub mod listeners;
pub mod node_reports;
pub mod policies;
pub mod routes;
pub mod status;
pub mod supported_version;
pub mod transitions;
#[cfg(test)]
mod policy_tests;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod listener_set_tests;
#[cfg(test)]
mod node_report_tests;
#[cfg(test)]
mod udp_tests;

use std::collections::BTreeMap;

use config::{DataplaneConfig, ListenerConfig};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use listeners::{ListenerOwner, RouteKind};
use status::{reasons, types, Condition, GatewayStatus, ListenerSetStatus, ListenerStatus, StatusReport};

use crate::resources::gateway_api::Listener;
use crate::resources::{Gateway, ObjectKey, Snapshot};

pub const DEFAULT_CONTROLLER_NAME: &str = "sockgate.io/gateway-controller";

/// What the translator needs besides the snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// GatewayClasses with this controllerName are sockgate's.
    pub controller_name: String,
    /// Addresses of the nodes serving the Gateways (their `status.addresses`).
    pub gateway_addresses: Vec<std::net::IpAddr>,
    /// Listener ports serving nodes could not bind, and how many nodes serve
    /// (from the node Leases; empty outside Kubernetes mode's status writer).
    pub unbound: Vec<node_reports::UnboundPort>,
    pub serving_nodes: usize,
    /// The Gateway API CRDs installed (GatewayClass `SupportedVersion`).
    pub crds: supported_version::Crds,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { controller_name: DEFAULT_CONTROLLER_NAME.to_string(), gateway_addresses: Vec::new(), unbound: Vec::new(), serving_nodes: 0, crds: supported_version::Crds::Standalone }
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
                .insert(key.clone(), vec![Condition::new(types::ACCEPTED, true, reasons::ACCEPTED, ""), supported_version::condition(&settings.crds)]);
        }
    }

    // Gateways of those classes, oldest first (the oldest keeps a contested port).
    let mut gateways: Vec<(&ObjectKey, &Gateway)> = snapshot
        .gateways
        .iter()
        .filter(|(_, g)| our_classes.contains(&g.spec.gateway_class_name))
        .collect();
    gateways.sort_by_key(|(k, g)| age_order(&g.metadata, k));
    let gateway_by_key: BTreeMap<&ObjectKey, &Gateway> = gateways.iter().copied().collect();
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
    // ListenerSets of those Gateways; the allowed ones add their listeners, in precedence order.
    let children = listener_sets::children(snapshot, &gateway_by_key, &namespace_labels);
    let merged: BTreeMap<ObjectKey, Vec<(&ObjectKey, &[Listener])>> = children
        .iter()
        .map(|(g, sets)| (g.clone(), sets.iter().filter(|c| c.not_allowed.is_none()).map(|c| (c.key, c.set.spec.listeners.as_slice())).collect()))
        .collect();
    let verdicts = listeners::judge(&gateways, &merged);
    // By owner, once: filtering all verdicts for each route's parent was quadratic.
    let mut verdicts_by_owner: BTreeMap<&ListenerOwner, Vec<&listeners::ListenerVerdict>> = BTreeMap::new();
    for verdict in &verdicts {
        verdicts_by_owner.entry(&verdict.owner).or_default().push(verdict);
    }
    let verdicts_of = |owner: &ListenerOwner| -> &[&listeners::ListenerVerdict] { verdicts_by_owner.get(owner).map(Vec::as_slice).unwrap_or_default() };
    let child_by_key: BTreeMap<&ObjectKey, &listener_sets::Child> = children.values().flatten().map(|c| (c.key, c)).collect();
    let backends = backends::Backends::new(snapshot);

    let parents = routes::Parents { gateways: &gateway_by_key, listener_sets: &child_by_key, verdicts: &verdicts_of, namespace_labels: &namespace_labels };
    let tcp = routes::route(RouteKind::Tcp, snapshot.tcp_routes.iter().map(|(k, r)| (k, &r.route.metadata, &r.route.spec)), &parents, &backends);
    let udp = routes::route(RouteKind::Udp, snapshot.udp_routes.iter().map(|(k, r)| (k, &r.route.metadata, &r.route.spec)), &parents, &backends);
    let routed_of = |kind: RouteKind| match kind {
        RouteKind::Tcp => &tcp,
        RouteKind::Udp => &udp,
    };

    // Listeners: status, and the data plane entry of every valid one.
    let mut dataplane = DataplaneConfig::default();
    let mut serve = |owner: &ListenerOwner, gateway_key: &ObjectKey, listeners: &[Listener]| -> Vec<ListenerStatus> {
        let mut statuses = Vec::new();
        for verdict in verdicts_of(owner) {
            let listener = &listeners[verdict.index];
            let routed = verdict.kind.map(routed_of);
            let routes = routed.and_then(|r| r.attached.get(&(owner.clone(), verdict.index)).cloned()).unwrap_or_default();
            statuses.push(ListenerStatus {
                name: listener.name.clone(),
                port: listener.port,
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
            let listener_set = match owner {
                ListenerOwner::ListenerSet(k) => Some(k.clone()),
                ListenerOwner::Gateway(_) => None,
            };
            let config = ListenerConfig { gateway: gateway_key.clone(), listener_set, listener: listener.name.clone(), route: winner, backends, policy: Default::default(), load_balancer: Default::default() };
            let by_port = match kind {
                RouteKind::Tcp => &mut dataplane.listeners,
                RouteKind::Udp => &mut dataplane.udp_listeners,
            };
            by_port.insert(listener.port as u16, config);
        }
        statuses
    };
    for (gateway_key, gateway) in &gateways {
        let owner = ListenerOwner::Gateway((*gateway_key).clone());
        let listener_statuses = serve(&owner, gateway_key, &gateway.spec.listeners);
        let mut sets_valid = false;
        let mut attached_listener_sets = 0;
        for child in children.get(*gateway_key).into_iter().flatten() {
            let set_status = match &child.not_allowed {
                Some(why) => ListenerSetStatus {
                    conditions: vec![
                        Condition::new(types::ACCEPTED, false, reasons::NOT_ALLOWED, why.clone()),
                        Condition::new(types::PROGRAMMED, false, reasons::NOT_ALLOWED, why.clone()),
                    ],
                    listeners: Vec::new(),
                },
                None => {
                    let owner = ListenerOwner::ListenerSet(child.key.clone());
                    let listeners = serve(&owner, gateway_key, &child.set.spec.listeners);
                    let all_valid = verdicts_of(&owner).iter().all(|v| v.valid);
                    let any_valid = verdicts_of(&owner).iter().any(|v| v.valid);
                    sets_valid |= any_valid;
                    attached_listener_sets += u32::from(any_valid);
                    let summary = listeners_in_words(verdicts_of(&owner), &child.set.spec.listeners);
                    ListenerSetStatus { conditions: listener_set_conditions(all_valid, any_valid, &summary), listeners }
                }
            };
            status.listener_sets.insert(child.key.clone(), set_status);
        }
        // The Gateway's own listeners decide whether it is fully valid (a
        // ListenerSet's problems are said on the ListenerSet); any valid
        // listener of the merged list makes it accepted and programmed.
        let all_valid = verdicts_of(&owner).iter().all(|v| v.valid);
        let any_valid = verdicts_of(&owner).iter().any(|v| v.valid) || sets_valid;
        let summary = listeners_in_words(verdicts_of(&owner), &gateway.spec.listeners);
        let accepted = if all_valid {
            Condition::new(types::ACCEPTED, true, reasons::ACCEPTED, "")
        } else if any_valid {
            Condition::new(types::ACCEPTED, true, reasons::LISTENERS_NOT_VALID, format!("some listeners are not valid: {summary}"))
        } else {
            Condition::new(types::ACCEPTED, false, reasons::LISTENERS_NOT_VALID, format!("no listener is valid: {summary}"))
        };
        let programmed = if any_valid {
            Condition::new(types::PROGRAMMED, true, reasons::PROGRAMMED, "")
        } else {
            Condition::new(types::PROGRAMMED, false, reasons::INVALID, "no listener is valid")
        };
        status.gateways.insert(
            (*gateway_key).clone(),
            GatewayStatus { addresses: settings.gateway_addresses.clone(), conditions: vec![accepted, programmed], listeners: listener_statuses, attached_listener_sets },
        );
    }
    status.routes = tcp.status;
    status.udp_routes = udp.status;
    status.policies = policies::apply(snapshot, &gateways, &mut dataplane);
    node_reports::mark_unbound(&settings.unbound, settings.serving_nodes, &dataplane, &mut status);
    set_observed_generations(snapshot, &mut status);
    Translation { dataplane, status }
}

/// An attached ListenerSet's conditions: accepted and programmed while one of
/// its listeners is valid (the spec's conformance cases read it so), with
/// `ListenersNotValid` naming that some or all of them are not.
fn listener_set_conditions(all_valid: bool, any_valid: bool, summary: &str) -> Vec<Condition> {
    if all_valid {
        vec![Condition::new(types::ACCEPTED, true, reasons::ACCEPTED, ""), Condition::new(types::PROGRAMMED, true, reasons::PROGRAMMED, "")]
    } else if any_valid {
        vec![
            Condition::new(types::ACCEPTED, true, reasons::LISTENERS_NOT_VALID, format!("some listeners are not valid: {summary}")),
            Condition::new(types::PROGRAMMED, true, reasons::PROGRAMMED, ""),
        ]
    } else {
        let why = &format!("no listener is valid: {summary}");
        vec![Condition::new(types::ACCEPTED, false, reasons::LISTENERS_NOT_VALID, why), Condition::new(types::PROGRAMMED, false, reasons::LISTENERS_NOT_VALID, why)]
    }
}

/// Which of an owner's listeners are not valid and why (the reason of their
/// Conflicted=True, else Accepted=False, else ResolvedRefs=False condition),
/// and which are: what the spec asks a ListenersNotValid message to say.
fn listeners_in_words(verdicts: &[&listeners::ListenerVerdict], listeners: &[Listener]) -> String {
    let reason = |v: &listeners::ListenerVerdict| {
        let find = |type_: &str, status: bool| v.conditions.iter().find(|c| c.type_ == type_ && c.status == status).map(|c| c.reason);
        find(types::CONFLICTED, true).or_else(|| find(types::ACCEPTED, false)).or_else(|| find(types::RESOLVED_REFS, false)).unwrap_or(reasons::INVALID)
    };
    let name = |v: &listeners::ListenerVerdict| format!("{:?}", listeners[v.index].name);
    let invalid: Vec<String> = verdicts.iter().filter(|v| !v.valid).map(|v| format!("{} ({})", name(v), reason(v))).collect();
    let valid: Vec<String> = verdicts.iter().filter(|v| v.valid).map(|v| name(v)).collect();
    let mut words = format!("not valid: {}", invalid.join(", "));
    if !valid.is_empty() {
        words.push_str(&format!("; valid: {}", valid.join(", ")));
    }
    words
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
    for (key, set) in status.listener_sets.iter_mut() {
        let g = generation(snapshot.listener_sets.get(key).map(|o| &o.set.metadata));
        set.conditions.iter_mut().chain(set.listeners.iter_mut().flat_map(|l| l.conditions.iter_mut())).for_each(|c| c.observed_generation = g);
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
