//! The UDP listeners' Prometheus series, of the relay and the kernel NAT
//! (label `path`: `relay` or `kernel`): per listener and route, datagrams and
//! bytes each way, flows created, flows ended by reason, datagrams dropped by
//! reason, packets the kernel translated besides whole datagrams, and the
//! flows open now. Cardinality: listeners × routes × paths, with the reasons.
use std::fmt::Write as _;

use super::state::UdpState;

pub fn render(state: &UdpState, out: &mut String) {
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
    let labels = |l: &super::state::ListenerState, route: &str| format!("port=\"{}\",gateway=\"{}\",listener=\"{}\",route=\"{route}\",path=\"{}\"", l.port, l.gateway, l.listener, l.path.name());
    for (name, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for l in &state.listeners {
            for r in &l.routes {
                let _ = writeln!(out, "{name}{{{}}} {}", labels(l, &r.route), value(&r.counters));
            }
        }
    }
    type List = fn(&super::counters::CounterValues) -> &[(String, u64)];
    let lists: [(&str, &str, &str, List); 3] = [
        ("sockgate_udp_flows_ended_total", "reason", "UDP flows ended, by reason (relay: idle, endpoint_removed, route_changed, listener_removed; kernel: idle, endpoint_removed, client_denied, evicted).", |c| &c.flows_ended),
        (
            "sockgate_udp_datagrams_dropped_total",
            "reason",
            "Datagrams not forwarded, by reason (relay: no_route, invalid_backend, client_denied, flow_limit, table_full, send_failed, backend_unreachable; kernel: no_endpoint, no_nat_port, unroutable, client_denied, flow_limit).",
            |c| &c.dropped,
        ),
        ("sockgate_udp_translated_packets_total", "kind", "Packets the kernel NAT translated besides whole datagrams, by kind (fragment: a datagram's later fragments; icmp_error: an ICMP error about a flow's datagram).", |c| &c.translated),
    ];
    for (name, label, help, list) in lists {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for l in &state.listeners {
            for r in &l.routes {
                for (reason, n) in list(&r.counters) {
                    let _ = writeln!(out, "{name}{{{},{label}=\"{reason}\"}} {n}", labels(l, &r.route));
                }
            }
        }
    }
    let name = "sockgate_udp_flows_active";
    let _ = writeln!(out, "# HELP {name} UDP flows in the listener's flow table now.\n# TYPE {name} gauge");
    for l in &state.listeners {
        let _ = writeln!(out, "{name}{{port=\"{}\",gateway=\"{}\",listener=\"{}\",path=\"{}\"}} {}", l.port, l.gateway, l.listener, l.path.name(), l.flow_count());
    }
    if state.kernel_fragments_unmatched > 0 {
        let name = "sockgate_udp_kernel_unmatched_fragments_total";
        let _ = writeln!(out, "# HELP {name} Later fragments of a datagram whose first fragment the kernel NAT had not seen, passed to the node's stack (the datagram is lost).\n# TYPE {name} counter\n{name} {}", state.kernel_fragments_unmatched);
    }
}
