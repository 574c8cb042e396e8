//! Every connection the agent holds, for the two moments that concern all of
//! them at once: a drain (SIGTERM) and a handover to another agent.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::path::Paused;
use crate::resources::ObjectKey;

/// A connection paused for handover, with where it belongs.
pub struct PausedConnection {
    pub port: u16,
    pub route: ObjectKey,
    pub peer: SocketAddr,
    pub state: Paused,
}

#[derive(Default)]
pub struct Connections {
    /// Fired once for a handover: every forwarded connection pauses.
    pub pause: CancellationToken,
    /// Fired at a drain deadline: every connection is reset.
    pub abort: CancellationToken,
    /// Accepted and neither ended nor paused (in set-up or forwarding).
    in_flight: AtomicUsize,
    settled: Notify,
    paused: Mutex<Vec<PausedConnection>>,
}

/// Held by a connection's task for its whole life.
pub struct InFlight(Arc<Connections>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.settled.notify_waiters();
    }
}

impl Connections {
    pub fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Keeps a paused connection for the handover (before its task ends).
    pub fn park(&self, connection: PausedConnection) {
        self.paused.lock().unwrap().push(connection);
    }

    pub fn take_paused(&self) -> Vec<PausedConnection> {
        std::mem::take(&mut *self.paused.lock().unwrap())
    }

    /// Waits until no connection is in flight; false if `limit` passed first.
    pub async fn settle(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            // Registered before the check, so a task ending in between still wakes us.
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.in_flight() == 0;
            }
        }
    }
}
