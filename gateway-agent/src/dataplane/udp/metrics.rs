//! The relay's Prometheus series: per UDP listener and route, datagrams and
//! bytes each way, flows created, flows ended by reason, datagrams dropped by
//! reason, and the flows open now.
use std::fmt::Write as _;

use super::state::RelayState;

pub fn render(state: &RelayState, out: &mut String) {
    if state.listeners.is_empty() {
        return;
    }
    type Value = fn(&super::counters::CounterValues) -> u64;
    let series: [(&str, &str, Value); 5] = [
        ("sockgate_udp_datagrams_from_clients_total", "Datagrams received from clients on the UDP listener.", |c| c.datagrams_from_clients),
        ("sockgate_udp_bytes_from_clients_total", "UDP payload bytes received from clients.", |c| c.bytes_from_clients),
        ("sockgate_udp_datagrams_to_clients_total", "Datagrams from backends delivered to clients.", |c| c.datagrams_to_clients),
        ("sockgate_udp_bytes_to_clients_total", "UDP payload bytes from backends delivered to clients.", |c| c.bytes_to_clients),
        ("sockgate_udp_flows_created_total", "UDP flows (client addresses) created, each bound to one endpoint.", |c| c.flows_created),
    ];
    let labels = |l: &super::state::ListenerState, route: &str| format!("port=\"{}\",gateway=\"{}\",listener=\"{}\",route=\"{route}\"", l.port, l.gateway, l.listener);
    for (name, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for l in &state.listeners {
            for r in &l.routes {
                let _ = writeln!(out, "{name}{{{}}} {}", labels(l, &r.route), value(&r.counters));
            }
        }
    }
    type List = fn(&super::counters::CounterValues) -> &[(String, u64)];
    let lists: [(&str, &str, List); 2] = [
        ("sockgate_udp_flows_ended_total", "UDP flows ended, by reason (idle, endpoint_removed, route_changed, listener_removed).", |c| &c.flows_ended),
        ("sockgate_udp_datagrams_dropped_total", "Datagrams not forwarded, by reason (no_route, invalid_backend, client_denied, flow_limit, table_full, send_failed, backend_unreachable).", |c| &c.dropped),
    ];
    for (name, help, list) in lists {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for l in &state.listeners {
            for r in &l.routes {
                for (reason, n) in list(&r.counters) {
                    let _ = writeln!(out, "{name}{{{},reason=\"{reason}\"}} {n}", labels(l, &r.route));
                }
            }
        }
    }
    let name = "sockgate_udp_flows_active";
    let _ = writeln!(out, "# HELP {name} UDP flows in the listener's flow table now.\n# TYPE {name} gauge");
    for l in &state.listeners {
        let _ = writeln!(out, "{name}{{port=\"{}\",gateway=\"{}\",listener=\"{}\"}} {}", l.port, l.gateway, l.listener, l.flows.len());
    }
}
