//! The TCP Routing guide's scenario (examples/tcp-routing) through the userspace path.
use std::time::Duration;

use sockgate_tests::agent::wait_for_log;
use sockgate_tests::echo::get;
use sockgate_tests::harness::GatewayNode;
use sockgate_tests::workspace_root;

/// examples/tcp-routing, file by file, as the manifests directory of the node.
fn guide_manifests() -> Vec<(&'static str, String)> {
    ["gateway.yaml", "backends.yaml", "tcproutes.yaml", "endpointslices.yaml"]
        .iter()
        .map(|f| (*f, std::fs::read_to_string(workspace_root().join("examples/tcp-routing").join(f)).unwrap()))
        .collect()
}

#[test]
fn guide_listeners_8088_and_8089_reach_services_foo_and_bar_by_section_name() {
    let files = guide_manifests();
    let node = GatewayNode::start(&files, &["--dataplane", "userspace"]).unwrap();
    let _foo = sockgate_tests::echo::start(&node.hosts.backend1, "foo", "backend-1-demo", node.logs.path()).unwrap();
    let _bar = sockgate_tests::echo::start(&node.hosts.backend2, "bar", "backend-2-demo", node.logs.path()).unwrap();
    node.wait_for_port(8088).unwrap();
    node.wait_for_port(8089).unwrap();

    // Several connections each: every one must land on its listener's Service.
    for round in 0..5 {
        for (port, service, pod) in [(8088, "foo", "backend-1-demo"), (8089, "bar", "backend-2-demo")] {
            let mut stream = node.connect(port).unwrap();
            let host = format!("198.18.1.2:{port}");
            let (status, echo) = get(&mut stream, &host).unwrap();
            assert_eq!(status, "HTTP/1.1 200 OK", "round {round} port {port}");
            assert_eq!(echo.service, service, "round {round}: port {port} reached the wrong Service");
            assert_eq!(echo.pod, pod);
            assert_eq!(echo.namespace, "default");
            assert_eq!(echo.host, host, "the request passed through unchanged");
            assert_eq!(echo.headers["User-Agent"], vec!["sockgate-test".to_string()]);
        }
    }
    // The Deployments are not the agent's business: ignored, not errors.
    let logs = node.agent.logs();
    assert!(logs.contains("ignored=2"), "{logs}");
    assert!(!logs.contains("ERROR"), "{logs}");
}

#[test]
fn the_real_nc_and_curl_of_the_guide_succeed_through_the_gateway() {
    let files = guide_manifests();
    let mut node = GatewayNode::start(&files, &["--dataplane", "userspace"]).unwrap();
    let _foo = sockgate_tests::echo::start(&node.hosts.backend1, "foo", "backend-1-demo", node.logs.path()).unwrap();
    let _bar = sockgate_tests::echo::start(&node.hosts.backend2, "bar", "backend-2-demo", node.logs.path()).unwrap();
    node.wait_for_port(8089).unwrap();
    for (port, service) in [("8088", "\"service\": \"foo\""), ("8089", "\"service\": \"bar\"")] {
        let nc = node.hosts.client.command("nc").args(["-zv", "198.18.1.2", port]).output().unwrap();
        assert!(nc.status.success(), "nc -zv to {port}: {}", String::from_utf8_lossy(&nc.stderr));
        assert!(String::from_utf8_lossy(&nc.stderr).contains("succeeded"));
        let curl = node.hosts.client.command("curl").args(["-i", "-sS", "--max-time", "10"]).arg(format!("http://198.18.1.2:{port}")).output().unwrap();
        let out = String::from_utf8_lossy(&curl.stdout);
        assert!(curl.status.success(), "curl {port}: {}", String::from_utf8_lossy(&curl.stderr));
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        assert!(out.contains(service), "port {port} answered {out}");
    }
    wait_for_log(&mut node.agent, "configuration applied", Duration::from_secs(1)).unwrap();
}
