//! Connections: how many new ones per second a contender takes (a one-byte
//! exchange each), and what the forwarder's memory is with many held idle.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::contenders::Forwarder;
use super::procfs;
use crate::netns::NetNs;

/// One new connection: connect, send a byte, read it back, close.
fn one_exchange(target: &SocketAddr, byte: u8) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(target, Duration::from_secs(3))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    stream.write_all(&[byte])?;
    let mut got = [0u8; 1];
    stream.read_exact(&mut got)?;
    if got[0] != byte {
        return Err(std::io::Error::other("the echoed byte differs"));
    }
    Ok(())
}

/// New connections per second over `duration`, from `clients` threads on the
/// client host each opening one connection after another. Any failed
/// connection fails the measurement.
pub fn rate(client: &NetNs, target: SocketAddr, clients: usize, duration: Duration) -> Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let total = std::thread::scope(|scope| -> Result<u64> {
        let threads: Vec<_> = (0..clients)
            .map(|i| {
                let stop = stop.clone();
                // Each client thread runs inside the client host (enter: a thread there, joined).
                scope.spawn(move || {
                    client.enter(move || -> Result<u64> {
                        let mut done = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            one_exchange(&target, (done as u8).wrapping_add(i as u8)).with_context(|| format!("connection {} of client {i}", done + 1))?;
                            done += 1;
                        }
                        Ok(done)
                    })
                })
            })
            .collect();
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
        let mut total = 0;
        for t in threads {
            total += t.join().map_err(|_| anyhow::anyhow!("client thread panicked"))???;
        }
        Ok(total)
    })?;
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

pub struct IdleMemory {
    /// The forwarder's processes' resident sets, summed, with the connections open.
    pub rss_mib: f64,
    /// How much that grew per connection while they were opened.
    pub kib_per_connection: f64,
    /// How many more open descriptors the forwarder's processes held, per connection.
    pub fds_per_connection: f64,
}

/// Opens `count` connections through the forwarder, proves each end to end
/// with a one-byte exchange, lets them sit idle, and measures the resident
/// memory of the forwarder's processes then. A connection that does not
/// answer fails the measurement, with what the forwarder logged.
pub fn idle_memory(client: &NetNs, target: SocketAddr, count: usize, forwarder: &Forwarder) -> Result<IdleMemory> {
    let before: u64 = forwarder.pids().iter().filter_map(|p| procfs::rss_bytes(*p).ok()).sum();
    let fds_before: usize = forwarder.pids().iter().filter_map(|p| procfs::open_fds(*p).ok()).sum();
    let opened = client.enter(move || open_idle(target, count))?;
    let streams = match opened {
        Ok(streams) => streams,
        Err(e) => bail!("{e:#}; the forwarder's last warnings: {}", warnings(&forwarder.log(), 2)),
    };
    std::thread::sleep(Duration::from_millis(500));
    let pids = forwarder.pids();
    let (mut rss, mut fds) = (0, 0);
    for pid in &pids {
        rss += procfs::rss_bytes(*pid)?;
        fds += procfs::open_fds(*pid)?;
    }
    eprintln!(
        "    {} idle connections: forwarder RSS {:.1} MiB (was {:.1} MiB), {fds} descriptors (was {fds_before}), processes {pids:?}",
        streams.len(),
        mib(rss),
        mib(before)
    );
    drop(streams);
    // Let the forwarder see the closes before the next workload.
    std::thread::sleep(Duration::from_millis(500));
    Ok(IdleMemory {
        rss_mib: mib(rss),
        kib_per_connection: (rss as f64 - before as f64) / 1024.0 / count as f64,
        fds_per_connection: (fds as f64 - fds_before as f64) / count as f64,
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// In batches: connect, send one byte each, read each back.
fn open_idle(target: SocketAddr, count: usize) -> Result<Vec<TcpStream>> {
    let mut streams: Vec<TcpStream> = Vec::with_capacity(count);
    while streams.len() < count {
        let batch = (count - streams.len()).min(250);
        let first = streams.len();
        for i in 0..batch {
            let s = TcpStream::connect_timeout(&target, Duration::from_secs(5)).with_context(|| format!("opening connection {}", first + i + 1))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            streams.push(s);
        }
        for (i, s) in streams[first..].iter_mut().enumerate() {
            s.write_all(&[(first + i) as u8])
                .with_context(|| format!("writing on connection {}", first + i + 1))?;
        }
        for (i, s) in streams[first..].iter_mut().enumerate() {
            let mut got = [0u8; 1];
            s.read_exact(&mut got)
                .with_context(|| format!("connection {} of {count} got no answer within 5 s", first + i + 1))?;
            if got[0] != (first + i) as u8 {
                bail!("connection {}: the echoed byte differs", first + i + 1);
            }
        }
    }
    Ok(streams)
}

/// The last `n` distinct warning or error lines of a log (any of the forwarders' formats), else its last line.
pub fn warnings(log: &str, n: usize) -> String {
    let noisy = |l: &&str| {
        let l = l.to_ascii_lowercase();
        ["warn", "error", "alert", "crit", "emerg"].iter().any(|w| l.contains(w))
    };
    let mut found: Vec<&str> = Vec::new();
    for line in log.lines().rev().filter(noisy) {
        // Without the timestamp, repeats of one warning are one.
        let body = line.split_once(' ').map_or(line, |(_, rest)| rest);
        if !found.iter().any(|f| f.split_once(' ').map_or(*f, |(_, r)| r) == body) {
            found.push(line);
        }
        if found.len() == n {
            break;
        }
    }
    if found.is_empty() {
        return format!("none; its last line: {}", tail(log, 1));
    }
    found.reverse();
    found.join(" / ")
}

/// The last `n` lines of a log.
pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
