//! The bounded soak: thousands of concurrent connections through the agent,
//! each carrying checksummed traffic, while the routes and endpoints behind
//! them change every second. Used by `tests/tests/soak.rs` (the short CI form)
//! and `sockgate-soak` (`cargo xtask soak`, the long form).
//!
//! The node serves a `main` listener (9000) whose route (weighted between
//! Service `a` on backend1 and Service `pool`, whose endpoints move between
//! backend1 and backend2) never changes identity, and a `side` listener (9001)
//! that comes and goes and whose route is swapped for another
//! ([`changes`]). One connection in `side_every` goes to `side`; the rest to
//! `main`. Each connection sends a chunk of its own position-addressable byte
//! pattern every `chunk_interval` and checks every echoed byte ([`load`]).
//! What must hold ([`Report::verdict`]):
//! - no byte ever differs (corruption), no exchange stalls;
//! - `main`'s connections are never interrupted (weights and endpoints change
//!   under them, their route stays); `side`'s are stopped only by a change
//!   that takes their route away, and those are counted apart;
//! - after every connection closed, the agent holds exactly the descriptors it
//!   held before the load, its eBPF listener map shows no live connection, and
//!   its memory did not grow between the middle and the end of the hold.
//!
//! The test process holds the client sockets, the echo backends ([`echo`])
//! run as processes of their own, and each raises its descriptor limit; the
//! agent is started with a soft limit of 1,024 and must raise its own
//! (gateway-agent/src/limits.rs). How many connections an agent can hold is
//! bounded by the limit it can reach ([`capacity`]); a run asked for more is
//! capped, and its report says so first.
mod changes;
mod echo;
mod load;
mod observe;
mod report;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use gateway_agent::limits::{self, OpenFiles};

pub use echo::echo_main;
pub use report::{AgentSample, Report, MEMORY_GROWTH_BOUND_FRACTION, MEMORY_GROWTH_BOUND_KIB};

use crate::cgroup::Cgroup;
use crate::harness::GatewayNode;
use crate::netns::unique_name;
use changes::Config;
use load::Load;
use observe::{inspect, listen_counters, listening, live_connections, open_files_limit, sample, LogTail};

pub const MAIN_PORT: u16 = 9000;
pub const SIDE_PORT: u16 = 9001;
const ECHO_PORT: u16 = 7000;
const MANIFEST: &str = "soak.yaml";
/// An exchange (one chunk out and back) that takes longer than this has stalled.
const STALL: Duration = Duration::from_secs(10);
/// A `main` connection is tried this many times before it counts as refused.
const MAIN_CONNECT_ATTEMPTS: u32 = 5;
/// A connect slower than this waited for a retransmitted SYN: a full queue somewhere.
const SLOW_CONNECT: Duration = Duration::from_secs(1);
/// The soft limit the agent is started with, as a service manager would give it.
const AGENT_START_SOFT_LIMIT: u64 = 1024;

#[derive(Clone, Debug)]
pub struct Settings {
    /// Connections held at once.
    pub connections: usize,
    /// How long the full load is held while the configuration changes.
    pub hold: Duration,
    /// Each connection sends one chunk this often (paced: 2 vCPUs must not just measure starvation).
    pub chunk_interval: Duration,
    /// Chunks are 1..=max_chunk bytes.
    pub max_chunk: usize,
    /// One connection in this many goes to the `side` listener.
    pub side_every: usize,
    /// One configuration change this often.
    pub change_every: Duration,
    /// Connections set up at once (connect, and the first echo back), well under the agent's listen backlog (1,024).
    pub connect_concurrency: usize,
    /// The agent's `--dataplane`: `auto` (the kernel splice where its self-test passes, with the eBPF maps) is what is deployed.
    pub dataplane: String,
    /// Hold no more connections than the agent's descriptor limit allows (see [`capacity`]).
    pub cap_to_fd_limit: bool,
}

impl Settings {
    /// The CI form: 10,000 connections held for 30 s.
    pub fn ci() -> Settings {
        Settings {
            connections: 10_000,
            hold: Duration::from_secs(30),
            chunk_interval: Duration::from_secs(1),
            max_chunk: 1024,
            side_every: 10,
            change_every: Duration::from_secs(1),
            connect_concurrency: 128,
            dataplane: "auto".into(),
            cap_to_fd_limit: true,
        }
    }

    fn is_side(&self, index: usize) -> bool {
        index.is_multiple_of(self.side_every)
    }

    fn main_connections(&self) -> usize {
        (0..self.connections).filter(|i| !self.is_side(*i)).count()
    }

    /// Descriptors the agent holds per connection: two sockets, and on the
    /// splice path two pipes. `auto` may pick the kernel splice (one socket
    /// per connection once handed over), but must hold the soak wherever it
    /// runs, so it is sized for splice(2).
    fn descriptors_per_connection(&self) -> u64 {
        if self.dataplane == "copy" {
            2
        } else {
            limits::DESCRIPTORS_PER_CONNECTION
        }
    }
}

/// How many connections an agent whose open files limit can reach `limit`
/// holds on `settings`' data path, keeping 5 % (at least 256) of its
/// descriptors for itself: listeners, eBPF maps, reading its manifests, and
/// the connections that reconnect while their old descriptors are closing.
pub fn capacity(settings: &Settings, limit: u64) -> usize {
    let reserve = (limit / 20).max(256);
    (limit.saturating_sub(reserve) / settings.descriptors_per_connection()) as usize
}

/// Runs the soak and measures it. Fails only when the soak could not be run;
/// what it found is in the report ([`Report::verdict`]).
pub fn run(asked: &Settings) -> Result<Report> {
    let started = Instant::now();

    // This process holds the client end of every connection; the echo processes the other.
    let original = limits::current()?;
    let raised = limits::raise()?;
    // The agent, root like this process, can raise its limit exactly as far.
    let reachable = raised.after.soft;
    let mut settings = asked.clone();
    let mut capped = None;
    if asked.cap_to_fd_limit && capacity(asked, reachable) < asked.connections {
        settings.connections = capacity(asked, reachable);
        let why = match &raised.hard_refused {
            Some(e) => format!("its hard limit is {} and cannot be raised here ({e}: no CAP_SYS_RESOURCE)", raised.after.hard),
            None => format!("that is its hard limit ({})", raised.after.hard),
        };
        capped = Some(format!(
            "asked for {} connections; held {}: the agent's open files limit can reach {reachable} ({why}), \
             and each connection holds {} descriptors on the {} path",
            asked.connections,
            settings.connections,
            settings.descriptors_per_connection(),
            settings.dataplane
        ));
    }
    let needed = settings.connections as u64 + 1024;
    if reachable < needed {
        bail!("this process may open {reachable} files; the soak needs {needed}");
    }
    let settings = &settings;
    let mut report = Report { settings: Some(settings.clone()), capped, main_connections: settings.main_connections(), ..Report::default() };

    // The agent on the node: eBPF maps (auto) in a pin directory and cgroup of
    // the soak's own, started with the limits a service manager would give it.
    let cgroup = Cgroup::create()?;
    let pin_dir = format!("/sys/fs/bpf/{}", unique_name("sockgate-soak"));
    let cg = cgroup.path().to_str().context("cgroup path")?.to_string();
    let agent_start = OpenFiles { soft: AGENT_START_SOFT_LIMIT.min(original.soft), hard: original.hard };
    let mut config = Config::initial();
    let args = ["--dataplane", settings.dataplane.as_str(), "--bpf-pin-dir", &pin_dir, "--cgroup", &cg];
    let mut node = GatewayNode::start_with(&[(MANIFEST, config.yaml())], &args, |cmd| {
        use std::os::unix::process::CommandExt;
        cgroup.enroll(cmd);
        cmd.env("SOCKGATE_LOG", "info");
        let limit = libc::rlimit { rlim_cur: agent_start.soft, rlim_max: agent_start.hard };
        // SAFETY: setrlimit is async-signal-safe; it only lowers limits for the child about to exec.
        unsafe {
            cmd.pre_exec(move || if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) });
        }
    })?;
    let result = (|| {
        let logs = node.logs.path().to_path_buf();
        let echoes = [echo::start(&node.hosts.backend1, "echo-backend1", &logs)?, echo::start(&node.hosts.backend2, "echo-backend2", &logs)?];
        report.agent_limit_started = Some(agent_start);
        let result = soak(settings, &mut node, &mut config, &pin_dir, &mut report, started);
        report.echo_accepted = [echo::accepted(&echoes[0]), echo::accepted(&echoes[1])];
        result
    })();
    report.wall = started.elapsed();
    drop(node);
    // The agent unpins its maps when it exits on SIGTERM; if it had to be killed, they are removed here.
    let _ = std::fs::remove_dir_all(&pin_dir);
    drop(cgroup);
    result.map(|()| report)
}

/// Ramp, hold with a change every `change_every`, close, and measure what is left.
fn soak(settings: &Settings, node: &mut GatewayNode, config: &mut Config, pin_dir: &str, report: &mut Report, started: Instant) -> Result<()> {
    let pid = node.agent.pid();
    report.agent_limit_running = open_files_limit(pid);
    let mut log = LogTail::new(&node.agent.log);
    node.wait_for_port(MAIN_PORT)?;
    node.wait_for_port(SIDE_PORT)?;
    std::thread::sleep(Duration::from_millis(300));
    report.agent_baseline = sample(pid);
    let listen_before = listen_counters(&node.hosts.node)?;
    report.setup = started.elapsed();

    // Ramp: every connection at once, its connects paced by the semaphore.
    let ramp_started = Instant::now();
    let load = Load::start(settings, &node.hosts.client)?;
    let ramp_deadline = Instant::now() + Duration::from_secs(60);
    while load.held().0 < settings.connections && Instant::now() < ramp_deadline && load.counters().main_connects_given_up.load(Relaxed) == 0 {
        std::thread::sleep(Duration::from_millis(20));
    }
    report.ramp = ramp_started.elapsed();
    report.held_after_ramp = load.held().0;
    report.agent_after_ramp = sample(pid);
    let mut peak = report.agent_after_ramp;

    // Hold: one change every `change_every`, each applied before the next.
    let hold_started = Instant::now();
    let (mut held_min, mut held_max, mut main_held_min) = (usize::MAX, 0, usize::MAX);
    let mut watch_until = |until: Instant| {
        while Instant::now() < until {
            let (held, main) = load.held();
            (held_min, held_max, main_held_min) = (held_min.min(held), held_max.max(held), main_held_min.min(main));
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let mut latencies = Vec::new();
    let steps = (settings.hold.as_secs_f64() / settings.change_every.as_secs_f64()).floor() as usize;
    let hold_result = (|| -> Result<()> {
        for k in 0..steps {
            watch_until(hold_started + settings.change_every * k as u32);
            let side_before = config.side;
            let (what, disruption) = config.advance(k);
            load.change_written(disruption, side_before.is_none() && config.side.is_some());
            let (before, written) = (log.applied, Instant::now());
            node.write(MANIFEST, &config.yaml())?;
            log.wait_applied(before, Duration::from_secs(10)).with_context(|| format!("change {k} ({what})"))?;
            latencies.push(written.elapsed());
            let removed_side = side_before.is_some() && config.side.is_none();
            load.change_applied(&what, disruption, removed_side);
            if removed_side {
                // How long the agent's socket still listens after it logged the change.
                let applied = Instant::now();
                while listening(&node.hosts.node, SIDE_PORT)? && applied.elapsed() < settings.change_every {
                    std::thread::sleep(Duration::from_millis(2));
                }
                report.removed_listener_linger_max = report.removed_listener_linger_max.max(applied.elapsed());
            }
            let now = sample(pid);
            (peak.fds, peak.rss_kib) = (peak.fds.max(now.fds), peak.rss_kib.max(now.rss_kib));
            if k == steps / 2 {
                report.agent_mid = now;
            }
        }
        // The last change, too, is held under load until the hold ends.
        watch_until(hold_started + settings.hold);
        Ok(())
    })();
    report.hold = hold_started.elapsed();
    report.agent_end_of_hold = sample(pid);
    (peak.fds, peak.rss_kib) = (peak.fds.max(report.agent_end_of_hold.fds), peak.rss_kib.max(report.agent_end_of_hold.rss_kib));
    (report.held_min, report.held_max, report.main_held_min) = (held_min, held_max, main_held_min);
    report.changes_applied = latencies.len() as u64;
    latencies.sort();
    report.apply_latency_median = latencies.get(latencies.len() / 2).copied().unwrap_or_default();
    report.apply_latency_max = latencies.last().copied().unwrap_or_default();

    // Close: every connection FINs and expects a FIN back.
    let close_started = Instant::now();
    let (joined, shared) = load.stop(Duration::from_secs(60));
    report.close = close_started.elapsed();
    let c = &shared.counters;
    if !joined {
        c.fail("connections still open 60 s after the soak ended".into());
    }
    hold_result?;

    // Back to the starting configuration, so the listener count matches the baseline.
    if *config != Config::initial() {
        let before = log.applied;
        *config = Config::initial();
        node.write(MANIFEST, &config.yaml())?;
        log.wait_applied(before, Duration::from_secs(10))?;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        report.agent_after_close = sample(pid);
        if report.agent_after_close.fds <= report.agent_baseline.fds || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Only `auto` loads BPF; `splice` and `copy` pin no maps.
    if settings.dataplane == "auto" {
        let deadline = Instant::now() + Duration::from_secs(5);
        let view = loop {
            let view = inspect(pin_dir)?;
            if live_connections(&view).iter().all(|(_, n)| *n == 0) || Instant::now() > deadline {
                break view;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        report.map_active_after_close = live_connections(&view);
        if let Some(main) = view["listeners"].as_array().and_then(|ls| ls.iter().find(|l| l["port"] == MAIN_PORT)) {
            // Through the node's sockets (set-up, splice(2)) and, after a
            // handover, through the kernel splice, which those never see.
            let counted = |field: &str| main[field].as_u64().unwrap_or(0) + main["kernelSplice"][field].as_u64().unwrap_or(0);
            report.kernel_main_bytes_from_clients = counted("bytesFromClients");
            report.kernel_main_bytes_to_clients = counted("bytesToClients");
        }
    }
    let listen_after = listen_counters(&node.hosts.node)?;
    (report.listen_overflows, report.listen_drops) = (listen_after.0 - listen_before.0, listen_after.1 - listen_before.1);
    report.agent_peak_fds = peak.fds;
    report.agent_peak_rss_kib = peak.rss_kib;
    let logs = node.agent.logs();
    report.agent_log_accept_failed = logs.matches("accept failed").count();
    report.agent_log_first_accept_failures = logs.lines().filter(|l| l.contains("accept failed")).take(3).map(String::from).collect();
    report.agent_log_forwarding_failed = logs.matches("forwarding failed").count();
    report.agent_log_connections_stopped = logs.matches("connection stopped").count();
    report.agent_log_errors = logs.lines().filter(|l| l.contains(" ERROR ")).count();
    report.agent_log_first_errors = logs.lines().filter(|l| l.contains(" ERROR ")).take(3).map(String::from).collect();
    c.copy_into(report);
    Ok(())
}
