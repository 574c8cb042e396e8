//! The load: one tokio task per client connection, on a runtime whose threads
//! all live in the client namespace. Each connection sends a chunk of its own
//! byte pattern every interval and checks every byte echoed back; `side`'s
//! connections reconnect when a change takes their route away.
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Semaphore, SemaphorePermit};
use tokio::task::JoinHandle;

use super::report::Report;
use super::{Settings, MAIN_CONNECT_ATTEMPTS, MAIN_PORT, SIDE_PORT, SLOW_CONNECT, STALL};
use crate::netns::NetNs;
use crate::topology::GATEWAY;

/// What the load's tasks count, shared between them.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) held: AtomicUsize,
    pub(super) main_held: AtomicUsize,
    pub(super) connects: AtomicU64,
    pub(super) connect_retries: AtomicU64,
    pub(super) slow_connects: AtomicU64,
    pub(super) main_connects_given_up: AtomicU64,
    pub(super) side_connects_refused: AtomicU64,
    pub(super) bytes_sent: AtomicU64,
    pub(super) bytes_sent_main: AtomicU64,
    pub(super) bytes_verified: AtomicU64,
    pub(super) chunks_verified: AtomicU64,
    pub(super) corrupted_bytes: AtomicU64,
    pub(super) corrupted_connections: AtomicU64,
    pub(super) stalls: AtomicU64,
    pub(super) stopped_by_route_change: AtomicU64,
    pub(super) unexpected_interruptions: AtomicU64,
    pub(super) clean_closes: AtomicU64,
    pub(super) close_failures: AtomicU64,
    /// Changes that take side's route away: written (counted before the write) and applied.
    pub(super) disruptions_written: AtomicU64,
    pub(super) disruptions_applied: AtomicU64,
    /// When the last of those was applied (µs since the soak's epoch).
    pub(super) disruption_applied_at_us: AtomicU64,
    /// From the moment the agent applied side's removal until a change bringing
    /// it back is written: no connection to side should be accepted at all.
    pub(super) side_removed: AtomicBool,
    /// Side connections that began and were reset within such a window: the
    /// agent still completed their handshakes on the listener it was closing.
    /// How many, and the latest one began after the removal was applied.
    pub(super) reset_by_closing_listener: AtomicU64,
    pub(super) reset_by_closing_listener_max_us: AtomicU64,
    pub(super) failures: Mutex<Vec<String>>,
    /// The last change applied, any kind (µs since the epoch, what), to explain failures.
    last_change: Mutex<(u64, String)>,
}

impl Counters {
    /// The counts, into the report.
    pub(super) fn copy_into(&self, report: &mut Report) {
        report.connects = self.connects.load(Relaxed);
        report.connect_retries = self.connect_retries.load(Relaxed);
        report.slow_connects = self.slow_connects.load(Relaxed);
        report.main_connects_given_up = self.main_connects_given_up.load(Relaxed);
        report.side_connects_refused = self.side_connects_refused.load(Relaxed);
        report.disruptions = self.disruptions_written.load(Relaxed);
        report.bytes_sent = self.bytes_sent.load(Relaxed);
        report.bytes_sent_main = self.bytes_sent_main.load(Relaxed);
        report.bytes_verified = self.bytes_verified.load(Relaxed);
        report.chunks_verified = self.chunks_verified.load(Relaxed);
        report.corrupted_bytes = self.corrupted_bytes.load(Relaxed);
        report.corrupted_connections = self.corrupted_connections.load(Relaxed);
        report.stalls = self.stalls.load(Relaxed);
        report.stopped_by_route_change = self.stopped_by_route_change.load(Relaxed);
        report.reset_by_closing_listener = self.reset_by_closing_listener.load(Relaxed);
        report.reset_by_closing_listener_latest = Duration::from_micros(self.reset_by_closing_listener_max_us.load(Relaxed));
        report.unexpected_interruptions = self.unexpected_interruptions.load(Relaxed);
        report.clean_closes = self.clean_closes.load(Relaxed);
        report.close_failures = self.close_failures.load(Relaxed);
        report.failures = self.failures.lock().unwrap().clone();
    }

    pub(super) fn fail(&self, what: String) {
        let mut failures = self.failures.lock().unwrap();
        if failures.len() < 10 {
            failures.push(what);
        }
    }
}

pub(super) struct Shared {
    /// What the `_us` counters count from.
    epoch: Instant,
    settings: Settings,
    pub(super) counters: Counters,
    connecting: Semaphore,
    client_ns: NamespaceGuard,
}

/// Every client socket must live in the client namespace: a socket created in
/// the root namespace would send to 198.18.x through the default route.
struct NamespaceGuard {
    inode: u64,
}

/// ioctl(2) on a socket: a descriptor of the network namespace it belongs to.
const SIOCGSKNS: libc::c_ulong = 0x894C;

impl NamespaceGuard {
    fn of(ns: &NetNs) -> Result<NamespaceGuard> {
        let path = netns_path(ns);
        let meta = std::fs::metadata(&path).with_context(|| format!("stat {}", path.display()))?;
        Ok(NamespaceGuard { inode: std::os::unix::fs::MetadataExt::ino(&meta) })
    }

    fn check(&self, socket: &impl AsRawFd) -> std::io::Result<()> {
        // SAFETY: ioctl on a socket we own; on success it returns a new descriptor we close below.
        let fd = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCGSKNS as _) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd was just returned to us and is owned by nobody else.
        let ns = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let inode = std::os::unix::fs::MetadataExt::ino(&ns.metadata()?);
        if inode != self.inode {
            return Err(std::io::Error::other(format!("socket in network namespace {inode}, not the client's {}", self.inode)));
        }
        Ok(())
    }
}

fn netns_path(ns: &NetNs) -> PathBuf {
    PathBuf::from(format!("/var/run/netns/{}", ns.name))
}

/// Byte `pos` of stream `id`: random-looking and addressable at any offset, so
/// a replayed, skipped or foreign chunk cannot match by chance.
fn fill(id: u64, pos: u64, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        let p = pos + i as u64;
        let mut z = (id.rotate_left(32) ^ (p >> 3)).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        *b = (z >> ((p & 7) * 8)) as u8;
    }
}

/// The running load: its runtime, its tasks and what they count.
pub(super) struct Load {
    runtime: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts every connection at once (their connects paced by
    /// `connect_concurrency`) from the `client_host` namespace.
    pub(super) fn start(settings: &Settings, client_host: &NetNs) -> Result<Load> {
        let client_ns = NamespaceGuard::of(client_host)?;
        let client_ns_file = std::fs::File::open(netns_path(client_host))?;
        // Every thread of the runtime lives in the client namespace, so the
        // sockets its tasks create do (and the guard checks each one).
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .on_thread_start(move || {
                // SAFETY: setns on the calling thread only, with a namespace descriptor we keep open.
                if unsafe { libc::setns(client_ns_file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    // Sockets of this thread would be in the wrong namespace; the guard refuses them.
                    eprintln!("soak: setns into the client namespace failed: {}", std::io::Error::last_os_error());
                }
            })
            .build()?;
        let shared = Arc::new(Shared {
            epoch: Instant::now(),
            settings: settings.clone(),
            counters: Counters::default(),
            connecting: Semaphore::new(settings.connect_concurrency),
            client_ns,
        });
        let (stop, stopped) = watch::channel(false);
        let tasks = (0..settings.connections).map(|i| runtime.spawn(client(i, shared.clone(), stopped.clone()))).collect();
        Ok(Load { runtime, shared, stop, tasks })
    }

    pub(super) fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// Connections established now: all, and main's.
    pub(super) fn held(&self) -> (usize, usize) {
        (self.counters().held.load(Relaxed), self.counters().main_held.load(Relaxed))
    }

    /// Call before writing a change: whether it takes side's route away, and whether it brings side's listener back.
    pub(super) fn change_written(&self, disruption: bool, restores_side: bool) {
        let c = self.counters();
        if disruption {
            c.disruptions_written.fetch_add(1, Relaxed);
        }
        if restores_side {
            c.side_removed.store(false, Relaxed);
        }
    }

    /// Call once the agent applied it; `removed_side` if it removed side's listener.
    pub(super) fn change_applied(&self, what: &str, disruption: bool, removed_side: bool) {
        let c = self.counters();
        let now = self.shared.epoch.elapsed().as_micros() as u64;
        *c.last_change.lock().unwrap() = (now, what.to_string());
        if disruption {
            // The time first: a connect that sees the new count also sees when it was applied.
            c.disruption_applied_at_us.store(now, Relaxed);
            c.disruptions_applied.store(c.disruptions_written.load(Relaxed), Relaxed);
        }
        if removed_side {
            c.side_removed.store(true, Relaxed);
        }
    }

    /// Every connection closes (FIN, and a FIN back); false if some were still open after `timeout`.
    pub(super) fn stop(self, timeout: Duration) -> (bool, Arc<Shared>) {
        self.stop.send_replace(true);
        let tasks = self.tasks;
        let joined = self.runtime.block_on(async {
            tokio::time::timeout(timeout, async {
                for t in tasks {
                    let _ = t.await;
                }
            })
            .await
        });
        self.runtime.shutdown_timeout(Duration::from_secs(5));
        (joined.is_ok(), self.shared)
    }
}

enum Ended {
    /// Closed cleanly because the soak ended.
    Done,
    /// Reset or ended by the other side (legitimate only when side's route was taken away).
    Interrupted(String),
    /// Corrupted or stalled: already counted as such.
    Failed,
}

/// One client connection, reconnected when side's route takes it away.
async fn client(index: usize, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let side = shared.settings.is_side(index);
    let port = if side { SIDE_PORT } else { MAIN_PORT };
    let mut rng = rand::rngs::StdRng::seed_from_u64(index as u64);
    let c = &shared.counters;
    for instance in 0u64.. {
        if *stop.borrow() {
            return;
        }
        let Some(Connected { stream, permit, applied_before, began_us, began_removed }) = connect(port, side, &shared, &mut stop).await else { return };
        c.held.fetch_add(1, Relaxed);
        if !side {
            c.main_held.fetch_add(1, Relaxed);
        }
        let id = ((index as u64) << 20) | instance;
        let ended = traffic(stream, permit, id, side, &shared, &mut stop, &mut rng).await;
        c.held.fetch_sub(1, Relaxed);
        if !side {
            c.main_held.fetch_sub(1, Relaxed);
        }
        match ended {
            Ended::Done => return,
            Ended::Interrupted(why) => {
                if side && c.disruptions_written.load(Relaxed) > applied_before {
                    // Since its connect began, a change taking its route away was written.
                    c.stopped_by_route_change.fetch_add(1, Relaxed);
                } else if side && began_removed && c.side_removed.load(Relaxed) {
                    // Begun and ended while side's listener was removed: the agent still
                    // completed the handshake on the socket it was closing, then reset it.
                    let late = began_us.saturating_sub(c.disruption_applied_at_us.load(Relaxed));
                    c.stopped_by_route_change.fetch_add(1, Relaxed);
                    c.reset_by_closing_listener.fetch_add(1, Relaxed);
                    c.reset_by_closing_listener_max_us.fetch_max(late, Relaxed);
                } else {
                    c.unexpected_interruptions.fetch_add(1, Relaxed);
                    let now = shared.epoch.elapsed().as_micros() as u64;
                    let (at, what) = c.last_change.lock().unwrap().clone();
                    c.fail(format!(
                        "connection {index} to {port} interrupted with no change taking its route away: {why}; \
                         its connect began at +{} ms, it ended at +{} ms; the last change applied at +{} ms: {what}",
                        began_us / 1000,
                        now / 1000,
                        at / 1000
                    ));
                }
            }
            Ended::Failed => {}
        }
    }
}

/// A connection, with what the client knew when its connect began.
struct Connected<'a> {
    stream: TcpStream,
    /// Held until the first echo: see [`traffic`].
    permit: SemaphorePermit<'a>,
    /// Changes taking side's route away that were applied when the connect began:
    /// a stop is legitimate only if another one was written after.
    applied_before: u64,
    began_us: u64,
    /// Whether side's listener had been removed (and not yet brought back) when the connect began.
    began_removed: bool,
}

/// Connects to the gateway's `port` from the client namespace. `main` gets
/// bounded attempts; `side` waits for its listener to come back.
async fn connect<'a>(port: u16, side: bool, shared: &'a Shared, stop: &mut watch::Receiver<bool>) -> Option<Connected<'a>> {
    let c = &shared.counters;
    let addr = SocketAddr::from((GATEWAY, port));
    let mut attempts = 0;
    loop {
        if *stop.borrow() {
            return None;
        }
        let permit = shared.connecting.acquire().await.ok()?;
        let socket = match TcpSocket::new_v4() {
            Ok(s) => s,
            Err(e) => {
                c.fail(format!("socket: {e}"));
                return None;
            }
        };
        if let Err(e) = shared.client_ns.check(&socket) {
            c.fail(format!("refusing to connect from outside the client namespace: {e}"));
            return None;
        }
        let applied_before = c.disruptions_applied.load(Relaxed);
        let began_removed = c.side_removed.load(Relaxed);
        let began_us = shared.epoch.elapsed().as_micros() as u64;
        let started = Instant::now();
        let result = tokio::time::timeout(STALL, socket.connect(addr)).await;
        if started.elapsed() > SLOW_CONNECT {
            c.slow_connects.fetch_add(1, Relaxed);
        }
        let error = match result {
            Ok(Ok(stream)) => {
                c.connects.fetch_add(1, Relaxed);
                let _ = stream.set_nodelay(true);
                return Some(Connected { stream, permit, applied_before, began_us, began_removed });
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("connect timed out after {STALL:?}"),
        };
        drop(permit);
        if side {
            // Its listener is away: come back shortly.
            c.side_connects_refused.fetch_add(1, Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        attempts += 1;
        c.connect_retries.fetch_add(1, Relaxed);
        if attempts >= MAIN_CONNECT_ATTEMPTS {
            c.main_connects_given_up.fetch_add(1, Relaxed);
            c.fail(format!("connect to {addr}: {error} ({attempts} attempts)"));
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100 * attempts as u64)).await;
    }
}

/// Sends a chunk every interval and checks its echo, until the soak ends
/// (then closes cleanly) or the connection breaks. The first chunk goes at
/// once, and its echo (the agent accepted the connection and reached a
/// backend) releases the connect `permit`: so the connections the agent has
/// not accepted yet never outnumber the permits, and its listen backlog
/// (1,024) cannot overflow however slowly it accepts.
#[allow(clippy::too_many_arguments)]
async fn traffic(
    mut stream: TcpStream,
    permit: SemaphorePermit<'_>,
    id: u64,
    side: bool,
    shared: &Shared,
    stop: &mut watch::Receiver<bool>,
    rng: &mut impl Rng,
) -> Ended {
    let s = &shared.settings;
    let c = &shared.counters;
    let mut out = vec![0u8; s.max_chunk];
    let mut back = vec![0u8; s.max_chunk];
    let mut sent = 0u64;
    let mut permit = Some(permit);
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return close(stream, id, shared).await;
        }
        let len = rng.random_range(1..=s.max_chunk);
        fill(id, sent, &mut out[..len]);
        let mut got = 0;
        let exchange = async {
            stream.write_all(&out[..len]).await?;
            while got < len {
                match stream.read(&mut back[got..len]).await? {
                    0 => return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "end of stream mid-echo")),
                    n => got += n,
                }
            }
            Ok(())
        };
        let result = tokio::time::timeout(STALL, exchange).await;
        // What came back is checked even when the connection then broke.
        let bad = out[..got].iter().zip(&back[..got]).filter(|(a, b)| a != b).count() as u64;
        if bad > 0 {
            c.corrupted_bytes.fetch_add(bad, Relaxed);
            c.corrupted_connections.fetch_add(1, Relaxed);
            let at = out[..got].iter().zip(&back[..got]).position(|(a, b)| a != b).unwrap_or(0) as u64;
            c.fail(format!("stream {id:#x}: {bad} of {got} echoed bytes differ, the first at offset {}", sent + at));
            return Ended::Failed;
        }
        c.bytes_verified.fetch_add(got as u64, Relaxed);
        match result {
            Err(_) => {
                c.stalls.fetch_add(1, Relaxed);
                c.fail(format!("stream {id:#x}: no complete echo of {len} bytes within {STALL:?} (got {got})"));
                return Ended::Failed;
            }
            Ok(Err(e)) => return Ended::Interrupted(format!("{} after {} bytes", e, sent + got as u64)),
            Ok(Ok(())) => {}
        }
        c.bytes_sent.fetch_add(len as u64, Relaxed);
        if !side {
            c.bytes_sent_main.fetch_add(len as u64, Relaxed);
        }
        c.chunks_verified.fetch_add(1, Relaxed);
        sent += len as u64;
        if permit.take().is_some() {
            // After the first echo: spread the connections' chunks over the interval.
            next += s.chunk_interval.mul_f64(rng.random::<f64>());
        }
        next += s.chunk_interval;
        let now = tokio::time::Instant::now();
        if next < now {
            // Late (the machine was busy): resume the pace rather than burst to catch up.
            next = now;
        }
    }
}

/// FIN from the client; the echo answers with FIN and nothing else.
async fn close(mut stream: TcpStream, id: u64, shared: &Shared) -> Ended {
    let c = &shared.counters;
    let mut rest = [0u8; 64];
    let result = tokio::time::timeout(STALL, async {
        stream.shutdown().await?;
        stream.read(&mut rest).await
    })
    .await;
    match result {
        Ok(Ok(0)) => {
            c.clean_closes.fetch_add(1, Relaxed);
        }
        Ok(Ok(n)) => {
            c.close_failures.fetch_add(1, Relaxed);
            c.corrupted_bytes.fetch_add(n as u64, Relaxed);
            c.fail(format!("stream {id:#x}: {n} bytes arrived after the last echo"));
        }
        Ok(Err(e)) => {
            c.close_failures.fetch_add(1, Relaxed);
            c.fail(format!("stream {id:#x}: closing: {e}"));
        }
        Err(_) => {
            c.close_failures.fetch_add(1, Relaxed);
            c.fail(format!("stream {id:#x}: no FIN back within {STALL:?}"));
        }
    }
    Ended::Done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_is_addressable_at_any_offset_and_differs_between_streams() {
        let mut whole = vec![0u8; 100];
        fill(7, 0, &mut whole);
        let mut part = vec![0u8; 37];
        fill(7, 41, &mut part);
        assert_eq!(&whole[41..78], &part[..]);
        let mut other = vec![0u8; 100];
        fill(8, 0, &mut other);
        assert!(whole.iter().zip(&other).filter(|(a, b)| a == b).count() < 10, "streams 7 and 8 must differ");
        // A chunk replayed one word later does not match.
        let mut shifted = vec![0u8; 37];
        fill(7, 49, &mut shifted);
        assert_ne!(&whole[41..78], &shifted[..]);
    }
}
