//! The TCP Routing guide, verbatim, on the one-node cluster `cargo xtask
//! cluster up` made: the chart installed as a Helm release, its agent a
//! DaemonSet pod the kubelet runs, the guide's Deployments real pods (the echo
//! backend imported under the guide's image), and a client on another
//! "machine" (GATEWAY_CLIENT_NETNS) reaching them through the Gateway.
//!
//! One test: the cluster has one node and the guide's ports are fixed.
//! Everything it creates is deleted when it ends, pass or fail, and waited for,
//! so the other kube tests find the node empty.
use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use sockgate_tests::cluster::{eventually, kubectl};
use sockgate_tests::node_cluster::{agent_logs, from_client, gateway_host, node_address, ready_pods, wait_for_answers_from, who_answers, Guide, Release, AGENT_PODS, RELEASE_NAMESPACE};

#[test]
fn the_guide_verbatim_through_the_agent_the_kubelet_runs_from_the_chart() {
    // The chart with the values `cargo xtask chart render` shows for this
    // cluster: the locally built image, and no GatewayClass of its own (the
    // guide brings `eg`, pointed at sockgate's controller).
    let _release = Release::install(json!({ "gatewayClassName": "" }));
    let agents = ready_pods(RELEASE_NAMESPACE, AGENT_PODS);
    assert_eq!(agents.len(), 1, "one agent pod, Ready (its probes pass): {agents:?}\n{}", agent_logs());

    let _guide = Guide::apply();
    kubectl(&["wait", "--timeout=300s", "-n", "default", "deployment/backend-1", "deployment/backend-2", "--for=condition=Available"], None).unwrap();

    // GATEWAY_HOST=$(kubectl get gateway/tcp-gateway -o jsonpath='{.status.addresses[0].value}')
    let gateway_host = gateway_host();
    assert_eq!(gateway_host, node_address(), "the agent writes the node's address");

    // The client, on another machine: nc -zv, then curl -i, for both listeners.
    for port in ["8088", "8089"] {
        let nc = from_client("nc", &["-zv", "-w", "5", &gateway_host, port]).unwrap();
        assert!(nc.status.success(), "nc -zv {gateway_host} {port}: {}\n{}", String::from_utf8_lossy(&nc.stderr), agent_logs());
        assert!(String::from_utf8_lossy(&nc.stderr).contains("succeeded"), "{}", String::from_utf8_lossy(&nc.stderr));
    }
    for (port, service, app) in [(8088, "foo", "backend-1"), (8089, "bar", "backend-2")] {
        let pods = ready_pods("default", &format!("app={app}"));
        let (answered_service, pod) = who_answers(&gateway_host, port);
        assert_eq!(answered_service, service, "port {port}");
        assert_eq!(vec![pod], pods, "port {port} answered by a real pod of {app}");
    }

    // Scaled to three: new connections spread over the three pods.
    kubectl(&["scale", "deployment/backend-1", "-n", "default", "--replicas=3"], None).unwrap();
    let three = eventually(Duration::from_secs(120), "three Ready pods of backend-1", || {
        let pods = ready_pods("default", "app=backend-1");
        (pods.len() == 3).then_some(pods)
    })
    .unwrap();
    let seen: BTreeSet<String> = wait_for_answers_from(&gateway_host, 8088, &three);
    eprintln!("30 new connections to {gateway_host}:8088 answered by {seen:?}");

    // What an operator sees (the README's capture).
    eprintln!("$ kubectl get pods,gateway,tcproute -A\n{}", kubectl(&["get", "pods,gateway,tcproute", "-A"], None).unwrap());
}
