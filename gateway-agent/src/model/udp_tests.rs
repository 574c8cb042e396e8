//! UDPRoute, rule by rule: the nine Gateway API v1.6.1 UDPRoute conformance
//! cases (`conformance/udproute-*.yaml`, their manifests as the suite applies
//! them, namespaces and all) as translator tables, and what they leave open
//! (TCP and UDP on one port, protocol-specific Service ports, policies).
use std::path::Path;

use super::config::ListenerConfig;
use super::status::Condition;
use super::*;
use crate::sources::creation::CreationClock;
use crate::sources::manifests::load_text;

const INFRA: &str = "gateway-conformance-infra";
const APP: &str = "gateway-conformance-app-backend";
const CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: sg}\nspec: {controllerName: sockgate.io/gateway-controller}\n";

fn translate_yaml(docs: &[&str]) -> Translation {
    let mut all = vec![CLASS];
    all.extend_from_slice(docs);
    let mut snapshot = load_text(Path::new("t.yaml"), &all.join("---\n")).unwrap_or_else(|e| panic!("{e}")).snapshot;
    // Each document one second younger than the one before: file order is age order.
    CreationClock::default().stamp(&mut snapshot, "2026-01-01T00:00:00Z".parse().unwrap());
    translate(&snapshot, &Settings::default())
}

/// A Gateway in the conformance namespace; listeners as YAML flow mappings.
fn gateway(name: &str, listeners: &[&str]) -> String {
    let mut y = format!("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {INFRA}}}\nspec:\n  gatewayClassName: sg\n  listeners:\n");
    for l in listeners {
        y.push_str(&format!("  - {l}\n"));
    }
    y
}

/// A UDP listener as the conformance manifests write them (allowedRoutes.kinds: [UDPRoute]).
fn udp(name: &str, port: u16) -> String {
    format!("{{name: {name}, port: {port}, protocol: UDP, allowedRoutes: {{kinds: [{{kind: UDPRoute}}]}}}}")
}

fn udp_route(version: &str, name: &str, parent_refs: &str, backends: &str) -> String {
    format!("apiVersion: gateway.networking.k8s.io/{version}\nkind: UDPRoute\nmetadata: {{name: {name}, namespace: {INFRA}}}\nspec:\n  parentRefs: {parent_refs}\n  rules:\n  - backendRefs: {backends}\n")
}

fn route(name: &str, parent_refs: &str, backends: &str) -> String {
    udp_route("v1", name, parent_refs, backends)
}

/// A Service with a UDP port 8080 (targetPort 8080) and its EndpointSlice.
fn service(ns: &str, name: &str, ips: &[&str]) -> String {
    service_with(ns, name, 8080, "UDP", ips)
}

fn service_with(ns: &str, name: &str, port: u16, protocol: &str, ips: &[&str]) -> String {
    let endpoints: Vec<String> = ips.iter().map(|ip| format!("{{addresses: [\"{ip}\"]}}")).collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{ports: [{{name: udp, protocol: {protocol}, port: {port}, targetPort: {port}}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-x, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}\n\
         addressType: IPv4\nports: [{{name: udp, protocol: {protocol}, port: {port}}}]\nendpoints: [{}]\n",
        endpoints.join(", ")
    )
}

fn short(c: &Condition) -> String {
    format!("{}={}/{}", c.type_, if c.status { "True" } else { "False" }, c.reason)
}

fn route_conditions(t: &Translation, name: &str) -> Vec<Vec<String>> {
    t.status.udp_routes.get(&ObjectKey::new(INFRA, name)).unwrap_or_else(|| panic!("no status for UDPRoute {name}: {:?}", t.status.udp_routes))
        .iter()
        .map(|p| p.conditions.iter().map(short).collect())
        .collect()
}

fn udp_at(t: &Translation, port: u16) -> &ListenerConfig {
    t.dataplane.udp_listeners.get(&port).unwrap_or_else(|| panic!("no UDP listener on {port}: {:?}", t.dataplane))
}

fn routed_to(t: &Translation, port: u16) -> Option<String> {
    udp_at(t, port).route.as_ref().map(|r| r.name.clone())
}

fn endpoints(t: &Translation, port: u16) -> Vec<String> {
    udp_at(t, port).backends.iter().flat_map(|b| b.endpoints.iter().map(ToString::to_string)).collect()
}

/// (name, attachedRoutes, supportedKinds, conditions) of each listener of `gw`.
fn listeners(t: &Translation, gw: &str) -> Vec<(String, u32, Vec<String>, Vec<String>)> {
    t.status.gateways[&ObjectKey::new(INFRA, gw)]
        .listeners
        .iter()
        .map(|l| (l.name.clone(), l.attached_routes, l.supported_kinds.iter().map(|k| k.kind.clone()).collect(), l.conditions.iter().map(short).collect()))
        .collect()
}

const ACCEPTED_RESOLVED: [&str; 2] = ["Accepted=True/Accepted", "ResolvedRefs=True/ResolvedRefs"];
const LISTENER_READY: [&str; 4] = ["Accepted=True/Accepted", "Conflicted=False/NoConflicts", "ResolvedRefs=True/ResolvedRefs", "Programmed=True/Programmed"];

#[test]
fn conformance_udproute_simple() {
    let t = translate_yaml(&[
        &gateway("udp-gateway", &[&udp("coredns", 5300)]),
        &route("udp-coredns", "[{name: udp-gateway, sectionName: coredns}]", "[{name: coredns, port: 53}]"),
        &service_with(INFRA, "coredns", 53, "UDP", &["198.18.42.2"]),
    ]);
    assert_eq!(route_conditions(&t, "udp-coredns"), [ACCEPTED_RESOLVED]);
    assert_eq!(routed_to(&t, 5300).as_deref(), Some("udp-coredns"));
    assert_eq!(endpoints(&t, 5300), ["198.18.42.2:53"]);
    assert!(t.dataplane.listeners.is_empty(), "a UDP listener is no TCP listener");
    let gw = &t.status.gateways[&ObjectKey::new(INFRA, "udp-gateway")];
    assert_eq!(gw.conditions.iter().map(short).collect::<Vec<_>>(), ["Accepted=True/Accepted", "Programmed=True/Programmed"]);
    assert_eq!(listeners(&t, "udp-gateway"), [("coredns".into(), 1, vec!["UDPRoute".into()], LISTENER_READY.map(String::from).to_vec())]);
}

#[test]
fn conformance_udproute_invalid_backendref_nonexistent() {
    let t = translate_yaml(&[
        &gateway("udp-gateway-invalid-backend", &[&udp("udp", 5300)]),
        &route("udp-route-invalid-backend-ref-nonexistent", "[{name: udp-gateway-invalid-backend, sectionName: udp}]", "[{name: nonexistent-service, port: 8080}]"),
    ]);
    let conditions = route_conditions(&t, "udp-route-invalid-backend-ref-nonexistent");
    assert_eq!(conditions, [["Accepted=True/Accepted", "ResolvedRefs=False/BackendNotFound"]]);
    let l = udp_at(&t, 5300);
    assert_eq!((l.backends.len(), l.backends[0].weight, l.backends[0].endpoints.len()), (1, 1, 0), "its share stays, without endpoints: dropped");
}

#[test]
fn conformance_udproute_invalid_cross_namespace_backend_ref() {
    let t = translate_yaml(&[
        &gateway("udp-gateway-invalid-cross-namespace-backend-ref", &[&udp("udp", 5300)]),
        &route(
            "udp-route-invalid-cross-namespace-backend-ref",
            "[{name: udp-gateway-invalid-cross-namespace-backend-ref, sectionName: udp}]",
            &format!("[{{name: udp-echo-no-reference-grant, namespace: {APP}, port: 8080}}]"),
        ),
        &service(APP, "udp-echo-no-reference-grant", &["198.18.42.2"]),
    ]);
    assert_eq!(route_conditions(&t, "udp-route-invalid-cross-namespace-backend-ref"), [["Accepted=True/Accepted", "ResolvedRefs=False/RefNotPermitted"]]);
    assert!(endpoints(&t, 5300).is_empty());
    let message = &t.status.udp_routes[&ObjectKey::new(INFRA, "udp-route-invalid-cross-namespace-backend-ref")][0].conditions[1].message;
    assert!(message.contains("allows UDPRoutes from gateway-conformance-infra"), "{message}");
}

#[test]
fn conformance_udproute_multiple_routes_attachment() {
    // The newer route is applied a second later by the test itself; its name sorts first.
    let created = |name: &str, second: u32| format!("metadata: {{name: {name}, namespace: {INFRA}, creationTimestamp: \"2026-01-01T00:00:{second:02}Z\"}}");
    let older = route("udproute-attach-older", "[{name: udp-multi-route-attach-gateway, sectionName: udp}]", "[{name: udp-attach-backend-1, port: 8080}]")
        .replace(&format!("metadata: {{name: udproute-attach-older, namespace: {INFRA}}}"), &created("udproute-attach-older", 1));
    let newer = route("udproute-attach-newer", "[{name: udp-multi-route-attach-gateway, sectionName: udp}]", "[{name: udp-attach-backend-2, port: 8080}]")
        .replace(&format!("metadata: {{name: udproute-attach-newer, namespace: {INFRA}}}"), &created("udproute-attach-newer", 2));
    let t = translate_yaml(&[
        &service(INFRA, "udp-attach-backend-1", &["198.18.42.2"]),
        &service(INFRA, "udp-attach-backend-2", &["198.18.43.2"]),
        &gateway("udp-multi-route-attach-gateway", &[&udp("udp", 5301)]),
        &older,
        &newer,
    ]);
    assert_eq!(route_conditions(&t, "udproute-attach-older"), [ACCEPTED_RESOLVED]);
    assert_eq!(route_conditions(&t, "udproute-attach-newer"), [ACCEPTED_RESOLVED]);
    let l = &listeners(&t, "udp-multi-route-attach-gateway")[0];
    assert_eq!((l.1, &l.2), (2, &vec!["UDPRoute".to_string()]), "both are counted");
    assert_eq!(routed_to(&t, 5301).as_deref(), Some("udproute-attach-older"), "only the oldest gets traffic");
    assert_eq!(endpoints(&t, 5301), ["198.18.42.2:8080"]);
}

#[test]
fn conformance_udproute_not_allowed_by_listeners() {
    let gw = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: udproute-tls-only-gateway, namespace: gateway-conformance-infra}\nspec:\n  gatewayClassName: sg\n  listeners:\n  - {name: tls, port: 443, protocol: TLS, tls: {mode: Passthrough}, allowedRoutes: {namespaces: {from: Same}}}\n";
    let t = translate_yaml(&[gw, &route("udproute-not-allowed-by-listeners", "[{name: udproute-tls-only-gateway, sectionName: tls}]", "[{name: coredns, port: 53}]")]);
    assert_eq!(route_conditions(&t, "udproute-not-allowed-by-listeners")[0][0], "Accepted=False/NotAllowedByListeners");
    assert!(listeners(&t, "udproute-tls-only-gateway").iter().all(|l| l.1 == 0), "zero routes attached");
    // A UDPRoute to a TCP listener, and a TCPRoute to a UDP listener, the same.
    let t = translate_yaml(&[
        &gateway("gw", &["{name: tcp, port: 5300, protocol: TCP}", &udp("udp", 5301)]),
        &route("to-tcp", "[{name: gw, sectionName: tcp}]", "[{name: s, port: 8080}]"),
        &format!("apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata: {{name: to-udp, namespace: {INFRA}}}\nspec:\n  parentRefs: [{{name: gw, sectionName: udp}}]\n  rules: [{{backendRefs: [{{name: s, port: 8080}}]}}]\n"),
        &service(INFRA, "s", &["198.18.42.2"]),
    ]);
    assert_eq!(route_conditions(&t, "to-tcp")[0][0], "Accepted=False/NotAllowedByListeners");
    assert_eq!(short(&t.status.routes[&ObjectKey::new(INFRA, "to-udp")][0].conditions[0]), "Accepted=False/NotAllowedByListeners");
    assert!(listeners(&t, "gw").iter().all(|l| l.1 == 0));
}

#[test]
fn conformance_udproute_parentref_attach_all_listeners() {
    let t = translate_yaml(&[
        &service(INFRA, "udp-echo-attach-all", &["198.18.42.2"]),
        &gateway("udp-attach-all-listeners-gateway", &[&udp("udp-1", 5310), &udp("udp-2", 5311), &udp("udp-3", 5312)]),
        &route("udp-route-attach-all", "[{name: udp-attach-all-listeners-gateway}]", "[{name: udp-echo-attach-all, port: 8080}]"),
    ]);
    assert_eq!(route_conditions(&t, "udp-route-attach-all"), [ACCEPTED_RESOLVED]);
    for (l, name) in listeners(&t, "udp-attach-all-listeners-gateway").iter().zip(["udp-1", "udp-2", "udp-3"]) {
        assert_eq!((l.0.as_str(), l.1, &l.2), (name, 1, &vec!["UDPRoute".to_string()]));
        assert!(l.3.contains(&"Accepted=True/Accepted".to_string()) && l.3.contains(&"ResolvedRefs=True/ResolvedRefs".to_string()));
    }
    for port in [5310, 5311, 5312] {
        assert_eq!(endpoints(&t, port), ["198.18.42.2:8080"]);
    }
}

#[test]
fn conformance_udproute_parentref_port_and_section_name() {
    let t = translate_yaml(&[
        &service(INFRA, "udp-echo-by-port", &["198.18.42.2"]),
        &service(INFRA, "udp-echo-by-section", &["198.18.42.3"]),
        &service(INFRA, "udp-echo-by-section-and-port", &["198.18.42.4"]),
        &gateway("udp-multi-listener-gateway", &[&udp("by-port", 5300), &udp("by-section", 5301), &udp("by-section-and-port", 5302)]),
        &route("udp-route-by-port", "[{name: udp-multi-listener-gateway, port: 5300}]", "[{name: udp-echo-by-port, port: 8080}]"),
        &route("udp-route-by-section", "[{name: udp-multi-listener-gateway, sectionName: by-section}]", "[{name: udp-echo-by-section, port: 8080}]"),
        &route("udp-route-by-section-and-port", "[{name: udp-multi-listener-gateway, port: 5302, sectionName: by-section-and-port}]", "[{name: udp-echo-by-section-and-port, port: 8080}]"),
        // Both given and only one matches: no parent.
        &route("mismatch", "[{name: udp-multi-listener-gateway, port: 5300, sectionName: by-section}]", "[{name: udp-echo-by-port, port: 8080}]"),
    ]);
    for r in ["udp-route-by-port", "udp-route-by-section", "udp-route-by-section-and-port"] {
        assert_eq!(route_conditions(&t, r), [ACCEPTED_RESOLVED], "{r}");
    }
    assert_eq!(endpoints(&t, 5300), ["198.18.42.2:8080"]);
    assert_eq!(endpoints(&t, 5301), ["198.18.42.3:8080"]);
    assert_eq!(endpoints(&t, 5302), ["198.18.42.4:8080"]);
    assert_eq!(route_conditions(&t, "mismatch")[0][0], "Accepted=False/NoMatchingParent");
    assert_eq!(listeners(&t, "udp-multi-listener-gateway").iter().map(|l| l.1).collect::<Vec<_>>(), [1, 1, 1]);
}

#[test]
fn conformance_udproute_reference_grant() {
    let grant = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: ReferenceGrant\nmetadata: {{name: udp-reference-grant, namespace: {APP}}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: UDPRoute, namespace: {INFRA}}}]\n  to: [{{group: \"\", kind: Service, name: udp-echo-reference-grant}}]\n"
    );
    let docs = [
        service(APP, "udp-echo-reference-grant", &["198.18.43.2"]),
        gateway("udp-gateway-reference-grant", &[&udp("udp", 5300)]),
        route("udp-route-reference-grant", "[{name: udp-gateway-reference-grant, sectionName: udp}]", &format!("[{{name: udp-echo-reference-grant, namespace: {APP}, port: 8080}}]")),
    ];
    let with: Vec<&str> = docs.iter().map(String::as_str).chain([grant.as_str()]).collect();
    let t = translate_yaml(&with);
    assert_eq!(route_conditions(&t, "udp-route-reference-grant"), [ACCEPTED_RESOLVED]);
    assert_eq!(endpoints(&t, 5300), ["198.18.43.2:8080"]);
    // Deleting the grant flips it back.
    let without: Vec<&str> = docs.iter().map(String::as_str).collect();
    let t = translate_yaml(&without);
    assert_eq!(route_conditions(&t, "udp-route-reference-grant")[0][1], "ResolvedRefs=False/RefNotPermitted");
    // A grant from TCPRoutes does not let UDPRoutes in.
    let tcp_grant = grant.replace("kind: UDPRoute", "kind: TCPRoute");
    let t = translate_yaml(&without.iter().copied().chain([tcp_grant.as_str()]).collect::<Vec<_>>());
    assert_eq!(route_conditions(&t, "udp-route-reference-grant")[0][1], "ResolvedRefs=False/RefNotPermitted");
}

#[test]
fn conformance_udproute_weighted_routing() {
    let t = translate_yaml(&[
        &service(INFRA, "udp-backend-v1", &["198.18.42.2"]),
        &service(INFRA, "udp-backend-v2", &["198.18.43.2"]),
        &service(INFRA, "udp-backend-v3", &["198.18.42.3"]),
        &gateway("udp-weighted-gateway", &[&udp("udp", 5300)]),
        &route(
            "udp-weighted-route",
            "[{name: udp-weighted-gateway, sectionName: udp}]",
            "[{name: udp-backend-v1, port: 8080, weight: 70}, {name: udp-backend-v2, port: 8080, weight: 30}, {name: udp-backend-v3, port: 8080, weight: 0}]",
        ),
    ]);
    let weights: Vec<(String, u32)> = udp_at(&t, 5300).backends.iter().map(|b| (b.name.clone(), b.weight)).collect();
    assert_eq!(weights, [(format!("{INFRA}/udp-backend-v1:8080"), 70), (format!("{INFRA}/udp-backend-v2:8080"), 30), (format!("{INFRA}/udp-backend-v3:8080"), 0)]);
    assert_eq!(route_conditions(&t, "udp-weighted-route"), [ACCEPTED_RESOLVED]);
}

#[test]
fn a_tcp_and_a_udp_listener_on_one_port_are_both_served_each_by_its_kind() {
    // DNS: TCP and UDP port 53, one Service with both protocols on port 53.
    let svc = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: dns, namespace: {INFRA}}}\nspec: {{ports: [{{name: dns-tcp, protocol: TCP, port: 53, targetPort: 5353}}, {{name: dns, protocol: UDP, port: 53, targetPort: 5353}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: dns-x, namespace: {INFRA}, labels: {{kubernetes.io/service-name: dns}}}}\naddressType: IPv4\n\
         ports: [{{name: dns-tcp, protocol: TCP, port: 5354}}, {{name: dns, protocol: UDP, port: 5353}}]\nendpoints: [{{addresses: [198.18.42.2]}}]\n"
    );
    let tcp_route = format!("apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata: {{name: dns, namespace: {INFRA}}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules: [{{backendRefs: [{{name: dns, port: 53}}]}}]\n");
    let t = translate_yaml(&[
        &gateway("gw", &["{name: dns-tcp, port: 53, protocol: TCP}", "{name: dns, port: 53, protocol: UDP}"]),
        &tcp_route,
        // Same name as the TCPRoute: another kind, another object.
        &route("dns", "[{name: gw}]", "[{name: dns, port: 53}]"),
        &svc,
    ]);
    assert_eq!(t.dataplane.listeners[&53].route.as_ref().map(|r| r.name.as_str()), Some("dns"));
    assert_eq!(t.dataplane.listeners[&53].backends[0].endpoints, ["198.18.42.2:5354".parse().unwrap()], "the TCP port's target");
    assert_eq!(endpoints(&t, 53), ["198.18.42.2:5353"], "the UDP port's target");
    let ls = listeners(&t, "gw");
    assert_eq!(ls.iter().map(|l| (l.1, l.2.clone())).collect::<Vec<_>>(), [(1, vec!["TCPRoute".to_string()]), (1, vec!["UDPRoute".to_string()])]);
    assert!(ls.iter().all(|l| l.3 == LISTENER_READY.map(String::from)), "no conflict between protocols: {ls:?}");
    assert_eq!(route_conditions(&t, "dns"), [ACCEPTED_RESOLVED]);
}

#[test]
fn a_udproute_needs_a_udp_service_port() {
    let t = translate_yaml(&[
        &gateway("gw", &[&udp("udp", 5300)]),
        &route("r", "[{name: gw}]", "[{name: s, port: 8080}]"),
        &service_with(INFRA, "s", 8080, "TCP", &["198.18.42.2"]),
    ]);
    let c = &t.status.udp_routes[&ObjectKey::new(INFRA, "r")][0].conditions[1];
    assert_eq!(short(c), "ResolvedRefs=False/BackendNotFound");
    assert!(c.message.contains("has no UDP port 8080"), "{}", c.message);
}

#[test]
fn udp_listeners_conflict_across_gateways_like_tcp_ones_and_never_with_tcp() {
    // (Two UDP listeners on one port of one Gateway are refused by the CRD's
    // CEL rules, hostname being forbidden on UDP listeners.)
    let first = gateway("first", &[&udp("a", 5300), "{name: t, port: 5300, protocol: TCP}"]);
    let second = gateway("second", &[&udp("a", 5301), "{name: t, port: 5300, protocol: TCP}", &udp("c", 5300)]);
    let t = translate_yaml(&[&first, &second]);
    let first = listeners(&t, "first");
    assert_eq!(first[0].3, LISTENER_READY.map(String::from));
    assert_eq!(first[1].3, LISTENER_READY.map(String::from), "TCP 5300 is not UDP 5300");
    let second = listeners(&t, "second");
    assert_eq!(second[0].3, LISTENER_READY.map(String::from));
    assert!(second[1].3.contains(&"Accepted=False/PortUnavailable".to_string()), "TCP 5300 is the older Gateway's");
    assert!(second[2].3.contains(&"Accepted=False/PortUnavailable".to_string()), "UDP 5300 is the older Gateway's");
    assert_eq!(t.dataplane.udp_listeners.keys().copied().collect::<Vec<_>>(), [5300, 5301]);
    assert_eq!(t.dataplane.listeners.keys().copied().collect::<Vec<_>>(), [5300]);
}

#[test]
fn allowed_routes_kinds_and_namespaces_apply_to_udp_listeners() {
    let svc = service("apps", "s", &["198.18.42.2"]);
    let apps_route = udp_route("v1", "r", &format!("[{{name: gw, namespace: {INFRA}}}]"), "[{name: s, port: 8080}]").replace(&format!("namespace: {INFRA}}}\nspec"), "namespace: apps}\nspec");
    let apps_ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps, labels: {team: blue}}\n";
    let verdict = |allowed: &str| {
        let gw = gateway("gw", &[&format!("{{name: u, port: 5300, protocol: UDP, allowedRoutes: {allowed}}}")]);
        let t = translate_yaml(&[&gw, &apps_route, &svc, apps_ns]);
        (t.status.udp_routes[&ObjectKey::new("apps", "r")][0].conditions[0].reason, listeners(&t, "gw")[0].clone())
    };
    assert_eq!(verdict("{namespaces: {from: Same}}").0, "NotAllowedByListeners");
    assert_eq!(verdict("{namespaces: {from: All}}").0, "Accepted");
    assert_eq!(verdict("{namespaces: {from: Selector, selector: {matchLabels: {team: blue}}}}").0, "Accepted");
    // kinds: TCPRoute only on a UDP listener is invalid; with UDPRoute beside it, only UDPRoute is supported.
    let (reason, l) = verdict("{namespaces: {from: All}, kinds: [{kind: TCPRoute}]}");
    assert_eq!(reason, "NotAllowedByListeners");
    assert!(l.2.is_empty() && l.3.contains(&"ResolvedRefs=False/InvalidRouteKinds".to_string()), "{l:?}");
    let (reason, l) = verdict("{namespaces: {from: All}, kinds: [{kind: TCPRoute}, {kind: UDPRoute}]}");
    assert_eq!(reason, "Accepted");
    assert_eq!(l.2, ["UDPRoute"]);
    assert!(l.3.contains(&"ResolvedRefs=False/InvalidRouteKinds".to_string()));
}

#[test]
fn v1alpha2_udproutes_use_their_first_rule_and_v1_ones_have_exactly_one() {
    let r = format!("apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: UDPRoute\nmetadata: {{name: r, namespace: {INFRA}}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - backendRefs: [{{name: a, port: 8080}}]\n  - backendRefs: [{{name: b, port: 8080}}]\n");
    let t = translate_yaml(&[&gateway("gw", &[&udp("u", 5300)]), &r, &service(INFRA, "a", &["198.18.42.2"]), &service(INFRA, "b", &["198.18.43.2"])]);
    assert_eq!(route_conditions(&t, "r"), [["Accepted=True/Accepted", "ResolvedRefs=True/ResolvedRefs", "PartiallyInvalid=True/UnsupportedValue"]]);
    assert_eq!(endpoints(&t, 5300), ["198.18.42.2:8080"]);
    let v1 = r.replace("v1alpha2", "v1");
    let e = load_text(Path::new("t.yaml"), &v1).unwrap_err().to_string();
    assert!(e.contains("UDPRoute gateway-conformance-infra/r: spec.rules: may have at most 1 item, has 2 (UDPRoute v1 has exactly one rule"), "{e}");
}

#[test]
fn listener_policies_reach_udp_listeners() {
    let policy = format!(
        "apiVersion: sockgate.io/v1alpha1\nkind: ListenerPolicy\nmetadata: {{name: p, namespace: {INFRA}}}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: u}}]\n  clientCIDRs: {{deny: [198.18.41.0/24]}}\n  maxConnections: 100\n  idleTimeout: 1m30s\n"
    );
    let t = translate_yaml(&[&gateway("gw", &[&udp("u", 5300)]), &route("r", "[{name: gw}]", "[{name: s, port: 8080}]"), &service(INFRA, "s", &["198.18.42.2"]), &policy]);
    let p = &udp_at(&t, 5300).policy;
    assert_eq!((p.max_connections, p.idle_timeout), (Some(100), Some(std::time::Duration::from_secs(90))));
    assert!(!p.admits("198.18.41.7".parse().unwrap()) && p.admits("198.18.40.7".parse().unwrap()));
}

#[test]
fn status_objects_carry_udproutes_in_their_version_and_the_class_advertises_udproute() {
    let t = translate_yaml(&[&gateway("gw", &[&udp("u", 5300)]), &udp_route("v1alpha2", "old", "[{name: gw}]", "[{name: s, port: 8080}]"), &route("new", "[{name: gw}]", "[{name: s, port: 8080}]")]);
    let snapshot = load_text(Path::new("t.yaml"), &[CLASS, &udp_route("v1alpha2", "old", "[{name: gw}]", "[{name: s, port: 8080}]"), &route("new", "[{name: gw}]", "[{name: s, port: 8080}]")].join("---\n")).unwrap().snapshot;
    let docs = crate::status::render::status_objects(&snapshot, &t.status, DEFAULT_CONTROLLER_NAME);
    let find = |kind: &str, name: &str| docs.iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name).unwrap_or_else(|| panic!("no {kind} {name}"));
    assert_eq!(find("UDPRoute", "old")["apiVersion"], "gateway.networking.k8s.io/v1alpha2");
    assert_eq!(find("UDPRoute", "new")["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(find("UDPRoute", "new")["status"]["parents"][0]["controllerName"], DEFAULT_CONTROLLER_NAME);
    let features: Vec<&str> = find("GatewayClass", "sg")["status"]["supportedFeatures"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(features, ["Gateway", "ListenerSet", "ReferenceGrant", "TCPRoute", "UDPRoute"]);
    assert!(t.status.lines().iter().any(|l| l.starts_with("UDPRoute gateway-conformance-infra/new -> gw: Accepted=True/Accepted")), "{:?}", t.status.lines());
}

#[test]
fn the_udp_routing_example_translates_to_a_udp_and_a_tcp_listener_on_port_53() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/udp-routing");
    let loaded = crate::sources::manifests::load_dir(&dir).unwrap();
    let t = translate(&loaded.snapshot, &Settings::default());
    let eps = ["198.18.2.2:53".parse().unwrap(), "198.18.3.2:53".parse().unwrap()];
    assert_eq!(t.dataplane.udp_listeners[&53].backends[0].endpoints, eps);
    assert_eq!(t.dataplane.listeners[&53].backends[0].endpoints, eps);
    assert_eq!(t.dataplane.udp_listeners[&53].policy.idle_timeout, Some(std::time::Duration::from_secs(10)));
    let bad = ["Accepted=False", "ResolvedRefs=False", "Programmed=False"];
    assert!(t.status.lines().iter().all(|l| bad.iter().all(|b| !l.contains(b))), "{:?}", t.status.lines());
}
