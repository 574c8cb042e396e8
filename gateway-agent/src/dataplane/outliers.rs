//! Outlier ejection: an endpoint that fails to connect N times in a row gets
//! no new connections for a while (a restarted pod stops receiving them at
//! once, instead of after minutes of timeouts).
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::model::config::OutlierConfig;

#[derive(Debug, Default)]
pub struct Outliers {
    failures: BTreeMap<SocketAddr, u32>,
    ejected_until: BTreeMap<SocketAddr, Instant>,
}

impl Outliers {
    /// Endpoints ejected at `now`.
    pub fn ejected(&mut self, now: Instant) -> BTreeSet<SocketAddr> {
        self.ejected_until.retain(|_, until| *until > now);
        self.ejected_until.keys().copied().collect()
    }

    /// Records a failed connect; true when it ejects the endpoint now.
    pub fn failed(&mut self, endpoint: SocketAddr, policy: OutlierConfig, now: Instant) -> bool {
        let count = self.failures.entry(endpoint).or_default();
        *count += 1;
        if *count >= policy.consecutive_failures {
            self.failures.remove(&endpoint);
            self.ejected_until.insert(endpoint, now + policy.ejection);
            return true;
        }
        false
    }

    pub fn succeeded(&mut self, endpoint: SocketAddr) {
        self.failures.remove(&endpoint);
    }

    /// How long until `endpoint` is back, if it is ejected.
    pub fn remaining(&self, endpoint: SocketAddr, now: Instant) -> Option<Duration> {
        self.ejected_until.get(&endpoint).and_then(|until| until.checked_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_is_ejected_after_n_consecutive_failures_and_returns_after_the_ejection_time() {
        let policy = OutlierConfig { consecutive_failures: 2, ejection: Duration::from_secs(10) };
        let (a, b): (SocketAddr, SocketAddr) = ("198.18.2.2:1".parse().unwrap(), "198.18.3.2:1".parse().unwrap());
        let mut o = Outliers::default();
        let t0 = Instant::now();
        assert!(!o.failed(a, policy, t0));
        o.succeeded(a);
        assert!(!o.failed(a, policy, t0), "a success in between starts the count again");
        assert!(o.failed(a, policy, t0));
        assert!(!o.failed(b, policy, t0));
        assert_eq!(o.ejected(t0 + Duration::from_secs(9)), [a].into());
        assert_eq!(o.remaining(a, t0 + Duration::from_secs(9)), Some(Duration::from_secs(1)));
        assert!(o.ejected(t0 + Duration::from_secs(10)).is_empty(), "back after the ejection time");
    }
}
