//! What is measured, and the samples of each contender: numbers, or failures
//! (a failed measurement is reported as such, never as a number).
use std::collections::BTreeMap;

use super::contenders::Contender;
use super::splice_counters::SpliceCounters;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    Bulk,
    CpuPerGib,
    Iperf1Up,
    Iperf1Down,
    Iperf8Up,
    Iperf8Down,
    PingPongP50,
    PingPongP99,
    PingPongP999,
    RedisRps,
    RedisP50,
    RedisP99,
    ConnectionRate,
    StallFirstP50,
    StallFirstP99,
    StallFirstMax,
    StallTrickleP50,
    StallTrickleP99,
    StallTrickleMax,
    StallAnswerP50,
    StallAnswerP99,
    StallAnswerMax,
    StallSlow,
    StallTimeouts,
    UdpRate64,
    UdpRate512,
    UdpRate1400,
    UdpUnanswered64,
    UdpUnanswered512,
    UdpUnanswered1400,
    UdpCpu64,
    UdpCpu512,
    UdpCpu1400,
    IperfUdp,
    IperfUdpLoss,
    IdleRss,
    IdleKibPerConnection,
    IdleFdsPerConnection,
    ManyIdleRss,
    ManyIdleFdsPerConnection,
}

impl Metric {
    pub const ALL: [Metric; 40] = [
        Metric::Bulk,
        Metric::CpuPerGib,
        Metric::Iperf1Up,
        Metric::Iperf1Down,
        Metric::Iperf8Up,
        Metric::Iperf8Down,
        Metric::PingPongP50,
        Metric::PingPongP99,
        Metric::PingPongP999,
        Metric::RedisRps,
        Metric::RedisP50,
        Metric::RedisP99,
        Metric::ConnectionRate,
        Metric::StallFirstP50,
        Metric::StallFirstP99,
        Metric::StallFirstMax,
        Metric::StallTrickleP50,
        Metric::StallTrickleP99,
        Metric::StallTrickleMax,
        Metric::StallAnswerP50,
        Metric::StallAnswerP99,
        Metric::StallAnswerMax,
        Metric::StallSlow,
        Metric::StallTimeouts,
        Metric::UdpRate64,
        Metric::UdpRate512,
        Metric::UdpRate1400,
        Metric::UdpUnanswered64,
        Metric::UdpUnanswered512,
        Metric::UdpUnanswered1400,
        Metric::UdpCpu64,
        Metric::UdpCpu512,
        Metric::UdpCpu1400,
        Metric::IperfUdp,
        Metric::IperfUdpLoss,
        Metric::IdleRss,
        Metric::IdleKibPerConnection,
        Metric::IdleFdsPerConnection,
        Metric::ManyIdleRss,
        Metric::ManyIdleFdsPerConnection,
    ];

    /// The heading of its table in the report; `{idle}` and `{many}` stand for the configured connection counts.
    pub fn title(&self) -> &'static str {
        match self {
            Metric::Bulk => "Checksummed transfer, both directions at once: throughput per direction",
            Metric::CpuPerGib => "CPU per GiB moved (whole machine, during the checksummed transfer)",
            Metric::Iperf1Up => "iperf3, 1 stream, client → backend",
            Metric::Iperf1Down => "iperf3 -R, 1 stream, backend → client",
            Metric::Iperf8Up => "iperf3 -P 8, client → backend",
            Metric::Iperf8Down => "iperf3 -P 8 -R, backend → client",
            Metric::PingPongP50 => "Ping-pong, 64 B on one persistent connection: p50 round trip",
            Metric::PingPongP99 => "Ping-pong: p99 round trip",
            Metric::PingPongP999 => "Ping-pong: p99.9 round trip",
            Metric::RedisRps => "redis-benchmark GET, 8 persistent connections: requests per second",
            Metric::RedisP50 => "redis-benchmark GET: p50 latency",
            Metric::RedisP99 => "redis-benchmark GET: p99 latency",
            Metric::ConnectionRate => "New connections per second, one-byte exchange each",
            Metric::StallFirstP50 => "Handover stall, first bytes of a fresh connection (one write) to the backend's read: p50",
            Metric::StallFirstP99 => "Handover stall, first bytes: p99",
            Metric::StallFirstMax => "Handover stall, first bytes: max",
            Metric::StallTrickleP50 => "Handover stall, 1 byte per ms for 50 ms on a fresh connection, worst byte per connection: p50",
            Metric::StallTrickleP99 => "Handover stall, 1 byte per ms: p99",
            Metric::StallTrickleMax => "Handover stall, 1 byte per ms: max",
            Metric::StallAnswerP50 => "Handover stall, the backend's one-byte answer right after the client's last byte (backend → client, both variants): p50",
            Metric::StallAnswerP99 => "Handover stall, the backend's answer: p99",
            Metric::StallAnswerMax => "Handover stall, the backend's answer: max",
            Metric::StallSlow => "Handover stall: connections (of both variants) whose bytes, either way, waited ≥ 150 ms (a loss probe or retransmission timeout)",
            Metric::StallTimeouts => "Handover stall: retransmission timeouts and tail-loss probes of the client and backend hosts during the workload (nstat)",
            Metric::UdpRate64 => "UDP echo, 64-byte datagrams over 4 flows, at most 16 unanswered per flow: datagrams answered per second",
            Metric::UdpRate512 => "UDP echo, 512-byte datagrams: datagrams answered per second",
            Metric::UdpRate1400 => "UDP echo, 1400-byte datagrams: datagrams answered per second",
            Metric::UdpUnanswered64 => "UDP echo, 64-byte datagrams: unanswered (no answer within 250 ms), of those sent",
            Metric::UdpUnanswered512 => "UDP echo, 512-byte datagrams: unanswered, of those sent",
            Metric::UdpUnanswered1400 => "UDP echo, 1400-byte datagrams: unanswered, of those sent",
            Metric::UdpCpu64 => "CPU per million datagrams echoed (whole machine, during the 64-byte UDP echo)",
            Metric::UdpCpu512 => "CPU per million datagrams echoed (whole machine, during the 512-byte UDP echo)",
            Metric::UdpCpu1400 => "CPU per million datagrams echoed (whole machine, during the 1400-byte UDP echo)",
            Metric::IperfUdp => "iperf3 -u -b 0 -l 1400, client → backend: received",
            Metric::IperfUdpLoss => "iperf3 -u -b 0 -l 1400: datagrams lost on the way, of those sent",
            Metric::IdleRss => "Forwarder resident memory with {idle} idle connections",
            Metric::IdleKibPerConnection => "Forwarder resident memory per idle connection (growth while opening {idle})",
            Metric::IdleFdsPerConnection => "Forwarder descriptors per idle connection (growth while opening {idle})",
            Metric::ManyIdleRss => "Forwarder resident memory with {many} idle connections",
            Metric::ManyIdleFdsPerConnection => "Forwarder descriptors per idle connection (growth while opening {many})",
        }
    }

    pub fn unit(&self) -> &'static str {
        match self {
            Metric::Bulk => "GiB/s",
            Metric::CpuPerGib => "CPU s/GiB",
            Metric::Iperf1Up | Metric::Iperf1Down | Metric::Iperf8Up | Metric::Iperf8Down => "Gbit/s",
            Metric::PingPongP50 | Metric::PingPongP99 | Metric::PingPongP999 => "µs",
            Metric::RedisRps => "requests/s",
            Metric::RedisP50 | Metric::RedisP99 => "ms",
            Metric::ConnectionRate => "connections/s",
            Metric::StallFirstP50 | Metric::StallFirstP99 | Metric::StallFirstMax | Metric::StallTrickleP50 | Metric::StallTrickleP99 | Metric::StallTrickleMax | Metric::StallAnswerP50 | Metric::StallAnswerP99 | Metric::StallAnswerMax => "ms",
            Metric::StallSlow => "connections",
            Metric::StallTimeouts => "timeouts and probes",
            Metric::UdpRate64 | Metric::UdpRate512 | Metric::UdpRate1400 => "datagrams/s",
            Metric::UdpUnanswered64 | Metric::UdpUnanswered512 | Metric::UdpUnanswered1400 | Metric::IperfUdpLoss => "%",
            Metric::UdpCpu64 | Metric::UdpCpu512 | Metric::UdpCpu1400 => "CPU s per million",
            Metric::IperfUdp => "Gbit/s",
            Metric::IdleFdsPerConnection | Metric::ManyIdleFdsPerConnection => "descriptors",
            Metric::IdleRss | Metric::ManyIdleRss => "MiB",
            Metric::IdleKibPerConnection => "KiB",
        }
    }

    pub fn higher_is_better(&self) -> bool {
        matches!(
            self,
            Metric::Bulk
                | Metric::Iperf1Up
                | Metric::Iperf1Down
                | Metric::Iperf8Up
                | Metric::Iperf8Down
                | Metric::RedisRps
                | Metric::ConnectionRate
                | Metric::UdpRate64
                | Metric::UdpRate512
                | Metric::UdpRate1400
                | Metric::IperfUdp
        )
    }

    /// Whether it measures UDP: such tables compare with nginx (HAProxy 2.6 has no UDP proxy), and a contender that carries no UDP has no row figure there.
    pub fn is_udp(&self) -> bool {
        matches!(
            self,
            Metric::UdpRate64
                | Metric::UdpRate512
                | Metric::UdpRate1400
                | Metric::UdpUnanswered64
                | Metric::UdpUnanswered512
                | Metric::UdpUnanswered1400
                | Metric::UdpCpu64
                | Metric::UdpCpu512
                | Metric::UdpCpu1400
                | Metric::IperfUdp
                | Metric::IperfUdpLoss
        )
    }

    /// Whether the kernel-only contenders (direct, DNAT) have a value: they run no forwarder process.
    pub fn needs_forwarder(&self) -> bool {
        matches!(
            self,
            Metric::IdleRss | Metric::IdleKibPerConnection | Metric::IdleFdsPerConnection | Metric::ManyIdleRss | Metric::ManyIdleFdsPerConnection
        )
    }

    pub fn format(&self, v: f64) -> String {
        match self {
            Metric::RedisRps | Metric::ConnectionRate | Metric::StallSlow | Metric::StallTimeouts | Metric::UdpRate64 | Metric::UdpRate512 | Metric::UdpRate1400 => {
                format!("{v:.0}")
            }
            Metric::UdpUnanswered64 | Metric::UdpUnanswered512 | Metric::UdpUnanswered1400 | Metric::IperfUdpLoss => format!("{v:.3}"),
            Metric::StallFirstP50 | Metric::StallFirstP99 | Metric::StallFirstMax | Metric::StallTrickleP50 | Metric::StallTrickleP99 | Metric::StallTrickleMax | Metric::StallAnswerP50 | Metric::StallAnswerP99 | Metric::StallAnswerMax => {
                format!("{v:.3}")
            }
            Metric::PingPongP50 | Metric::PingPongP99 | Metric::PingPongP999 | Metric::IdleRss | Metric::ManyIdleRss | Metric::IdleKibPerConnection => {
                format!("{v:.1}")
            }
            Metric::RedisP50 | Metric::RedisP99 => format!("{v:.3}"),
            _ => format!("{v:.2}"),
        }
    }
}

/// Median, minimum and maximum of a contender's successful samples.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub count: usize,
}

pub fn summarize(values: &[f64]) -> Option<Summary> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    Some(Summary {
        median,
        min: v[0],
        max: v[n - 1],
        count: n,
    })
}

#[derive(Default)]
pub struct Results {
    samples: BTreeMap<(Metric, Contender), Vec<Result<f64, String>>>,
    /// What the kernel TCP splice did during each workload (by its key), per
    /// round, for the sockgate contenders that load it.
    pub splice: BTreeMap<(Contender, &'static str), Vec<SpliceCounters>>,
    /// Datagrams the node's own UDP sockets received during each UDP workload (by its key), per round:
    /// which path really carried them (a userspace proxy receives each datagram, a kernel path none).
    pub node_udp: BTreeMap<(Contender, &'static str), Vec<u64>>,
}

impl Results {
    pub fn record(&mut self, metric: Metric, contender: Contender, sample: Result<f64, String>) {
        self.samples.entry((metric, contender)).or_default().push(sample);
    }

    pub fn summary(&self, metric: Metric, contender: Contender) -> Option<Summary> {
        let values: Vec<f64> = self
            .samples
            .get(&(metric, contender))?
            .iter()
            .filter_map(|s| s.as_ref().ok().copied())
            .collect();
        summarize(&values)
    }

    pub fn median(&self, metric: Metric, contender: Contender) -> Option<f64> {
        self.summary(metric, contender).map(|s| s.median)
    }

    /// Every distinct failure of a contender's samples, with how often it happened.
    pub fn failures(&self, metric: Metric, contender: Contender) -> Vec<(String, usize)> {
        let mut seen: Vec<(String, usize)> = Vec::new();
        for e in self.samples.get(&(metric, contender)).into_iter().flatten().filter_map(|s| s.as_ref().err()) {
            match seen.iter_mut().find(|(m, _)| m == e) {
                Some((_, n)) => *n += 1,
                None => seen.push((e.clone(), 1)),
            }
        }
        seen
    }

    pub fn has_failures(&self) -> bool {
        self.samples.values().flatten().any(|s| s.is_err())
    }
}
