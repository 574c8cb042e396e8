//! Route attachment: which listeners a TCPRoute's or UDPRoute's parentRef binds to, and why not.
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::listeners::{ListenerOwner, ListenerVerdict, RouteKind};
use super::status::reasons;
use crate::resources::gateway_api::{Listener, ParentReference, GROUP};
use crate::resources::{ListenerSetApi, ObjectKey};

/// The Gateway a parentRef points at, if it points at a Gateway at all.
pub fn parent_gateway(route: &ObjectKey, parent: &ParentReference) -> Option<ObjectKey> {
    let group = parent.group.as_deref().unwrap_or(GROUP);
    let kind = parent.kind.as_deref().unwrap_or("Gateway");
    if group != GROUP || kind != "Gateway" {
        return None;
    }
    let namespace = parent.namespace.clone().unwrap_or_else(|| route.namespace.clone());
    Some(ObjectKey::new(namespace, parent.name.clone()))
}

/// The ListenerSet a parentRef points at (kind `ListenerSet`, or the
/// experimental `XListenerSet` of servers before v1.6), if it does.
pub fn parent_listener_set(route: &ObjectKey, parent: &ParentReference) -> Option<(ListenerSetApi, ObjectKey)> {
    let group = parent.group.as_deref().unwrap_or(GROUP);
    let api = [ListenerSetApi::V1, ListenerSetApi::XV1Alpha1].into_iter().find(|api| api.group() == group && parent.kind.as_deref() == Some(api.kind()))?;
    let namespace = parent.namespace.clone().unwrap_or_else(|| route.namespace.clone());
    Some((api, ObjectKey::new(namespace, parent.name.clone())))
}

/// The result of binding one parentRef to one Gateway.
#[derive(Debug, PartialEq, Eq)]
pub enum Attachment {
    /// Indexes of the listeners the route attached to.
    Attached(Vec<usize>),
    Rejected { reason: &'static str, message: String },
}

/// Binds a route of `kind` in `route_namespace` through `parent` to the
/// listeners of one Gateway or ListenerSet (`owner`: its namespace is the one
/// `allowedRoutes` `Same` means, the ListenerSet's for its listeners). A listener of another protocol matches the
/// parentRef but does not allow the kind: `NotAllowedByListeners`, as the
/// conformance cases (a UDPRoute on a TLS listener) read the spec.
pub fn attach(
    kind: RouteKind,
    parent: &ParentReference,
    owner: &ListenerOwner,
    route_namespace: &str,
    listeners: &[Listener],
    verdicts: &[&ListenerVerdict],
    namespace_labels: &dyn Fn(&str) -> BTreeMap<String, String>,
) -> Attachment {
    let (owner_kind, owner_namespace) = match owner {
        ListenerOwner::Gateway(k) => ("Gateway", k.namespace.as_str()),
        ListenerOwner::ListenerSet(k) => ("ListenerSet", k.namespace.as_str()),
    };
    let matching: Vec<usize> = listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| parent.section_name.as_deref().is_none_or(|s| s == l.name))
        .filter(|(_, l)| parent.port.is_none_or(|p| p == l.port))
        .map(|(i, _)| i)
        .collect();
    if matching.is_empty() {
        return Attachment::Rejected {
            reason: reasons::NO_MATCHING_PARENT,
            message: {
                let wanted = match (&parent.section_name, parent.port) {
                    (Some(s), Some(p)) => format!("sectionName {s:?} and port {p}"),
                    (Some(s), None) => format!("sectionName {s:?}"),
                    (None, Some(p)) => format!("port {p}"),
                    (None, None) => "the parentRef".into(),
                };
                let have = listeners.iter().map(|l| format!("{} (port {})", l.name, l.port)).collect::<Vec<_>>().join(", ");
                format!("no listener matches {wanted}; the {owner_kind}'s listeners are: {have}")
            },
        };
    }
    let allowed: Vec<usize> = matching
        .iter()
        .copied()
        .filter(|&i| {
            // Attachment rests on allowedRoutes and the parentRef alone: a
            // listener that is conflicted or lost its port still counts the
            // route (the spec: "Listener or Route status does not impact
            // successful attachment"); it serves nothing until it is valid.
            let verdict = verdicts[i];
            verdict.supported_kinds.iter().any(|k| k.kind == kind.name())
                && namespace_allowed(&listeners[i], route_namespace, owner_namespace, namespace_labels)
        })
        .collect();
    if allowed.is_empty() {
        return Attachment::Rejected {
            reason: reasons::NOT_ALLOWED_BY_LISTENERS,
            message: "no matching listener allows this route's kind and namespace".into(),
        };
    }
    Attachment::Attached(allowed)
}

fn namespace_allowed(
    listener: &Listener,
    route_namespace: &str,
    gateway_namespace: &str,
    namespace_labels: &dyn Fn(&str) -> BTreeMap<String, String>,
) -> bool {
    let from = listener.allowed_routes.as_ref().and_then(|a| a.namespaces.as_ref());
    match from.and_then(|n| n.from.as_deref()).unwrap_or("Same") {
        "All" => true,
        "Selector" => from
            .and_then(|n| n.selector.as_ref())
            .is_some_and(|s| selector_matches(s, &namespace_labels(route_namespace))),
        // "Same", and anything unknown (fail closed).
        "Same" => route_namespace == gateway_namespace,
        _ => false,
    }
}

/// Kubernetes label-selector semantics (matchLabels AND matchExpressions).
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}
