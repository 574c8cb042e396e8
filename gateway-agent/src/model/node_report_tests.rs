//! Listener ports nodes could not bind, as the status says them.
use std::path::Path;

use super::node_reports::{Protocol, UnboundPort};
use super::*;
use crate::sources::manifests::load_text;

const CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: sg}\nspec: {controllerName: sockgate.io/gateway-controller}\n";
const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  gatewayClassName: sg\n  allowedListeners: {namespaces: {from: Same}}\n  listeners:\n  - {name: a, port: 9000, protocol: TCP}\n  - {name: u, port: 9000, protocol: UDP}\n  - {name: bad, port: 9002, protocol: HTTP}\n";
const SET: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: ListenerSet\nmetadata: {name: ls, namespace: default}\nspec:\n  parentRef: {name: gw}\n  listeners:\n  - {name: s, port: 9001, protocol: TCP}\n";

fn translate_with(unbound: &[(&str, Protocol, u16)], nodes: usize) -> Translation {
    let snapshot = load_text(Path::new("t.yaml"), &[CLASS, GATEWAY, SET].join("---\n")).unwrap_or_else(|e| panic!("{e}")).snapshot;
    let unbound = unbound
        .iter()
        .map(|(node, protocol, port)| UnboundPort { node: node.to_string(), protocol: *protocol, port: *port, error: format!("cannot listen on 0.0.0.0:{port}: Address in use (os error 98)") })
        .collect();
    translate(&snapshot, &Settings { unbound, serving_nodes: nodes, ..Settings::default() })
}

fn programmed(conditions: &[status::Condition]) -> String {
    let c = conditions.iter().find(|c| c.type_ == "Programmed").unwrap();
    format!("{}/{}", c.status, c.reason)
}

fn gateway_listener(t: &Translation, name: &str) -> status::ListenerStatus {
    t.status.gateways[&ObjectKey::new("default", "gw")].listeners.iter().find(|l| l.name == name).unwrap().clone()
}

#[test]
fn a_port_a_node_could_not_bind_makes_only_that_listener_pending_with_the_port_node_and_error() {
    let t = translate_with(&[("node-b", Protocol::Tcp, 9000)], 2);
    let a = gateway_listener(&t, "a");
    assert_eq!(programmed(&a.conditions), "false/Pending");
    let message = &a.conditions.iter().find(|c| c.type_ == "Programmed").unwrap().message;
    assert_eq!(message, "TCP port 9000 cannot be bound on 1 of 2 nodes (node-b: cannot listen on 0.0.0.0:9000: Address in use (os error 98)); the agent retries the bind and serves as soon as the port is free");
    assert!(a.conditions.iter().any(|c| c.type_ == "Accepted" && c.status), "the configuration itself is valid");
    assert_eq!(programmed(&gateway_listener(&t, "u").conditions), "true/Programmed", "UDP 9000 is another port");
    assert_eq!(programmed(&gateway_listener(&t, "bad").conditions), "false/Invalid", "an invalid listener keeps its own reason");
    assert_eq!(programmed(&t.status.gateways[&ObjectKey::new("default", "gw")].conditions), "true/Programmed", "other listeners serve");
    assert!(t.dataplane.listeners.contains_key(&9000), "still wanted: the bind is retried");
}

#[test]
fn a_listener_set_listener_not_bound_is_pending_on_the_set_and_the_set_too_when_it_has_no_other() {
    let t = translate_with(&[("node-a", Protocol::Tcp, 9001)], 1);
    let set = &t.status.listener_sets[&ObjectKey::new("default", "ls")];
    assert_eq!(programmed(&set.listeners[0].conditions), "false/Pending");
    assert_eq!(programmed(&set.conditions), "false/Pending", "its only listener is bound nowhere");
    assert_eq!(programmed(&gateway_listener(&t, "a").conditions), "true/Programmed");
}

#[test]
fn a_gateway_is_pending_only_when_none_of_its_served_listeners_is_bound_on_any_node() {
    let all = [("n1", Protocol::Tcp, 9000), ("n1", Protocol::Udp, 9000), ("n1", Protocol::Tcp, 9001)];
    let gw = |t: &Translation| programmed(&t.status.gateways[&ObjectKey::new("default", "gw")].conditions);
    assert_eq!(gw(&translate_with(&all, 1)), "false/Pending");
    // Two nodes, one failing everything: the other still serves, so the Gateway is programmed (its listeners say where not).
    let t = translate_with(&all, 2);
    assert_eq!(gw(&t), "true/Programmed");
    assert_eq!(programmed(&gateway_listener(&t, "a").conditions), "false/Pending");
}

#[test]
fn reports_of_unwanted_ports_change_nothing() {
    assert_eq!(translate_with(&[("n1", Protocol::Tcp, 7777)], 1).status, translate_with(&[], 1).status);
}
