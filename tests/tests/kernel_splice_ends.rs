//! How connections the kernel splice carries end when the agent ends them
//! (the idle timeout, a route removed), and what becomes of them when the
//! agent goes: handed over to a successor, or killed. Each connection is
//! first proven to be in the kernel (the agent's log), and what each peer
//! sees at the end is asserted on both sides.
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use sockgate_tests::agent::wait_for_log;
use sockgate_tests::harness::{serve, GatewayNode};
use sockgate_tests::integrity::{exchange, pattern, Received};
use sockgate_tests::manifests::{documents, gateway, route, service};

const BACKEND_PORT: u16 = 7000;
const MIB: usize = 1 << 20;

/// How one backend connection ended, with the first bytes it received (the
/// gateway's port probes reach the backend too, carrying nothing).
type BackendEnd = (Vec<u8>, Result<(), ErrorKind>);

/// An echo backend that reports how each of its connections ended.
fn echo_backend(node: &GatewayNode) -> Receiver<BackendEnd> {
    serve(&node.hosts.backend1, BACKEND_PORT, |mut s: TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; 4096];
        let mut first = Vec::new();
        loop {
            match s.read(&mut buf) {
                Ok(0) => return (first, Ok(())),
                Ok(n) => {
                    if first.is_empty() {
                        first = buf[..n.min(8)].to_vec();
                    }
                    if let Err(e) = s.write_all(&buf[..n]) {
                        return (first, Err(e.kind()));
                    }
                }
                Err(e) => return (first, Err(e.kind())),
            }
        }
    })
    .unwrap()
}

/// How the backend connection whose first bytes came from `pattern(seed, _)` ended.
fn backend_end(backend: &Receiver<BackendEnd>, seed: u64) -> Result<(), ErrorKind> {
    let first = pattern(seed, 8);
    loop {
        let (got, end) = backend.recv_timeout(Duration::from_secs(5)).expect("the backend connection never ended");
        if got == first {
            return end;
        }
    }
}

fn round_trip(s: &mut TcpStream, seed: u64) {
    let data = pattern(seed, 1000);
    s.write_all(&data).unwrap();
    let mut back = vec![0u8; data.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, data, "echo {seed} corrupted");
}

/// Waits until the agent has logged each of `clients`' connections as spliced in the kernel.
fn wait_spliced(node: &GatewayNode, clients: &[&TcpStream]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    for client in clients {
        let line = format!("connection spliced in the kernel client={}", client.local_addr().unwrap());
        while node.log_count(&line) == 0 {
            assert!(Instant::now() < deadline, "not spliced: {line}\n{}", node.agent.logs());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Waits until the agent has logged `needle` more than `seen` times; fails with `why` and the log after 10 s.
fn wait_logged_more(node: &GatewayNode, needle: &str, seen: usize, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.log_count(needle) <= seen {
        assert!(Instant::now() < deadline, "{why}:\n{}", node.agent.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How the next read on `s` ends, and when.
fn read_end(mut s: TcpStream) -> std::thread::JoinHandle<(Result<usize, ErrorKind>, Instant)> {
    std::thread::spawn(move || {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; 16];
        let got = s.read(&mut buf).map_err(|e| e.kind());
        (got, Instant::now())
    })
}

#[test]
fn the_idle_timeout_closes_a_quiet_spliced_connection_with_a_fin_to_both_sides_and_leaves_a_busy_one_alone() {
    let yaml = documents(&[
        gateway(&[("echo", 9000)]),
        route("echo", "echo", "echo", 7001),
        service("echo", 7001, BACKEND_PORT, &["198.18.2.2"]),
        "apiVersion: sockgate.io/v1alpha1\nkind: ListenerPolicy\nmetadata: {name: idle}\nspec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]\n  idleTimeout: 1s\n".to_string(),
    ]);
    let node = GatewayNode::start(&[("all.yaml", yaml)], &["--dataplane", "ebpf"]).unwrap();
    let backend = echo_backend(&node);
    node.wait_for_port(9000).unwrap();
    let (mut quiet, mut busy) = (node.connect(9000).unwrap(), node.connect(9000).unwrap());
    round_trip(&mut quiet, 1);
    round_trip(&mut busy, 2);
    wait_spliced(&node, &[&quiet, &busy]);
    round_trip(&mut quiet, 3);
    let quiet_since = Instant::now();
    let waiting = read_end(quiet);
    // The busy one's bytes move only in the kernel: they must count as activity.
    for i in 0..10 {
        round_trip(&mut busy, 100 + i);
        std::thread::sleep(Duration::from_millis(300));
    }
    let (ended, at) = waiting.join().unwrap();
    // A FIN, as the userspace paths close an idle connection: each side reads
    // end-of-file (kernel_splice/path.rs, end_with_fins).
    assert_eq!(ended, Ok(0), "the quiet connection must be closed with a FIN, not reset");
    let after = at - quiet_since;
    assert!(after >= Duration::from_millis(1000) && after < Duration::from_millis(2500), "closed {after:?} after its last byte");
    assert_eq!(backend_end(&backend, 1), Ok(()), "the backend of the quiet connection must read end-of-file too");
    round_trip(&mut busy, 999);
}

#[test]
fn removing_a_route_resets_its_spliced_connections_on_both_sides_while_another_route_keeps_serving() {
    let files = [
        ("base.yaml", documents(&[gateway(&[("gone", 9000), ("kept", 9001)]), service("echo", 7001, BACKEND_PORT, &["198.18.2.2"])])),
        ("gone.yaml", route("gone", "gone", "echo", 7001)),
        ("kept.yaml", route("kept", "kept", "echo", 7001)),
    ];
    let node = GatewayNode::start(&files, &["--dataplane", "ebpf"]).unwrap();
    let backend = echo_backend(&node);
    node.wait_for_port(9000).unwrap();
    node.wait_for_port(9001).unwrap();
    let (mut doomed, mut kept) = (node.connect(9000).unwrap(), node.connect(9001).unwrap());
    round_trip(&mut doomed, 1);
    round_trip(&mut kept, 2);
    wait_spliced(&node, &[&doomed, &kept]);
    round_trip(&mut doomed, 3);
    let waiting = read_end(doomed);
    node.remove("gone.yaml").unwrap();
    let (ended, _) = waiting.join().unwrap();
    assert_eq!(ended, Err(ErrorKind::ConnectionReset), "a connection of the removed route must be reset");
    assert_eq!(backend_end(&backend, 1), Err(ErrorKind::ConnectionReset), "its backend must be reset too");
    for i in 0..5 {
        round_trip(&mut kept, 10 + i);
    }
    let mut fresh = node.connect(9001).unwrap();
    round_trip(&mut fresh, 20);
}

/// A starting agent that asks the running one for its state, reads the
/// handover to its end and goes without acknowledging it (as one that
/// crashed mid-way would): the running agent's handover fails.
fn fail_a_takeover(takeover_socket: &std::path::Path) {
    let conn = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::SEQPACKET, None).unwrap();
    conn.connect(&socket2::SockAddr::unix(takeover_socket).unwrap()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    (&conn).write_all(br#"J{"Hello":{"version":1}}"#).unwrap();
    // One record per read; the sockets passed with them are closed unread.
    let mut record = vec![0u8; 64 * 1024];
    loop {
        let n = (&conn).read(&mut record).expect("the running agent's handover never ended");
        assert!(n > 0, "the running agent closed the takeover socket before its handover ended");
        if record[..n].starts_with(br#"J{"End""#) {
            return;
        }
    }
}

#[test]
fn after_a_failed_takeover_the_agent_watches_its_spliced_connections_again_to_their_end() {
    let yaml = documents(&[gateway(&[("echo", 9000)]), route("echo", "echo", "echo", 7001), service("echo", 7001, BACKEND_PORT, &["198.18.2.2"])]);
    let node = GatewayNode::start(&[("all.yaml", yaml)], &["--dataplane", "ebpf"]).unwrap();
    let backend = echo_backend(&node);
    node.wait_for_port(9000).unwrap();
    let mut quiet = node.connect(9000).unwrap();
    round_trip(&mut quiet, 1);
    wait_spliced(&node, &[&quiet]);
    let ended = format!("connection ended peer={}", quiet.local_addr().unwrap());

    fail_a_takeover(&node.logs.path().join("takeover.sock"));
    wait_logged_more(&node, "the handover failed; this agent resumes everything", 0, "the handover never failed");
    // Its watch ended when the handover paused it (logged as an end).
    let before = node.log_count(&ended);
    // The listener serves again, and the spliced connection still echoes.
    let mut fresh = node.connect(9000).unwrap();
    round_trip(&mut fresh, 2);
    round_trip(&mut quiet, 3);
    assert!(node.log_count(&format!("connection spliced in the kernel client={}", quiet.local_addr().unwrap())) == 1, "it must not be spliced again");
    // Its end is seen again: a FIN each way, then the agent counts it out.
    quiet.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    quiet.read_to_end(&mut rest).unwrap();
    assert_eq!(backend_end(&backend, 1), Ok(()), "the backend sees the client's FIN");
    wait_logged_more(&node, &ended, before, "after the failed takeover nobody watched the spliced connection to its end");
}

#[test]
fn a_takeover_leaves_spliced_connections_in_the_kernel_and_the_new_agent_carries_them_to_their_end() {
    let yaml = documents(&[gateway(&[("echo", 9000), ("bulk", 9001)]), route("echo", "echo", "echo", 7001), route("bulk", "bulk", "bulk", 7002), service("echo", 7001, BACKEND_PORT, &["198.18.2.2"]), service("bulk", 7002, 7002, &["198.18.2.2"])]);
    let mut node = GatewayNode::start(&[("all.yaml", yaml)], &["--dataplane", "ebpf"]).unwrap();
    let backend = echo_backend(&node);
    let (up, down) = (pattern(11, 256 * MIB), pattern(12, 256 * MIB));
    let down_for_backend = down.clone();
    let bulk_backend = serve(&node.hosts.backend1, 7002, move |s: TcpStream| exchange(s, down_for_backend.clone()).unwrap()).unwrap();
    node.wait_for_port(9000).unwrap();
    node.wait_for_port(9001).unwrap();
    let mut quiet = node.connect(9000).unwrap();
    round_trip(&mut quiet, 1);
    let bulk = node.connect(9001).unwrap();
    bulk.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    wait_spliced(&node, &[&quiet, &bulk]);
    let up_for_client = up.clone();
    let streaming = std::thread::spawn(move || exchange(bulk, up_for_client).unwrap());

    let mut successor = node.start_successor(&[], |_| {}).unwrap();
    wait_for_log(&mut successor, "took over the connections an earlier agent left in the kernel splice", Duration::from_secs(30)).unwrap();
    let status = node.agent.wait_exit(Duration::from_secs(10));
    assert!(matches!(status, Some(s) if s.success()), "the old agent must exit after the handover: {status:?}\n{}", node.agent.logs());
    let _old = std::mem::replace(&mut node.agent, successor);

    // The transfer that crossed the takeover arrives whole, both ways.
    assert_eq!(streaming.join().unwrap(), Received::of(&down), "backend → client corrupted across the takeover");
    assert_eq!(bulk_backend.recv_timeout(Duration::from_secs(60)).unwrap(), Received::of(&up), "client → backend corrupted across the takeover");
    // The quiet one still echoes, through the kernel alone.
    round_trip(&mut quiet, 2);
    let logs = node.agent.logs();
    assert!(!logs.contains(&format!("connection spliced in the kernel client={}", quiet.local_addr().unwrap())), "the new agent must not have spliced it again");
    // Its end is the new agent's to see: a FIN each way, then the entries go.
    quiet.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    quiet.read_to_end(&mut rest).unwrap();
    assert_eq!(backend_end(&backend, 1), Ok(()), "the backend sees the client's FIN");
    wait_logged_more(&node, &format!("connection ended peer={}", quiet.local_addr().unwrap()), 0, "the new agent never saw the inherited connection end");
}

#[test]
fn after_a_kill_9_the_restarted_agent_carries_on_a_quiet_spliced_connection_and_one_that_sent_meanwhile_is_reset() {
    let yaml = documents(&[gateway(&[("echo", 9000)]), route("echo", "echo", "echo", 7001), service("echo", 7001, BACKEND_PORT, &["198.18.2.2"])]);
    let mut node = GatewayNode::start(&[("all.yaml", yaml)], &["--dataplane", "ebpf"]).unwrap();
    let _backend = echo_backend(&node);
    node.wait_for_port(9000).unwrap();
    let (mut quiet, mut talker) = (node.connect(9000).unwrap(), node.connect(9000).unwrap());
    round_trip(&mut quiet, 1);
    round_trip(&mut talker, 2);
    wait_spliced(&node, &[&quiet, &talker]);
    node.agent.kill();
    // With the agent, its TC programs went: the node's stack, which has no
    // socket for this connection, answers the talker's bytes with a reset.
    talker.write_all(&pattern(3, 1000)).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(talker.read(&mut buf).map_err(|e| e.kind()), Err(ErrorKind::ConnectionReset), "a segment sent while no agent runs is reset");
    let mut successor = node.start_successor(&[], |_| {}).unwrap();
    wait_for_log(&mut successor, "took over the connections an earlier agent left in the kernel splice", Duration::from_secs(30)).unwrap();
    node.agent = successor;
    round_trip(&mut quiet, 4);
    round_trip(&mut quiet, 5);
}

#[test]
fn after_a_kill_9_a_spliced_connection_whose_listener_is_gone_in_the_restarted_agents_config_is_reset_on_both_sides() {
    let yaml = documents(&[gateway(&[("echo", 9000)]), route("echo", "echo", "echo", 7001), service("echo", 7001, BACKEND_PORT, &["198.18.2.2"])]);
    let mut node = GatewayNode::start(&[("all.yaml", yaml)], &["--dataplane", "ebpf"]).unwrap();
    let backend = echo_backend(&node);
    node.wait_for_port(9000).unwrap();
    let mut quiet = node.connect(9000).unwrap();
    round_trip(&mut quiet, 1);
    wait_spliced(&node, &[&quiet]);
    node.agent.kill();
    // Meanwhile the Gateway lost that listener: the next agent serves another port only.
    node.write("all.yaml", &documents(&[gateway(&[("other", 9002)]), route("other", "other", "other", 7001), service("other", 7001, BACKEND_PORT, &["198.18.2.2"])])).unwrap();
    let client_end = read_end(quiet.try_clone().unwrap());
    let mut successor = node.start_successor(&[], |_| {}).unwrap();
    wait_for_log(&mut successor, "has no listener or route here: reset", Duration::from_secs(30)).unwrap();
    node.agent = successor;
    let (got, _) = client_end.join().unwrap();
    assert_eq!(got, Err(ErrorKind::ConnectionReset), "the client of a connection nobody serves any more is reset");
    assert_eq!(backend_end(&backend, 1), Err(ErrorKind::ConnectionReset), "and so is its backend");
    // What the new configuration serves, it serves.
    node.wait_for_port(9002).unwrap();
    let mut fresh = node.connect(9002).unwrap();
    round_trip(&mut fresh, 2);
}
