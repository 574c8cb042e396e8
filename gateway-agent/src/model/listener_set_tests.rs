//! ListenerSet, rule by rule: allowedListeners, the merged list's precedence
//! and conflicts, routes attaching by `parentRefs` kind ListenerSet, statuses,
//! and XListenerSet. The Gateway API v1.6.1 `listenerset-*` conformance cases
//! that apply to L4 are here as tables with TCP listeners in place of HTTP ones.
use std::path::Path;

use super::status::Condition;
use super::*;
use crate::sources::manifests::load_text;

const INFRA: &str = "gateway-conformance-infra";
const CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: sg}\nspec: {controllerName: sockgate.io/gateway-controller}\n";

fn translate_yaml(docs: &[&str]) -> Translation {
    let mut all = vec![CLASS];
    all.extend_from_slice(docs);
    let snapshot = load_text(Path::new("t.yaml"), &all.join("---\n")).unwrap_or_else(|e| panic!("{e}")).snapshot;
    translate(&snapshot, &Settings::default())
}

/// A Gateway in the conformance namespace, created at `second`; `allowed` is
/// its `allowedListeners.namespaces` (empty: the field is left out).
fn gateway(name: &str, second: u32, allowed: &str, listeners: &[&str]) -> String {
    let mut y = format!("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {INFRA}, creationTimestamp: \"2026-01-01T00:00:{second:02}Z\"}}\nspec:\n  gatewayClassName: sg\n");
    if !allowed.is_empty() {
        y.push_str(&format!("  allowedListeners: {{namespaces: {allowed}}}\n"));
    }
    y.push_str("  listeners:\n");
    for l in listeners {
        y.push_str(&format!("  - {l}\n"));
    }
    y
}

/// A ListenerSet `ns/name` created at `second`, child of Gateway `INFRA/parent`.
fn set(ns: &str, name: &str, second: u32, parent: &str, listeners: &[&str]) -> String {
    let mut y = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: ListenerSet\nmetadata: {{name: {name}, namespace: {ns}, creationTimestamp: \"2026-01-01T00:00:{second:02}Z\"}}\nspec:\n  parentRef: {{kind: Gateway, group: gateway.networking.k8s.io, name: {parent}, namespace: {INFRA}}}\n  listeners:\n"
    );
    for l in listeners {
        y.push_str(&format!("  - {l}\n"));
    }
    y
}

fn tcp(name: &str, port: u16) -> String {
    format!("{{name: {name}, port: {port}, protocol: TCP, allowedRoutes: {{namespaces: {{from: All}}}}}}")
}

fn namespace(name: &str, labels: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {{{labels}}}}}\n")
}

fn route(ns: &str, name: &str, parent_refs: &str) -> String {
    format!("apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  parentRefs: {parent_refs}\n  rules:\n  - backendRefs: [{{name: infra-backend-v1, namespace: {INFRA}, port: 8080}}]\n")
}

fn ls_ref(ns: &str, name: &str, section: &str) -> String {
    let section = if section.is_empty() { String::new() } else { format!(", sectionName: {section}") };
    format!("{{kind: ListenerSet, group: gateway.networking.k8s.io, name: {name}, namespace: {ns}{section}}}")
}

fn short(c: &Condition) -> String {
    format!("{}={}/{}", c.type_, if c.status { "True" } else { "False" }, c.reason)
}

fn shorts(c: &[Condition]) -> Vec<String> {
    c.iter().map(short).collect()
}

fn set_conditions(t: &Translation, ns: &str, name: &str) -> Vec<String> {
    shorts(&t.status.listener_sets[&ObjectKey::new(ns, name)].conditions)
}

fn set_listener(t: &Translation, ns: &str, name: &str, listener: &str) -> Vec<String> {
    let set = &t.status.listener_sets[&ObjectKey::new(ns, name)];
    shorts(&set.listeners.iter().find(|l| l.name == listener).unwrap_or_else(|| panic!("no listener {listener} in {set:?}")).conditions)
}

fn attached_sets(t: &Translation, name: &str) -> u32 {
    t.status.gateways[&ObjectKey::new(INFRA, name)].attached_listener_sets
}

fn route_accepted(t: &Translation, ns: &str, name: &str) -> Vec<String> {
    t.status.routes[&ObjectKey::new(ns, name)].iter().map(|p| short(&p.conditions[0])).collect()
}

const ACCEPTED_LISTENER: [&str; 4] = ["Accepted=True/Accepted", "Conflicted=False/NoConflicts", "ResolvedRefs=True/ResolvedRefs", "Programmed=True/Programmed"];
const LOST_PORT: [&str; 4] = ["Accepted=False/ProtocolConflict", "Conflicted=True/ProtocolConflict", "ResolvedRefs=True/ResolvedRefs", "Programmed=False/ProtocolConflict"];
const NOT_ALLOWED: [&str; 2] = ["Accepted=False/NotAllowed", "Programmed=False/NotAllowed"];
const SET_ACCEPTED: [&str; 2] = ["Accepted=True/Accepted", "Programmed=True/Programmed"];

/// ListenerSetDefaultNotAllowed and ListenerSetAllowedNamespaceNone.
#[test]
fn a_gateway_takes_no_listener_set_by_default_nor_with_from_none() {
    for allowed in ["", "{from: None}"] {
        let t = translate_yaml(&[&gateway("gw", 1, allowed, &[&tcp("gateway-listener", 8080)]), &set(INFRA, "ls", 2, "gw", &[&tcp("ls-listener", 8081)])]);
        assert_eq!(shorts(&t.status.gateways[&ObjectKey::new(INFRA, "gw")].conditions), ["Accepted=True/Accepted", "Programmed=True/Programmed"], "{allowed:?}");
        assert_eq!(attached_sets(&t, "gw"), 0);
        assert_eq!(set_conditions(&t, INFRA, "ls"), NOT_ALLOWED);
        assert!(t.status.listener_sets[&ObjectKey::new(INFRA, "ls")].listeners.is_empty(), "no listener status for a set that is not attached");
        assert_eq!(t.dataplane.listeners.keys().copied().collect::<Vec<_>>(), [8080], "the set's port is not opened");
    }
}

/// ListenerSetAllowedNamespaceSame, ListenerSetAllowedNamespaceSelector, and All.
#[test]
fn allowed_listeners_same_selector_and_all_decide_by_the_listener_sets_namespace() {
    let docs = |allowed: &str| {
        let gw = gateway("gw", 1, allowed, &[&tcp("gateway-listener", 8080)]);
        let same = set(INFRA, "in-same", 2, "gw", &[&tcp("same-listener", 8081)]);
        let selected = set("selected-ns", "in-selected", 3, "gw", &[&tcp("selected-listener", 8082)]);
        let other = set("other-ns", "in-other", 4, "gw", &[&tcp("other-listener", 8083)]);
        translate_yaml(&[&gw, &namespace("selected-ns", "allowed: ns"), &namespace("other-ns", ""), &same, &selected, &other])
    };
    let verdicts = |t: &Translation| [("in-same", INFRA), ("in-selected", "selected-ns"), ("in-other", "other-ns")].map(|(n, ns)| set_conditions(t, ns, n)[0].clone());
    let t = docs("{from: Same}");
    assert_eq!(verdicts(&t), ["Accepted=True/Accepted", "Accepted=False/NotAllowed", "Accepted=False/NotAllowed"]);
    assert_eq!(attached_sets(&t, "gw"), 1);
    assert_eq!(set_listener(&t, INFRA, "in-same", "same-listener"), ACCEPTED_LISTENER);
    assert_eq!(t.dataplane.listeners.keys().copied().collect::<Vec<_>>(), [8080, 8081]);
    let t = docs("{from: Selector, selector: {matchLabels: {allowed: ns}}}");
    assert_eq!(verdicts(&t), ["Accepted=False/NotAllowed", "Accepted=True/Accepted", "Accepted=False/NotAllowed"]);
    assert_eq!(set_conditions(&t, "selected-ns", "in-selected"), SET_ACCEPTED);
    assert_eq!(t.dataplane.listeners.keys().copied().collect::<Vec<_>>(), [8080, 8082]);
    let t = docs("{from: All}");
    assert_eq!(verdicts(&t), ["Accepted=True/Accepted"; 3]);
    assert_eq!(attached_sets(&t, "gw"), 3);
    let message = &docs("{from: Same}").status.listener_sets[&ObjectKey::new("other-ns", "in-other")].conditions[0].message;
    assert!(message.contains("only ListenerSets in namespace \"gateway-conformance-infra\""), "{message}");
}

/// ListenerSetProtocolConflict (and ListenerSetHostnameConflict, read for L4:
/// TCP has no hostnames, so one port is one listener): the Gateway's listener
/// keeps its port, then the older ListenerSet's; the loser alone is conflicted.
#[test]
fn on_a_contested_port_the_gateway_then_the_oldest_listener_set_wins_and_only_the_loser_is_conflicted() {
    let gw = gateway("gw", 1, "{from: Same}", &[&tcp("gateway-listener", 8080), &tcp("conflict-with-gateway-listener", 8081)]);
    let ls1 = set(INFRA, "conflict-with-gateway-1", 2, "gw", &[&tcp("listener-set-1-listener", 8082), &tcp("conflict-with-gateway-listener", 8081), &tcp("conflict-with-listener-set-listener", 8083)]);
    let ls2 = set(INFRA, "conflict-with-gateway-2", 3, "gw", &[&tcp("conflict-with-gateway-listener", 8081)]);
    let ls3 = set(INFRA, "conflict-with-listener-set-1", 4, "gw", &[&tcp("listener-set-2-listener", 8084), &tcp("conflict-with-listener-set-listener", 8083)]);
    let ls4 = set(INFRA, "conflict-with-listener-set-2", 5, "gw", &[&tcp("conflict-with-listener-set-listener", 8083)]);
    // File order is not precedence: creation time is.
    let t = translate_yaml(&[&ls4, &ls3, &ls2, &ls1, &gw]);
    let gateway = &t.status.gateways[&ObjectKey::new(INFRA, "gw")];
    assert_eq!(shorts(&gateway.conditions), ["Accepted=True/Accepted", "Programmed=True/Programmed"]);
    assert!(gateway.listeners.iter().all(|l| shorts(&l.conditions) == ACCEPTED_LISTENER));
    assert_eq!(attached_sets(&t, "gw"), 2, "the two sets with a valid listener");

    assert_eq!(set_conditions(&t, INFRA, "conflict-with-gateway-1"), ["Accepted=True/ListenersNotValid", "Programmed=True/Programmed"]);
    assert_eq!(set_listener(&t, INFRA, "conflict-with-gateway-1", "listener-set-1-listener"), ACCEPTED_LISTENER);
    assert_eq!(set_listener(&t, INFRA, "conflict-with-gateway-1", "conflict-with-gateway-listener"), LOST_PORT);
    assert_eq!(set_listener(&t, INFRA, "conflict-with-gateway-1", "conflict-with-listener-set-listener"), ACCEPTED_LISTENER);
    assert_eq!(set_conditions(&t, INFRA, "conflict-with-gateway-2"), ["Accepted=False/ListenersNotValid", "Programmed=False/ListenersNotValid"]);
    assert_eq!(set_listener(&t, INFRA, "conflict-with-gateway-2", "conflict-with-gateway-listener"), LOST_PORT);
    assert_eq!(set_conditions(&t, INFRA, "conflict-with-listener-set-1")[1], "Programmed=True/Programmed");
    assert_eq!(set_listener(&t, INFRA, "conflict-with-listener-set-1", "listener-set-2-listener"), ACCEPTED_LISTENER);
    assert_eq!(set_listener(&t, INFRA, "conflict-with-listener-set-1", "conflict-with-listener-set-listener"), LOST_PORT);
    assert_eq!(set_conditions(&t, INFRA, "conflict-with-listener-set-2"), ["Accepted=False/ListenersNotValid", "Programmed=False/ListenersNotValid"]);

    let conflict = &t.status.listener_sets[&ObjectKey::new(INFRA, "conflict-with-gateway-2")].listeners[0].conditions[1].message;
    assert_eq!(conflict, "TCP port 8081 is used by listener \"conflict-with-gateway-listener\" (TCP) of Gateway gateway-conformance-infra/gw, which takes precedence");
    // Each port is served by its winner.
    let owner = |port: u16| t.dataplane.listeners[&port].listener_set.as_ref().map(|k| k.name.clone());
    assert_eq!(owner(8081), None);
    assert_eq!(owner(8083).as_deref(), Some("conflict-with-gateway-1"));
    assert_eq!(owner(8084).as_deref(), Some("conflict-with-listener-set-1"));
}

#[test]
fn listener_sets_of_one_age_take_precedence_by_namespace_and_name() {
    let gw = gateway("gw", 1, "{from: All}", &[&tcp("g", 8080)]);
    let t = translate_yaml(&[&gw, &set("b-ns", "a", 2, "gw", &[&tcp("x", 9000)]), &set("a-ns", "z", 2, "gw", &[&tcp("x", 9000)])]);
    assert_eq!(set_conditions(&t, "a-ns", "z"), SET_ACCEPTED);
    assert_eq!(set_conditions(&t, "b-ns", "a")[0], "Accepted=False/ListenersNotValid");
}

#[test]
fn a_port_of_an_older_gateway_is_unavailable_to_a_newer_gateways_listener_set_and_the_other_way_round() {
    let older = gateway("older", 1, "{from: Same}", &[&tcp("a", 8080)]);
    let newer = gateway("newer", 2, "{from: Same}", &[&tcp("b", 8081), &tcp("c", 8082)]);
    let older_set = set(INFRA, "older-set", 3, "older", &[&tcp("x", 8082)]);
    let newer_set = set(INFRA, "newer-set", 4, "newer", &[&tcp("y", 8080), &tcp("z", 8083)]);
    let t = translate_yaml(&[&older, &newer, &older_set, &newer_set]);
    assert_eq!(set_listener(&t, INFRA, "newer-set", "y")[0], "Accepted=False/PortUnavailable");
    assert_eq!(set_listener(&t, INFRA, "newer-set", "z"), ACCEPTED_LISTENER);
    let c = &t.status.gateways[&ObjectKey::new(INFRA, "newer")].listeners[1];
    assert_eq!(short(&c.conditions[0]), "Accepted=False/PortUnavailable", "the older Gateway's ListenerSet holds 8082");
    assert_eq!(t.dataplane.listeners[&8082].listener_set, Some(ObjectKey::new(INFRA, "older-set")));
    assert_eq!(t.dataplane.listeners[&8082].gateway, ObjectKey::new(INFRA, "older"));
}

/// ListenerSetGatewayParentSectionNameNotFound, ListenerSetDualParentRefIndependence
/// and ListenerSetRouteStatusScopedToParentRef.
#[test]
fn routes_reach_a_listener_sets_listeners_through_it_only_and_each_parent_ref_is_judged_alone() {
    let gw = gateway("gw", 1, "{from: Same}", &[&tcp("gw-listener", 8080)]);
    let ls = set(INFRA, "ls", 2, "gw", &[&tcp("ls-only-listener", 8081)]);
    let via_set = route(INFRA, "route-via-listenerset", &format!("[{}]", ls_ref(INFRA, "ls", "ls-only-listener")));
    let via_gateway = route(INFRA, "route-via-gateway", &format!("[{{name: gw, namespace: {INFRA}, sectionName: ls-only-listener}}]"));
    let gateway_only = route(INFRA, "route-gateway-only", &format!("[{{name: gw, namespace: {INFRA}}}]"));
    let both = route(INFRA, "route-both", &format!("[{{name: gw, namespace: {INFRA}}}, {}]", ls_ref(INFRA, "ls", "")));
    let t = translate_yaml(&[&gw, &ls, &via_set, &via_gateway, &gateway_only, &both]);
    assert_eq!(route_accepted(&t, INFRA, "route-via-listenerset"), ["Accepted=True/Accepted"]);
    assert_eq!(route_accepted(&t, INFRA, "route-via-gateway"), ["Accepted=False/NoMatchingParent"]);
    let message = &t.status.routes[&ObjectKey::new(INFRA, "route-via-gateway")][0].conditions[0].message;
    assert!(message.ends_with("the Gateway's listeners are: gw-listener (port 8080)"), "{message}");
    assert_eq!(route_accepted(&t, INFRA, "route-both"), ["Accepted=True/Accepted", "Accepted=True/Accepted"]);
    // Status only for the parentRefs a route names.
    let parents = &t.status.routes[&ObjectKey::new(INFRA, "route-gateway-only")];
    assert_eq!(parents.len(), 1);
    assert_eq!(parents[0].parent_ref.kind, None);
    assert_eq!(t.status.routes[&ObjectKey::new(INFRA, "route-via-listenerset")][0].parent_ref.kind.as_deref(), Some("ListenerSet"));
    // A Gateway parentRef attaches to the Gateway's own listeners only.
    assert_eq!(t.status.gateways[&ObjectKey::new(INFRA, "gw")].listeners[0].attached_routes, 2);
    assert_eq!(t.status.listener_sets[&ObjectKey::new(INFRA, "ls")].listeners[0].attached_routes, 2);
    // The oldest route attached to each listener gets its traffic (same age: by name).
    assert_eq!(t.dataplane.listeners[&8081].route.as_ref().map(|r| r.name.as_str()), Some("route-both"));
    assert_eq!(t.dataplane.listeners[&8080].route.as_ref().map(|r| r.name.as_str()), Some("route-both"));
    assert_eq!(t.dataplane.listeners[&8081].backends[0].name, "gateway-conformance-infra/infra-backend-v1:8080");
}

/// ListenerSetAllowedRoutesNamespaces: a ListenerSet listener's
/// `allowedRoutes` `Same` means the ListenerSet's namespace, not the Gateway's.
#[test]
fn allowed_routes_of_a_listener_set_listener_are_relative_to_the_listener_sets_namespace() {
    let gw = gateway("gw", 1, "{from: All}", &[&tcp("gateway-listener", 8080)]);
    let same_ns = set(INFRA, "ls", 2, "gw", &[
        &tcp("allowed-routes-all", 8081),
        "{name: allowed-routes-same, port: 8082, protocol: TCP, allowedRoutes: {namespaces: {from: Same}}}",
        "{name: allowed-routes-selector, port: 8083, protocol: TCP, allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {allowed: ns}}}}}",
    ]);
    let cross = set("ls-cross-ns", "ls-cross", 3, "gw", &["{name: cross-ns-same, port: 8084, protocol: TCP, allowedRoutes: {namespaces: {from: Same}}}"]);
    let to = |ns: &str, set: &str| format!("[{}]", ls_ref(ns, set, ""));
    let t = translate_yaml(&[
        &gw,
        &same_ns,
        &cross,
        &namespace("routes-allowed-ns", "allowed: ns"),
        &namespace("routes-not-allowed-ns", ""),
        &namespace("ls-cross-ns", ""),
        &route(INFRA, "route-in-same-namespace", &to(INFRA, "ls")),
        &route("routes-allowed-ns", "route-in-selected-namespace", &to(INFRA, "ls")),
        &route("routes-not-allowed-ns", "route-not-in-selected-namespace", &to(INFRA, "ls")),
        &route("ls-cross-ns", "route-in-listenerset-namespace", &to("ls-cross-ns", "ls-cross")),
        &route(INFRA, "route-in-gateway-namespace", &to("ls-cross-ns", "ls-cross")),
    ]);
    assert_eq!(attached_sets(&t, "gw"), 2);
    let attached = |ns: &str, set: &str| t.status.listener_sets[&ObjectKey::new(ns, set)].listeners.iter().map(|l| l.attached_routes).collect::<Vec<_>>();
    assert_eq!(attached(INFRA, "ls"), [3, 1, 1]);
    assert_eq!(attached("ls-cross-ns", "ls-cross"), [1]);
    for (ns, name) in [(INFRA, "route-in-same-namespace"), ("routes-allowed-ns", "route-in-selected-namespace"), ("routes-not-allowed-ns", "route-not-in-selected-namespace"), ("ls-cross-ns", "route-in-listenerset-namespace")] {
        assert_eq!(route_accepted(&t, ns, name), ["Accepted=True/Accepted"], "{ns}/{name}");
    }
    assert_eq!(route_accepted(&t, INFRA, "route-in-gateway-namespace"), ["Accepted=False/NotAllowedByListeners"]);
    let route_of = |port: u16| t.dataplane.listeners[&port].route.as_ref().map(|r| r.to_string());
    assert_eq!(route_of(8082).as_deref(), Some("gateway-conformance-infra/route-in-same-namespace"));
    assert_eq!(route_of(8083).as_deref(), Some("routes-allowed-ns/route-in-selected-namespace"));
    assert_eq!(route_of(8084).as_deref(), Some("ls-cross-ns/route-in-listenerset-namespace"));
}

/// ListenerSetAllowedRoutesSupportedKinds, read for L4.
#[test]
fn a_listener_set_listener_allowing_only_other_kinds_says_invalid_route_kinds() {
    let gw = gateway("gw", 1, "{from: All}", &[&tcp("gateway-listener", 8080)]);
    let ls = set(INFRA, "ls", 2, "gw", &["{name: udp-only, port: 8081, protocol: TCP, allowedRoutes: {namespaces: {from: All}, kinds: [{kind: UDPRoute}]}}", &tcp("ok", 8082)]);
    let t = translate_yaml(&[&gw, &ls, &route(INFRA, "r", &format!("[{}]", ls_ref(INFRA, "ls", "udp-only")))]);
    assert_eq!(set_listener(&t, INFRA, "ls", "udp-only")[2], "ResolvedRefs=False/InvalidRouteKinds");
    assert!(t.status.listener_sets[&ObjectKey::new(INFRA, "ls")].listeners[0].supported_kinds.is_empty());
    assert_eq!(route_accepted(&t, INFRA, "r"), ["Accepted=False/NotAllowedByListeners"]);
    assert_eq!(set_conditions(&t, INFRA, "ls"), ["Accepted=True/ListenersNotValid", "Programmed=True/Programmed"]);
}

#[test]
fn a_route_to_a_listener_set_its_gateway_does_not_take_is_not_allowed_and_says_why() {
    let gw = gateway("gw", 1, "", &[&tcp("g", 8080)]);
    let t = translate_yaml(&[&gw, &set(INFRA, "ls", 2, "gw", &[&tcp("x", 8081)]), &route(INFRA, "r", &format!("[{}]", ls_ref(INFRA, "ls", "x")))]);
    let accepted = &t.status.routes[&ObjectKey::new(INFRA, "r")][0].conditions[0];
    assert_eq!(short(accepted), "Accepted=False/NotAllowedByListeners");
    assert!(accepted.message.starts_with("the ListenerSet is not attached to its Gateway: the Gateway does not allow ListenerSets"), "{}", accepted.message);
    assert!(!t.dataplane.listeners.contains_key(&8081));
}

#[test]
fn listener_sets_and_routes_of_other_gateways_get_no_status_and_udp_listeners_are_served_too() {
    let other = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: eg}\nspec: {controllerName: example.com/other}\n";
    let theirs = gateway("theirs", 1, "{from: All}", &[&tcp("g", 8080)]).replace("gatewayClassName: sg", "gatewayClassName: eg");
    let ours = gateway("ours", 2, "{from: All}", &[&tcp("g", 8090)]);
    let udp = "{name: dns, port: 5353, protocol: UDP, allowedRoutes: {namespaces: {from: All}}}";
    let udp_route = format!("apiVersion: gateway.networking.k8s.io/v1\nkind: UDPRoute\nmetadata: {{name: dns, namespace: {INFRA}}}\nspec:\n  parentRefs: [{}]\n  rules: [{{backendRefs: [{{name: dns, port: 53}}]}}]\n", ls_ref(INFRA, "our-set", "dns"));
    let t = translate_yaml(&[other, &theirs, &ours, &set(INFRA, "their-set", 3, "theirs", &[&tcp("x", 8081)]), &set(INFRA, "our-set", 4, "ours", &[udp]), &route(INFRA, "r", &format!("[{}]", ls_ref(INFRA, "their-set", "")))], );
    assert!(!t.status.listener_sets.contains_key(&ObjectKey::new(INFRA, "their-set")));
    assert!(!t.status.routes.contains_key(&ObjectKey::new(INFRA, "r")));
    assert!(t.dataplane.udp_listeners.contains_key(&5353));
    let t = translate_yaml(&[&ours, &set(INFRA, "our-set", 4, "ours", &[udp]), &udp_route]);
    assert_eq!(t.status.udp_routes[&ObjectKey::new(INFRA, "dns")][0].conditions[0].reason, "Accepted");
    assert_eq!(t.dataplane.udp_listeners[&5353].route, Some(ObjectKey::new(INFRA, "dns")));
    assert_eq!(t.dataplane.udp_listeners[&5353].place(), "gateway-conformance-infra/ours (ListenerSet gateway-conformance-infra/our-set)/dns");
}

#[test]
fn a_gateway_whose_own_listeners_are_all_invalid_is_accepted_while_a_listener_set_of_it_serves() {
    let gw = gateway("gw", 1, "{from: Same}", &["{name: web, port: 80, protocol: HTTP}"]);
    let t = translate_yaml(&[&gw]);
    assert_eq!(shorts(&t.status.gateways[&ObjectKey::new(INFRA, "gw")].conditions), ["Accepted=False/ListenersNotValid", "Programmed=False/Invalid"]);
    let t = translate_yaml(&[&gw, &set(INFRA, "ls", 2, "gw", &[&tcp("x", 8081)])]);
    assert_eq!(shorts(&t.status.gateways[&ObjectKey::new(INFRA, "gw")].conditions), ["Accepted=True/ListenersNotValid", "Programmed=True/Programmed"]);
    assert_eq!(set_conditions(&t, INFRA, "ls"), SET_ACCEPTED);
}

#[test]
fn an_xlistenerset_is_read_and_reached_by_its_own_group_and_kind() {
    let gw = gateway("gw", 1, "{from: Same}", &[&tcp("g", 8080)]);
    let x = set(INFRA, "xls", 2, "gw", &[&tcp("x", 8081)]).replace("apiVersion: gateway.networking.k8s.io/v1\nkind: ListenerSet", "apiVersion: gateway.networking.x-k8s.io/v1alpha1\nkind: XListenerSet");
    let by_x = route(INFRA, "by-x", "[{group: gateway.networking.x-k8s.io, kind: XListenerSet, name: xls, sectionName: x}]");
    let by_v1 = route(INFRA, "by-v1", &format!("[{}]", ls_ref(INFRA, "xls", "x")));
    let t = translate_yaml(&[&gw, &x, &by_x, &by_v1]);
    assert_eq!(set_conditions(&t, INFRA, "xls"), SET_ACCEPTED);
    assert_eq!(route_accepted(&t, INFRA, "by-x"), ["Accepted=True/Accepted"]);
    assert!(!t.status.routes.contains_key(&ObjectKey::new(INFRA, "by-v1")), "a ListenerSet parentRef does not name an XListenerSet");
    assert_eq!(t.dataplane.listeners[&8081].route, Some(ObjectKey::new(INFRA, "by-x")));
}

#[test]
fn a_listener_policy_on_a_gateway_listener_does_not_reach_a_listener_set_listener_of_the_same_name() {
    let gw = gateway("gw", 1, "{from: Same}", &[&tcp("web", 8080)]);
    let ls = set(INFRA, "ls", 2, "gw", &[&tcp("web", 8081)]);
    let policy = format!("apiVersion: sockgate.io/v1alpha1\nkind: ListenerPolicy\nmetadata: {{name: p, namespace: {INFRA}}}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: web}}]\n  maxConnections: 7\n");
    let t = translate_yaml(&[&gw, &ls, &policy]);
    assert_eq!(t.dataplane.listeners[&8080].policy.max_connections, Some(7));
    assert_eq!(t.dataplane.listeners[&8081].policy.max_connections, None);
}

#[test]
fn listener_set_conditions_carry_its_generation() {
    let gw = gateway("gw", 1, "{from: Same}", &[&tcp("g", 8080)]);
    let ls = set(INFRA, "ls", 2, "gw", &[&tcp("x", 8081)]).replace("metadata: {name: ls,", "metadata: {generation: 4, name: ls,");
    let t = translate_yaml(&[&gw, &ls]);
    let status = &t.status.listener_sets[&ObjectKey::new(INFRA, "ls")];
    assert!(status.conditions.iter().chain(&status.listeners[0].conditions).all(|c| c.observed_generation == 4));
}

/// ListenerSetProtocolConflict as v1.6.1 writes it: the Gateway's listener on
/// port 80 is HTTP (which sockgate does not serve), the ListenerSets' are TCP.
/// HTTP and TCP share TCP's port space, so the Gateway's listener still takes
/// precedence and every ListenerSet TCP listener on 80 loses.
#[test]
fn a_gateways_http_listener_takes_port_80_from_a_listener_sets_tcp_listener_as_the_protocol_conflict_case_says() {
    let http = "{name: gateway-listener, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}";
    let http_conflict = "{name: protocol-conflict-with-gateway-listener, port: 80, protocol: HTTP, hostname: protocol-conflict-with-gateway-listener.com}";
    let gw = gateway("gw", 1, "{from: Same}", &[http, http_conflict, &tcp("tcp-listener", 8080)]);
    let ls1 = set(INFRA, "listenerset-with-protocol-conflict-with-gateway-1", 2, "gw", &[&tcp("listener-set-1-listener", 8082), &tcp("protocol-conflict-with-gateway-listener", 80)]);
    let ls2 = set(INFRA, "listenerset-with-protocol-conflict-with-gateway-2", 3, "gw", &[&tcp("protocol-conflict-with-gateway-listener", 80)]);
    let t = translate_yaml(&[&gw, &ls1, &ls2]);
    assert_eq!(set_listener(&t, INFRA, "listenerset-with-protocol-conflict-with-gateway-1", "protocol-conflict-with-gateway-listener"), LOST_PORT);
    assert_eq!(set_listener(&t, INFRA, "listenerset-with-protocol-conflict-with-gateway-1", "listener-set-1-listener"), ACCEPTED_LISTENER);
    assert_eq!(set_conditions(&t, INFRA, "listenerset-with-protocol-conflict-with-gateway-1"), ["Accepted=True/ListenersNotValid", "Programmed=True/Programmed"]);
    assert_eq!(set_listener(&t, INFRA, "listenerset-with-protocol-conflict-with-gateway-2", "protocol-conflict-with-gateway-listener"), LOST_PORT);
    assert_eq!(set_conditions(&t, INFRA, "listenerset-with-protocol-conflict-with-gateway-2"), ["Accepted=False/ListenersNotValid", "Programmed=False/ListenersNotValid"]);
    let lost = &t.status.listener_sets[&ObjectKey::new(INFRA, "listenerset-with-protocol-conflict-with-gateway-2")].listeners[0].conditions[1].message;
    assert_eq!(lost, "TCP port 80 is used by listener \"gateway-listener\" (HTTP) of Gateway gateway-conformance-infra/gw, which takes precedence");
    let set_message = &t.status.listener_sets[&ObjectKey::new(INFRA, "listenerset-with-protocol-conflict-with-gateway-2")].conditions[0].message;
    assert_eq!(set_message, "no listener is valid: not valid: \"protocol-conflict-with-gateway-listener\" (ProtocolConflict)");
    assert!(!t.dataplane.listeners.contains_key(&80), "nothing serves port 80");
    assert_eq!(t.dataplane.listeners.keys().copied().collect::<Vec<_>>(), [8080, 8082]);
}
