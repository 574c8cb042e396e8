//! The one trait every data path implements: after connection set-up, move the
//! bytes between a client and its backend until both directions are done, or
//! until the agent asks the connection to pause so that another agent can
//! carry it on (takeover on upgrade).
use std::future::Future;
use std::io;
use std::pin::Pin;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// How a forwarded connection ended, and what it carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub client_to_backend: u64,
    pub backend_to_client: u64,
    pub end: End,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Both directions reached end-of-stream and were half-closed in turn.
    Closed,
    /// One side reset or failed; both sides were reset.
    Reset,
    /// The agent stopped the connection (its route went away, or a drain
    /// deadline passed); both sides were reset.
    Stopped,
    /// No byte moved either way for the listener's idle timeout; both sides
    /// were closed (FIN), as a quiet peer would close.
    Idle,
}

/// What a path hands back: a finished connection, a paused one, or one
/// whose bytes something else carries from now on.
pub enum Outcome {
    Ended(Transfer),
    Paused(Paused),
    /// The kernel carries the connection and no socket of it is read any
    /// more: what is left is to watch it until it ends. The caller runs this
    /// in a task of its own, so the set-up's state (a few KiB per connection)
    /// is freed while the flow lasts; it still obeys the `Control` the path
    /// was given.
    Detached(Watch),
}

/// The rest of a detached connection's life: how it ended, and what it carried.
pub type Watch = Pin<Box<dyn Future<Output = Transfer> + Send + 'static>>;

/// A connection stopped between two writes, with nothing lost: the bytes read
/// from one side and not yet written to the other are in `pending`.
pub struct Paused {
    pub client: TcpStream,
    pub backend: TcpStream,
    pub up: Carried,
    pub down: Carried,
    pub client_to_backend: u64,
    pub backend_to_client: u64,
}

/// One direction's state across a pause: bytes owed to the receiving side,
/// and whether the direction already ended (its FIN was passed on).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Carried {
    pub pending: Vec<u8>,
    pub done: bool,
}

/// What the agent may ask of a forwarded connection while it runs.
#[derive(Clone, Default)]
pub struct Control {
    /// Reset both sides and end (route gone, drain deadline).
    pub stop: CancellationToken,
    /// Stop moving bytes at the next safe point and hand the sockets back.
    pub pause: CancellationToken,
    /// Close both sides (FIN) and end: the connection was idle too long.
    pub close: CancellationToken,
    /// Bytes moved either way so far, for the idle watchdog.
    pub activity: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

pub type Forwarding<'a> = Pin<Box<dyn Future<Output = io::Result<Outcome>> + Send + 'a>>;

pub trait DataPath: Send + Sync {
    /// Short name for logs and metrics ("copy", "splice").
    fn name(&self) -> &'static str;

    /// The path's code in the eBPF listener map (`gateway_common::PATH_*`).
    fn code(&self) -> u32;

    /// File descriptors one forwarded connection holds (its two sockets, and
    /// whatever the path adds), for the connection cap the fd limit implies.
    fn descriptors_per_connection(&self) -> u64 {
        2
    }

    /// File descriptors the path keeps open between connections (splice(2)'s
    /// pool of idle pipes), which the connection cap leaves room for.
    fn idle_descriptors(&self) -> u64 {
        0
    }

    /// Forwards until both directions end, a side resets, `stop` fires, or
    /// `pause` fires. `up`/`down` carry state from an earlier owner of the
    /// connection (first their pending bytes are written). Semantics every path
    /// keeps: bytes arrive intact and in order; a FIN from one side is passed on
    /// as a half-close while the other direction keeps flowing; a reset on one
    /// side resets the other; a pause loses and duplicates nothing.
    fn forward<'a>(&'a self, client: TcpStream, backend: TcpStream, up: Carried, down: Carried, control: Control) -> Forwarding<'a>;

    /// What the kernel splice did so far, for /metrics (only that path has one).
    fn splice_report(&self) -> Option<super::kernel_splice::SpliceReport> {
        None
    }

    /// Connections an earlier agent on this node left for this path to carry
    /// on without any socket of theirs (the kernel splice's pinned flow
    /// table), taken once: call it when that agent is gone. Also those this
    /// agent itself let go of for a takeover that then failed.
    fn take_inherited(&self) -> Vec<super::kernel_splice::Inherited> {
        Vec::new()
    }

    /// Carries on an inherited connection until it ends, as `forward` does
    /// (`stop` resets both peers, `close` is the idle timeout).
    fn resume_inherited<'a>(&'a self, flow: super::kernel_splice::Inherited, control: Control) -> Forwarding<'a> {
        let _ = (flow, control);
        Box::pin(async { Err(io::Error::other("this data path carries no connection without its sockets")) })
    }
}

/// One direction of a connection while it is forwarded.
#[derive(Debug, Default)]
pub struct Flow {
    /// Bytes read and not yet written (only non-empty across a pause).
    pub pending: Vec<u8>,
    pub done: bool,
    /// Bytes written to the receiving side.
    pub moved: u64,
}

impl From<Carried> for Flow {
    fn from(carried: Carried) -> Flow {
        Flow { pending: carried.pending, done: carried.done, moved: 0 }
    }
}

/// Runs both directions until they are done, one fails, `stop` or `close` fires.
/// Each direction returns Ok when it ended or paused; the flows say which.
pub async fn until_done<T>(both: impl Future<Output = io::Result<T>>, control: &Control) -> End {
    tokio::select! {
        result = both => if result.is_ok() { End::Closed } else { End::Reset },
        _ = control.stop.cancelled() => End::Stopped,
        _ = control.close.cancelled() => End::Idle,
    }
}

/// Closes or returns the pair as the flows' state requires: both done is a
/// clean close (already half-closed both ways); one not done after a clean
/// return is a pause; anything else resets both sides.
pub fn conclude(client: TcpStream, backend: TcpStream, end: End, up: Flow, down: Flow) -> Outcome {
    if end == End::Closed && !(up.done && down.done) {
        return Outcome::Paused(Paused {
            client,
            backend,
            client_to_backend: up.moved,
            backend_to_client: down.moved,
            up: Carried { pending: up.pending, done: up.done },
            down: Carried { pending: down.pending, done: down.done },
        });
    }
    match end {
        End::Closed => {}
        End::Idle => {
            // Nothing is in flight: a FIN each way, then the sockets close.
            let _ = socket2::SockRef::from(&client).shutdown(std::net::Shutdown::Both);
            let _ = socket2::SockRef::from(&backend).shutdown(std::net::Shutdown::Both);
        }
        End::Reset | End::Stopped => {
            super::sockets::reset(client);
            super::sockets::reset(backend);
        }
    }
    Outcome::Ended(Transfer { client_to_backend: up.moved, backend_to_client: down.moved, end })
}

/// Writes `bytes` to `to` until all are written or `pause` fires; how many were.
/// Cancel-safe at every await: a byte counts as written only when the kernel took it.
pub async fn deliver(to: &TcpStream, bytes: &[u8], control: &Control) -> io::Result<usize> {
    let mut sent = 0;
    while sent < bytes.len() {
        tokio::select! {
            biased;
            _ = control.pause.cancelled() => break,
            ready = to.writable() => ready?,
        }
        match to.try_write(&bytes[sent..]) {
            Ok(n) => {
                sent += n;
                control.activity.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

/// Writes the bytes an earlier owner left pending; true when none are left.
pub async fn deliver_pending(to: &TcpStream, flow: &mut Flow, control: &Control) -> io::Result<bool> {
    let sent = deliver(to, &flow.pending, control).await?;
    flow.pending.drain(..sent);
    flow.moved += sent as u64;
    Ok(flow.pending.is_empty())
}

/// Waits until `from` is readable, or false when `pause` fires first.
pub async fn readable_or_paused(from: &TcpStream, pause: &CancellationToken) -> io::Result<bool> {
    tokio::select! {
        biased;
        _ = pause.cancelled() => Ok(false),
        ready = from.readable() => ready.map(|()| true),
    }
}

/// Passes an end-of-stream on: half-closes `to` and marks the direction done.
pub fn pass_fin(to: &TcpStream, flow: &mut Flow) -> io::Result<()> {
    flow.done = true;
    socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write)
}
