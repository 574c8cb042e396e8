//! The test API server started by `cargo xtask cluster up`, and kubectl against it.
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::workspace_root;

pub fn kubeconfig() -> PathBuf {
    workspace_root().join("target/cluster/kubeconfig")
}

/// The API server's port, read from the kubeconfig (for bridging it into a test host).
pub fn api_port() -> Result<u16> {
    let text = std::fs::read_to_string(kubeconfig()).context("no target/cluster/kubeconfig: run `cargo xtask cluster up` (cargo xtask test does)")?;
    let server = text.lines().find_map(|l| l.trim().strip_prefix("server: ")).context("no server in the kubeconfig")?;
    Ok(server.rsplit(':').next().unwrap().trim_matches('/').parse()?)
}

/// Runs kubectl against the test cluster, with `stdin` piped in when given.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running kubectl")?;
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("kubectl {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `kubectl apply -f -` of `yaml` (validation off: the 1.20 server's CRD schemas are pruned of CEL).
pub fn apply(yaml: &str) -> Result<String> {
    kubectl(&["apply", "--validate=false", "-f", "-"], Some(yaml))
}

/// An object as JSON (`kubectl get -o json`), or None if it does not exist.
pub fn get(kind: &str, namespace: &str, name: &str) -> Option<Value> {
    kubectl(&["get", kind, name, "-n", namespace, "-o", "json"], None).ok().and_then(|s| serde_json::from_str(&s).ok())
}

/// Polls `check` every 100 ms until it returns Some, or fails after `timeout`.
pub fn eventually<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `kubectl auth can-i …` as "yes" or "no" (it exits 1 for "no").
pub fn can_i(args: &[&str]) -> Result<String> {
    let out = Command::new("kubectl").arg("--kubeconfig").arg(kubeconfig()).args(["auth", "can-i"]).args(args).output()?;
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if answer != "yes" && answer != "no" {
        bail!("kubectl auth can-i {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(answer)
}
