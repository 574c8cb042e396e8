//! The rounds: every contender once per round on a testbed of its own, the
//! order rotating from round to round so that none always runs first (or
//! right after the heaviest one) while the shared machine drifts.
use std::time::{Duration, Instant};

use anyhow::Result;

use super::bulk::Patterns;
use super::contenders::Contender;
use super::metrics::{Metric, Results};
use super::procfs;
use super::profile::{self, Profile};
use super::splice_counters::SpliceCounters;
use super::testbed::Testbed;
use super::workloads::Workload;
use super::Config;

pub struct Outcome {
    pub results: Results,
    pub profile: Option<Result<Profile, String>>,
    pub wall: Duration,
    pub load_before: f64,
    pub load_after: f64,
}

pub fn run(config: &Config) -> Result<Outcome> {
    let started = Instant::now();
    let load_before = procfs::load_average();
    let patterns = Patterns::new(config.bytes);
    let mut results = Results::default();
    let n = config.contenders.len();
    for round in 0..config.rounds {
        for i in 0..n {
            let contender = config.contenders[(i + round) % n];
            eprintln!("round {}/{} {}:", round + 1, config.rounds, contender.key());
            measure(config, contender, &patterns, &mut results)?;
        }
    }
    let profile = if config.profile && config.contenders.contains(&Contender::Auto) {
        Some(profile_slowest(config, &results, &patterns).map_err(|e| format!("{e:#}")))
    } else {
        None
    };
    Ok(Outcome {
        results,
        profile,
        wall: started.elapsed(),
        load_before,
        load_after: procfs::load_average(),
    })
}

/// How long after a workload the kernel splice's counters are read: the
/// agent publishes them at every reload tick (1 s here), and a handover
/// gives up after 520 ms (sockgate's QUIET_WAIT + DRAIN_LIMIT).
const SETTLE: Duration = Duration::from_millis(1600);

/// Every workload through one contender on a fresh testbed.
fn measure(config: &Config, contender: Contender, patterns: &Patterns, results: &mut Results) -> Result<()> {
    // A testbed that cannot be built is this machine's problem, not a contender's: stop.
    let bed = Testbed::create(patterns.down.clone())?;
    let forwarder = match contender.start(&bed) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("    could not start: {e:#}");
            for metric in Metric::ALL {
                results.record(metric, contender, Err(format!("could not start: {e:#}")));
            }
            return Ok(());
        }
    };
    let splice_now = || forwarder.metrics(&bed.hosts.node).ok().and_then(|m| SpliceCounters::parse(&m));
    for workload in config.workloads.iter().copied() {
        // The kernel TCP splice's counters say nothing of UDP (iperf3 -u's control connection is idle), and reading them costs a settle of 1.6 s.
        let before = if workload.is_udp() { None } else { splice_now() };
        let node_udp_before = if workload.is_udp() { procfs::udp_in_datagrams(&bed.hosts.node).ok() } else { None };
        let started = Instant::now();
        let values = workload.run(&bed, &forwarder, config, patterns);
        let node_udp = match (node_udp_before, values.is_empty()) {
            (Some(b), false) => procfs::udp_in_datagrams(&bed.hosts.node).ok().map(|after| after - b),
            _ => None,
        };
        let shown: Vec<String> = values
            .iter()
            .map(|(m, v)| match v {
                Ok(v) => format!("{} {}", m.format(*v), m.unit()),
                Err(e) => format!("FAILED: {e}"),
            })
            .collect();
        if !shown.is_empty() {
            eprintln!(
                "    {:<22} {} ({:.1} s)",
                workload.describe(),
                shown.join(", "),
                started.elapsed().as_secs_f64()
            );
        }
        if let Some(n) = node_udp {
            eprintln!("    the node's own UDP sockets received {n} datagrams");
            results.node_udp.entry((contender, workload.key())).or_default().push(n);
        }
        for (metric, value) in values {
            results.record(metric, contender, value);
        }
        if let Some(before) = before {
            // A handover still under way when the workload ended is counted when it ends, and published at the next tick.
            std::thread::sleep(SETTLE);
            if let Some(after) = splice_now() {
                let d = after.since(&before);
                eprintln!(
                    "    kernel splice: {} spliced ({} quiet, {} held handovers), {} kept on splice(2) {:?}, {:.3} GiB forwarded by the kernel",
                    d.spliced,
                    d.quiet_handovers,
                    d.held_handovers,
                    d.kept(),
                    d.fallbacks,
                    d.kernel_bytes as f64 / (1u64 << 30) as f64
                );
                results.splice.entry((contender, workload.key())).or_default().push(d);
            }
        }
    }
    Ok(())
}

/// Runs the workload where sockgate's default is furthest behind direct
/// again, alone, under the profiler.
fn profile_slowest(config: &Config, results: &Results, patterns: &Patterns) -> Result<Profile> {
    let (metric, ratio) = profile::slowest(results).ok_or_else(|| anyhow::anyhow!("no figure of both direct and auto to compare"))?;
    let workload = Workload::of(metric);
    eprintln!("profiling auto's {} ({:.2}× direct on {})", workload.describe(), ratio, metric.title());
    let bed = Testbed::create(patterns.down.clone())?;
    let forwarder = Contender::Auto.start(&bed)?;
    profile::record(&bed, &forwarder, workload, metric, ratio, config, patterns)
}
