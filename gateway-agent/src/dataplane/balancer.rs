//! Picking a backend for a new connection, by weight.
//!
//! The first pick decides between serving and resetting: a backendRef without
//! endpoints keeps its weight, so its share of connections is reset (the
//! spec's rule for invalid backends). Retries after a failed connect go to
//! endpoints not yet tried, among groups that still have one.
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

/// The first choice for a new connection.
pub fn first_pick(groups: &[BackendGroup], rng: &mut impl Rng) -> Pick {
    match weighted(groups.iter().map(|g| g.weight), rng) {
        Some(i) if !groups[i].endpoints.is_empty() => Pick::Endpoint(pick_endpoint(&groups[i], &BTreeSet::new(), rng).unwrap()),
        _ => Pick::Reject,
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
        BackendGroup { name: name.into(), weight, endpoints: endpoints.iter().map(|e| e.parse().unwrap()).collect() }
    }

    #[test]
    fn connections_split_in_proportion_to_weight() {
        let groups = [group("a", 3, &["198.18.0.1:1"]), group("b", 1, &["198.18.0.2:1"])];
        let mut rng = StdRng::seed_from_u64(7);
        let n = 40_000;
        let a = (0..n).filter(|_| first_pick(&groups, &mut rng) == Pick::Endpoint("198.18.0.1:1".parse().unwrap())).count();
        let share = a as f64 / n as f64;
        assert!((share - 0.75).abs() < 0.01, "share of a = {share}");
    }

    #[test]
    fn an_endpointless_backend_gets_its_share_rejected() {
        let groups = [group("ok", 1, &["198.18.0.1:1"]), group("missing", 1, &[])];
        let mut rng = StdRng::seed_from_u64(1);
        let n = 20_000;
        let rejected = (0..n).filter(|_| first_pick(&groups, &mut rng) == Pick::Reject).count();
        let share = rejected as f64 / n as f64;
        assert!((share - 0.5).abs() < 0.015, "rejected share = {share}");
    }

    #[test]
    fn weight_zero_gets_no_traffic_and_all_zero_rejects() {
        let mut rng = StdRng::seed_from_u64(3);
        let groups = [group("zero", 0, &["198.18.0.9:1"]), group("one", 1, &["198.18.0.1:1"])];
        for _ in 0..1000 {
            assert_eq!(first_pick(&groups, &mut rng), Pick::Endpoint("198.18.0.1:1".parse().unwrap()));
        }
        assert_eq!(first_pick(&[group("zero", 0, &["198.18.0.9:1"])], &mut rng), Pick::Reject);
        assert_eq!(first_pick(&[], &mut rng), Pick::Reject);
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
