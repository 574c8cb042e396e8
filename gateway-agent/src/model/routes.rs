//! Routes → their parents' status, the listeners they attach to, and their
//! resolved backends. One rule set for TCPRoute and UDPRoute: in v1.6 they
//! have the same spec and the same attachment rules; only the listener
//! protocol they need, the Service port protocol and the ReferenceGrant
//! `from.kind` differ, and those come from the [`RouteKind`].
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::age_order;
use super::attach::{attach, parent_gateway, parent_listener_set, Attachment};
use super::backends::Backends;
use super::config::BackendGroup;
use super::listener_sets::Child;
use super::listeners::{ListenerOwner, ListenerVerdict, RouteKind};
use super::status::{reasons, types, Condition, RouteParentStatus};
use crate::resources::gateway_api::TcpRouteSpec;
use crate::resources::{Gateway, ObjectKey};

/// What the routes of one kind come to.
#[derive(Default)]
pub struct Routed {
    /// (Gateway or ListenerSet, listener index) → the routes attached there, oldest first.
    pub attached: BTreeMap<(ListenerOwner, usize), Vec<ObjectKey>>,
    /// Each route's backendRefs resolved (groups of ready endpoints).
    pub resolved: BTreeMap<ObjectKey, Vec<BackendGroup>>,
    /// Each route's parents' status (only routes with a parent of ours).
    pub status: BTreeMap<ObjectKey, Vec<RouteParentStatus>>,
}

/// What attachment needs to know about sockgate's Gateways and their ListenerSets.
pub struct Parents<'a> {
    pub gateways: &'a BTreeMap<&'a ObjectKey, &'a Gateway>,
    /// ListenerSets whose parent is one of `gateways`, allowed or not.
    pub listener_sets: &'a BTreeMap<&'a ObjectKey, &'a Child<'a>>,
    pub verdicts: &'a dyn Fn(&ListenerOwner) -> &'a [&'a ListenerVerdict],
    pub namespace_labels: &'a dyn Fn(&str) -> BTreeMap<String, String>,
}

/// Attaches `routes` of `kind`, oldest first (the first to attach to a listener gets its traffic).
pub fn route<'r>(kind: RouteKind, routes: impl Iterator<Item = (&'r ObjectKey, &'r ObjectMeta, &'r TcpRouteSpec)>, parents: &Parents, backends: &Backends) -> Routed {
    let mut routes: Vec<_> = routes.collect();
    routes.sort_by_key(|(k, meta, _)| age_order(meta, k));
    let mut out = Routed::default();
    for (route_key, _, spec) in routes {
        // Route rules have no matches, so nothing could choose between two
        // of them: the first rule is the route; later ones (v1alpha2 allows 16)
        // are dropped and the route says so with PartiallyInvalid.
        let refs: Vec<_> = spec.rules.iter().take(1).flat_map(|r| r.backend_refs.iter()).collect();
        let partially_invalid = (spec.rules.len() > 1).then(|| {
            Condition::new(
                types::PARTIALLY_INVALID,
                true,
                reasons::UNSUPPORTED_VALUE,
                // The spec: the message MUST start with "Dropped Rule".
                match spec.rules.len() {
                    2 => format!("Dropped Rule 2: {} rules have no matches to choose between them, so rule 1 is used", kind.name()),
                    n => format!("Dropped Rules 2 to {n}: {} rules have no matches to choose between them, so rule 1 is used", kind.name()),
                },
            )
        });
        let (groups, problems) = backends.resolve(kind, route_key, &refs);
        let resolved_refs = match problems.first() {
            None => Condition::new(types::RESOLVED_REFS, true, reasons::RESOLVED_REFS, ""),
            Some(first) => Condition::new(
                types::RESOLVED_REFS,
                false,
                first.reason,
                problems.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join("; "),
            ),
        };
        let mut statuses = Vec::new();
        for parent in &spec.parent_refs {
            // The listeners this parentRef can bind to, whose they are, and
            // why none can be bound to (a ListenerSet its Gateway does not take).
            let (owner, listeners, refused) = if let Some(gateway_key) = parent_gateway(route_key, parent) {
                let Some(gateway) = parents.gateways.get(&gateway_key) else {
                    continue; // not a Gateway of ours: another controller's business
                };
                (ListenerOwner::Gateway(gateway_key.clone()), gateway.spec.listeners.as_slice(), None)
            } else if let Some((api, set_key)) = parent_listener_set(route_key, parent) {
                let Some(child) = parents.listener_sets.get(&set_key).filter(|c| c.api == api) else {
                    continue; // not a ListenerSet of one of our Gateways
                };
                (ListenerOwner::ListenerSet(set_key.clone()), child.set.spec.listeners.as_slice(), child.not_allowed.as_ref())
            } else {
                continue;
            };
            let verdicts = (parents.verdicts)(&owner);
            let accepted = match refused {
                Some(why) => Attachment::Rejected {
                    reason: reasons::NOT_ALLOWED_BY_LISTENERS,
                    message: format!("the ListenerSet is not attached to its Gateway: {why}"),
                },
                None => attach(kind, parent, &owner, &route_key.namespace, listeners, verdicts, parents.namespace_labels),
            };
            let accepted = match accepted {
                Attachment::Attached(indexes) => {
                    for i in indexes {
                        // A route attaches to a listener once, even through two of its
                        // parentRefs ({name: gw} and {name: gw, namespace: <its own>}).
                        let listener_routes = out.attached.entry((owner.clone(), i)).or_default();
                        if !listener_routes.contains(route_key) {
                            listener_routes.push(route_key.clone());
                        }
                    }
                    Condition::new(types::ACCEPTED, true, reasons::ACCEPTED, "")
                }
                Attachment::Rejected { reason, message } => Condition::new(types::ACCEPTED, false, reason, message),
            };
            // PartiallyInvalid MUST NOT be set on a parent that did not accept the route.
            let partially_invalid = partially_invalid.clone().filter(|_| accepted.status);
            let mut conditions = vec![accepted, resolved_refs.clone()];
            conditions.extend(partially_invalid);
            statuses.push(RouteParentStatus { parent_ref: parent.clone(), conditions });
        }
        if !statuses.is_empty() {
            out.status.insert(route_key.clone(), statuses);
        }
        out.resolved.insert(route_key.clone(), groups);
    }
    out
}
