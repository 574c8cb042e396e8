//! The kernel UDP NAT (`--dataplane ebpf`): UDPRoutes served by
//! `sockgate_udp_nat` in TC, real BPF in network namespaces on
//! 198.18.61.0/24–198.18.66.0/24 (no other test uses them). Every answer is
//! checked byte for byte and by checksum; the node's UDP stack must see none
//! of the forwarded datagrams (`Udp: InDatagrams` of its /proc/net/snmp);
//! counters are read from the pinned maps with bpftool.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
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
    let node = GatewayNode::start_on(base, files, &["--dataplane", "ebpf", &pin_arg], |_| {}).unwrap();
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
fn two_hundred_clients_through_a_weighted_udproute_in_the_kernel_no_node_socket_sees_them() {
    let node_ip: SocketAddr = "198.18.61.2:5300".parse().unwrap();
    let route = udp_route("split", "[{name: gw, sectionName: udp}]", "[{name: one, port: 80, weight: 70}, {name: two, port: 80, weight: 30}]");
    let services = documents(&[udp_service("one", 80, 7000, &["198.18.62.2"]), udp_service("two", 80, 7000, &["198.18.63.2"])]);
    let n = start(61, &[("gw.yaml", gateway()), ("route.yaml", route), ("svc.yaml", services)]);
    let node = &n.node;
    let log = node.agent.logs();
    assert!(log.contains("UDP data path: kernel UDP NAT"), "the log says the kernel serves UDP:\n{log}");
    let _echoes = [udp_echo(&node.hosts.backend1, 7000, "one").unwrap(), udp_echo(&node.hosts.backend2, 7000, "two").unwrap()];
    let before = in_datagrams(node);

    // 200 client source ports, each a flow; each sends datagrams of 64, 512 and 1400 bytes.
    let clients: Vec<_> = (0..200).map(|_| client(&node.hosts.client, Duration::from_secs(2)).unwrap()).collect();
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
    let share = |name: &str| f64::from(*counts.get(name).unwrap_or(&0)) / 2.0;
    println!("flows per endpoint: {counts:?}");
    assert!((share("one") - 70.0).abs() <= 5.0 && (share("two") - 30.0).abs() <= 5.0, "{counts:?}");

    let after = in_datagrams(node);
    println!("node Udp InDatagrams: {before} before, {after} after 600 forwarded datagrams");
    assert_eq!(after, before, "the node's UDP sockets saw forwarded datagrams");

    let stats = dump(&n, "UDP_NAT_STATS");
    println!("{}", serde_json::to_string(&stats).unwrap());
    assert_eq!(sum(&stats, "flows_created"), 200, "{stats}");
    assert_eq!(sum(&stats, "datagrams_from_clients"), 600);
    assert_eq!(sum(&stats, "datagrams_to_clients"), 600);
    assert_eq!(sum(&stats, "bytes_from_clients"), bytes);
    // Each answer is the backend's name, a bar, then the datagram.
    assert_eq!(sum(&stats, "bytes_to_clients"), bytes + 600 * 4);
    let flows = dump(&n, "UDP_NAT_FLOWS");
    assert_eq!(flows.as_array().unwrap().len(), 400, "two entries per flow");
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
