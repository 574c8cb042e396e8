//! Policy attachment rules (GEP-713), each from YAML a user would write.
use std::path::Path;
use std::time::Duration;

use super::status::PolicyKind;
use super::*;
use crate::resources::policies::ProxyProtocolVersion;
use crate::sources::manifests::load_text;

const BASE: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: sg}\nspec: {controllerName: sockgate.io/gateway-controller}\n---
apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  gatewayClassName: sg\n  listeners:\n  - {name: foo, port: 8088, protocol: TCP}\n  - {name: bar, port: 8089, protocol: TCP}\n---
apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: gw, sectionName: foo}]\n  rules: [{backendRefs: [{name: a, port: 1}, {name: b, port: 1}]}]\n---
apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 1, targetPort: 3000}]}\n---
apiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec: {ports: [{port: 1, targetPort: 3000}]}\n";

fn listener_policy(name: &str, second: u32, targets: &str, fields: &str) -> String {
    format!("apiVersion: sockgate.io/v1alpha1\nkind: ListenerPolicy\nmetadata: {{name: {name}, creationTimestamp: \"2026-01-01T00:00:{second:02}Z\"}}\nspec:\n  targetRefs: {targets}\n{fields}")
}

fn backend_policy(name: &str, second: u32, targets: &str, fields: &str) -> String {
    format!("apiVersion: sockgate.io/v1alpha1\nkind: BackendPolicy\nmetadata: {{name: {name}, creationTimestamp: \"2026-01-01T00:00:{second:02}Z\"}}\nspec:\n  targetRefs: {targets}\n{fields}")
}

const GW: &str = "[{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]";
const FOO: &str = "[{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: foo}]";
const ROUTE: &str = "[{group: gateway.networking.k8s.io, kind: TCPRoute, name: r}]";
const SERVICE_B: &str = "[{group: \"\", kind: Service, name: b}]";

fn translate_with(policies: &[String]) -> Translation {
    let mut text = BASE.to_string();
    for p in policies {
        text.push_str("---\n");
        text.push_str(p);
    }
    let snapshot = load_text(Path::new("t.yaml"), &text).unwrap_or_else(|e| panic!("{e}")).snapshot;
    translate(&snapshot, &Settings::default())
}

/// "Accepted=True/Accepted" etc. for each ancestor of the policy.
fn verdicts(t: &Translation, kind: PolicyKind, name: &str) -> Vec<String> {
    t.status.policies[&(kind, ObjectKey::new("default", name))]
        .iter()
        .map(|a| {
            let c = &a.conditions[0];
            format!("{}={}/{}", c.type_, if c.status { "True" } else { "False" }, c.reason)
        })
        .collect()
}

#[test]
fn a_gateway_policy_applies_to_every_listener_and_a_listener_policy_overrides_it_field_by_field() {
    let t = translate_with(&[
        listener_policy("wide", 1, GW, "  maxConnections: 100\n  idleTimeout: 30s\n"),
        listener_policy("narrow", 2, FOO, "  maxConnections: 5\n  clientCIDRs: {deny: [198.18.9.0/24]}\n"),
    ]);
    assert_eq!(verdicts(&t, PolicyKind::Listener, "wide"), ["Accepted=True/Accepted"]);
    assert_eq!(verdicts(&t, PolicyKind::Listener, "narrow"), ["Accepted=True/Accepted"]);
    let foo = &t.dataplane.listeners[&8088].policy;
    assert_eq!(foo.max_connections, Some(5), "the listener's own policy wins");
    assert_eq!(foo.idle_timeout, Some(Duration::from_secs(30)), "fields it does not set come from the Gateway's");
    assert!(!foo.admits("198.18.9.7".parse().unwrap()) && foo.admits("198.18.1.1".parse().unwrap()));
    let bar = &t.dataplane.listeners[&8089].policy;
    assert_eq!(bar.max_connections, Some(100));
    assert!(bar.deny.is_empty());
}

#[test]
fn a_policy_for_a_missing_gateway_or_listener_is_target_not_found_and_changes_nothing() {
    let t = translate_with(&[
        listener_policy("ghost", 1, "[{group: gateway.networking.k8s.io, kind: Gateway, name: nope}]", "  maxConnections: 1\n"),
        listener_policy("nosection", 2, "[{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: baz}]", "  maxConnections: 1\n"),
        listener_policy("wrongkind", 3, "[{group: gateway.networking.k8s.io, kind: HTTPRoute, name: gw}]", "  maxConnections: 1\n"),
    ]);
    for name in ["ghost", "nosection", "wrongkind"] {
        assert_eq!(verdicts(&t, PolicyKind::Listener, name), ["Accepted=False/TargetNotFound"], "{name}");
    }
    assert!(t.dataplane.listeners.values().all(|l| l.policy == Default::default()));
}

#[test]
fn bad_cidrs_and_negative_or_zero_durations_make_the_policy_invalid_and_change_nothing() {
    let t = translate_with(&[
        listener_policy("cidr", 1, GW, "  clientCIDRs: {allow: [10.0.0.0/33]}\n"),
        listener_policy("negative", 2, FOO, "  idleTimeout: 0ms\n"),
        backend_policy("zero", 3, ROUTE, "  connectTimeout: 0s\n"),
    ]);
    assert_eq!(verdicts(&t, PolicyKind::Listener, "cidr"), ["Accepted=False/Invalid"]);
    assert_eq!(verdicts(&t, PolicyKind::Listener, "negative"), ["Accepted=False/Invalid"]);
    assert_eq!(verdicts(&t, PolicyKind::Backend, "zero"), ["Accepted=False/Invalid"]);
    let message = &t.status.policies[&(PolicyKind::Listener, ObjectKey::new("default", "cidr"))][0].conditions[0].message;
    assert!(message.contains("10.0.0.0/33"), "the message names the bad value: {message}");
    assert!(t.dataplane.listeners.values().all(|l| l.policy == Default::default() && l.backends.iter().all(|b| b.policy == Default::default())));
}

#[test]
fn two_policies_setting_one_field_on_one_target_conflict_and_the_older_wins_whole() {
    let t = translate_with(&[
        listener_policy("newer", 5, FOO, "  maxConnections: 7\n  idleTimeout: 9s\n"),
        listener_policy("older", 1, FOO, "  maxConnections: 3\n"),
    ]);
    assert_eq!(verdicts(&t, PolicyKind::Listener, "older"), ["Accepted=True/Accepted"]);
    assert_eq!(verdicts(&t, PolicyKind::Listener, "newer"), ["Accepted=False/Conflicted"]);
    let foo = &t.dataplane.listeners[&8088].policy;
    assert_eq!(foo.max_connections, Some(3));
    assert_eq!(foo.idle_timeout, None, "a conflicted policy applies none of its fields there");
}

#[test]
fn a_route_policy_covers_every_backend_and_a_service_policy_overrides_it_for_its_service() {
    let t = translate_with(&[
        backend_policy("route", 1, ROUTE, "  proxyProtocol: {version: V1}\n  connectTimeout: 2s\n  retries: {attempts: 1}\n"),
        backend_policy("svc", 2, SERVICE_B, "  proxyProtocol: {version: V2}\n  outlierDetection: {consecutiveConnectFailures: 2, ejectionTime: 10s}\n"),
    ]);
    assert_eq!(verdicts(&t, PolicyKind::Backend, "route"), ["Accepted=True/Accepted"]);
    assert_eq!(verdicts(&t, PolicyKind::Backend, "svc"), ["Accepted=True/Accepted"]);
    let groups = &t.dataplane.listeners[&8088].backends;
    assert_eq!(groups[0].policy.send_proxy_protocol, Some(ProxyProtocolVersion::V1));
    assert_eq!(groups[1].policy.send_proxy_protocol, Some(ProxyProtocolVersion::V2), "the Service's policy is more specific");
    assert_eq!(groups[1].policy.connect_timeout, Some(Duration::from_secs(2)), "the route's fields still apply");
    assert_eq!(groups[0].policy.outlier, None);
    assert_eq!(groups[1].policy.outlier.map(|o| o.consecutive_failures), Some(2));
}

#[test]
fn a_backend_policy_for_a_missing_service_is_target_not_found() {
    let t = translate_with(&[backend_policy("ghost", 1, "[{group: \"\", kind: Service, name: nope}]", "  retries: {attempts: 2}\n")]);
    assert_eq!(verdicts(&t, PolicyKind::Backend, "ghost"), ["Accepted=False/TargetNotFound"]);
    assert!(t.dataplane.listeners[&8088].backends.iter().all(|b| b.policy.retries.is_none()));
}

#[test]
fn a_policy_on_another_controllers_gateway_or_route_gets_no_status_from_sockgate() {
    let other = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: eg}\nspec: {controllerName: gateway.envoyproxy.io/gatewayclass-controller}\n---
apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: envoy}\nspec:\n  gatewayClassName: eg\n  listeners: [{name: x, port: 9000, protocol: TCP}]\n---
apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {name: theirs}\nspec:\n  parentRefs: [{name: envoy}]\n  rules: [{backendRefs: [{name: a, port: 1}]}]\n";
    let t = translate_with(&[
        other.to_string(),
        listener_policy("on-envoy", 1, "[{group: gateway.networking.k8s.io, kind: Gateway, name: envoy}]", "  maxConnections: 1\n"),
        backend_policy("on-their-route", 2, "[{group: gateway.networking.k8s.io, kind: TCPRoute, name: theirs}]", "  retries: {attempts: 2}\n"),
        listener_policy("both", 3, "[{group: gateway.networking.k8s.io, kind: Gateway, name: envoy}, {group: gateway.networking.k8s.io, kind: Gateway, name: gw}]", "  idleTimeout: 5s\n"),
    ]);
    assert!(!t.status.policies.contains_key(&(PolicyKind::Listener, ObjectKey::new("default", "on-envoy"))));
    assert!(!t.status.policies.contains_key(&(PolicyKind::Backend, ObjectKey::new("default", "on-their-route"))));
    assert_eq!(verdicts(&t, PolicyKind::Listener, "both"), ["Accepted=True/Accepted"], "only the target of sockgate's is judged");
    assert_eq!(t.dataplane.listeners[&8088].policy.max_connections, None);
    assert!(t.dataplane.listeners[&8088].backends.iter().all(|b| b.policy.retries.is_none()));
}

#[test]
fn the_old_client_cidrs_spelling_still_applies_with_a_deprecation_message_and_both_spellings_are_invalid() {
    let t = translate_with(&[listener_policy("old", 1, FOO, "  clientCidrs: {deny: [198.18.9.0/24]}\n")]);
    let condition = &t.status.policies[&(PolicyKind::Listener, ObjectKey::new("default", "old"))][0].conditions[0];
    assert!(condition.status, "{condition:?}");
    assert_eq!(condition.message, "spec.clientCidrs is deprecated: rename it to spec.clientCIDRs (the old spelling is read in v1alpha1 only)");
    assert!(!t.dataplane.listeners[&8088].policy.admits("198.18.9.7".parse().unwrap()), "the deny list still applies");
    let t = translate_with(&[listener_policy("both", 1, FOO, "  clientCidrs: {deny: [198.18.9.0/24]}\n  clientCIDRs: {deny: [198.18.8.0/24]}\n")]);
    assert_eq!(verdicts(&t, PolicyKind::Listener, "both"), ["Accepted=False/Invalid"]);
}

#[test]
fn policy_durations_are_gateway_api_durations_and_a_bare_number_is_refused_by_the_schema() {
    let t = translate_with(&[listener_policy("gep", 1, FOO, "  idleTimeout: 1m30s\n")]);
    assert_eq!(t.dataplane.listeners[&8088].policy.idle_timeout, Some(Duration::from_secs(90)));
    for bad in ["\"30\"", "1.5s", "-5s"] {
        let text = format!("{BASE}---\n{}", listener_policy("bare", 1, FOO, &format!("  idleTimeout: {bad}\n")));
        let e = load_text(Path::new("t.yaml"), &text).unwrap_err().to_string();
        assert!(e.contains("ListenerPolicy default/bare: spec.idleTimeout: ") && e.contains("does not match the pattern ^([0-9]{1,5}(h|m|s|ms)){1,4}$"), "{e}");
    }
}

#[test]
fn a_policy_whose_applied_manifest_lost_a_field_to_the_servers_pruning_is_not_accepted_and_applies_nothing() {
    let text = format!("{BASE}---\n{}", listener_policy("typo", 1, FOO, "  maxConnections: 5\n"));
    let mut snapshot = load_text(Path::new("t.yaml"), &text).unwrap().snapshot;
    // What the Kubernetes source records when `clientCIDR:` was applied and pruned.
    snapshot.pruned_fields.insert(("ListenerPolicy".into(), ObjectKey::new("default", "typo")), vec!["unknown field \"spec.clientCIDR\" (did you mean \"clientCIDRs\"?)".into()]);
    let t = translate(&snapshot, &Settings::default());
    assert_eq!(verdicts(&t, PolicyKind::Listener, "typo"), ["Accepted=False/Invalid"]);
    let condition = &t.status.policies[&(PolicyKind::Listener, ObjectKey::new("default", "typo"))][0].conditions[0];
    assert!(condition.message.starts_with("unknown field \"spec.clientCIDR\" (did you mean \"clientCIDRs\"?): in the manifest last applied with kubectl, dropped by the API server"), "{}", condition.message);
    assert_eq!(t.dataplane.listeners[&8088].policy.max_connections, None, "a policy not accepted applies none of its fields");
}

#[test]
fn keepalive_and_user_timeout_default_sensibly_and_a_policy_overrides_each_part_per_side() {
    let t = translate_with(&[]);
    let defaults = config::Liveness::default();
    assert_eq!((defaults.keepalive_idle, defaults.keepalive_interval, defaults.keepalive_probes, defaults.user_timeout), (Duration::from_secs(120), Duration::from_secs(30), 4, None));
    assert_eq!(t.dataplane.listeners[&8088].policy.liveness, defaults, "no policy: the defaults, so a vanished peer is let go of");
    let t = translate_with(&[
        listener_policy("alive", 1, FOO, "  tcpKeepalive: {idleTime: 10s}\n  tcpUserTimeout: 20s\n"),
        backend_policy("svc", 1, "[{kind: Service, name: a}]", "  tcpKeepalive: {interval: 5s, probes: 9}\n"),
    ]);
    let listener = &t.dataplane.listeners[&8088];
    assert_eq!(listener.policy.liveness, config::Liveness { keepalive_idle: Duration::from_secs(10), user_timeout: Some(Duration::from_secs(20)), ..defaults });
    let a = listener.backends.iter().find(|b| b.service.name == "a").unwrap();
    assert_eq!(a.policy.liveness, config::Liveness { keepalive_interval: Duration::from_secs(5), keepalive_probes: 9, ..defaults });
    let b = listener.backends.iter().find(|b| b.service.name == "b").unwrap();
    assert_eq!(b.policy.liveness, defaults, "the other Service keeps the defaults");
}

#[test]
fn keepalive_values_the_kernel_cannot_take_make_the_policy_invalid_naming_the_value() {
    for (fields, message) in [
        ("  tcpKeepalive: {idleTime: 1500ms}\n", "tcpKeepalive.idleTime must be whole seconds (the kernel counts keepalive time in seconds), is 1500ms"),
        ("  tcpKeepalive: {interval: 0s}\n", "tcpKeepalive.interval must be longer than zero"),
        ("  tcpUserTimeout: 0s\n", "tcpUserTimeout must be longer than zero"),
    ] {
        let t = translate_with(&[listener_policy("bad", 1, FOO, fields)]);
        assert_eq!(verdicts(&t, PolicyKind::Listener, "bad"), ["Accepted=False/Invalid"], "{fields}");
        let condition = &t.status.policies[&(PolicyKind::Listener, ObjectKey::new("default", "bad"))][0].conditions[0];
        assert_eq!(condition.message, message);
        assert_eq!(t.dataplane.listeners[&8088].policy.liveness, config::Liveness::default());
    }
    // Out of the schema's range: the manifest itself is refused, naming the field.
    let text = format!("{BASE}---\n{}", listener_policy("bad", 1, FOO, "  tcpKeepalive: {probes: 128}\n"));
    let error = load_text(Path::new("t.yaml"), &text).err().expect("refused").to_string();
    assert!(error.contains("ListenerPolicy default/bad: spec.tcpKeepalive.probes: must be at most 127, got 128"), "{error}");
}

#[test]
fn a_route_policys_load_balancer_sets_its_listeners_algorithm_and_on_a_service_it_is_invalid() {
    let t = translate_with(&[]);
    assert_eq!(t.dataplane.listeners[&8088].load_balancer, config::LoadBalancing::RoundRobin, "the default");
    let t = translate_with(&[backend_policy("hash", 1, ROUTE, "  loadBalancer: {type: ConsistentHash}\n")]);
    assert_eq!(verdicts(&t, PolicyKind::Backend, "hash"), ["Accepted=True/Accepted"]);
    assert_eq!(t.dataplane.listeners[&8088].load_balancer, config::LoadBalancing::ConsistentHash);
    assert_eq!(t.dataplane.listeners[&8089].load_balancer, config::LoadBalancing::RoundRobin, "listener bar has no route of that policy");
    let t = translate_with(&[backend_policy("svc", 1, "[{kind: Service, name: a}]", "  loadBalancer: {type: ConsistentHash}\n")]);
    assert_eq!(verdicts(&t, PolicyKind::Backend, "svc"), ["Accepted=False/Invalid"]);
    assert_eq!(t.dataplane.listeners[&8088].load_balancer, config::LoadBalancing::RoundRobin);
}

#[test]
fn least_connections_is_a_route_policys_algorithm() {
    let t = translate_with(&[backend_policy("least", 1, ROUTE, "  loadBalancer: {type: LeastConnections}\n")]);
    assert_eq!(verdicts(&t, PolicyKind::Backend, "least"), ["Accepted=True/Accepted"]);
    assert_eq!(t.dataplane.listeners[&8088].load_balancer, config::LoadBalancing::LeastConnections);
}

#[test]
fn a_service_policys_health_check_reaches_that_services_backend_with_defaults_for_what_it_leaves_out() {
    let t = translate_with(&[backend_policy("hc", 1, SERVICE_B, "  healthCheck:\n    interval: 2s\n    send: {text: \"PING\\r\\n\"}\n    receive: {hex: \"2b504f4e47\"}\n")]);
    assert_eq!(verdicts(&t, PolicyKind::Backend, "hc"), ["Accepted=True/Accepted"]);
    let groups = &t.dataplane.listeners[&8088].backends;
    assert_eq!(groups[0].policy.health_check, None, "Service a has no check");
    let check = groups[1].policy.health_check.clone().expect("Service b's check");
    assert_eq!(
        check,
        config::HealthCheckConfig { interval: Duration::from_secs(2), send: b"PING\r\n".to_vec(), receive: b"+PONG".to_vec(), ..config::HealthCheckConfig::default() }
    );
    assert_eq!((check.timeout, check.unhealthy_threshold, check.healthy_threshold), (Duration::from_secs(1), 3, 2), "the defaults");
}

#[test]
fn a_health_check_with_a_bad_value_or_on_a_route_is_invalid_and_says_what_to_change() {
    for (targets, fields, message) in [
        (ROUTE, "  healthCheck: {interval: 5s}\n", "healthCheck is about a Service's endpoints: set it on a policy whose targetRefs are Services only"),
        (SERVICE_B, "  healthCheck: {timeout: 0s}\n", "healthCheck.timeout must be longer than zero"),
        (SERVICE_B, "  healthCheck: {send: {text: a, hex: \"61\"}}\n", "healthCheck.send sets both text and hex: keep one"),
        (SERVICE_B, "  healthCheck: {receive: {}}\n", "healthCheck.receive needs text or hex"),
    ] {
        let t = translate_with(&[backend_policy("bad", 1, targets, fields)]);
        assert_eq!(verdicts(&t, PolicyKind::Backend, "bad"), ["Accepted=False/Invalid"], "{fields}");
        let condition = &t.status.policies[&(PolicyKind::Backend, ObjectKey::new("default", "bad"))][0].conditions[0];
        assert_eq!(condition.message, message);
        assert!(t.dataplane.listeners[&8088].backends.iter().all(|g| g.policy.health_check.is_none()));
    }
    // Out of the schema: refused with the manifest, naming the field.
    for (fields, expected) in [
        ("  healthCheck: {unhealthyThreshold: 0}\n", "spec.healthCheck.unhealthyThreshold: must be at least 1, got 0"),
        ("  healthCheck: {send: {hex: \"0g\"}}\n", "spec.healthCheck.send.hex"),
        ("  healthCheck: {intervall: 5s}\n", "intervall"),
    ] {
        let text = format!("{BASE}---\n{}", backend_policy("bad", 1, SERVICE_B, fields));
        let error = load_text(Path::new("t.yaml"), &text).err().expect("refused").to_string();
        assert!(error.contains(expected), "{fields}: {error}");
    }
}
