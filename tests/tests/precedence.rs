//! Standalone mode's order of precedence survives restarts and takeovers: the
//! route that was there first keeps its listener, and `check` reports what the
//! running agent does. (Before, every object counted as first seen at start-up,
//! so a restart handed the port to whichever route sorted first by name.)
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use sockgate_tests::agent::wait_for_log;
use sockgate_tests::harness::{serve, GatewayNode};
use sockgate_tests::manifests::{documents, gateway, route, service};
use sockgate_tests::workspace_bin;

fn answer(node: &GatewayNode) -> String {
    let mut got = String::new();
    node.connect(9000).unwrap().read_to_string(&mut got).unwrap();
    got
}

fn check_says(node: &GatewayNode) -> String {
    let out = Command::new(workspace_bin("gateway-agent").unwrap()).args(["check", "--manifests"]).arg(node.manifests.path()).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().find(|l| l.starts_with("port 9000:")).unwrap_or_default().to_string()
}

#[test]
fn the_route_seen_first_keeps_its_port_across_a_takeover_and_a_restart_and_check_agrees() {
    let mut node = GatewayNode::start(&[("gw.yaml", gateway(&[("a", 9000)])), ("zeta.yaml", documents(&[route("zeta", "a", "zeta", 7002), service("zeta", 7002, 7002, &["198.18.2.2"])]))], &["--dataplane", "userspace"]).unwrap();
    for (port, name) in [(7002, "zeta"), (7003, "alpha")] {
        let _ = serve(&node.hosts.backend1, port, move |mut s: TcpStream| {
            let _ = s.write_all(name.as_bytes());
        })
        .unwrap();
    }
    node.wait_for_port(9000).unwrap();
    // alpha comes later, to the same listener: zeta, the older, keeps it.
    let before = node.log_count("configuration applied");
    node.write("alpha.yaml", &documents(&[route("alpha", "a", "alpha", 7003), service("alpha", 7003, 7003, &["198.18.2.2"])])).unwrap();
    while node.log_count("configuration applied") == before {
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(answer(&node), "zeta");
    assert!(check_says(&node).contains("zeta"), "check reports the running agent's winner: {}\n{:?}", check_says(&node), std::fs::read_dir(node.manifests.path()).unwrap().map(|e| e.unwrap().path()).collect::<Vec<_>>());

    // A takeover (an upgrade): the new agent reads the same first-seen times.
    let mut successor = node.start_successor(&[], |_| {}).unwrap();
    wait_for_log(&mut successor, "configuration applied", Duration::from_secs(30)).unwrap();
    let _old = std::mem::replace(&mut node.agent, successor);
    assert_eq!(answer(&node), "zeta", "a takeover must not change the winner:\n{}", node.agent.logs());

    // A plain restart: SIGTERM, then a fresh agent.
    assert!(node.agent.stop(Duration::from_secs(30)), "the agent drains and exits on SIGTERM");
    let mut fresh = node.start_successor(&[], |_| {}).unwrap();
    wait_for_log(&mut fresh, "configuration applied", Duration::from_secs(30)).unwrap();
    node.agent = fresh;
    node.wait_for_port(9000).unwrap();
    assert_eq!(answer(&node), "zeta", "a restart must not change the winner:\n{}", node.agent.logs());
    assert!(check_says(&node).contains("zeta"), "{}", check_says(&node));
}
