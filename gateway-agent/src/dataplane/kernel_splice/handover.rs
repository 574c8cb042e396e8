//! Moving an established pair of connections into the kernel.
//!
//! # The protocol: who owns which bytes when
//!
//! The translation the TC program applies is valid for the whole stream
//! (see [`translation`](super::translation)), so the only question is who
//! delivers each byte, and the answer is one rule: **the gateway owns every
//! byte it has acknowledged to one peer until the other peer has acknowledged
//! it; the splice owns everything else.** The switch is allowed only when
//! the gateway owns nothing: both receive queues read, nothing held in
//! userspace, everything written acknowledged. Everything the peers send
//! after the switch, and their retransmissions of anything older, is the
//! splice's to carry. (Leaving bytes in flight to the silent socket's own
//! retransmission timer was tried: a transfer stalled for good with 9 such
//! bytes never acknowledged, so the rule stays strict.)
//!
//! 1. **Record.** Both legs get a `FLOW_RECORD` entry: segments still reach the
//!    sockets, and the program notes each peer's last TSval and the interface
//!    its segments arrive on. A window probe on each socket makes both peers
//!    answer at once, so both are known after one round trip.
//! 2. **Quiet switch.** While the peers talk, the agent keeps moving their
//!    bytes (read, write) and waits for a moment when nothing is owed either
//!    way. Request/response and idle connections reach one within a round trip.
//! 3. **Hold** (also the last instant of a quiet switch). The entries go to
//!    `FLOW_HOLD`: every segment the gateway's sockets send now advertises a
//!    zero window (the TC egress program rewrites it), so the peers stop
//!    sending new data; what they sent before they saw it still reaches the
//!    sockets, and the gateway delivers it. Nothing is dropped, so nothing
//!    waits for a retransmission. The gateway sends what it holds as the
//!    peers' acknowledgements open their windows. What was dropped, the peers retransmit into the
//!    splice (a busy sender has many segments in flight: its loss probe or
//!    SACK recovery resends them without a retransmission timeout).
//! 4. **Switch.** When nothing is owed, the entries go to `FLOW_FREEZE`:
//!    the program now drops any segment carrying data, SYN or FIN (a zero
//!    window does not stop what a peer sent before it saw it, and a byte a
//!    socket took now would be acknowledged and never delivered: seen, 8
//!    bytes lost in 1 of 300 quiet handovers). The peer retransmits a
//!    dropped segment into the splice. One more look at the queues is now
//!    final (anything that arrived before the freeze goes back to the hold
//!    and is delivered). Both sockets enter repair mode (their close will
//!    send nothing), their sequence numbers and timestamp clocks are read,
//!    and both entries become `FLOW_SPLICED` with the translation computed
//!    from them. A socket that left ESTABLISHED meanwhile (a RST passes the
//!    freeze) undoes the switch. Each peer is then sent one ACK with the
//!    other peer's last window (the zero window would otherwise keep it
//!    waiting for its persist timer).
//! 5. **Silence.** No segment reaches the sockets any more, their queues
//!    are empty, and they are in repair mode: closing one sends nothing. The
//!    client socket is closed at the first look at the flow (nothing is in
//!    flight on it). The backend socket stays open to keep its 4-tuple
//!    reserved, so no other connect reuses it: one descriptor per flow.
//!
//! A peer's FIN or RST seen before the switch, a queue that will not empty
//! within [`DRAIN_LIMIT`], or a leg the program does not see: the entries go,
//! repair mode is left without a probe, and the pair continues on splice(2)
//! with whatever bytes the handover held (nothing lost, nothing doubled).
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use gateway_common::{FlowEntry, FlowKey, FLOW_FREEZE, FLOW_HOLD, FLOW_RECORD};

use super::tcp_state::{self, TcpInfo};
use super::translation::{self, Leg, Refusal};
use super::{monotonic_ns, KernelSplice};
use crate::dataplane::path::{Carried, Control};

/// How long the handover waits for a quiet moment before holding the peers back.
pub const QUIET_WAIT: Duration = Duration::from_millis(20);
/// How long the queues may take to empty once the peers are held back.
pub const DRAIN_LIMIT: Duration = Duration::from_millis(500);
/// How often a stalled drain prompts the peers to acknowledge again (they
/// rate-limit their answers to 2 a second).
const PROMPT_EVERY: Duration = Duration::from_millis(100);

/// A pair the kernel now carries.
pub struct Spliced {
    pub keys: [FlowKey; 2],
    /// The backend socket, in repair mode: it reserves the backend leg's
    /// 4-tuple and sends nothing; closing it sends nothing either. (For a
    /// connection inherited from an earlier agent: a socket bound to the
    /// leg's local address, which keeps connect(2) off its port; or none.)
    pub reserved: Option<std::os::fd::OwnedFd>,
    pub client: SocketAddr,
    pub client_local: SocketAddr,
    pub backend: SocketAddr,
    pub backend_local: SocketAddr,
    /// Bytes the handover itself moved each way (before the kernel took over).
    pub moved_up: u64,
    pub moved_down: u64,
    /// Whether the peers had to be held back (no quiet moment came).
    pub held: bool,
    /// The client socket (in repair mode) while the client has not yet
    /// acknowledged everything it sent; and the sequence number that does.
    pub client_socket: Option<TcpStream>,
    pub client_acked_at: u32,
}

/// A pair the kernel could not take, handed back intact.
pub struct Refused {
    pub reason: Refusal,
    pub detail: String,
    pub client: TcpStream,
    pub backend: TcpStream,
    pub up: Carried,
    pub down: Carried,
    pub moved_up: u64,
    pub moved_down: u64,
    /// A peer reset during the handover: the error was read here, so the
    /// caller must reset the other side itself (a later read says only EOF).
    pub peer_reset: bool,
}

struct Pair {
    client: TcpStream,
    backend: TcpStream,
    up: Vec<u8>,
    down: Vec<u8>,
    moved_up: u64,
    moved_down: u64,
}

pub async fn hand_over(kernel: &KernelSplice, client: TcpStream, backend: TcpStream, up: Carried, down: Carried, control: &Control) -> Result<Spliced, Refused> {
    let mut pair = Pair { client, backend, up: up.pending, down: down.pending, moved_up: 0, moved_down: 0 };
    if up.done || down.done {
        return Err(pair.refuse(Refusal::Closing, "a direction already ended before the handover".into(), up.done, down.done));
    }
    let addresses = (pair.client.local_addr(), pair.client.peer_addr(), pair.backend.local_addr(), pair.backend.peer_addr());
    let (Ok(client_local), Ok(client_peer), Ok(backend_local), Ok(backend_peer)) = addresses else {
        return Err(pair.refuse(Refusal::SocketError, "a socket has no address (already reset?)".into(), false, false));
    };
    let infos = (tcp_state::tcp_info(&pair.client), tcp_state::tcp_info(&pair.backend));
    let (Ok(client_info), Ok(backend_info)) = infos else {
        return Err(pair.refuse(Refusal::SocketError, "TCP_INFO failed".into(), false, false));
    };
    if let Err(reason) = translation::eligible(client_local, client_peer, backend_local, backend_peer, &client_info, &backend_info) {
        return Err(pair.refuse(reason, String::new(), false, false));
    }
    let keys = [translation::key(client_peer, client_local), translation::key(backend_peer, backend_local)];
    let listener_port = client_local.port();
    let entry = |state| FlowEntry { state, listener_port: u32::from(listener_port), ..FlowEntry::default() };
    for key in &keys {
        if kernel.set(key, &entry(FLOW_RECORD)).is_err() {
            kernel.remove(&keys[0]);
            return Err(pair.refuse(Refusal::MapFull, String::new(), false, false));
        }
    }
    let addresses = [(client_local, client_peer), (backend_local, backend_peer)];
    let result = switch(kernel, &mut pair, keys, addresses, [client_info, backend_info], control).await;
    match result {
        Ok((held, client_acked_at)) => {
            let Pair { client, backend, moved_up, moved_down, .. } = pair;
            Ok(Spliced {
                client_socket: Some(client),
                client_acked_at,
                keys,
                reserved: backend.into_std().ok().map(std::os::fd::OwnedFd::from),
                client: client_peer,
                client_local,
                backend: backend_peer,
                backend_local,
                moved_up,
                moved_down,
                held,
            })
        }
        Err((reason, detail, eof_up, eof_down)) => {
            for key in &keys {
                kernel.remove(key);
            }
            let _ = tcp_state::repair_off_quietly(&pair.client);
            let _ = tcp_state::repair_off_quietly(&pair.backend);
            // A FIN the handover read is not passed on yet: splice(2) reads
            // the end-of-stream again (a read after it returns 0 again) and passes it.
            let _ = (eof_up, eof_down);
            Err(pair.refuse(reason, detail, false, false))
        }
    }
}

type Failure = (Refusal, String, bool, bool);

const RESET_DURING_HANDOVER: &str = "a peer reset during the handover";

/// Steps 1–4; Ok(whether the peers were held back, the client leg's write_seq).
async fn switch(kernel: &KernelSplice, pair: &mut Pair, keys: [FlowKey; 2], addresses: [(SocketAddr, SocketAddr); 2], infos: [TcpInfo; 2], control: &Control) -> Result<(bool, u32), Failure> {
    let io_error = |what: &str, e: io::Error| (Refusal::SocketError, format!("{what}: {e}"), false, false);
    tcp_state::prompt_ack(&pair.client).map_err(|e| io_error("prompting the client", e))?;
    tcp_state::prompt_ack(&pair.backend).map_err(|e| io_error("prompting the backend", e))?;
    let started = Instant::now();
    let mut held = false;
    let mut last_prompt = Instant::now();
    loop {
        pair.move_bytes(control)?;
        if pair.quiet().map_err(|e| io_error("reading queue lengths", e))? && samples_ready(kernel, &keys, infos[0].timestamps) {
            // The freeze makes the check final: from the moment its entries
            // are in, no new byte can reach the sockets (a zero window does
            // not stop what a peer sent before it saw it).
            set_state(kernel, &keys, FLOW_FREEZE)?;
            pair.move_bytes(control)?;
            if !pair.quiet().map_err(|e| io_error("reading queue lengths", e))? {
                // A segment passed just before the freeze: deliver it under the hold.
                set_state(kernel, &keys, FLOW_HOLD)?;
                if !held {
                    held = true;
                    kernel.held_handovers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                continue;
            }
            if !held {
                kernel.quiet_handovers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let client_write_seq = splice_now(kernel, pair, keys, addresses, infos).map_err(|(reason, detail)| (reason, detail, false, false))?;
            return Ok((held, client_write_seq));
        }
        let waited = started.elapsed();
        if !held && waited >= QUIET_WAIT {
            held = true;
            kernel.held_handovers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            set_state(kernel, &keys, FLOW_HOLD)?;
        }
        if waited >= QUIET_WAIT + DRAIN_LIMIT {
            return Err((Refusal::Busy, format!("queues still not empty after {waited:?}: {}", pair.describe(kernel, &keys, infos[0].timestamps)), false, false));
        }
        if control.stop.is_cancelled() || control.pause.is_cancelled() || control.close.is_cancelled() {
            return Err((Refusal::Closing, "the connection was stopped during its handover".into(), false, false));
        }
        // Delivered everything and waiting for acknowledgements: ask for them.
        if pair.up.is_empty() && pair.down.is_empty() && last_prompt.elapsed() >= PROMPT_EVERY {
            let _ = tcp_state::prompt_ack(&pair.client);
            let _ = tcp_state::prompt_ack(&pair.backend);
            last_prompt = Instant::now();
        }
        tokio::select! {
            _ = pair.client.readable() => {}
            _ = pair.backend.readable() => {}
            _ = tokio::time::sleep(Duration::from_micros(200)) => {}
        }
    }
}

/// Steps 3 and 4: the entries go to FLOW_HOLD or FLOW_FREEZE, keeping what
/// the program recorded.
fn set_state(kernel: &KernelSplice, keys: &[FlowKey; 2], state: u32) -> Result<(), Failure> {
    for key in keys {
        let mut entry = kernel.get(key).unwrap_or_default();
        entry.state = state;
        kernel.set(key, &entry).map_err(|e| (Refusal::MapFull, format!("{e:#}"), false, false))?;
    }
    Ok(())
}

/// Step 4, with every queue empty and the peers held back (or quiet).
fn splice_now(kernel: &KernelSplice, pair: &Pair, keys: [FlowKey; 2], addresses: [(SocketAddr, SocketAddr); 2], infos: [TcpInfo; 2]) -> Result<u32, (Refusal, String)> {
    let io_error = |what: &str, e: io::Error| (Refusal::SocketError, format!("{what}: {e}"));
    tcp_state::repair_on(&pair.client).map_err(|e| io_error("TCP_REPAIR on the client socket", e))?;
    tcp_state::repair_on(&pair.backend).map_err(|e| io_error("TCP_REPAIR on the backend socket", e))?;
    let client_seq = tcp_state::sequences(&pair.client).map_err(|e| io_error("client sequence numbers", e))?;
    let backend_seq = tcp_state::sequences(&pair.backend).map_err(|e| io_error("backend sequence numbers", e))?;
    if !pair.quiet().map_err(|e| io_error("queue lengths", e))? {
        return Err((Refusal::Busy, "a queue refilled at the switch".into()));
    }
    let recorded = |key: &FlowKey| kernel.get(key).unwrap_or_default();
    let (client_rec, backend_rec) = (recorded(&keys[0]), recorded(&keys[1]));
    // The addresses read at the start: a socket reset since then has none.
    let leg = |(local, peer): (SocketAddr, SocketAddr), info: TcpInfo, seq, rec: FlowEntry| Leg {
        local,
        peer,
        info,
        seq,
        peer_tsval: (rec.ts_seen != 0).then_some(rec.peer_tsval),
        ifindex: rec.in_ifindex,
    };
    let client = leg(addresses[0], infos[0], client_seq, client_rec);
    let backend = leg(addresses[1], infos[1], backend_seq, backend_rec);
    let [(_, mut up), (_, mut down)] = translation::entries(&client, &backend, client.local.port(), monotonic_ns()).map_err(|r| (r, String::new()))?;
    // What a reset toward each peer must carry, until their segments update it.
    (up.next_seq, up.last_ack) = (client_seq.rcv_nxt, client_seq.write_seq);
    (down.next_seq, down.last_ack) = (backend_seq.rcv_nxt, backend_seq.write_seq);
    // Counters the program kept during the handover carry on.
    (up.held_segments, down.held_segments) = (client_rec.held_segments, backend_rec.held_segments);
    (up.frozen_drops, down.frozen_drops) = (client_rec.frozen_drops, backend_rec.frozen_drops);
    // The backend leg first: a client segment spliced before it would draw an
    // answer the backend entry must already translate.
    kernel.set(&keys[1], &down).map_err(|e| (Refusal::MapFull, format!("{e:#}")))?;
    kernel.set(&keys[0], &up).map_err(|e| (Refusal::MapFull, format!("{e:#}")))?;
    // The freeze admits nothing; a socket whose receive sequence moved anyway
    // (a segment between the program's verdict and the socket as the freeze
    // went in) holds bytes this translation skips: back to splice(2), which
    // delivers them.
    for (stream, seq, side) in [(&pair.client, client_seq, "client"), (&pair.backend, backend_seq, "backend")] {
        if tcp_state::sequences(stream).ok().map(|now| now.rcv_nxt) != Some(seq.rcv_nxt) {
            return Err((Refusal::Busy, format!("a segment reached the {side} socket at the switch")));
        }
    }
    // A FIN or RST that reached a socket after the last read but before
    // these entries: the splice would carry a pair with one end gone and the
    // other peer would wait for ever. From here on both pass through the
    // splice, so this look is final. The caller removes the entries; a FIN
    // is then read and passed on by splice(2), a reset is passed on as one.
    for (stream, side) in [(&pair.client, "client"), (&pair.backend, "backend")] {
        match tcp_state::tcp_info(stream).map(|i| i.state) {
            Ok(tcp_state::TCP_ESTABLISHED) => {}
            Ok(tcp_state::TCP_CLOSE_WAIT) => return Err((Refusal::Closing, format!("the {side} ended its direction just before the switch"))),
            state => return Err((Refusal::Closing, format!("{RESET_DURING_HANDOVER}: the {side} socket closed just before the switch ({state:?})"))),
        }
    }
    // No keepalive probe may leave a socket the kernel splice speaks for (a
    // refusal before this point returns the pair to splice(2) with its
    // keepalive still on). The splice's idle timeout takes its place.
    for (stream, side) in [(&pair.client, "client"), (&pair.backend, "backend")] {
        if let Err(e) = crate::dataplane::sockets::stop_keepalive(stream) {
            tracing::warn!(side, error = %e, "could not turn keepalive off on a spliced socket; a probe after its idle time would reach a peer the splice speaks for");
        }
    }
    // The hold showed both peers a zero window: give each the other's real
    // one now, or a peer with nothing in flight would wait for its persist timer.
    for (leg, seq, rec, other, other_rec) in [(&client, client_seq, client_rec, &backend, backend_rec), (&backend, backend_seq, backend_rec, &client, client_rec)] {
        let window = ((u64::from(other_rec.peer_window) << other.info.snd_wscale) >> leg.info.rcv_wscale).min(0xffff) as u16;
        let timestamps = leg.info.timestamps.then_some((seq.ts_now, rec.peer_tsval));
        if let Err(e) = super::craft::send_window_update(leg.local, leg.peer, seq.write_seq, seq.rcv_nxt, window, timestamps) {
            tracing::warn!(peer = %leg.peer, error = %e, "could not send the window update after a handover; the peer resumes at its persist timer");
        }
    }
    Ok(client_seq.write_seq)
}

/// The program saw each leg's interface, and each peer's TSval when timestamps are on.
fn samples_ready(kernel: &KernelSplice, keys: &[FlowKey; 2], timestamps: bool) -> bool {
    keys.iter().all(|key| kernel.get(key).is_some_and(|e| e.in_ifindex != 0 && (!timestamps || e.ts_seen != 0)))
}

impl Pair {
    /// Reads what arrived and writes what is owed, both ways, without waiting.
    fn move_bytes(&mut self, control: &Control) -> Result<(), Failure> {
        let up = relay(&self.client, &self.backend, &mut self.up, &mut self.moved_up, control);
        let down = relay(&self.backend, &self.client, &mut self.down, &mut self.moved_down, control);
        match (up, down) {
            (Ok(false), Ok(false)) => Ok(()),
            (Ok(eof_up), Ok(eof_down)) => Err((Refusal::Closing, "a peer ended its direction during the handover".into(), eof_up, eof_down)),
            (Err(e), _) | (_, Err(e)) => Err((Refusal::Closing, format!("{RESET_DURING_HANDOVER}: {e}"), false, false)),
        }
    }

    /// Nothing owed either way: both receive queues read, nothing held here,
    /// everything written acknowledged.
    fn quiet(&self) -> io::Result<bool> {
        Ok(self.up.is_empty()
            && self.down.is_empty()
            && tcp_state::unread(&self.client)? == 0
            && tcp_state::unread(&self.backend)? == 0
            && tcp_state::unacked(&self.client)? == 0
            && tcp_state::unacked(&self.backend)? == 0)
    }

    /// What is still owed, for the log of a handover that gave up.
    fn describe(&self, kernel: &KernelSplice, keys: &[FlowKey; 2], timestamps: bool) -> String {
        let q = |f: fn(&TcpStream) -> io::Result<u32>, s: &TcpStream| f(s).map(|n| n.to_string()).unwrap_or_else(|e| e.to_string());
        format!(
            "held here {}/{} bytes (up/down), unread {}/{} (client/backend socket), unsent {}/{}, samples {}",
            self.up.len(),
            self.down.len(),
            q(|s| tcp_state::unread(s), &self.client),
            q(|s| tcp_state::unread(s), &self.backend),
            q(|s| tcp_state::unsent(s), &self.client),
            q(|s| tcp_state::unsent(s), &self.backend),
            samples_ready(kernel, keys, timestamps)
        )
    }

    /// `done_up`/`done_down`: that direction's FIN was already passed on
    /// (before the handover began); splice(2) must not pass it again.
    fn refuse(self, reason: Refusal, detail: String, done_up: bool, done_down: bool) -> Refused {
        let peer_reset = detail.starts_with(RESET_DURING_HANDOVER);
        Refused {
            peer_reset,
            reason,
            detail,
            client: self.client,
            backend: self.backend,
            up: Carried { pending: self.up, done: done_up },
            down: Carried { pending: self.down, done: done_down },
            moved_up: self.moved_up,
            moved_down: self.moved_down,
        }
    }
}

/// Moves what `from` has to `to`; Ok(true) at end-of-stream. Plain
/// non-blocking syscalls, not tokio's try_read/try_write: those answer
/// WouldBlock from tokio's readiness flags, which an edge consumed earlier
/// leaves clear while bytes wait in the socket (seen: a drain that never ended).
fn relay(from: &TcpStream, to: &TcpStream, pending: &mut Vec<u8>, moved: &mut u64, control: &Control) -> io::Result<bool> {
    let mut eof = false;
    // Read only while little is owed: the other side may be slow.
    let mut buffer = [0u8; 64 * 1024];
    while pending.len() < 1 << 20 {
        match raw_read(from, &mut buffer) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => pending.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    while !pending.is_empty() {
        match raw_write(to, pending) {
            Ok(n) => {
                pending.drain(..n);
                *moved += n as u64;
                control.activity.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(eof)
}

fn raw_read(from: &TcpStream, buffer: &mut [u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: reading into a buffer we own from a socket we own.
    let n = unsafe { libc::recv(from.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn raw_write(to: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: writing from a buffer we own to a socket we own.
    let n = unsafe { libc::send(to.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
