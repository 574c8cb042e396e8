//! The UDP listeners' state as `gateway-agent inspect` and `/metrics` read
//! it: per listener (and route) the counters, and the flow table, of the
//! userspace relay and of the kernel UDP NAT alike (`path` says which; with
//! the kernel NAT, the relay stays bound on the same ports for IPv6, so a
//! port may be listed once per path). The agent writes it to a JSON file
//! (`--udp-state-file`) on every tick, since `inspect` is another process.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::counters::CounterValues;
use super::flows::FlowView;
use super::listener::UdpListener;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UdpState {
    pub listeners: Vec<ListenerState>,
    /// Row 0 of the kernel NAT's counters: fragments it could not match.
    #[serde(default)]
    pub kernel_fragments_unmatched: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerState {
    pub port: u16,
    /// Which data path these counters and flows are of.
    #[serde(default)]
    pub path: UdpPath,
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
    /// Flows in the table, when more may be there than `flows` lists (the kernel's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flows_active: Option<u64>,
}

impl ListenerState {
    pub fn flow_count(&self) -> u64 {
        self.flows_active.unwrap_or(self.flows.len() as u64)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UdpPath {
    #[default]
    Relay,
    Kernel,
}

impl UdpPath {
    pub fn name(self) -> &'static str {
        match self {
            UdpPath::Relay => "relay",
            UdpPath::Kernel => "kernel",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteCounters {
    pub route: String,
    pub counters: CounterValues,
}

impl UdpState {
    pub fn of(served: &BTreeMap<u16, Arc<UdpListener>>) -> UdpState {
        let listeners = served
            .iter()
            .map(|(port, l)| {
                let config = l.config();
                ListenerState {
                    port: *port,
                    path: UdpPath::Relay,
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
                    flows_active: None,
                }
            })
            .collect();
        UdpState { listeners, kernel_fragments_unmatched: 0 }
    }

    /// Writes the state to `path` atomically (aside, then renamed), so a reader never sees half of it.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        crate::state_file::write_json(path, self)
    }

    pub fn read(path: &Path) -> std::io::Result<UdpState> {
        crate::state_file::read_json(path)
    }

    /// The state in words, for `inspect`: the kernel's listeners, then the relay's.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let kernel = self.listeners.iter().any(|l| l.path == UdpPath::Kernel);
        for (path, title) in [(UdpPath::Kernel, "in the kernel (UDP NAT)"), (UdpPath::Relay, "on the userspace relay")] {
            let listeners: Vec<&ListenerState> = self.listeners.iter().filter(|l| l.path == path).collect();
            if !listeners.is_empty() {
                // With the kernel NAT, the relay stays bound on its ports for what the kernel passes on.
                let what = if kernel && path == UdpPath::Relay { ", serving IPv6 clients of the kernel's ports" } else { "" };
                out.push_str(&format!("UDP listeners {title} ({}{what}):\n", listeners.len()));
                out.push_str(&listeners_text(&listeners));
            }
        }
        if self.kernel_fragments_unmatched > 0 {
            out.push_str(&format!("kernel UDP NAT: {} later fragments came before their first fragment (passed to the stack; those datagrams are lost)\n", self.kernel_fragments_unmatched));
        }
        out
    }
}

fn listeners_text(listeners: &[&ListenerState]) -> String {
    let mut out = String::new();
    for l in listeners {
        let route = l.route.as_deref().map(|r| format!("UDPRoute {r}")).unwrap_or_else(|| "no route: datagrams dropped".into());
        let cap = l.max_flows.map(|m| format!(", at most {m} flows")).unwrap_or_default();
        let listed = if l.flow_count() > l.flows.len() as u64 { format!(" ({} most recent listed)", l.flows.len()) } else { String::new() };
        out.push_str(&format!("  udp port {} ({}/{}): {route}; {} flows{listed}, idle timeout {} ms{cap}\n", l.port, l.gateway, l.listener, l.flow_count(), l.idle_timeout_ms));
        for r in &l.routes {
            let c = &r.counters;
            let name = if r.route.is_empty() { "(no route)" } else { r.route.as_str() };
            let nonzero = |list: &[(String, u64)]| list.iter().filter(|(_, n)| *n > 0).map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ");
            out.push_str(&format!(
                "    {name}: {} datagrams ({} bytes) from clients, {} datagrams ({} bytes) to clients; flows created {}, ended [{}], dropped datagrams [{}]{}\n",
                c.datagrams_from_clients,
                c.bytes_from_clients,
                c.datagrams_to_clients,
                c.bytes_to_clients,
                c.flows_created,
                nonzero(&c.flows_ended),
                nonzero(&c.dropped),
                if c.translated.is_empty() { String::new() } else { format!(", translated [{}]", nonzero(&c.translated)) }
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
