//! Handover stall: how long a client's bytes take to reach the backend on a
//! fresh connection, while the forwarder sets the connection up (and, for
//! sockgate `ebpf`, hands it to the kernel). Two variants, connections one
//! after another:
//! - **first byte**: connect, send a few bytes in one write; the time from
//!   that write to the backend's first read of them.
//! - **trickle**: connect, send one byte every millisecond for
//!   [`TRICKLE_BYTES`] ms (bytes keep flowing through the handover window);
//!   per connection the worst delay of any byte.
//!
//! In both, the backend answers one byte as soon as the last one arrived,
//! which crosses the handover window the other way: its delay, from the
//! backend's write to the client's read, is measured too.
//!
//! The backend server runs in the bench process (on the backend host), so
//! send and receipt times come from one clock. A handover that drops a
//! segment of a peer with one segment in flight costs that peer a loss probe
//! or retransmission timeout (≥ 200 ms on Linux); [`SLOW`] counts those.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::netns::NetNs;

/// Bytes of the first-byte variant, in one write: the 5-byte header and a pattern.
pub const FIRST_BYTES: usize = 8;
/// Bytes (and milliseconds) of the trickle variant.
pub const TRICKLE_BYTES: usize = 50;
/// A delay this long is a retransmission timeout or a loss probe, not forwarding.
pub const SLOW: Duration = Duration::from_millis(150);
const HEADER: usize = 5;

/// What the backend saw of one connection.
#[derive(Debug)]
pub struct StallReport {
    pub id: u32,
    /// When each byte was read, by offset.
    pub received: Vec<Instant>,
    /// When the backend wrote its one-byte answer (right after the last byte arrived).
    pub answered: Option<Instant>,
    pub error: Option<String>,
}

/// Byte `offset` of connection `id` whose total length is `len`: header
/// (id, little-endian, then the length), then a pattern.
fn byte_at(id: u32, len: usize, offset: usize) -> u8 {
    match offset {
        0..4 => id.to_le_bytes()[offset],
        4 => len as u8,
        _ => (offset as u8).wrapping_mul(31) ^ (id as u8),
    }
}

/// The backend: per connection, reads the header and the rest, noting when
/// each byte arrived, checks the pattern, answers one byte, and reports at
/// the client's FIN.
pub async fn serve(listener: TcpListener, reports: mpsc::Sender<StallReport>) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let reports = reports.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let mut data = Vec::new();
            let mut received = Vec::new();
            let mut answered = None;
            let mut buf = [0u8; 256];
            let error = loop {
                let n = match stream.read(&mut buf).await {
                    Ok(0) => break Some(format!("end of stream after {} bytes", data.len())),
                    Ok(n) => n,
                    Err(e) => break Some(format!("reading: {e}")),
                };
                let at = Instant::now();
                data.extend_from_slice(&buf[..n]);
                received.extend(std::iter::repeat_n(at, n));
                if data.len() >= HEADER {
                    let len = data[4] as usize;
                    if data.len() > len {
                        break Some(format!("{} bytes where {len} were sent", data.len()));
                    }
                    if data.len() == len {
                        let id = u32::from_le_bytes(data[..4].try_into().unwrap());
                        if let Some(at) = (0..len).find(|&i| data[i] != byte_at(id, len, i)) {
                            break Some(format!("byte {at} differs from what was sent"));
                        }
                        answered = Some(Instant::now());
                        if let Err(e) = stream.write_all(b"k").await {
                            break Some(format!("answering: {e}"));
                        }
                        // Then nothing more until the client's FIN.
                        break match stream.read(&mut buf).await {
                            Ok(0) => None,
                            Ok(_) => Some("bytes after the last one sent".into()),
                            Err(e) => Some(format!("waiting for the end: {e}")),
                        };
                    }
                }
            };
            let id = if data.len() >= 4 { u32::from_le_bytes(data[..4].try_into().unwrap()) } else { u32::MAX };
            let _ = reports.send(StallReport { id, received, answered, error });
        });
    }
}

/// Per-connection delays in ms of both variants, and of the backend's
/// answers (backend → client, both variants).
pub struct Stalls {
    pub first_byte: Vec<f64>,
    pub trickle: Vec<f64>,
    pub answer: Vec<f64>,
    /// Retransmission timeouts and tail-loss probes of the client and backend
    /// hosts during the workload (nstat TcpExtTCPTimeouts + TcpExtTCPLossProbes).
    pub timeouts: u64,
}

impl Stalls {
    /// Connections whose bytes, either way, waited at least [`SLOW`].
    pub fn slow(&self) -> usize {
        let slow = SLOW.as_secs_f64() * 1e3;
        let n = self.first_byte.len();
        (0..n + self.trickle.len())
            .filter(|&i| {
                let up = if i < n { self.first_byte[i] } else { self.trickle[i - n] };
                up >= slow || self.answer[i] >= slow
            })
            .count()
    }
}

/// `first` connections of the first-byte variant, then `trickle` of the
/// trickle one, one after another; any failed connection fails the sample.
pub fn measure(client: &NetNs, backend: &NetNs, target: SocketAddr, first: usize, trickle: usize, reports: &mpsc::Receiver<StallReport>) -> Result<Stalls> {
    while reports.try_recv().is_ok() {}
    let timeouts_before = timeouts(client)? + timeouts(backend)?;
    let plan: Vec<(u32, usize)> = (0..first).map(|i| (i as u32, FIRST_BYTES)).chain((0..trickle).map(|i| ((first + i) as u32, TRICKLE_BYTES))).collect();
    type Sent = Vec<(u32, Vec<Instant>, Instant)>;
    let (sent, connects) = client.enter(move || -> Result<(Sent, Vec<f64>)> {
        let (mut sent, mut connects) = (Vec::with_capacity(plan.len()), Vec::new());
        for (id, len) in plan {
            let (times, connect, answer) = one(target, id, len).with_context(|| format!("connection {} ({len} bytes)", id + 1))?;
            sent.push((id, times, answer));
            connects.push(connect.as_secs_f64() * 1e3);
        }
        Ok((sent, connects))
    })??;
    // Not in the report: where a slow connection's time went, for whoever reads the log.
    eprintln!("    handover stall: connect p50 {:.3} ms, max {:.3} ms", quantile(&connects, 0.5), quantile(&connects, 1.0));
    let mut seen: std::collections::HashMap<u32, StallReport> = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < sent.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match reports.recv_timeout(left) {
            Ok(r) => {
                if let Some(e) = &r.error {
                    bail!("the backend, on connection {}: {e}", r.id.wrapping_add(1));
                }
                seen.insert(r.id, r);
            }
            Err(_) => bail!("the backend reported {} of {} connections within 10 s of the last", seen.len(), sent.len()),
        }
    }
    let timeouts = (timeouts(client)? + timeouts(backend)?).saturating_sub(timeouts_before);
    let mut stalls = Stalls { first_byte: Vec::new(), trickle: Vec::new(), answer: Vec::new(), timeouts };
    for (id, times, answer) in sent {
        let r = &seen[&id];
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        stalls.answer.push(ms(r.answered.map(|w| answer.saturating_duration_since(w)).unwrap_or_default()));
        if (id as usize) < first {
            // The write of all of them, to the first read.
            stalls.first_byte.push(ms(r.received[0].saturating_duration_since(times[0])));
        } else {
            let worst = times.iter().zip(&r.received).map(|(s, g)| g.saturating_duration_since(*s)).max().unwrap_or_default();
            stalls.trickle.push(ms(worst));
        }
    }
    Ok(stalls)
}

/// One connection: its bytes (all at once, or one per millisecond), the
/// backend's answer, close; when each byte was written, how long the
/// connect took, and when the answer arrived.
fn one(target: SocketAddr, id: u32, len: usize) -> Result<(Vec<Instant>, Duration, Instant)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(3))?;
    let connect = started.elapsed();
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let bytes: Vec<u8> = (0..len).map(|i| byte_at(id, len, i)).collect();
    let mut times = Vec::with_capacity(len);
    if len == FIRST_BYTES {
        times.push(Instant::now());
        stream.write_all(&bytes)?;
    } else {
        let start = Instant::now();
        for (i, b) in bytes.iter().enumerate() {
            let at = start + Duration::from_millis(i as u64);
            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            times.push(Instant::now());
            stream.write_all(std::slice::from_ref(b))?;
        }
    }
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).context("the backend's answer (within 5 s)")?;
    Ok((times, connect, Instant::now()))
}

/// Retransmission timeouts and tail-loss probes of a host's TCP so far.
fn timeouts(host: &NetNs) -> Result<u64> {
    let out = host.command("nstat").args(["-asz", "TcpExtTCPTimeouts", "TcpExtTCPLossProbes"]).output().context("nstat")?;
    if !out.status.success() {
        bail!("nstat in {}: {}", host.name, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("TcpExt"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum())
}

/// The `q` quantile of `values` (nearest rank).
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_carries_id_and_length_and_the_pattern_depends_on_the_id() {
        let bytes: Vec<u8> = (0..TRICKLE_BYTES).map(|i| byte_at(0x0403_0201, TRICKLE_BYTES, i)).collect();
        assert_eq!(&bytes[..5], &[1, 2, 3, 4, TRICKLE_BYTES as u8]);
        assert_ne!(byte_at(1, 8, 6), byte_at(2, 8, 6));
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 100.0);
        assert_eq!(quantile(&v, 0.99), 198.0);
        assert_eq!(quantile(&v, 1.0), 200.0);
    }
}
