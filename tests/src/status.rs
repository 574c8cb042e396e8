//! Reading `gateway-agent status` in tests.
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};
use serde::Deserialize;
use serde_json::Value;

use crate::workspace_bin;

/// The status documents of a manifests directory.
pub fn status_of(manifests: &Path) -> Result<Vec<Value>> {
    let out = Command::new(workspace_bin("gateway-agent")?).args(["status", "--manifests"]).arg(manifests).output()?;
    if !out.status.success() {
        bail!("gateway-agent status failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8(out.stdout)?;
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        docs.push(Value::deserialize(doc)?);
    }
    Ok(docs)
}

/// The object of `kind` named `name` among `docs`.
pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {docs:#?}"))
}

/// "Type=Status/Reason" of each condition in a conditions list.
pub fn conditions(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| a.iter().map(|c| format!("{}={}/{}", c["type"].as_str().unwrap_or(""), c["status"].as_str().unwrap_or(""), c["reason"].as_str().unwrap_or(""))).collect())
        .unwrap_or_default()
}
