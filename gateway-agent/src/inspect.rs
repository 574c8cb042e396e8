//! `gateway-agent inspect`: the pinned eBPF maps, in words or as JSON.
use std::net::{IpAddr, Ipv6Addr};

use anyhow::Result;
use serde_json::{json, Value};

use crate::cli::{InspectArgs, OutputFormat};
use crate::dataplane::kernel::{read_pinned, PinnedView};
use crate::dataplane::kernel_splice::{read_pinned_flows, read_pinned_splice_stats};
use crate::dataplane::udp::state::UdpState;
use crate::dataplane::xdp::read_pinned_stats;
use gateway_common::{FlowEntry, FlowKey};
use std::collections::BTreeMap;

use crate::model::config::{DataplaneConfig, ListenerConfig};

/// The listeners file the agent writes on every change (`--listeners-file`):
/// what each port serves, by name, and the pins of the agent that wrote it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenersFile {
    pub bpf_pin_dir: std::path::PathBuf,
    pub config: DataplaneConfig,
}

/// Names for the ports, from the listeners file when it was written by the
/// agent whose pins are inspected (an agent with other pins, say a test's or
/// a benchmark's, may have left one at the same path): else none, said once.
fn listener_names(file: &std::path::Path, pin_dir: &std::path::Path) -> BTreeMap<u16, ListenerConfig> {
    match crate::state_file::read_json::<ListenersFile>(file) {
        Ok(written) if written.bpf_pin_dir == pin_dir => written.config.listeners,
        Ok(written) => {
            eprintln!(
                "note: {} was written by the agent with pins in {}, not {}: ports are shown without their Gateway and route names (pass that agent's --listeners-file)",
                file.display(),
                written.bpf_pin_dir.display(),
                pin_dir.display()
            );
            BTreeMap::new()
        }
        Err(_) => BTreeMap::new(),
    }
}

pub fn inspect(args: &InspectArgs) -> Result<()> {
    // The UDP relay's listeners and flow table, when an agent serves UDP
    // (they are in a file the agent writes, not in a map).
    let udp = UdpState::read(&args.udp_state_file).ok();
    // The backends' active health checks, when a BackendPolicy asks for them.
    let checks = crate::dataplane::health_checks::read_state(&args.backend_health_file).unwrap_or_default();
    // What each port serves, by name (the maps hold ports and addresses only).
    let names = listener_names(&args.listeners_file, &args.bpf_pin_dir);
    let view = match (read_pinned(&args.bpf_pin_dir), udp.is_some() || !checks.is_empty()) {
        (Ok(view), _) => Some(view),
        // --dataplane userspace pins nothing, yet serves UDP and checks backends.
        (Err(_), true) => None,
        (Err(e), false) => return Err(e),
    };
    // Connections the kernel splice carries, when the agent runs it (--dataplane ebpf).
    let flows = read_pinned_flows(&args.bpf_pin_dir).map(|entries| flow_table(&entries)).unwrap_or_default();
    // What the kernel splice forwarded per listener: bytes the node's sockets
    // (and so the listener counters above) never saw.
    let spliced = read_pinned_splice_stats(&args.bpf_pin_dir).unwrap_or_default();
    match args.output {
        OutputFormat::Json => {
            let mut json = view.as_ref().map(|view| pinned_json(view, &names, args)).unwrap_or_else(|| json!({}));
            if let Some(udp) = &udp {
                json["udpListeners"] = serde_json::to_value(&udp.listeners)?;
            }
            if let Some(listeners) = json["listeners"].as_array_mut() {
                for listener in listeners {
                    let port = listener["port"].as_u64().unwrap_or(0) as gateway_common::ListenerPort;
                    let s = spliced.get(&port).copied().unwrap_or_default();
                    listener["kernelSplice"] = json!({
                        "bytesFromClients": s.bytes_from_clients,
                        "bytesToClients": s.bytes_to_clients,
                        "packetsFromClients": s.packets_from_clients,
                        "packetsToClients": s.packets_to_clients,
                    });
                }
            }
            json["splicedConnections"] = flows.iter().map(Flow::to_json).collect();
            json["backendHealthChecks"] = serde_json::to_value(&checks)?;
            println!("{}", serde_json::to_string_pretty(&json)?)
        }
        OutputFormat::Text => {
            if let Some(view) = &view {
                print_pinned(view, &names, args);
            }
            for (port, s) in &spliced {
                println!("  kernel splice, port {port}: {} bytes from clients, {} bytes to clients ({} and {} segments), forwarded past the node's sockets", s.bytes_from_clients, s.bytes_to_clients, s.packets_from_clients, s.packets_to_clients);
            }
            if let Some(udp) = udp.as_ref().filter(|u| !u.listeners.is_empty()) {
                print!("{}", udp.text());
            }
            if !checks.is_empty() {
                println!("backend health checks ({}):", checks.len());
                println!("  {:<24} {:<10} {:>7} {:>7}  {:<32} last failure", "endpoint", "state", "passed", "failed", "backends");
                for c in &checks {
                    let state = match c.healthy {
                        None => "unchecked",
                        Some(true) => "healthy",
                        Some(false) => "unhealthy",
                    };
                    let failure = c.last_failure.as_deref().unwrap_or("-");
                    println!("  {:<24} {:<10} {:>7} {:>7}  {:<32} {failure}", c.endpoint.to_string(), state, c.checks_passed, c.checks_failed, c.backends.join(", "));
                }
            }
            if !flows.is_empty() {
                println!("connections in the kernel splice ({}):", flows.len());
                println!("  {:<24} {:>8}  {:<24} {:>14} {:>14} {:>8}  state", "client", "listener", "backend", "bytes up", "bytes down", "age");
                for flow in &flows {
                    println!(
                        "  {:<24} {:>8}  {:<24} {:>14} {:>14} {:>7.1}s  {}",
                        flow.client, flow.listener, flow.backend, flow.up.bytes, flow.down.bytes, flow.age_seconds, flow.state()
                    );
                }
            }
        }
    }
    Ok(())
}

/// One spliced connection: its two FLOWS entries, paired.
struct Flow {
    client: std::net::SocketAddr,
    listener: u32,
    backend: std::net::SocketAddr,
    up: FlowEntry,
    down: FlowEntry,
    age_seconds: f64,
}

impl Flow {
    fn state(&self) -> &'static str {
        match (self.up.state, self.up.rst | self.down.rst, self.up.fin, self.down.fin) {
            (gateway_common::FLOW_SPLICED, 0, 0, 0) => "spliced",
            (gateway_common::FLOW_SPLICED, 0, 1, 1) => "closed (both FINs)",
            (gateway_common::FLOW_SPLICED, 0, _, _) => "half-closed",
            (gateway_common::FLOW_SPLICED, _, _, _) => "reset",
            _ => "handing over",
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "client": self.client.to_string(),
            "listenerPort": self.listener,
            "backend": self.backend.to_string(),
            "state": self.state(),
            "bytesClientToBackend": self.up.bytes,
            "bytesBackendToClient": self.down.bytes,
            "packetsClientToBackend": self.up.packets,
            "packetsBackendToClient": self.down.packets,
            "ageSeconds": self.age_seconds,
        })
    }
}

/// Pairs each client leg (keyed by the client's segments to the listener
/// port) with the backend leg its translation sends to.
fn flow_table(entries: &[(FlowKey, FlowEntry)]) -> Vec<Flow> {
    let now = crate::dataplane::kernel_splice::monotonic_ns();
    let by_key: std::collections::BTreeMap<FlowKey, FlowEntry> = entries.iter().copied().collect();
    let mut flows: Vec<Flow> = entries
        .iter()
        .filter(|(key, entry)| u32::from(key.dst_port) == entry.listener_port)
        .map(|(key, up)| {
            let backend_key = FlowKey { src_addr: up.out_dst_addr, dst_addr: up.out_src_addr, src_port: up.out_dst_port, dst_port: up.out_src_port };
            let down = by_key.get(&backend_key).copied().unwrap_or_default();
            Flow {
                client: std::net::SocketAddr::new(address(key.src_addr), key.src_port),
                listener: up.listener_port,
                backend: std::net::SocketAddr::new(address(up.out_dst_addr), up.out_dst_port),
                up: *up,
                down,
                age_seconds: if up.spliced_at_ns == 0 { 0.0 } else { now.saturating_sub(up.spliced_at_ns) as f64 / 1e9 },
            }
        })
        .collect();
    flows.sort_by_key(|f| (f.listener, f.client));
    flows
}

fn pinned_json(view: &PinnedView, names: &Names, args: &InspectArgs) -> Value {
    let xdp = read_pinned_stats(&args.bpf_pin_dir).unwrap_or_default();
    let mut json = to_json(view, names);
    for listener in json["listeners"].as_array_mut().into_iter().flatten() {
        if let Some(stats) = listener["port"].as_u64().and_then(|p| xdp.get(&(p as u16))) {
            listener["xdpDroppedPackets"] = stats.dropped_packets.into();
            listener["xdpDroppedBytes"] = stats.dropped_bytes.into();
        }
    }
    json
}

fn print_pinned(view: &PinnedView, names: &Names, args: &InspectArgs) {
    let xdp = read_pinned_stats(&args.bpf_pin_dir).unwrap_or_default();
    print!("{}", to_text(view, names, &args.bpf_pin_dir.display().to_string()));
    for (port, stats) in &xdp {
        println!("  XDP filter, port {port}: {} packets ({} bytes) from denied clients dropped, {} passed", stats.dropped_packets, stats.dropped_bytes, stats.passed_packets);
    }
}

fn path_name(code: u32) -> &'static str {
    match code {
        gateway_common::PATH_COPY => "copy",
        gateway_common::PATH_SPLICE => "splice",
        gateway_common::PATH_KERNEL => "ebpf",
        _ => "unknown",
    }
}

fn address(raw: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(raw);
    v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6))
}

/// What the agent's listeners file says each TCP port serves.
pub type Names = BTreeMap<u16, ListenerConfig>;

/// "Gateway ns/gw, listener l (ListenerSet ns/ls), TCPRoute ns/r" for a port.
fn named(listener: &ListenerConfig) -> String {
    let set = listener.listener_set.as_ref().map(|s| format!(" (ListenerSet {s})")).unwrap_or_default();
    let route = listener.route.as_ref().map(|r| format!("TCPRoute {r}")).unwrap_or_else(|| "no route".into());
    format!("Gateway {}, listener {}{set}, {route}", listener.gateway, listener.listener)
}

/// The view as JSON: one object per listener with its backends and counters.
pub fn to_json(view: &PinnedView, names: &Names) -> Value {
    let listeners: Vec<Value> = view
        .listeners
        .iter()
        .map(|(port, info)| {
            let backends: Vec<Value> = view
                .backends
                .iter()
                .filter(|(k, _)| k.port == *port)
                .map(|(_, b)| {
                    let mut backend = if b.reject == 1 {
                        json!({ "group": b.group, "weight": b.weight, "reject": true })
                    } else {
                        json!({ "group": b.group, "weight": b.weight, "address": address(b.addr).to_string(), "port": b.port })
                    };
                    if let Some(group) = names.get(&(*port as u16)).and_then(|l| l.backends.get(b.group as usize)) {
                        backend["backendRef"] = group.name.clone().into();
                    }
                    backend
                })
                .collect();
            let stats = view.stats.get(port).copied().unwrap_or_default();
            let mut listener = json!({
                "port": port,
                "routed": info.routed == 1,
                "dataPath": path_name(info.path),
                "activeConnections": info.active,
                "backends": backends,
                "connectionsAccepted": stats.accepted,
                "bytesFromClients": stats.bytes_from_clients,
                "bytesToClients": stats.bytes_to_clients,
            });
            if let Some(config) = names.get(&(*port as u16)) {
                listener["gateway"] = config.gateway.to_string().into();
                listener["listener"] = config.listener.clone().into();
                if let Some(set) = &config.listener_set {
                    listener["listenerSet"] = set.to_string().into();
                }
                listener["route"] = config.route.as_ref().map(|r| Value::from(r.to_string())).unwrap_or(Value::Null);
            }
            listener
        })
        .collect();
    json!({ "listeners": listeners })
}

fn to_text(view: &PinnedView, names: &Names, pin_dir: &str) -> String {
    let mut out = format!("listeners in {pin_dir} ({} entries):\n", view.listeners.len());
    for (port, info) in &view.listeners {
        let routed = if info.routed == 1 { "routed" } else { "no route (connections reset)" };
        let stats = view.stats.get(port).copied().unwrap_or_default();
        let endpoints = view.backends.iter().filter(|(k, b)| k.port == *port && b.reject == 0).count();
        let config = names.get(&(*port as u16));
        let name = config.map(|l| format!(" ({})", named(l))).unwrap_or_default();
        out += &format!("  port {port}{name}: {routed}, {endpoints} ready backend endpoints, {} connections accepted\n", stats.accepted);
        out += &format!(
            "    {} live connections on the {} path; {} bytes from clients, {} bytes to clients\n",
            info.active,
            path_name(info.path),
            stats.bytes_from_clients,
            stats.bytes_to_clients
        );
        for (_, b) in view.backends.iter().filter(|(k, _)| k.port == *port) {
            let group = config.and_then(|l| l.backends.get(b.group as usize)).map(|g| format!(" ({})", g.name)).unwrap_or_default();
            if b.reject == 1 {
                out += &format!("    backendRef {}{group} weight {}: no endpoint, its share is reset\n", b.group, b.weight);
            } else {
                let addr = address(b.addr);
                let shown = if addr.is_ipv6() { format!("[{addr}]") } else { addr.to_string() };
                out += &format!("    backendRef {}{group} weight {}: {shown}:{}\n", b.group, b.weight, b.port);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::kernel::backend_entries;
    use crate::model::config::BackendGroup;
    use crate::resources::ObjectKey;
    use gateway_common::{ListenerInfo, ListenerStats};

    #[test]
    fn the_listeners_file_names_ports_only_for_the_pins_of_the_agent_that_wrote_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("listeners.json");
        let mut config = DataplaneConfig::default();
        let listener = ListenerConfig {
            gateway: ObjectKey::new("default", "gw"),
            listener_set: None,
            listener: "foo".into(),
            route: None,
            backends: vec![],
            policy: Default::default(),
            load_balancer: Default::default(),
        };
        config.listeners.insert(8088, listener);
        crate::state_file::write_json(&file, &ListenersFile { bpf_pin_dir: "/sys/fs/bpf/sockgate".into(), config }).unwrap();
        assert_eq!(listener_names(&file, std::path::Path::new("/sys/fs/bpf/sockgate")).keys().collect::<Vec<_>>(), [&8088]);
        assert!(listener_names(&file, std::path::Path::new("/sys/fs/bpf/sockgate-bench")).is_empty(), "another agent's file names nothing");
        assert!(listener_names(&dir.path().join("none.json"), std::path::Path::new("/sys/fs/bpf/sockgate")).is_empty());
    }

    #[test]
    fn a_listeners_backends_weights_and_rejected_share_read_back_in_words_and_json() {
        let mut config = DataplaneConfig::default();
        config.listeners.insert(
            8088,
            ListenerConfig {
                gateway: ObjectKey::new("default", "gw"),
                listener_set: None,
                listener: "foo".into(),
                route: Some(ObjectKey::new("default", "r")),
                backends: vec![
                    BackendGroup { name: "default/a:1".into(), weight: 70, endpoints: vec!["198.18.2.2:3000".parse().unwrap(), "[fd00::1]:3000".parse().unwrap()], ..Default::default() },
                    BackendGroup { name: "default/gone:1".into(), weight: 30, endpoints: vec![], ..Default::default() },
                ],
                policy: Default::default(),
                load_balancer: Default::default(),
            },
        );
        let backends = backend_entries(&config);
        let view = PinnedView {
            listeners: [(8088, ListenerInfo { backends: backends.len() as u32, routed: 1, active: 2, path: gateway_common::PATH_SPLICE })].into(),
            backends,
            stats: [(8088, ListenerStats { accepted: 5, bytes_from_clients: 100, bytes_to_clients: 2000 })].into(),
        };
        // Without the agent's listeners file: ports and addresses only.
        let text = to_text(&view, &Names::new(), "/sys/fs/bpf/sockgate");
        assert!(text.contains("port 8088: routed, 2 ready backend endpoints, 5 connections accepted"), "{text}");
        assert!(text.contains("2 live connections on the splice path; 100 bytes from clients, 2000 bytes to clients"), "{text}");
        assert!(text.contains("backendRef 0 weight 70: 198.18.2.2:3000"), "{text}");
        assert!(text.contains("backendRef 0 weight 70: [fd00::1]:3000"), "{text}");
        assert!(text.contains("backendRef 1 weight 30: no endpoint, its share is reset"), "{text}");
        let json = to_json(&view, &Names::new());
        assert_eq!(json["listeners"][0]["backends"][0], json!({ "group": 0, "weight": 70, "address": "198.18.2.2", "port": 3000 }));
        assert_eq!(json["listeners"][0]["backends"][2], json!({ "group": 1, "weight": 30, "reject": true }));
        assert_eq!(json["listeners"][0]["connectionsAccepted"], 5);
        // With it: the Gateway, listener, route and backendRefs by name.
        let text = to_text(&view, &config.listeners, "/sys/fs/bpf/sockgate");
        assert!(text.contains("port 8088 (Gateway default/gw, listener foo, TCPRoute default/r): routed"), "{text}");
        assert!(text.contains("backendRef 0 (default/a:1) weight 70: 198.18.2.2:3000"), "{text}");
        assert!(text.contains("backendRef 1 (default/gone:1) weight 30: no endpoint"), "{text}");
        let json = to_json(&view, &config.listeners);
        let listener = &json["listeners"][0];
        assert_eq!((listener["gateway"].clone(), listener["listener"].clone(), listener["route"].clone()), (json!("default/gw"), json!("foo"), json!("default/r")));
        assert_eq!(listener["backends"][2]["backendRef"], "default/gone:1");
        assert_eq!((json["listeners"][0]["activeConnections"].clone(), json["listeners"][0]["dataPath"].clone()), (json!(2), json!("splice")));
    }
}
