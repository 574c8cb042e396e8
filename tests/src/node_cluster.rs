//! The one-node cluster `cargo xtask cluster up` made (kubelet, containerd,
//! controllers): its `target/cluster/env`, a client on another "machine" (the
//! network namespace GATEWAY_CLIENT_NETNS), pods, and the agent's log as the
//! kubelet wrote it (the API server cannot reach the kubelet for `kubectl logs`).
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::cluster::{eventually, kubectl};
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
