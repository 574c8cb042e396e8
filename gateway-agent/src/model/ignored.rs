//! What sockgate leaves alone, and why: objects that are another controller's,
//! or that name something that does not exist. None of them gets a status from
//! sockgate (they are not its to judge), so they are said here instead, for
//! `check` and the log.
use std::fmt;

use super::attach::{parent_gateway, parent_listener_set};
use super::listener_sets::parent_of;
use crate::resources::gateway_api::ListenerSet;
use crate::resources::{ObjectKey, Snapshot};

/// One object sockgate skips.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ignored {
    pub kind: &'static str,
    pub key: ObjectKey,
    pub why: String,
    /// A likely mistake (a name that does not exist), not someone else's object.
    pub suspicious: bool,
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.kind, self.key, self.why)
    }
}

/// Every GatewayClass, Gateway, ListenerSet and route of `snapshot` that sockgate skips.
pub fn ignored(snapshot: &Snapshot, controller_name: &str) -> Vec<Ignored> {
    let mut out = Vec::new();
    let ours = |class: &str| snapshot.gateway_classes.get(&ObjectKey::cluster(class)).is_some_and(|c| c.spec.controller_name == controller_name);
    for (key, class) in &snapshot.gateway_classes {
        if class.spec.controller_name != controller_name {
            let why = format!("controllerName {:?} is another controller's (this agent serves {controller_name:?})", class.spec.controller_name);
            out.push(Ignored { kind: "GatewayClass", key: key.clone(), why, suspicious: false });
        }
    }
    for (key, gateway) in &snapshot.gateways {
        let class = &gateway.spec.gateway_class_name;
        match snapshot.gateway_classes.get(&ObjectKey::cluster(class.as_str())) {
            None => out.push(Ignored { kind: "Gateway", key: key.clone(), why: format!("its GatewayClass {class:?} does not exist"), suspicious: true }),
            Some(c) if c.spec.controller_name != controller_name => {
                let why = format!("its GatewayClass {class:?} belongs to controller {:?}", c.spec.controller_name);
                out.push(Ignored { kind: "Gateway", key: key.clone(), why, suspicious: false });
            }
            Some(_) => {}
        }
    }
    let set_is_ours = |key: &ObjectKey, set: &ListenerSet| {
        parent_of(key, set).and_then(|g| snapshot.gateways.get(&g)).is_some_and(|g| ours(&g.spec.gateway_class_name))
    };
    for (key, versioned) in &snapshot.listener_sets {
        let kind = versioned.api.kind();
        let why = match parent_of(key, &versioned.set) {
            None => Some(("its parentRef is not a Gateway".to_string(), true)),
            Some(g) => match snapshot.gateways.get(&g) {
                None => Some((format!("its parent Gateway {g} does not exist"), true)),
                Some(gw) if !ours(&gw.spec.gateway_class_name) => Some((format!("its parent Gateway {g} is not sockgate's"), false)),
                Some(_) => None,
            },
        };
        if let Some((why, suspicious)) = why {
            out.push(Ignored { kind, key: key.clone(), why, suspicious });
        }
    }
    let routes = snapshot
        .tcp_routes
        .iter()
        .map(|(k, r)| ("TCPRoute", k, &r.route.spec))
        .chain(snapshot.udp_routes.iter().map(|(k, r)| ("UDPRoute", k, &r.route.spec)));
    for (kind, key, spec) in routes {
        let mut served = false;
        let mut reasons = Vec::new();
        let mut suspicious = false;
        for (i, parent) in spec.parent_refs.iter().enumerate() {
            if let Some((api, set_key)) = parent_listener_set(key, parent) {
                match snapshot.listener_sets.get(&set_key).filter(|s| s.api == api) {
                    None => {
                        suspicious = true;
                        reasons.push(format!("parentRefs[{i}] names {} {set_key}, which does not exist", api.kind()));
                    }
                    Some(s) if !set_is_ours(&set_key, &s.set) => reasons.push(format!("parentRefs[{i}]: {} {set_key} is not on a Gateway of sockgate's", api.kind())),
                    Some(_) => served = true,
                }
                continue;
            }
            let Some(gateway_key) = parent_gateway(key, parent) else {
                let (group, parent_kind) = (parent.group.as_deref().unwrap_or("gateway.networking.k8s.io"), parent.kind.as_deref().unwrap_or("Gateway"));
                reasons.push(format!("parentRefs[{i}] is a {parent_kind} ({group}), a kind of parent sockgate does not serve"));
                continue;
            };
            match snapshot.gateways.get(&gateway_key) {
                None => {
                    suspicious = true;
                    reasons.push(format!("parentRefs[{i}] names Gateway {gateway_key}, which does not exist"));
                }
                Some(g) if !ours(&g.spec.gateway_class_name) => reasons.push(format!("parentRefs[{i}]: Gateway {gateway_key} is not sockgate's")),
                Some(_) => served = true,
            }
        }
        if spec.parent_refs.is_empty() {
            reasons.push("it has no parentRefs".into());
            suspicious = true;
        }
        // A route with one parent of sockgate's gets a status; its other parents are other controllers' business.
        if !served {
            out.push(Ignored { kind, key: key.clone(), why: reasons.join("; "), suspicious });
        } else if suspicious {
            out.push(Ignored { kind, key: key.clone(), why: format!("served, but {}", reasons.join("; ")), suspicious });
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::model::DEFAULT_CONTROLLER_NAME;
    use crate::sources::manifests::load_text;

    const CLASSES: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: sg}\nspec: {controllerName: sockgate.io/gateway-controller}\n---
apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: envoy}\nspec: {controllerName: gateway.envoyproxy.io/gatewayclass-controller}\n";

    fn gateway(name: &str, class: &str) -> String {
        format!("---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}}}\nspec:\n  gatewayClassName: {class}\n  listeners: [{{name: a, port: 9000, protocol: TCP}}]\n")
    }

    fn route(name: &str, parents: &str) -> String {
        format!("---\napiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {{name: {name}}}\nspec:\n  parentRefs: {parents}\n  rules: [{{backendRefs: [{{name: s, port: 1}}]}}]\n")
    }

    fn said(text: &str) -> Vec<String> {
        let snapshot = load_text(Path::new("t.yaml"), text).unwrap().snapshot;
        ignored(&snapshot, DEFAULT_CONTROLLER_NAME).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn another_controllers_class_a_missing_class_and_a_missing_gateway_are_each_said_with_why() {
        let text = [CLASSES, &gateway("ours", "sg"), &gateway("theirs", "envoy"), &gateway("typo", "sockgat"), &route("to-nowhere", "[{name: gw-typo}]"), &route("to-theirs", "[{name: theirs}]"), &route("fine", "[{name: ours}]")].concat();
        assert_eq!(
            said(&text),
            [
                "Gateway default/theirs: its GatewayClass \"envoy\" belongs to controller \"gateway.envoyproxy.io/gatewayclass-controller\"",
                "Gateway default/typo: its GatewayClass \"sockgat\" does not exist",
                "GatewayClass envoy: controllerName \"gateway.envoyproxy.io/gatewayclass-controller\" is another controller's (this agent serves \"sockgate.io/gateway-controller\")",
                "TCPRoute default/to-nowhere: parentRefs[0] names Gateway default/gw-typo, which does not exist",
                "TCPRoute default/to-theirs: parentRefs[0]: Gateway default/theirs is not sockgate's",
            ]
        );
    }

    #[test]
    fn a_served_route_with_one_missing_parent_is_still_mentioned() {
        let text = [CLASSES, &gateway("ours", "sg"), &route("half", "[{name: ours}, {name: gone}]")].concat();
        assert_eq!(said(&text), ["GatewayClass envoy: controllerName \"gateway.envoyproxy.io/gatewayclass-controller\" is another controller's (this agent serves \"sockgate.io/gateway-controller\")", "TCPRoute default/half: served, but parentRefs[1] names Gateway default/gone, which does not exist"]);
    }

    #[test]
    fn a_listener_set_on_a_missing_or_foreign_gateway_and_a_route_to_a_missing_listener_set_are_said() {
        let set = |name: &str, parent: &str| format!("---\napiVersion: gateway.networking.k8s.io/v1\nkind: ListenerSet\nmetadata: {{name: {name}}}\nspec:\n  parentRef: {{name: {parent}}}\n  listeners: [{{name: b, port: 9001, protocol: TCP}}]\n");
        let text = [CLASSES, &gateway("ours", "sg"), &gateway("theirs", "envoy"), &set("fine", "ours"), &set("lost", "gone"), &set("foreign", "theirs"),
            &route("to-set", "[{kind: ListenerSet, name: fine}]"), &route("to-no-set", "[{kind: ListenerSet, name: nope}]")].concat();
        let said = said(&text);
        assert!(said.contains(&"ListenerSet default/lost: its parent Gateway default/gone does not exist".to_string()), "{said:?}");
        assert!(said.contains(&"ListenerSet default/foreign: its parent Gateway default/theirs is not sockgate's".to_string()), "{said:?}");
        assert!(said.contains(&"TCPRoute default/to-no-set: parentRefs[0] names ListenerSet default/nope, which does not exist".to_string()), "{said:?}");
        assert!(!said.iter().any(|s| s.contains("default/fine") || s.contains("to-set:")), "{said:?}");
    }
}
