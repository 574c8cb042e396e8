//! The kernel UDP NAT's listeners as `inspect` and `/metrics` show them, in
//! the relay's shape (`udp::state::ListenerState`, path `kernel`), so both
//! paths read alike: the program's per-listener counters (`UDP_NAT_STATS`),
//! the flows the agent's sweep ended, and the flow table as the last sweep
//! read it (no second walk of the map).
//!
//! The kernel counts per listener port, not per route: a listener's
//! counters are shown under its current route. Flows the LRU evicted are
//! not seen going; they are what remains of the flows created once the live
//! ones and those the sweep ended are taken away.
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use gateway_common::{UdpFlowEntry, UdpFlowKey, UdpNatListener, UdpNatStats};

use crate::dataplane::udp::counters::CounterValues;
use crate::dataplane::udp::flows::FlowView;
use crate::dataplane::udp::listener::DEFAULT_IDLE_TIMEOUT;
use crate::dataplane::udp::state::{ListenerState, RouteCounters, UdpPath};
use crate::model::config::ListenerConfig;

/// Flows listed per listener; the count says how many there are in all.
pub const LISTED_FLOWS: usize = 1000;

/// One listener's view. `flows`: both entries of every flow in the table.
pub fn listener_state(port: u16, config: &ListenerConfig, stats: &UdpNatStats, swept: &UdpNatListener, flows: &BTreeMap<UdpFlowKey, UdpFlowEntry>, now_ns: u64) -> ListenerState {
    let own: Vec<(&UdpFlowKey, &UdpFlowEntry)> = flows.iter().filter(|(_, e)| e.to_client == 0 && e.listener_port == u32::from(port)).collect();
    let live = own.len() as u64;
    let ended = swept.flows_expired + swept.flows_moved + swept.flows_denied;
    let counters = CounterValues {
        datagrams_from_clients: stats.datagrams_from_clients,
        bytes_from_clients: stats.bytes_from_clients,
        datagrams_to_clients: stats.datagrams_to_clients,
        bytes_to_clients: stats.bytes_to_clients,
        flows_created: stats.flows_created,
        flows_ended: vec![
            ("idle".into(), swept.flows_expired),
            ("endpoint_removed".into(), swept.flows_moved),
            ("client_denied".into(), swept.flows_denied),
            ("evicted".into(), stats.flows_created.saturating_sub(live + ended)),
        ],
        dropped: vec![
            ("no_endpoint".into(), stats.dropped_no_endpoint),
            ("no_nat_port".into(), stats.dropped_no_port),
            ("unroutable".into(), stats.dropped_unroutable),
            ("client_denied".into(), stats.dropped_client_denied),
            ("flow_limit".into(), stats.dropped_flow_limit),
        ],
        translated: vec![("fragment".into(), stats.fragments_forwarded), ("icmp_error".into(), stats.icmp_translated)],
    };
    let mut views: Vec<FlowView> = own.iter().map(|(key, entry)| view(key, entry, flows, now_ns)).collect();
    // The most recently active first, when there are more than are listed.
    views.sort_by_key(|v| v.idle_ms);
    views.truncate(LISTED_FLOWS);
    views.sort_by_key(|v| v.client);
    ListenerState {
        port,
        path: UdpPath::Kernel,
        gateway: config.gateway.to_string(),
        listener: config.listener.clone(),
        route: config.route.as_ref().map(ToString::to_string),
        idle_timeout_ms: config.policy.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT).as_millis() as u64,
        max_flows: config.policy.max_connections,
        routes: vec![RouteCounters { route: config.route.as_ref().map(ToString::to_string).unwrap_or_default(), counters }],
        flows: views,
        flows_active: Some(live),
    }
}

fn view(key: &UdpFlowKey, entry: &UdpFlowEntry, flows: &BTreeMap<UdpFlowKey, UdpFlowEntry>, now_ns: u64) -> FlowView {
    let reply_key = UdpFlowKey { src_addr: entry.out_dst_addr, dst_addr: entry.out_src_addr, src_port: entry.out_dst_port, dst_port: entry.out_src_port };
    let reply = flows.get(&reply_key).copied().unwrap_or_default();
    let last = entry.last_seen_ns.max(reply.last_seen_ns);
    let ms = |ns: u64| now_ns.saturating_sub(ns) / 1_000_000;
    FlowView {
        client: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(key.src_addr), key.src_port)),
        endpoint: Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(entry.out_dst_addr), entry.out_dst_port))),
        idle_ms: ms(last),
        age_ms: ms(entry.created_ns),
        datagrams_from_client: entry.packets,
        datagrams_to_client: reply.packets,
        bytes_from_client: entry.bytes,
        bytes_to_client: reply.bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_flow_is_shown_with_both_directions_and_flows_the_lru_evicted_are_counted_as_what_is_left() {
        let client = UdpFlowKey { src_addr: [198, 18, 0, 1], dst_addr: [198, 18, 0, 2], src_port: 4000, dst_port: 53 };
        let forward = UdpFlowEntry { out_src_addr: [198, 18, 1, 1], out_dst_addr: [198, 18, 1, 2], out_src_port: 61001, out_dst_port: 5353, listener_port: 53, packets: 3, bytes: 300, last_seen_ns: 5_000_000_000, created_ns: 1_000_000_000, ..Default::default() };
        let reply_key = UdpFlowKey { src_addr: [198, 18, 1, 2], dst_addr: [198, 18, 1, 1], src_port: 5353, dst_port: 61001 };
        let reply = UdpFlowEntry { out_src_addr: [198, 18, 0, 2], out_dst_addr: [198, 18, 0, 1], out_src_port: 53, out_dst_port: 4000, listener_port: 53, to_client: 1, packets: 2, bytes: 250, last_seen_ns: 6_000_000_000, ..Default::default() };
        let flows = BTreeMap::from([(client, forward), (reply_key, reply)]);
        let stats = UdpNatStats { flows_created: 10, datagrams_from_clients: 3, ..Default::default() };
        let swept = UdpNatListener { flows_expired: 4, flows_moved: 1, flows_denied: 1, ..Default::default() };
        let config = ListenerConfig { gateway: crate::resources::ObjectKey::new("default", "gw"), listener_set: None, listener: "dns".into(), route: None, backends: vec![], policy: Default::default(), load_balancer: Default::default() };
        let state = listener_state(53, &config, &stats, &swept, &flows, 7_000_000_000);
        assert_eq!(state.path, UdpPath::Kernel);
        assert_eq!(state.flows_active, Some(1));
        let f = &state.flows[0];
        assert_eq!((f.client.to_string().as_str(), f.endpoint.unwrap().to_string().as_str()), ("198.18.0.1:4000", "198.18.1.2:5353"));
        assert_eq!((f.datagrams_from_client, f.datagrams_to_client, f.bytes_to_client, f.idle_ms, f.age_ms), (3, 2, 250, 1000, 6000));
        let ended = &state.routes[0].counters.flows_ended;
        assert!(ended.contains(&("evicted".to_string(), 3)), "10 created - 1 live - 6 ended: {ended:?}");
    }
}
