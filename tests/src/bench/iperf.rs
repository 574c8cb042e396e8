//! iperf3 from the client host through a contender to `iperf3 -s` on the backend.
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::rlimit;
use super::run_limited;
use crate::netns::NetNs;

/// Gbit/s received (iperf3's `end.sum_received`) with `streams` parallel
/// connections for `seconds`; `reverse` (-R) has the backend send.
pub fn throughput(client: &NetNs, target: SocketAddr, seconds: u32, streams: u32, reverse: bool) -> Result<f64> {
    let mut command = client.command("iperf3");
    command.args([
        "-J",
        "-c",
        &target.ip().to_string(),
        "-p",
        &target.port().to_string(),
        "-t",
        &seconds.to_string(),
        "-P",
        &streams.to_string(),
    ]);
    if reverse {
        command.arg("-R");
    }
    rlimit::as_inherited(&mut command);
    let out = run_limited(&mut command, Duration::from_secs(u64::from(seconds) + 30)).context("iperf3")?;
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).with_context(|| format!("iperf3 printed no JSON: {}", String::from_utf8_lossy(&out.stderr)))?;
    if let Some(error) = report.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3: {error}");
    }
    let bits = report
        .pointer("/end/sum_received/bits_per_second")
        .and_then(|v| v.as_f64())
        .context("iperf3 JSON without end.sum_received")?;
    Ok(bits / 1e9)
}
