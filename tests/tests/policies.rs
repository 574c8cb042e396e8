//! ListenerPolicy and BackendPolicy, end to end in network namespaces: PROXY
//! protocol both ways, client CIDRs dropped in XDP, idle timeout, connection
//! limit, connect retries and outlier ejection, invalid policies. Every
//! payload is checksummed.
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gateway_agent::proxy_protocol::{self, Parsed, ProxyHeader};
use sockgate_tests::harness::{serve, GatewayNode};
use sockgate_tests::integrity::{pattern, receive_to_eof, send_then_fin, Received};
use sockgate_tests::manifests::{documents, gateway, route, service};
use sockgate_tests::netns::unique_name;
use sockgate_tests::status::{find, status_of};
use sockgate_tests::topology::GATEWAY;

const MIB: usize = 1 << 20;
const HEALTH: &str = "127.0.0.1:19090";

fn listener_policy(name: &str, section: Option<&str>, fields: &str) -> String {
    let section = section.map(|s| format!(", sectionName: {s}")).unwrap_or_default();
    format!("apiVersion: sockgate.io/v1alpha1\nkind: ListenerPolicy\nmetadata: {{name: {name}}}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw{section}}}]\n{fields}")
}

fn backend_policy(name: &str, service: &str, fields: &str) -> String {
    format!("apiVersion: sockgate.io/v1alpha1\nkind: BackendPolicy\nmetadata: {{name: {name}}}\nspec:\n  targetRefs: [{{group: \"\", kind: Service, name: {service}}}]\n{fields}")
}

/// Reads a PROXY header byte by byte (so no payload byte is taken with it).
fn read_proxy_header(stream: &mut TcpStream) -> ProxyHeader {
    let mut buf = Vec::new();
    loop {
        match proxy_protocol::parse(&buf).expect("a valid PROXY header") {
            Parsed::Header { header, consumed } => {
                assert_eq!(consumed, buf.len());
                return header;
            }
            Parsed::Incomplete { .. } => {
                let mut byte = [0u8; 1];
                stream.read_exact(&mut byte).unwrap();
                buf.push(byte[0]);
            }
        }
    }
}

/// A backend that reads a PROXY header, then the payload to its end.
fn proxy_backend(node: &GatewayNode, port: u16) -> mpsc::Receiver<Option<(ProxyHeader, Received)>> {
    serve(&node.hosts.backend1, port, |mut s: TcpStream| {
        let mut first = [0u8; 1];
        if s.peek(&mut first).ok()? == 0 {
            return None;
        }
        let header = read_proxy_header(&mut s);
        let payload = receive_to_eof(&mut s).ok()?;
        // A readiness probe connects and closes: the agent sends the header, and nothing follows.
        (payload.len > 0).then_some((header, payload))
    })
    .unwrap()
}

fn next_report<T>(rx: &mpsc::Receiver<Option<T>>) -> T {
    loop {
        if let Some(report) = rx.recv_timeout(Duration::from_secs(30)).unwrap() {
            return report;
        }
    }
}

/// A bpffs pin directory of the test's own, removed with whatever is in it.
struct PinDirRemovedOnDrop(String);

impl Drop for PinDirRemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The next report with a payload, if one comes within `timeout`.
fn next_report_within<T>(rx: &mpsc::Receiver<Option<T>>, timeout: Duration) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            Ok(Some(report)) => return Some(report),
            Ok(None) => continue,
            Err(_) => return None,
        }
    }
}

/// `GET path` of the agent's health endpoint, from inside the node.
fn metric(node: &GatewayNode, name: &str, port: u16) -> u64 {
    let body = node
        .hosts
        .node
        .enter(|| {
            let mut s = TcpStream::connect(HEALTH)?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok::<_, std::io::Error>(body)
        })
        .unwrap()
        .unwrap();
    let series = format!("{name}{{port=\"{port}\"}} ");
    body.lines().find_map(|l| l.strip_prefix(&series)).map(|v| v.parse().unwrap()).unwrap_or(0)
}

#[test]
fn proxy_protocol_v1_and_v2_tell_the_backend_the_clients_real_address_and_port_and_the_payload_follows_intact() {
    let yaml = documents(&[
        gateway(&[("one", 9000), ("two", 9001)]),
        route("one", "one", "one", 7001),
        route("two", "two", "two", 7003),
        service("one", 7001, 7000, &["198.18.2.2"]),
        service("two", 7003, 7002, &["198.18.2.2"]),
        backend_policy("v1", "one", "  proxyProtocol: {version: V1}\n"),
        backend_policy("v2", "two", "  proxyProtocol: {version: V2}\n"),
    ]);
    let node = GatewayNode::start(&[("all.yaml", yaml)], &[]).unwrap();
    let backends = [proxy_backend(&node, 7000), proxy_backend(&node, 7002)];
    for (i, port) in [9000u16, 9001].into_iter().enumerate() {
        node.wait_for_port(port).unwrap();
        let mut client = node.connect(port).unwrap();
        let me = client.local_addr().unwrap();
        let payload = pattern(10 + i as u64, 2 * MIB);
        send_then_fin(&mut client, &payload).unwrap();
        let (header, got) = next_report(&backends[i]);
        let version = if i == 0 { proxy_protocol::Version::V1 } else { proxy_protocol::Version::V2 };
        assert_eq!(header.version, version);
        assert_eq!(header.addresses, Some((me, SocketAddr::new(GATEWAY.into(), port))), "the backend sees the client host's own address and port");
        assert_eq!(got, Received::of(&payload), "the payload after the header arrives intact");
    }
}

#[test]
fn a_listener_behind_a_proxy_protocol_balancer_judges_and_forwards_the_address_from_the_header() {
    let yaml = documents(&[
        gateway(&[("lb", 9000)]),
        route("lb", "lb", "app", 7001),
        service("app", 7001, 7000, &["198.18.2.2"]),
        listener_policy("from-lb", Some("lb"), "  proxyProtocol: {accept: true}\n  clientCIDRs: {deny: [198.18.9.0/24]}\n"),
        backend_policy("to-app", "app", "  proxyProtocol: {version: V2}\n"),
    ]);
    let node = GatewayNode::start(&[("all.yaml", yaml)], &[]).unwrap();
    let backend = proxy_backend(&node, 7000);
    // The agent waits for a header that a bare readiness probe never sends: the port is up once it accepts.
    node.wait_for_port(9000).unwrap();
    let payload = pattern(3, MIB);
    let mut client = node.connect(9000).unwrap();
    let mut sent = proxy_protocol::encode_v1("198.18.8.8:4242".parse().unwrap(), SocketAddr::new(GATEWAY.into(), 9000));
    sent.extend_from_slice(&payload);
    send_then_fin(&mut client, &sent).unwrap();
    let (header, got) = next_report(&backend);
    assert_eq!(header.addresses.unwrap().0, "198.18.8.8:4242".parse().unwrap(), "the balancer's client, not the balancer");
    assert_eq!(got, Received::of(&payload));

    // A client the header says is denied is reset; the balancer's own address is allowed.
    // The reset may come as soon as the header is judged, before the bytes
    // after it are written: a write that meets it counts as the reset too.
    let mut denied = node.connect(9000).unwrap();
    denied.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut hello = proxy_protocol::encode_v2("198.18.9.9:5555".parse().unwrap(), SocketAddr::new(GATEWAY.into(), 9000));
    hello.extend_from_slice(b"hello");
    let reset = |e: &std::io::Error| matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe);
    match denied.write_all(&hello) {
        Err(e) => assert!(reset(&e), "{e}"),
        Ok(()) => {
            let mut buf = [0u8; 1];
            let ended = denied.read(&mut buf);
            assert!(matches!(&ended, Ok(0)) || matches!(&ended, Err(e) if reset(e)), "{ended:?}");
        }
    }
    assert!(next_report_within(&backend, Duration::from_millis(500)).is_none(), "nothing of the denied client reached the backend");
}

#[test]
fn xdp_drops_a_denied_clients_packets_counts_them_and_a_policy_change_applies_without_a_restart() {
    let pin_dir = format!("/sys/fs/bpf/{}", unique_name("sockgate-test"));
    // Declared before the agent, so dropped after it: its pins go even when
    // the agent is killed rather than stopped cleanly (CI runs left them).
    let _pins = PinDirRemovedOnDrop(pin_dir.clone());
    let deny = |fields: &str| {
        documents(&[
            gateway(&[("guarded", 9000), ("open", 9001)]),
            route("g", "guarded", "app", 7001),
            route("o", "open", "app", 7001),
            service("app", 7001, 7000, &["198.18.2.2"]),
            listener_policy("cidrs", Some("guarded"), fields),
        ])
    };
    let mut node = GatewayNode::start(
        &[("all.yaml", deny("  clientCIDRs: {deny: [198.18.1.1/32]}\n"))],
        &["--xdp-interface", "to-client", "--bpf-pin-dir", &pin_dir, "--health-address", HEALTH],
    )
    .unwrap();
    node.wait_for_log("XDP client filter attached").unwrap();
    node.wait_for_log("eBPF listener maps pinned in").unwrap();
    let reply = pattern(7, 64 * 1024);
    let reply_for_backend = reply.clone();
    let _backend = serve(&node.hosts.backend1, 7000, move |s: TcpStream| sockgate_tests::integrity::exchange(s, reply_for_backend.clone()).ok()).unwrap();
    node.wait_for_port(9001).unwrap();

    let try_connect = |port: u16| -> std::io::Result<Received> {
        let addr = SocketAddr::new(GATEWAY.into(), port);
        node.hosts
            .client
            .enter(move || {
                let s = TcpStream::connect_timeout(&addr, Duration::from_millis(800))?;
                // Short: a rule change can land mid-handshake (the SYN passed,
                // the client's ACK and data are dropped), and such an attempt
                // must not eat the whole wait below.
                s.set_read_timeout(Some(Duration::from_secs(3)))?;
                sockgate_tests::integrity::exchange(s, pattern(8, 4096))
            })
            .unwrap()
    };
    let dropped = try_connect(9000).unwrap_err();
    assert_eq!(dropped.kind(), ErrorKind::TimedOut, "a denied client's SYNs are dropped, not refused: {dropped}");
    assert_eq!(try_connect(9001).unwrap(), Received::of(&reply), "the listener without a policy is untouched");
    std::thread::sleep(Duration::from_millis(300));
    let drops = metric(&node, "sockgate_xdp_dropped_packets_total", 9000);
    assert!(drops >= 1, "the dropped SYNs are counted per listener (got {drops})");
    assert_eq!(metric(&node, "sockgate_connections_accepted_total", 9000), 0, "the TCP stack never saw them");
    let out = std::process::Command::new(sockgate_tests::workspace_bin("gateway-agent").unwrap())
        .args(["inspect", "--bpf-pin-dir", &pin_dir, "--output", "json"])
        .output()
        .unwrap();
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let guarded = view["listeners"].as_array().into_iter().flatten().find(|l| l["port"] == 9000).cloned().unwrap_or_default();
    assert!(guarded["xdpDroppedPackets"].as_u64().unwrap_or(0) >= drops, "inspect shows the XDP drops: {view}");

    // Allowing the client: the next connection passes, no restart.
    node.write("all.yaml", &deny("  clientCIDRs: {allow: [198.18.1.0/24]}\n")).unwrap();
    let started = Instant::now();
    let passed = loop {
        if let Ok(got) = try_connect(9000) {
            break got;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the allow list never took effect:\n{}", node.agent.logs());
    };
    assert_eq!(passed, Received::of(&reply));
    // An allow list without the client: dropped again.
    node.write("all.yaml", &deny("  clientCIDRs: {allow: [198.18.7.0/24]}\n")).unwrap();
    // The accept-time check may reset a connection before the XDP rules are
    // rewritten (both apply the same change, a moment apart): what must come
    // is the drop in XDP, a connect that times out.
    let started = Instant::now();
    loop {
        match try_connect(9000) {
            Err(e) if e.kind() == ErrorKind::TimedOut => break,
            _ => assert!(started.elapsed() < Duration::from_secs(10), "the new allow list never took effect in XDP"),
        }
    }
}

#[test]
fn idle_timeout_closes_a_quiet_connection_within_a_second_of_the_limit_and_leaves_a_busy_one_alone() {
    let yaml = documents(&[
        gateway(&[("echo", 9000)]),
        route("echo", "echo", "echo", 7001),
        service("echo", 7001, 7000, &["198.18.2.2"]),
        listener_policy("idle", None, "  idleTimeout: 1s\n"),
    ]);
    let node = GatewayNode::start(&[("all.yaml", yaml)], &[]).unwrap();
    let _echo = serve(&node.hosts.backend1, 7000, |mut s: TcpStream| {
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    })
    .unwrap();
    node.wait_for_port(9000).unwrap();
    let mut quiet = node.connect(9000).unwrap();
    let mut busy = node.connect(9000).unwrap();
    let round_trip = |s: &mut TcpStream, seed: u64| {
        let data = pattern(seed, 100);
        s.write_all(&data).unwrap();
        let mut back = vec![0u8; data.len()];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, data);
    };
    round_trip(&mut quiet, 1);
    let quiet_since = Instant::now();
    let waiting = std::thread::spawn(move || {
        let mut buf = [0u8; 1];
        let ended = quiet.read(&mut buf);
        (ended.map_err(|e| e.kind()), quiet_since.elapsed())
    });
    for i in 0..10 {
        round_trip(&mut busy, 100 + i);
        std::thread::sleep(Duration::from_millis(300));
    }
    let (ended, after) = waiting.join().unwrap();
    assert_eq!(ended, Ok(0), "the quiet connection is closed (FIN), not reset");
    assert!(after >= Duration::from_millis(1000) && after < Duration::from_millis(2000), "closed {after:?} after its last byte");
    round_trip(&mut busy, 999);
}

#[test]
fn max_connections_resets_the_excess_and_a_freed_slot_serves_again() {
    let yaml = documents(&[
        gateway(&[("small", 9000)]),
        route("small", "small", "held", 7001),
        service("held", 7001, 7000, &["198.18.2.2"]),
        listener_policy("limit", Some("small"), "  maxConnections: 2\n"),
    ]);
    let node = GatewayNode::start(&[("all.yaml", yaml)], &["--health-address", HEALTH]).unwrap();
    let _held = serve(&node.hosts.backend1, 7000, |mut s: TcpStream| {
        let got = receive_to_eof(&mut s).ok();
        let _ = send_then_fin(&mut s, &pattern(5, 1000));
        got
    })
    .unwrap();
    node.wait_for_port(9000).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let first = node.connect(9000).unwrap();
    let mut second = node.connect(9000).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let third = node.refusal(9000);
    assert!(matches!(third, ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof), "the third connection is reset: {third:?}");
    std::thread::sleep(Duration::from_millis(100));
    assert!(metric(&node, "sockgate_connections_over_limit_total", 9000) >= 1);
    // The two held connections still work, and once one ends a new one is served.
    send_then_fin(&mut second, b"bye").unwrap();
    assert_eq!(receive_to_eof(&mut second).unwrap(), Received::of(&pattern(5, 1000)));
    drop(second);
    std::thread::sleep(Duration::from_millis(200));
    let mut again = node.connect(9000).unwrap();
    send_then_fin(&mut again, b"hi").unwrap();
    assert_eq!(receive_to_eof(&mut again).unwrap(), Received::of(&pattern(5, 1000)));
    drop(first);
}

#[test]
fn a_failed_connect_is_retried_on_another_endpoint_and_the_failing_one_is_ejected_until_its_time_is_up() {
    let yaml = documents(&[
        gateway(&[("app", 9000)]),
        route("app", "app", "app", 7001),
        service("app", 7001, 7000, &["198.18.2.2", "198.18.3.2"]),
        backend_policy("resilient", "app", "  retries: {attempts: 1}\n  outlierDetection: {consecutiveConnectFailures: 1, ejectionTime: 3s}\n"),
    ]);
    let node = GatewayNode::start(&[("all.yaml", yaml)], &["--health-address", HEALTH]).unwrap();
    let who = |name: &'static str| move |mut s: TcpStream| send_then_fin(&mut s, name.as_bytes()).ok();
    let _one = serve(&node.hosts.backend1, 7000, who("one")).unwrap();
    node.wait_for_port(9000).unwrap();
    let ask = || {
        let mut s = node.connect(9000).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
    };
    // backend2 refuses (nothing listens there): each connection still gets an answer.
    let failures_before = metric(&node, "sockgate_backend_connect_failures_total", 9000);
    let answers: Vec<String> = (0..8).map(|_| ask()).collect();
    assert!(answers.iter().all(|a| a == "one"), "{answers:?}");
    let failures = metric(&node, "sockgate_backend_connect_failures_total", 9000) - failures_before;
    assert_eq!(failures, 1, "after one failure backend2 is ejected and not tried again");
    assert_eq!(metric(&node, "sockgate_backend_ejections_total", 9000), 1);

    // backend2 comes back; after the ejection time it gets connections again.
    let _two = serve(&node.hosts.backend2, 7000, who("two")).unwrap();
    std::thread::sleep(Duration::from_millis(3200));
    let answers: Vec<String> = (0..6).map(|_| ask()).collect();
    assert!(answers.iter().any(|a| a == "two"), "backend2 is back in rotation: {answers:?}");
}

#[test]
fn invalid_policies_get_a_status_condition_and_change_nothing_else() {
    let yaml = documents(&[
        gateway(&[("app", 9000)]),
        route("app", "app", "app", 7001),
        service("app", 7001, 7000, &["198.18.2.2"]),
        listener_policy("bad-cidr", None, "  clientCIDRs: {deny: [198.18.1.1/40]}\n"),
        listener_policy("negative", None, "  idleTimeout: 0s\n"),
        "apiVersion: sockgate.io/v1alpha1\nkind: ListenerPolicy\nmetadata: {name: ghost}\nspec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: nowhere}]\n  maxConnections: 1\n".to_string(),
    ]);
    let node = GatewayNode::start(&[("all.yaml", yaml)], &[]).unwrap();
    let docs = status_of(node.manifests.path()).unwrap();
    let reason = |name: &str| {
        let c = &find(&docs, "ListenerPolicy", name)["status"]["ancestors"][0]["conditions"][0];
        (c["type"].as_str().unwrap().to_string(), c["status"].as_str().unwrap().to_string(), c["reason"].as_str().unwrap().to_string())
    };
    assert_eq!(reason("bad-cidr"), ("Accepted".into(), "False".into(), "Invalid".into()));
    assert_eq!(reason("negative"), ("Accepted".into(), "False".into(), "Invalid".into()));
    assert_eq!(reason("ghost"), ("Accepted".into(), "False".into(), "TargetNotFound".into()));
    // Traffic is untouched: the client the bad policy meant to deny still connects.
    let reply = pattern(9, 256 * 1024);
    let reply_for_backend = reply.clone();
    let _backend = serve(&node.hosts.backend1, 7000, move |s: TcpStream| sockgate_tests::integrity::exchange(s, reply_for_backend.clone()).ok()).unwrap();
    node.wait_for_port(9000).unwrap();
    let got = sockgate_tests::integrity::exchange(node.connect(9000).unwrap(), pattern(4, 1000)).unwrap();
    assert_eq!(got, Received::of(&reply));
    assert!(node.agent.logs().contains("ListenerPolicy default/bad-cidr -> Gateway default/gw: Accepted=False/Invalid"), "{}", node.agent.logs());
}

#[test]
fn the_example_policies_attach_to_the_guides_objects_and_are_all_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let root = sockgate_tests::workspace_root();
    for folder in ["examples/tcp-routing", "examples/policies"] {
        for entry in std::fs::read_dir(root.join(folder)).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let docs = status_of(dir.path()).unwrap();
    let policies: Vec<&serde_json::Value> = docs.iter().filter(|d| d["kind"] == "ListenerPolicy" || d["kind"] == "BackendPolicy").collect();
    assert_eq!(policies.len(), 5, "every example policy has a status");
    for p in policies {
        for a in p["status"]["ancestors"].as_array().unwrap() {
            assert_eq!(a["conditions"][0]["reason"], "Accepted", "{p}");
        }
    }
}

/// A client that vanishes without a FIN or RST (every packet to and from it
/// dropped): the listener's tcpKeepalive probes go unanswered and the gateway
/// lets the connection go after idleTime + probes × interval, closing the
/// backend's side too, instead of holding both for ever. On the userspace
/// paths; on the kernel path keepalive stops at the handover (idleTimeout
/// takes its place there).
#[test]
fn tcp_keepalive_lets_go_of_a_client_that_vanished_and_closes_its_backend_connection() {
    for dataplane in ["copy", "splice"] {
        let yaml = documents(&[
            gateway(&[("echo", 9000)]),
            route("echo", "echo", "echo", 7001),
            service("echo", 7001, 7000, &["198.18.2.2"]),
            listener_policy("alive", None, "  tcpKeepalive: {idleTime: 1s, interval: 1s, probes: 2}\n"),
        ]);
        let node = GatewayNode::start(&[("all.yaml", yaml)], &["--dataplane", dataplane]).unwrap();
        // The backend greets, then reports when its side of the connection ends.
        let ended = serve(&node.hosts.backend1, 7000, |mut s: TcpStream| {
            s.write_all(b"hi").ok()?;
            let mut buf = [0u8; 64];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return Some(Instant::now()),
                    Ok(_) => {}
                }
            }
        })
        .unwrap();
        node.wait_for_port(9000).unwrap();
        let mut client = node.connect(9000).unwrap();
        let mut hello = [0u8; 2];
        client.read_exact(&mut hello).unwrap();
        assert_eq!(&hello, b"hi");
        // The client's host goes dark: nothing in, nothing out, no RST.
        for chain in ["INPUT", "OUTPUT"] {
            let out = node.hosts.client.command("iptables").args(["-A", chain, "-j", "DROP"]).output().unwrap();
            assert!(out.status.success(), "iptables: {}", String::from_utf8_lossy(&out.stderr));
        }
        let dark = Instant::now();
        // Connections that ended before (wait_for_port's probe) are not this one.
        let after = loop {
            let at = ended.recv_timeout(Duration::from_secs(15)).unwrap_or_else(|_| panic!("{dataplane}: the backend's connection is still open 15 s after its client vanished; agent log:\n{}", node.agent.logs()));
            match at {
                Some(at) if at > dark => break at - dark,
                _ => continue,
            }
        };
        // 1 s quiet + 2 probes 1 s apart = about 3 s; the kernel's default would be 2 hours.
        assert!(after >= Duration::from_millis(1500) && after < Duration::from_secs(8), "{dataplane}: closed {after:?} after the client vanished");
        drop(client);
    }
}

/// loadBalancer ConsistentHash on a route: every connection from one client
/// address reaches the same endpoint, where the default round robin
/// alternates between the two (the control, in the same test).
#[test]
fn consistent_hash_sends_every_connection_of_a_client_to_one_endpoint_where_round_robin_alternates() {
    let names = |policy: &str| -> std::collections::BTreeSet<String> {
        let mut docs = vec![gateway(&[("echo", 9000)]), route("echo", "echo", "echo", 7001), service("echo", 7001, 7000, &["198.18.2.2", "198.18.3.2"])];
        if !policy.is_empty() {
            docs.push(policy.to_string());
        }
        let node = GatewayNode::start(&[("all.yaml", documents(&docs))], &["--dataplane", "splice"]).unwrap();
        let _one = serve(&node.hosts.backend1, 7000, |mut s: TcpStream| s.write_all(b"one")).unwrap();
        let _two = serve(&node.hosts.backend2, 7000, |mut s: TcpStream| s.write_all(b"two")).unwrap();
        node.wait_for_port(9000).unwrap();
        (0..20)
            .map(|_| {
                let mut s = node.connect(9000).unwrap();
                let mut name = String::new();
                s.read_to_string(&mut name).unwrap();
                name
            })
            .collect()
    };
    let hashed = names("apiVersion: sockgate.io/v1alpha1\nkind: BackendPolicy\nmetadata: {name: sticky}\nspec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: TCPRoute, name: echo}]\n  loadBalancer: {type: ConsistentHash}\n");
    assert_eq!(hashed.len(), 1, "one client address, one endpoint: {hashed:?}");
    assert_eq!(names(""), ["one".to_string(), "two".to_string()].into(), "round robin uses both");
}

/// The value of one series of the agent's /metrics whose labels start with `labels`.
fn series(node: &GatewayNode, name: &str, labels: &str) -> Option<f64> {
    let body = node.health_get(HEALTH, "/metrics").unwrap();
    let prefix = format!("{name}{{{labels}");
    body.lines().find(|l| l.starts_with(&prefix)).and_then(|l| l.rsplit(' ').next()).map(|v| v.parse().unwrap())
}

fn wait_for_series(node: &GatewayNode, name: &str, labels: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while series(node, name, labels) != Some(value) {
        assert!(Instant::now() < deadline, "{name}{{{labels}…}} never became {value}: {:?}\n{}", series(node, name, labels), node.agent.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An echo backend that says its `name` first, then answers a health check's
/// `PING` with `PONG` (or `FAIL` while `sick`), and holds a client's
/// connection until the client closes it.
fn named_backend(name: &'static str, sick: std::sync::Arc<std::sync::atomic::AtomicBool>) -> impl Fn(TcpStream) + Send + Sync + Clone + 'static {
    move |mut s: TcpStream| {
        let _ = s.write_all(name.as_bytes());
        let mut asked = [0u8; 5];
        if s.read_exact(&mut asked).is_ok() && &asked == b"PING\n" {
            let _ = s.write_all(if sick.load(std::sync::atomic::Ordering::SeqCst) { b"FAIL" } else { b"PONG" });
        }
    }
}

/// Connects and reads the backend's name (four bytes), keeping the connection open.
fn named_connection(node: &GatewayNode) -> (TcpStream, String) {
    let mut s = node.connect(9000).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut name = [0u8; 4];
    s.read_exact(&mut name).unwrap();
    (s, String::from_utf8_lossy(&name).into_owned())
}

#[test]
fn an_active_health_check_keeps_new_connections_off_an_endpoint_that_fails_it_until_it_passes_again() {
    use std::sync::{atomic::AtomicBool, atomic::Ordering, Arc};
    let check = "  healthCheck: {interval: 200ms, timeout: 1s, unhealthyThreshold: 1, healthyThreshold: 2, send: {text: \"PING\\n\"}, receive: {text: PONG}}\n";
    let docs = [gateway(&[("echo", 9000)]), route("echo", "echo", "echo", 7001), service("echo", 7001, 7000, &["198.18.2.2", "198.18.3.2"]), backend_policy("check", "echo", check)];
    let node = GatewayNode::start(&[("all.yaml", documents(&docs))], &["--dataplane", "splice", "--health-address", HEALTH]).unwrap();
    let sick = Arc::new(AtomicBool::new(true));
    let _one = serve(&node.hosts.backend1, 7000, named_backend("one:", Arc::new(AtomicBool::new(false)))).unwrap();
    let _two = serve(&node.hosts.backend2, 7000, named_backend("two:", sick.clone())).unwrap();
    node.wait_for_port(9000).unwrap();
    // The backends started after the agent: its first checks may have found nothing listening.
    wait_for_series(&node, "sockgate_backend_endpoint_healthy", "endpoint=\"198.18.2.2:7000\"", 1.0);
    wait_for_series(&node, "sockgate_backend_endpoint_healthy", "endpoint=\"198.18.3.2:7000\"", 0.0);
    let names: Vec<String> = (0..20).map(|_| named_connection(&node).1).collect();
    assert!(names.iter().all(|n| n == "one:"), "no connection reaches the endpoint failing its check: {names:?}");
    // inspect shows the verdict and why. The agent writes the checks' file
    // once a tick (1 s), so the verdicts above may be newer than it: retried.
    let deadline = Instant::now() + Duration::from_secs(5);
    let two = loop {
        let out = std::process::Command::new(sockgate_tests::workspace_bin("gateway-agent").unwrap())
            .args(["inspect", "--output", "json", "--bpf-pin-dir", "/nonexistent/sockgate-health-test", "--backend-health-file"])
            .arg(node.logs.path().join("backend-health.json"))
            .output()
            .unwrap();
        let listed = out.status.success().then(|| serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()).and_then(|view| {
            view["backendHealthChecks"].as_array()?.iter().find(|c| c["endpoint"] == "198.18.3.2:7000" && c["healthy"] == false).cloned()
        });
        if let Some(found) = listed {
            break found;
        }
        assert!(Instant::now() < deadline, "inspect never listed the failing check: {} {}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(two["healthy"], false, "{two}");
    assert!(two["lastFailure"].as_str().unwrap_or("").contains("without answering \"PONG\""), "{two}");
    assert!(node.log_count("endpoint failed its health check") >= 1, "the log says so");
    // Healed: back in the pick after two passes in a row.
    sick.store(false, Ordering::SeqCst);
    wait_for_series(&node, "sockgate_backend_endpoint_healthy", "endpoint=\"198.18.3.2:7000\"", 1.0);
    let names: std::collections::BTreeSet<String> = (0..20).map(|_| named_connection(&node).1).collect();
    assert_eq!(names, ["one:".to_string(), "two:".to_string()].into(), "both endpoints serve again");
}

#[test]
fn least_connections_sends_new_connections_to_the_endpoint_with_fewer_open_where_round_robin_would_alternate() {
    use std::sync::{atomic::AtomicBool, Arc};
    let policy = "apiVersion: sockgate.io/v1alpha1\nkind: BackendPolicy\nmetadata: {name: least}\nspec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: TCPRoute, name: echo}]\n  loadBalancer: {type: LeastConnections}\n";
    let docs = [gateway(&[("echo", 9000)]), route("echo", "echo", "echo", 7001), service("echo", 7001, 7000, &["198.18.2.2", "198.18.3.2"]), policy.to_string()];
    let node = GatewayNode::start(&[("all.yaml", documents(&docs))], &["--dataplane", "splice", "--health-address", HEALTH]).unwrap();
    let _one = serve(&node.hosts.backend1, 7000, named_backend("one:", Arc::new(AtomicBool::new(false)))).unwrap();
    let _two = serve(&node.hosts.backend2, 7000, named_backend("two:", Arc::new(AtomicBool::new(false)))).unwrap();
    node.wait_for_port(9000).unwrap();
    let mut held: Vec<(TcpStream, String)> = (0..4).map(|_| named_connection(&node)).collect();
    let first = held[0].1.clone();
    assert_eq!(held.iter().filter(|(_, n)| *n == first).count(), 2, "equal loads take turns: {:?}", held.iter().map(|h| &h.1).collect::<Vec<_>>());
    let (first_endpoint, other_endpoint) = if first == "one:" { ("198.18.2.2:7000", "198.18.3.2:7000") } else { ("198.18.3.2:7000", "198.18.2.2:7000") };
    wait_for_series(&node, "sockgate_backend_endpoint_connections", &format!("endpoint=\"{first_endpoint}\""), 2.0);
    // Both of one endpoint's connections end: it has 0 open, the other 2.
    held.retain(|(_, n)| *n != first);
    let deadline = Instant::now() + Duration::from_secs(10);
    while series(&node, "sockgate_backend_endpoint_connections", &format!("endpoint=\"{first_endpoint}\"")).is_some() {
        assert!(Instant::now() < deadline, "the closed connections are never counted out");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(series(&node, "sockgate_backend_endpoint_connections", &format!("endpoint=\"{other_endpoint}\"")), Some(2.0));
    // Round robin would now alternate; the least loaded endpoint takes both.
    let next: Vec<String> = (0..2).map(|_| named_connection(&node)).map(|(s, n)| {
        held.push((s.try_clone().unwrap(), n.clone()));
        n
    }).collect();
    assert_eq!(next, [first.clone(), first], "both new connections go to the endpoint that had none");
}

#[test]
fn behind_a_proxy_protocol_balancer_consistent_hash_follows_the_address_in_the_header_not_the_balancer() {
    let docs = [
        gateway(&[("echo", 9000)]),
        route("echo", "echo", "echo", 7001),
        service("echo", 7001, 7000, &["198.18.2.2", "198.18.3.2"]),
        listener_policy("from-lb", Some("echo"), "  proxyProtocol: {accept: true}\n"),
        "apiVersion: sockgate.io/v1alpha1\nkind: BackendPolicy\nmetadata: {name: sticky}\nspec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: TCPRoute, name: echo}]\n  loadBalancer: {type: ConsistentHash}\n".to_string(),
    ];
    let node = GatewayNode::start(&[("all.yaml", documents(&docs))], &["--dataplane", "splice"]).unwrap();
    let _one = serve(&node.hosts.backend1, 7000, named_backend("one:", std::sync::Arc::default())).unwrap();
    let _two = serve(&node.hosts.backend2, 7000, named_backend("two:", std::sync::Arc::default())).unwrap();
    node.wait_for_port(9000).unwrap();
    // Every connection comes from the one balancer address (the client host);
    // the header names 16 different clients, each three times.
    let endpoint_of = |client: u8| -> String {
        let mut s = node.connect(9000).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&proxy_protocol::encode_v2(SocketAddr::from(([203, 0, 113, client], 40000 + u16::from(client))), SocketAddr::new(GATEWAY.into(), 9000))).unwrap();
        let mut name = [0u8; 4];
        s.read_exact(&mut name).unwrap();
        String::from_utf8_lossy(&name).into_owned()
    };
    let mut seen = std::collections::BTreeSet::new();
    for client in 1..=16u8 {
        let first = endpoint_of(client);
        for _ in 0..2 {
            assert_eq!(endpoint_of(client), first, "client 203.0.113.{client} keeps its endpoint");
        }
        seen.insert(first);
    }
    assert_eq!(seen, ["one:".to_string(), "two:".to_string()].into(), "the declared clients spread over both endpoints, though one balancer sent them all");
}
