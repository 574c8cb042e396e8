//! StatusReport → the `status` objects, exactly as they would be written.
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Map, Value};

use crate::model::status::{Condition, ListenerStatus, StatusReport, SUPPORTED_FEATURES};
use crate::resources::gateway_api::{ParentReference, GROUP};
use crate::resources::policies;
use crate::resources::{ListenerSetApi, ObjectKey, Snapshot, TcpRouteVersion};

/// One document per GatewayClass, Gateway, ListenerSet, TCPRoute and UDPRoute
/// with a status from sockgate, in that order (each kind by key), then policies.
/// The most ancestors a policy's status lists (GEP-713's PolicyAncestorStatus cap).
pub const MAX_POLICY_ANCESTORS: usize = 16;

pub fn status_objects(snapshot: &Snapshot, report: &StatusReport, controller_name: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for (key, conditions) in &report.gateway_classes {
        let features: Vec<Value> = SUPPORTED_FEATURES.iter().map(|name| json!({ "name": name })).collect();
        let status = json!({ "conditions": conditions_json(conditions), "supportedFeatures": features });
        out.push(object("gateway.networking.k8s.io/v1", "GatewayClass", &key.namespace, &key.name, status));
    }
    for (key, gateway) in &report.gateways {
        let addresses: Vec<Value> = gateway
            .addresses
            .iter()
            .map(|a| json!({ "type": "IPAddress", "value": a.to_string() }))
            .collect();
        let listeners: Vec<Value> = gateway.listeners.iter().map(|l| listener_json(l, false)).collect();
        let status = json!({ "addresses": addresses, "conditions": conditions_json(&gateway.conditions), "listeners": listeners, "attachedListenerSets": gateway.attached_listener_sets });
        out.push(object("gateway.networking.k8s.io/v1", "Gateway", &key.namespace, &key.name, status));
    }
    for (key, set) in &report.listener_sets {
        // Written to the API it was read from: XListenerSet's entries also carry their port.
        let api = snapshot.listener_sets.get(key).map(|s| s.api).unwrap_or(ListenerSetApi::V1);
        let with_port = api == ListenerSetApi::XV1Alpha1;
        let listeners: Vec<Value> = set.listeners.iter().map(|l| listener_json(l, with_port)).collect();
        let status = json!({ "conditions": conditions_json(&set.conditions), "listeners": listeners });
        out.push(object(api.api_version(), api.kind(), &key.namespace, &key.name, status));
    }
    let tcp_version = |key: &ObjectKey| snapshot.tcp_routes.get(key).map(|r| r.version);
    let udp_version = |key: &ObjectKey| snapshot.udp_routes.get(key).map(|r| r.version);
    let kinds: [(&str, _, &dyn Fn(&ObjectKey) -> Option<TcpRouteVersion>); 2] = [("TCPRoute", &report.routes, &tcp_version), ("UDPRoute", &report.udp_routes, &udp_version)];
    for (kind, routes, version) in kinds {
        for (key, parents) in routes {
            // Written in the version it was read in (discovery's choice in a cluster).
            let api_version = match version(key) {
                Some(TcpRouteVersion::V1) => "gateway.networking.k8s.io/v1",
                _ => "gateway.networking.k8s.io/v1alpha2",
            };
            let parents: Vec<Value> = parents
                .iter()
                .map(|p| json!({ "parentRef": parent_ref_json(&p.parent_ref), "controllerName": controller_name, "conditions": conditions_json(&p.conditions) }))
                .collect();
            out.push(object(api_version, kind, &key.namespace, &key.name, json!({ "parents": parents })));
        }
    }
    for ((kind, key), ancestors) in &report.policies {
        // GEP-713 caps the list at 16 (the CRD's maxItems): the first 16, in the translator's order.
        let ancestors: Vec<Value> = ancestors
            .iter()
            .take(MAX_POLICY_ANCESTORS)
            .map(|a| json!({ "ancestorRef": a.ancestor, "controllerName": controller_name, "conditions": conditions_json(&a.conditions) }))
            .collect();
        let api_version = format!("{}/{}", policies::GROUP, policies::VERSION);
        out.push(object(&api_version, crate::model::policies::kind_name(*kind), &key.namespace, &key.name, json!({ "ancestors": ancestors })));
    }
    out
}

/// One entry of a Gateway's or ListenerSet's `status.listeners`.
fn listener_json(l: &ListenerStatus, with_port: bool) -> Value {
    let kinds: Vec<Value> = l.supported_kinds.iter().map(|k| json!({ "group": k.group.clone().unwrap_or_else(|| GROUP.into()), "kind": k.kind })).collect();
    let mut v = json!({ "name": l.name, "supportedKinds": kinds, "attachedRoutes": l.attached_routes, "conditions": conditions_json(&l.conditions) });
    if with_port {
        v["port"] = l.port.into();
    }
    v
}

/// The documents as multi-document YAML.
pub fn to_yaml(objects: &[Value]) -> String {
    objects
        .iter()
        .map(|o| serde_yaml::to_string(o).expect("JSON values serialize to YAML"))
        .collect::<Vec<_>>()
        .join("---\n")
}

fn object(api_version: &str, kind: &str, namespace: &str, name: &str, status: Value) -> Value {
    let mut metadata = Map::new();
    metadata.insert("name".into(), name.into());
    if !namespace.is_empty() {
        metadata.insert("namespace".into(), namespace.into());
    }
    json!({ "apiVersion": api_version, "kind": kind, "metadata": metadata, "status": status })
}

fn conditions_json(conditions: &[Condition]) -> Vec<Value> {
    conditions
        .iter()
        .map(|c| {
            // Kubernetes stores condition times to the second.
            let time = c.last_transition_time.map(|t| Timestamp::from_second(t.as_second()).unwrap_or(t));
            json!({
                "type": c.type_,
                "status": if c.status { "True" } else { "False" },
                "reason": c.reason,
                "message": message(c),
                "observedGeneration": c.observed_generation,
                "lastTransitionTime": time.map(|t| t.to_string()),
            })
        })
        .collect()
}

/// The condition's message; the API rejects an empty one (server-side apply
/// turns "" into null), so the positive conditions get a plain sentence.
fn message(c: &Condition) -> String {
    if !c.message.is_empty() {
        return c.message.clone();
    }
    match (c.type_, c.status) {
        ("Accepted", true) => "Accepted by sockgate.".into(),
        ("Programmed", true) => "Programmed on sockgate's data plane.".into(),
        ("ResolvedRefs", true) => "All references are resolved.".into(),
        ("Conflicted", false) => "No conflicts.".into(),
        _ => format!("{}.", c.reason),
    }
}

/// The parentRef as the API server holds it: group and kind defaulted.
fn parent_ref_json(p: &ParentReference) -> Value {
    let mut v = json!({
        "group": p.group.clone().unwrap_or_else(|| GROUP.into()),
        "kind": p.kind.clone().unwrap_or_else(|| "Gateway".into()),
        "name": p.name,
    });
    if let Some(ns) = &p.namespace {
        v["namespace"] = ns.clone().into();
    }
    if let Some(s) = &p.section_name {
        v["sectionName"] = s.clone().into();
    }
    if let Some(port) = p.port {
        v["port"] = port.into();
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::transitions::carry;
    use crate::model::{translate, Settings, DEFAULT_CONTROLLER_NAME as DEFAULT_CONTROLLER};
    use crate::sources::manifests::load_dir;

    #[test]
    fn the_guides_status_documents_are_what_the_api_server_would_hold() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/tcp-routing");
        let snapshot = load_dir(&dir).unwrap().snapshot;
        let settings = Settings { gateway_addresses: vec!["198.18.1.2".parse().unwrap()], ..Settings::default() };
        let mut t = translate(&snapshot, &settings);
        let now: Timestamp = "2026-03-04T05:06:07.891Z".parse().unwrap();
        carry(&StatusReport::default(), &mut t.status, now);
        let docs = status_objects(&snapshot, &t.status, &settings.controller_name);
        let kinds: Vec<(&str, &str)> = docs.iter().map(|d| (d["kind"].as_str().unwrap(), d["metadata"]["name"].as_str().unwrap())).collect();
        assert_eq!(kinds, [("GatewayClass", "eg"), ("Gateway", "tcp-gateway"), ("TCPRoute", "tcp-app-1"), ("TCPRoute", "tcp-app-2")]);
        let gateway = &docs[1];
        assert_eq!(gateway["status"]["addresses"], json!([{ "type": "IPAddress", "value": "198.18.1.2" }]));
        assert_eq!(gateway["status"]["listeners"][0]["attachedRoutes"], 1);
        assert_eq!(gateway["status"]["listeners"][0]["supportedKinds"], json!([{ "group": GROUP, "kind": "TCPRoute" }]));
        let route = &docs[2];
        assert_eq!(route["apiVersion"], "gateway.networking.k8s.io/v1alpha2");
        let parent = &route["status"]["parents"][0];
        assert_eq!(parent["parentRef"], json!({ "group": GROUP, "kind": "Gateway", "name": "tcp-gateway", "sectionName": "foo" }));
        assert_eq!(parent["controllerName"], "sockgate.io/gateway-controller");
        assert_eq!(
            parent["conditions"][0],
            json!({ "type": "Accepted", "status": "True", "reason": "Accepted", "message": "Accepted by sockgate.", "observedGeneration": 1, "lastTransitionTime": "2026-03-04T05:06:07Z" })
        );
        let yaml = to_yaml(&docs);
        assert_eq!(yaml.matches("\n---\n").count(), 3, "{yaml}");
    }

    #[test]
    fn a_listener_sets_status_is_written_to_the_api_it_came_from_and_its_gateway_counts_it() {
        let docs = |api: &str, kind: &str| {
            let text = format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: sg}}\nspec: {{controllerName: sockgate.io/gateway-controller}}\n---\n\
                 apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  gatewayClassName: sg\n  allowedListeners: {{namespaces: {{from: Same}}}}\n  listeners: [{{name: a, port: 8080, protocol: TCP}}]\n---\n\
                 apiVersion: {api}\nkind: {kind}\nmetadata: {{name: ls}}\nspec:\n  parentRef: {{name: gw}}\n  listeners: [{{name: b, port: 8081, protocol: TCP}}]\n"
            );
            let snapshot = crate::sources::manifests::load_text(std::path::Path::new("t.yaml"), &text).unwrap().snapshot;
            let t = translate(&snapshot, &Settings::default());
            status_objects(&snapshot, &t.status, DEFAULT_CONTROLLER)
        };
        let v1 = docs("gateway.networking.k8s.io/v1", "ListenerSet");
        assert_eq!(v1[1]["status"]["attachedListenerSets"], 1);
        let set = &v1[2];
        assert_eq!((set["apiVersion"].as_str(), set["kind"].as_str()), (Some("gateway.networking.k8s.io/v1"), Some("ListenerSet")));
        assert_eq!(set["status"]["conditions"][0]["reason"], "Accepted");
        assert_eq!(set["status"]["listeners"][0]["name"], "b");
        assert_eq!(set["status"]["listeners"][0]["supportedKinds"], json!([{ "group": GROUP, "kind": "TCPRoute" }]));
        assert!(set["status"]["listeners"][0].get("port").is_none(), "ListenerSet v1's entry status has no port");
        let x = docs("gateway.networking.x-k8s.io/v1alpha1", "XListenerSet");
        let set = &x[2];
        assert_eq!((set["apiVersion"].as_str(), set["kind"].as_str()), (Some("gateway.networking.x-k8s.io/v1alpha1"), Some("XListenerSet")));
        assert_eq!(set["status"]["listeners"][0]["port"], 8081, "XListenerSet's entry status requires the port");
    }
}
