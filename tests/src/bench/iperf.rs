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

/// `iperf3 -u` (client → backend): datagrams of this many bytes of payload,
/// the largest that crosses the topology's 1500-byte MTU unfragmented (with
/// 28 bytes of IPv4 and UDP headers), as the datagram-rate workload's largest.
pub const UDP_LENGTH: u32 = 1400;

/// What the receiving side (the backend) saw of an `iperf3 -u` test.
pub struct UdpThroughput {
    /// Gbit/s received.
    pub gbit_per_second: f64,
    /// Datagrams lost on the way, in percent of those sent (iperf3 counts the gaps in its sequence numbers).
    pub lost_percent: f64,
}

/// `iperf3 -u -b 0 -l UDP_LENGTH` for `seconds`: the client sends as fast as
/// it can (no target rate, so the figure is the path's capacity, not a rate
/// chosen here), and the figures are the receiver's (`end.sum_received`,
/// which iperf3 3.12 fills from the server's report): what arrived and how
/// much was lost. Its control connection is TCP to the same port, through
/// the same contender.
pub fn udp_throughput(client: &NetNs, target: SocketAddr, seconds: u32) -> Result<UdpThroughput> {
    let mut command = client.command("iperf3");
    command.args([
        "-J",
        "-u",
        "-b",
        "0",
        "-l",
        &UDP_LENGTH.to_string(),
        "-c",
        &target.ip().to_string(),
        "-p",
        &target.port().to_string(),
        "-t",
        &seconds.to_string(),
    ]);
    rlimit::as_inherited(&mut command);
    let out = run_limited(&mut command, Duration::from_secs(u64::from(seconds) + 30)).context("iperf3 -u")?;
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).with_context(|| format!("iperf3 -u printed no JSON: {}", String::from_utf8_lossy(&out.stderr)))?;
    if let Some(error) = report.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3 -u: {error}");
    }
    let received = report.pointer("/end/sum_received").context("iperf3 -u JSON without end.sum_received")?;
    let field = |name: &str| received.get(name).and_then(|v| v.as_f64()).with_context(|| format!("iperf3 -u: no end.sum_received.{name}"));
    let (bits, lost, packets) = (field("bits_per_second")?, field("lost_packets")?, field("packets")?);
    eprintln!("      iperf3 -u: {packets:.0} datagrams sent, {lost:.0} lost on the way");
    if bits <= 0.0 {
        bail!("iperf3 -u: nothing received ({packets:.0} datagrams sent)");
    }
    Ok(UdpThroughput {
        gbit_per_second: bits / 1e9,
        lost_percent: field("lost_percent")?,
    })
}
