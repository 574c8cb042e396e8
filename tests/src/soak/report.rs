//! What the soak measured, the invariants it checks ([`Report::verdict`]), and
//! the figures in words.
use std::fmt;
use std::time::Duration;

use gateway_agent::limits::OpenFiles;

use super::{Settings, MAIN_CONNECT_ATTEMPTS, SLOW_CONNECT, STALL};

/// The agent's descriptors and memory at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct AgentSample {
    pub fds: usize,
    pub rss_kib: u64,
    /// VmData: the extent of the heap and anonymous mappings. Touching memory
    /// already allocated grows RSS but not this; allocating more grows it.
    pub data_kib: u64,
    /// User + system CPU time so far.
    pub cpu_seconds: f64,
}

/// Everything measured; [`Report::verdict`] says what failed.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The settings as run: `connections` may be lower than asked (see `capped`).
    pub settings: Option<Settings>,
    /// Why fewer connections were held than asked, if they were.
    pub capped: Option<String>,
    pub wall: Duration,
    pub setup: Duration,
    pub ramp: Duration,
    pub hold: Duration,
    pub close: Duration,
    /// The agent's RLIMIT_NOFILE as started and as it raised it.
    pub agent_limit_started: Option<OpenFiles>,
    pub agent_limit_running: Option<OpenFiles>,
    pub held_after_ramp: usize,
    pub held_min: usize,
    pub held_max: usize,
    pub main_held_min: usize,
    pub main_connections: usize,
    pub connects: u64,
    pub connect_retries: u64,
    pub slow_connects: u64,
    pub main_connects_given_up: u64,
    pub side_connects_refused: u64,
    pub changes_applied: u64,
    pub apply_latency_max: Duration,
    pub apply_latency_median: Duration,
    pub disruptions: u64,
    pub bytes_sent: u64,
    pub bytes_sent_main: u64,
    pub bytes_verified: u64,
    pub chunks_verified: u64,
    pub corrupted_bytes: u64,
    pub corrupted_connections: u64,
    pub stalls: u64,
    pub stopped_by_route_change: u64,
    /// Of those, side connections begun after the agent applied the removal
    /// of their listener and reset before it came back: the agent still
    /// completed handshakes on the socket it was closing. How many, and how
    /// long after the removal was applied the latest of them began.
    pub reset_by_closing_listener: u64,
    pub reset_by_closing_listener_latest: Duration,
    /// The longest a removed listener's socket still listened after the agent
    /// logged "configuration applied" for its removal (`ss -ltn` every 2 ms, up to `change_every`).
    pub removed_listener_linger_max: Duration,
    pub unexpected_interruptions: u64,
    pub clean_closes: u64,
    pub close_failures: u64,
    pub echo_accepted: [u64; 2],
    pub agent_baseline: AgentSample,
    pub agent_after_ramp: AgentSample,
    pub agent_mid: AgentSample,
    pub agent_end_of_hold: AgentSample,
    pub agent_after_close: AgentSample,
    pub agent_peak_fds: usize,
    pub agent_peak_rss_kib: u64,
    /// Live connections per listener port in the pinned LISTENERS map after close.
    pub map_active_after_close: Vec<(u64, u64)>,
    /// The kernel's payload counters for `main` (cgroup_skb), after close.
    pub kernel_main_bytes_from_clients: u64,
    pub kernel_main_bytes_to_clients: u64,
    pub agent_log_accept_failed: usize,
    pub agent_log_first_accept_failures: Vec<String>,
    pub agent_log_forwarding_failed: usize,
    pub agent_log_connections_stopped: usize,
    pub agent_log_errors: usize,
    pub agent_log_first_errors: Vec<String>,
    /// The node namespace's TcpExt ListenOverflows and ListenDrops during the soak:
    /// connections the agent's accept queue (listen backlog) had no room for.
    pub listen_overflows: u64,
    pub listen_drops: u64,
    /// The first few failures, in words.
    pub failures: Vec<String>,
}

/// How much the agent's memory (RSS, and VmData) may grow between the middle
/// and the end of the hold: the load is steady then, so growth beyond
/// allocator noise (the larger of 8 MiB and 5 %) is a leak.
pub const MEMORY_GROWTH_BOUND_KIB: u64 = 8 * 1024;
pub const MEMORY_GROWTH_BOUND_FRACTION: f64 = 0.05;

impl Report {
    /// Every invariant that failed, in words; empty when the soak passed.
    pub fn verdict(&self) -> Vec<String> {
        let Some(s) = &self.settings else { return vec!["the soak did not run".into()] };
        let mut v = Vec::new();
        let mut check = |ok: bool, what: String| {
            if !ok {
                v.push(what)
            }
        };
        check(self.held_after_ramp == s.connections, format!("held {} of {} connections after the ramp", self.held_after_ramp, s.connections));
        check(self.corrupted_bytes == 0, format!("{} corrupted bytes on {} connections", self.corrupted_bytes, self.corrupted_connections));
        check(self.stalls == 0, format!("{} exchanges stalled for {STALL:?}", self.stalls));
        check(
            self.unexpected_interruptions == 0,
            format!("{} connections interrupted without a change taking their route away", self.unexpected_interruptions),
        );
        check(
            self.main_held_min == self.main_connections,
            format!("main's connections fell to {} of {} during the hold", self.main_held_min, self.main_connections),
        );
        check(
            self.main_connects_given_up == 0,
            format!("{} main connections could not connect in {MAIN_CONNECT_ATTEMPTS} attempts", self.main_connects_given_up),
        );
        check(self.disruptions > 0 && self.stopped_by_route_change > 0, "no connection was stopped by a route change: the soak did not test that".into());
        let due = (self.hold.as_secs_f64() / s.change_every.as_secs_f64()).floor() as u64;
        check(self.changes_applied + 1 >= due, format!("{} changes applied in {:?}, {due} were due", self.changes_applied, self.hold));
        check(self.echo_accepted.iter().all(|n| *n > 0), format!("backend1 and backend2 must both serve (accepted {:?})", self.echo_accepted));
        check(self.close_failures == 0, format!("{} connections did not close cleanly", self.close_failures));
        check(
            self.clean_closes >= self.main_connections as u64,
            format!("{} connections closed cleanly at the end; main alone had {}", self.clean_closes, self.main_connections),
        );
        check(
            // Fewer is fine: the baseline may hold pooled splice pipes (closed after a second idle).
            self.agent_after_close.fds <= self.agent_baseline.fds,
            format!("agent descriptors after close {} > baseline {}: descriptors leaked", self.agent_after_close.fds, self.agent_baseline.fds),
        );
        let grew = |name: &str, mid: u64, end: u64| {
            let bound = MEMORY_GROWTH_BOUND_KIB.max((mid as f64 * MEMORY_GROWTH_BOUND_FRACTION) as u64);
            (end <= mid + bound, format!("agent {name} grew from {mid} KiB (middle of the hold) to {end} KiB (end), more than {bound} KiB"))
        };
        let (ok, what) = grew("VmData", self.agent_mid.data_kib, self.agent_end_of_hold.data_kib);
        check(ok, what);
        // The copy path allocates two 64 KiB buffers per connection at once and
        // touches their pages as reused allocations are zeroed: its RSS climbs
        // toward VmData while the load churns, without allocating more.
        if s.dataplane != "copy" {
            let (ok, what) = grew("RSS", self.agent_mid.rss_kib, self.agent_end_of_hold.rss_kib);
            check(ok, what);
        }
        check(
            s.dataplane != "auto" || (!self.map_active_after_close.is_empty() && self.map_active_after_close.iter().all(|(_, n)| *n == 0)),
            format!("LISTENERS live connections after close (port, count): {:?}", self.map_active_after_close),
        );
        check(
            s.dataplane != "auto" || self.kernel_main_bytes_from_clients >= self.bytes_sent_main && self.kernel_main_bytes_to_clients >= self.bytes_sent_main,
            format!(
                "the kernel counted {} bytes from and {} to main's clients, fewer than the {} each way the clients saw",
                self.kernel_main_bytes_from_clients, self.kernel_main_bytes_to_clients, self.bytes_sent_main
            ),
        );
        check(self.agent_log_accept_failed == 0, format!("the agent logged {} accept failures, the first: {:?}", self.agent_log_accept_failed, self.agent_log_first_accept_failures));
        check(self.agent_log_errors == 0, format!("the agent logged {} errors, the first: {:?}", self.agent_log_errors, self.agent_log_first_errors));
        check(self.agent_log_forwarding_failed == 0, format!("the agent logged {} forwarding failures", self.agent_log_forwarding_failed));
        let needed = s.connections as u64 * s.descriptors_per_connection();
        check(
            self.agent_limit_running.is_some_and(|l| l.soft >= needed),
            format!("the agent's open files limit {:?} is below the {needed} the load needs", self.agent_limit_running),
        );
        for f in &self.failures {
            v.push(format!("first failures: {f}"));
        }
        v
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.settings.clone().unwrap_or_else(Settings::ci);
        if let Some(why) = &self.capped {
            writeln!(f, "CAPPED: {why}")?;
        }
        writeln!(
            f,
            "soak ({}): {} connections ({} main, {} side), a chunk of 1..={} B every {:?} each, a change every {:?}",
            s.dataplane,
            s.connections,
            self.main_connections,
            s.connections - self.main_connections,
            s.max_chunk,
            s.chunk_interval,
            s.change_every
        )?;
        writeln!(
            f,
            "  wall {:.1} s: set-up {:.1} s, ramp {:.1} s, hold {:.1} s, close {:.1} s",
            self.wall.as_secs_f64(),
            self.setup.as_secs_f64(),
            self.ramp.as_secs_f64(),
            self.hold.as_secs_f64(),
            self.close.as_secs_f64()
        )?;
        writeln!(f, "  agent open files limit: started {:?}, running {:?}", self.agent_limit_started, self.agent_limit_running)?;
        writeln!(
            f,
            "  held: {} after the ramp; during the hold {}..={} (main never below {} of {})",
            self.held_after_ramp, self.held_min, self.held_max, self.main_held_min, self.main_connections
        )?;
        writeln!(
            f,
            "  connects: {} ({} retried, {} slower than {:?}, {} main given up, {} side refused while its listener was away)",
            self.connects, self.connect_retries, self.slow_connects, SLOW_CONNECT, self.main_connects_given_up, self.side_connects_refused
        )?;
        writeln!(
            f,
            "  changes applied: {} (apply latency median {:?}, max {:?}); {} took side's route away",
            self.changes_applied, self.apply_latency_median, self.apply_latency_max, self.disruptions
        )?;
        writeln!(
            f,
            "  bytes: {} sent ({} on main), {} echoed and verified ({} chunks); moved through the agent: {} (both ways)",
            self.bytes_sent,
            self.bytes_sent_main,
            self.bytes_verified,
            self.chunks_verified,
            2 * self.bytes_verified
        )?;
        writeln!(
            f,
            "  corrupted bytes: {} ({} connections); stalls: {}; stopped by route changes: {}; interrupted otherwise: {}",
            self.corrupted_bytes, self.corrupted_connections, self.stalls, self.stopped_by_route_change, self.unexpected_interruptions
        )?;
        writeln!(
            f,
            "  of the stopped, {} began up to {:?} after the agent applied the removal of their listener: it still completed handshakes on it, then reset them",
            self.reset_by_closing_listener, self.reset_by_closing_listener_latest
        )?;
        writeln!(f, "  a removed listener still listened up to {:?} after the agent logged its removal", self.removed_listener_linger_max)?;
        writeln!(
            f,
            "  closes: {} clean, {} failed; echo connections accepted: backend1 {}, backend2 {}",
            self.clean_closes, self.close_failures, self.echo_accepted[0], self.echo_accepted[1]
        )?;
        for (name, a) in [
            ("baseline", self.agent_baseline),
            ("after ramp", self.agent_after_ramp),
            ("mid hold", self.agent_mid),
            ("end of hold", self.agent_end_of_hold),
            ("after close", self.agent_after_close),
        ] {
            writeln!(
                f,
                "  agent {name:>11}: {:>6} fds, RSS {:>7.1} MiB, VmData {:>7.1} MiB, CPU {:>6.1} s",
                a.fds,
                mib(a.rss_kib),
                mib(a.data_kib),
                a.cpu_seconds
            )?;
        }
        writeln!(f, "  agent peak: {} fds, RSS {:.1} MiB", self.agent_peak_fds, mib(self.agent_peak_rss_kib))?;
        writeln!(f, "  node's accept queues: {} overflows, {} drops (TcpExt ListenOverflows, ListenDrops)", self.listen_overflows, self.listen_drops)?;
        writeln!(
            f,
            "  LISTENERS live connections after close: {:?}; kernel counted on main {} B from clients, {} B to clients",
            self.map_active_after_close, self.kernel_main_bytes_from_clients, self.kernel_main_bytes_to_clients
        )?;
        write!(
            f,
            "  agent log: {} errors, {} accept failures, {} forwarding failures, {} connections stopped",
            self.agent_log_errors, self.agent_log_accept_failed, self.agent_log_forwarding_failed, self.agent_log_connections_stopped
        )
    }
}
