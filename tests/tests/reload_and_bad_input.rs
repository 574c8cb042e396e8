//! Reloads and bad input: established connections keep their route across
//! reloads, and a malformed file, a missing Service or a port in use each get a
//! clear report while everything else keeps serving.
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use sockgate_tests::harness::{serve, GatewayNode};
use sockgate_tests::integrity::{pattern, receive_to_eof, send_then_fin, Received};
use sockgate_tests::manifests::{documents, gateway, route, service};

const MIB: usize = 1024 * 1024;
const BACKEND_PORT: u16 = 7000;

/// A backend that echoes every byte back (checked by the client's digest).
fn echo_backend(node: &GatewayNode) {
    let _ = serve(&node.hosts.backend1, BACKEND_PORT, |mut s: TcpStream| {
        let mut reader = s.try_clone().unwrap();
        let _ = std::io::copy(&mut reader, &mut s);
        let _ = s.shutdown(std::net::Shutdown::Write);
    })
    .unwrap();
}

fn sink_service() -> String {
    service("sink", 7001, BACKEND_PORT, &["198.18.2.2"])
}

/// Sends `data` in two halves around `between`, and checks the echo is exact.
fn echo_across(stream: TcpStream, data: &[u8], between: impl FnOnce()) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = stream;
    let reading = std::thread::spawn(move || receive_to_eof(&mut reader));
    let half = data.len() / 2;
    writer.write_all(&data[..half]).unwrap();
    between();
    send_then_fin(&mut writer, &data[half..]).unwrap();
    let got = reading.join().unwrap().expect("the connection must survive");
    assert_eq!(got, Received::of(data), "echo corrupted across the reload");
}

fn wait_for_next_apply(node: &mut GatewayNode, before: usize) {
    for _ in 0..200 {
        if node.log_count("configuration applied") > before {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("no reload happened; agent log:\n{}", node.agent.logs());
}

#[test]
fn an_established_connection_survives_a_reload_that_keeps_its_route() {
    let mut node = GatewayNode::start(&[("gw.yaml", gateway(&[("a", 9000)])), ("rest.yaml", documents(&[route("ra", "a", "sink", 7001), sink_service()]))], &["--dataplane", "userspace"]).unwrap();
    echo_backend(&node);
    node.wait_for_port(9000).unwrap();
    let data = pattern(11, 8 * MIB);
    let stream = node.connect(9000).unwrap();
    echo_across(stream, &data, || {
        let before = node.log_count("configuration applied");
        // A new listener and route appear; listener a and its route stay.
        node.write("gw.yaml", &gateway(&[("a", 9000), ("b", 9001)])).unwrap();
        node.write("rest.yaml", &documents(&[route("ra", "a", "sink", 7001), route("rb", "b", "sink", 7001), sink_service()])).unwrap();
        wait_for_next_apply(&mut node, before);
    });
    node.wait_for_port(9001).unwrap();
    echo_across(node.connect(9001).unwrap(), &pattern(12, MIB), || {});
}

#[test]
fn removing_a_route_resets_its_connections_while_the_other_listener_keeps_flowing() {
    let mut node = GatewayNode::start(
        &[("gw.yaml", gateway(&[("a", 9000), ("b", 9001)])), ("rest.yaml", documents(&[route("ra", "a", "sink", 7001), route("rb", "b", "sink", 7001), sink_service()]))],
        &["--dataplane", "userspace"],
    )
    .unwrap();
    echo_backend(&node);
    node.wait_for_port(9001).unwrap();
    let mut doomed = node.connect(9001).unwrap();
    doomed.write_all(b"ping").unwrap();
    let mut pong = [0u8; 4];
    doomed.read_exact(&mut pong).unwrap();
    let data = pattern(13, 8 * MIB);
    echo_across(node.connect(9000).unwrap(), &data, || {
        let before = node.log_count("configuration applied");
        node.write("rest.yaml", &documents(&[route("ra", "a", "sink", 7001), sink_service()])).unwrap();
        wait_for_next_apply(&mut node, before);
        let mut buf = [0u8; 8];
        let err = doomed.read(&mut buf).expect_err("the connection of the removed route must be reset");
        assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    });
}

#[test]
fn a_malformed_manifest_is_reported_by_file_and_document_and_the_last_good_config_keeps_serving() {
    let mut node = GatewayNode::start(&[("gw.yaml", gateway(&[("a", 9000)])), ("rest.yaml", documents(&[route("ra", "a", "sink", 7001), sink_service()]))], &["--dataplane", "userspace"]).unwrap();
    echo_backend(&node);
    node.wait_for_port(9000).unwrap();
    let data = pattern(14, 4 * MIB);
    echo_across(node.connect(9000).unwrap(), &data, || {
        // Document 2 is not YAML; the listener it would remove must stay.
        node.write("broken.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: fine\n---\nkind: [unclosed\n").unwrap();
        node.write("gw.yaml", &gateway(&[("other", 9005)])).unwrap();
        node.wait_for_log("broken.yaml: document 2: invalid YAML").unwrap();
        node.wait_for_log("still serving the last good configuration").unwrap();
    });
    echo_across(node.connect(9000).unwrap(), &pattern(15, MIB), || {});
    // A document the API server's schema would reject is refused the same way.
    let before = node.log_count("still serving the last good configuration");
    node.write("broken.yaml", "apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata:\n  name: two-rules\nspec:\n  rules:\n  - backendRefs: [{name: sink, port: 7001}]\n  - backendRefs: [{name: sink, port: 7001}]\n").unwrap();
    node.wait_for_log("broken.yaml: document 1: TCPRoute default/two-rules: spec.rules: may have at most 1 item, has 2 (TCPRoute v1 has exactly one rule").unwrap();
    for _ in 0..200 {
        if node.log_count("still serving the last good configuration") > before {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    echo_across(node.connect(9000).unwrap(), &pattern(16, MIB), || {});
    // Fixed: the new configuration (listener "other" on 9005 only) applies.
    node.remove("broken.yaml").unwrap();
    node.wait_for_port(9005).unwrap();
}

/// The issue-19 mistake: `sectionNme` instead of `sectionName` once attached a
/// route to every listener, and (its name sorting first) took port 9000 from
/// the route meant for it. Now the directory is refused with the field named
/// and the field meant, nothing is served from it, and the fix serves both.
#[test]
fn a_misspelt_section_name_is_refused_by_name_and_never_moves_a_port_to_its_route() {
    let redis = |field: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata:\n  name: redis\nspec:\n  parentRefs:\n  - name: gw\n    {field}: redis\n  rules:\n  - backendRefs:\n    - name: redis\n      port: 6379\n---\n{}",
            service("redis", 6379, 7002, &["198.18.2.2"])
        )
    };
    let mut node = GatewayNode::start_refusing(
        &[("gw.yaml", gateway(&[("web", 9000), ("redis", 9001)])), ("web.yaml", documents(&[route("web", "web", "sink", 7001), sink_service()])), ("redis.yaml", redis("sectionNme"))],
        &["--dataplane", "userspace"],
        "manifests rejected",
    )
    .unwrap();
    echo_backend(&node);
    let _redis = serve(&node.hosts.backend1, 7002, |mut s: TcpStream| {
        let _ = s.write_all(b"+REDIS\r\n");
    })
    .unwrap();
    node.wait_for_log("redis.yaml: document 1: TCPRoute default/redis: unknown field \"spec.parentRefs[0].sectionNme\" (did you mean \"sectionName\"?)").unwrap();
    node.wait_for_log("manifests rejected (1 problem); no configuration has been applied yet, so nothing is served until it is fixed").unwrap();
    assert_eq!(node.refusal(9000), ErrorKind::ConnectionRefused, "nothing may serve port 9000 from a rejected directory");
    node.write("redis.yaml", &redis("sectionName")).unwrap();
    node.wait_for_port(9001).unwrap();
    echo_across(node.connect(9000).unwrap(), &pattern(20, MIB), || {});
    let mut answer = String::new();
    node.connect(9001).unwrap().read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "+REDIS\r\n");
}

/// Objects sockgate skips are said once, with why; an edit that changes
/// nothing is one line; a port that moves to another route is said as such.
#[test]
fn skipped_objects_are_logged_once_a_no_op_reload_is_one_line_and_a_port_changing_route_is_said() {
    let other = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: other\nspec:\n  gatewayClassName: sockgat\n  listeners:\n  - {name: x, port: 9100, protocol: TCP}\n".to_string();
    let lost = route("lost", "a", "sink", 7001).replace("  - name: gw\n", "  - name: gw-typo\n");
    let mut node = GatewayNode::start(
        &[("gw.yaml", documents(&[gateway(&[("a", 9000)]), other])), ("rest.yaml", documents(&[route("ra", "a", "sink", 7001), lost.clone(), sink_service()]))],
        &["--dataplane", "userspace"],
    )
    .unwrap();
    let missing_class = "Gateway default/other: its GatewayClass \"sockgat\" does not exist";
    let missing_gateway = "TCPRoute default/lost: parentRefs[0] names Gateway default/gw-typo, which does not exist";
    assert_eq!((node.log_count(missing_class), node.log_count(missing_gateway)), (1, 1), "{}", node.agent.logs());
    // A Namespace nobody selects: nothing sockgate does changes.
    node.write("ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: unrelated\n").unwrap();
    node.wait_for_log("configuration applied: nothing changed").unwrap();
    assert_eq!((node.log_count(missing_class), node.log_count(missing_gateway)), (1, 1), "said once, not on every reload");
    assert_eq!(node.log_count("status: Gateway default/gw:"), 1, "the status is not reprinted for a no-op reload");
    // Route ra goes, rb takes listener a: the port's new route is said.
    node.write("rest.yaml", &documents(&[route("rb", "a", "sink", 7001), lost, sink_service()])).unwrap();
    node.wait_for_log("TCP port 9000 changes route: was TCPRoute default/ra (listener default/gw/a), now TCPRoute default/rb (listener default/gw/a)").unwrap();
}

#[test]
fn a_route_to_a_missing_service_resets_its_connections_and_reports_backend_not_found() {
    let node = GatewayNode::start(
        &[("all.yaml", documents(&[gateway(&[("a", 9000), ("b", 9001)]), route("ra", "a", "sink", 7001), route("rb", "b", "ghost", 7001), sink_service()]))],
        &["--dataplane", "userspace"],
    )
    .unwrap();
    echo_backend(&node);
    node.wait_for_port(9001).unwrap();
    let logs = node.agent.logs();
    assert!(logs.contains("TCPRoute default/rb -> gw/b: Accepted=True/Accepted, ResolvedRefs=False/BackendNotFound (Service default/ghost not found)"), "{logs}");
    assert_eq!(node.refusal(9001), ErrorKind::ConnectionReset, "a connection to a route with no valid backend is reset");
    echo_across(node.connect(9000).unwrap(), &pattern(17, 4 * MIB), || {});
}

#[test]
fn a_port_already_in_use_is_reported_makes_the_node_not_ready_and_is_served_once_it_is_free_while_other_listeners_serve() {
    const HEALTH: &str = "127.0.0.1:19091";
    let mut node = GatewayNode::start(&[("gw.yaml", gateway(&[("a", 9000)]))], &["--dataplane", "userspace", "--health-address", HEALTH]).unwrap();
    assert!(node.health_get(HEALTH, "/readyz").unwrap().starts_with("HTTP/1.1 200"), "ready before the clash");
    // Something else on the node holds 9001 when listener b asks for it.
    let squatter = node.hosts.node.enter(|| TcpListener::bind("0.0.0.0:9001")).unwrap().unwrap();
    let all = documents(&[gateway(&[("a", 9000), ("b", 9001)]), route("ra", "a", "sink", 7001), route("rb", "b", "sink", 7001), sink_service()]);
    node.write("gw.yaml", &all).unwrap();
    node.wait_for_log("cannot listen on 0.0.0.0:9001").unwrap();
    node.wait_for_log("status: listener not programmed").unwrap();
    // Not ready while a wanted port is held elsewhere, and /readyz says which and why.
    let readyz = node.health_get(HEALTH, "/readyz").unwrap();
    assert!(readyz.starts_with("HTTP/1.1 503"), "{readyz}");
    assert!(readyz.contains("TCP 9001: cannot listen on 0.0.0.0:9001: Address already in use"), "{readyz}");
    echo_backend(&node);
    echo_across(node.connect(9000).unwrap(), &pattern(18, 4 * MIB), || {});
    drop(squatter);
    node.wait_for_log("addr=0.0.0.0:9001").unwrap();
    echo_across(node.connect(9001).unwrap(), &pattern(19, MIB), || {});
    let ready_again = || node.health_get(HEALTH, "/readyz").unwrap().starts_with("HTTP/1.1 200");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !ready_again() {
        assert!(std::time::Instant::now() < deadline, "ready again once the port is bound");
        std::thread::sleep(Duration::from_millis(100));
    }
}
