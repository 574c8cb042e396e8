//! The Gateway API TCPRoute conformance cases, end to end: real agent, network
//! namespaces, backends that say who they are, status read with `gateway-agent status`.
use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::time::Duration;

use sockgate_tests::harness::{serve, GatewayNode};
use sockgate_tests::manifests::{documents, route_with, service, service_in};
use sockgate_tests::status::{conditions, find, status_of};

const CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata:\n  name: sockgate\nspec:\n  controllerName: sockgate.io/gateway-controller\n";

/// A Gateway `gw` with listeners given as YAML flow mappings.
fn gateway(listeners: &[&str]) -> String {
    let mut y = format!("{CLASS}---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw\nspec:\n  gatewayClassName: sockgate\n  listeners:\n");
    for l in listeners {
        y.push_str(&format!("  - {l}\n"));
    }
    y
}

/// Backends that answer every connection with their name and close:
/// "one" and "zero" on backend1 (ports 7000, 7002), "two" on backend2 (7000).
fn start(files: &[(&str, String)]) -> GatewayNode {
    let node = GatewayNode::start(files, &["--dataplane", "userspace"]).unwrap();
    for (host, port, name) in [(&node.hosts.backend1, 7000, "one"), (&node.hosts.backend2, 7000, "two"), (&node.hosts.backend1, 7002, "zero")] {
        let _ = serve(host, port, move |mut s: TcpStream| {
            use std::io::Write;
            let _ = s.write_all(name.as_bytes());
        })
        .unwrap();
    }
    node
}

fn services() -> String {
    documents(&[service("one", 80, 7000, &["198.18.2.2"]), service("two", 80, 7000, &["198.18.3.2"]), service("zero", 80, 7002, &["198.18.2.2"])])
}

/// Who answered on `port`: the backend's name, or how the connection failed.
fn who(node: &GatewayNode, port: u16) -> Result<String, ErrorKind> {
    let mut s = node.connect(port).map_err(|e| e.downcast::<std::io::Error>().map(|e| e.kind()).unwrap_or(ErrorKind::Other))?;
    let mut name = String::new();
    s.read_to_string(&mut name).map_err(|e| e.kind())?;
    if name.is_empty() {
        return Err(ErrorKind::UnexpectedEof);
    }
    Ok(name)
}

fn route_status(node: &GatewayNode, name: &str) -> Vec<Vec<String>> {
    let docs = status_of(node.manifests.path()).unwrap();
    let parents = find(&docs, "TCPRoute", name)["status"]["parents"].as_array().cloned().unwrap_or_default();
    parents.iter().map(|p| conditions(&p["conditions"])).collect()
}

fn attached_routes(node: &GatewayNode) -> Vec<(String, u64)> {
    let docs = status_of(node.manifests.path()).unwrap();
    find(&docs, "Gateway", "gw")["status"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["name"].as_str().unwrap().to_string(), l["attachedRoutes"].as_u64().unwrap()))
        .collect()
}

const ACCEPTED_RESOLVED: [&str; 2] = ["Accepted=True/Accepted", "ResolvedRefs=True/ResolvedRefs"];

#[test]
fn a_route_attaches_by_port() {
    let node = start(&[
        ("gw.yaml", gateway(&["{name: a, port: 9000, protocol: TCP}", "{name: b, port: 9001, protocol: TCP}"])),
        ("routes.yaml", route_with("by-port", "", "[{name: gw, port: 9001}]", "[{name: one, port: 80}]")),
        ("svc.yaml", services()),
    ]);
    node.wait_for_port(9001).unwrap();
    assert_eq!(who(&node, 9001).as_deref(), Ok("one"));
    assert_eq!(who(&node, 9000), Err(ErrorKind::ConnectionReset), "listener a has no route: reset");
    assert_eq!(route_status(&node, "by-port"), [ACCEPTED_RESOLVED]);
    assert_eq!(attached_routes(&node), [("a".into(), 0), ("b".into(), 1)]);
}

#[test]
fn a_route_attaches_by_section_name() {
    let node = start(&[
        ("gw.yaml", gateway(&["{name: a, port: 9000, protocol: TCP}", "{name: b, port: 9001, protocol: TCP}"])),
        ("routes.yaml", documents(&[route_with("to-a", "", "[{name: gw, sectionName: a}]", "[{name: one, port: 80}]"), route_with("to-b", "", "[{name: gw, sectionName: b}]", "[{name: two, port: 80}]")])),
        ("svc.yaml", services()),
    ]);
    node.wait_for_port(9001).unwrap();
    for _ in 0..10 {
        assert_eq!(who(&node, 9000).as_deref(), Ok("one"));
        assert_eq!(who(&node, 9001).as_deref(), Ok("two"));
    }
    assert_eq!(attached_routes(&node), [("a".into(), 1), ("b".into(), 1)]);
}

#[test]
fn a_route_with_section_name_and_port_attaches_only_where_both_match() {
    let node = start(&[
        ("gw.yaml", gateway(&["{name: a, port: 9000, protocol: TCP}", "{name: b, port: 9001, protocol: TCP}"])),
        (
            "routes.yaml",
            documents(&[
                route_with("both-match", "", "[{name: gw, sectionName: b, port: 9001}]", "[{name: two, port: 80}]"),
                route_with("mismatch", "", "[{name: gw, sectionName: a, port: 9001}]", "[{name: one, port: 80}]"),
            ]),
        ),
        ("svc.yaml", services()),
    ]);
    node.wait_for_port(9001).unwrap();
    assert_eq!(who(&node, 9001).as_deref(), Ok("two"));
    assert_eq!(who(&node, 9000), Err(ErrorKind::ConnectionReset));
    assert_eq!(route_status(&node, "both-match"), [ACCEPTED_RESOLVED]);
    assert_eq!(route_status(&node, "mismatch"), [["Accepted=False/NoMatchingParent", "ResolvedRefs=True/ResolvedRefs"]]);
}

#[test]
fn a_route_without_section_name_or_port_attaches_to_every_listener() {
    let node = start(&[
        ("gw.yaml", gateway(&["{name: a, port: 9000, protocol: TCP}", "{name: b, port: 9001, protocol: TCP}"])),
        ("routes.yaml", route_with("everywhere", "", "[{name: gw}]", "[{name: one, port: 80}]")),
        ("svc.yaml", services()),
    ]);
    node.wait_for_port(9001).unwrap();
    assert_eq!(who(&node, 9000).as_deref(), Ok("one"));
    assert_eq!(who(&node, 9001).as_deref(), Ok("one"));
    assert_eq!(attached_routes(&node), [("a".into(), 1), ("b".into(), 1)]);
}

#[test]
fn a_route_to_a_non_tcp_listener_is_not_allowed_and_not_counted() {
    let node = start(&[
        ("gw.yaml", gateway(&["{name: web, port: 9080, protocol: HTTP}", "{name: tcp, port: 9000, protocol: TCP}"])),
        ("routes.yaml", route_with("to-web", "", "[{name: gw, sectionName: web}]", "[{name: one, port: 80}]")),
        ("svc.yaml", services()),
    ]);
    node.wait_for_port(9000).unwrap();
    assert_eq!(route_status(&node, "to-web"), [["Accepted=False/NotAllowedByListeners", "ResolvedRefs=True/ResolvedRefs"]]);
    assert_eq!(attached_routes(&node), [("web".into(), 0), ("tcp".into(), 0)]);
    assert_eq!(who(&node, 9080), Err(ErrorKind::ConnectionRefused), "an HTTP listener is not served");
    let docs = status_of(node.manifests.path()).unwrap();
    let web = &find(&docs, "Gateway", "gw")["status"]["listeners"][0];
    assert!(conditions(&web["conditions"]).contains(&"Accepted=False/UnsupportedProtocol".to_string()));
}

/// GEP-2644: TCP and HTTPS on one port of a Gateway are not distinct; both are
/// conflicted and the port is not served, while the Gateway's other listener is.
#[test]
fn a_tcp_listener_on_the_port_of_an_https_listener_is_conflicted_and_its_port_refuses_connections() {
    let node = start(&[
        ("gw.yaml", gateway(&["{name: tcp-listener, port: 9443, protocol: TCP}", "{name: https-listener, port: 9443, protocol: HTTPS, hostname: app.example.com, tls: {mode: Terminate, certificateRefs: [{name: app-cert}]}}", "{name: tcp, port: 9000, protocol: TCP}"])),
        ("routes.yaml", route_with("to-tcp", "", "[{name: gw, sectionName: tcp-listener}]", "[{name: one, port: 80}]") + "---\n" + &route_with("other", "", "[{name: gw, sectionName: tcp}]", "[{name: one, port: 80}]")),
        ("svc.yaml", services()),
    ]);
    node.wait_for_port(9000).unwrap();
    assert_eq!(who(&node, 9000).as_deref(), Ok("one"), "the Gateway's distinct listener serves");
    assert_eq!(who(&node, 9443), Err(ErrorKind::ConnectionRefused), "neither conflicted listener is served");
    let docs = status_of(node.manifests.path()).unwrap();
    let gw = find(&docs, "Gateway", "gw");
    for listener in 0..2 {
        let l = &gw["status"]["listeners"][listener];
        assert!(conditions(&l["conditions"]).contains(&"Conflicted=True/ProtocolConflict".to_string()), "{l}");
    }
    assert!(conditions(&gw["status"]["conditions"]).contains(&"Accepted=True/ListenersNotValid".to_string()), "{gw}");
}

#[test]
fn a_nonexistent_backend_is_backend_not_found_and_its_connections_are_reset() {
    let node = start(&[
        ("gw.yaml", gateway(&["{name: a, port: 9000, protocol: TCP}"])),
        ("routes.yaml", route_with("ghostly", "", "[{name: gw}]", "[{name: ghost, port: 80}]")),
        ("svc.yaml", services()),
    ]);
    node.wait_for_port(9000).unwrap();
    assert_eq!(route_status(&node, "ghostly"), [["Accepted=True/Accepted", "ResolvedRefs=False/BackendNotFound"]]);
    for _ in 0..5 {
        assert_eq!(who(&node, 9000), Err(ErrorKind::ConnectionReset));
    }
}

#[test]
fn a_cross_namespace_backend_needs_a_reference_grant_and_deleting_it_flips_back() {
    let grant = "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: let-default-in, namespace: backends}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: TCPRoute, namespace: default}]\n  to: [{group: \"\", kind: Service}]\n";
    let mut node = start(&[
        ("gw.yaml", gateway(&["{name: a, port: 9000, protocol: TCP}"])),
        ("routes.yaml", route_with("across", "", "[{name: gw}]", "[{name: two, namespace: backends, port: 80}]")),
        ("svc.yaml", service_in("backends", "two", 80, 7000, &["198.18.3.2"])),
    ]);
    node.wait_for_port(9000).unwrap();
    assert_eq!(route_status(&node, "across"), [["Accepted=True/Accepted", "ResolvedRefs=False/RefNotPermitted"]]);
    assert_eq!(who(&node, 9000), Err(ErrorKind::ConnectionReset));

    let applied = node.log_count("configuration applied");
    node.write("grant.yaml", grant).unwrap();
    wait_until(|| node.log_count("configuration applied") > applied);
    assert_eq!(route_status(&node, "across"), [ACCEPTED_RESOLVED]);
    assert_eq!(who(&node, 9000).as_deref(), Ok("two"));

    let applied = node.log_count("configuration applied");
    node.remove("grant.yaml").unwrap();
    wait_until(|| node.log_count("configuration applied") > applied);
    assert_eq!(route_status(&node, "across"), [["Accepted=True/Accepted", "ResolvedRefs=False/RefNotPermitted"]]);
    assert_eq!(who(&node, 9000), Err(ErrorKind::ConnectionReset));
    node.wait_for_log("RefNotPermitted").unwrap();
}

#[test]
fn weights_70_30_0_split_500_connections_within_5_points() {
    let node = start(&[
        ("gw.yaml", gateway(&["{name: a, port: 9000, protocol: TCP}"])),
        ("routes.yaml", route_with("split", "", "[{name: gw}]", "[{name: one, port: 80, weight: 70}, {name: two, port: 80, weight: 30}, {name: zero, port: 80, weight: 0}]")),
        ("svc.yaml", services()),
    ]);
    node.wait_for_port(9000).unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..500 {
        *counts.entry(who(&node, 9000).expect("every connection is served")).or_insert(0u32) += 1;
    }
    let share = |name: &str| f64::from(*counts.get(name).unwrap_or(&0)) / 5.0;
    assert!((share("one") - 70.0).abs() <= 5.0, "{counts:?}");
    assert!((share("two") - 30.0).abs() <= 5.0, "{counts:?}");
    assert_eq!(counts.get("zero"), None, "weight 0 gets no connection: {counts:?}");
}

#[test]
fn two_routes_on_one_listener_are_both_accepted_and_the_older_gets_every_connection() {
    // The younger route's name sorts first: age, not name, decides.
    let older = route_with("zz-older", ", creationTimestamp: \"2026-01-01T00:00:00Z\"", "[{name: gw}]", "[{name: two, port: 80}]");
    let younger = route_with("aa-younger", ", creationTimestamp: \"2026-01-02T00:00:00Z\"", "[{name: gw}]", "[{name: one, port: 80}]");
    let node = start(&[("gw.yaml", gateway(&["{name: a, port: 9000, protocol: TCP}"])), ("routes.yaml", documents(&[younger, older])), ("svc.yaml", services())]);
    node.wait_for_port(9000).unwrap();
    for i in 0..100 {
        assert_eq!(who(&node, 9000).as_deref(), Ok("two"), "connection {i}");
    }
    assert_eq!(route_status(&node, "zz-older"), [ACCEPTED_RESOLVED]);
    assert_eq!(route_status(&node, "aa-younger"), [ACCEPTED_RESOLVED]);
    assert_eq!(attached_routes(&node), [("a".into(), 2)]);
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
