//! What survives what: a second agent taking over (upgrade), kill -9 and a
//! restart (crash), SIGTERM (graceful drain). Every transfer is checksummed.
use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sockgate_tests::agent::wait_for_log;
use sockgate_tests::cgroup::Cgroup;
use sockgate_tests::harness::{serve, GatewayNode};
use sockgate_tests::integrity::{exchange, pattern, receive_to_eof, send_then_fin, Received};
use sockgate_tests::manifests::{documents, gateway, route, service};
use sockgate_tests::netns::unique_name;
use sockgate_tests::workspace_bin;

const BULK: u16 = 9000;
const SMALL: u16 = 9001;
const MIB: usize = 1 << 20;

fn manifests() -> String {
    documents(&[
        gateway(&[("bulk", BULK), ("small", SMALL)]),
        route("bulk", "bulk", "bulk", 7001),
        route("small", "small", "small", 7003),
        service("bulk", 7001, 7000, &["198.18.2.2"]),
        service("small", 7003, 7002, &["198.18.2.2"]),
    ])
}

/// The value after `key=` on the first log line containing `needle`.
fn logged(logs: &str, needle: &str, key: &str) -> Option<String> {
    let line = logs.lines().find(|l| l.contains(needle))?;
    let rest = &line[line.find(&format!("{key}="))? + key.len() + 1..];
    Some(rest.split_whitespace().next()?.trim_matches('"').to_string())
}

/// Opens connections to SMALL one after another until `stop`, each a
/// checksummed exchange; counts successes and failures (with the first error).
fn connection_loop(node: &GatewayNode, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    let reply = Received::of(&pattern(77, 4096));
    let addr = std::net::SocketAddr::new(sockgate_tests::topology::GATEWAY.into(), SMALL);
    node.hosts
        .client
        .spawn(move || {
            let (mut ok, mut failures) = (0, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let result = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).and_then(|stream| {
                    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
                    exchange(stream, pattern(5, 1000))
                });
                match result {
                    Ok(got) if got == reply => ok += 1,
                    Ok(got) => failures.push(format!("wrong reply: {got:?}")),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            (ok, failures)
        })
        .unwrap()
}

#[test]
fn a_second_agent_takes_over_a_2_gib_transfer_intact_and_no_new_connection_fails_meanwhile() {
    let mut node = GatewayNode::start(&[("all.yaml", manifests())], &[]).unwrap();
    let up = Arc::new(pattern(1, 1024 * MIB));
    let down = Arc::new(pattern(2, 1024 * MIB));
    let down_for_backend = down.clone();
    let backend = serve(&node.hosts.backend1, 7000, move |s: TcpStream| exchange(s, (*down_for_backend).clone()).unwrap()).unwrap();
    let _small = serve(&node.hosts.backend1, 7002, |s: TcpStream| exchange(s, pattern(77, 4096)).ok()).unwrap();
    node.wait_for_port(BULK).unwrap();
    node.wait_for_port(SMALL).unwrap();

    let client = node.connect(BULK).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let up_for_client = up.clone();
    let bulk = std::thread::spawn(move || exchange(client, (*up_for_client).clone()).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let looping = connection_loop(&node, stop.clone());
    std::thread::sleep(Duration::from_millis(400));

    let mut successor = node.start_successor(&[], |_| {}).unwrap();
    wait_for_log(&mut successor, "took over from the running agent", Duration::from_secs(30)).unwrap();
    let status = node.agent.wait_exit(Duration::from_secs(10));
    assert!(matches!(status, Some(s) if s.success()), "the old agent must exit cleanly after the handover: {status:?}\n{}", node.agent.logs());
    let old = std::mem::replace(&mut node.agent, successor);
    // Connections made now can only be served by the new agent.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (ok, failures) = looping.join().unwrap();

    let client_got = bulk.join().unwrap();
    let backend_got = backend.recv_timeout(Duration::from_secs(120)).unwrap();
    assert_eq!(backend_got, Received::of(&up), "client → backend corrupted across the takeover");
    assert_eq!(client_got, Received::of(&down), "backend → client corrupted across the takeover");
    assert!(failures.is_empty(), "{} of {} connections failed during the switch: {:?}", failures.len(), ok + failures.len(), &failures[..failures.len().min(5)]);
    assert!(ok > 10, "too few connections during the switch to prove anything ({ok})");

    let new_logs = node.agent.logs();
    let handed: usize = logged(&new_logs, "took over from the running agent", "connections").unwrap().parse().unwrap();
    assert!(handed >= 1, "the bulk connection must have been handed over:\n{new_logs}");
    let pause = logged(&old.logs(), "handed over to a new agent", "pause").unwrap();
    eprintln!("takeover: {handed} connections handed over, old agent paused for {pause}; {ok} connections during the switch, none failed");
    // The old agent's listening sockets live on in the new one: same ports, still served.
    let got = exchange(node.connect(SMALL).unwrap(), pattern(5, 1000)).unwrap();
    assert_eq!(got, Received::of(&pattern(77, 4096)));
}

/// Programs attached to `cgroup` (bpftool's view), as "attach_type name" strings.
fn cgroup_programs(cgroup: &Cgroup) -> Vec<String> {
    let out = Command::new("bpftool").args(["-j", "cgroup", "show"]).arg(cgroup.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Array(vec![]));
    list.as_array().unwrap().iter().map(|p| format!("{} {}", p["attach_type"].as_str().unwrap_or("?"), p["name"].as_str().unwrap_or("?"))).collect()
}

#[test]
fn after_kill_9_the_next_agent_serves_within_a_second_and_nothing_stale_remains() {
    let cgroup = Cgroup::create().unwrap();
    let pin_dir = format!("/sys/fs/bpf/{}", unique_name("sockgate-test"));
    let cg = cgroup.path().to_str().unwrap().to_string();
    // The held connection stays on splice(2) (no handover for 60 s), so its
    // sockets die with the agent. A connection auto had handed to the kernel
    // splice would outlive it, and the restarted agent would inherit and
    // count it, as designed (kernel_splice_ends tests that case).
    let args = ["--dataplane", "auto", "--bpf-pin-dir", &pin_dir, "--cgroup", &cg, "--kernel-splice-after", "60s"];
    let mut node = GatewayNode::start_with(&[("all.yaml", manifests())], &args, |cmd| cgroup.enroll(cmd)).unwrap();
    let _small = serve(&node.hosts.backend1, 7002, |s: TcpStream| exchange(s, pattern(77, 4096)).ok()).unwrap();
    let _held = serve(&node.hosts.backend1, 7000, |mut s: TcpStream| receive_to_eof(&mut s).ok()).unwrap();
    node.wait_for_port(SMALL).unwrap();
    node.wait_for_log("eBPF listener maps pinned in").unwrap();
    let attached = cgroup_programs(&cgroup);
    assert_eq!(attached.len(), 3, "sock_ops and two cgroup_skb programs: {attached:?}");
    let mut open = node.connect(BULK).unwrap();
    std::thread::sleep(Duration::from_millis(200));

    node.agent.kill();
    // The kernel closed the dead agent's sockets: the client's connection ends.
    let mut buf = [0u8; 1];
    assert!(matches!(open.read(&mut buf), Ok(0) | Err(_)), "a connection of a killed agent cannot go on");

    let started = Instant::now();
    let successor = node.start_successor(&[], |cmd| cgroup.enroll(cmd)).unwrap();
    let served_after = loop {
        let attempt = node.connect(SMALL).and_then(|s| Ok(exchange(s, pattern(5, 1000))?));
        if matches!(&attempt, Ok(got) if *got == Received::of(&pattern(77, 4096))) {
            break started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the restarted agent never served:\n{}", successor.logs());
        std::thread::sleep(Duration::from_millis(5));
    };
    let _dead = std::mem::replace(&mut node.agent, successor);
    eprintln!("restart after kill -9: first checksummed exchange served {served_after:?} after the new agent was started");
    for line in node.agent.logs().lines().filter(|l| ["data path", "serving", "listening", "applied"].iter().any(|n| l.contains(n))) {
        eprintln!("  {line}");
    }
    assert!(served_after < Duration::from_secs(1), "serving took {served_after:?}:\n{}", node.agent.logs());
    node.wait_for_log("eBPF listener maps pinned in").unwrap();
    // The dead agent's programs went with it; its pins were replaced, not added to.
    assert_eq!(cgroup_programs(&cgroup).len(), 3, "{:?}", cgroup_programs(&cgroup));
    // Live connections are published once a tick (1 s): the exchange above
    // may still be counted in the last one. A connection of the dead agent
    // would stay counted; one that ended is gone by the next tick or two.
    let deadline = Instant::now() + Duration::from_secs(3);
    let view = loop {
        let out = Command::new(workspace_bin("gateway-agent").unwrap()).args(["inspect", "--bpf-pin-dir", &pin_dir, "--output", "json"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let idle = view["listeners"].as_array().unwrap().iter().all(|l| l["activeConnections"] == 0);
        if idle || Instant::now() > deadline {
            break view;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let listeners = view["listeners"].as_array().unwrap();
    assert_eq!(listeners.len(), 2, "{view}");
    for listener in listeners {
        assert_eq!(listener["activeConnections"], 0, "no connection of the dead agent is counted: {view}");
    }
    // The dead agent's counters carried over: it had accepted on BULK, the new one never did.
    let bulk = listeners.iter().find(|l| l["port"] == BULK).unwrap();
    assert!(bulk["connectionsAccepted"].as_u64().unwrap() >= 1, "counters carried over from the pinned map: {view}");
}

#[test]
fn sigterm_closes_the_listeners_at_once_and_lets_an_active_transfer_finish_intact() {
    let mut node = GatewayNode::start(&[("all.yaml", manifests())], &["--drain-timeout", "20s"]).unwrap();
    let reply = pattern(3, 64 * MIB);
    let reply_for_backend = reply.clone();
    let backend = serve(&node.hosts.backend1, 7000, move |mut s: TcpStream| {
        let got = receive_to_eof(&mut s).unwrap();
        // Slowly, so the transfer is still going when the agent is told to stop.
        for chunk in reply_for_backend.chunks(4 * MIB) {
            std::io::Write::write_all(&mut s, chunk).unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
        s.shutdown(std::net::Shutdown::Write).unwrap();
        got
    })
    .unwrap();
    node.wait_for_port(BULK).unwrap();
    let mut client = node.connect(BULK).unwrap();
    let request = pattern(4, MIB);
    send_then_fin(&mut client, &request).unwrap();
    let mut first = vec![0u8; 4096];
    client.read_exact(&mut first).unwrap();

    node.agent.terminate();
    node.wait_for_log("listeners closed; draining connections").unwrap();
    let refused = node.connect(BULK).unwrap_err().downcast::<std::io::Error>().unwrap();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "a new connection after SIGTERM is refused cleanly");
    assert_eq!(first, reply[..4096]);
    let rest = receive_to_eof(&mut client).unwrap();
    assert_eq!(rest, Received::of(&reply[4096..]), "the drained transfer arrived intact");
    assert_eq!(backend.recv_timeout(Duration::from_secs(30)).unwrap(), Received::of(&request));
    let status = node.agent.wait_exit(Duration::from_secs(10));
    assert!(matches!(status, Some(s) if s.success()), "the agent exits by itself once drained: {status:?}");
    assert!(node.agent.logs().contains(", 0 still open at the deadline and reset"), "{}", node.agent.logs());
}

#[test]
fn sigterm_resets_connections_still_open_at_the_drain_deadline() {
    let mut node = GatewayNode::start(&[("all.yaml", manifests())], &["--drain-timeout", "1s"]).unwrap();
    let _held = serve(&node.hosts.backend1, 7000, |mut s: TcpStream| receive_to_eof(&mut s).ok()).unwrap();
    node.wait_for_port(BULK).unwrap();
    let mut idle = node.connect(BULK).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let signalled = Instant::now();
    node.agent.terminate();
    let status = node.agent.wait_exit(Duration::from_secs(5));
    assert!(matches!(status, Some(s) if s.success()), "{status:?}\n{}", node.agent.logs());
    let took = signalled.elapsed();
    assert!(took >= Duration::from_millis(900), "the idle connection was given its deadline (exited after {took:?})");
    let mut buf = [0u8; 1];
    let ended = idle.read(&mut buf);
    assert!(matches!(&ended, Err(e) if e.kind() == ErrorKind::ConnectionReset), "reset at the deadline, not closed: {ended:?}");
    assert!(node.agent.logs().contains(", 1 still open at the deadline and reset"), "{}", node.agent.logs());
}
