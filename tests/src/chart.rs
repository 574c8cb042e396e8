//! Renders charts/sockgate with Go's text/template (tests/helm-render), the
//! engine Helm uses: no Helm binary can be installed on these machines.
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

use crate::workspace_root;

/// The renderer, built once with Debian's Go into target/.
fn renderer() -> Result<PathBuf> {
    let root = workspace_root();
    let source = root.join("tests/helm-render/main.go");
    let binary = root.join("target/helm-render");
    let fresh = binary.metadata().and_then(|b| Ok(b.modified()? >= source.metadata()?.modified()?)).unwrap_or(false);
    if !fresh {
        let out = Command::new("go")
            .args(["build", "-o"])
            .arg(&binary)
            .arg(&source)
            .env("GOCACHE", root.join("target/go-cache"))
            .env("GO111MODULE", "off")
            .output()
            .context("running go (cargo xtask setup installs golang-go)")?;
        if !out.status.success() {
            bail!("building helm-render failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    Ok(binary)
}

/// The chart's objects as multi-document YAML, with `overrides` merged over values.yaml.
pub fn render(release: &str, namespace: &str, overrides: Value) -> Result<String> {
    let chart = workspace_root().join("charts/sockgate");
    let mut values: Value = Value::deserialize(serde_yaml::Deserializer::from_str(&std::fs::read_to_string(chart.join("values.yaml"))?))?;
    merge(&mut values, overrides);
    let meta: Value = Value::deserialize(serde_yaml::Deserializer::from_str(&std::fs::read_to_string(chart.join("Chart.yaml"))?))?;
    let values_file = tempfile::NamedTempFile::new()?;
    std::fs::write(values_file.path(), serde_json::to_vec(&values)?)?;
    let out = Command::new(renderer()?)
        .arg("-chart")
        .arg(&chart)
        .arg("-values")
        .arg(values_file.path())
        .args(["-name", release, "-namespace", namespace])
        .args(["-chart-name", meta["name"].as_str().unwrap_or_default(), "-app-version", meta["appVersion"].as_str().unwrap_or_default()])
        .output()?;
    if !out.status.success() {
        bail!("rendering the chart failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}
