//! Request/response latency on persistent connections: a 64-byte ping-pong
//! through the echo backend, and redis-benchmark against redis-server.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::rlimit;
use super::run_limited;
use crate::netns::NetNs;

const MESSAGE: usize = 64;

pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
}

/// Round-trip times in µs of `round_trips` messages sent one after another on
/// one connection (after a tenth as many unmeasured, to warm up); each echo
/// must equal what was sent.
pub fn ping_pong(client: &NetNs, target: SocketAddr, round_trips: usize) -> Result<Percentiles> {
    let mut stream = client.enter(move || TcpStream::connect_timeout(&target, Duration::from_secs(5)))??;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut sent = [0u8; MESSAGE];
    let mut got = [0u8; MESSAGE];
    let warm_up = round_trips / 10;
    let mut rtts = Vec::with_capacity(round_trips);
    for i in 0..warm_up + round_trips {
        sent[..8].copy_from_slice(&(i as u64).to_le_bytes());
        sent[8] = i as u8;
        let started = Instant::now();
        stream.write_all(&sent)?;
        stream.read_exact(&mut got).with_context(|| format!("echo of message {i}"))?;
        let rtt = started.elapsed();
        if got != sent {
            bail!("echo of message {i} differs from what was sent");
        }
        if i >= warm_up {
            rtts.push(rtt.as_secs_f64() * 1e6);
        }
    }
    rtts.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| rtts[((rtts.len() as f64 * q).ceil() as usize).clamp(1, rtts.len()) - 1];
    Ok(Percentiles {
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
    })
}

pub struct Redis {
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// `redis-benchmark -t get` with 8 persistent connections; its CSV gives
/// requests/s and the latency percentiles it knows (p50, p99; no p99.9).
pub fn redis_benchmark(client: &NetNs, target: SocketAddr, requests: usize) -> Result<Redis> {
    let mut command = client.command("redis-benchmark");
    command.args([
        "-h",
        &target.ip().to_string(),
        "-p",
        &target.port().to_string(),
        "-t",
        "get",
        "-c",
        "8",
        "-n",
        &requests.to_string(),
        "--csv",
    ]);
    rlimit::as_inherited(&mut command);
    let out = run_limited(&mut command, Duration::from_secs(120)).context("redis-benchmark")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let unquote = |l: &str| l.split(',').map(|f| f.trim().trim_matches('"').to_string()).collect::<Vec<_>>();
    let mut lines = text.lines().filter(|l| l.starts_with('"'));
    let header = unquote(
        lines
            .next()
            .with_context(|| format!("redis-benchmark printed no CSV: {text} {}", String::from_utf8_lossy(&out.stderr)))?,
    );
    let row = unquote(lines.find(|l| l.starts_with("\"GET\"")).context("redis-benchmark printed no GET row")?);
    let field = |name: &str| -> Result<f64> {
        let i = header
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("no {name} column in redis-benchmark's CSV"))?;
        row.get(i)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("bad {name} in redis-benchmark's CSV"))
    };
    Ok(Redis {
        requests_per_second: field("rps")?,
        p50_ms: field("p50_latency_ms")?,
        p99_ms: field("p99_latency_ms")?,
    })
}
