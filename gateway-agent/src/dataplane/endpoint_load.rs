//! How many connections this agent holds open to each backend endpoint, for
//! the LeastConnections pick and the per-endpoint gauge. A connection is
//! counted from the moment its endpoint is picked (so connections set up at
//! the same time spread out) until it ends, on whichever data path carries it.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct EndpointLoad {
    open: Mutex<HashMap<SocketAddr, u32>>,
}

impl EndpointLoad {
    /// Connections open to `endpoint` now.
    pub fn open(&self, endpoint: SocketAddr) -> u32 {
        self.open.lock().unwrap().get(&endpoint).copied().unwrap_or(0)
    }

    /// Every endpoint with an open connection.
    pub fn snapshot(&self) -> Vec<(SocketAddr, u32)> {
        let mut all: Vec<_> = self.open.lock().unwrap().iter().map(|(e, n)| (*e, *n)).collect();
        all.sort();
        all
    }

    /// Counts one connection to `endpoint` until the lease is dropped.
    pub fn lease(self: &Arc<Self>, endpoint: SocketAddr) -> LoadLease {
        *self.open.lock().unwrap().entry(endpoint).or_default() += 1;
        LoadLease { load: self.clone(), endpoint }
    }

    fn release(&self, endpoint: SocketAddr) {
        let mut open = self.open.lock().unwrap();
        if let Some(n) = open.get_mut(&endpoint) {
            *n -= 1;
            if *n == 0 {
                open.remove(&endpoint);
            }
        }
    }
}

/// One connection counted against one endpoint.
#[derive(Debug)]
pub struct LoadLease {
    load: Arc<EndpointLoad>,
    endpoint: SocketAddr,
}

impl LoadLease {
    /// The connection went to another endpoint (a retry after a failed connect).
    pub fn move_to(&mut self, endpoint: SocketAddr) {
        if endpoint != self.endpoint {
            *self.load.open.lock().unwrap().entry(endpoint).or_default() += 1;
            self.load.release(self.endpoint);
            self.endpoint = endpoint;
        }
    }
}

impl Drop for LoadLease {
    fn drop(&mut self) {
        self.load.release(self.endpoint);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_counts_its_connection_against_the_endpoint_it_ends_on_until_dropped() {
        let load = Arc::new(EndpointLoad::default());
        let (a, b): (SocketAddr, SocketAddr) = ("198.18.2.2:3000".parse().unwrap(), "198.18.3.2:3000".parse().unwrap());
        let first = load.lease(a);
        let mut second = load.lease(a);
        assert_eq!(load.open(a), 2);
        second.move_to(b);
        assert_eq!((load.open(a), load.open(b)), (1, 1));
        drop(first);
        drop(second);
        assert_eq!((load.open(a), load.open(b)), (0, 0));
        assert!(load.snapshot().is_empty(), "endpoints without connections are forgotten");
    }
}
