//! `cargo xtask bench`: sockgate side by side with a direct path, iptables
//! DNAT, HAProxy and nginx stream, in one run, contenders alternating, and the
//! report (BENCHMARKS.md) with its chart (benchmarks.png).
//!
//! One job per file: `testbed` (hosts and routes) and `backends` (what runs on
//! the backend host), `contenders` (each way through the node), the workloads
//! (`bulk`, `iperf`, `latency`, `connections`, `stall`, and UDP's `datagrams`
//! and `iperf`'s `-u`, dispatched by `workloads`; `udp_echo` is the UDP backend),
//! `run` (rounds), `metrics` (samples and summaries), `profile` (perf during
//! sockgate's slowest workload), `control_plane` (criterion's results),
//! `report` and `chart`. `procfs` and `rlimit` are small helpers.
pub mod backends;
pub mod bulk;
pub mod chart;
pub mod connections;
pub mod contenders;
pub mod control_plane;
pub mod datagrams;
pub mod iperf;
pub mod latency;
pub mod metrics;
pub mod procfs;
pub mod profile;
pub mod report;
pub mod rlimit;
pub mod run;
pub mod splice_counters;
pub mod stall;
pub mod testbed;
pub mod udp_echo;
pub mod workloads;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use contenders::Contender;

/// Sizes and durations of one run (the binary's arguments).
#[derive(Clone, Debug)]
pub struct Config {
    pub rounds: usize,
    /// Bytes each way of the checksummed transfer.
    pub bytes: usize,
    pub iperf_seconds: u32,
    pub round_trips: usize,
    pub redis_requests: usize,
    pub connection_clients: usize,
    pub connection_time: Duration,
    pub idle_connections: usize,
    pub many_idle_connections: usize,
    /// Connections of the handover-stall workload's first-byte and trickle variants.
    pub stall_connections: usize,
    pub trickle_connections: usize,
    /// Seconds of each datagram-rate workload (one per datagram size).
    pub udp_seconds: f64,
    pub contenders: Vec<Contender>,
    /// All of `Workload::ALL` for a report; fewer to look at one thing.
    pub workloads: Vec<workloads::Workload>,
    /// The report; the chart goes beside it.
    pub out: PathBuf,
    /// criterion's output directory with the control-plane results, if measured.
    pub control_plane: Option<PathBuf>,
    /// Profile sockgate's slowest workload with perf after the rounds.
    pub profile: bool,
}

impl Config {
    pub fn chart_path(&self) -> PathBuf {
        self.out.with_file_name("benchmarks.png")
    }
}

/// Runs a program to its end within `limit` (killed after), its output kept
/// in memory; fails with its stderr when it fails.
pub fn run_limited(command: &mut Command, limit: Duration) -> Result<Output> {
    let dir = tempfile::tempdir()?;
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .spawn()
        .with_context(|| format!("starting {:?}", command.get_program()))?;
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{:?} did not finish within {limit:?}", command.get_program());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = Output {
        status,
        stdout: std::fs::read(&out_path)?,
        stderr: std::fs::read(&err_path)?,
    };
    if !status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let said = if stderr.trim().is_empty() {
            stdout.trim().to_string()
        } else {
            stderr.trim().to_string()
        };
        bail!("{:?} failed ({status}): {}", command.get_program(), connections::tail(&said, 3));
    }
    Ok(output)
}
