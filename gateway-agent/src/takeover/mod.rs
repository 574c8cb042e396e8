//! Takeover: a new agent on a node carries on the running agent's listening
//! sockets and established connections, so an upgrade drops nothing.
//!
//! The running agent offers a SOCK_SEQPACKET unix socket (default
//! `/run/sockgate/agent.sock`). A starting agent connects and says hello; the
//! running one stops accepting (its listening sockets stay open, so new
//! clients wait in the kernel's accept queue rather than being refused),
//! pauses every connection at a point where nothing is in flight inside it,
//! and sends each listening socket with the configuration it serves and each
//! connection's two sockets (SCM_RIGHTS) with the bytes it had read and not
//! yet written. The new agent acknowledges, and only then starts accepting and
//! forwarding; the old one releases its eBPF programs and health port, closes
//! the unix connection (the new agent waits for that) and exits. If anything
//! fails before the acknowledgement, the old agent resumes everything itself.
//!
//! Records: `J` + JSON ([`Record`]), or `D` + raw bytes (a connection's
//! pending bytes, up direction first, cut into records).
pub mod fdpass;

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use crate::dataplane::listeners::{HandedConnection, HandedListener, Handover};
use crate::dataplane::path::Carried;
use crate::model::config::ListenerConfig;
use crate::resources::ObjectKey;

pub const DEFAULT_SOCKET: &str = "/run/sockgate/agent.sock";
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
enum Record {
    Hello { version: u32 },
    /// One fd: the listening socket.
    Listener { port: u16, config: ListenerConfig },
    /// Two fds: client, backend. Followed by `up_pending + down_pending` bytes of `D` records.
    Connection { port: u16, route: ObjectKey, peer: SocketAddr, up_done: bool, up_pending: usize, down_done: bool, down_pending: usize },
    End { listeners: usize, connections: usize },
    Ack,
}

fn send_record(socket: &Socket, record: &Record, fds: &[std::os::fd::RawFd]) -> io::Result<()> {
    let mut bytes = vec![b'J'];
    serde_json::to_writer(&mut bytes, record).map_err(io::Error::other)?;
    fdpass::send(socket, &bytes, fds)
}

fn send_data(socket: &Socket, data: &[u8]) -> io::Result<()> {
    for chunk in data.chunks(fdpass::MAX_RECORD - 1) {
        let mut bytes = Vec::with_capacity(chunk.len() + 1);
        bytes.push(b'D');
        bytes.extend_from_slice(chunk);
        fdpass::send(socket, &bytes, &[])?;
    }
    Ok(())
}

enum Received {
    Record(Record, Vec<OwnedFd>),
    Data(Vec<u8>),
    Closed,
}

fn receive(socket: &Socket) -> io::Result<Received> {
    let mut buf = vec![0u8; fdpass::MAX_RECORD];
    let (n, fds) = fdpass::recv(socket, &mut buf)?;
    match buf[..n].split_first() {
        None => Ok(Received::Closed),
        Some((b'J', json)) => Ok(Received::Record(serde_json::from_slice(json).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?, fds)),
        Some((b'D', data)) => Ok(Received::Data(data.to_vec())),
        Some((kind, _)) => Err(io::Error::new(io::ErrorKind::InvalidData, format!("unknown takeover record kind {kind}"))),
    }
}

fn read_data(socket: &Socket, len: usize) -> io::Result<Vec<u8>> {
    let mut data = Vec::with_capacity(len);
    while data.len() < len {
        match receive(socket)? {
            Received::Data(chunk) => data.extend_from_slice(&chunk),
            _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "expected a connection's pending bytes")),
        }
    }
    if data.len() != len {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "more pending bytes than announced"));
    }
    Ok(data)
}

/// The running agent's side: the socket it offers its state on. A task of
/// its own accepts and reads each hello, so that `requested` is cancel-safe:
/// the main loop polls it beside its other work, and an asking agent whose
/// hello was being read when the loop turned to something else must not
/// lose its connection (seen under load: "closed the takeover socket mid-way").
pub struct Offer {
    asked: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Socket>>,
    listening: tokio::task::JoinHandle<()>,
    path: PathBuf,
    /// The bound file, so that only it is removed (a successor may have bound the same path since).
    inode: (u64, u64),
}

impl Offer {
    /// Binds `path` (replacing a socket file a dead agent left) and listens.
    pub fn bind(path: &Path) -> anyhow::Result<Offer> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let _ = std::fs::remove_file(path);
        let socket = Socket::new(Domain::UNIX, Type::SEQPACKET, None)?;
        socket.bind(&SockAddr::unix(path)?).with_context(|| format!("binding the takeover socket {}", path.display()))?;
        // Only root (the agent's peers) may ask for the node's connections.
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        socket.listen(4)?;
        socket.set_nonblocking(true)?;
        let inode = inode(path)?;
        // SAFETY: the Socket owns its fd, which stays open and the same for as long as the AsyncFd lives.
        let socket = unsafe { AsyncFd::register(socket) }.map_err(|e| anyhow::anyhow!("registering the takeover socket: {e}"))?;
        let (tell, asked) = tokio::sync::mpsc::channel(1);
        let listening = tokio::spawn(async move {
            loop {
                match accept_hello(&socket).await {
                    Ok(conn) => {
                        if tell.send(conn).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "takeover socket failed; no successor can take over from this agent");
                        return;
                    }
                }
            }
        });
        Ok(Offer { asked: tokio::sync::Mutex::new(asked), listening, path: path.to_path_buf(), inode })
    }

    /// Waits for an agent that asks to take over; its connection, after its
    /// hello. Cancel-safe: a connection not yet taken waits for the next call.
    pub async fn requested(&self) -> io::Result<Socket> {
        match self.asked.lock().await.recv().await {
            Some(conn) => Ok(conn),
            None => std::future::pending().await,
        }
    }
}

/// Accepts the next agent that asks, and reads its hello.
async fn accept_hello(socket: &AsyncFd<Socket>) -> io::Result<Socket> {
        loop {
            let mut ready = socket.readable().await?;
            let accepted = match ready.try_io(|s| s.get_ref().accept()) {
                Ok(accepted) => accepted,
                Err(_would_block) => continue,
            };
            let (conn, _) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "takeover socket: accept failed");
                    continue;
                }
            };
            conn.set_nonblocking(false)?;
            conn.set_read_timeout(Some(Duration::from_secs(5)))?;
            match tokio::task::spawn_blocking(move || receive(&conn).map(|r| (r, conn))).await? {
                Ok((Received::Record(Record::Hello { version: VERSION }, _), conn)) => return Ok(conn),
                Ok((other, _)) => tracing::warn!(record = ?matches!(other, Received::Closed), "takeover socket: not a hello of version {VERSION}; ignored"),
                Err(e) => tracing::warn!(error = %e, "takeover socket: no hello; ignored"),
            }
        }
}

impl Drop for Offer {
    fn drop(&mut self) {
        self.listening.abort();
        if inode(&self.path).ok() == Some(self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn inode(path: &Path) -> io::Result<(u64, u64)> {
    let meta = std::fs::metadata(path)?;
    Ok((std::os::unix::fs::MetadataExt::dev(&meta), std::os::unix::fs::MetadataExt::ino(&meta)))
}

/// Sends everything and waits for the acknowledgement (blocking: run it off the runtime).
pub fn hand_over(conn: &Socket, handover: &Handover, ack_timeout: Duration) -> io::Result<()> {
    for l in &handover.listeners {
        send_record(conn, &Record::Listener { port: l.port, config: l.config.clone() }, &[l.socket.as_raw_fd()])?;
    }
    for c in &handover.connections {
        let record = Record::Connection {
            port: c.port,
            route: c.route.clone(),
            peer: c.peer,
            up_done: c.up.done,
            up_pending: c.up.pending.len(),
            down_done: c.down.done,
            down_pending: c.down.pending.len(),
        };
        send_record(conn, &record, &[c.client.as_raw_fd(), c.backend.as_raw_fd()])?;
        send_data(conn, &c.up.pending)?;
        send_data(conn, &c.down.pending)?;
    }
    send_record(conn, &Record::End { listeners: handover.listeners.len(), connections: handover.connections.len() }, &[])?;
    conn.set_read_timeout(Some(ack_timeout))?;
    match receive(conn)? {
        Received::Record(Record::Ack, _) => Ok(()),
        _ => Err(io::Error::new(io::ErrorKind::InvalidData, "the new agent did not acknowledge the handover")),
    }
}

/// The starting agent's side: asks whoever offers `path` for its state.
/// Ok(None) when no agent is running there (no file, or a dead agent's file).
/// On Some, the handover is acknowledged: the caller owns every socket in it.
pub fn request(path: &Path, timeout: Duration) -> anyhow::Result<Option<(Handover, Socket)>> {
    let conn = Socket::new(Domain::UNIX, Type::SEQPACKET, None)?;
    match conn.connect(&SockAddr::unix(path)?) {
        Ok(()) => {}
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => {
            if e.kind() == io::ErrorKind::ConnectionRefused {
                tracing::info!(socket = %path.display(), "takeover socket left by an agent that is gone: starting afresh");
            }
            return Ok(None);
        }
        Err(e) => return Err(e).with_context(|| format!("connecting to the takeover socket {}", path.display())),
    }
    conn.set_read_timeout(Some(timeout))?;
    send_record(&conn, &Record::Hello { version: VERSION }, &[])?;
    let mut handover = Handover { listeners: Vec::new(), connections: Vec::new() };
    loop {
        match receive(&conn).context("receiving the running agent's state")? {
            Received::Record(Record::Listener { port, config }, fds) => {
                let [fd]: [OwnedFd; 1] = fds.try_into().map_err(|_| anyhow::anyhow!("listener record without exactly one socket"))?;
                handover.listeners.push(HandedListener { port, config, socket: std::net::TcpListener::from(fd) });
            }
            Received::Record(Record::Connection { port, route, peer, up_done, up_pending, down_done, down_pending }, fds) => {
                let [client, backend]: [OwnedFd; 2] = fds.try_into().map_err(|_| anyhow::anyhow!("connection record without exactly two sockets"))?;
                let up = Carried { pending: read_data(&conn, up_pending)?, done: up_done };
                let down = Carried { pending: read_data(&conn, down_pending)?, done: down_done };
                handover.connections.push(HandedConnection {
                    port,
                    route,
                    peer,
                    client: std::net::TcpStream::from(client),
                    backend: std::net::TcpStream::from(backend),
                    up,
                    down,
                });
            }
            Received::Record(Record::End { listeners, connections }, _) => {
                if listeners != handover.listeners.len() || connections != handover.connections.len() {
                    bail!("takeover incomplete: {listeners} listeners and {connections} connections announced, {} and {} received", handover.listeners.len(), handover.connections.len());
                }
                send_record(&conn, &Record::Ack, &[])?;
                return Ok(Some((handover, conn)));
            }
            Received::Closed => bail!("the running agent closed the takeover socket mid-way"),
            _ => bail!("unexpected takeover record"),
        }
    }
}

/// Waits (bounded) until the previous agent closed its end: it has released
/// its eBPF programs and health port by then.
pub fn wait_released(conn: Socket, limit: Duration) {
    let _ = conn.set_read_timeout(Some(limit));
    let mut buf = [0u8; 1];
    let _ = fdpass::recv(&conn, &mut buf);
}
