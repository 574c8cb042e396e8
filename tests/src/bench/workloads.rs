//! The workloads, each run once per contender per round on a fresh testbed,
//! and what each one yields.
use anyhow::Result;

use super::bulk::{self, Patterns};
use super::contenders::Forwarder;
use super::metrics::Metric;
use super::testbed::{Testbed, BULK, ECHO, IPERF, IPERF_UDP, REDIS, STALL, UDP_ECHO};
use super::{connections, datagrams, iperf, latency, stall, Config};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Bulk,
    Iperf {
        streams: u32,
        reverse: bool,
    },
    PingPong,
    Redis,
    ConnectionRate,
    /// Fresh connections one after another: how long their bytes take to reach the backend while the forwarder sets them up.
    HandoverStall,
    /// UDP datagrams of `size` bytes echoed by the backend, over a few flows with a bounded window, every answer checked.
    Datagrams {
        size: usize,
    },
    /// `iperf3 -u` at full speed, client → backend.
    IperfUdp,
    /// As many idle connections as every forwarder here can hold (`--idle-connections`).
    IdleConnections,
    /// The 10,000 (`--many-idle-connections`), which a forwarder may fail to hold.
    ManyIdleConnections,
}

impl Workload {
    /// In the order they run; the idle connections last, as they leave the most state behind.
    pub const ALL: [Workload; 15] = [
        Workload::Bulk,
        Workload::Iperf { streams: 1, reverse: false },
        Workload::Iperf { streams: 1, reverse: true },
        Workload::Iperf { streams: 8, reverse: false },
        Workload::Iperf { streams: 8, reverse: true },
        Workload::PingPong,
        Workload::Redis,
        Workload::ConnectionRate,
        Workload::HandoverStall,
        Workload::Datagrams { size: 64 },
        Workload::Datagrams { size: 512 },
        Workload::Datagrams { size: 1400 },
        Workload::IperfUdp,
        Workload::IdleConnections,
        Workload::ManyIdleConnections,
    ];

    pub fn metrics(&self) -> Vec<Metric> {
        match self {
            Workload::Bulk => vec![Metric::Bulk, Metric::CpuPerGib],
            Workload::Iperf { streams: 1, reverse: false } => vec![Metric::Iperf1Up],
            Workload::Iperf { streams: 1, reverse: true } => vec![Metric::Iperf1Down],
            Workload::Iperf { reverse: false, .. } => vec![Metric::Iperf8Up],
            Workload::Iperf { reverse: true, .. } => vec![Metric::Iperf8Down],
            Workload::PingPong => vec![Metric::PingPongP50, Metric::PingPongP99, Metric::PingPongP999],
            Workload::Redis => vec![Metric::RedisRps, Metric::RedisP50, Metric::RedisP99],
            Workload::ConnectionRate => vec![Metric::ConnectionRate],
            Workload::HandoverStall => vec![
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
            ],
            Workload::Datagrams { size: 64 } => vec![Metric::UdpRate64, Metric::UdpUnanswered64, Metric::UdpCpu64],
            Workload::Datagrams { size: 512 } => vec![Metric::UdpRate512, Metric::UdpUnanswered512, Metric::UdpCpu512],
            Workload::Datagrams { .. } => vec![Metric::UdpRate1400, Metric::UdpUnanswered1400, Metric::UdpCpu1400],
            Workload::IperfUdp => vec![Metric::IperfUdp, Metric::IperfUdpLoss],
            Workload::IdleConnections => vec![Metric::IdleRss, Metric::IdleKibPerConnection, Metric::IdleFdsPerConnection],
            Workload::ManyIdleConnections => vec![Metric::ManyIdleRss, Metric::ManyIdleFdsPerConnection],
        }
    }

    pub fn is_udp(&self) -> bool {
        matches!(self, Workload::Datagrams { .. } | Workload::IperfUdp)
    }

    /// The workload that yields `metric`.
    pub fn of(metric: Metric) -> Workload {
        *Workload::ALL
            .iter()
            .find(|w| w.metrics().contains(&metric))
            .expect("every metric has a workload")
    }

    /// The name on the command line (`--workloads`).
    pub fn key(&self) -> &'static str {
        match self {
            Workload::Bulk => "bulk",
            Workload::Iperf { streams: 1, reverse: false } => "iperf1",
            Workload::Iperf { streams: 1, reverse: true } => "iperf1r",
            Workload::Iperf { reverse: false, .. } => "iperf8",
            Workload::Iperf { reverse: true, .. } => "iperf8r",
            Workload::PingPong => "pingpong",
            Workload::Redis => "redis",
            Workload::ConnectionRate => "rate",
            Workload::HandoverStall => "stall",
            Workload::Datagrams { size: 64 } => "udp64",
            Workload::Datagrams { size: 512 } => "udp512",
            Workload::Datagrams { .. } => "udp1400",
            Workload::IperfUdp => "iperf-udp",
            Workload::IdleConnections => "idle",
            Workload::ManyIdleConnections => "many-idle",
        }
    }

    pub fn parse(key: &str) -> anyhow::Result<Workload> {
        Workload::ALL.into_iter().find(|w| w.key() == key).ok_or_else(|| {
            anyhow::anyhow!(
                "unknown workload {key:?}; known: {}",
                Workload::ALL.iter().map(Workload::key).collect::<Vec<_>>().join(", ")
            )
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Workload::Bulk => "checksummed transfer".into(),
            Workload::Iperf { streams, reverse } => format!("iperf3 -P {streams}{}", if *reverse { " -R" } else { "" }),
            Workload::PingPong => "ping-pong".into(),
            Workload::Redis => "redis-benchmark".into(),
            Workload::ConnectionRate => "connection rate".into(),
            Workload::HandoverStall => "handover stall".into(),
            Workload::Datagrams { size } => format!("UDP echo {size} B"),
            Workload::IperfUdp => "iperf3 -u".into(),
            Workload::IdleConnections => "idle connections".into(),
            Workload::ManyIdleConnections => "many idle connections".into(),
        }
    }

    /// Runs once through `forwarder`; one value (or failure) per metric, in `metrics()` order.
    pub fn run(&self, bed: &Testbed, forwarder: &Forwarder, config: &Config, patterns: &Patterns) -> Vec<(Metric, Result<f64, String>)> {
        let metrics = self.metrics();
        if metrics.iter().all(Metric::needs_forwarder) && forwarder.main_pid().is_none() {
            return Vec::new();
        }
        // A contender that carries no UDP has "n/a" in these rows, not a failure.
        if self.is_udp() && forwarder.contender.udp().is_err() {
            return Vec::new();
        }
        let client = &bed.hosts.client;
        let values: Result<Vec<f64>> = match *self {
            Workload::Bulk => {
                bulk::transfer(client, forwarder.target(&BULK), patterns, &bed.backends.bulk_reports).map(|b| vec![b.gib_per_second, b.cpu_per_gib])
            }
            Workload::Iperf { streams, reverse } => {
                iperf::throughput(client, forwarder.target(&IPERF), config.iperf_seconds, streams, reverse).map(|g| vec![g])
            }
            Workload::PingPong => latency::ping_pong(client, forwarder.target(&ECHO), config.round_trips).map(|p| vec![p.p50, p.p99, p.p999]),
            Workload::Redis => {
                latency::redis_benchmark(client, forwarder.target(&REDIS), config.redis_requests).map(|r| vec![r.requests_per_second, r.p50_ms, r.p99_ms])
            }
            Workload::ConnectionRate => connections::rate(client, forwarder.target(&ECHO), config.connection_clients, config.connection_time).map(|r| vec![r]),
            Workload::HandoverStall => {
                stall::measure(client, &bed.hosts.backend1, forwarder.target(&STALL), config.stall_connections, config.trickle_connections, &bed.backends.stall_reports).map(|s| {
                    let q = stall::quantile;
                    vec![
                        q(&s.first_byte, 0.5),
                        q(&s.first_byte, 0.99),
                        q(&s.first_byte, 1.0),
                        q(&s.trickle, 0.5),
                        q(&s.trickle, 0.99),
                        q(&s.trickle, 1.0),
                        q(&s.answer, 0.5),
                        q(&s.answer, 0.99),
                        q(&s.answer, 1.0),
                        s.slow() as f64,
                        s.timeouts as f64,
                    ]
                })
            }
            Workload::Datagrams { size } => datagrams::rate(client, forwarder.target(&UDP_ECHO), size, config.udp_seconds)
                .map(|d| vec![d.per_second, d.unanswered_percent, d.cpu_per_million]),
            Workload::IperfUdp => iperf::udp_throughput(client, forwarder.target(&IPERF_UDP), config.iperf_seconds).map(|u| vec![u.gbit_per_second, u.lost_percent]),
            Workload::IdleConnections => connections::idle_memory(client, forwarder.target(&ECHO), config.idle_connections, forwarder)
                .map(|m| vec![m.rss_mib, m.kib_per_connection, m.fds_per_connection]),
            Workload::ManyIdleConnections => {
                connections::idle_memory(client, forwarder.target(&ECHO), config.many_idle_connections, forwarder).map(|m| vec![m.rss_mib, m.fds_per_connection])
            }
        };
        match values {
            Ok(values) => metrics.into_iter().zip(values.into_iter().map(Ok)).collect(),
            Err(e) => {
                let message = format!("{e:#}");
                metrics.into_iter().map(|m| (m, Err(message.clone()))).collect()
            }
        }
    }
}
