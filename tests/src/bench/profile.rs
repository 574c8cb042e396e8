//! Where the time goes in sockgate's slowest workload: the workload again,
//! alone, under `perf record -a -g -e cpu-clock` (the software clock: this VM
//! exposes no hardware counters), with the machine's user/system/softirq split
//! from /proc/stat and the agent's own user/system time from /proc/PID/stat.
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::bulk::Patterns;
use super::contenders::{Contender, Forwarder};
use super::metrics::{Metric, Results};
use super::procfs::{self, CpuTimes};
use super::testbed::Testbed;
use super::workloads::Workload;
use super::{run_limited, Config};

pub struct Profile {
    pub workload: String,
    pub metric: Metric,
    /// auto's median against direct's on that metric (1.0 = as fast).
    pub ratio: f64,
    pub seconds: f64,
    pub machine: CpuTimes,
    /// The agent's own CPU seconds (user, system) during the workload.
    pub agent: (f64, f64),
    /// perf's share of all samples by command (thread name), of the agent's
    /// samples by symbol, and by the system call they were taken under.
    pub by_command: String,
    pub agent_symbols: String,
    pub agent_syscalls: String,
    /// Why perf gave nothing, if it did not.
    pub perf_problem: Option<String>,
}

/// The metric on which `auto` is furthest behind `direct`: (metric, auto ÷ direct
/// for throughputs and rates, direct ÷ auto for latency; lower is further behind).
pub fn slowest(results: &Results) -> Option<(Metric, f64)> {
    let candidates = [
        Metric::Bulk,
        Metric::Iperf1Up,
        Metric::Iperf1Down,
        Metric::Iperf8Up,
        Metric::Iperf8Down,
        // p50, not p99: on a shared machine the tail is other work's, and would pick at random.
        Metric::PingPongP50,
        Metric::RedisRps,
        Metric::ConnectionRate,
    ];
    candidates
        .into_iter()
        .filter_map(|m| {
            let (auto, direct) = (results.median(m, Contender::Auto)?, results.median(m, Contender::Direct)?);
            let ratio = if m.higher_is_better() { auto / direct } else { direct / auto };
            Some((m, ratio))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

pub fn record(bed: &Testbed, forwarder: &Forwarder, workload: Workload, metric: Metric, ratio: f64, config: &Config, patterns: &Patterns) -> Result<Profile> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("perf.data");
    let perf = Command::new("perf")
        .args(["record", "-a", "-g", "-e", "cpu-clock", "-F", "999", "-o"])
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("perf-record.log"))?)
        .spawn();
    // perf needs a moment before it samples every CPU.
    std::thread::sleep(Duration::from_millis(500));
    let agent = forwarder.main_pid().context("the agent is not running")?;
    let (agent_before, machine_before, started) = (procfs::process_cpu(agent)?, CpuTimes::now()?, Instant::now());
    let values = workload.run(bed, forwarder, config, patterns);
    let (seconds, machine) = (started.elapsed().as_secs_f64(), CpuTimes::now()?.since(&machine_before));
    let agent_after = procfs::process_cpu(agent)?;
    let agent_threads: Vec<String> = std::fs::read_dir(format!("/proc/{agent}/task"))?
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .collect();
    if let Some((_, Err(e))) = values.iter().find(|(_, v)| v.is_err()) {
        anyhow::bail!("the profiled {} failed: {e}", workload.describe());
    }
    let mut profile = Profile {
        workload: workload.describe(),
        metric,
        ratio,
        seconds,
        machine,
        agent: (agent_after.0 - agent_before.0, agent_after.1 - agent_before.1),
        by_command: String::new(),
        agent_symbols: String::new(),
        agent_syscalls: String::new(),
        perf_problem: None,
    };
    match perf {
        Ok(mut child) => {
            // SAFETY: plain kill(2) on our own child; SIGINT makes perf write its data and exit.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let _ = child.wait();
            let report = |sort: &str, limit: &str, only: &[String], keep: &dyn Fn(&str) -> bool, lines: usize| -> Result<String> {
                let out = run_limited(
                    Command::new("perf")
                        .arg("report")
                        .arg("-i")
                        .arg(&data)
                        .args(["--stdio", "-g", "none", "--sort", sort, "--percent-limit", limit])
                        .args(only),
                    Duration::from_secs(120),
                )?;
                let text = String::from_utf8_lossy(&out.stdout);
                Ok(text
                    .lines()
                    .filter(|l| !l.starts_with('#') && !l.trim().is_empty() && keep(l))
                    .take(lines)
                    .map(str::trim_end)
                    .collect::<Vec<_>>()
                    .join("\n"))
            };
            // The agent's threads only, as shares of their own samples.
            let agent = |extra: &str| {
                vec![
                    format!("--tid={}", agent_threads.join(",")),
                    "--percentage".into(),
                    "relative".into(),
                    extra.into(),
                ]
            };
            let any = |_: &str| true;
            // With callers counted (--children), a syscall's entry point carries everything done under it.
            let syscalls = |l: &str| l.contains("[k] __x64_sys_") || l.contains("[k] __do_sys_");
            let reports = (
                report("comm", "2", &["--no-children".into()], &any, 12),
                report("dso,sym", "1", &agent("--no-children"), &any, 25),
                report("sym", "1", &agent("--children"), &syscalls, 15),
            );
            match reports {
                (Ok(c), Ok(s), Ok(calls)) if !c.is_empty() => (profile.by_command, profile.agent_symbols, profile.agent_syscalls) = (c, s, calls),
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => profile.perf_problem = Some(format!("{e:#}")),
                _ => {
                    profile.perf_problem = Some(format!(
                        "perf recorded no samples: {}",
                        std::fs::read_to_string(dir.path().join("perf-record.log")).unwrap_or_default().trim()
                    ))
                }
            }
        }
        Err(e) => profile.perf_problem = Some(format!("perf could not start: {e}")),
    }
    Ok(profile)
}
