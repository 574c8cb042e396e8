//! The translator's rules, each from YAML a user would write.
use std::path::Path;

use super::config::ListenerConfig;
use super::status::Condition;
use super::*;
use crate::sources::creation::CreationClock;
use crate::sources::manifests::load_text;

const CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: sg}\nspec: {controllerName: sockgate.io/gateway-controller}\n";

fn translate_yaml(docs: &[&str]) -> Translation {
    let mut all = vec![CLASS];
    all.extend_from_slice(docs);
    let mut snapshot = load_text(Path::new("t.yaml"), &all.join("---\n")).unwrap_or_else(|e| panic!("{e}")).snapshot;
    // Each document one second younger than the one before: file order is age order.
    CreationClock::default().stamp(&mut snapshot, "2026-01-01T00:00:00Z".parse().unwrap());
    translate(&snapshot, &Settings::default())
}

/// Objects with explicit creation times (seconds past a fixed epoch).
fn created(seconds: u32) -> String {
    format!("creationTimestamp: \"2026-01-01T00:00:{seconds:02}Z\"")
}

fn gateway(name: &str, listeners: &str) -> String {
    format!("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}}}\nspec:\n  gatewayClassName: sg\n  listeners:\n{listeners}")
}

fn listener(name: &str, port: u16) -> String {
    format!("  - {{name: {name}, port: {port}, protocol: TCP}}\n")
}

fn route(name: &str, parent_refs: &str, backends: &str) -> String {
    format!("apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {{name: {name}}}\nspec:\n  parentRefs: {parent_refs}\n  rules:\n  - backendRefs: {backends}\n")
}

fn service(name: &str, ns: &str, port: u16, target: &str, ips: &[&str]) -> String {
    let endpoints: Vec<String> = ips.iter().map(|ip| format!("{{addresses: [\"{ip}\"]}}")).collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{ports: [{{name: tcp, port: {port}, targetPort: {target}}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-x, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}\n\
         addressType: IPv4\nports: [{{name: tcp, port: 3000}}]\nendpoints: [{}]\n",
        endpoints.join(", ")
    )
}

fn route_conditions(t: &Translation, name: &str) -> Vec<Vec<String>> {
    t.status.routes[&ObjectKey::new("default", name)]
        .iter()
        .map(|p| p.conditions.iter().map(short).collect())
        .collect()
}

fn short(c: &Condition) -> String {
    format!("{}={}/{}", c.type_, if c.status { "True" } else { "False" }, c.reason)
}

fn listener_at(t: &Translation, port: u16) -> &ListenerConfig {
    t.dataplane.listeners.get(&port).unwrap_or_else(|| panic!("no listener on {port}: {:?}", t.dataplane))
}

fn routed_to(t: &Translation, port: u16) -> Option<String> {
    listener_at(t, port).route.as_ref().map(|r| r.name.clone())
}

fn two_listeners() -> String {
    gateway("gw", &(listener("foo", 8088) + &listener("bar", 8089)))
}

#[test]
fn section_name_attaches_to_that_listener_only() {
    let t = translate_yaml(&[&two_listeners(), &route("r", "[{name: gw, sectionName: bar}]", "[{name: s, port: 1}]"), &service("s", "default", 1, "3000", &["198.18.2.2"])]);
    assert_eq!(routed_to(&t, 8088), None);
    assert_eq!(routed_to(&t, 8089).as_deref(), Some("r"));
    assert_eq!(listener_at(&t, 8089).backends[0].endpoints, ["198.18.2.2:3000".parse().unwrap()]);
    let gw = &t.status.gateways[&ObjectKey::new("default", "gw")];
    assert_eq!(gw.listeners.iter().map(|l| l.attached_routes).collect::<Vec<_>>(), [0, 1]);
}

#[test]
fn port_attaches_by_port_and_both_must_match_when_both_are_given() {
    let svc = service("s", "default", 1, "3000", &["198.18.2.2"]);
    let t = translate_yaml(&[&two_listeners(), &route("r", "[{name: gw, port: 8088}]", "[{name: s, port: 1}]"), &svc]);
    assert_eq!(routed_to(&t, 8088).as_deref(), Some("r"));
    assert_eq!(routed_to(&t, 8089), None);
    let t = translate_yaml(&[&two_listeners(), &route("r", "[{name: gw, sectionName: foo, port: 8089}]", "[{name: s, port: 1}]"), &svc]);
    assert_eq!(route_conditions(&t, "r"), [["Accepted=False/NoMatchingParent", "ResolvedRefs=True/ResolvedRefs"]]);
    assert_eq!((routed_to(&t, 8088), routed_to(&t, 8089)), (None, None));
    let accepted = &t.status.routes[&ObjectKey::new("default", "r")][0].conditions[0];
    assert_eq!(accepted.message, "no listener matches sectionName \"foo\" and port 8089; the Gateway's listeners are: foo (port 8088), bar (port 8089)");
}

#[test]
fn no_section_name_nor_port_attaches_to_every_listener() {
    let t = translate_yaml(&[&two_listeners(), &route("r", "[{name: gw}]", "[{name: s, port: 1}]"), &service("s", "default", 1, "3000", &["198.18.2.2"])]);
    assert_eq!(routed_to(&t, 8088).as_deref(), Some("r"));
    assert_eq!(routed_to(&t, 8089).as_deref(), Some("r"));
    assert_eq!(route_conditions(&t, "r"), [["Accepted=True/Accepted", "ResolvedRefs=True/ResolvedRefs"]]);
}

#[test]
fn the_oldest_route_gets_the_traffic_and_every_attached_route_is_counted() {
    let svc = service("s", "default", 1, "3000", &["198.18.2.2"]);
    let gw = gateway("gw", &listener("foo", 8088));
    let young = route("aaa-young", "[{name: gw}]", "[{name: s, port: 1}]").replace("metadata: {name: aaa-young}", &format!("metadata: {{name: aaa-young, {}}}", created(9)));
    let old = route("zzz-old", "[{name: gw}]", "[{name: s, port: 1}]").replace("metadata: {name: zzz-old}", &format!("metadata: {{name: zzz-old, {}}}", created(1)));
    let t = translate_yaml(&[&gw, &young, &old, &svc]);
    assert_eq!(routed_to(&t, 8088).as_deref(), Some("zzz-old"), "creation time beats name order");
    assert_eq!(t.status.gateways[&ObjectKey::new("default", "gw")].listeners[0].attached_routes, 2);
    assert_eq!(route_conditions(&t, "aaa-young"), [["Accepted=True/Accepted", "ResolvedRefs=True/ResolvedRefs"]]);
    // Same age: namespace/name decides.
    let same_a = route("a", "[{name: gw}]", "[{name: s, port: 1}]").replace("metadata: {name: a}", &format!("metadata: {{name: a, {}}}", created(5)));
    let same_b = route("b", "[{name: gw}]", "[{name: s, port: 1}]").replace("metadata: {name: b}", &format!("metadata: {{name: b, {}}}", created(5)));
    assert_eq!(routed_to(&translate_yaml(&[&gw, &same_b, &same_a, &svc]), 8088).as_deref(), Some("a"));
}

#[test]
fn allowed_routes_same_all_and_selector_decide_by_the_routes_namespace() {
    let svc = service("s", "apps", 1, "3000", &["198.18.2.2"]);
    let gw = |from: &str| gateway("gw", &format!("  - {{name: foo, port: 8088, protocol: TCP, allowedRoutes: {{namespaces: {from}}}}}\n"));
    let apps_route = route("r", "[{name: gw, namespace: default}]", "[{name: s, port: 1}]").replace("metadata: {name: r}", "metadata: {name: r, namespace: apps}");
    let apps_ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps, labels: {team: blue}}\n";
    let verdict = |from: &str| {
        let t = translate_yaml(&[&gw(from), &apps_route, &svc, apps_ns]);
        t.status.routes[&ObjectKey::new("apps", "r")][0].conditions[0].reason
    };
    assert_eq!(verdict("{from: Same}"), "NotAllowedByListeners");
    assert_eq!(verdict("{}"), "NotAllowedByListeners", "Same is the default");
    assert_eq!(verdict("{from: All}"), "Accepted");
    assert_eq!(verdict("{from: Selector, selector: {matchLabels: {team: blue}}}"), "Accepted");
    assert_eq!(verdict("{from: Selector, selector: {matchLabels: {team: red}}}"), "NotAllowedByListeners");
    assert_eq!(verdict("{from: Selector, selector: {matchExpressions: [{key: team, operator: In, values: [red, blue]}]}}"), "Accepted");
    assert_eq!(verdict("{from: Selector, selector: {matchLabels: {kubernetes.io/metadata.name: apps}}}"), "Accepted");
}

#[test]
fn a_listener_allowing_only_other_kinds_rejects_tcproutes() {
    let gw = gateway("gw", "  - {name: foo, port: 8088, protocol: TCP, allowedRoutes: {kinds: [{kind: UDPRoute}]}}\n");
    let t = translate_yaml(&[&gw, &route("r", "[{name: gw}]", "[{name: s, port: 1}]"), &service("s", "default", 1, "3000", &["198.18.2.2"])]);
    assert_eq!(route_conditions(&t, "r")[0][0], "Accepted=False/NotAllowedByListeners");
    let l = &t.status.gateways[&ObjectKey::new("default", "gw")].listeners[0];
    assert!(l.conditions.iter().any(|c| short(c) == "ResolvedRefs=False/InvalidRouteKinds"));
    assert!(l.supported_kinds.is_empty());
    assert!(t.dataplane.listeners.is_empty());
}

#[test]
fn cross_namespace_backends_need_a_reference_grant() {
    let svc = service("s", "other", 1, "3000", &["198.18.2.2"]);
    let r = route("r", "[{name: gw}]", "[{name: s, namespace: other, port: 1}]");
    let gw = gateway("gw", &listener("foo", 8088));
    let t = translate_yaml(&[&gw, &r, &svc]);
    assert_eq!(route_conditions(&t, "r"), [["Accepted=True/Accepted", "ResolvedRefs=False/RefNotPermitted"]]);
    assert!(listener_at(&t, 8088).backends[0].endpoints.is_empty(), "not permitted: its share is reset");
    let grant = "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: other}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: TCPRoute, namespace: default}]\n  to: [{group: \"\", kind: Service, name: s}]\n";
    let t = translate_yaml(&[&gw, &r, &svc, grant]);
    assert_eq!(route_conditions(&t, "r"), [["Accepted=True/Accepted", "ResolvedRefs=True/ResolvedRefs"]]);
    assert_eq!(listener_at(&t, 8088).backends[0].endpoints.len(), 1);
    // A grant for another Service name does not count.
    let t = translate_yaml(&[&gw, &r, &svc, &grant.replace("name: s}", "name: not-s}")]);
    assert_eq!(route_conditions(&t, "r")[0][1], "ResolvedRefs=False/RefNotPermitted");
}

#[test]
fn missing_services_ports_and_foreign_kinds_get_their_reasons_and_keep_their_weight() {
    let gw = gateway("gw", &listener("foo", 8088));
    let svc = service("s", "default", 1, "3000", &["198.18.2.2"]);
    let r = route("r", "[{name: gw}]", "[{name: s, port: 1, weight: 2}, {name: ghost, port: 1, weight: 1}, {name: s, port: 99}, {group: example.com, kind: Bucket, name: b}]");
    let t = translate_yaml(&[&gw, &r, &svc]);
    let cond = &t.status.routes[&ObjectKey::new("default", "r")][0].conditions[1];
    assert_eq!(short(cond), "ResolvedRefs=False/BackendNotFound");
    assert!(cond.message.contains("Service default/ghost not found"));
    assert!(cond.message.contains("has no TCP port 99"));
    assert!(cond.message.contains("only core Services are supported"));
    let weights: Vec<(u32, usize)> = listener_at(&t, 8088).backends.iter().map(|b| (b.weight, b.endpoints.len())).collect();
    assert_eq!(weights, [(2, 1), (1, 0), (1, 0), (1, 0)]);
}

#[test]
fn named_target_ports_resolve_through_the_endpointslice_and_unready_endpoints_are_left_out() {
    let gw = gateway("gw", &listener("foo", 8088));
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{name: web, port: 80, targetPort: http-alt}]}\n---\n\
               apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s-1, labels: {kubernetes.io/service-name: s}}\naddressType: IPv4\n\
               ports: [{name: web, port: 8080}, {name: other, port: 9999}]\n\
               endpoints: [{addresses: [198.18.2.2]}, {addresses: [198.18.2.3], conditions: {ready: false}}, {addresses: [198.18.2.4], conditions: {ready: true}}]\n\
               ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: not-s, labels: {kubernetes.io/service-name: t}}\naddressType: IPv4\n\
               ports: [{name: web, port: 1}]\nendpoints: [{addresses: [198.18.9.9]}]\n";
    let t = translate_yaml(&[&gw, &route("r", "[{name: gw}]", "[{name: s, port: 80}]"), svc]);
    let eps: Vec<String> = listener_at(&t, 8088).backends[0].endpoints.iter().map(ToString::to_string).collect();
    assert_eq!(eps, ["198.18.2.2:8080", "198.18.2.4:8080"]);
}

#[test]
fn a_tcp_and_a_tls_listener_on_one_port_are_both_conflicted_and_unsupported_protocols_are_not_accepted() {
    // The schema forbids two TCP listeners on one port of a Gateway (TCP may
    // have no hostname, and port, protocol and hostname must be unique).
    let gw = gateway("gw", &(listener("a", 8088) + "  - {name: b, port: 8088, protocol: TLS, hostname: b.example, tls: {mode: Passthrough}}\n" + "  - {name: web, port: 80, protocol: HTTP}\n" + &listener("ok", 9000)));
    let t = translate_yaml(&[&gw]);
    let status = &t.status.gateways[&ObjectKey::new("default", "gw")];
    let find = |name: &str| status.listeners.iter().find(|l| l.name == name).unwrap().conditions.iter().map(short).collect::<Vec<_>>();
    assert!(find("a").contains(&"Conflicted=True/ProtocolConflict".to_string()));
    assert!(find("b").contains(&"Conflicted=True/ProtocolConflict".to_string()));
    assert!(find("web").contains(&"Accepted=False/UnsupportedProtocol".to_string()));
    assert!(find("ok").contains(&"Programmed=True/Programmed".to_string()));
    assert_eq!(t.dataplane.listeners.keys().copied().collect::<Vec<_>>(), [9000]);
    assert_eq!(status.conditions.iter().map(short).collect::<Vec<_>>(), ["Accepted=True/ListenersNotValid", "Programmed=True/Programmed"]);
}

/// GEP-2644: a TCP listener on the port of an HTTP, HTTPS or TLS listener of
/// the same Gateway is not distinct from it: both are conflicted, neither is served.
#[test]
fn a_tcp_listener_sharing_its_port_with_an_http_https_or_tls_listener_is_conflicted_with_it_and_not_served() {
    for other in ["{name: web, port: 443, protocol: HTTP}", "{name: web, port: 443, protocol: HTTPS, hostname: app.example.com, tls: {mode: Terminate, certificateRefs: [{name: app-cert}]}}", "{name: web, port: 443, protocol: TLS, hostname: app.example.com, tls: {mode: Passthrough}}"] {
        let gw = gateway("gw", &(listener("tcp-listener", 443) + &format!("  - {other}\n") + &listener("ok", 9000)));
        let t = translate_yaml(&[&gw]);
        let status = &t.status.gateways[&ObjectKey::new("default", "gw")];
        let find = |name: &str| status.listeners.iter().find(|l| l.name == name).unwrap().conditions.iter().map(short).collect::<Vec<_>>();
        assert_eq!(find("tcp-listener"), ["Accepted=True/Accepted", "Conflicted=True/ProtocolConflict", "ResolvedRefs=True/ResolvedRefs", "Programmed=False/Invalid"], "{other}");
        assert!(find("web").contains(&"Conflicted=True/ProtocolConflict".to_string()), "{other}: {:?}", find("web"));
        assert!(find("web").contains(&"Accepted=False/UnsupportedProtocol".to_string()));
        let tcp = status.listeners.iter().find(|l| l.name == "tcp-listener").unwrap();
        let message = &tcp.conditions[1].message;
        assert!(message.starts_with("TCP port 443 is also used by listener \"web\" ("), "{message}");
        assert_eq!(t.dataplane.listeners.keys().copied().collect::<Vec<_>>(), [9000], "{other}: port 443 is not served");
        assert_eq!(status.conditions[0].reason, "ListenersNotValid");
        assert!(status.conditions[0].message.contains("\"tcp-listener\" (ProtocolConflict)") && status.conditions[0].message.contains("valid: \"ok\""), "the Gateway names its conflicted and its valid listeners: {}", status.conditions[0].message);
    }
    // Across Gateways only what sockgate serves claims a port: another Gateway's HTTP listener leaves TCP 80 free.
    let web = gateway("web", "  - {name: web, port: 80, protocol: HTTP}\n").replace("metadata: {name: web}", &format!("metadata: {{name: web, {}}}", created(1)));
    let tcp = gateway("tcp", &listener("a", 80)).replace("metadata: {name: tcp}", &format!("metadata: {{name: tcp, {}}}", created(2)));
    let t = translate_yaml(&[&web, &tcp]);
    assert_eq!(listener_at(&t, 80).gateway.name, "tcp");
}

#[test]
fn across_gateways_the_oldest_keeps_a_contested_port() {
    let first = gateway("first", &listener("a", 8088)).replace("metadata: {name: first}", &format!("metadata: {{name: first, {}}}", created(1)));
    let second = gateway("second", &listener("a", 8088)).replace("metadata: {name: second}", &format!("metadata: {{name: second, {}}}", created(2)));
    let t = translate_yaml(&[&second, &first]);
    assert_eq!(listener_at(&t, 8088).gateway.name, "first");
    let loser = &t.status.gateways[&ObjectKey::new("default", "second")].listeners[0];
    assert!(loser.conditions.iter().any(|c| short(c) == "Accepted=False/PortUnavailable"));
    assert!(loser.conditions.iter().any(|c| short(c) == "Conflicted=True/ProtocolConflict"), "the loser is not told NoConflicts: {:?}", loser.conditions);
}

/// The spec: attachment rests on allowedRoutes and parentRefs alone, so
/// attachedRoutes counts a route on a listener that is not accepted; the
/// listener still serves nothing.
#[test]
fn a_route_on_a_listener_that_lost_its_port_is_attached_and_counted_but_not_served() {
    let first = gateway("first", &listener("a", 8088)).replace("metadata: {name: first}", &format!("metadata: {{name: first, {}}}", created(1)));
    let second = gateway("second", &listener("a", 8088)).replace("metadata: {name: second}", &format!("metadata: {{name: second, {}}}", created(2)));
    let r = route("r", "[{name: second, sectionName: a}]", "[{name: svc, port: 1}]");
    let t = translate_yaml(&[&first, &second, &r, &service("svc", "default", 1, "3000", &["198.18.2.2"])]);
    let loser = &t.status.gateways[&ObjectKey::new("default", "second")].listeners[0];
    assert!(loser.conditions.iter().any(|c| short(c) == "Accepted=False/PortUnavailable"));
    assert_eq!(loser.attached_routes, 1);
    assert_eq!(route_conditions(&t, "r"), [["Accepted=True/Accepted", "ResolvedRefs=True/ResolvedRefs"]]);
    assert_eq!(listener_at(&t, 8088).gateway.name, "first", "the port serves the older Gateway");
    assert_eq!(listener_at(&t, 8088).route, None, "and not the loser's route");
}

#[test]
fn objects_of_other_controllers_are_never_touched() {
    let other = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: eg}\nspec: {controllerName: gateway.envoyproxy.io/gatewayclass-controller}\n";
    let theirs = gateway("theirs", &listener("foo", 8088)).replace("gatewayClassName: sg", "gatewayClassName: eg");
    let t = translate_yaml(&[other, &theirs, &route("r", "[{name: theirs}]", "[{name: s, port: 1}]")]);
    assert!(t.dataplane.listeners.is_empty());
    assert!(!t.status.gateway_classes.contains_key(&ObjectKey::cluster("eg")));
    assert!(t.status.gateways.is_empty());
    assert!(t.status.routes.is_empty(), "no status for a route whose parents are not ours");
}

#[test]
fn v1alpha2_routes_use_their_first_rule_and_say_partially_invalid_when_more_are_dropped() {
    let gw = gateway("gw", &listener("foo", 8088));
    let r = "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - backendRefs: [{name: a, port: 1, weight: 90}, {name: b, port: 1, weight: 10}]\n  - backendRefs: [{name: b, port: 1}]\n";
    let t = translate_yaml(&[&gw, r, &service("a", "default", 1, "3000", &["198.18.2.2"]), &service("b", "default", 1, "3000", &["198.18.3.2"])]);
    let groups: Vec<(String, u32)> = listener_at(&t, 8088).backends.iter().map(|b| (b.name.clone(), b.weight)).collect();
    assert_eq!(groups, [("default/a:1".to_string(), 90), ("default/b:1".to_string(), 10)]);
    assert_eq!(route_conditions(&t, "r"), [["Accepted=True/Accepted", "ResolvedRefs=True/ResolvedRefs", "PartiallyInvalid=True/UnsupportedValue"]]);
    let message = &t.status.routes[&ObjectKey::new("default", "r")][0].conditions[2].message;
    assert!(message.starts_with("Dropped Rule 2: "), "the spec's prefix: {message}");
    // A parent that does not accept the route gets no PartiallyInvalid (the spec forbids it there).
    let to_missing_listener = r.replace("parentRefs: [{name: gw}]", "parentRefs: [{name: gw, sectionName: nope}]");
    let t2 = translate_yaml(&[&gw, &to_missing_listener, &service("a", "default", 1, "3000", &["198.18.2.2"]), &service("b", "default", 1, "3000", &["198.18.3.2"])]);
    assert_eq!(route_conditions(&t2, "r")[0].len(), 2, "{:?}", route_conditions(&t2, "r"));
    let one_rule = r.replace("  - backendRefs: [{name: b, port: 1}]\n", "");
    let t = translate_yaml(&[&gw, &one_rule, &service("a", "default", 1, "3000", &["198.18.2.2"]), &service("b", "default", 1, "3000", &["198.18.3.2"])]);
    assert_eq!(route_conditions(&t, "r"), [["Accepted=True/Accepted", "ResolvedRefs=True/ResolvedRefs"]]);
}

#[test]
fn conditions_carry_the_generation_of_their_object_and_gateways_their_addresses() {
    let gw = gateway("gw", &listener("foo", 8088)).replace("metadata: {name: gw}", "metadata: {name: gw, generation: 7}");
    let r = route("r", "[{name: gw}]", "[{name: s, port: 1}]").replace("metadata: {name: r}", "metadata: {name: r, generation: 3}");
    let mut snapshot = load_text(Path::new("t.yaml"), &[CLASS, &gw, &r].join("---\n")).unwrap().snapshot;
    CreationClock::default().stamp(&mut snapshot, "2026-01-01T00:00:00Z".parse().unwrap());
    let settings = Settings { gateway_addresses: vec!["198.18.1.2".parse().unwrap()], ..Settings::default() };
    let t = translate(&snapshot, &settings);
    let g = &t.status.gateways[&ObjectKey::new("default", "gw")];
    assert!(g.conditions.iter().chain(g.listeners[0].conditions.iter()).all(|c| c.observed_generation == 7));
    assert!(t.status.routes[&ObjectKey::new("default", "r")][0].conditions.iter().all(|c| c.observed_generation == 3));
    assert!(t.status.gateway_classes[&ObjectKey::cluster("sg")].iter().all(|c| c.observed_generation == 1), "no generation on disk: the first");
    assert_eq!(g.addresses, settings.gateway_addresses);
}

#[test]
fn the_guides_manifests_translate_to_two_routed_listeners() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/tcp-routing");
    let loaded = crate::sources::manifests::load_dir(&dir).unwrap();
    let t = translate(&loaded.snapshot, &Settings::default());
    assert_eq!(routed_to(&t, 8088).as_deref(), Some("tcp-app-1"));
    assert_eq!(routed_to(&t, 8089).as_deref(), Some("tcp-app-2"));
    assert_eq!(listener_at(&t, 8088).backends[0].endpoints, ["198.18.2.2:3000".parse().unwrap()]);
    assert_eq!(listener_at(&t, 8089).backends[0].endpoints, ["198.18.3.2:3000".parse().unwrap()]);
}

#[test]
fn translation_is_deterministic() {
    let docs = [two_listeners(), route("r", "[{name: gw}]", "[{name: s, port: 1}]"), service("s", "default", 1, "3000", &["198.18.2.3", "198.18.2.2"])];
    let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
    assert_eq!(translate_yaml(&refs), translate_yaml(&refs));
}

#[test]
fn a_route_reaching_one_listener_through_two_parent_refs_is_attached_once() {
    // Two parentRefs that differ only in spelling out the route's own namespace
    // are distinct to the CRD's CEL rules but name one Gateway: the listener
    // used to count the route twice. The second case is the manifests fuzz
    // target's crash, reduced.
    let cases = [
        (listener("foo", 8088), "[{name: gw}, {name: gw, namespace: default}]"),
        (listener("foo", 8088) + &listener("bar", 8089), "[{name: gw, namespace: default}, {name: gw, sectionName: bar}]"),
    ];
    for (listeners, parent_refs) in cases {
        let t = translate_yaml(&[&gateway("gw", &listeners), &route("r", parent_refs, "[{name: s, port: 1}]"), &service("s", "default", 1, "3000", &["198.18.2.2"])]);
        let gw = &t.status.gateways[&ObjectKey::new("default", "gw")];
        assert!(gw.listeners.iter().all(|l| l.attached_routes == 1), "{parent_refs}: {:?}", gw.listeners);
        assert_eq!(route_conditions(&t, "r").len(), 2, "each parentRef still has its own status");
        assert_eq!(routed_to(&t, 8088).as_deref(), Some("r"));
    }
}
