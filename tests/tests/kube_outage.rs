//! The API server goes away and comes back: the data plane keeps serving the
//! last known configuration throughout, established connections are not
//! dropped, and the agent resyncs when the server returns.
//!
//! A test binary of its own: it stops the shared test API server, which the
//! other Kubernetes-mode tests must not see (cargo runs test binaries one by one).
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use sockgate_tests::cluster::{apply, eventually, get, kubectl};
use sockgate_tests::harness::{serve, GatewayNode};
use sockgate_tests::integrity::{pattern, receive_to_eof, send_then_fin, Received};
use sockgate_tests::manifests::service;
use sockgate_tests::netns::unique_name;
use sockgate_tests::{workspace_bin, workspace_root};

fn api_server_pid() -> i32 {
    std::fs::read_to_string(workspace_root().join("target/cluster/kube-apiserver.pid")).unwrap().trim().parse().unwrap()
}

fn api_server_up() -> bool {
    kubectl(&["get", "--raw", "/readyz"], None).is_ok()
}

#[test]
fn the_data_plane_serves_through_an_api_server_outage_and_resyncs_when_it_returns() {
    let ns = unique_name("outage");
    kubectl(&["create", "namespace", &ns], None).unwrap();
    let controller = format!("sockgate.io/{ns}");
    let gateway = |listeners: &str| {
        format!("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  namespace: {ns}\nspec:\n  gatewayClassName: {ns}\n  listeners:\n{listeners}")
    };
    let route = |name: &str, section: &str| {
        format!("apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  parentRefs: [{{name: gw, sectionName: {section}}}]\n  rules: [{{backendRefs: [{{name: echo, port: 80}}]}}]\n")
    };
    let svc = service("echo", 80, 7000, &["198.18.2.2"])
        .replace("apiVersion: discovery.k8s.io/v1\n", "apiVersion: discovery.k8s.io/v1beta1\n")
        .replace("metadata:\n  name:", &format!("metadata:\n  namespace: {ns}\n  name:"));
    apply(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata:\n  name: {ns}\nspec:\n  controllerName: {controller}\n---\n{}---\n{}---\n{svc}",
        gateway("  - {name: a, port: 9000, protocol: TCP}\n"),
        route("ra", "a")
    ))
    .unwrap();
    let mut node = GatewayNode::start_in_cluster(&["--dataplane", "userspace", "--controller-name", &controller, "--lease-namespace", &ns, "--node-name", "node-a"]).unwrap();
    let _echo = serve(&node.hosts.backend1, 7000, |mut s: TcpStream| {
        let mut reader = s.try_clone().unwrap();
        let _ = std::io::copy(&mut reader, &mut s);
        let _ = s.shutdown(std::net::Shutdown::Write);
    })
    .unwrap();
    node.wait_for_port(9000).unwrap();

    // A connection established before the outage, half its data sent.
    let data = pattern(31, 8 << 20);
    let stream = node.connect(9000).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = stream;
    let receiving = std::thread::spawn(move || receive_to_eof(&mut reader));
    writer.write_all(&data[..data.len() / 2]).unwrap();

    // The API server dies.
    unsafe { libc::kill(api_server_pid(), libc::SIGKILL) };
    eventually(Duration::from_secs(20), "the API server to be gone", || (!api_server_up()).then_some(())).unwrap();
    node.wait_for_log("watch failed; retrying, still serving the last known configuration").unwrap();
    // New connections are still served, with the last known route.
    let mut fresh = node.connect(9000).unwrap();
    fresh.write_all(b"during the outage").unwrap();
    fresh.shutdown(std::net::Shutdown::Write).unwrap();
    let mut echoed = Vec::new();
    fresh.read_to_end(&mut echoed).unwrap();
    assert_eq!(echoed, b"during the outage");

    // It comes back (over the same etcd); the agent resyncs and sees a change made now.
    let up = Command::new(workspace_bin("xtask").unwrap()).args(["cluster", "up"]).output().unwrap();
    assert!(up.status.success(), "cluster up: {}", String::from_utf8_lossy(&up.stderr));
    apply(&format!("{}---\n{}", gateway("  - {name: a, port: 9000, protocol: TCP}\n  - {name: b, port: 9001, protocol: TCP}\n"), route("rb", "b"))).unwrap();
    node.wait_for_port(9001).unwrap();
    eventually(Duration::from_secs(30), "status for the new listener", || {
        get("gateway", &ns, "gw").filter(|g| g["status"]["listeners"][1]["attachedRoutes"] == 1)
    })
    .unwrap();

    // The connection from before the outage finishes intact: the resync kept its route.
    send_then_fin(&mut writer, &data[data.len() / 2..]).unwrap();
    assert_eq!(receiving.join().unwrap().unwrap(), Received::of(&data));
    node.agent.ensure_running().unwrap();
    let _ = kubectl(&["delete", "gateways.gateway.networking.k8s.io,tcproutes.gateway.networking.k8s.io,services,endpointslices.discovery.k8s.io,leases.coordination.k8s.io", "--all", "-n", &ns, "--wait=false"], None);
    let _ = kubectl(&["delete", "gatewayclass", &ns, "--wait=false"], None);
}
