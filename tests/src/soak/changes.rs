//! What the soak changes every second, written as the manifests a user would
//! apply: main's weights, the endpoints behind it, and a side listener that
//! comes and goes and whose route is swapped for another.
use super::{ECHO_PORT, MAIN_PORT, SIDE_PORT};
use crate::manifests::{documents, gateway, route, route_with, service};

/// The configuration that changes every second, as the manifests a user would apply.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Config {
    /// Index into [`WEIGHTS`]: main's weights for its two backendRefs (Service a, Service pool).
    weights: usize,
    /// Index into [`POOLS`]: which backends Service pool's EndpointSlice lists.
    pool: usize,
    /// Whether the side listener (and its route) exist, and which of two routes serves it.
    pub(super) side: Option<u8>,
}

const WEIGHTS: [(u32, u32); 5] = [(1, 1), (4, 1), (1, 4), (0, 1), (1, 0)];
const B1: &str = "198.18.2.2";
const B2: &str = "198.18.3.2";
const POOLS: [&[&str]; 3] = [&[B1, B2], &[B2], &[B1]];

impl Config {
    pub(super) fn initial() -> Config {
        Config { weights: 0, pool: 0, side: Some(1) }
    }

    pub(super) fn yaml(&self) -> String {
        let mut listeners = vec![("main", MAIN_PORT)];
        if self.side.is_some() {
            listeners.push(("side", SIDE_PORT));
        }
        let (a, pool) = WEIGHTS[self.weights];
        let backend_refs = format!("[{{name: a, port: 7001, weight: {a}}}, {{name: pool, port: 7002, weight: {pool}}}]");
        let mut docs = vec![
            gateway(&listeners),
            route_with("main", "", "[{name: gw, sectionName: main}]", &backend_refs),
            service("a", 7001, ECHO_PORT, &[B1]),
            service("pool", 7002, ECHO_PORT, POOLS[self.pool]),
        ];
        if let Some(n) = self.side {
            docs.push(route(&format!("side-{n}"), "side", "a", 7001));
        }
        documents(&docs)
    }

    /// The change for step `k`, in a cycle of four: main's weights; pool's
    /// endpoints; the side listener removed or back; side's route swapped for
    /// another (endpoints again while side is away). Returns what changed and
    /// whether it takes side's route away from side's connections.
    pub(super) fn advance(&mut self, k: usize) -> (String, bool) {
        match (k % 4, self.side) {
            (0, _) => {
                self.weights = (self.weights + 1) % WEIGHTS.len();
                let (a, pool) = WEIGHTS[self.weights];
                (format!("main's weights a:pool = {a}:{pool}"), false)
            }
            (2, Some(_)) => {
                self.side = None;
                ("side listener and its route removed".into(), true)
            }
            (2, None) => {
                self.side = Some(1);
                ("side listener and route side-1 added".into(), false)
            }
            (3, Some(n)) => {
                self.side = Some(3 - n);
                (format!("side's route swapped for side-{}", 3 - n), true)
            }
            _ => {
                self.pool = (self.pool + 1) % POOLS.len();
                (format!("pool's endpoints: {:?}", POOLS[self.pool]), false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::MANIFEST;
    use super::*;

    /// What the agent would program for `config`: listener port → (route, endpoints).
    fn programmed(config: &Config) -> Vec<(u16, String, Vec<String>)> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST), config.yaml()).unwrap();
        let loaded = gateway_agent::sources::manifests::load_dir(dir.path()).unwrap_or_else(|e| panic!("{config:?} rejected: {e:?}"));
        let settings = gateway_agent::model::Settings { controller_name: gateway_agent::model::DEFAULT_CONTROLLER_NAME.into(), gateway_addresses: vec![], ..Default::default() };
        let translation = gateway_agent::model::translate(&loaded.snapshot, &settings);
        translation
            .dataplane
            .listeners
            .iter()
            .map(|(port, l)| {
                let endpoints = l.backends.iter().flat_map(|b| b.endpoints.iter().map(|e| format!("{}x{}", b.weight, e.ip()))).collect();
                (*port, l.route.as_ref().map(ToString::to_string).unwrap_or_default(), endpoints)
            })
            .collect()
    }

    #[test]
    fn every_step_changes_what_the_agent_programs_and_only_side_changes_take_routes_away() {
        let mut config = Config::initial();
        let mut before = programmed(&config);
        assert_eq!(before.iter().map(|l| l.0).collect::<Vec<_>>(), vec![MAIN_PORT, SIDE_PORT], "{before:?}");
        let mut disruptions = 0;
        let mut side_states = std::collections::BTreeSet::new();
        for k in 0..24 {
            let (what, disruption) = config.advance(k);
            let after = programmed(&config);
            assert_ne!(before, after, "step {k} ({what}) changed nothing the agent programs");
            // main keeps its route through every change; side's goes away exactly when the step says so.
            let route = |p: &[(u16, String, Vec<String>)], port| p.iter().find(|l| l.0 == port).map(|l| l.1.clone());
            assert_eq!(route(&after, MAIN_PORT), route(&before, MAIN_PORT), "step {k}: {what}");
            let side_lost = route(&before, SIDE_PORT).is_some() && route(&after, SIDE_PORT) != route(&before, SIDE_PORT);
            assert_eq!(side_lost, disruption, "step {k}: {what}");
            disruptions += disruption as usize;
            side_states.insert(route(&after, SIDE_PORT));
            before = after;
        }
        assert_eq!(side_states.len(), 3, "side absent, routed by side-1 and by side-2: {side_states:?}");
        assert_eq!(disruptions, 6, "every 8 steps: the side listener removed once, its route swapped once");
    }
}
