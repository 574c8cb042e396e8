//! Policy attachment (GEP-713): which ListenerPolicy and BackendPolicy fields
//! apply to which listener and backend, and every policy's status.
//!
//! Rules:
//! - A policy whose fields do not parse (a bad CIDR, a zero duration, both
//!   clientCIDRs and its deprecated spelling clientCidrs) is
//!   Accepted=False/Invalid and changes nothing. One using only the deprecated
//!   clientCidrs is applied, and its Accepted condition says to rename it.
//! - Each targetRef is one target: a Gateway, or one listener of it
//!   (`sectionName`); a TCPRoute; a Service. A target that does not exist,
//!   or of a kind the policy cannot attach to, gets
//!   Accepted=False/TargetNotFound. A Gateway of another controller's class,
//!   or a route attached only to such Gateways, gets no status from sockgate
//!   at all: that target is the other controller's to judge.
//! - Two policies setting the same field on one target conflict: the older
//!   (creationTimestamp, then namespace/name) wins; the newer is
//!   Accepted=False/Conflicted for that target and none of its fields apply there.
//! - The more specific target wins field by field: a listener's policy over
//!   its Gateway's, a Service's over the TCPRoute's.
use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::age_order;
use super::attach::parent_gateway;
use super::config::{BackendPolicyConfig, DataplaneConfig, ListenerPolicyConfig, Liveness, LoadBalancing, OutlierConfig};
use super::status::{reasons, types, Condition, PolicyAncestor, PolicyKind};
use crate::dataplane::xdp::Cidr;
use crate::resources::gateway_api::{ParentReference, GROUP as GATEWAY_GROUP};
use crate::resources::policies::{AncestorRef, BackendPolicySpec, ListenerPolicySpec};
use crate::resources::{Gateway, ObjectKey, Snapshot};

/// What a policy's targets resolve to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Gateway(ObjectKey),
    Listener(ObjectKey, String),
    Route(ObjectKey),
    Service(ObjectKey),
}

/// A policy's fields, parsed: each field it sets, by name, with its value.
type Fields<V> = BTreeMap<&'static str, V>;

#[derive(Clone, Debug, PartialEq)]
enum ListenerField {
    Cidrs(Vec<Cidr>, Vec<Cidr>),
    MaxConnections(u32),
    IdleTimeout(Duration),
    AcceptProxy(bool),
    Keepalive(Keepalive),
    UserTimeout(Duration),
}

#[derive(Clone, Debug, PartialEq)]
enum BackendField {
    SendProxy(crate::resources::policies::ProxyProtocolVersion),
    ConnectTimeout(Duration),
    Retries(u32),
    Outlier(OutlierConfig),
    LoadBalancer(LoadBalancing),
    HealthCheck(crate::model::config::HealthCheckConfig),
    Keepalive(Keepalive),
    UserTimeout(Duration),
}

/// `tcpKeepalive`, parsed: each part the policy sets (the rest stays default).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Keepalive {
    idle: Option<Duration>,
    interval: Option<Duration>,
    probes: Option<u32>,
}

/// A keepalive time: whole seconds (what TCP_KEEPIDLE and TCP_KEEPINTVL take), at least 1s.
fn keepalive_time(text: &str, field: &str) -> Result<Duration, String> {
    let d = positive(text, field)?;
    if d.subsec_nanos() != 0 || d.as_secs() > i32::MAX as u64 {
        return Err(format!("{field} must be whole seconds (the kernel counts keepalive time in seconds), is {text}"));
    }
    Ok(d)
}

fn keepalive(spec: &crate::resources::policies::TcpKeepalive) -> Result<Keepalive, String> {
    let probes = spec
        .probes
        .map(|p| u32::try_from(p).ok().filter(|p| (1..=127).contains(p)).ok_or_else(|| format!("tcpKeepalive.probes must be 1 to 127, is {p}")))
        .transpose()?;
    Ok(Keepalive {
        idle: spec.idle_time.as_deref().map(|t| keepalive_time(t, "tcpKeepalive.idleTime")).transpose()?,
        interval: spec.interval.as_deref().map(|t| keepalive_time(t, "tcpKeepalive.interval")).transpose()?,
        probes,
    })
}

fn health_check(spec: &crate::resources::policies::HealthCheck) -> Result<crate::model::config::HealthCheckConfig, String> {
    let mut config = crate::model::config::HealthCheckConfig::default();
    if let Some(t) = &spec.interval {
        config.interval = positive(t, "healthCheck.interval")?;
    }
    if let Some(t) = &spec.timeout {
        config.timeout = positive(t, "healthCheck.timeout")?;
    }
    let threshold = |value: Option<i32>, field: &str, default: u32| match value {
        None => Ok(default),
        Some(n) => u32::try_from(n).ok().filter(|n| (1..=100).contains(n)).ok_or_else(|| format!("healthCheck.{field} must be 1 to 100, is {n}")),
    };
    config.unhealthy_threshold = threshold(spec.unhealthy_threshold, "unhealthyThreshold", config.unhealthy_threshold)?;
    config.healthy_threshold = threshold(spec.healthy_threshold, "healthyThreshold", config.healthy_threshold)?;
    let payload = |p: &Option<crate::resources::policies::HealthCheckPayload>, field: &str| -> Result<Vec<u8>, String> {
        match p.as_ref().map(|p| (p.text.as_deref(), p.hex.as_deref())) {
            None => Ok(Vec::new()),
            Some((Some(text), None)) if !text.is_empty() => Ok(text.as_bytes().to_vec()),
            Some((None, Some(hex))) => parse_hex(hex).ok_or_else(|| format!("healthCheck.{field}.hex must be pairs of hexadecimal digits, is {hex:?}")),
            Some((Some(_), Some(_))) => Err(format!("healthCheck.{field} sets both text and hex: keep one")),
            Some(_) => Err(format!("healthCheck.{field} needs text or hex")),
        }
    };
    config.send = payload(&spec.send, "send")?;
    config.receive = payload(&spec.receive, "receive")?;
    Ok(config)
}

fn parse_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.is_empty() || hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| hex.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok())).collect()
}

fn apply_keepalive(liveness: &mut Liveness, k: &Keepalive) {
    liveness.keepalive_idle = k.idle.unwrap_or(liveness.keepalive_idle);
    liveness.keepalive_interval = k.interval.unwrap_or(liveness.keepalive_interval);
    liveness.keepalive_probes = k.probes.unwrap_or(liveness.keepalive_probes);
}

fn positive(text: &str, field: &str) -> Result<Duration, String> {
    match crate::duration::parse_gep2257(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(format!("{field} must be longer than zero")),
        Err(e) => Err(format!("{field}: {e}")),
    }
}

/// The Accepted message of a policy that still spells clientCIDRs the old way.
pub const DEPRECATED_CLIENT_CIDRS: &str = "spec.clientCidrs is deprecated: rename it to spec.clientCIDRs (the old spelling is read in v1alpha1 only)";

fn listener_fields(spec: &ListenerPolicySpec) -> Result<Fields<ListenerField>, String> {
    let mut fields = Fields::new();
    let lists = match (&spec.client_cidrs, &spec.deprecated_client_cidrs) {
        (Some(_), Some(_)) => return Err("set clientCIDRs only: clientCidrs is its deprecated spelling, and both are set".into()),
        (lists, None) | (None, lists) => lists,
    };
    if let Some(lists) = lists {
        let parse = |list: &[String]| list.iter().map(|c| c.parse::<Cidr>().map_err(|e| format!("clientCIDRs: {e}"))).collect::<Result<Vec<_>, _>>();
        fields.insert("clientCIDRs", ListenerField::Cidrs(parse(&lists.allow)?, parse(&lists.deny)?));
    }
    if let Some(max) = spec.max_connections {
        let max = u32::try_from(max).ok().filter(|m| *m >= 1).ok_or_else(|| format!("maxConnections must be at least 1, is {max}"))?;
        fields.insert("maxConnections", ListenerField::MaxConnections(max));
    }
    if let Some(idle) = &spec.idle_timeout {
        fields.insert("idleTimeout", ListenerField::IdleTimeout(positive(idle, "idleTimeout")?));
    }
    if let Some(proxy) = &spec.proxy_protocol {
        fields.insert("proxyProtocol", ListenerField::AcceptProxy(proxy.accept));
    }
    if let Some(k) = &spec.tcp_keepalive {
        fields.insert("tcpKeepalive", ListenerField::Keepalive(keepalive(k)?));
    }
    if let Some(t) = &spec.tcp_user_timeout {
        fields.insert("tcpUserTimeout", ListenerField::UserTimeout(positive(t, "tcpUserTimeout")?));
    }
    Ok(fields)
}

fn backend_fields(spec: &BackendPolicySpec) -> Result<Fields<BackendField>, String> {
    let mut fields = Fields::new();
    if let Some(proxy) = &spec.proxy_protocol {
        fields.insert("proxyProtocol", BackendField::SendProxy(proxy.version));
    }
    if let Some(timeout) = &spec.connect_timeout {
        fields.insert("connectTimeout", BackendField::ConnectTimeout(positive(timeout, "connectTimeout")?));
    }
    if let Some(retries) = &spec.retries {
        let attempts = u32::try_from(retries.attempts).ok().filter(|a| *a <= 16).ok_or_else(|| format!("retries.attempts must be 0 to 16, is {}", retries.attempts))?;
        fields.insert("retries", BackendField::Retries(attempts));
    }
    if let Some(outlier) = &spec.outlier_detection {
        let failures = outlier.consecutive_connect_failures;
        let failures = u32::try_from(failures).ok().filter(|f| *f >= 1).ok_or_else(|| format!("outlierDetection.consecutiveConnectFailures must be at least 1, is {failures}"))?;
        let ejection = positive(&outlier.ejection_time, "outlierDetection.ejectionTime")?;
        fields.insert("outlierDetection", BackendField::Outlier(OutlierConfig { consecutive_failures: failures, ejection }));
    }
    if let Some(lb) = &spec.load_balancer {
        if spec.target_refs.iter().any(|t| t.kind != "TCPRoute") {
            return Err("loadBalancer is about all of a route's backends: set it on a policy whose targetRefs are TCPRoutes only".into());
        }
        let lb = match lb.type_ {
            crate::resources::policies::LoadBalancerType::RoundRobin => LoadBalancing::RoundRobin,
            crate::resources::policies::LoadBalancerType::LeastConnections => LoadBalancing::LeastConnections,
            crate::resources::policies::LoadBalancerType::ConsistentHash => LoadBalancing::ConsistentHash,
        };
        fields.insert("loadBalancer", BackendField::LoadBalancer(lb));
    }
    if let Some(check) = &spec.health_check {
        if spec.target_refs.iter().any(|t| t.kind != "Service") {
            return Err("healthCheck is about a Service's endpoints: set it on a policy whose targetRefs are Services only".into());
        }
        fields.insert("healthCheck", BackendField::HealthCheck(health_check(check)?));
    }
    if let Some(k) = &spec.tcp_keepalive {
        fields.insert("tcpKeepalive", BackendField::Keepalive(keepalive(k)?));
    }
    if let Some(t) = &spec.tcp_user_timeout {
        fields.insert("tcpUserTimeout", BackendField::UserTimeout(positive(t, "tcpUserTimeout")?));
    }
    Ok(fields)
}

fn ancestor(target: &Target) -> AncestorRef {
    let (group, kind, key, section_name) = match target {
        Target::Gateway(k) => (GATEWAY_GROUP, "Gateway", k, None),
        Target::Listener(k, s) => (GATEWAY_GROUP, "Gateway", k, Some(s.clone())),
        Target::Route(k) => (GATEWAY_GROUP, "TCPRoute", k, None),
        Target::Service(k) => ("", "Service", k, None),
    };
    let group = (!group.is_empty()).then(|| group.to_string());
    AncestorRef { group, kind: kind.into(), namespace: key.namespace.clone(), name: key.name.clone(), section_name }
}

/// One policy's verdict on one target.
struct Judged<V> {
    policy: ObjectKey,
    target: Target,
    fields: Option<Fields<V>>,
    condition: Condition,
}

/// Judges every (policy, target) pair, oldest policy first, and returns the
/// fields each target ends up with plus every policy's ancestor statuses.
fn judge<V: Clone>(
    policies: Vec<(ObjectKey, &ObjectMeta, Result<Fields<V>, String>, Vec<Result<Target, (AncestorRef, String)>>, String)>,
) -> (BTreeMap<Target, Fields<V>>, BTreeMap<ObjectKey, Vec<PolicyAncestor>>) {
    let mut policies = policies;
    policies.sort_by_key(|(key, meta, _, _, _)| age_order(meta, key));
    let mut claimed: BTreeMap<Target, Fields<V>> = BTreeMap::new();
    let mut owners: BTreeMap<(Target, &'static str), ObjectKey> = BTreeMap::new();
    let mut statuses: BTreeMap<ObjectKey, Vec<PolicyAncestor>> = BTreeMap::new();
    // `accepted` is the Accepted=True message (a deprecation notice, or empty).
    for (key, _, fields, targets, accepted) in policies {
        for target in targets {
            let judged = match (&fields, target) {
                (_, Err((ancestor_ref, why))) => {
                    statuses.entry(key.clone()).or_default().push(PolicyAncestor {
                        ancestor: ancestor_ref,
                        conditions: vec![Condition::new(types::ACCEPTED, false, reasons::TARGET_NOT_FOUND, why)],
                    });
                    continue;
                }
                (Err(why), Ok(target)) => Judged { policy: key.clone(), target, fields: None, condition: Condition::new(types::ACCEPTED, false, reasons::INVALID, why.clone()) },
                (Ok(fields), Ok(target)) => {
                    let taken: Vec<String> = fields
                        .keys()
                        .filter_map(|f| owners.get(&(target.clone(), *f)).map(|owner| format!("{f} (set by the older policy {owner})")))
                        .collect();
                    if taken.is_empty() {
                        Judged { policy: key.clone(), target, fields: Some(fields.clone()), condition: Condition::new(types::ACCEPTED, true, reasons::ACCEPTED, accepted.clone()) }
                    } else {
                        let message = format!("conflicts on {}", taken.join(", "));
                        Judged { policy: key.clone(), target, fields: None, condition: Condition::new(types::ACCEPTED, false, reasons::CONFLICTED, message) }
                    }
                }
            };
            if let Some(fields) = &judged.fields {
                for (name, value) in fields {
                    owners.insert((judged.target.clone(), name), judged.policy.clone());
                    claimed.entry(judged.target.clone()).or_default().insert(name, value.clone());
                }
            }
            statuses.entry(judged.policy).or_default().push(PolicyAncestor { ancestor: ancestor(&judged.target), conditions: vec![judged.condition] });
        }
    }
    (claimed, statuses)
}

/// Applies every policy of `snapshot` to `dataplane` and returns their statuses.
/// `gateways` are sockgate's Gateways (policies attach to nothing else of that kind).
pub fn apply(snapshot: &Snapshot, gateways: &[(&ObjectKey, &Gateway)], dataplane: &mut DataplaneConfig) -> BTreeMap<(PolicyKind, ObjectKey), Vec<PolicyAncestor>> {
    let mut statuses = BTreeMap::new();
    // A route is sockgate's when one of its parentRefs names a Gateway of sockgate's.
    let is_ours = |route: &ObjectKey, parents: &[ParentReference]| {
        parents.iter().filter_map(|p| parent_gateway(route, p)).any(|g| gateways.iter().any(|(k, _)| **k == g))
    };

    let listener_policies = snapshot
        .listener_policies
        .iter()
        .map(|(key, policy)| {
            let targets = policy
                .spec
                .target_refs
                .iter()
                .filter_map(|t| {
                    let gateway = ObjectKey::new(key.namespace.clone(), t.name.clone());
                    let wanted = match &t.section_name {
                        Some(section) => Target::Listener(gateway.clone(), section.clone()),
                        None => Target::Gateway(gateway.clone()),
                    };
                    if t.group != GATEWAY_GROUP || t.kind != "Gateway" {
                        return Some(Err((ancestor(&wanted).with_kind(&t.group, &t.kind), format!("a ListenerPolicy attaches to Gateways, not {}/{}", t.group, t.kind))));
                    }
                    let found = gateways.iter().find(|(k, _)| **k == gateway).map(|(_, g)| g);
                    match (found, &t.section_name) {
                        // Another controller's Gateway: its status is not ours to write.
                        (None, _) if snapshot.gateways.contains_key(&gateway) => None,
                        (None, _) => Some(Err((ancestor(&wanted), format!("no Gateway {gateway}")))),
                        (Some(g), Some(section)) if !g.spec.listeners.iter().any(|l| &l.name == section) => {
                            Some(Err((ancestor(&wanted), format!("Gateway {gateway} has no listener {section:?}"))))
                        }
                        _ => Some(Ok(wanted)),
                    }
                })
                .collect();
            let accepted = if policy.spec.deprecated_client_cidrs.is_some() { DEPRECATED_CLIENT_CIDRS.to_string() } else { String::new() };
            (key.clone(), &policy.metadata, pruned(snapshot, "ListenerPolicy", key).map_or_else(|| listener_fields(&policy.spec), Err), targets, accepted)
        })
        .collect();
    let (claimed, judged) = judge(listener_policies);
    statuses.extend(judged.into_iter().map(|(k, v)| ((PolicyKind::Listener, k), v)));
    // UDP listeners too: clientCIDRs filter datagrams, maxConnections caps
    // flows, idleTimeout ends idle flows (BackendPolicy fields are about
    // connecting to backends, which UDP does not do: not applied there).
    for listener in dataplane.listeners.values_mut().chain(dataplane.udp_listeners.values_mut()) {
        let mut fields = claimed.get(&Target::Gateway(listener.gateway.clone())).cloned().unwrap_or_default();
        // A policy on one listener of a Gateway (its sectionName) names the
        // Gateway's own listener, never a ListenerSet's of the same name.
        if listener.listener_set.is_none() {
            fields.extend(claimed.get(&Target::Listener(listener.gateway.clone(), listener.listener.clone())).cloned().unwrap_or_default());
        }
        listener.policy = listener_config(fields.values());
    }

    let backend_policies = snapshot
        .backend_policies
        .iter()
        .map(|(key, policy)| {
            let targets = policy
                .spec
                .target_refs
                .iter()
                .filter_map(|t| {
                    let object = ObjectKey::new(key.namespace.clone(), t.name.clone());
                    Some(match (t.group.as_deref().unwrap_or(""), t.kind.as_str()) {
                        (GATEWAY_GROUP, "TCPRoute") => match snapshot.tcp_routes.get(&object) {
                            Some(route) if is_ours(&object, &route.route.spec.parent_refs) => Ok(Target::Route(object)),
                            // A route of other controllers' Gateways only: not ours to judge.
                            Some(_) => return None,
                            None => Err((ancestor(&Target::Route(object.clone())), format!("no TCPRoute {object}"))),
                        },
                        // A Service belongs to no controller: a policy on it applies wherever sockgate routes to it.
                        ("", "Service") if snapshot.services.contains_key(&object) => Ok(Target::Service(object)),
                        ("", "Service") => Err((ancestor(&Target::Service(object.clone())), format!("no Service {object}"))),
                        (group, kind) => Err((
                            ancestor(&Target::Service(object)).with_kind(group, kind),
                            format!("a BackendPolicy attaches to TCPRoutes and Services, not {group}/{kind}"),
                        )),
                    })
                })
                .collect();
            (key.clone(), &policy.metadata, pruned(snapshot, "BackendPolicy", key).map_or_else(|| backend_fields(&policy.spec), Err), targets, String::new())
        })
        .collect();
    let (claimed, judged) = judge(backend_policies);
    statuses.extend(judged.into_iter().map(|(k, v)| ((PolicyKind::Backend, k), v)));
    for listener in dataplane.listeners.values_mut() {
        let route_fields = listener.route.as_ref().and_then(|r| claimed.get(&Target::Route(r.clone()))).cloned().unwrap_or_default();
        listener.load_balancer = match route_fields.get("loadBalancer") {
            Some(BackendField::LoadBalancer(lb)) => *lb,
            _ => LoadBalancing::RoundRobin,
        };
        for group in listener.backends.iter_mut() {
            let mut fields = route_fields.clone();
            fields.extend(claimed.get(&Target::Service(group.service.clone())).cloned().unwrap_or_default());
            group.policy = backend_config(fields.values());
        }
    }
    statuses
}

fn listener_config<'a>(fields: impl Iterator<Item = &'a ListenerField>) -> ListenerPolicyConfig {
    let mut config = ListenerPolicyConfig::default();
    for field in fields {
        match field {
            ListenerField::Cidrs(allow, deny) => (config.allow, config.deny) = (allow.clone(), deny.clone()),
            ListenerField::MaxConnections(n) => config.max_connections = Some(*n),
            ListenerField::IdleTimeout(d) => config.idle_timeout = Some(*d),
            ListenerField::AcceptProxy(accept) => config.accept_proxy_protocol = *accept,
            ListenerField::Keepalive(k) => apply_keepalive(&mut config.liveness, k),
            ListenerField::UserTimeout(d) => config.liveness.user_timeout = Some(*d),
        }
    }
    config
}

fn backend_config<'a>(fields: impl Iterator<Item = &'a BackendField>) -> BackendPolicyConfig {
    let mut config = BackendPolicyConfig::default();
    for field in fields {
        match field {
            BackendField::SendProxy(v) => config.send_proxy_protocol = Some(*v),
            BackendField::ConnectTimeout(d) => config.connect_timeout = Some(*d),
            BackendField::Retries(n) => config.retries = Some(*n),
            BackendField::Outlier(o) => config.outlier = Some(*o),
            BackendField::LoadBalancer(_) => {} // the route's, not a backend's: see apply
            BackendField::HealthCheck(h) => config.health_check = Some(h.clone()),
            BackendField::Keepalive(k) => apply_keepalive(&mut config.liveness, k),
            BackendField::UserTimeout(d) => config.liveness.user_timeout = Some(*d),
        }
    }
    config
}

trait WithKind {
    fn with_kind(self, group: &str, kind: &str) -> Self;
}

impl WithKind for AncestorRef {
    fn with_kind(mut self, group: &str, kind: &str) -> Self {
        self.group = (!group.is_empty()).then(|| group.to_string());
        self.kind = kind.to_string();
        self
    }
}

/// The kinds' status subjects, for `lines()` and the writer.
/// The fields the API server dropped from a policy's last applied manifest,
/// as the reason it is not accepted: a policy that silently lost a field (a
/// security setting, say) must not look as if it applied.
fn pruned(snapshot: &Snapshot, kind: &str, key: &ObjectKey) -> Option<String> {
    let fields = snapshot.pruned_fields.get(&(kind.to_string(), key.clone()))?;
    Some(format!(
        "{}: in the manifest last applied with kubectl, dropped by the API server (its schema has no such field); fix the manifest and apply it again",
        fields.join("; ")
    ))
}

pub fn kind_name(kind: PolicyKind) -> &'static str {
    match kind {
        PolicyKind::Listener => "ListenerPolicy",
        PolicyKind::Backend => "BackendPolicy",
    }
}
