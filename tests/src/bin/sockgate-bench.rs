//! sockgate against a direct path, iptables DNAT, HAProxy and nginx stream,
//! measured side by side in one run (`cargo xtask bench` builds it optimized,
//! runs the control-plane benchmark, then this). The measuring lives in
//! `sockgate_tests::bench`; this parses the arguments and writes the report.
//!
//! Needs root (network namespaces, BPF, iptables) and the tools `cargo xtask
//! setup` installs.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use sockgate_tests::bench::contenders::Contender;
use sockgate_tests::bench::workloads::Workload;
use sockgate_tests::bench::{chart, control_plane, report, rlimit, run, Config};

#[derive(Parser)]
#[command(about = "Benchmarks sockgate side by side with direct routing, DNAT, HAProxy and nginx; writes BENCHMARKS.md and benchmarks.png")]
struct Args {
    /// Rounds; each measures every contender once, the order rotating.
    #[arg(long, default_value = "3")]
    rounds: usize,
    /// Bytes each way of the checksummed transfer.
    #[arg(long, default_value = "1073741824")]
    bytes: usize,
    /// Seconds per iperf3 test (four tests per contender and round).
    #[arg(long, default_value = "2")]
    iperf_seconds: u32,
    /// Measured ping-pong round trips.
    #[arg(long, default_value = "20000")]
    round_trips: usize,
    /// redis-benchmark requests.
    #[arg(long, default_value = "20000")]
    redis_requests: usize,
    /// Client threads opening connections in the connection-rate workload.
    #[arg(long, default_value = "4")]
    connection_clients: usize,
    /// Seconds of the connection-rate workload.
    #[arg(long, default_value = "2")]
    connection_seconds: f64,
    /// Idle connections held open for the memory figures (every forwarder here can hold these).
    #[arg(long, default_value = "3000")]
    idle_connections: usize,
    /// Idle connections of the second memory figure (issue 7's 10,000), which a forwarder may fail to hold.
    #[arg(long, default_value = "10000")]
    many_idle_connections: usize,
    /// Fresh connections of the handover-stall workload's first-byte variant (a few bytes in one write each).
    #[arg(long, default_value = "200")]
    stall_connections: usize,
    /// Fresh connections of its trickle variant (1 byte per ms for 50 ms each).
    #[arg(long, default_value = "100")]
    trickle_connections: usize,
    /// Seconds of each UDP datagram-rate workload (64, 512 and 1400 bytes; iperf3 -u runs --iperf-seconds).
    #[arg(long, default_value = "3")]
    udp_seconds: f64,
    /// Contenders, comma-separated (direct, dnat, auto, ebpf, splice, copy, haproxy, haproxy-splice, nginx).
    #[arg(long, value_delimiter = ',', default_value = "direct,dnat,auto,ebpf,splice,copy,haproxy,nginx")]
    contenders: Vec<String>,
    /// Workloads, comma-separated (bulk, iperf1, iperf1r, iperf8, iperf8r, pingpong, redis, rate, stall, udp64, udp512, udp1400, iperf-udp, idle, many-idle).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "bulk,iperf1,iperf1r,iperf8,iperf8r,pingpong,redis,rate,stall,udp64,udp512,udp1400,iperf-udp,idle,many-idle"
    )]
    workloads: Vec<String>,
    /// Where to write the report; the chart goes beside it as benchmarks.png.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// criterion's output directory holding gateway-agent's control_plane results.
    #[arg(long)]
    control_plane: Option<PathBuf>,
    /// Skip profiling sockgate's slowest workload with perf after the rounds.
    #[arg(long)]
    no_profile: bool,
    /// Internal: be the backend's echo server on this address (the bench starts it so).
    #[arg(long, hide = true)]
    echo_server: Option<std::net::SocketAddr>,
    /// Internal: be the backend's UDP echo server on this address (the bench starts it so).
    #[arg(long, hide = true)]
    udp_echo_server: Option<std::net::SocketAddr>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(addr) = args.echo_server {
        return sockgate_tests::bench::backends::run_echo_server(addr);
    }
    if let Some(addr) = args.udp_echo_server {
        return sockgate_tests::bench::udp_echo::run(addr);
    }
    if args.rounds == 0
        || args.bytes == 0
        || args.iperf_seconds == 0
        || args.round_trips == 0
        || args.connection_clients == 0
        || args.idle_connections == 0
        || args.many_idle_connections == 0
        || args.stall_connections == 0
        || args.trickle_connections == 0
    {
        bail!("--rounds, --bytes, --iperf-seconds, --round-trips, --connection-clients, the idle and the stall connection counts must be at least 1");
    }
    if !(args.connection_seconds > 0.0) {
        bail!("--connection-seconds must be positive");
    }
    if !(args.udp_seconds > 0.0) {
        bail!("--udp-seconds must be positive");
    }
    let contenders = args.contenders.iter().map(|c| Contender::parse(c.trim())).collect::<Result<Vec<_>>>()?;
    // The bench holds the client ends of the idle connections (the echo server, a process of its own, the other ends).
    let workloads = args.workloads.iter().map(|w| Workload::parse(w.trim())).collect::<Result<Vec<_>>>()?;
    let raised = rlimit::raise_own()?;
    let most = args.idle_connections.max(args.many_idle_connections) as u64;
    if raised < most + 1000 {
        bail!("{most} idle connections: this process can hold only {raised} descriptors");
    }
    let config = Config {
        rounds: args.rounds,
        bytes: args.bytes,
        iperf_seconds: args.iperf_seconds,
        round_trips: args.round_trips,
        redis_requests: args.redis_requests,
        connection_clients: args.connection_clients,
        connection_time: Duration::from_secs_f64(args.connection_seconds),
        idle_connections: args.idle_connections,
        many_idle_connections: args.many_idle_connections,
        stall_connections: args.stall_connections,
        trickle_connections: args.trickle_connections,
        udp_seconds: args.udp_seconds,
        contenders,
        workloads,
        out: args.out,
        control_plane: args.control_plane,
        profile: !args.no_profile,
    };
    let date = String::from_utf8(std::process::Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]).output()?.stdout)?
        .trim()
        .to_string();
    let outcome = run::run(&config)?;
    let control_plane = config
        .control_plane
        .as_deref()
        .map(|dir| control_plane::read(dir).map_err(|e| format!("{e:#}")));
    let text = report::render(&report::Context {
        config: &config,
        outcome: &outcome,
        control_plane,
        date: date.clone(),
    });
    std::fs::write(&config.out, &text).with_context(|| format!("writing {}", config.out.display()))?;
    let title = format!("sockgate and others, medians of {} rounds, {date}", config.rounds);
    chart::draw(&config, &outcome.results, &title, &config.chart_path())?;
    print!("{text}");
    eprintln!(
        "wrote {} and {} in {:.1} minutes",
        config.out.display(),
        config.chart_path().display(),
        outcome.wall.as_secs_f64() / 60.0
    );
    // A failed measurement is in the report as a failure, never as a number; the run itself succeeded.
    if outcome.results.has_failures() {
        eprintln!("some measurements failed: see their tables in {}", config.out.display());
    }
    Ok(())
}
