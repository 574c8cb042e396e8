//! The control-plane figures: criterion's samples of
//! `gateway-agent/benches/control_plane` and its peak-memory pass, read from
//! criterion's output directory (`cargo xtask bench` runs it first).
use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

use super::metrics::{summarize, Summary};

pub struct ControlPlane {
    /// Seconds per translation of the whole snapshot.
    pub translate: Summary,
    /// Seconds per one-route change synced into the kernel maps.
    pub sync: Summary,
    pub samples: usize,
    pub memory: Memory,
}

#[derive(Deserialize)]
pub struct Memory {
    pub scale: String,
    /// The benchmark process before it built anything (its code and libraries).
    pub rss_at_start_bytes: u64,
    pub snapshot_heap_bytes: u64,
    pub translate_peak_heap_bytes: u64,
    pub peak_rss_after_translate_bytes: u64,
    pub first_sync_seconds: f64,
    pub peak_rss_bytes: u64,
}

/// criterion's sample file: per sample, iterations and their total time (ns).
#[derive(Deserialize)]
struct Sample {
    iters: Vec<f64>,
    times: Vec<f64>,
}

fn per_iteration(dir: &Path, bench: &str) -> Result<(Summary, usize)> {
    let path = dir.join("control_plane").join(bench).join("new/sample.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {} (run `cargo bench -p gateway-agent --bench control_plane`)", path.display()))?;
    let sample: Sample = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let seconds: Vec<f64> = sample.iters.iter().zip(&sample.times).map(|(n, t)| t / n / 1e9).collect();
    Ok((
        summarize(&seconds).with_context(|| format!("{} has no samples", path.display()))?,
        seconds.len(),
    ))
}

pub fn read(dir: &Path) -> Result<ControlPlane> {
    let (translate, samples) = per_iteration(dir, "translate")?;
    let (sync, _) = per_iteration(dir, "sync_one_route_change")?;
    let path = dir.join("sockgate-control-plane/memory.json");
    let memory = serde_json::from_str(&std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?)
        .with_context(|| format!("parsing {}", path.display()))?;
    Ok(ControlPlane {
        translate,
        sync,
        samples,
        memory,
    })
}
