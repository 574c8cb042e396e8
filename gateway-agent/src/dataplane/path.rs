//! The one trait every data path implements: after connection set-up, move the
//! bytes between a client and its backend until both directions are done.
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
    /// The agent stopped the connection (its route went away); both sides were reset.
    Stopped,
}

pub type Forwarding<'a> = Pin<Box<dyn Future<Output = io::Result<Transfer>> + Send + 'a>>;

pub trait DataPath: Send + Sync {
    /// Short name for logs and metrics ("copy", "splice").
    fn name(&self) -> &'static str;

    /// The path's code in the eBPF listener map (`gateway_common::PATH_*`).
    fn code(&self) -> u32;

    /// Forwards until both directions end, a side resets, or `stop` fires.
    /// Semantics every path keeps: bytes arrive intact and in order; a FIN from
    /// one side is passed on as a half-close while the other direction keeps
    /// flowing; a reset on one side resets the other.
    fn forward<'a>(&'a self, client: TcpStream, backend: TcpStream, stop: CancellationToken) -> Forwarding<'a>;
}

/// How the two directions of a connection ended: both closed, one failed, or
/// `stop` fired first. Shared by the paths so they end connections alike.
pub async fn until_done<T>(both: impl Future<Output = io::Result<T>>, stop: &CancellationToken) -> End {
    tokio::select! {
        result = both => if result.is_ok() { End::Closed } else { End::Reset },
        _ = stop.cancelled() => End::Stopped,
    }
}

/// Closes the pair as `end` requires: a clean end has already half-closed both
/// ways; anything else resets both sides.
pub fn finish(client: TcpStream, backend: TcpStream, end: End, client_to_backend: u64, backend_to_client: u64) -> Transfer {
    if end != End::Closed {
        super::sockets::reset(client);
        super::sockets::reset(backend);
    }
    Transfer { client_to_backend, backend_to_client, end }
}
