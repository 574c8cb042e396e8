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

use serde_json::{json, Value};
use sockgate_tests::chart::{install_or_upgrade, release_action};
use sockgate_tests::cluster::{eventually, get, kubectl};
use sockgate_tests::node_cluster::{curl, from_client, pod_log, ready_pods, wait_pods_gone};
use sockgate_tests::workspace_root;

const RELEASE: &str = "sockgate";
const RELEASE_NAMESPACE: &str = "sockgate-system";
const AGENT_PODS: &str = "app.kubernetes.io/name=sockgate";
const GUIDE_FILES: [&str; 3] = ["gateway.yaml", "backends.yaml", "tcproutes.yaml"];

/// The chart installed as a Helm release; uninstalled (and its pod waited
/// out) on drop.
struct Release;

impl Release {
    fn install(values: Value) -> Release {
        // Whatever an interrupted run left goes first.
        let _ = release_action("uninstall", RELEASE, RELEASE_NAMESPACE, &["--wait", "60"]);
        let release = Release;
        install_or_upgrade("install", RELEASE, RELEASE_NAMESPACE, &values, 180).unwrap_or_else(|e| panic!("{e}\n{}", agent_logs()));
        release
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if let Err(e) = release_action("uninstall", RELEASE, RELEASE_NAMESPACE, &["--wait", "60"]) {
            eprintln!("helm uninstall: {e}");
        }
        let _ = wait_pods_gone(RELEASE_NAMESPACE, AGENT_PODS, Duration::from_secs(60));
    }
}

/// The guide's objects, applied with kubectl as the guide does (namespace
/// default); deleted, and their pods waited out, on drop.
struct Guide;

fn guide_file(name: &str) -> String {
    workspace_root().join("examples/tcp-routing").join(name).display().to_string()
}

impl Guide {
    fn apply() -> Guide {
        let guide = Guide;
        for file in GUIDE_FILES {
            kubectl(&["apply", "--validate=false", "-f", &guide_file(file)], None).unwrap();
        }
        guide
    }
}

impl Drop for Guide {
    fn drop(&mut self) {
        for file in GUIDE_FILES.iter().rev() {
            let _ = kubectl(&["delete", "--ignore-not-found", "--wait=true", "--timeout=60s", "-f", &guide_file(file)], None);
        }
        for app in ["backend-1", "backend-2"] {
            let _ = wait_pods_gone("default", &format!("app={app}"), Duration::from_secs(60));
        }
    }
}

/// Every agent pod's log, for a failure's message.
fn agent_logs() -> String {
    let Ok(names) = kubectl(&["get", "pods", "-n", RELEASE_NAMESPACE, "-l", AGENT_PODS, "-o", "jsonpath={.items[*].metadata.name}"], None) else {
        return String::new();
    };
    names.split_whitespace().map(|pod| format!("--- agent pod {pod}:\n{}", pod_log(RELEASE_NAMESPACE, pod))).collect()
}

fn node_address() -> String {
    let node = get("node", "", "sockgate-node").expect("the cluster's node");
    let addresses = node["status"]["addresses"].as_array().unwrap();
    addresses.iter().find(|a| a["type"] == "InternalIP").and_then(|a| a["address"].as_str()).unwrap().to_string()
}

/// Which pod and service answered `curl -i http://HOST:PORT` from the client.
fn who_answers(host: &str, port: u16) -> (String, String) {
    let (status, echo) = curl(host, port).unwrap_or_else(|e| panic!("{e}\n{}", agent_logs()));
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(echo["namespace"], "default");
    (echo["service"].as_str().unwrap().to_string(), echo["pod"].as_str().unwrap().to_string())
}

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
    let gateway_host = eventually(Duration::from_secs(60), "the Gateway's address", || {
        let host = kubectl(&["get", "gateway/tcp-gateway", "-n", "default", "-o", "jsonpath={.status.addresses[0].value}"], None).ok()?;
        (!host.trim().is_empty()).then(|| host.trim().to_string())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent_logs()));
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
    let three: BTreeSet<String> = three.into_iter().collect();
    // The EndpointSlice change reaches the agent within moments; new connections then see all three.
    let seen = eventually(Duration::from_secs(30), "answers from all three pods", || {
        let seen: BTreeSet<String> = (0..30).map(|_| who_answers(&gateway_host, 8088)).map(|(service, pod)| {
            assert_eq!(service, "foo");
            pod
        }).collect();
        (seen == three).then_some(seen)
    })
    .unwrap_or_else(|e| panic!("{e}; pods {three:?}\n{}", agent_logs()));
    eprintln!("30 new connections to {gateway_host}:8088 answered by {seen:?}");

    // What an operator sees (the README's capture).
    eprintln!("$ kubectl get pods,gateway,tcproute -A\n{}", kubectl(&["get", "pods,gateway,tcproute", "-A"], None).unwrap());
}
