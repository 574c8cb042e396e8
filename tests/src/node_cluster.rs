//! The one-node cluster `cargo xtask cluster up` made (kubelet, containerd,
//! controllers): its `target/cluster/env`, a client on another "machine" (the
//! network namespace GATEWAY_CLIENT_NETNS), pods, and the agent's log as the
//! kubelet wrote it (the API server cannot reach the kubelet for `kubectl logs`).
use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::chart::{install_or_upgrade, release_action};
use crate::cluster::{eventually, get, kubectl};
use crate::workspace_root;

/// A variable of target/cluster/env (`export NAME=value` lines).
pub fn env(name: &str) -> Result<String> {
    let path = workspace_root().join("target/cluster/env");
    let text = std::fs::read_to_string(&path).with_context(|| format!("no {}: run `cargo xtask cluster up` (cargo xtask test does)", path.display()))?;
    let prefix = format!("export {name}=");
    text.lines().find_map(|l| l.strip_prefix(&prefix).map(String::from)).with_context(|| format!("no {name} in {}", path.display()))
}

/// Runs `program args` in the client's network namespace, as a client on another machine would.
pub fn from_client(program: &str, args: &[&str]) -> Result<Output> {
    let netns = env("GATEWAY_CLIENT_NETNS")?;
    Command::new("ip").args(["netns", "exec", &netns, program]).args(args).output().with_context(|| format!("running {program} in {netns}"))
}

/// `curl -si http://HOST:PORT/` from the client: the status line and the JSON body.
pub fn curl(host: &str, port: u16) -> Result<(String, Value)> {
    let url = format!("http://{host}:{port}/");
    let out = from_client("curl", &["-si", "--max-time", "5", &url])?;
    if !out.status.success() {
        bail!("curl -i {url} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").with_context(|| format!("no HTTP head in {text:?}"))?;
    Ok((head.lines().next().unwrap_or_default().to_string(), serde_json::from_str(body).with_context(|| format!("the body is not JSON: {body:?}"))?))
}

/// The names of the pods matching `selector` in `namespace` that are Ready.
pub fn ready_pods(namespace: &str, selector: &str) -> Vec<String> {
    let Ok(out) = kubectl(&["get", "pods", "-n", namespace, "-l", selector, "-o", "json"], None) else { return Vec::new() };
    let Ok(list) = serde_json::from_str::<Value>(&out) else { return Vec::new() };
    let mut names: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| p["status"]["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True")))
        .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
        .collect();
    names.sort();
    names
}

/// Waits until no pod is left in `namespace` matching `selector` (deleted, not just terminating).
pub fn wait_pods_gone(namespace: &str, selector: &str, timeout: Duration) -> Result<()> {
    eventually(timeout, &format!("the pods {selector} in {namespace} to be gone"), || {
        let out = kubectl(&["get", "pods", "-n", namespace, "-l", selector, "-o", "name"], None).ok()?;
        out.trim().is_empty().then_some(())
    })
}

/// The container log the kubelet keeps for a pod (/var/log/pods/NS_NAME_UID/CONTAINER/*.log).
pub fn pod_log(namespace: &str, pod: &str) -> String {
    let prefix = format!("{namespace}_{pod}_");
    let Ok(dirs) = std::fs::read_dir("/var/log/pods") else { return String::new() };
    let mut text = String::new();
    for dir in dirs.flatten().filter(|d| d.file_name().to_string_lossy().starts_with(&prefix)) {
        for container in std::fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            for log in std::fs::read_dir(container.path()).into_iter().flatten().flatten() {
                text.push_str(&std::fs::read_to_string(log.path()).unwrap_or_default());
            }
        }
    }
    text
}

pub const RELEASE: &str = "sockgate";
pub const RELEASE_NAMESPACE: &str = "sockgate-system";
pub const AGENT_PODS: &str = "app.kubernetes.io/name=sockgate";
const GUIDE_FILES: [&str; 3] = ["gateway.yaml", "backends.yaml", "tcproutes.yaml"];

/// The chart installed as a Helm release; uninstalled (and its pod waited
/// out) on drop.
pub struct Release;

impl Release {
    pub fn install(values: Value) -> Release {
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
pub struct Guide;

fn guide_file(name: &str) -> String {
    workspace_root().join("examples/tcp-routing").join(name).display().to_string()
}

impl Guide {
    pub fn apply() -> Guide {
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
pub fn agent_logs() -> String {
    let Ok(names) = kubectl(&["get", "pods", "-n", RELEASE_NAMESPACE, "-l", AGENT_PODS, "-o", "jsonpath={.items[*].metadata.name}"], None) else {
        return String::new();
    };
    names.split_whitespace().map(|pod| format!("--- agent pod {pod}:\n{}", pod_log(RELEASE_NAMESPACE, pod))).collect()
}

pub fn node_address() -> String {
    let node = get("node", "", "sockgate-node").expect("the cluster's node");
    let addresses = node["status"]["addresses"].as_array().unwrap();
    addresses.iter().find(|a| a["type"] == "InternalIP").and_then(|a| a["address"].as_str()).unwrap().to_string()
}

/// Which pod and service answered `curl -i http://HOST:PORT` from the client.
pub fn who_answers(host: &str, port: u16) -> (String, String) {
    let (status, echo) = curl(host, port).unwrap_or_else(|e| panic!("{e}\n{}", agent_logs()));
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(echo["namespace"], "default");
    (echo["service"].as_str().unwrap().to_string(), echo["pod"].as_str().unwrap().to_string())
}

/// GATEWAY_HOST=$(kubectl get gateway/tcp-gateway -o jsonpath='{.status.addresses[0].value}'), once written.
pub fn gateway_host() -> String {
    eventually(Duration::from_secs(60), "the Gateway's address", || {
        let host = kubectl(&["get", "gateway/tcp-gateway", "-n", "default", "-o", "jsonpath={.status.addresses[0].value}"], None).ok()?;
        (!host.trim().is_empty()).then(|| host.trim().to_string())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent_logs()))
}

/// Waits until 30 new connections to HOST:PORT are answered by exactly
/// `pods` (an EndpointSlice change takes moments to reach the agent).
pub fn wait_for_answers_from(host: &str, port: u16, pods: &[String]) -> BTreeSet<String> {
    let expected: BTreeSet<String> = pods.iter().cloned().collect();
    eventually(Duration::from_secs(30), "answers from every pod", || {
        let seen: BTreeSet<String> = (0..30).map(|_| who_answers(host, port).1).collect();
        (seen == expected).then_some(seen)
    })
    .unwrap_or_else(|e| panic!("{e}; pods {expected:?}\n{}", agent_logs()))
}
