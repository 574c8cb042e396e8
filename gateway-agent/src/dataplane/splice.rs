//! The zero-copy userspace path: `splice(2)` from one socket into a pipe and
//! from the pipe into the other socket (HAProxy's technique). The payload moves
//! between kernel buffers; userspace only waits for readiness and counts.
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use tokio::io::Interest;
use tokio::net::TcpStream;

use super::path::{conclude, deliver_pending, pass_fin, readable_or_paused, until_done, Carried, Control, DataPath, Flow, Forwarding};

/// Bytes asked of one splice call; the pipe is sized to hold it.
const CHUNK: usize = 1 << 20;

#[derive(Debug, Default)]
pub struct SplicePath;

impl DataPath for SplicePath {
    fn name(&self) -> &'static str {
        "splice"
    }

    fn code(&self) -> u32 {
        gateway_common::PATH_SPLICE
    }

    fn descriptors_per_connection(&self) -> u64 {
        6 // two sockets and two pipes
    }

    fn idle_descriptors(&self) -> u64 {
        2 * POOL_PIPES as u64
    }

    fn forward<'a>(&'a self, client: TcpStream, backend: TcpStream, up: Carried, down: Carried, control: Control) -> Forwarding<'a> {
        forward_through(&POOL, client, backend, up, down, control)
    }
}

/// [`SplicePath::forward`] with its pipes leased from `pool`.
fn forward_through(pool: &PipePool, client: TcpStream, backend: TcpStream, up: Carried, down: Carried, control: Control) -> Forwarding<'_> {
    Box::pin(async move {
        let (mut up, mut down) = (Flow::from(up), Flow::from(down));
        let end = {
            let both = async {
                let (p1, p2) = (pool.lease()?, pool.lease()?);
                tokio::try_join!(pump(&client, &backend, &p1, &mut up, &control), pump(&backend, &client, &p2, &mut down, &control))
            };
            until_done(both, &control).await
        };
        Ok(conclude(client, backend, end, up, down))
    })
}

/// Idle pipes kept for the next connections. Creating a pipe and growing it
/// to [`CHUNK`] (pipe2, F_SETPIPE_SZ, which allocates its 256-slot buffer
/// array) and closing it again (free_pipe_info) cost eight syscalls per
/// connection and were the largest share of this path's set-up in the
/// connection-rate profile; an empty pipe can serve the next connection as it
/// is. Bounded, as HAProxy bounds its pool (`tune.maxpipes`): each idle pipe
/// holds two descriptors (counted in `idle_descriptors`) and its slot array
/// counts against the user's pipe buffer pages (`pipe-user-pages-soft`, 256
/// pages per 1 MiB pipe: 32 idle pipes are half the default soft limit).
const POOL_PIPES: usize = 32;

static POOL: PipePool = PipePool::new(POOL_PIPES);

/// How long an unused pipe stays pooled.
const POOL_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// Closes the splice path's pipes idle for a second or more (called from the agent's periodic tick).
pub fn sweep_idle_pipes() {
    POOL.sweep(POOL_IDLE);
}

/// A bounded stack of empty pipes.
pub(crate) struct PipePool {
    /// Each with when it came back: a pipe idle for long is closed (see `sweep`).
    idle: Mutex<Vec<(Pipe, std::time::Instant)>>,
    cap: usize,
}

impl PipePool {
    pub(crate) const fn new(cap: usize) -> PipePool {
        PipePool { idle: Mutex::new(Vec::new()), cap }
    }

    /// An idle pipe, or a new one when none is idle.
    pub(crate) fn lease(&self) -> io::Result<Lease<'_>> {
        let idle = self.idle.lock().unwrap().pop().map(|(pipe, _)| pipe);
        let pipe = match idle {
            Some(pipe) => pipe,
            None => Pipe::new()?,
        };
        Ok(Lease { pipe: Some(pipe), pool: self })
    }

    /// Keeps `pipe` for another connection only if the kernel says it holds
    /// no byte: a connection stopped, reset or failed mid-write leaves bytes
    /// in its pipe, and those must never reach the next connection's peer.
    /// Such a pipe (and any beyond the bound) is closed.
    fn give_back(&self, pipe: Pipe) {
        if pipe.queued() != Some(0) {
            return;
        }
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < self.cap {
            idle.push((pipe, std::time::Instant::now()));
        }
    }

    /// Closes the pipes idle for `older_than` or more: a pool kept after the
    /// traffic went would hold its descriptors (and pipe pages) for nothing,
    /// and an agent at rest should hold what it held before the burst.
    pub(crate) fn sweep(&self, older_than: std::time::Duration) {
        self.idle.lock().unwrap().retain(|(_, since)| since.elapsed() < older_than);
    }

    #[cfg(test)]
    pub(crate) fn idle(&self) -> usize {
        self.idle.lock().unwrap().len()
    }
}

/// A pipe lent to one direction of one connection; it goes back to its pool
/// when the direction is done with it, however the connection ended.
pub(crate) struct Lease<'p> {
    pipe: Option<Pipe>,
    pool: &'p PipePool,
}

impl std::ops::Deref for Lease<'_> {
    type Target = Pipe;

    fn deref(&self) -> &Pipe {
        self.pipe.as_ref().expect("a lease holds its pipe until dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(pipe) = self.pipe.take() {
            self.pool.give_back(pipe);
        }
    }
}

/// A non-blocking pipe, both ends closed on drop.
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 writes two fds into the array on success.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both fds were just returned by pipe2 and are owned by nobody else.
        let pipe = unsafe { Pipe { read: OwnedFd::from_raw_fd(fds[0]), write: OwnedFd::from_raw_fd(fds[1]) } };
        // A larger pipe moves more per call; failure (a low pipe-max-size) only costs speed.
        // SAFETY: fcntl on an fd we own.
        unsafe { libc::fcntl(pipe.write.as_raw_fd(), libc::F_SETPIPE_SZ, CHUNK as libc::c_int) };
        Ok(pipe)
    }

    /// Bytes sitting in the pipe (FIONREAD), None if the kernel would not say.
    fn queued(&self) -> Option<usize> {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int; the fd is ours.
        (unsafe { libc::ioctl(self.read.as_raw_fd(), libc::FIONREAD, &mut n) } == 0).then_some(n as usize)
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: plain splice(2) between fds the caller keeps open; null offsets (streams).
    let n = unsafe {
        libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK)
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Moves `from` → pipe → `to` until end-of-stream (then half-closes `to`) or
/// until `pause` fires. A pause while bytes sit in the pipe takes them out into
/// `flow.pending`, so the pipe can be dropped and nothing is lost.
async fn pump(from: &TcpStream, to: &TcpStream, pipe: &Pipe, flow: &mut Flow, control: &Control) -> io::Result<()> {
    if flow.done || !deliver_pending(to, flow, control).await? {
        return Ok(());
    }
    loop {
        // Fill the pipe from the socket (WouldBlock clears tokio's readiness, so we wait again).
        let n = loop {
            if !readable_or_paused(from, &control.pause).await? {
                return Ok(());
            }
            match from.try_io(Interest::READABLE, || splice(from.as_raw_fd(), pipe.write.as_raw_fd(), CHUNK)) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            // The pipe is empty here: everything read was written below before reading again.
            return pass_fin(to, flow);
        }
        // Drain exactly what came in to the other socket.
        let mut left = n;
        while left > 0 {
            tokio::select! {
                biased;
                _ = control.pause.cancelled() => {
                    flow.pending = take(&pipe.read, left)?;
                    return Ok(());
                }
                ready = to.writable() => ready?,
            }
            match to.try_io(Interest::WRITABLE, || splice(pipe.read.as_raw_fd(), to.as_raw_fd(), left)) {
                Ok(written) => {
                    left -= written;
                    flow.moved += written as u64;
                    control.activity.fetch_add(written as u64, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Reads exactly `len` bytes that are known to sit in the pipe.
fn take(pipe: &OwnedFd, len: usize) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; len];
    let mut got = 0;
    while got < len {
        // SAFETY: reading into the unfilled tail of a buffer we own, from an fd we own.
        let n = unsafe { libc::read(pipe.as_raw_fd(), bytes[got..].as_mut_ptr().cast(), len - got) };
        match n {
            n if n > 0 => got += n as usize,
            0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "pipe ended before its bytes were taken")),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::dataplane::path::{End, Outcome};

    fn write_to(pipe: &Pipe, bytes: &[u8]) {
        // SAFETY: writing from a buffer we own to an fd we own.
        let n = unsafe { libc::write(pipe.write.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
        assert_eq!(n, bytes.len() as isize);
    }

    #[test]
    fn an_empty_pipe_is_reused_and_one_holding_bytes_is_closed() {
        let pool = PipePool::new(2);
        let lease = pool.lease().unwrap();
        let fd = lease.read.as_raw_fd();
        drop(lease);
        assert_eq!(pool.idle(), 1, "an empty pipe goes back");
        let lease = pool.lease().unwrap();
        assert_eq!(lease.read.as_raw_fd(), fd, "the next lease is the idle pipe");
        assert_eq!(pool.idle(), 0);
        write_to(&lease, b"left over");
        assert_eq!(lease.queued(), Some(9));
        drop(lease);
        assert_eq!(pool.idle(), 0, "a pipe holding bytes must not serve another connection");
        let fresh = pool.lease().unwrap();
        assert_eq!(fresh.queued(), Some(0));
    }

    #[test]
    fn pipes_idle_past_the_limit_are_closed_and_recent_ones_kept() {
        let pool = PipePool::new(4);
        drop(pool.lease().unwrap());
        std::thread::sleep(std::time::Duration::from_millis(30));
        drop(pool.lease().unwrap());
        drop(pool.lease().unwrap()); // reuses the newer one: still one idle after
        assert_eq!(pool.idle(), 1);
        let fresh = pool.lease().unwrap();
        let older = pool.lease().unwrap();
        drop(older);
        std::thread::sleep(std::time::Duration::from_millis(30));
        drop(fresh);
        pool.sweep(std::time::Duration::from_millis(20));
        assert_eq!(pool.idle(), 1, "the pipe idle for 30 ms went, the one just returned stayed");
        pool.sweep(std::time::Duration::ZERO);
        assert_eq!(pool.idle(), 0);
    }

    #[test]
    fn the_pool_keeps_no_more_than_its_bound() {
        let pool = PipePool::new(2);
        let leases: Vec<_> = (0..3).map(|_| pool.lease().unwrap()).collect();
        drop(leases);
        assert_eq!(pool.idle(), 2);
    }

    async fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let outer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (inner, _) = listener.accept().await.unwrap();
        (outer, inner)
    }

    /// A connection stopped while its backend reads nothing leaves bytes in
    /// its upload pipe: that pipe is closed, the empty one goes back, and the
    /// next connection through the same pool gets exactly its own bytes.
    #[tokio::test]
    async fn a_stopped_connections_bytes_never_reach_the_next_connection() {
        let pool = PipePool::new(4);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (mut client, proxy_client) = pair(&listener).await;
        let (backend, proxy_backend) = pair(&listener).await;
        // Small buffers on the backend leg, so the pipe is what fills up.
        socket2::SockRef::from(&backend).set_recv_buffer_size(4096).unwrap();
        socket2::SockRef::from(&proxy_backend).set_send_buffer_size(4096).unwrap();
        let control = Control::default();
        let stale = vec![0xAAu8; 4 << 20];
        let run = forward_through(&pool, proxy_client, proxy_backend, Carried::default(), Carried::default(), control.clone());
        let send = async {
            // Until the forwarder stops taking bytes: its pipe holds what the backend leg refuses.
            let _ = tokio::time::timeout(Duration::from_millis(300), client.write_all(&stale)).await;
            control.stop.cancel();
        };
        let (outcome, ()) = tokio::join!(run, send);
        match outcome.unwrap() {
            Outcome::Ended(t) => assert_eq!(t.end, End::Stopped),
            Outcome::Paused(_) => panic!("a stopped connection does not pause"),
            Outcome::Detached(_) => panic!("splice(2) has no kernel to detach a connection to"),
        }
        assert!(control.activity.load(std::sync::atomic::Ordering::Relaxed) < stale.len() as u64, "the backend leg took everything: nothing was left in a pipe");
        assert_eq!(pool.idle(), 1, "only the download pipe, which never held a byte, goes back");
        drop((client, backend));

        let (client, proxy_client) = pair(&listener).await;
        let (backend, proxy_backend) = pair(&listener).await;
        let (up, down): (Vec<u8>, Vec<u8>) = ((0..100_000u32).map(|i| i as u8).collect(), (0..50_000u32).map(|i| (i * 7) as u8).collect());
        let run = forward_through(&pool, proxy_client, proxy_backend, Carried::default(), Carried::default(), Control::default());
        let side = |mut stream: TcpStream, data: Vec<u8>| async move {
            stream.write_all(&data).await.unwrap();
            stream.shutdown().await.unwrap();
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await.unwrap();
            got
        };
        let (outcome, at_backend, at_client) = tokio::join!(run, side(backend, down.clone()), side(client, up.clone()));
        assert!(matches!(outcome.unwrap(), Outcome::Ended(t) if t.end == End::Closed));
        assert!(at_backend == up, "the backend got {} bytes, not exactly the client's {}", at_backend.len(), up.len());
        assert!(at_client == down, "the client got {} bytes, not exactly the backend's {}", at_client.len(), down.len());
        assert_eq!(pool.idle(), 2, "both pipes of a connection that ended cleanly go back");
    }
}
