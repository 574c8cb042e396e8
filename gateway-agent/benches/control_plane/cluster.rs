//! A synthetic cluster at a chosen scale, built as typed objects (what the
//! sources hand the translator), so the benchmark measures translation and not
//! YAML parsing.
//!
//! Shape: `namespaces` namespaces; Gateways spread over them, each with
//! `listeners_per_gateway` TCP listeners on ports of their own (one agent serves
//! every Gateway of the node, so every port is distinct); one TCPRoute per
//! listener, attached by `sectionName`, to a Service of its own whose one
//! EndpointSlice lists `endpoints_per_service` ready endpoints. Every listener is
//! therefore routed and every endpoint programmed: nothing is cheap because it
//! is invalid. Endpoint addresses come from 198.18.0.0/15 (the benchmarking
//! range); the benchmark writes them into maps and never connects to them.
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use gateway_agent::resources::gateway_api::{
    BackendRef, Gateway, GatewayClass, GatewayClassSpec, GatewaySpec, Listener, ParentReference, TcpRoute, TcpRouteRule, TcpRouteSpec, TcpRouteVersion,
};
use gateway_agent::resources::{ObjectKey, Snapshot, VersionedTcpRoute};
use k8s_openapi::api::core::v1::{Namespace, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

const CLASS: &str = "sockgate";
const FIRST_PORT: usize = 10_000;

#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub namespaces: usize,
    pub gateways: usize,
    pub listeners_per_gateway: usize,
    pub endpoints_per_service: usize,
}

impl Scale {
    /// Issue 7's scale: 1,000 Gateways, 10,000 TCPRoutes, 100,000 endpoints.
    pub const FULL: Scale = Scale {
        namespaces: 100,
        gateways: 1_000,
        listeners_per_gateway: 10,
        endpoints_per_service: 10,
    };
    /// For `cargo test --benches`: the same shape, a hundredth of the size.
    pub const SMALL: Scale = Scale {
        namespaces: 5,
        gateways: 10,
        listeners_per_gateway: 10,
        endpoints_per_service: 10,
    };

    pub fn routes(&self) -> usize {
        self.gateways * self.listeners_per_gateway
    }

    pub fn endpoints(&self) -> usize {
        self.routes() * self.endpoints_per_service
    }

    pub fn describe(&self) -> String {
        format!("{} Gateways, {} TCPRoutes, {} endpoints", self.gateways, self.routes(), self.endpoints())
    }
}

fn meta(name: String, namespace: Option<String>, age: usize) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace,
        generation: Some(1),
        creation_timestamp: Some(Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + age as i64).unwrap())),
        ..Default::default()
    }
}

fn namespace_of(scale: &Scale, gateway: usize) -> String {
    format!("team-{:03}", gateway % scale.namespaces)
}

/// The i-th endpoint address of the benchmarking range.
fn endpoint_address(i: usize) -> String {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 1)) + i as u32).to_string()
}

pub fn snapshot(scale: &Scale) -> Snapshot {
    assert!(FIRST_PORT + scale.routes() <= 65_536, "more listeners than ports");
    assert!(scale.endpoints() < 1 << 17, "more endpoints than 198.18.0.0/15 has addresses");
    let mut s = Snapshot::default();
    s.gateway_classes.insert(
        ObjectKey::cluster(CLASS),
        GatewayClass {
            metadata: meta(CLASS.into(), None, 0),
            spec: GatewayClassSpec {
                controller_name: gateway_agent::model::DEFAULT_CONTROLLER_NAME.into(),
                description: None,
            },
        },
    );
    for n in 0..scale.namespaces {
        let name = format!("team-{n:03}");
        let mut metadata = meta(name.clone(), None, 0);
        metadata.labels = Some(BTreeMap::from([("team".to_string(), name.clone())]));
        s.namespaces.insert(
            ObjectKey::cluster(name),
            Namespace {
                metadata,
                ..Default::default()
            },
        );
    }
    for g in 0..scale.gateways {
        let ns = namespace_of(scale, g);
        let gateway = format!("gateway-{g:04}");
        let listeners = (0..scale.listeners_per_gateway)
            .map(|l| Listener {
                name: format!("tcp-{l}"),
                hostname: None,
                port: (FIRST_PORT + g * scale.listeners_per_gateway + l) as i32,
                protocol: "TCP".into(),
                allowed_routes: None,
                tls: None,
            })
            .collect();
        s.gateways.insert(
            ObjectKey::new(&ns, &gateway),
            Gateway {
                metadata: meta(gateway.clone(), Some(ns.clone()), g),
                spec: GatewaySpec {
                    gateway_class_name: CLASS.into(),
                    listeners,
                    allowed_listeners: None,
                },
            },
        );
        for l in 0..scale.listeners_per_gateway {
            let r = g * scale.listeners_per_gateway + l;
            insert_route(&mut s, scale, &ns, &gateway, l, r);
        }
    }
    s
}

/// Route `r`: its TCPRoute on listener `l` of `gateway`, its Service and EndpointSlice.
fn insert_route(s: &mut Snapshot, scale: &Scale, ns: &str, gateway: &str, l: usize, r: usize) {
    let service = format!("app-{r:05}");
    let route = TcpRoute {
        metadata: meta(format!("route-{r:05}"), Some(ns.into()), r),
        spec: TcpRouteSpec {
            parent_refs: vec![ParentReference {
                name: gateway.into(),
                section_name: Some(format!("tcp-{l}")),
                ..Default::default()
            }],
            rules: vec![TcpRouteRule {
                name: None,
                backend_refs: vec![BackendRef {
                    name: service.clone(),
                    port: Some(80),
                    ..Default::default()
                }],
            }],
        },
    };
    s.tcp_routes.insert(
        ObjectKey::new(ns, format!("route-{r:05}")),
        VersionedTcpRoute {
            version: TcpRouteVersion::V1,
            route,
        },
    );
    let port = ServicePort {
        name: Some("tcp".into()),
        port: 80,
        target_port: Some(IntOrString::String("tcp".into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    s.services.insert(
        ObjectKey::new(ns, &service),
        Service {
            metadata: meta(service.clone(), Some(ns.into()), r),
            spec: Some(ServiceSpec {
                ports: Some(vec![port]),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let first = r * scale.endpoints_per_service;
    let slice = endpoint_slice(ns, &service, r, (first..first + scale.endpoints_per_service).map(endpoint_address).collect());
    s.endpoint_slices.insert(ObjectKey::new(ns, format!("{service}-abcde")), slice);
}

fn endpoint_slice(ns: &str, service: &str, age: usize, addresses: Vec<String>) -> EndpointSlice {
    let mut metadata = meta(format!("{service}-abcde"), Some(ns.into()), age);
    metadata.labels = Some(BTreeMap::from([("kubernetes.io/service-name".to_string(), service.to_string())]));
    EndpointSlice {
        metadata,
        address_type: "IPv4".into(),
        endpoints: addresses
            .into_iter()
            .map(|a| Endpoint {
                addresses: vec![a],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        ports: Some(vec![EndpointPort {
            name: Some("tcp".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    }
}

/// The same cluster after one change touching one route: the last endpoint of
/// route 0's Service is replaced (a pod rescheduled), as an EndpointSlice update.
pub fn one_route_changed(scale: &Scale, before: &Snapshot) -> Snapshot {
    let mut after = before.clone();
    let ns = namespace_of(scale, 0);
    let key = ObjectKey::new(&ns, "app-00000-abcde");
    let slice = after.endpoint_slices.get_mut(&key).expect("route 0's EndpointSlice");
    let last = slice.endpoints.last_mut().expect("an endpoint");
    last.addresses = vec![endpoint_address(scale.endpoints())];
    after
}
