//! The relay's state as `gateway-agent inspect` and `/metrics` read it: per
//! listener (and route) the counters, and the flow table. The agent writes it
//! to a JSON file (`--udp-state-file`) on every tick, since `inspect` is
//! another process and the relay keeps no eBPF map to read.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::counters::CounterValues;
use super::flows::FlowView;
use super::listener::UdpListener;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RelayState {
    pub listeners: Vec<ListenerState>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerState {
    pub port: u16,
    /// namespace/name of the Gateway and the listener's name.
    pub gateway: String,
    pub listener: String,
    /// The UDPRoute served now (namespace/name), if any.
    pub route: Option<String>,
    pub idle_timeout_ms: u64,
    pub max_flows: Option<u32>,
    /// Counters by the route they were counted for ("" while there was none).
    pub routes: Vec<RouteCounters>,
    pub flows: Vec<FlowView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteCounters {
    pub route: String,
    pub counters: CounterValues,
}

impl RelayState {
    pub fn of(served: &BTreeMap<u16, Arc<UdpListener>>) -> RelayState {
        let listeners = served
            .iter()
            .map(|(port, l)| {
                let config = l.config();
                ListenerState {
                    port: *port,
                    gateway: config.gateway.to_string(),
                    listener: config.listener.clone(),
                    route: config.route.as_ref().map(ToString::to_string),
                    idle_timeout_ms: config.policy.idle_timeout.unwrap_or(super::listener::DEFAULT_IDLE_TIMEOUT).as_millis() as u64,
                    max_flows: config.policy.max_connections,
                    routes: l
                        .counter_sets()
                        .into_iter()
                        .map(|(route, c)| RouteCounters { route: route.map(|r| r.to_string()).unwrap_or_default(), counters: c.read() })
                        .collect(),
                    flows: l.flow_views(),
                }
            })
            .collect();
        RelayState { listeners }
    }

    /// Writes the state to `path` atomically (aside, then renamed), so a reader never sees half of it.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        crate::state_file::write_json(path, self)
    }

    pub fn read(path: &Path) -> std::io::Result<RelayState> {
        crate::state_file::read_json(path)
    }

    /// The state in words, for `inspect`.
    pub fn text(&self) -> String {
        let mut out = format!("UDP listeners on the userspace relay ({}):\n", self.listeners.len());
        for l in &self.listeners {
            let route = l.route.as_deref().map(|r| format!("UDPRoute {r}")).unwrap_or_else(|| "no route: datagrams dropped".into());
            let cap = l.max_flows.map(|m| format!(", at most {m} flows")).unwrap_or_default();
            out.push_str(&format!("  udp port {} ({}/{}): {route}; {} flows, idle timeout {} ms{cap}\n", l.port, l.gateway, l.listener, l.flows.len(), l.idle_timeout_ms));
            for r in &l.routes {
                let c = &r.counters;
                let name = if r.route.is_empty() { "(no route)" } else { r.route.as_str() };
                let nonzero = |list: &[(String, u64)]| list.iter().filter(|(_, n)| *n > 0).map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ");
                out.push_str(&format!(
                    "    {name}: {} datagrams ({} bytes) from clients, {} datagrams ({} bytes) to clients; flows created {}, ended [{}], dropped datagrams [{}]\n",
                    c.datagrams_from_clients, c.bytes_from_clients, c.datagrams_to_clients, c.bytes_to_clients, c.flows_created, nonzero(&c.flows_ended), nonzero(&c.dropped)
                ));
            }
            for f in &l.flows {
                let endpoint = f.endpoint.map(|e| e.to_string()).unwrap_or_else(|| "dropped (invalid backend)".into());
                out.push_str(&format!(
                    "    flow {} -> {endpoint}: {}/{} datagrams in/out, {}/{} bytes, idle {} ms\n",
                    f.client, f.datagrams_from_client, f.datagrams_to_client, f.bytes_from_client, f.bytes_to_client, f.idle_ms
                ));
            }
        }
        out
    }
}
