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

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
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
        let Some(best) = self.pick_group(groups) else { return Pick::Reject };
        let endpoints = &groups[best].endpoints;
        let endpoint = endpoints[self.next[best] % endpoints.len()];
        self.next[best] = self.next[best].wrapping_add(1);
        Pick::Endpoint(endpoint)
    }

    /// The backendRef by weight as [`Picker::pick`] chooses it, then its
    /// endpoint with the fewest `open` connections. Ties take turns: the scan
    /// starts one endpoint further at each pick, so equal loads rotate.
    pub fn pick_least(&mut self, groups: &[BackendGroup], open: impl Fn(SocketAddr) -> u32) -> Pick {
        let Some(best) = self.pick_group(groups) else { return Pick::Reject };
        let endpoints = &groups[best].endpoints;
        let start = self.next[best];
        self.next[best] = self.next[best].wrapping_add(1);
        let endpoint = (0..endpoints.len()).map(|i| endpoints[(start + i) % endpoints.len()]).min_by_key(|e| open(*e)).expect("a group with endpoints");
        Pick::Endpoint(endpoint)
    }

    /// Smooth weighted round-robin over the backendRefs: the index of the one
    /// chosen, or None when the share chosen cannot be served (no weight at
    /// all, or a backendRef without endpoints: its share is reset).
    fn pick_group(&mut self, groups: &[BackendGroup]) -> Option<usize> {
        if self.current.len() != groups.len() {
            *self = Picker { current: vec![0; groups.len()], next: vec![0; groups.len()] };
        }
        let total: i64 = groups.iter().map(|g| i64::from(g.weight)).sum();
        if total == 0 {
            return None;
        }
        let mut best = 0;
        for (i, g) in groups.iter().enumerate() {
            self.current[i] += i64::from(g.weight);
            if self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= total;
        (!groups[best].endpoints.is_empty()).then_some(best)
    }
}

/// `groups` without the `excluded` endpoints (failing their health check),
/// except where that would leave a backendRef with none: there all of its
/// endpoints stay (fail open), since an empty backendRef's share is reset.
pub fn without(groups: &[BackendGroup], excluded: &BTreeSet<SocketAddr>) -> Vec<BackendGroup> {
    groups
        .iter()
        .map(|g| {
            let kept: Vec<SocketAddr> = g.endpoints.iter().copied().filter(|e| !excluded.contains(e)).collect();
            BackendGroup { endpoints: if kept.is_empty() { g.endpoints.clone() } else { kept }, ..g.clone() }
        })
        .collect()
}

/// The consistent choice for `client`: weighted rendezvous (highest random
/// weight) hashing. Every endpoint gets a score from a hash of (client,
/// endpoint) scaled by its share of the weight (its backendRef's weight over
/// that backendRef's endpoints); the highest wins. A client keeps its
/// endpoint while that endpoint stays, and removing one of N endpoints moves
/// only the clients it had (about 1/N), adding one takes about 1/(N+1) from
/// the others. A backendRef with weight and no endpoint competes as a whole
/// with its weight: the clients it wins are reset, as the spec wants for its share.
pub fn consistent_pick(groups: &[BackendGroup], client: std::net::IpAddr) -> Pick {
    let mut best: Option<(f64, Pick)> = None;
    for (i, g) in groups.iter().enumerate().filter(|(_, g)| g.weight > 0) {
        let candidates: Vec<(Option<SocketAddr>, f64)> = if g.endpoints.is_empty() {
            vec![(None, f64::from(g.weight))]
        } else {
            g.endpoints.iter().map(|e| (Some(*e), f64::from(g.weight) / g.endpoints.len() as f64)).collect()
        };
        for (endpoint, weight) in candidates {
            let h = match endpoint {
                Some(e) => hash(client, &address_bytes(e.ip(), e.port())),
                None => hash(client, &(i as u64).to_be_bytes()),
            };
            // A uniform (0, 1) from the hash; -weight / ln(u) is the weighted rendezvous score.
            let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            let score = -weight / u.ln();
            if best.as_ref().is_none_or(|(b, _)| score > *b) {
                best = Some((score, endpoint.map_or(Pick::Reject, Pick::Endpoint)));
            }
        }
    }
    best.map_or(Pick::Reject, |(_, p)| p)
}

/// A hash that is the same in every agent and every version (SipHash-2-4
/// with a fixed key over explicit bytes: std's DefaultHasher and derived
/// Hash impls are not promised to stay the same), so nodes and upgrades agree
/// on each client's endpoint.
fn hash(client: std::net::IpAddr, candidate: &[u8]) -> u64 {
    use std::hash::Hasher;
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new_with_keys(0x736f_636b_6761_7465, 0x636f_6e73_6973_7465);
    h.write(&address_bytes(client, 0));
    h.write(candidate);
    h.finish()
}

fn address_bytes(ip: std::net::IpAddr, port: u16) -> Vec<u8> {
    let mut bytes = match ip {
        std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    };
    bytes.extend_from_slice(&port.to_be_bytes());
    bytes
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
    fn groups_of(endpoints: &[Vec<SocketAddr>], weights: &[u32]) -> Vec<BackendGroup> {
        endpoints.iter().zip(weights).map(|(e, w)| BackendGroup { weight: *w, endpoints: e.clone(), ..Default::default() }).collect()
    }

    fn endpoints(n: u8) -> Vec<SocketAddr> {
        (1..=n).map(|i| SocketAddr::from(([198, 18, 2, i], 3000))).collect()
    }

    fn clients(n: u32) -> Vec<std::net::IpAddr> {
        (0..n).map(|i| std::net::IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8])).collect()
    }

    #[test]
    fn least_connections_keeps_the_route_split_and_sends_each_connection_to_the_least_loaded_endpoint() {
        let a = endpoints(3);
        let b = vec![SocketAddr::from(([198, 18, 3, 1], 3000))];
        let groups = groups_of(&[a.clone(), b.clone()], &[3, 1]);
        let mut open: std::collections::BTreeMap<SocketAddr, u32> = [(a[0], 5), (a[1], 0), (a[2], 2)].into();
        let mut picker = Picker::default();
        let mut to_b = 0;
        for _ in 0..400 {
            match picker.pick_least(&groups, |e| open.get(&e).copied().unwrap_or(0)) {
                Pick::Endpoint(e) if b.contains(&e) => to_b += 1,
                Pick::Endpoint(e) => {
                    let least = a.iter().map(|x| open[x]).min().unwrap();
                    assert_eq!(open[&e], least, "{e} has {} open, the least loaded has {least}", open[&e]);
                    *open.get_mut(&e).unwrap() += 1;
                }
                Pick::Reject => panic!("every backendRef has endpoints"),
            }
        }
        assert_eq!(to_b, 100, "weights 3:1 between backendRefs hold exactly");
        // The loads evened out: 300 connections plus 7 already open over three endpoints.
        let loads: Vec<u32> = a.iter().map(|e| open[e]).collect();
        assert!(loads.iter().max().unwrap() - loads.iter().min().unwrap() <= 1, "{loads:?}");
    }

    #[test]
    fn least_connections_rotates_among_equally_loaded_endpoints_and_resets_the_share_without_endpoints() {
        let groups = groups_of(&[endpoints(3), vec![]], &[1, 1]);
        let mut picker = Picker::default();
        let picks: Vec<Pick> = (0..6).map(|_| picker.pick_least(&groups, |_| 0)).collect();
        let served: BTreeSet<SocketAddr> = picks.iter().filter_map(|p| if let Pick::Endpoint(e) = p { Some(*e) } else { None }).collect();
        assert_eq!(picks.iter().filter(|p| **p == Pick::Reject).count(), 3, "half the share belongs to the backendRef without endpoints");
        assert_eq!(served.len(), 3, "ties take turns: {picks:?}");
    }

    #[test]
    fn unhealthy_endpoints_are_left_out_unless_none_of_their_backend_ref_would_stay() {
        let (a, b) = (endpoints(2), vec![SocketAddr::from(([198, 18, 3, 1], 3000))]);
        let groups = groups_of(&[a.clone(), b.clone()], &[1, 1]);
        let excluded: BTreeSet<SocketAddr> = [a[0], b[0]].into();
        let view = without(&groups, &excluded);
        assert_eq!(view[0].endpoints, vec![a[1]]);
        assert_eq!(view[1].endpoints, b, "all of a backendRef failing: its checks are ignored (fail open)");
        assert_eq!(view[0].weight, 1);
    }

    #[test]
    fn consistent_hashing_keeps_a_client_on_its_endpoint_and_removing_one_of_n_moves_about_one_nth() {
        let all = endpoints(10);
        let before = groups_of(&[all.clone()], &[1]);
        let removed = all[3];
        let after = groups_of(&[all.iter().copied().filter(|e| *e != removed).collect()], &[1]);
        let clients = clients(20_000);
        let (mut moved, mut had_removed) = (0, 0);
        for c in &clients {
            let (b, a) = (consistent_pick(&before, *c), consistent_pick(&after, *c));
            assert_eq!(b, consistent_pick(&before, *c), "the same client, the same endpoint");
            if b == Pick::Endpoint(removed) {
                had_removed += 1;
            } else {
                assert_eq!(a, b, "a client whose endpoint stayed keeps it");
            }
            moved += usize::from(a != b);
        }
        assert_eq!(moved, had_removed, "only the removed endpoint's clients move");
        let share = moved as f64 / clients.len() as f64;
        assert!((0.08..0.12).contains(&share), "removing 1 of 10 moved {share:.3} of clients (round robin would move most)");
        // Spread: every endpoint gets about a tenth.
        let mut counts = std::collections::BTreeMap::new();
        for c in &clients {
            *counts.entry(consistent_pick(&before, *c)).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 10);
        assert!(counts.values().all(|n| (1600..2400).contains(n)), "{counts:?}");
    }

    #[test]
    fn consistent_hashing_follows_backend_ref_weights_and_resets_the_share_of_one_without_endpoints() {
        let groups = groups_of(&[endpoints(2), vec![SocketAddr::from(([198, 18, 3, 1], 3000))], vec![]], &[60, 30, 10]);
        let clients = clients(20_000);
        let (mut first, mut second, mut reset) = (0, 0, 0);
        for c in &clients {
            match consistent_pick(&groups, *c) {
                Pick::Endpoint(e) if e.ip().to_string().starts_with("198.18.2.") => first += 1,
                Pick::Endpoint(_) => second += 1,
                Pick::Reject => reset += 1,
            }
        }
        let share = |n: i32| n as f64 / clients.len() as f64;
        assert!((share(first) - 0.6).abs() < 0.02 && (share(second) - 0.3).abs() < 0.02 && (share(reset) - 0.1).abs() < 0.02, "{first} {second} {reset}");
        assert_eq!(consistent_pick(&groups_of(&[endpoints(2)], &[0]), clients[0]), Pick::Reject, "no weight: nothing to pick");
    }

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
