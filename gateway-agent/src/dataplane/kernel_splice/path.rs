//! The kernel data path: hand each connection to the TC splice, and watch it
//! there until it ends; a pair the kernel cannot take goes on splice(2).
//!
//! How a spliced flow ends:
//! - **FIN** each way passes through the splice (half-close works: one side
//!   done, the other still streaming). Once both FINs have passed, the entries
//!   stay [`TIME_WAIT`] longer, so a retransmitted FIN or last ACK is still
//!   translated, then they and the reserved socket go.
//! - **RST** from either side passes through; the entries go [`RESET_HOLD`] later.
//! - **Idle** (`ListenerPolicy.idleTimeout`): both peers get a FIN, as the
//!   userspace paths close an idle connection ([`end_with_fins`]).
//! - **Stopped** (its route left the listener, a drain deadline): both peers
//!   get a RST, as on the userspace paths.
//! - **Takeover**: the flow stays in the kernel; the entries are pinned, and
//!   the new agent, whose programs use the same pinned table, inherits them
//!   ([`KernelSplice::take_inherited`](super::KernelSplice::take_inherited)).
//! - **The agent killed**: its TC programs go with it (their links were its
//!   descriptors), so until an agent starts again a segment of a spliced flow
//!   meets the node's stack, which has no socket for it and answers with a
//!   RST. The restarted agent inherits the flows that were quiet meanwhile.
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::handover::{hand_over, Spliced};
use super::Inherited;
use super::craft::{send_fin, send_reset};
use super::translation::Refusal;
use super::KernelSplice;
use crate::dataplane::path::{Carried, Control, DataPath, End, Forwarding, Outcome, Transfer};
use crate::dataplane::splice::SplicePath;

/// How long both entries stay after both FINs passed.
pub const TIME_WAIT: Duration = Duration::from_secs(2);
/// How long they stay after a RST passed (a second RST needs translating too).
pub const RESET_HOLD: Duration = Duration::from_millis(500);
/// How often a spliced flow's entries are read: its counters, FIN and RST.
const WATCH_FIRST: Duration = Duration::from_millis(20);
const WATCH_MAX: Duration = Duration::from_millis(500);

pub struct KernelPath {
    pub kernel: Arc<KernelSplice>,
    fallback: SplicePath,
    /// How long a connection runs on splice(2) before its handover: a
    /// handover costs more than a short connection's whole life (the
    /// connection rate on splice(2) was about 6× that of handing every
    /// connection over at once), and most connections that last are idle or
    /// streaming by then.
    handover_after: Duration,
}

impl KernelPath {
    pub fn new(kernel: Arc<KernelSplice>, handover_after: Duration) -> KernelPath {
        KernelPath { kernel, fallback: SplicePath, handover_after }
    }

    /// Forwards on splice(2) until the handover is due (then hands the
    /// connection back, paused, with nothing lost), the connection ends, or
    /// the agent pauses it for a takeover.
    async fn warm_up(&self, client: TcpStream, backend: TcpStream, up: Carried, down: Carried, control: &Control) -> std::io::Result<Outcome> {
        if self.handover_after.is_zero() {
            return Ok(Outcome::Paused(crate::dataplane::path::Paused { client, backend, up, down, client_to_backend: 0, backend_to_client: 0 }));
        }
        // A token of this connection's own (a child of the agent's pause
        // would take the parent's lock twice per connection): the timer or
        // the agent's pause fires it.
        let due = tokio_util::sync::CancellationToken::new();
        let warm = Control { pause: due.clone(), ..control.clone() };
        let timer = async {
            tokio::select! {
                _ = tokio::time::sleep(self.handover_after) => {}
                _ = control.pause.cancelled() => {}
            }
            due.cancel();
            std::future::pending::<()>().await
        };
        tokio::select! {
            outcome = self.fallback.forward(client, backend, up, down, warm) => outcome,
            _ = timer => unreachable!("the timer never completes"),
        }
    }
}

impl DataPath for KernelPath {
    fn name(&self) -> &'static str {
        "ebpf"
    }

    fn code(&self) -> u32 {
        gateway_common::PATH_KERNEL
    }

    /// A spliced connection keeps one socket (the reserved backend leg).
    fn descriptors_per_connection(&self) -> u64 {
        1
    }

    /// Connections start on splice(2), whose idle pipes stay open between them.
    fn idle_descriptors(&self) -> u64 {
        self.fallback.idle_descriptors()
    }

    fn splice_report(&self) -> Option<super::SpliceReport> {
        Some(self.kernel.report())
    }

    fn take_inherited(&self) -> Vec<Inherited> {
        self.kernel.take_inherited()
    }

    fn resume_inherited<'a>(&'a self, flow: Inherited, control: Control) -> Forwarding<'a> {
        Box::pin(async move {
            let spliced = Spliced {
                keys: flow.keys,
                reserved: reserve_port(flow.backend_local),
                client: flow.client,
                client_local: flow.client_local,
                backend: flow.backend,
                backend_local: flow.backend_local,
                moved_up: 0,
                moved_down: 0,
                held: false,
                client_socket: None,
                client_acked_at: 0,
            };
            Ok(Outcome::Detached(watched(&self.kernel, spliced, control)))
        })
    }

    fn forward<'a>(&'a self, client: TcpStream, backend: TcpStream, up: Carried, down: Carried, control: Control) -> Forwarding<'a> {
        Box::pin(async move {
            // Boxed: its state is freed once the handover starts, not kept for the flow's life.
            let warm = match Box::pin(self.warm_up(client, backend, up, down, &control)).await? {
                Outcome::Ended(transfer) => {
                    self.kernel.refuse(Refusal::EndedFirst);
                    tracing::debug!(end = ?transfer.end, "connection ended on splice(2) before its handover was due");
                    return Ok(Outcome::Ended(transfer));
                }
                Outcome::Paused(paused) if control.pause.is_cancelled() => return Ok(Outcome::Paused(paused)),
                Outcome::Paused(paused) => paused,
                Outcome::Detached(rest) => return Ok(Outcome::Detached(rest)),
            };
            let (warm_up, warm_down) = (warm.client_to_backend, warm.backend_to_client);
            // Boxed too: a handover's state is large, and the flow's watch lasts.
            let handed = Box::pin(hand_over(&self.kernel, warm.client, warm.backend, warm.up, warm.down, &control)).await.map(|mut spliced| {
                spliced.moved_up += warm_up;
                spliced.moved_down += warm_down;
                spliced
            });
            match handed.map_err(|mut refused| {
                refused.moved_up += warm_up;
                refused.moved_down += warm_down;
                refused
            }) {
                Ok(spliced) => {
                    self.kernel.spliced.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(client = %spliced.client, backend = %spliced.backend, held = spliced.held, "connection spliced in the kernel");
                    // No socket is read any more: the rest is a watch, which
                    // the caller runs without this set-up's state.
                    Ok(Outcome::Detached(watched(&self.kernel, spliced, control)))
                }
                Err(refused) => {
                    self.kernel.refuse(refused.reason);
                    tracing::debug!(reason = refused.reason.name(), detail = %refused.detail, "connection kept on splice(2)");
                    let (moved_up, moved_down) = (refused.moved_up, refused.moved_down);
                    if refused.peer_reset {
                        crate::dataplane::sockets::reset(refused.client);
                        crate::dataplane::sockets::reset(refused.backend);
                        return Ok(Outcome::Ended(Transfer { client_to_backend: moved_up, backend_to_client: moved_down, end: End::Reset }));
                    }
                    let outcome = self.fallback.forward(refused.client, refused.backend, refused.up, refused.down, control).await?;
                    Ok(match outcome {
                        Outcome::Ended(t) => Outcome::Ended(Transfer { client_to_backend: t.client_to_backend + moved_up, backend_to_client: t.backend_to_client + moved_down, end: t.end }),
                        Outcome::Paused(mut p) => {
                            p.client_to_backend += moved_up;
                            p.backend_to_client += moved_down;
                            Outcome::Paused(p)
                        }
                        Outcome::Detached(rest) => Outcome::Detached(rest),
                    })
                }
            }
        })
    }
}

/// The watch of a spliced flow, owning what it needs.
fn watched(kernel: &Arc<KernelSplice>, spliced: Spliced, control: Control) -> crate::dataplane::path::Watch {
    let kernel = Arc::clone(kernel);
    Box::pin(async move { watch(&kernel, spliced, &control).await })
}

/// Follows a spliced flow until it ends, and cleans up after it.
async fn watch(kernel: &Arc<KernelSplice>, mut spliced: Spliced, control: &Control) -> Transfer {
    let mut every = WATCH_FIRST;
    let mut seen_packets = 0u64;
    let (moved_up, moved_down) = (spliced.moved_up, spliced.moved_down);
    let transfer = move |up: u64, down: u64, end| Transfer { client_to_backend: moved_up + up, backend_to_client: moved_down + down, end };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = control.stop.cancelled() => return end_with_resets(kernel, spliced, End::Stopped),
            _ = control.close.cancelled() => return end_with_fins(kernel, spliced),
            _ = control.pause.cancelled() => {
                // Another agent takes the listeners over: the flow stays in the
                // kernel, in the pinned table both agents' programs share, and
                // the successor inherits it. The reserved socket closes now
                // (silently: it is in repair mode); whoever carries the flow
                // on reserves the port again. Should the takeover fail, this
                // agent takes the flow back as the successor would have.
                let (up, down) = bytes(kernel, &spliced);
                if let Some(entry) = kernel.get(&spliced.keys[0]) {
                    kernel.let_go(Inherited {
                        listener_port: entry.listener_port as u16,
                        keys: spliced.keys,
                        client: spliced.client,
                        client_local: spliced.client_local,
                        backend: spliced.backend,
                        backend_local: spliced.backend_local,
                    });
                }
                return transfer(up, down, End::Closed);
            }
        }
        every = (every * 2).min(WATCH_MAX);
        let (Some(up), Some(down)) = (kernel.get(&spliced.keys[0]), kernel.get(&spliced.keys[1])) else {
            // Removed under us (the agent is stopping): nothing more to carry.
            return transfer(0, 0, End::Stopped);
        };
        // The client acknowledged all the gateway sent it: its socket has
        // nothing left to retransmit and can go (silently: repair mode).
        if spliced.client_socket.is_some() && !before(up.last_ack, spliced.client_acked_at) {
            spliced.client_socket = None;
        }
        let packets = up.packets + down.packets;
        if packets != seen_packets {
            // Kernel-forwarded bytes count as activity for the idle watchdog.
            control.activity.fetch_add(packets - seen_packets, Ordering::Relaxed);
            seen_packets = packets;
            every = WATCH_FIRST;
        }
        let end = if up.rst != 0 || down.rst != 0 {
            Some((End::Reset, RESET_HOLD))
        } else if up.fin != 0 && down.fin != 0 {
            Some((End::Closed, TIME_WAIT))
        } else {
            None
        };
        if let Some((end, hold)) = end {
            // The connection is over for its peers, so it is over for the
            // listener too (its maxConnections slot, the gauges, the access
            // log): the entries stay `hold` longer on their own, for a
            // retransmitted FIN or last ACK. (Should the agent exit first,
            // its successor inherits them and holds them the same way.)
            let (up, down) = bytes(kernel, &spliced);
            let (kernel, stop) = (Arc::clone(kernel), control.stop.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(hold) => {}
                    _ = stop.cancelled() => {}
                }
                release(&kernel, spliced);
            });
            return transfer(up, down, end);
        }
    }
}

/// A socket bound to the backend leg's local address keeps connect(2)'s
/// port choice off it, as the earlier agent's reserved socket did (it closed
/// with that agent). None if the port is taken meanwhile (said at debug level).
fn reserve_port(local: std::net::SocketAddr) -> Option<std::os::fd::OwnedFd> {
    let domain = if local.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
    let reserved = socket2::Socket::new(domain, socket2::Type::STREAM, None).and_then(|s| s.bind(&local.into()).map(|()| s));
    match reserved {
        Ok(socket) => Some(socket.into()),
        Err(e) => {
            tracing::debug!(%local, error = %e, "could not reserve an inherited connection's port");
            None
        }
    }
}

/// `a` comes before `b` in sequence space.
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

fn bytes(kernel: &KernelSplice, spliced: &Spliced) -> (u64, u64) {
    let get = |i: usize| kernel.get(&spliced.keys[i]).map(|e| e.bytes).unwrap_or(0);
    (get(0), get(1))
}

/// Removes the entries and closes the reserved socket (silently).
fn release(kernel: &KernelSplice, spliced: Spliced) {
    for key in &spliced.keys {
        kernel.remove(key);
    }
    drop(spliced.reserved);
    drop(spliced.client_socket);
}

/// The idle timeout: forgets the flow, then sends each peer a FIN as if the
/// other peer had closed. Nothing is in flight on a flow idle that long, so
/// each FIN carries exactly the sequence number its peer expects next (the
/// last acknowledgement it sent), acknowledges all it sent, offers the other
/// peer's last window and carries the last timestamp it saw through the
/// splice (PAWS accepts an equal one). What a peer sends afterwards (its ACK
/// of the FIN, its own FIN, data) meets the node's stack, which has no socket
/// for it and answers with a RST: the peer's socket has read end-of-file
/// first, and a peer that writes after it learns the connection is gone, as
/// a userspace path's closed socket would tell it. (A FIN kept flowing
/// through the splice would let a half-close-aware peer's later bytes be
/// acknowledged by a receiver that already took the FIN, and lost.)
fn end_with_fins(kernel: &KernelSplice, spliced: Spliced) -> Transfer {
    let (up, down) = (kernel.get(&spliced.keys[0]).unwrap_or_default(), kernel.get(&spliced.keys[1]).unwrap_or_default());
    let transfer = Transfer { client_to_backend: spliced.moved_up + up.bytes, backend_to_client: spliced.moved_down + down.bytes, end: End::Idle };
    let (client, client_local, backend, backend_local) = (spliced.client, spliced.client_local, spliced.backend, spliced.backend_local);
    release(kernel, spliced);
    // `to` is the entry of the peer the FIN goes to; `from` the other's, whose
    // segments (window, TSval) that peer last saw, translated.
    let fin = |local, peer, to: &gateway_common::FlowEntry, from: &gateway_common::FlowEntry| {
        let window = ((u64::from(from.peer_window) << (from.window_shift_in & 15)) >> (from.window_shift_out & 15)).min(0xffff) as u16;
        let timestamps = (to.ts_seen != 0).then(|| (from.peer_tsval.wrapping_add(from.tsval_delta), to.peer_tsval));
        send_fin(local, peer, to.last_ack, to.next_seq, window, timestamps)
    };
    if let Err(e) = fin(client_local, client, &up, &down) {
        tracing::warn!(%client, error = %e, "could not send the idle timeout's FIN to the client of a spliced flow");
    }
    if let Err(e) = fin(backend_local, backend, &down, &up) {
        tracing::warn!(%backend, error = %e, "could not send the idle timeout's FIN to the backend of a spliced flow");
    }
    transfer
}

/// Resets both peers, then forgets the flow.
fn end_with_resets(kernel: &KernelSplice, spliced: Spliced, end: End) -> Transfer {
    let (up, down) = (kernel.get(&spliced.keys[0]).unwrap_or_default(), kernel.get(&spliced.keys[1]).unwrap_or_default());
    let transfer = Transfer { client_to_backend: spliced.moved_up + up.bytes, backend_to_client: spliced.moved_down + down.bytes, end };
    let (client, client_local, backend, backend_local) = (spliced.client, spliced.client_local, spliced.backend, spliced.backend_local);
    // First the socket and the entries go, so that whatever the peers send
    // from now on meets the node's stack with no socket, which resets it too.
    release(kernel, spliced);
    if let Err(e) = send_reset(client_local, client, up.last_ack, up.next_seq) {
        tracing::warn!(%client, error = %e, "could not reset the client of a spliced flow");
    }
    if let Err(e) = send_reset(backend_local, backend, down.last_ack, down.next_seq) {
        tracing::warn!(%backend, error = %e, "could not reset the backend of a spliced flow");
    }
    transfer
}
