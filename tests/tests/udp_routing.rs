//! UDPRoute end to end: a real agent (`--dataplane userspace`: the UDP relay)
//! in network namespaces on 198.18.41.0/24–198.18.46.0/24 (no other test
//! uses them), real clients (dig against dnsmasq; a client checking every
//! datagram), counters read back through `gateway-agent inspect`.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use sockgate_tests::agent::Process;
use sockgate_tests::harness::GatewayNode;
use sockgate_tests::manifests::documents;
use sockgate_tests::status::{conditions, find, status_of};
use sockgate_tests::udp::{ask, checksummed, client, udp_echo, udp_route, udp_service};
use sockgate_tests::workspace_bin;

const CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: sockgate}\nspec: {controllerName: sockgate.io/gateway-controller}\n";

fn gateway(listeners: &[&str]) -> String {
    let mut y = format!("{CLASS}---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  gatewayClassName: sockgate\n  listeners:\n");
    for l in listeners {
        y.push_str(&format!("  - {l}\n"));
    }
    y
}

/// The agent, its UDP relay state file in its `logs` directory (the harness
/// says so), `/metrics` on the node's loopback (each test's node its own).
fn start(base: u8, files: &[(&str, String)]) -> GatewayNode {
    GatewayNode::start_on(base, files, &["--dataplane", "userspace", "--health-address", "127.0.0.1:9464"], |_| {}).unwrap()
}

fn metrics(node: &GatewayNode) -> String {
    let out = node.hosts.node.command("curl").args(["-s", "http://127.0.0.1:9464/metrics"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `gateway-agent inspect --output json` of the agent writing `state`.
fn inspect(state: &Path) -> Value {
    let out = Command::new(workspace_bin("gateway-agent").unwrap())
        .args(["inspect", "--output", "json", "--bpf-pin-dir", "/nonexistent/sockgate-udp-test", "--udp-state-file"])
        .arg(state.join("udp-flows.json"))
        .output()
        .unwrap();
    assert!(out.status.success(), "inspect failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The counters of UDP listener `port` for `route`, from `inspect`.
fn counters(state: &Path, port: u16, route: &str) -> Value {
    let json = inspect(state);
    let listener = json["udpListeners"].as_array().unwrap().iter().find(|l| l["port"] == port).unwrap_or_else(|| panic!("no UDP listener {port}: {json}")).clone();
    listener["routes"].as_array().unwrap().iter().find(|r| r["route"] == route).unwrap_or_else(|| panic!("no counters for {route:?}: {listener}"))["counters"].clone()
}

/// The counters once `ready` holds for them (the agent writes its state every
/// tick, 100 ms here, so a read right after traffic may be a tick old).
fn counters_when(state: &Path, port: u16, route: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let c = counters(state, port, route);
        if ready(&c) || Instant::now() > deadline {
            return c;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn reason(counters: &Value, list: &str, label: &str) -> u64 {
    counters[list].as_array().unwrap().iter().find(|e| e[0] == label).unwrap()[1].as_u64().unwrap()
}

/// Waits (up to 10 s) until `done` holds.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Replaces a manifest and waits until the agent applied it.
fn rewrite(node: &GatewayNode, name: &str, yaml: &str) {
    let applied = node.log_count("configuration applied");
    node.write(name, yaml).unwrap();
    wait_until("the change is applied", || node.log_count("configuration applied") > applied);
}

fn dig(node: &GatewayNode, gateway: &str, extra: &[&str]) -> String {
    let out = node.hosts.client.command("dig").args([&format!("@{gateway}"), "-p", "5300", "foo.bar.com", "A", "+short", "+tries=1", "+time=2"]).args(extra).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn dig_gets_dnsmasq_answers_through_a_udp_and_a_tcp_listener_on_one_port() {
    // The conformance suite's UDPRoute case (udproute-simple: a DNS server
    // behind a UDPRoute on listener port 5300), with a TCP listener on the same
    // port number beside it: two listeners, both served.
    let dns_service = "apiVersion: v1\nkind: Service\nmetadata: {name: coredns}\nspec: {ports: [{name: dns, protocol: UDP, port: 53, targetPort: 53}, {name: dns-tcp, protocol: TCP, port: 53, targetPort: 53}]}\n---\n\
        apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: coredns-1, labels: {kubernetes.io/service-name: coredns}}\naddressType: IPv4\n\
        ports: [{name: dns, protocol: UDP, port: 53}, {name: dns-tcp, protocol: TCP, port: 53}]\nendpoints: [{addresses: [\"198.18.42.2\"]}]\n";
    let tcp_route = "apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata: {name: udp-coredns}\nspec:\n  parentRefs: [{name: gw, sectionName: coredns-tcp}]\n  rules: [{backendRefs: [{name: coredns, port: 53}]}]\n";
    let node = start(
        41,
        &[
            ("gw.yaml", gateway(&["{name: coredns, port: 5300, protocol: UDP, allowedRoutes: {kinds: [{kind: UDPRoute}]}}", "{name: coredns-tcp, port: 5300, protocol: TCP}"])),
            // The same name as the TCPRoute: another kind, another object.
            ("routes.yaml", documents(&[udp_route("udp-coredns", "[{name: gw, sectionName: coredns}]", "[{name: coredns, port: 53}]"), tcp_route.to_string()])),
            ("svc.yaml", dns_service.to_string()),
        ],
    );
    let state = node.logs.path();
    let dnsmasq = node.hosts.backend1.command("dnsmasq");
    let mut dnsmasq_cmd = dnsmasq;
    dnsmasq_cmd.args(["--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces", "--listen-address=198.18.42.2", "--port=53", "--user=root", "--pid-file=", "--host-record=foo.bar.com,198.18.46.9", "--log-queries", "--log-facility=-"]);
    let _dnsmasq = Process::spawn("dnsmasq", dnsmasq_cmd, node.logs.path()).unwrap();
    wait_until("dnsmasq answers on the backend", || node.hosts.backend1.command("dig").args(["@198.18.42.2", "foo.bar.com", "+short", "+tries=1", "+time=1"]).output().map(|o| String::from_utf8_lossy(&o.stdout).contains("198.18.46.9")).unwrap_or(false));

    for i in 0..19 {
        assert_eq!(dig(&node, "198.18.41.2", &[]), "198.18.46.9", "UDP query {i}");
    }
    assert_eq!(dig(&node, "198.18.41.2", &["+tcp"]), "198.18.46.9", "the TCP listener on the same port");
    // A second address on the node's client side: the answer must come from
    // the address dig asked (the routing table would pick 198.18.41.2), or dig drops it.
    node.hosts.node.ip(&["addr", "add", "198.18.41.3/24", "dev", "to-client"]).unwrap();
    assert_eq!(dig(&node, "198.18.41.3", &[]), "198.18.46.9", "answered from the address asked");
    // dnsmasq saw the queries from the node (the relay's address toward it).
    let logs = std::fs::read_to_string(node.logs.path().join("dnsmasq.log")).unwrap();
    assert!(logs.contains("query[A] foo.bar.com from 198.18.42.1"), "{logs}");

    let docs = status_of(node.manifests.path()).unwrap();
    let route = find(&docs, "UDPRoute", "udp-coredns");
    assert_eq!(route["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(conditions(&route["status"]["parents"][0]["conditions"]), ["Accepted=True/Accepted", "ResolvedRefs=True/ResolvedRefs"]);
    assert_eq!(conditions(&find(&docs, "TCPRoute", "udp-coredns")["status"]["parents"][0]["conditions"]), ["Accepted=True/Accepted", "ResolvedRefs=True/ResolvedRefs"]);
    let kinds: Vec<(String, String, u64)> = find(&docs, "Gateway", "gw")["status"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["name"].as_str().unwrap().into(), l["supportedKinds"][0]["kind"].as_str().unwrap().into(), l["attachedRoutes"].as_u64().unwrap()))
        .collect();
    assert_eq!(kinds, [("coredns".into(), "UDPRoute".into(), 1), ("coredns-tcp".into(), "TCPRoute".into(), 1)]);

    let c = counters_when(state, 5300, "default/udp-coredns", |c| c["datagramsToClients"].as_u64() >= Some(20));
    assert!(c["datagramsFromClients"].as_u64().unwrap() >= 20 && c["datagramsToClients"].as_u64().unwrap() >= 20, "{c}");
    let out = Command::new(workspace_bin("gateway-agent").unwrap())
        .args(["inspect", "--bpf-pin-dir", "/nonexistent/sockgate-udp-test", "--udp-state-file"])
        .arg(state.join("udp-flows.json"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(text.contains("udp port 5300 (default/gw/coredns): UDPRoute default/udp-coredns; 20 flows"), "{text}");
    assert_eq!(text.matches(" -> 198.18.42.2:53: 1/1 datagrams in/out").count(), 20, "{text}");
    let log = node.agent.logs();
    assert!(log.contains("UDP data path: userspace relay"), "the log says which path serves UDP");
    let m = metrics(&node);
    let series = |name: &str| -> u64 {
        let prefix = format!("{name}{{port=\"5300\",gateway=\"default/gw\",listener=\"coredns\",route=\"default/udp-coredns\",path=\"relay\"}} ");
        m.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no {prefix} in\n{m}")).parse().unwrap()
    };
    assert!(series("sockgate_udp_datagrams_from_clients_total") >= 20 && series("sockgate_udp_datagrams_to_clients_total") >= 20, "{m}");
    assert!(series("sockgate_udp_bytes_to_clients_total") > series("sockgate_udp_bytes_from_clients_total"), "answers are longer than questions");
    assert!(m.contains("sockgate_udp_datagrams_dropped_total{port=\"5300\",gateway=\"default/gw\",listener=\"coredns\",route=\"default/udp-coredns\",path=\"relay\",reason=\"no_route\"} 0"), "{m}");
}

#[test]
fn udp_flows_split_by_weight_carry_every_datagram_intact_expire_move_and_end_with_their_route() {
    let node_ip: SocketAddr = "198.18.44.2:5300".parse().unwrap();
    let services = |one: &str, one_port: u16| documents(&[udp_service("one", 80, one_port, &[one]), udp_service("two", 80, 7000, &["198.18.46.2"]), udp_service("zero", 80, 7002, &["198.18.45.2"])]);
    let policy = "apiVersion: sockgate.io/v1alpha1\nkind: ListenerPolicy\nmetadata: {name: udp-idle}\nspec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: udp}]\n  idleTimeout: 3s\n";
    let route = udp_route("split", "[{name: gw, sectionName: udp}]", "[{name: one, port: 80, weight: 70}, {name: two, port: 80, weight: 30}, {name: zero, port: 80, weight: 0}]");
    let node = start(
        44,
        &[("gw.yaml", gateway(&["{name: udp, port: 5300, protocol: UDP}"])), ("route.yaml", route), ("svc.yaml", services("198.18.45.2", 7000)), ("policy.yaml", policy.to_string())],
    );
    let state = node.logs.path();
    let hosts = &node.hosts;
    let _echoes = [
        udp_echo(&hosts.backend1, 7000, "one").unwrap(),
        udp_echo(&hosts.backend2, 7000, "two").unwrap(),
        udp_echo(&hosts.backend1, 7002, "zero").unwrap(),
        udp_echo(&hosts.backend2, 7001, "one-moved").unwrap(),
    ];
    let timeout = Duration::from_secs(2);

    // Weights over 500 new flows (each client socket one flow), within 5 points.
    let mut counts = BTreeMap::new();
    let clients: Vec<_> = (0..500).map(|_| client(&hosts.client, timeout).unwrap()).collect();
    for (i, c) in clients.iter().enumerate() {
        let who = ask(c, node_ip, &checksummed(i as u64, 64)).unwrap().unwrap_or_else(|| panic!("flow {i} got no answer"));
        *counts.entry(who).or_insert(0u32) += 1;
    }
    let share = |name: &str| f64::from(*counts.get(name).unwrap_or(&0)) / 5.0;
    assert!((share("one") - 70.0).abs() <= 5.0 && (share("two") - 30.0).abs() <= 5.0, "{counts:?}");
    assert_eq!(counts.get("zero"), None, "weight 0 gets no flow: {counts:?}");
    // `clients` stay open: a new socket on a closed one's port would be that flow again.

    // Every datagram of 20 flows, 4,000 in all, 40 bytes to 8 KiB, checked byte for byte and by checksum; a flow keeps its backend.
    let flows: Vec<_> = (0..20).map(|_| client(&hosts.client, timeout).unwrap()).collect();
    let mut backend_of = Vec::new();
    for (f, c) in flows.iter().enumerate() {
        let mut first = None;
        for d in 0..200u64 {
            let len = [40, 64, 512, 1400, 1472, 4000, 8192][(d % 7) as usize];
            let who = ask(c, node_ip, &checksummed(f as u64 * 1000 + d, len)).unwrap().unwrap_or_else(|| panic!("flow {f} datagram {d}: no answer"));
            assert_eq!(first.get_or_insert_with(|| who.clone()), &who, "flow {f} changed backend");
        }
        backend_of.push(first.unwrap());
    }
    // A datagram of 65,000 bytes each way (IP fragments on the veths).
    assert!(ask(&flows[0], node_ip, &checksummed(7, 65_000)).unwrap().is_some());
    let c = counters_when(state, 5300, "default/split", |c| c["datagramsToClients"].as_u64() >= Some(4501));
    assert_eq!(c["flowsCreated"], 520, "{c}");
    assert_eq!((c["datagramsFromClients"].as_u64(), c["datagramsToClients"].as_u64()), (Some(4501), Some(4501)), "{c}");

    // Endpoint change: service one moves to backend2:7001. Flows on one's old
    // endpoint end at once and their next datagram is picked afresh by weight
    // (one's new endpoint, or two); two's flows stay where they are.
    rewrite(&node, "svc.yaml", &services("198.18.46.2", 7001));
    let moved_before = backend_of.iter().filter(|b| *b == "one").count();
    assert!(moved_before > 0 && moved_before < 20, "{backend_of:?}");
    let mut moved = 0;
    for (f, c) in flows.iter().enumerate() {
        let who = ask(c, node_ip, &checksummed(90_000 + f as u64, 256)).unwrap().expect("answered after the change");
        match backend_of[f].as_str() {
            "two" => assert_eq!(who, "two", "flow {f} kept its endpoint"),
            _ => assert!(who == "one-moved" || who == "two", "flow {f} left the removed endpoint: {who}"),
        }
        moved += usize::from(who == "one-moved");
    }
    assert!(moved > 0, "new flows reach the new endpoint at once");
    let c = counters_when(state, 5300, "default/split", |c| reason(c, "flowsEnded", "endpoint_removed") >= moved_before as u64);
    assert!(reason(&c, "flowsEnded", "endpoint_removed") >= moved_before as u64, "{c}");

    // Idle expiry (idleTimeout 3s from the ListenerPolicy: 1s lost flows of a loaded machine between two datagrams): the table empties by itself.
    wait_until("idle flows expire", || {
        let json = inspect(state);
        json["udpListeners"][0]["flows"].as_array().unwrap().is_empty()
    });
    let all_ended = |c: &Value| reason(c, "flowsEnded", "idle") + reason(c, "flowsEnded", "endpoint_removed") == c["flowsCreated"].as_u64().unwrap();
    let c = counters_when(state, 5300, "default/split", all_ended);
    assert!(all_ended(&c), "{c}");
    // At least the 20 flows used after the change ended idle (the 500 on one's old endpoint had ended already).
    assert!(reason(&c, "flowsEnded", "idle") >= 20, "{c}");
    assert_eq!(inspect(state)["udpListeners"][0]["idleTimeoutMs"], 3000);

    // clientCIDRs: the client's address denied, its datagrams dropped and counted.
    rewrite(&node, "policy.yaml", &format!("{policy}  clientCIDRs: {{deny: [198.18.44.1/32]}}\n"));
    let denied = client(&hosts.client, Duration::from_millis(500)).unwrap();
    assert_eq!(ask(&denied, node_ip, &checksummed(1, 64)).unwrap(), None);
    assert_eq!(reason(&counters_when(state, 5300, "default/split", |c| reason(c, "dropped", "client_denied") >= 1), "dropped", "client_denied"), 1);
    rewrite(&node, "policy.yaml", policy);

    // Route removal: no answers, counted as no_route; the route's status goes.
    let c = client(&hosts.client, Duration::from_millis(500)).unwrap();
    assert!(ask(&c, node_ip, &checksummed(2, 64)).unwrap().is_some());
    let applied = node.log_count("configuration applied");
    node.remove("route.yaml").unwrap();
    wait_until("the removal is applied", || node.log_count("configuration applied") > applied);
    assert_eq!(ask(&c, node_ip, &checksummed(3, 64)).unwrap(), None, "a listener without a route answers nothing");
    let c = counters_when(state, 5300, "", |c| reason(c, "dropped", "no_route") >= 1);
    assert_eq!(reason(&c, "dropped", "no_route"), 1, "{c}");
    let split = counters(state, 5300, "default/split");
    assert!(reason(&split, "flowsEnded", "route_changed") >= 1, "{split}");
    let docs = status_of(node.manifests.path()).unwrap();
    assert!(docs.iter().all(|d| d["kind"] != "UDPRoute"));
    assert_eq!(find(&docs, "Gateway", "gw")["status"]["listeners"][0]["attachedRoutes"], 0);
}
