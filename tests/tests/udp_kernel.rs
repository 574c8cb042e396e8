//! The kernel UDP NAT (`--dataplane ebpf`): UDPRoutes served by
//! `sockgate_udp_nat` in TC, real BPF in network namespaces on
//! 198.18.61.0/24–198.18.84.0/24 (no other test uses them). Every answer is
//! checked byte for byte and by checksum; the node's UDP stack must see none
//! of the forwarded datagrams (`Udp: InDatagrams` of its /proc/net/snmp);
//! counters are read from the pinned maps with bpftool.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use sockgate_tests::agent::wait_for_log;
use sockgate_tests::harness::GatewayNode;
use sockgate_tests::manifests::documents;
use sockgate_tests::udp::{ask, checksummed, client, udp_echo, udp_route, udp_service};

const CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: sockgate}\nspec: {controllerName: sockgate.io/gateway-controller}\n";

fn gateway() -> String {
    format!("{CLASS}---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  gatewayClassName: sockgate\n  listeners:\n  - {{name: udp, port: 5300, protocol: UDP}}\n")
}

/// The node, its pins in a directory of this test's own (removed at the end).
struct Node {
    node: GatewayNode,
    pins: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.node.agent.stop(Duration::from_secs(3));
        let _ = std::fs::remove_dir_all(&self.pins);
    }
}

fn start(base: u8, files: &[(&str, String)]) -> Node {
    let pins = PathBuf::from(format!("/sys/fs/bpf/{}", sockgate_tests::netns::unique_name("sockgate-udpnat")));
    let pin_arg = format!("--bpf-pin-dir={}", pins.display());
    let node = GatewayNode::start_on(base, files, &["--dataplane", "ebpf", &pin_arg, "--health-address", "127.0.0.1:9464"], |_| {}).unwrap();
    Node { node, pins }
}

/// The node's `Udp: InDatagrams` (datagrams its UDP sockets received).
fn in_datagrams(node: &GatewayNode) -> u64 {
    let out = node.hosts.node.command("cat").arg("/proc/net/snmp").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
    let names: Vec<&str> = rows[0].split_whitespace().collect();
    let values: Vec<&str> = rows[1].split_whitespace().collect();
    values[names.iter().position(|n| *n == "InDatagrams").unwrap()].parse().unwrap()
}

/// `bpftool -j map dump pinned` of one of the agent's UDP NAT maps.
fn dump(node: &Node, map: &str) -> Value {
    let out = std::process::Command::new("bpftool").args(["-j", "map", "dump", "pinned"]).arg(node.pins.join(map)).output().unwrap();
    assert!(out.status.success(), "bpftool: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The sum of every field `name` in a bpftool dump (all entries, all CPUs).
fn sum(v: &Value, name: &str) -> u64 {
    match v {
        Value::Object(m) => m.iter().map(|(k, v)| if k == name { v.as_u64().unwrap_or(0) } else { sum(v, name) }).sum(),
        Value::Array(a) => a.iter().map(|v| sum(v, name)).sum(),
        _ => 0,
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn rewrite(node: &GatewayNode, name: &str, yaml: &str) {
    let applied = node.log_count("configuration applied");
    node.write(name, yaml).unwrap();
    wait_until("the change is applied", || node.log_count("configuration applied") > applied);
}

#[test]
fn five_hundred_clients_through_a_weighted_udproute_in_the_kernel_keep_the_weights_and_no_node_socket_sees_them() {
    let node_ip: SocketAddr = "198.18.61.2:5300".parse().unwrap();
    let route = udp_route("split", "[{name: gw, sectionName: udp}]", "[{name: one, port: 80, weight: 70}, {name: two, port: 80, weight: 30}]");
    let services = documents(&[udp_service("one", 80, 7000, &["198.18.62.2"]), udp_service("two", 80, 7000, &["198.18.63.2"])]);
    let n = start(61, &[("gw.yaml", gateway()), ("route.yaml", route), ("svc.yaml", services)]);
    let node = &n.node;
    let log = node.agent.logs();
    assert!(log.contains("UDP data path: kernel UDP NAT"), "the log says the kernel serves UDP:\n{log}");
    let _echoes = [udp_echo(&node.hosts.backend1, 7000, "one").unwrap(), udp_echo(&node.hosts.backend2, 7000, "two").unwrap()];
    let before = in_datagrams(node);

    // 500 client source ports, each a flow; each sends datagrams of 64, 512 and 1400 bytes.
    let clients: Vec<_> = (0..500).map(|_| client(&node.hosts.client, Duration::from_secs(2)).unwrap()).collect();
    let mut counts = BTreeMap::new();
    let mut bytes = 0u64;
    for (i, c) in clients.iter().enumerate() {
        let mut first = None;
        for (j, len) in [64usize, 512, 1400].into_iter().enumerate() {
            let datagram = checksummed((i * 3 + j) as u64, len);
            bytes += len as u64;
            let who = ask(c, node_ip, &datagram).unwrap().unwrap_or_else(|| panic!("flow {i}, datagram {j} ({len} B): no answer"));
            match &first {
                None => first = Some(who),
                Some(f) => assert_eq!(*f, who, "flow {i} kept its endpoint"),
            }
        }
        *counts.entry(first.unwrap()).or_insert(0u32) += 1;
    }
    let share = |name: &str| f64::from(*counts.get(name).unwrap_or(&0)) / 5.0;
    println!("flows per endpoint: {counts:?}");
    assert!((share("one") - 70.0).abs() <= 5.0 && (share("two") - 30.0).abs() <= 5.0, "{counts:?}");

    let after = in_datagrams(node);
    println!("node Udp InDatagrams: {before} before, {after} after 1500 forwarded datagrams");
    assert_eq!(after, before, "the node's UDP sockets saw forwarded datagrams");

    let stats = dump(&n, "UDP_NAT_STATS");
    println!("{}", serde_json::to_string(&stats).unwrap());
    assert_eq!(sum(&stats, "flows_created"), 500, "{stats}");
    assert_eq!(sum(&stats, "datagrams_from_clients"), 1500);
    assert_eq!(sum(&stats, "datagrams_to_clients"), 1500);
    assert_eq!(sum(&stats, "bytes_from_clients"), bytes);
    // Each answer is the backend's name, a bar, then the datagram.
    assert_eq!(sum(&stats, "bytes_to_clients"), bytes + 1500 * 4);
    let flows = dump(&n, "UDP_NAT_FLOWS");
    assert_eq!(flows.as_array().unwrap().len(), 1000, "two entries per flow");
}

#[test]
fn kernel_udp_flows_expire_when_idle_and_move_off_a_removed_endpoint() {
    let node_ip: SocketAddr = "198.18.64.2:5300".parse().unwrap();
    let policy = "apiVersion: sockgate.io/v1alpha1\nkind: ListenerPolicy\nmetadata: {name: udp-idle}\nspec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: udp}]\n  idleTimeout: 1s\n";
    let both = udp_route("split", "[{name: gw, sectionName: udp}]", "[{name: one, port: 80, weight: 50}, {name: two, port: 80, weight: 50}]");
    let services = documents(&[udp_service("one", 80, 7000, &["198.18.65.2"]), udp_service("two", 80, 7000, &["198.18.66.2"])]);
    let n = start(64, &[("gw.yaml", gateway()), ("route.yaml", both), ("svc.yaml", services), ("policy.yaml", policy.to_string())]);
    let node = &n.node;
    let _echoes = [udp_echo(&node.hosts.backend1, 7000, "one").unwrap(), udp_echo(&node.hosts.backend2, 7000, "two").unwrap()];
    let timeout = Duration::from_secs(2);

    // Idle: one flow, quiet for longer than its 1 s, is gone with both entries.
    let lone = client(&node.hosts.client, timeout).unwrap();
    assert!(ask(&lone, node_ip, &checksummed(1, 100)).unwrap().is_some());
    assert_eq!(dump(&n, "UDP_NAT_FLOWS").as_array().unwrap().len(), 2);
    let started = Instant::now();
    wait_until("the idle flow is swept", || dump(&n, "UDP_NAT_FLOWS").as_array().unwrap().is_empty());
    let took = started.elapsed();
    println!("idle flow removed {took:?} after its last datagram (idleTimeout 1s, sweep every 500 ms)");
    assert!(took >= Duration::from_millis(900), "removed before its idle time: {took:?}");
    assert_eq!(sum(&dump(&n, "UDP_NAT_LISTENERS"), "flows_expired"), 1);
    // Its next datagram is a new flow, answered.
    assert!(ask(&lone, node_ip, &checksummed(2, 100)).unwrap().is_some());
    assert_eq!(sum(&dump(&n, "UDP_NAT_STATS"), "flows_created"), 2);

    // Removal: 20 flows over both endpoints, then `two` leaves the route.
    let clients: Vec<_> = (0..20).map(|_| client(&node.hosts.client, timeout).unwrap()).collect();
    let mut on_two = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        if ask(c, node_ip, &checksummed(100 + i as u64, 200)).unwrap().unwrap() == "two" {
            on_two.push(i);
        }
    }
    assert!((8..=12).contains(&on_two.len()), "50/50 over 20 new flows: {} on two", on_two.len());
    rewrite(node, "route.yaml", &udp_route("split", "[{name: gw, sectionName: udp}]", "[{name: one, port: 80}]"));
    // Existing flows to `two` move: their next datagram is answered by `one`.
    for i in &on_two {
        assert_eq!(ask(&clients[*i], node_ip, &checksummed(200 + *i as u64, 300)).unwrap().as_deref(), Some("one"), "flow {i} moved");
    }
    // New flows avoid it.
    for i in 0..20 {
        let c = client(&node.hosts.client, timeout).unwrap();
        assert_eq!(ask(&c, node_ip, &checksummed(300 + i, 64)).unwrap().as_deref(), Some("one"), "new flow {i}");
    }
    // The lone client's second flow may have been on `two` as well.
    let moved = sum(&dump(&n, "UDP_NAT_LISTENERS"), "flows_moved");
    assert!(moved == on_two.len() as u64 || moved == on_two.len() as u64 + 1, "{moved} moved, {} flows were on two", on_two.len());
}

/// A ListenerPolicy on the Gateway's UDP listener.
fn listener_policy(spec: &str) -> String {
    format!("apiVersion: sockgate.io/v1alpha1\nkind: ListenerPolicy\nmetadata: {{name: udp-policy}}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: udp}}]\n{spec}")
}

/// A client socket on host `ns` from a given source address.
fn client_from(ns: &sockgate_tests::netns::NetNs, addr: &str) -> std::net::UdpSocket {
    let addr: SocketAddr = format!("{addr}:0").parse().unwrap();
    let socket = ns.enter(move || std::net::UdpSocket::bind(addr)).unwrap().unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
    socket
}

#[test]
fn kernel_udp_client_cidrs_and_the_flow_cap_drop_new_flows_in_the_kernel_and_a_tightened_policy_ends_the_flows_it_no_longer_admits() {
    let node_ip: SocketAddr = "198.18.67.2:5300".parse().unwrap();
    let route = udp_route("one", "[{name: gw, sectionName: udp}]", "[{name: one, port: 80}]");
    let policy = listener_policy("  clientCIDRs: {deny: [198.18.67.11/32]}\n  maxConnections: 3\n");
    let n = start(67, &[("gw.yaml", gateway()), ("route.yaml", route), ("svc.yaml", udp_service("one", 80, 7000, &["198.18.68.2"])), ("policy.yaml", policy)]);
    let node = &n.node;
    let _echo = udp_echo(&node.hosts.backend1, 7000, "one").unwrap();
    // A second client address on the client's link, which the policy denies.
    let dev = node.hosts.client.command("sh").args(["-c", "ip -o -4 addr show | awk '/198.18.67.1\\// {print $2}'"]).output().unwrap();
    let dev = String::from_utf8_lossy(&dev.stdout).trim().to_string();
    assert!(node.hosts.client.command("ip").args(["addr", "add", "198.18.67.11/24", "dev", &dev]).status().unwrap().success());
    let before = in_datagrams(node);

    let allowed: Vec<_> = (0..4).map(|_| client_from(&node.hosts.client, "198.18.67.1")).collect();
    for (i, c) in allowed[..3].iter().enumerate() {
        assert_eq!(ask(c, node_ip, &checksummed(i as u64, 200)).unwrap().as_deref(), Some("one"), "allowed flow {i} within the cap");
    }
    assert_eq!(ask(&allowed[3], node_ip, &checksummed(3, 200)).unwrap(), None, "a fourth flow beyond maxConnections 3 is dropped");
    let denied = client_from(&node.hosts.client, "198.18.67.11");
    assert_eq!(ask(&denied, node_ip, &checksummed(4, 200)).unwrap(), None, "a denied client is not answered");
    let stats = dump(&n, "UDP_NAT_STATS");
    assert_eq!(sum(&stats, "dropped_flow_limit"), 1, "{stats}");
    assert_eq!(sum(&stats, "dropped_client_denied"), 1, "{stats}");
    assert_eq!(sum(&stats, "flows_created"), 3, "{stats}");
    assert_eq!(in_datagrams(node), before, "the refused datagrams were dropped in the kernel, not passed to the relay");

    // The policy tightens: the allowed client's address is denied too, and
    // its three live flows end (their next datagrams are judged afresh).
    rewrite(node, "policy.yaml", &listener_policy("  clientCIDRs: {deny: [198.18.67.0/28]}\n"));
    wait_until("the sweep ends the flows the new policy refuses", || sum(&dump(&n, "UDP_NAT_LISTENERS"), "flows_denied") == 3);
    for (i, c) in allowed[..3].iter().enumerate() {
        assert_eq!(ask(c, node_ip, &checksummed(10 + i as u64, 200)).unwrap(), None, "flow {i} of a now denied client is not answered");
    }
    // An allow list: only its CIDRs may start flows.
    rewrite(node, "policy.yaml", &listener_policy("  clientCIDRs: {allow: [198.18.67.8/29]}\n"));
    assert_eq!(ask(&denied, node_ip, &checksummed(20, 300)).unwrap().as_deref(), Some("one"), "198.18.67.11 is in the allow list now");
    assert_eq!(ask(&allowed[0], node_ip, &checksummed(21, 300)).unwrap(), None, "198.18.67.1 is in no allowed CIDR");
    assert_eq!(in_datagrams(node), before, "no datagram reached a node socket");
}

#[test]
fn datagrams_up_to_64_kib_cross_the_kernel_udp_nat_as_fragments_both_ways_intact_and_no_node_socket_sees_them() {
    let node_ip: SocketAddr = "198.18.70.2:5300".parse().unwrap();
    let route = udp_route("one", "[{name: gw, sectionName: udp}]", "[{name: one, port: 80}]");
    let n = start(70, &[("gw.yaml", gateway()), ("route.yaml", route), ("svc.yaml", udp_service("one", 80, 7000, &["198.18.71.2"]))]);
    let node = &n.node;
    let _echo = udp_echo(&node.hosts.backend1, 7000, "one").unwrap();
    let before = in_datagrams(node);
    let mut sent = 0u64;
    // Over the 1472 bytes one 1500-byte frame holds: 2 to 45 fragments each
    // way; the answer ("one|" + the datagram) up to the 65,507-byte maximum.
    for (flow, len) in [1473usize, 3000, 9000, 30_000, 65_503].into_iter().enumerate() {
        let c = client(&node.hosts.client, Duration::from_secs(2)).unwrap();
        for i in 0..10u64 {
            let datagram = checksummed(flow as u64 * 100 + i, len);
            assert_eq!(ask(&c, node_ip, &datagram).unwrap().as_deref(), Some("one"), "{len}-byte datagram {i}: no answer");
            sent += 1;
        }
    }
    let stats = dump(&n, "UDP_NAT_STATS");
    println!("{}", serde_json::to_string(&stats).unwrap());
    assert_eq!(sum(&stats, "datagrams_from_clients"), sent, "{stats}");
    assert_eq!(sum(&stats, "datagrams_to_clients"), sent, "{stats}");
    assert!(sum(&stats, "fragments_forwarded") >= 2 * sent, "{stats}");
    assert_eq!(sum(&stats, "fragments_passed"), 0, "every fragment followed its first: {stats}");
    assert_eq!(in_datagrams(node), before, "the relay reassembled none of them");
}

#[test]
fn a_backends_port_unreachable_reaches_the_kernel_udp_client_as_connection_refused() {
    let node_ip: SocketAddr = "198.18.73.2:5300".parse().unwrap();
    let route = udp_route("one", "[{name: gw, sectionName: udp}]", "[{name: one, port: 80}]");
    // Nothing listens on the endpoint's port 7999: its host answers with an ICMP port unreachable.
    let n = start(73, &[("gw.yaml", gateway()), ("route.yaml", route), ("svc.yaml", udp_service("one", 80, 7999, &["198.18.74.2"]))]);
    let node = &n.node;
    let c = client(&node.hosts.client, Duration::from_secs(2)).unwrap();
    c.connect(node_ip).unwrap();
    c.send(&checksummed(1, 100)).unwrap();
    let mut buf = [0u8; 256];
    let got = c.recv(&mut buf).map_err(|e| e.kind());
    assert_eq!(got, Err(std::io::ErrorKind::ConnectionRefused), "the client's connected socket hears the backend's refusal");
    let stats = dump(&n, "UDP_NAT_STATS");
    assert_eq!(sum(&stats, "icmp_translated"), 1, "{stats}");
    assert_eq!(sum(&stats, "flows_created"), 1, "{stats}");
}

/// The node's `/metrics`.
fn metrics(node: &GatewayNode) -> String {
    let out = node.hosts.node.command("curl").args(["-s", "http://127.0.0.1:9464/metrics"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `gateway-agent inspect` (text, or JSON with `--output json`) of the node's agent.
fn inspect(n: &Node, extra: &[&str]) -> String {
    let out = std::process::Command::new(sockgate_tests::workspace_bin("gateway-agent").unwrap())
        .arg("inspect")
        .arg("--bpf-pin-dir")
        .arg(&n.pins)
        .arg("--udp-state-file")
        .arg(n.node.logs.path().join("udp-flows.json"))
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "inspect failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn metrics_and_inspect_show_the_kernel_udp_listeners_counters_and_flow_table() {
    let node_ip: SocketAddr = "198.18.76.2:5300".parse().unwrap();
    let route = udp_route("one", "[{name: gw, sectionName: udp}]", "[{name: one, port: 80}]");
    let policy = listener_policy("  maxConnections: 2\n");
    let n = start(76, &[("gw.yaml", gateway()), ("route.yaml", route), ("svc.yaml", udp_service("one", 80, 7000, &["198.18.77.2"])), ("policy.yaml", policy)]);
    let node = &n.node;
    let _echo = udp_echo(&node.hosts.backend1, 7000, "one").unwrap();
    let clients: Vec<_> = (0..3).map(|_| client(&node.hosts.client, Duration::from_millis(700)).unwrap()).collect();
    let mut sent = 0u64;
    for (i, c) in clients[..2].iter().enumerate() {
        for j in 0..5u64 {
            // The first of each flow's five is 4,000 bytes: three fragments each way.
            let len = if j == 0 { 4000 } else { 100 };
            assert_eq!(ask(c, node_ip, &checksummed(i as u64 * 10 + j, len)).unwrap().as_deref(), Some("one"));
            sent += 1;
        }
    }
    assert_eq!(ask(&clients[2], node_ip, &checksummed(99, 100)).unwrap(), None, "the third flow is over maxConnections 2");

    let labels = "port=\"5300\",gateway=\"default/gw\",listener=\"udp\",route=\"default/one\",path=\"kernel\"";
    let mut m = String::new();
    wait_until("/metrics has the kernel listener's counters", || {
        m = metrics(node);
        m.contains(&format!("sockgate_udp_datagrams_to_clients_total{{{labels}}} {sent}"))
    });
    println!("{}", m.lines().filter(|l| l.contains("path=\"kernel\"")).collect::<Vec<_>>().join("\n"));
    for series in [
        format!("sockgate_udp_datagrams_from_clients_total{{{labels}}} {sent}"),
        format!("sockgate_udp_flows_created_total{{{labels}}} 2"),
        format!("sockgate_udp_datagrams_dropped_total{{{labels},reason=\"flow_limit\"}} 1"),
        format!("sockgate_udp_translated_packets_total{{{labels},kind=\"fragment\"}} 8"),
        "sockgate_udp_flows_active{port=\"5300\",gateway=\"default/gw\",listener=\"udp\",path=\"kernel\"} 2".to_string(),
    ] {
        assert!(m.contains(&series), "no {series} in\n{m}");
    }

    let text = inspect(&n, &[]);
    println!("{text}");
    assert!(text.contains("UDP listeners in the kernel (UDP NAT) (1):\n  udp port 5300 (default/gw/udp): UDPRoute default/one; 2 flows, idle timeout 60000 ms, at most 2 flows"), "{text}");
    assert!(text.contains("dropped datagrams [flow_limit 1]") && text.contains("translated [fragment 8]"), "{text}");
    for c in &clients[..2] {
        let port = c.local_addr().unwrap().port();
        assert!(text.contains(&format!("flow 198.18.76.1:{port} -> 198.18.77.2:7000: 5/5 datagrams in/out")), "{text}");
    }
    let json: Value = serde_json::from_str(&inspect(&n, &["--output", "json"])).unwrap();
    let kernel: Vec<&Value> = json["udpListeners"].as_array().unwrap().iter().filter(|l| l["path"] == "kernel").collect();
    assert_eq!(kernel.len(), 1, "{json}");
    assert_eq!(kernel[0]["flowsActive"], 2);
    assert_eq!(kernel[0]["flows"].as_array().unwrap().len(), 2);
}

/// Each forward entry of the flow table: client port → (NAT port, endpoint).
fn nat_ports(n: &Node) -> BTreeMap<u64, (u64, Value)> {
    let flows = dump(n, "UDP_NAT_FLOWS");
    flows.as_array().unwrap().iter().filter(|f| f["formatted"]["value"]["to_client"] == 0).map(|f| {
        let (key, value) = (&f["formatted"]["key"], &f["formatted"]["value"]);
        (key["src_port"].as_u64().unwrap(), (value["out_src_port"].as_u64().unwrap(), value["out_dst_addr"].clone()))
    }).collect()
}

#[test]
fn kernel_udp_flows_go_on_with_their_nat_ports_and_endpoints_across_a_takeover_and_a_kill_9_and_go_with_a_plain_stop() {
    let node_ip: SocketAddr = "198.18.79.2:5300".parse().unwrap();
    let route = udp_route("split", "[{name: gw, sectionName: udp}]", "[{name: one, port: 80}, {name: two, port: 80}]");
    let services = documents(&[udp_service("one", 80, 7000, &["198.18.80.2"]), udp_service("two", 80, 7000, &["198.18.81.2"])]);
    let mut n = start(79, &[("gw.yaml", gateway()), ("route.yaml", route), ("svc.yaml", services)]);
    let _echoes = [udp_echo(&n.node.hosts.backend1, 7000, "one").unwrap(), udp_echo(&n.node.hosts.backend2, 7000, "two").unwrap()];
    let clients: Vec<_> = (0..6).map(|_| client(&n.node.hosts.client, Duration::from_secs(2)).unwrap()).collect();
    let ask_all = |round: u64| -> Vec<String> { clients.iter().enumerate().map(|(i, c)| ask(c, node_ip, &checksummed(round * 10 + i as u64, 500)).unwrap().unwrap_or_else(|| panic!("round {round}, flow {i}: no answer"))).collect() };
    let first = ask_all(0);
    let table = nat_ports(&n);
    assert_eq!(table.len(), 6, "{table:?}");

    // A takeover: the successor's program carries the same flows on.
    let mut successor = n.node.start_successor(&[], |_| {}).unwrap();
    wait_for_log(&mut successor, "took over from the running agent", Duration::from_secs(30)).unwrap();
    // Loaded before the takeover, so it carries the flows from then on.
    assert!(successor.logs().contains("carrying on the UDP flows an earlier agent left in the kernel NAT flows=6"), "{}", successor.logs());
    let status = n.node.agent.wait_exit(Duration::from_secs(10));
    assert!(matches!(status, Some(s) if s.success()), "the old agent exits after the handover: {status:?}");
    let _old = std::mem::replace(&mut n.node.agent, successor);
    assert_eq!(ask_all(1), first, "every flow kept its endpoint across the takeover");
    assert_eq!(nat_ports(&n), table, "and its NAT port");
    assert_eq!(sum(&dump(&n, "UDP_NAT_STATS"), "flows_created"), 6, "no flow was created again");

    // A kill -9: nothing forwards until an agent is back, which carries them on too.
    n.node.agent.kill();
    let mut restarted = n.node.start_successor(&[], |_| {}).unwrap();
    wait_for_log(&mut restarted, "UDP listener served in the kernel", Duration::from_secs(30)).unwrap();
    assert!(restarted.logs().contains("carrying on the UDP flows an earlier agent left in the kernel NAT flows=6"), "{}", restarted.logs());
    n.node.agent = restarted;
    assert_eq!(ask_all(2), first, "every flow kept its endpoint across the kill -9");
    assert_eq!(nat_ports(&n), table);
    assert_eq!(sum(&dump(&n, "UDP_NAT_STATS"), "flows_created"), 6);

    // A plain stop leaves nothing to carry on: the pins go with the agent.
    n.node.agent.stop(Duration::from_secs(5));
    assert!(!n.pins.join("UDP_NAT_FLOWS").exists() && !n.pins.join("UDP_NAT_STATS").exists(), "pins left after a plain stop");
}

#[test]
fn a_flood_of_new_udp_flows_is_bounded_by_the_lru_table_evictions_are_counted_and_busy_flows_are_answered_throughout() {
    let node_ip: SocketAddr = "198.18.82.2:5300".parse().unwrap();
    let route = udp_route("split", "[{name: gw, sectionName: udp}]", "[{name: one, port: 80}, {name: two, port: 80}]");
    let services = documents(&[udp_service("one", 80, 7000, &["198.18.83.2"]), udp_service("two", 80, 7000, &["198.18.84.2"])]);
    let files = [("gw.yaml", gateway()), ("route.yaml", route), ("svc.yaml", services)];
    let pins = PathBuf::from(format!("/sys/fs/bpf/{}", sockgate_tests::netns::unique_name("sockgate-udpnat")));
    let pin_arg = format!("--bpf-pin-dir={}", pins.display());
    // A table of 1,024 flows (2,048 entries), flooded with 4,000 new ones.
    let args = ["--dataplane", "ebpf", &pin_arg, "--health-address", "127.0.0.1:9464", "--udp-nat-max-flows", "1024"];
    let n = Node { node: GatewayNode::start_on(82, &files, &args, |_| {}).unwrap(), pins };
    let node = &n.node;
    let _echoes = [udp_echo(&node.hosts.backend1, 7000, "one").unwrap(), udp_echo(&node.hosts.backend2, 7000, "two").unwrap()];
    let busy: Vec<_> = (0..10).map(|_| client(&node.hosts.client, Duration::from_secs(2)).unwrap()).collect();
    let endpoints: Vec<String> = busy.iter().enumerate().map(|(i, c)| ask(c, node_ip, &checksummed(i as u64, 200)).unwrap().unwrap()).collect();

    let flood = node.hosts.client.enter(|| {
        let to: SocketAddr = "198.18.82.2:5300".parse().unwrap();
        for port in 20_000..24_000u16 {
            let s = std::net::UdpSocket::bind(("198.18.82.1", port)).unwrap();
            s.send_to(&checksummed(u64::from(port), 64), to).unwrap();
        }
    });
    let flood = std::thread::spawn(move || flood);
    // Meanwhile the busy flows go on, every datagram answered intact. The
    // kernel's LRU is approximate (per-CPU lists, a reference bit), so a busy
    // flow may be evicted too: its next datagram is then a new flow, which
    // may pick the other endpoint. Counted, not failed.
    let mut moved = 0;
    for round in 1..=20u64 {
        for (i, c) in busy.iter().enumerate() {
            let who = ask(c, node_ip, &checksummed(round * 100 + i as u64, 200)).unwrap().unwrap_or_else(|| panic!("busy flow {i}, round {round}: no answer"));
            moved += usize::from(who != endpoints[i]);
        }
    }
    flood.join().unwrap().unwrap();
    for (i, c) in busy.iter().enumerate() {
        assert!(ask(c, node_ip, &checksummed(9000 + i as u64, 200)).unwrap().is_some(), "busy flow {i} after the flood: no answer");
    }
    println!("busy flows answered by another endpoint than their first, in 200 asks: {moved}");
    let entries = dump(&n, "UDP_NAT_FLOWS").as_array().unwrap().len();
    assert!(entries <= 2048, "the table holds at most its size: {entries}");
    let created = sum(&dump(&n, "UDP_NAT_STATS"), "flows_created");
    assert!(created >= 4000, "the flooding 5-tuples were new flows (a rare one finds no free NAT port in 4 tries): {created}");
    let labels = "port=\"5300\",gateway=\"default/gw\",listener=\"udp\",route=\"default/split\",path=\"kernel\"";
    let mut evicted = 0;
    wait_until("/metrics counts the evictions", || {
        let m = metrics(node);
        let prefix = format!("sockgate_udp_flows_ended_total{{{labels},reason=\"evicted\"}} ");
        evicted = m.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.parse().unwrap());
        evicted > 0
    });
    println!("{created} flows created, {entries} entries left, {evicted} evicted");
    assert!(evicted >= created - 1024 - 10, "{evicted} evicted of {created} created into a table of 1024");
}
