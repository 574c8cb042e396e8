//! Picking a backend for a new connection, by weight.
//!
//! The first pick is a smooth weighted round-robin (nginx's algorithm): over
//! any run of picks as long as the sum of the weights, every backendRef gets
//! exactly its weight, interleaved rather than in bursts, so a 70/30 split is
//! 70/30 from the first hundred connections on, not only on average. It
//! decides between serving and resetting: a backendRef without endpoints keeps
//! its weight, so its share of connections is reset (the spec's rule for
//! invalid backends). Within a backendRef, endpoints take turns. Retries after
//! a failed connect go, at random by weight, to endpoints not yet tried.
use std::collections::BTreeSet;
use std::net::SocketAddr;

use rand::Rng;

use crate::model::config::BackendGroup;

#[derive(Debug, PartialEq, Eq)]
pub enum Pick {
    Endpoint(SocketAddr),
    /// Reset the client: the chosen share belongs to a backend that cannot serve.
    Reject,
}

/// The round-robin state of one listener's route.
#[derive(Debug, Default)]
pub struct Picker {
    /// Smooth WRR "current weight" of each backendRef.
    current: Vec<i64>,
    /// Next endpoint of each backendRef.
    next: Vec<usize>,
}

impl Picker {
    /// The first choice for a new connection.
    pub fn pick(&mut self, groups: &[BackendGroup]) -> Pick {
        if self.current.len() != groups.len() {
            *self = Picker { current: vec![0; groups.len()], next: vec![0; groups.len()] };
        }
        let total: i64 = groups.iter().map(|g| i64::from(g.weight)).sum();
        if total == 0 {
            return Pick::Reject;
        }
        let mut best = 0;
        for (i, g) in groups.iter().enumerate() {
            self.current[i] += i64::from(g.weight);
            if self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= total;
        let endpoints = &groups[best].endpoints;
        if endpoints.is_empty() {
            return Pick::Reject;
        }
        let endpoint = endpoints[self.next[best] % endpoints.len()];
        self.next[best] = self.next[best].wrapping_add(1);
        Pick::Endpoint(endpoint)
    }
}

/// A retry after `failed` endpoints refused or timed out: another endpoint,
/// chosen by weight among the groups that still have an untried one.
pub fn retry_pick(groups: &[BackendGroup], failed: &BTreeSet<SocketAddr>, rng: &mut impl Rng) -> Option<SocketAddr> {
    let has_untried = |g: &BackendGroup| g.endpoints.iter().any(|e| !failed.contains(e));
    let i = weighted(groups.iter().map(|g| if has_untried(g) { g.weight } else { 0 }), rng)?;
    pick_endpoint(&groups[i], failed, rng)
}

fn pick_endpoint(group: &BackendGroup, failed: &BTreeSet<SocketAddr>, rng: &mut impl Rng) -> Option<SocketAddr> {
    let untried: Vec<_> = group.endpoints.iter().filter(|e| !failed.contains(e)).collect();
    if untried.is_empty() {
        return None;
    }
    Some(*untried[rng.random_range(0..untried.len())])
}

/// Index chosen with probability weight/total; None when every weight is 0.
fn weighted(weights: impl Iterator<Item = u32> + Clone, rng: &mut impl Rng) -> Option<usize> {
    let total: u64 = weights.clone().map(u64::from).sum();
    if total == 0 {
        return None;
    }
    let mut ticket = rng.random_range(0..total);
    for (i, w) in weights.enumerate() {
        if ticket < u64::from(w) {
            return Some(i);
        }
        ticket -= u64::from(w);
    }
    unreachable!("ticket below the total weight")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    fn group(name: &str, weight: u32, endpoints: &[&str]) -> BackendGroup {
        BackendGroup { name: name.into(), weight, endpoints: endpoints.iter().map(|e| e.parse().unwrap()).collect(), ..Default::default() }
    }

    #[test]
    fn every_run_of_total_weight_picks_splits_exactly_by_weight_and_interleaved() {
        let groups = [group("a", 70, &["198.18.0.1:1"]), group("b", 30, &["198.18.0.2:1"])];
        let mut picker = Picker::default();
        for window in 0..5 {
            let a = (0..100).filter(|_| picker.pick(&groups) == Pick::Endpoint("198.18.0.1:1".parse().unwrap())).count();
            assert_eq!(a, 70, "window {window}");
        }
        // Interleaved: never more than 3 a's in a row for 7:3.
        let picks: Vec<bool> = (0..100).map(|_| picker.pick(&groups) == Pick::Endpoint("198.18.0.1:1".parse().unwrap())).collect();
        assert!(picks.windows(4).all(|w| !w.iter().all(|&a| a)), "{picks:?}");
    }

    #[test]
    fn an_endpointless_backend_gets_its_share_rejected() {
        let groups = [group("ok", 1, &["198.18.0.1:1"]), group("missing", 1, &[])];
        let mut picker = Picker::default();
        let rejected = (0..1000).filter(|_| picker.pick(&groups) == Pick::Reject).count();
        assert_eq!(rejected, 500);
    }

    #[test]
    fn weight_zero_gets_no_traffic_and_all_zero_rejects() {
        let mut picker = Picker::default();
        let groups = [group("zero", 0, &["198.18.0.9:1"]), group("one", 1, &["198.18.0.1:1"])];
        for _ in 0..1000 {
            assert_eq!(picker.pick(&groups), Pick::Endpoint("198.18.0.1:1".parse().unwrap()));
        }
        assert_eq!(Picker::default().pick(&[group("zero", 0, &["198.18.0.9:1"])]), Pick::Reject);
        assert_eq!(Picker::default().pick(&[]), Pick::Reject);
    }

    #[test]
    fn endpoints_of_a_backend_take_turns() {
        let groups = [group("a", 1, &["198.18.0.1:1", "198.18.0.2:1", "198.18.0.3:1"])];
        let mut picker = Picker::default();
        let picks: Vec<Pick> = (0..6).map(|_| picker.pick(&groups)).collect();
        assert_eq!(picks[0..3], picks[3..6]);
        assert_ne!(picks[0], picks[1]);
        assert_ne!(picks[1], picks[2]);
    }

    #[test]
    fn retries_skip_failed_endpoints_and_end_when_all_failed() {
        let mut rng = StdRng::seed_from_u64(5);
        let groups = [group("a", 1, &["198.18.0.1:1", "198.18.0.2:1"]), group("b", 1, &["198.18.0.3:1"])];
        let mut failed: BTreeSet<SocketAddr> = ["198.18.0.1:1".parse().unwrap()].into();
        for _ in 0..200 {
            let next = retry_pick(&groups, &failed, &mut rng).unwrap();
            assert!(!failed.contains(&next));
        }
        failed.insert("198.18.0.2:1".parse().unwrap());
        assert_eq!(retry_pick(&groups, &failed, &mut rng), Some("198.18.0.3:1".parse().unwrap()));
        failed.insert("198.18.0.3:1".parse().unwrap());
        assert_eq!(retry_pick(&groups, &failed, &mut rng), None);
    }
}
