//! `cargo xtask chart render [VALUES_JSON]`: the chart's objects as Helm
//! renders them (tests/helm/helm.py, Helm v4's SDK), sockgate's CRDs first.
//! With no values: the values that work on the cluster `cargo xtask cluster up`
//! makes (its locally built image is the chart's default; 1.20 has no
//! DaemonSet surge, which an offline render cannot ask the server about).
use std::process::Command;

use super::{root, run};
use anyhow::{bail, Result};

const LOCAL_CLUSTER_VALUES: &str = r#"{"updateStrategy": {"maxSurge": 0, "maxUnavailable": 1}}"#;

pub fn run_from_args(args: &[String]) -> Result<()> {
    let values = match args {
        [action] if action == "render" => LOCAL_CLUSTER_VALUES.to_string(),
        [action, values] if action == "render" => values.clone(),
        _ => bail!("usage: cargo xtask chart render [VALUES_JSON]"),
    };
    run(
        Command::new("python3")
            .arg(root().join("tests/helm/helm.py"))
            .arg("render")
            .arg(root().join("charts/sockgate"))
            .args(["--name", "sockgate", "--namespace", "sockgate-system", "--include-crds", "--values", &values]),
        "helm render",
    )
}
