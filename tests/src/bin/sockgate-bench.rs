//! Bulk throughput and CPU cost of each way through the node, measured side by
//! side in one run (`cargo xtask bench` builds it optimized and runs it).
//!
//! Contenders, alternated round by round so that machine noise spreads over
//! all of them: `direct` (the node routes client ⇄ backend, no proxy: the
//! topology's limit), and sockgate's agent as deployed (`auto`) and with each
//! data path it offers (`splice`, `copy`, no BPF). Each measurement moves 1 GiB each way at once through
//! one connection and checks both directions' CRC-32 (SIMD, cheap enough not to
//! be what is measured; the integrity tests use SHA-256): a mismatch is a
//! failure, not a number. CPU is the whole machine's busy time (/proc/stat) per GiB moved.
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use sockgate_tests::harness::{serve, GatewayNode};
use sockgate_tests::integrity::pattern;
use sockgate_tests::manifests::{documents, gateway, route, service};

#[derive(Parser)]
struct Args {
    /// Rounds; each measures every contender once, in turn.
    #[arg(long, default_value = "3")]
    rounds: usize,
    /// Bytes each way per measurement.
    #[arg(long, default_value = "1073741824")]
    bytes: usize,
    /// Where to write the report.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: std::path::PathBuf,
}

/// `auto` is the default: splice plus the eBPF listener programs (sock_ops and
/// cgroup_skb counters run on every packet of the agent's sockets).
const CONTENDERS: [&str; 4] = ["direct", "auto", "splice", "copy"];

struct Sample {
    seconds: f64,
    cpu_seconds: f64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let up = std::sync::Arc::new(pattern(1, args.bytes));
    let down = std::sync::Arc::new(pattern(2, args.bytes));
    let (expect_up, expect_down) = (crc32fast::hash(&up), crc32fast::hash(&down));
    let mut samples: Vec<(usize, Sample)> = Vec::new();
    for round in 0..args.rounds {
        for (i, contender) in CONTENDERS.iter().enumerate() {
            let sample = measure(contender, &up, &down, expect_up, expect_down).with_context(|| format!("round {round}, {contender}"))?;
            eprintln!(
                "round {round} {contender:>6}: {:.2} GiB/s per direction, {:.2} CPU s/GiB",
                args.bytes as f64 / (1 << 30) as f64 / sample.seconds,
                sample.cpu_seconds / (2.0 * args.bytes as f64 / (1 << 30) as f64)
            );
            samples.push((i, sample));
        }
    }
    let report = report(&args, &samples);
    std::fs::write(&args.out, &report)?;
    print!("{report}");
    Ok(())
}

/// Busy and total jiffies of the whole machine.
fn cpu_busy() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let idle = v[3] + v.get(4).copied().unwrap_or(0.0);
    let ticks = 100.0; // USER_HZ
    Ok((v.iter().sum::<f64>() - idle) / ticks)
}

/// Sends `data` in 1 MiB writes (then FIN) while reading to end-of-stream; the CRC-32 of what arrived.
fn exchange(stream: TcpStream, data: std::sync::Arc<Vec<u8>>) -> std::io::Result<u32> {
    use std::io::Read;
    let mut writer = stream.try_clone()?;
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        for chunk in data.chunks(1 << 20) {
            writer.write_all(chunk)?;
        }
        writer.shutdown(std::net::Shutdown::Write)
    });
    let mut reader = stream;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    sender.join().expect("sender")?;
    Ok(hasher.finalize())
}

fn measure(contender: &str, up: &std::sync::Arc<Vec<u8>>, down: &std::sync::Arc<Vec<u8>>, expect_up: u32, expect_down: u32) -> Result<Sample> {
    let yaml = documents(&[gateway(&[("bulk", 9000)]), route("bulk", "bulk", "sink", 80), service("sink", 80, 7000, &["198.18.2.2"])]);
    let dataplane = if contender == "direct" { "copy" } else { contender };
    let pin_dir = format!("/sys/fs/bpf/sockgate-bench-{}", std::process::id());
    let node = GatewayNode::start(&[("all.yaml", yaml)], &["--dataplane", dataplane, "--bpf-pin-dir", &pin_dir])?;
    // The node routes between client and backend: the direct contender's path.
    node.hosts.node.command("sysctl").args(["-qw", "net.ipv4.ip_forward=1"]).status()?;
    node.hosts.client.ip(&["route", "add", "198.18.2.0/24", "via", "198.18.1.2"])?;
    node.hosts.backend1.ip(&["route", "add", "198.18.1.0/24", "via", "198.18.2.1"])?;
    let to_send = down.clone();
    let backend = serve(&node.hosts.backend1, 7000, move |s: TcpStream| exchange(s, to_send.clone()).ok())?;
    node.wait_for_port(9000)?;
    let target: SocketAddr = if contender == "direct" { "198.18.2.2:7000".parse()? } else { "198.18.1.2:9000".parse()? };
    let stream = node.hosts.client.enter(move || TcpStream::connect(target))??;
    let cpu_before = cpu_busy()?;
    let started = Instant::now();
    let got = exchange(stream, up.clone())?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = cpu_busy()? - cpu_before;
    if got != expect_down {
        bail!("{contender}: backend → client bytes differ");
    }
    let report = loop {
        if let Some(r) = backend.recv_timeout(Duration::from_secs(120))? {
            break r;
        }
    };
    if report != expect_up {
        bail!("{contender}: client → backend bytes differ");
    }
    let _ = std::io::stderr().flush();
    Ok(Sample { seconds, cpu_seconds })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn report(args: &Args, samples: &[(usize, Sample)]) -> String {
    let gib = args.bytes as f64 / (1 << 30) as f64;
    let throughput = |i: usize| samples.iter().filter(|(c, _)| *c == i).map(|(_, s)| gib / s.seconds).collect::<Vec<_>>();
    let cpu = |i: usize| samples.iter().filter(|(c, _)| *c == i).map(|(_, s)| s.cpu_seconds / (2.0 * gib)).collect::<Vec<_>>();
    let direct = median(throughput(0));
    let machine = format!(
        "{} vCPUs, kernel {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim()
    );
    let date = String::from_utf8(std::process::Command::new("date").args(["-u", "+%Y-%m-%d"]).output().map(|o| o.stdout).unwrap_or_default()).unwrap_or_default();
    let mut out = format!(
        "# Benchmarks\n\nRegenerated by `cargo xtask bench` on {} ({machine}).\n\n\
         Method: client, gateway node and backend are network namespaces joined by veth pairs (198.18.0.0/15). \
         Each measurement moves {gib:.0} GiB each way at once through one TCP connection and checks both directions' SHA-256 \
         (a mismatch fails the run). Contenders alternate within each of {} rounds; figures are medians with min–max. \
         CPU is the whole machine's busy time per GiB moved (both directions counted), from /proc/stat, so it includes the client and backend.\n\n\
         | contender | throughput, GiB/s per direction (median, min–max) | vs direct | CPU s per GiB (median) |\n|---|---|---|---|\n",
        date.trim(),
        args.rounds
    );
    for (i, name) in CONTENDERS.iter().enumerate() {
        let t = throughput(i);
        let (lo, hi) = (t.iter().cloned().fold(f64::MAX, f64::min), t.iter().cloned().fold(0.0, f64::max));
        let m = median(t);
        let label = match *name {
            "direct" => "direct (routed by the node, no proxy)".to_string(),
            "auto" => "sockgate default (`auto`: splice + eBPF counters)".to_string(),
            other => format!("sockgate `{other}`"),
        };
        out += &format!("| {label} | {m:.2} ({lo:.2}–{hi:.2}) | {:.2}× | {:.2} |\n", m / direct, median(cpu(i)));
    }
    out += "\nNot yet measured here (issue 7): iptables DNAT, HAProxy and nginx stream side by side, iperf3, \
            request/response latency, connection rate, memory with idle connections, control-plane scale. \
            The in-kernel sockmap splice is not a contender: it corrupts or stalls streams on this kernel \
            (see README, \"Data paths\").\n";
    out
}
