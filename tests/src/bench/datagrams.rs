//! The datagram-rate workloads: echoed datagrams per second at one payload
//! size through a contender to the backend's UDP echo server (`udp_echo`),
//! every answer checked, and the whole machine's CPU time per million.
//!
//! `FLOWS` client sockets (each a flow: its own source port, so its own NAT
//! entry, relay socket or nginx session), each keeping at most `WINDOW`
//! datagrams unanswered: a bounded load, so that the figure is the rate a
//! forwarder sustains, not how much of a flood it drops. Every datagram is
//! unique (its flow, its sequence number, then bytes that depend on both), and
//! every answer must be exactly the datagram sent: one that differs, comes
//! twice or was never sent is a wrong answer, and any wrong answer fails the
//! sample (byte integrity is not traded for a rate). A datagram not answered
//! within `GIVE_UP` is counted unanswered (its own figure, never hidden in
//! the rate), and one answered after that as late.
use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::procfs::CpuTimes;
use crate::netns::NetNs;

/// Client sockets, each a flow of its own through the forwarder.
pub const FLOWS: usize = 4;
/// Datagrams each flow keeps unanswered at most (64 in all: well inside every
/// socket buffer on the way, so none has to be dropped).
pub const WINDOW: usize = 16;
/// How long an answer may take before its datagram counts as unanswered.
pub const GIVE_UP: Duration = Duration::from_millis(250);
/// Flow number and sequence number ahead of the payload.
const HEADER: usize = 12;
/// Sequence numbers of the warm-up datagrams (one flow's first datagram sets its flow up in the
/// forwarder and is not measured): their answers are checked too, then left out of the counts.
const WARM_UP: u64 = 1 << 63;
/// The payload is a window into a pattern this much longer than it, at an offset that depends on the sequence number.
const SPREAD: usize = 4096;

/// What became of the datagrams of one sample.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub sent: u64,
    /// Answered in time, byte for byte.
    pub answered: u64,
    /// Not answered within `GIVE_UP` (the late ones included).
    pub unanswered: u64,
    /// Answered, correctly, after `GIVE_UP`.
    pub late: u64,
    /// Wrong answers: a datagram whose answer differed from it (length or any byte).
    pub corrupted: u64,
    /// Wrong answers: a second answer for one datagram.
    pub duplicated: u64,
    /// Wrong answers: one naming another flow or a datagram never sent.
    pub foreign: u64,
    /// Sends the kernel refused (a full buffer, or an ICMP error of the forwarder's pending on the socket).
    pub send_errors: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.sent += o.sent;
        self.answered += o.answered;
        self.unanswered += o.unanswered;
        self.late += o.late;
        self.corrupted += o.corrupted;
        self.duplicated += o.duplicated;
        self.foreign += o.foreign;
        self.send_errors += o.send_errors;
    }

    pub fn wrong(&self) -> u64 {
        self.corrupted + self.duplicated + self.foreign
    }
}

pub struct DatagramRate {
    /// Datagrams answered per second (each crossed the forwarder there and back).
    pub per_second: f64,
    /// Of those sent, the share not answered in time, in percent.
    pub unanswered_percent: f64,
    /// Whole-machine busy CPU seconds per million answered datagrams.
    pub cpu_per_million: f64,
    pub counts: Counts,
}

/// `seconds` of datagrams of `size` bytes from `client` to `target`.
pub fn rate(client: &NetNs, target: SocketAddr, size: usize, seconds: f64) -> Result<DatagramRate> {
    anyhow::ensure!(size >= HEADER + 1, "datagrams of {size} bytes cannot carry their header");
    let sockets = (0..FLOWS)
        .map(|_| {
            client.enter(move || -> std::io::Result<UdpSocket> {
                let s = UdpSocket::bind("0.0.0.0:0")?;
                s.connect(target)?;
                // Short, so the loop gives up on old datagrams and sees its deadline on time.
                s.set_read_timeout(Some(Duration::from_millis(2)))?;
                Ok(s)
            })
        })
        .map(|entered| anyhow::Ok(entered??))
        .collect::<Result<Vec<_>>>()
        .context("client sockets")?;
    let duration = Duration::from_secs_f64(seconds);
    let start = Arc::new(Barrier::new(FLOWS + 1));
    let flows: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, socket)| {
            let start = start.clone();
            std::thread::spawn(move || Flow::new(socket, i as u32, size).run(&start, duration))
        })
        .collect();
    // Every flow has had its warm-up answered (or given up) when all meet here.
    start.wait();
    let cpu_before = CpuTimes::now()?;
    std::thread::sleep(duration);
    let cpu = CpuTimes::now()?.since(&cpu_before).busy;
    let mut counts = Counts::default();
    let mut in_window = 0u64;
    let mut problems = Vec::new();
    for (i, f) in flows.into_iter().enumerate() {
        match f.join() {
            Ok(Ok(o)) => {
                counts.add(&o.counts);
                in_window += o.answered_in_window;
            }
            Ok(Err(e)) => problems.push(format!("flow {i}: {e:#}")),
            Err(_) => problems.push(format!("flow {i}: its thread panicked")),
        }
    }
    eprintln!(
        "      {size} B: {} sent, {} answered, {} unanswered ({} of them late), wrong answers: {} differing, {} twice, {} foreign; {} sends refused",
        counts.sent, counts.answered, counts.unanswered, counts.late, counts.corrupted, counts.duplicated, counts.foreign, counts.send_errors
    );
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    if counts.wrong() > 0 {
        bail!(
            "{} wrong answers of {} datagrams sent ({} differing from the datagram, {} answered twice, {} naming another flow or a datagram never sent)",
            counts.wrong(),
            counts.sent,
            counts.corrupted,
            counts.duplicated,
            counts.foreign
        );
    }
    if in_window == 0 {
        bail!("no datagram answered in {seconds} s ({} sent, {} send errors)", counts.sent, counts.send_errors);
    }
    Ok(DatagramRate {
        per_second: in_window as f64 / duration.as_secs_f64(),
        unanswered_percent: 100.0 * counts.unanswered as f64 / counts.sent.max(1) as f64,
        cpu_per_million: cpu / (in_window as f64 / 1e6),
        counts,
    })
}

struct FlowOutcome {
    counts: Counts,
    /// Answered before the deadline (the rate's numerator; answers while draining count only in `counts`).
    answered_in_window: u64,
}

/// One client socket and what it has sent.
struct Flow {
    socket: UdpSocket,
    id: u32,
    size: usize,
    /// The flow's pattern; datagram `seq` carries the window of it at `offset(seq)`.
    pattern: Vec<u8>,
    /// Unanswered datagrams by sequence number (so in send order: the first is the oldest) and when each was sent.
    outstanding: BTreeMap<u64, Instant>,
    /// Given up on; an answer for one of these is late, not foreign.
    given_up: HashSet<u64>,
    next: u64,
    counts: Counts,
}

impl Flow {
    fn new(socket: UdpSocket, id: u32, size: usize) -> Flow {
        let pattern = crate::integrity::pattern(0x5547_0000 + u64::from(id), SPREAD + size);
        Flow {
            socket,
            id,
            size,
            pattern,
            outstanding: BTreeMap::new(),
            given_up: HashSet::new(),
            next: 0,
            counts: Counts::default(),
        }
    }

    fn offset(seq: u64) -> usize {
        // SplitMix64's finalizer: neighbouring sequence numbers land far apart.
        let mut z = seq.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % SPREAD as u64) as usize
    }

    fn datagram(&self, seq: u64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
        let off = Flow::offset(seq);
        out.extend_from_slice(&self.pattern[off..off + self.size - HEADER]);
    }

    /// Whether `answer` is exactly datagram `seq` of this flow.
    fn is_datagram(&self, seq: u64, answer: &[u8]) -> bool {
        let off = Flow::offset(seq);
        answer.len() == self.size && answer[HEADER..] == self.pattern[off..off + self.size - HEADER]
    }

    fn run(mut self, start: &Barrier, duration: Duration) -> Result<FlowOutcome> {
        let warmed = self.warm_up();
        // Meet the others even when this flow failed, or they would wait forever.
        start.wait();
        warmed?;
        let deadline = Instant::now() + duration;
        let mut buf = vec![0u8; 65_535];
        let mut datagram = Vec::with_capacity(self.size);
        let mut in_window = None;
        loop {
            let now = Instant::now();
            if now < deadline {
                while self.outstanding.len() < WINDOW {
                    self.datagram(self.next, &mut datagram);
                    match self.socket.send(&datagram) {
                        Ok(_) => {
                            self.outstanding.insert(self.next, now);
                            self.next += 1;
                            self.counts.sent += 1;
                        }
                        Err(_) => {
                            // Tried again after the next wait; the datagram was not sent, so not counted.
                            self.counts.send_errors += 1;
                            break;
                        }
                    }
                }
            } else {
                in_window.get_or_insert(self.counts.answered);
                if self.outstanding.is_empty() || now > deadline + GIVE_UP {
                    break;
                }
            }
            while let Some((&seq, &sent)) = self.outstanding.first_key_value() {
                if now.duration_since(sent) < GIVE_UP {
                    break;
                }
                self.outstanding.remove(&seq);
                self.given_up.insert(seq);
                self.counts.unanswered += 1;
            }
            match self.socket.recv(&mut buf) {
                Ok(n) => self.answer(&buf[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                // An ICMP error (port unreachable) for an earlier datagram: that datagram stays unanswered.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e).context("receiving"),
            }
        }
        self.counts.unanswered += self.outstanding.len() as u64;
        Ok(FlowOutcome {
            counts: self.counts,
            answered_in_window: in_window.unwrap_or(self.counts.answered),
        })
    }

    /// Sends warm-up datagrams (a new one every 100 ms) until one is answered, for up to 5 s.
    fn warm_up(&mut self) -> Result<()> {
        let mut buf = vec![0u8; 65_535];
        let mut datagram = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        for attempt in 0.. {
            if Instant::now() > deadline {
                bail!("no answer to this flow's first datagrams within 5 s");
            }
            self.datagram(WARM_UP | attempt, &mut datagram);
            let _ = self.socket.send(&datagram);
            let until = Instant::now() + Duration::from_millis(100);
            while Instant::now() < until {
                match self.socket.recv(&mut buf) {
                    Ok(n) => {
                        let answer = &buf[..n];
                        match Flow::header(answer) {
                            Some((id, seq)) if id == self.id && seq & WARM_UP != 0 && self.is_datagram(seq, answer) => return Ok(()),
                            _ => bail!("a wrong answer to a warm-up datagram ({n} bytes)"),
                        }
                    }
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::ConnectionRefused) => {}
                    Err(e) => return Err(e).context("receiving"),
                }
            }
        }
        unreachable!()
    }

    fn header(answer: &[u8]) -> Option<(u32, u64)> {
        if answer.len() < HEADER {
            return None;
        }
        Some((u32::from_be_bytes(answer[..4].try_into().ok()?), u64::from_be_bytes(answer[4..12].try_into().ok()?)))
    }

    fn answer(&mut self, answer: &[u8]) {
        let Some((id, seq)) = Flow::header(answer) else {
            self.counts.foreign += 1;
            return;
        };
        if id != self.id {
            self.counts.foreign += 1;
        } else if seq & WARM_UP != 0 {
            // A warm-up datagram answered late (the flow retried it): still checked, not counted.
            if !self.is_datagram(seq, answer) {
                self.counts.corrupted += 1;
            }
        } else if self.outstanding.remove(&seq).is_some() {
            if self.is_datagram(seq, answer) {
                self.counts.answered += 1;
            } else {
                self.counts.corrupted += 1;
            }
        } else if self.given_up.remove(&seq) {
            if self.is_datagram(seq, answer) {
                self.counts.late += 1;
            } else {
                self.counts.corrupted += 1;
            }
        } else if seq < self.next {
            self.counts.duplicated += 1;
        } else {
            self.counts.foreign += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flow with datagrams 0..n outstanding (its socket is never used here).
    fn flow_with(n: u64, size: usize) -> Flow {
        let mut f = Flow::new(UdpSocket::bind("127.0.0.1:0").unwrap(), 3, size);
        for seq in 0..n {
            f.outstanding.insert(seq, Instant::now());
        }
        f.next = n;
        f
    }

    fn datagram(f: &Flow, seq: u64) -> Vec<u8> {
        let mut d = Vec::new();
        f.datagram(seq, &mut d);
        d
    }

    #[test]
    fn every_kind_of_wrong_answer_is_counted_and_only_an_exact_echo_is_answered() {
        for size in [64, 512, 1400] {
            let mut f = flow_with(6, size);
            f.answer(&datagram(&f, 0));
            let mut flipped = datagram(&f, 1);
            flipped[size - 1] ^= 1;
            f.answer(&flipped);
            let short = datagram(&f, 2);
            f.answer(&short[..size - 1]);
            // Datagram 3's header with datagram 4's bytes: the payload depends on the sequence number.
            let mut swapped = datagram(&f, 4);
            swapped[4..12].copy_from_slice(&3u64.to_be_bytes());
            f.answer(&swapped);
            f.answer(&datagram(&f, 0));
            let mut other_flow = datagram(&f, 5);
            other_flow[..4].copy_from_slice(&9u32.to_be_bytes());
            f.answer(&other_flow);
            f.answer(&datagram(&f, 99));
            f.answer(b"short");
            let c = f.counts;
            assert_eq!((c.answered, c.corrupted, c.duplicated, c.foreign), (1, 3, 1, 3), "{size} B: {c:?}");
        }
    }

    #[test]
    fn an_answer_after_giving_up_is_late_and_a_warm_up_answer_is_not_counted() {
        let mut f = flow_with(1, 64);
        f.outstanding.remove(&0);
        f.given_up.insert(0);
        f.answer(&datagram(&f, 0));
        f.answer(&datagram(&f, WARM_UP | 2));
        let c = f.counts;
        assert_eq!((c.answered, c.late, c.wrong()), (0, 1, 0), "{c:?}");
    }
}
