//! Properties of the translator over arbitrary snapshots: it never panics, it
//! is deterministic, and what it programs is consistent with what it reports.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;

use super::{translate, Settings};
use crate::resources::gateway_api::*;
use crate::resources::{ObjectKey, Snapshot, VersionedTcpRoute};

const NAMES: &[&str] = &["a", "b", "c"];
const NAMESPACES: &[&str] = &["default", "apps", "other"];
const PORTS: &[i32] = &[80, 8088, 8089, 9000];

fn pick<T: Clone + std::fmt::Debug + 'static>(from: &'static [T]) -> impl Strategy<Value = T> {
    proptest::sample::select(from)
}

fn meta(name: &str, namespace: Option<&str>, seconds: i64) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(Into::into),
        creation_timestamp: Some(Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + seconds).unwrap())),
        labels: Some(BTreeMap::from([("team".to_string(), name.to_string())])),
        ..Default::default()
    }
}

fn listener() -> impl Strategy<Value = Listener> {
    (pick(NAMES), pick(PORTS), pick(&["TCP", "TCP", "HTTP", "UDP"]), 0..4u8, proptest::option::of(pick(&["TCPRoute", "UDPRoute"]))).prop_map(
        |(name, port, protocol, from, kind)| Listener {
            name: name.into(),
            hostname: None,
            port,
            protocol: protocol.into(),
            allowed_routes: Some(AllowedRoutes {
                namespaces: Some(RouteNamespaces {
                    from: Some(["Same", "All", "Selector", "Bogus"][from as usize].into()),
                    selector: Some(LabelSelector { match_labels: Some(BTreeMap::from([("team".into(), "a".into())])), ..Default::default() }),
                }),
                kinds: kind.map(|k| vec![RouteGroupKind { group: None, kind: k.into() }]),
            }),
            tls: None,
        },
    )
}

fn parent_ref() -> impl Strategy<Value = ParentReference> {
    (pick(NAMES), proptest::option::of(pick(NAMESPACES)), proptest::option::of(pick(NAMES)), proptest::option::of(pick(PORTS)), proptest::bool::weighted(0.1)).prop_map(
        |(name, namespace, section, port, odd_kind)| ParentReference {
            group: None,
            kind: odd_kind.then(|| "Service".into()),
            namespace: namespace.map(Into::into),
            name: name.into(),
            section_name: section.map(Into::into),
            port,
        },
    )
}

fn backend_ref() -> impl Strategy<Value = BackendRef> {
    (pick(NAMES), proptest::option::of(pick(NAMESPACES)), proptest::option::of(pick(PORTS)), proptest::option::of(0..=MAX_WEIGHT), proptest::bool::weighted(0.1)).prop_map(
        |(name, namespace, port, weight, odd_kind)| BackendRef {
            group: odd_kind.then(|| "example.com".into()),
            kind: odd_kind.then(|| "Bucket".into()),
            name: name.into(),
            namespace: namespace.map(Into::into),
            port,
            weight,
        },
    )
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    let gateways = proptest::collection::vec((pick(NAMES), pick(NAMESPACES), pick(&["sg", "other"]), proptest::collection::vec(listener(), 0..4), 0..5i64), 0..4);
    let routes = proptest::collection::vec(
        (pick(NAMES), pick(NAMESPACES), proptest::collection::vec(parent_ref(), 0..3), proptest::collection::vec(proptest::collection::vec(backend_ref(), 0..3), 0..3), 0..5i64),
        0..5,
    );
    let services = proptest::collection::vec((pick(NAMES), pick(NAMESPACES), pick(PORTS), proptest::bool::ANY, proptest::collection::vec(proptest::option::of(proptest::bool::ANY), 0..3)), 0..5);
    let grants = proptest::collection::vec((pick(NAMESPACES), pick(NAMESPACES), proptest::option::of(pick(NAMES))), 0..3);
    (gateways, routes, services, grants).prop_map(|(gateways, routes, services, grants)| {
        let mut s = Snapshot::default();
        for class in ["sg", "other"] {
            let controller = if class == "sg" { super::DEFAULT_CONTROLLER_NAME } else { "example.com/other" };
            s.gateway_classes.insert(ObjectKey::cluster(class), GatewayClass { metadata: meta(class, None, 0), spec: GatewayClassSpec { controller_name: controller.into(), description: None } });
        }
        for ns in NAMESPACES {
            s.namespaces.insert(ObjectKey::cluster(*ns), Namespace { metadata: meta(ns, None, 0), ..Default::default() });
        }
        for (name, ns, class, mut listeners, age) in gateways {
            // Listener names are unique within a Gateway (the loader rejects duplicates).
            let mut seen = std::collections::BTreeSet::new();
            listeners.retain(|l| seen.insert(l.name.clone()));
            s.gateways.insert(ObjectKey::new(ns, name), Gateway { metadata: meta(name, Some(ns), age), spec: GatewaySpec { gateway_class_name: class.into(), listeners, allowed_listeners: None } });
        }
        for (name, ns, parent_refs, rules, age) in routes {
            let rules = rules.into_iter().map(|backend_refs| TcpRouteRule { name: None, backend_refs }).collect();
            let route = TcpRoute { metadata: meta(name, Some(ns), age), spec: TcpRouteSpec { parent_refs, rules } };
            s.tcp_routes.insert(ObjectKey::new(ns, name), VersionedTcpRoute { version: TcpRouteVersion::V1Alpha2, route });
        }
        for (i, (name, ns, port, named_target, readiness)) in services.into_iter().enumerate() {
            let target = if named_target { IntOrString::String("web".into()) } else { IntOrString::Int(3000) };
            let spec = ServiceSpec { ports: Some(vec![ServicePort { name: Some("web".into()), port, target_port: Some(target), ..Default::default() }]), ..Default::default() };
            s.services.insert(ObjectKey::new(ns, name), Service { metadata: meta(name, Some(ns), 0), spec: Some(spec), ..Default::default() });
            let mut slice_meta = meta(&format!("{name}-{i}"), Some(ns), 0);
            slice_meta.labels = Some(BTreeMap::from([("kubernetes.io/service-name".to_string(), name.to_string())]));
            let endpoints = readiness
                .into_iter()
                .enumerate()
                .map(|(j, ready)| Endpoint { addresses: vec![format!("198.18.{i}.{j}")], conditions: Some(EndpointConditions { ready, ..Default::default() }), ..Default::default() })
                .collect();
            let slice = EndpointSlice { metadata: slice_meta, address_type: "IPv4".into(), endpoints, ports: Some(vec![EndpointPort { name: Some("web".into()), port: Some(3000), ..Default::default() }]) };
            s.endpoint_slices.insert(ObjectKey::new(ns, format!("{name}-{i}")), slice);
        }
        for (i, (from, to, name)) in grants.into_iter().enumerate() {
            let spec = ReferenceGrantSpec {
                from: vec![ReferenceGrantFrom { group: GROUP.into(), kind: "TCPRoute".into(), namespace: from.into() }],
                to: vec![ReferenceGrantTo { group: String::new(), kind: "Service".into(), name: name.map(Into::into) }],
            };
            s.reference_grants.insert(ObjectKey::new(to, format!("g{i}")), ReferenceGrant { metadata: meta(&format!("g{i}"), Some(to), 0), spec });
        }
        s
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn translation_never_panics_is_deterministic_and_programs_only_what_it_reports(s in snapshot()) {
        let settings = Settings::default();
        let t = translate(&s, &settings);
        prop_assert_eq!(&t, &translate(&s, &settings));
        for (port, listener) in &t.dataplane.listeners {
            // Only sockgate's Gateways are programmed, only on the port their listener names...
            let gateway = &s.gateways[&listener.gateway];
            prop_assert_eq!(&gateway.spec.gateway_class_name, "sg");
            let spec = gateway.spec.listeners.iter().find(|l| l.name == listener.listener).unwrap();
            prop_assert_eq!(spec.port, i32::from(*port));
            prop_assert_eq!(&spec.protocol, "TCP");
            // ...and a routed listener's route reports itself Accepted on that Gateway.
            if let Some(route) = &listener.route {
                let parents = &t.status.routes[route];
                prop_assert!(parents.iter().any(|p| p.conditions[0].status && p.parent_ref.name == listener.gateway.name));
            }
            // Weight 0 never has a share; weights never exceed the API's maximum.
            prop_assert!(listener.backends.iter().all(|b| b.weight <= MAX_WEIGHT as u32));
        }
        // Nothing of the other controller's appears in the status.
        prop_assert!(t.status.gateways.keys().all(|k| s.gateways[k].spec.gateway_class_name == "sg"));
    }
}
