//! Gateway API objects drawn from fuzz input, as the JSON the API server or a
//! manifest would hold.
//!
//! Random YAML rarely forms a Gateway, a route attached to it and a Service
//! with endpoints behind it; here names, namespaces and ports come from pools
//! of two, so references mostly resolve and the translator's deeper branches
//! (conflicts, grants, selectors, weights, readiness) are reached. Each field
//! keeps a way to an odd value (any string, any integer, a missing field), in
//! a minority of choices, so that the loader's checks are exercised too.
use arbitrary::Arbitrary;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Map, Value};

use gateway_agent::model::DEFAULT_CONTROLLER_NAME;

const GROUP: &str = "gateway.networking.k8s.io";

#[derive(Arbitrary, Debug)]
pub struct World {
    /// Besides GatewayClass `a`, which is always there and sockgate's.
    classes: Vec<Class>,
    gateways: Vec<Gateway>,
    services: Vec<Service>,
    routes: Vec<Route>,
    slices: Vec<Slice>,
    grants: Vec<Grant>,
    namespaces: Vec<Namespace>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Name {
    A,
    B,
}

impl Name {
    fn as_str(self) -> &'static str {
        match self {
            Name::A => "a",
            Name::B => "b",
        }
    }
}

/// A name field: two chances in three from the pool, else anything at all.
#[derive(Arbitrary, Debug)]
enum Text {
    A,
    B,
    Any(String),
}

impl Text {
    fn value(&self) -> Value {
        match self {
            Text::A => "a".into(),
            Text::B => "b".into(),
            Text::Any(s) => s.as_str().into(),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Ns {
    Default,
    Apps,
}

impl Ns {
    fn as_str(self) -> &'static str {
        match self {
            Ns::Default => "default",
            Ns::Apps => "apps",
        }
    }
}

/// A port field: mostly one of two ports, else any integer or none at all.
#[derive(Arbitrary, Debug)]
enum Port {
    P80,
    P8088,
    P80Again,
    Any(i32),
    Missing,
}

impl Port {
    fn value(&self) -> Option<Value> {
        match self {
            Port::P80 | Port::P80Again => Some(80.into()),
            Port::P8088 => Some(8088.into()),
            Port::Any(n) => Some((*n).into()),
            Port::Missing => None,
        }
    }

    fn insert(&self, into: &mut Map<String, Value>, key: &str) {
        if let Some(v) = self.value() {
            into.insert(key.into(), v);
        }
    }
}

/// TCP one time in two.
#[derive(Arbitrary, Debug)]
enum Protocol {
    Tcp,
    Other(OtherProtocol),
}

#[derive(Arbitrary, Debug)]
enum OtherProtocol {
    Udp,
    Http,
    Any(String),
}

impl Protocol {
    fn value(&self) -> Value {
        match self {
            Protocol::Tcp => "TCP".into(),
            Protocol::Other(OtherProtocol::Udp) => "UDP".into(),
            Protocol::Other(OtherProtocol::Http) => "HTTP".into(),
            Protocol::Other(OtherProtocol::Any(s)) => s.as_str().into(),
        }
    }
}

/// A `kind` field: absent (the default kind) or the right kind three times in four.
#[derive(Arbitrary, Debug)]
enum Kind {
    Absent,
    Right,
    Wrong(Text),
    AbsentAgain,
}

/// Creation time and generation: None leaves them to the agent.
#[derive(Arbitrary, Debug)]
struct Meta {
    seconds: Option<u8>,
    generation: Option<i64>,
    team: Option<Name>,
}

impl Meta {
    const NONE: Meta = Meta {
        seconds: None,
        generation: None,
        team: None,
    };
}

fn metadata(name: Value, namespace: Option<Ns>, meta: &Meta) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("name".into(), name);
    if let Some(ns) = namespace {
        m.insert("namespace".into(), ns.as_str().into());
    }
    if let Some(s) = meta.seconds {
        let t = Timestamp::from_second(1_700_000_000 + i64::from(s)).unwrap();
        m.insert("creationTimestamp".into(), t.to_string().into());
    }
    if let Some(g) = meta.generation {
        m.insert("generation".into(), g.into());
    }
    if let Some(team) = meta.team {
        m.insert("labels".into(), json!({ "team": team.as_str() }));
    }
    m
}

#[derive(Arbitrary, Debug)]
struct Class {
    name: Name,
    ours: bool,
    meta: Meta,
}

#[derive(Arbitrary, Debug)]
struct Gateway {
    name: Text,
    namespace: Option<Ns>,
    class: Text,
    beta: bool,
    listeners: Vec<Listener>,
    meta: Meta,
}

#[derive(Arbitrary, Debug)]
struct Listener {
    name: Text,
    port: Port,
    protocol: Protocol,
    hostname: Option<Name>,
    from: Option<From>,
    selector: Option<Selector>,
    kinds: Option<Vec<RouteKind>>,
}

#[derive(Arbitrary, Debug)]
enum From {
    Same,
    All,
    Selector,
    Any(String),
}

#[derive(Arbitrary, Debug)]
struct Selector {
    team: Option<Name>,
    expression: Option<(Operator, Vec<Name>)>,
}

#[derive(Arbitrary, Debug)]
enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Any(String),
}

#[derive(Arbitrary, Debug)]
struct RouteKind {
    group: Option<Text>,
    tcp_route: bool,
}

#[derive(Arbitrary, Debug)]
struct Route {
    name: Text,
    namespace: Option<Ns>,
    v1: bool,
    parents: Vec<Parent>,
    rules: Vec<Rule>,
    meta: Meta,
}

#[derive(Arbitrary, Debug)]
struct Parent {
    name: Text,
    namespace: Option<Ns>,
    section: Option<Name>,
    port: Option<Port>,
    kind: Kind,
}

#[derive(Arbitrary, Debug)]
struct Rule {
    name: Option<Name>,
    backends: Vec<Backend>,
}

#[derive(Arbitrary, Debug)]
struct Backend {
    name: Text,
    namespace: Option<Ns>,
    port: Port,
    weight: Option<Weight>,
    kind: Kind,
}

#[derive(Arbitrary, Debug)]
enum Weight {
    Small(u8),
    Any(i32),
}

#[derive(Arbitrary, Debug)]
struct Service {
    name: Name,
    namespace: Option<Ns>,
    ports: Vec<ServicePort>,
    /// The EndpointSlice the cluster's controller would write for it (the
    /// independent `slices` of the world may add odd ones).
    slice: Option<ServiceSlice>,
}

#[derive(Arbitrary, Debug)]
struct ServiceSlice {
    /// Ports named after the Service's, as the controller writes them; else
    /// none, and the Service's numeric targetPort applies.
    named_ports: bool,
    endpoints: Vec<Endpoint>,
}

#[derive(Arbitrary, Debug)]
struct ServicePort {
    name: Option<Name>,
    port: Port,
    target: Option<Target>,
    udp: bool,
}

#[derive(Arbitrary, Debug)]
enum Target {
    Number(Port),
    Named(Name),
}

#[derive(Arbitrary, Debug)]
struct Slice {
    name: Text,
    namespace: Option<Ns>,
    service: Option<Name>,
    beta: bool,
    address_type: AddressType,
    ports: Option<Vec<SlicePort>>,
    endpoints: Vec<Endpoint>,
}

#[derive(Arbitrary, Debug)]
enum AddressType {
    IPv4,
    IPv6,
    Fqdn,
}

#[derive(Arbitrary, Debug)]
struct SlicePort {
    name: Option<Name>,
    port: Option<Port>,
    udp: bool,
}

#[derive(Arbitrary, Debug)]
struct Endpoint {
    addresses: Vec<Address>,
    ready: Option<bool>,
}

#[derive(Arbitrary, Debug)]
enum Address {
    V4(u8),
    V4Again(u8),
    V6(u16),
    Any(String),
}

#[derive(Arbitrary, Debug)]
struct Grant {
    name: Name,
    namespace: Ns,
    from: Vec<(Ns, bool)>,
    to: Vec<(Option<Name>, bool)>,
}

#[derive(Arbitrary, Debug)]
struct Namespace {
    name: Ns,
    team: Option<Name>,
}

impl World {
    /// The objects, each as (where it came from, its JSON), in a fixed order.
    pub fn objects(&self) -> Vec<(String, Value)> {
        let ours = Class {
            name: Name::A,
            ours: true,
            meta: Meta::NONE,
        };
        let mut out = Vec::new();
        for c in std::iter::once(&ours).chain(&self.classes) {
            let controller = if c.ours {
                DEFAULT_CONTROLLER_NAME
            } else {
                "example.com/other"
            };
            out.push(json!({
                "apiVersion": format!("{GROUP}/v1"), "kind": "GatewayClass",
                "metadata": metadata(c.name.as_str().into(), None, &c.meta),
                "spec": { "controllerName": controller },
            }));
        }
        for g in &self.gateways {
            let listeners: Vec<Value> = g.listeners.iter().map(Listener::value).collect();
            out.push(json!({
                "apiVersion": format!("{GROUP}/{}", if g.beta { "v1beta1" } else { "v1" }), "kind": "Gateway",
                "metadata": metadata(g.name.value(), g.namespace, &g.meta),
                "spec": { "gatewayClassName": g.class.value(), "listeners": listeners },
            }));
        }
        for r in &self.routes {
            let parents: Vec<Value> = r.parents.iter().map(Parent::value).collect();
            let rules: Vec<Value> = r.rules.iter().map(Rule::value).collect();
            out.push(json!({
                "apiVersion": format!("{GROUP}/{}", if r.v1 { "v1" } else { "v1alpha2" }), "kind": "TCPRoute",
                "metadata": metadata(r.name.value(), r.namespace, &r.meta),
                "spec": { "parentRefs": parents, "rules": rules },
            }));
        }
        for s in &self.services {
            let ports: Vec<Value> = s.ports.iter().map(ServicePort::value).collect();
            out.push(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": metadata(s.name.as_str().into(), s.namespace, &Meta::NONE),
                "spec": { "ports": ports },
            }));
            if let Some(slice) = &s.slice {
                out.push(slice.value(s));
            }
        }
        for s in &self.slices {
            out.push(s.value());
        }
        for g in &self.grants {
            out.push(g.value());
        }
        for n in &self.namespaces {
            let meta = Meta {
                seconds: None,
                generation: None,
                team: n.team,
            };
            out.push(json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": metadata(n.name.as_str().into(), None, &meta) }));
        }
        out.into_iter()
            .enumerate()
            .map(|(i, v)| (format!("object-{i}"), v))
            .collect()
    }
}

impl Kind {
    fn insert(&self, into: &mut Map<String, Value>, right: &str) {
        match self {
            Kind::Absent | Kind::AbsentAgain => {}
            Kind::Right => {
                into.insert("kind".into(), right.into());
            }
            Kind::Wrong(text) => {
                into.insert("kind".into(), text.value());
            }
        }
    }
}

impl Listener {
    fn value(&self) -> Value {
        let mut l = Map::new();
        l.insert("name".into(), self.name.value());
        self.port.insert(&mut l, "port");
        l.insert("protocol".into(), self.protocol.value());
        // The CRD forbids a hostname on TCP and UDP listeners: a world that
        // gave them one would lose the whole Gateway to the loader.
        if let (Some(h), false) = (self.hostname, matches!(self.protocol, Protocol::Tcp | Protocol::Other(OtherProtocol::Udp))) {
            l.insert("hostname".into(), format!("{}.example", h.as_str()).into());
        }
        let mut allowed = Map::new();
        if self.from.is_some() || self.selector.is_some() {
            let mut namespaces = Map::new();
            if let Some(from) = &self.from {
                let from = match from {
                    From::Same => "Same",
                    From::All => "All",
                    From::Selector => "Selector",
                    From::Any(s) => s.as_str(),
                };
                namespaces.insert("from".into(), from.into());
            }
            if let Some(selector) = &self.selector {
                namespaces.insert("selector".into(), selector.value());
            }
            allowed.insert("namespaces".into(), namespaces.into());
        }
        if let Some(kinds) = &self.kinds {
            let kinds: Vec<Value> = kinds
                .iter()
                .map(|k| {
                    let mut kind = Map::new();
                    if let Some(g) = &k.group {
                        kind.insert("group".into(), g.value());
                    }
                    kind.insert(
                        "kind".into(),
                        if k.tcp_route { "TCPRoute" } else { "UDPRoute" }.into(),
                    );
                    kind.into()
                })
                .collect();
            allowed.insert("kinds".into(), kinds.into());
        }
        if !allowed.is_empty() {
            l.insert("allowedRoutes".into(), allowed.into());
        }
        l.into()
    }
}

impl Selector {
    fn value(&self) -> Value {
        let mut s = Map::new();
        if let Some(team) = self.team {
            s.insert("matchLabels".into(), json!({ "team": team.as_str() }));
        }
        if let Some((operator, values)) = &self.expression {
            let operator = match operator {
                Operator::In => "In",
                Operator::NotIn => "NotIn",
                Operator::Exists => "Exists",
                Operator::DoesNotExist => "DoesNotExist",
                Operator::Any(s) => s.as_str(),
            };
            let values: Vec<&str> = values.iter().map(|v| v.as_str()).collect();
            s.insert(
                "matchExpressions".into(),
                json!([{ "key": "team", "operator": operator, "values": values }]),
            );
        }
        s.into()
    }
}

impl Parent {
    fn value(&self) -> Value {
        let mut p = Map::new();
        p.insert("name".into(), self.name.value());
        if let Some(ns) = self.namespace {
            p.insert("namespace".into(), ns.as_str().into());
        }
        if let Some(s) = self.section {
            p.insert("sectionName".into(), s.as_str().into());
        }
        if let Some(port) = &self.port {
            port.insert(&mut p, "port");
        }
        self.kind.insert(&mut p, "Gateway");
        p.into()
    }
}

impl Rule {
    fn value(&self) -> Value {
        let backends: Vec<Value> = self.backends.iter().map(Backend::value).collect();
        let mut r = Map::new();
        if let Some(n) = self.name {
            r.insert("name".into(), n.as_str().into());
        }
        r.insert("backendRefs".into(), backends.into());
        r.into()
    }
}

impl Backend {
    fn value(&self) -> Value {
        let mut b = Map::new();
        b.insert("name".into(), self.name.value());
        if let Some(ns) = self.namespace {
            b.insert("namespace".into(), ns.as_str().into());
        }
        self.port.insert(&mut b, "port");
        match &self.weight {
            Some(Weight::Small(w)) => b.insert("weight".into(), (*w).into()),
            Some(Weight::Any(w)) => b.insert("weight".into(), (*w).into()),
            None => None,
        };
        self.kind.insert(&mut b, "Service");
        b.into()
    }
}

impl ServicePort {
    fn value(&self) -> Value {
        let mut p = Map::new();
        if let Some(n) = self.name {
            p.insert("name".into(), n.as_str().into());
        }
        self.port.insert(&mut p, "port");
        match &self.target {
            Some(Target::Number(port)) => port.insert(&mut p, "targetPort"),
            Some(Target::Named(n)) => {
                p.insert("targetPort".into(), n.as_str().into());
            }
            None => {}
        }
        if self.udp {
            p.insert("protocol".into(), "UDP".into());
        }
        p.into()
    }
}

impl ServiceSlice {
    fn value(&self, service: &Service) -> Value {
        let name = format!("{}-controller", service.name.as_str());
        let mut meta = metadata(name.into(), service.namespace, &Meta::NONE);
        meta.insert(
            "labels".into(),
            json!({ "kubernetes.io/service-name": service.name.as_str() }),
        );
        let mut slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": meta, "addressType": "IPv4", "endpoints": endpoints_value(&self.endpoints),
        });
        if self.named_ports {
            let ports: Vec<Value> = service
                .ports
                .iter()
                .map(|p| {
                    let mut port = Map::new();
                    if let Some(n) = p.name {
                        port.insert("name".into(), n.as_str().into());
                    }
                    match &p.target {
                        Some(Target::Number(target)) => target.insert(&mut port, "port"),
                        _ => p.port.insert(&mut port, "port"),
                    }
                    port.into()
                })
                .collect();
            slice["ports"] = ports.into();
        }
        slice
    }
}

fn endpoints_value(endpoints: &[Endpoint]) -> Vec<Value> {
    endpoints
        .iter()
        .map(|e| {
            let addresses: Vec<Value> = e
                .addresses
                .iter()
                .map(|a| match a {
                    Address::V4(n) | Address::V4Again(n) => format!("198.18.2.{n}").into(),
                    Address::V6(n) => format!("2001:db8::{n:x}").into(),
                    Address::Any(s) => s.as_str().into(),
                })
                .collect();
            let mut endpoint = Map::new();
            endpoint.insert("addresses".into(), addresses.into());
            if let Some(ready) = e.ready {
                endpoint.insert("conditions".into(), json!({ "ready": ready }));
            }
            endpoint.into()
        })
        .collect()
}

impl Slice {
    fn value(&self) -> Value {
        let mut meta = metadata(self.name.value(), self.namespace, &Meta::NONE);
        if let Some(service) = self.service {
            meta.insert(
                "labels".into(),
                json!({ "kubernetes.io/service-name": service.as_str() }),
            );
        }
        let address_type = match self.address_type {
            AddressType::IPv4 => "IPv4",
            AddressType::IPv6 => "IPv6",
            AddressType::Fqdn => "FQDN",
        };
        let endpoints = endpoints_value(&self.endpoints);
        let mut slice = json!({
            "apiVersion": if self.beta { "discovery.k8s.io/v1beta1" } else { "discovery.k8s.io/v1" }, "kind": "EndpointSlice",
            "metadata": meta, "addressType": address_type, "endpoints": endpoints,
        });
        if let Some(ports) = &self.ports {
            let ports: Vec<Value> = ports
                .iter()
                .map(|p| {
                    let mut port = Map::new();
                    if let Some(n) = p.name {
                        port.insert("name".into(), n.as_str().into());
                    }
                    if let Some(number) = &p.port {
                        number.insert(&mut port, "port");
                    }
                    if p.udp {
                        port.insert("protocol".into(), "UDP".into());
                    }
                    port.into()
                })
                .collect();
            slice["ports"] = ports.into();
        }
        slice
    }
}

impl Grant {
    fn value(&self) -> Value {
        let from: Vec<Value> = self
            .from
            .iter()
            .map(|(ns, tcp_route)| json!({ "group": GROUP, "kind": if *tcp_route { "TCPRoute" } else { "HTTPRoute" }, "namespace": ns.as_str() }))
            .collect();
        let to: Vec<Value> = self
            .to
            .iter()
            .map(|(name, service)| {
                let mut t = Map::new();
                t.insert("group".into(), "".into());
                t.insert(
                    "kind".into(),
                    if *service { "Service" } else { "Secret" }.into(),
                );
                if let Some(n) = name {
                    t.insert("name".into(), n.as_str().into());
                }
                t.into()
            })
            .collect();
        json!({
            "apiVersion": format!("{GROUP}/v1beta1"), "kind": "ReferenceGrant",
            "metadata": metadata(self.name.as_str().into(), Some(self.namespace), &Meta::NONE),
            "spec": { "from": from, "to": to },
        })
    }
}
