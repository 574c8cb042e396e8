//! The Gateway API v1.6.1 ListenerSet conformance cases that apply to L4, end
//! to end in standalone mode: real agent, network namespaces, statuses read with
//! `gateway-agent status`, and traffic whose bytes are checked (each backend
//! says its name, then echoes what it got; the client compares SHA-256 digests).
//! The cases' HTTP listeners are TCP listeners here, one port each (TCP has
//! no hostnames to tell listeners on one port apart).
use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::time::Duration;

use sockgate_tests::harness::{serve, GatewayNode};
use sockgate_tests::integrity::{exchange, pattern, Received};
use sockgate_tests::manifests::{documents, route_with, service_in};
use sockgate_tests::status::{conditions, status_of};

const INFRA: &str = "gateway-conformance-infra";
const CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: sockgate}\nspec: {controllerName: sockgate.io/gateway-controller}\n";

/// A Gateway in the conformance namespace; `allowed` is its
/// `allowedListeners.namespaces` (empty: left out), listeners YAML flow mappings.
fn gateway(name: &str, allowed: &str, listeners: &[&str]) -> String {
    let mut y = format!("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {INFRA}, creationTimestamp: \"2026-01-01T00:00:00Z\"}}\nspec:\n  gatewayClassName: sockgate\n");
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

/// A TCP listener allowing routes from every namespace, as the cases' listeners do.
fn tcp(name: &str, port: u16) -> String {
    format!("{{name: {name}, port: {port}, protocol: TCP, allowedRoutes: {{namespaces: {{from: All}}}}}}")
}

fn namespace(name: &str, labels: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {{{labels}}}}}\n")
}

/// A TCPRoute `ns/name` to `parent_refs`, to Service `INFRA/backend:80`.
fn route(ns: &str, name: &str, parent_refs: &str, backend: &str) -> String {
    route_with(name, &format!(", namespace: {ns}"), parent_refs, &format!("[{{name: {backend}, namespace: {INFRA}, port: 80}}]"))
}

fn ls_ref(ns: &str, name: &str, section: &str) -> String {
    let section = if section.is_empty() { String::new() } else { format!(", sectionName: {section}") };
    format!("{{kind: ListenerSet, group: gateway.networking.k8s.io, name: {name}, namespace: {ns}{section}}}")
}

/// The conformance backends `infra-backend-v1..3` in the infra namespace
/// (backend1:7001, backend2:7001, backend1:7003); each says its name, then echoes.
fn start(files: &[(&str, String)]) -> GatewayNode {
    let mut files = files.to_vec();
    files.push(("class.yaml", CLASS.to_string()));
    files.push((
        "backends.yaml",
        documents(&[
            namespace(INFRA, ""),
            service_in(INFRA, "infra-backend-v1", 80, 7001, &["198.18.2.2"]),
            service_in(INFRA, "infra-backend-v2", 80, 7001, &["198.18.3.2"]),
            service_in(INFRA, "infra-backend-v3", 80, 7003, &["198.18.2.2"]),
        ]),
    ));
    let node = GatewayNode::start(&files, &["--dataplane", "userspace"]).unwrap();
    for (host, port, name) in [(&node.hosts.backend1, 7001, "infra-backend-v1"), (&node.hosts.backend2, 7001, "infra-backend-v2"), (&node.hosts.backend1, 7003, "infra-backend-v3")] {
        let _ = serve(host, port, move |mut s: TcpStream| {
            s.write_all(format!("{name}\n").as_bytes())?;
            std::io::copy(&mut s.try_clone()?, &mut s)?;
            s.shutdown(std::net::Shutdown::Write)
        })
        .unwrap();
    }
    node
}

/// Which backend served a connection to `port`, its echo checked byte for byte.
fn served_by(node: &GatewayNode, port: u16) -> Result<&'static str, ErrorKind> {
    let stream = node.connect(port).map_err(|e| e.downcast::<std::io::Error>().map(|e| e.kind()).unwrap_or(ErrorKind::Other))?;
    let data = pattern(u64::from(port), 256 * 1024);
    let got = exchange(stream, data.clone()).map_err(|e| e.kind())?;
    for name in ["infra-backend-v1", "infra-backend-v2", "infra-backend-v3"] {
        let mut expected = format!("{name}\n").into_bytes();
        expected.extend_from_slice(&data);
        if got == Received::of(&expected) {
            return Ok(name);
        }
    }
    panic!("port {port}: {} bytes from no backend, or altered", got.len);
}

/// The status of `kind` `ns/name`.
fn status(node: &GatewayNode, kind: &str, ns: &str, name: &str) -> serde_json::Value {
    let docs = status_of(node.manifests.path()).unwrap();
    docs.into_iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name && d["metadata"]["namespace"] == ns)
        .unwrap_or_else(|| panic!("no status for {kind} {ns}/{name}"))["status"]
        .clone()
}

fn set_conditions(node: &GatewayNode, ns: &str, name: &str) -> Vec<String> {
    conditions(&status(node, "ListenerSet", ns, name)["conditions"])
}

fn set_listener(node: &GatewayNode, ns: &str, name: &str, listener: &str) -> Vec<String> {
    let s = status(node, "ListenerSet", ns, name);
    let l = s["listeners"].as_array().unwrap().iter().find(|l| l["name"] == listener).unwrap_or_else(|| panic!("no listener {listener}: {s}")).clone();
    conditions(&l["conditions"])
}

fn attached_listener_sets(node: &GatewayNode, name: &str) -> u64 {
    status(node, "Gateway", INFRA, name)["attachedListenerSets"].as_u64().unwrap()
}

/// The route's Accepted condition per parent, with the parent's kind.
fn route_parents(node: &GatewayNode, ns: &str, name: &str) -> Vec<(String, String)> {
    let parents = status(node, "TCPRoute", ns, name)["parents"].as_array().cloned().unwrap_or_default();
    parents.iter().map(|p| (p["parentRef"]["kind"].as_str().unwrap().to_string(), conditions(&p["conditions"])[0].clone())).collect()
}

const ACCEPTED_LISTENER: [&str; 4] = ["Accepted=True/Accepted", "Conflicted=False/NoConflicts", "ResolvedRefs=True/ResolvedRefs", "Programmed=True/Programmed"];
const NOT_ALLOWED: [&str; 2] = ["Accepted=False/NotAllowed", "Programmed=False/NotAllowed"];
const LOST_PORT: [&str; 4] = ["Accepted=False/ProtocolConflict", "Conflicted=True/ProtocolConflict", "ResolvedRefs=True/ResolvedRefs", "Programmed=False/ProtocolConflict"];

/// ListenerSetDefaultNotAllowed and ListenerSetAllowedNamespaceNone.
#[test]
fn listener_sets_are_not_allowed_by_default_nor_with_from_none_and_their_ports_stay_closed() {
    let node = start(&[
        ("gw.yaml", documents(&[gateway("gateway-default", "", &[&tcp("gateway-listener", 9000)]), gateway("gateway-none", "{from: None}", &[&tcp("gateway-listener", 9001)])])),
        ("ls.yaml", documents(&[set(INFRA, "ls-default", 1, "gateway-default", &[&tcp("ls-listener", 9010)]), set(INFRA, "ls-none", 2, "gateway-none", &[&tcp("ls-listener", 9011)])])),
        ("routes.yaml", documents(&[route(INFRA, "r", &format!("[{}]", ls_ref(INFRA, "ls-default", "")), "infra-backend-v1"), route(INFRA, "g", &format!("[{{name: gateway-default, namespace: {INFRA}}}]"), "infra-backend-v2")])),
    ]);
    node.wait_for_port(9000).unwrap();
    for (gw, ls) in [("gateway-default", "ls-default"), ("gateway-none", "ls-none")] {
        assert_eq!(conditions(&status(&node, "Gateway", INFRA, gw)["conditions"])[0], "Accepted=True/Accepted");
        assert_eq!(attached_listener_sets(&node, gw), 0);
        assert_eq!(set_conditions(&node, INFRA, ls), NOT_ALLOWED);
    }
    assert_eq!(route_parents(&node, INFRA, "r"), [("ListenerSet".to_string(), "Accepted=False/NotAllowedByListeners".to_string())]);
    assert_eq!(served_by(&node, 9000), Ok("infra-backend-v2"), "the Gateway's own listener serves");
    assert_eq!(node.refusal(9010), ErrorKind::ConnectionRefused, "a set that is not allowed opens no port");
}

/// ListenerSetAllowedNamespaceSame and ListenerSetAllowedNamespaceSelector.
#[test]
fn allowed_listeners_same_and_selector_admit_by_namespace_and_admitted_sets_serve() {
    let node = start(&[
        ("gw.yaml", documents(&[
            gateway("gateway-same", "{from: Same}", &[&tcp("gateway-listener", 9000)]),
            gateway("gateway-selector", "{from: Selector, selector: {matchLabels: {allowed: ns}}}", &[&tcp("gateway-listener", 9001)]),
        ])),
        ("ns.yaml", documents(&[namespace("listenerset-not-allowed-ns", ""), namespace("selector-allowed-ns", "allowed: ns"), namespace("selector-not-allowed-ns", "")])),
        ("ls.yaml", documents(&[
            set(INFRA, "listenerset-in-same-namespace", 1, "gateway-same", &[&tcp("same-listener", 9010)]),
            set("listenerset-not-allowed-ns", "listenerset-in-different-namespace", 2, "gateway-same", &[&tcp("different-listener", 9011)]),
            set("selector-allowed-ns", "listenerset-in-selected-namespace", 3, "gateway-selector", &[&tcp("selected-listener", 9012)]),
            set("selector-not-allowed-ns", "listenerset-not-in-selected-namespace", 4, "gateway-selector", &[&tcp("not-selected-listener", 9013)]),
        ])),
        ("routes.yaml", documents(&[
            route(INFRA, "to-same", &format!("[{}]", ls_ref(INFRA, "listenerset-in-same-namespace", "same-listener")), "infra-backend-v1"),
            route("selector-allowed-ns", "to-selected", &format!("[{}]", ls_ref("selector-allowed-ns", "listenerset-in-selected-namespace", "")), "infra-backend-v3"),
        ])),
        ("grant.yaml", format!("apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: from-selected, namespace: {INFRA}}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: TCPRoute, namespace: selector-allowed-ns}}]\n  to: [{{group: \"\", kind: Service}}]\n")),
    ]);
    node.wait_for_port(9012).unwrap();
    assert_eq!(attached_listener_sets(&node, "gateway-same"), 1);
    assert_eq!(attached_listener_sets(&node, "gateway-selector"), 1);
    assert_eq!(set_conditions(&node, INFRA, "listenerset-in-same-namespace"), ["Accepted=True/Accepted", "Programmed=True/Programmed"]);
    assert_eq!(set_listener(&node, INFRA, "listenerset-in-same-namespace", "same-listener"), ACCEPTED_LISTENER);
    assert_eq!(set_conditions(&node, "listenerset-not-allowed-ns", "listenerset-in-different-namespace"), NOT_ALLOWED);
    assert_eq!(set_conditions(&node, "selector-allowed-ns", "listenerset-in-selected-namespace"), ["Accepted=True/Accepted", "Programmed=True/Programmed"]);
    assert_eq!(set_listener(&node, "selector-allowed-ns", "listenerset-in-selected-namespace", "selected-listener"), ACCEPTED_LISTENER);
    assert_eq!(set_conditions(&node, "selector-not-allowed-ns", "listenerset-not-in-selected-namespace"), NOT_ALLOWED);
    assert_eq!(served_by(&node, 9010), Ok("infra-backend-v1"));
    assert_eq!(served_by(&node, 9012), Ok("infra-backend-v3"));
    assert_eq!(node.refusal(9011), ErrorKind::ConnectionRefused);
    assert_eq!(node.refusal(9013), ErrorKind::ConnectionRefused);
    assert_eq!(node.refusal(9000), ErrorKind::ConnectionReset, "the Gateway's listener has no route: reset");
}

/// ListenerSetProtocolConflict (with ListenerSetHostnameConflict's precedence):
/// on a contested port the Gateway's listener wins, then the oldest set's.
#[test]
fn a_contested_port_is_served_for_the_gateway_then_the_oldest_listener_set_and_losers_say_so() {
    let gw = gateway("gw", "{from: Same}", &[&tcp("gateway-listener", 9000), &tcp("conflict-with-gateway-listener", 9001)]);
    let node = start(&[
        ("gw.yaml", gw),
        ("ls.yaml", documents(&[
            set(INFRA, "conflict-with-listener-set-2", 5, "gw", &[&tcp("conflict-with-listener-set-listener", 9003)]),
            set(INFRA, "conflict-with-gateway-1", 2, "gw", &[&tcp("listener-set-1-listener", 9002), &tcp("conflict-with-gateway-listener", 9001), &tcp("conflict-with-listener-set-listener", 9003)]),
            set(INFRA, "conflict-with-gateway-2", 3, "gw", &[&tcp("conflict-with-gateway-listener", 9001)]),
            set(INFRA, "conflict-with-listener-set-1", 4, "gw", &[&tcp("listener-set-2-listener", 9004), &tcp("conflict-with-listener-set-listener", 9003)]),
        ])),
        ("routes.yaml", documents(&[
            route(INFRA, "to-gateway", &format!("[{{name: gw, namespace: {INFRA}, sectionName: conflict-with-gateway-listener}}]"), "infra-backend-v1"),
            route(INFRA, "to-set-1", &format!("[{}]", ls_ref(INFRA, "conflict-with-gateway-1", "")), "infra-backend-v2"),
            route(INFRA, "to-set-2", &format!("[{}]", ls_ref(INFRA, "conflict-with-gateway-2", "")), "infra-backend-v3"),
            route(INFRA, "to-set-3", &format!("[{}]", ls_ref(INFRA, "conflict-with-listener-set-1", "")), "infra-backend-v3"),
        ])),
    ]);
    node.wait_for_port(9004).unwrap();
    let gateway = status(&node, "Gateway", INFRA, "gw");
    assert_eq!(conditions(&gateway["conditions"])[0], "Accepted=True/Accepted");
    for l in gateway["listeners"].as_array().unwrap() {
        assert_eq!(conditions(&l["conditions"]), ACCEPTED_LISTENER);
    }
    assert_eq!(attached_listener_sets(&node, "gw"), 2);
    assert_eq!(set_conditions(&node, INFRA, "conflict-with-gateway-1")[1], "Programmed=True/Programmed");
    assert_eq!(set_listener(&node, INFRA, "conflict-with-gateway-1", "listener-set-1-listener"), ACCEPTED_LISTENER);
    assert_eq!(set_listener(&node, INFRA, "conflict-with-gateway-1", "conflict-with-gateway-listener"), LOST_PORT);
    assert_eq!(set_listener(&node, INFRA, "conflict-with-gateway-1", "conflict-with-listener-set-listener"), ACCEPTED_LISTENER);
    assert_eq!(set_conditions(&node, INFRA, "conflict-with-gateway-2"), ["Accepted=False/ListenersNotValid", "Programmed=False/ListenersNotValid"]);
    assert_eq!(set_listener(&node, INFRA, "conflict-with-listener-set-1", "conflict-with-listener-set-listener"), LOST_PORT);
    assert_eq!(set_conditions(&node, INFRA, "conflict-with-listener-set-2"), ["Accepted=False/ListenersNotValid", "Programmed=False/ListenersNotValid"]);
    // The winners' routes get the traffic of the contested ports.
    assert_eq!(served_by(&node, 9001), Ok("infra-backend-v1"), "the Gateway keeps 9001");
    assert_eq!(served_by(&node, 9003), Ok("infra-backend-v2"), "the oldest set keeps 9003");
    assert_eq!(served_by(&node, 9002), Ok("infra-backend-v2"));
    assert_eq!(served_by(&node, 9004), Ok("infra-backend-v3"));
}

/// ListenerSetAllowedRoutesNamespaces (with its ReferenceGrant for the
/// cross-namespace backends): `Same` on a set's listener is the set's namespace.
#[test]
fn a_listener_set_listeners_allowed_routes_admit_by_the_sets_namespace() {
    let same = "{name: allowed-routes-same, port: 9011, protocol: TCP, allowedRoutes: {namespaces: {from: Same}}}";
    let selector = "{name: allowed-routes-selector, port: 9012, protocol: TCP, allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {allowed: ns}}}}}";
    let cross_same = "{name: cross-ns-same, port: 9013, protocol: TCP, allowedRoutes: {namespaces: {from: Same}}}";
    let to = |ns: &str, set: &str, section: &str| format!("[{}]", ls_ref(ns, set, section));
    let grant = format!(
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: listenerset-test-allowed-routes-namespaces-reference-grant, namespace: {INFRA}}}\nspec:\n  from:\n  - {{group: gateway.networking.k8s.io, kind: TCPRoute, namespace: gateway-api-routes-allowed-ns}}\n  - {{group: gateway.networking.k8s.io, kind: TCPRoute, namespace: gateway-api-ls-cross-ns}}\n  to: [{{group: \"\", kind: Service}}]\n"
    );
    let node = start(&[
        ("gw.yaml", gateway("gw", "{from: All}", &[&tcp("gateway-listener", 9000)])),
        ("ns.yaml", documents(&[namespace("gateway-api-routes-allowed-ns", "allowed: ns"), namespace("gateway-api-ls-cross-ns", "")])),
        ("ls.yaml", documents(&[set(INFRA, "ls", 1, "gw", &[&tcp("allowed-routes-all", 9010), same, selector]), set("gateway-api-ls-cross-ns", "ls-cross", 2, "gw", &[cross_same])])),
        ("routes.yaml", documents(&[
            route(INFRA, "route-in-same-namespace", &to(INFRA, "ls", "allowed-routes-same"), "infra-backend-v1"),
            route("gateway-api-routes-allowed-ns", "route-in-selected-namespace", &to(INFRA, "ls", "allowed-routes-selector"), "infra-backend-v2"),
            route("gateway-api-routes-allowed-ns", "route-to-same-from-elsewhere", &to(INFRA, "ls", "allowed-routes-same"), "infra-backend-v2"),
            route("gateway-api-ls-cross-ns", "route-in-listenerset-namespace", &to("gateway-api-ls-cross-ns", "ls-cross", ""), "infra-backend-v3"),
            route(INFRA, "route-in-gateway-namespace", &to("gateway-api-ls-cross-ns", "ls-cross", ""), "infra-backend-v1"),
        ])),
        ("grant.yaml", grant),
    ]);
    node.wait_for_port(9013).unwrap();
    assert_eq!(attached_listener_sets(&node, "gw"), 2);
    let ls = status(&node, "ListenerSet", INFRA, "ls");
    let attached: Vec<u64> = ls["listeners"].as_array().unwrap().iter().map(|l| l["attachedRoutes"].as_u64().unwrap()).collect();
    assert_eq!(attached, [0, 1, 1]);
    let accepted = ("ListenerSet".to_string(), "Accepted=True/Accepted".to_string());
    assert_eq!(route_parents(&node, "gateway-api-routes-allowed-ns", "route-in-selected-namespace"), [accepted.clone()]);
    assert_eq!(route_parents(&node, "gateway-api-ls-cross-ns", "route-in-listenerset-namespace"), [accepted]);
    let refused = ("ListenerSet".to_string(), "Accepted=False/NotAllowedByListeners".to_string());
    assert_eq!(route_parents(&node, "gateway-api-routes-allowed-ns", "route-to-same-from-elsewhere"), [refused.clone()]);
    assert_eq!(route_parents(&node, INFRA, "route-in-gateway-namespace"), [refused]);
    assert_eq!(served_by(&node, 9011), Ok("infra-backend-v1"));
    assert_eq!(served_by(&node, 9012), Ok("infra-backend-v2"));
    assert_eq!(served_by(&node, 9013), Ok("infra-backend-v3"));
    assert_eq!(node.refusal(9010), ErrorKind::ConnectionReset, "no route attached there");
}

/// ListenerSetGatewayParentSectionNameNotFound, ListenerSetDualParentRefIndependence
/// and ListenerSetRouteStatusScopedToParentRef.
#[test]
fn routes_reach_set_listeners_only_through_the_set_and_each_parent_ref_is_judged_on_its_own() {
    let node = start(&[
        ("gw.yaml", gateway("gw", "{from: Same}", &["{name: gw-listener, port: 9000, protocol: TCP}"])),
        ("ls.yaml", set(INFRA, "ls", 1, "gw", &["{name: ls-listener, port: 9010, protocol: TCP}"])),
        ("routes.yaml", documents(&[
            route(INFRA, "route-dual-parentref-one", &format!("[{{name: gw, namespace: {INFRA}, sectionName: ls-listener}}, {}]", ls_ref(INFRA, "ls", "ls-listener")), "infra-backend-v2"),
            route_with("route-gateway-only", &format!(", namespace: {INFRA}, creationTimestamp: \"2026-01-01T00:00:30Z\""), &format!("[{{name: gw, namespace: {INFRA}}}]"), &format!("[{{name: infra-backend-v1, namespace: {INFRA}, port: 80}}]")),
        ])),
    ]);
    node.wait_for_port(9010).unwrap();
    assert_eq!(
        route_parents(&node, INFRA, "route-dual-parentref-one"),
        [("Gateway".to_string(), "Accepted=False/NoMatchingParent".to_string()), ("ListenerSet".to_string(), "Accepted=True/Accepted".to_string())]
    );
    assert_eq!(route_parents(&node, INFRA, "route-gateway-only"), [("Gateway".to_string(), "Accepted=True/Accepted".to_string())]);
    let ls = status(&node, "ListenerSet", INFRA, "ls");
    assert_eq!(ls["listeners"][0]["attachedRoutes"], 1, "a Gateway parentRef does not reach the set's listeners");
    assert_eq!(served_by(&node, 9010), Ok("infra-backend-v2"));
    assert_eq!(served_by(&node, 9000), Ok("infra-backend-v1"));
}

/// ListenerSetAllowedRoutesSupportedKinds, read for L4; and a set changed on
/// disk: its listener goes, a fixed one comes, the Gateway's keeps serving.
#[test]
fn a_set_listener_with_unsupported_kinds_says_so_and_fixing_it_on_disk_opens_its_port() {
    let bad = "{name: udp-kinds-only, port: 9010, protocol: TCP, allowedRoutes: {namespaces: {from: All}, kinds: [{kind: UDPRoute}]}}";
    let mut node = start(&[
        ("gw.yaml", gateway("gw", "{from: All}", &[&tcp("gateway-listener", 9000)])),
        ("ls.yaml", set(INFRA, "ls", 1, "gw", &[bad])),
        ("routes.yaml", documents(&[
            route(INFRA, "r", &format!("[{}]", ls_ref(INFRA, "ls", "")), "infra-backend-v1"),
            route(INFRA, "g", &format!("[{{name: gw, namespace: {INFRA}}}]"), "infra-backend-v2"),
        ])),
    ]);
    node.wait_for_port(9000).unwrap();
    assert_eq!(set_listener(&node, INFRA, "ls", "udp-kinds-only")[2], "ResolvedRefs=False/InvalidRouteKinds");
    assert_eq!(set_conditions(&node, INFRA, "ls"), ["Accepted=False/ListenersNotValid", "Programmed=False/ListenersNotValid"]);
    assert_eq!(node.refusal(9010), ErrorKind::ConnectionRefused);
    let applied = node.log_count("configuration applied");
    node.write("ls.yaml", &set(INFRA, "ls", 1, "gw", &[&tcp("fixed", 9010)])).unwrap();
    wait_until(|| node.log_count("configuration applied") > applied);
    node.wait_for_port(9010).unwrap();
    assert_eq!(set_listener(&node, INFRA, "ls", "fixed"), ACCEPTED_LISTENER);
    assert_eq!(served_by(&node, 9010), Ok("infra-backend-v1"));
    assert_eq!(served_by(&node, 9000), Ok("infra-backend-v2"));
    node.wait_for_log("(ListenerSet gateway-conformance-infra/ls)/fixed").unwrap();
}

fn wait_until(mut done: impl FnMut() -> bool) {
    for _ in 0..400 {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out waiting");
}
