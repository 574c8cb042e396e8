//! charts/sockgate through Helm itself: tests/helm/helm.py drives Helm v4's
//! Go SDK (the PyPI package helm-python-sdk, installed by `cargo xtask setup`),
//! since no helm binary can be installed on these machines.
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::workspace_root;

fn chart_dir() -> PathBuf {
    workspace_root().join("charts/sockgate")
}

/// Runs `helm.py ACTION …` and returns what it printed.
pub fn helm(action: &str, args: &[&str]) -> Result<String> {
    let script = workspace_root().join("tests/helm/helm.py");
    let out = Command::new("python3").arg(script).arg(action).args(args).output().context("running python3 tests/helm/helm.py")?;
    if !out.status.success() {
        bail!("helm {action} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The chart's objects as multi-document YAML, `overrides` merged over
/// values.yaml, as `helm template` renders them (for the newest Kubernetes).
pub fn render(release: &str, namespace: &str, overrides: Value) -> Result<String> {
    let chart = chart_dir().display().to_string();
    helm("render", &[&chart, "--name", release, "--namespace", namespace, "--values", &overrides.to_string()])
}

/// `helm lint`'s report.
pub fn lint() -> Result<Value> {
    Ok(serde_json::from_str(&helm("lint", &[&chart_dir().display().to_string()])?)?)
}

/// `helm install` / `helm upgrade` of the chart as release `release` in the
/// test cluster, waiting up to `wait_seconds` for its objects to be ready.
pub fn install_or_upgrade(action: &str, release: &str, namespace: &str, values: &Value, wait_seconds: u32) -> Result<Value> {
    let chart = chart_dir().display().to_string();
    let kubeconfig = crate::cluster::kubeconfig().display().to_string();
    let wait = wait_seconds.to_string();
    let out = helm(action, &[&chart, "--name", release, "--namespace", namespace, "--values", &values.to_string(), "--kubeconfig", &kubeconfig, "--wait", &wait])?;
    Ok(serde_json::from_str(&out)?)
}

/// `helm rollback` / `helm uninstall` / `helm history` of release `release`.
pub fn release_action(action: &str, release: &str, namespace: &str, extra: &[&str]) -> Result<String> {
    let kubeconfig = crate::cluster::kubeconfig().display().to_string();
    let mut args = vec!["--name", release, "--namespace", namespace, "--kubeconfig", &kubeconfig];
    args.extend_from_slice(extra);
    helm(action, &args)
}
