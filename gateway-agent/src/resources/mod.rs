//! The snapshot of everything the agent reads: one type, whether it came from a
//! manifests directory or (later) from Kubernetes watchers, so that everything
//! downstream is identical in both modes.
pub mod gateway_api;
pub mod policies;

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

pub use gateway_api::{
    Gateway, GatewayClass, ListenerSet, ReferenceGrant, TcpRoute, TcpRouteVersion, UdpRoute,
};

/// namespace/name of a namespaced object ("" namespace for cluster-scoped ones).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey { namespace: namespace.into(), name: name.into() }
    }
    pub fn cluster(name: impl Into<String>) -> Self {
        ObjectKey { namespace: String::new(), name: name.into() }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// A TCPRoute together with the API version it was written in.
#[derive(Clone, Debug, PartialEq)]
pub struct VersionedTcpRoute {
    pub version: TcpRouteVersion,
    pub route: TcpRoute,
}

/// A UDPRoute together with the API version it was written in.
#[derive(Clone, Debug, PartialEq)]
pub struct VersionedUdpRoute {
    pub version: TcpRouteVersion,
    pub route: UdpRoute,
}

/// Which API a ListenerSet was read from: they have the same spec and status,
/// and routes name them by the group and kind of that API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerSetApi {
    /// `gateway.networking.k8s.io/v1` `ListenerSet` (Gateway API v1.6 on).
    V1,
    /// `gateway.networking.x-k8s.io/v1alpha1` `XListenerSet` (the experimental channel before v1.6).
    XV1Alpha1,
}

impl ListenerSetApi {
    pub fn group(self) -> &'static str {
        match self {
            ListenerSetApi::V1 => gateway_api::GROUP,
            ListenerSetApi::XV1Alpha1 => gateway_api::X_GROUP,
        }
    }
    pub fn kind(self) -> &'static str {
        match self {
            ListenerSetApi::V1 => "ListenerSet",
            ListenerSetApi::XV1Alpha1 => "XListenerSet",
        }
    }
    pub fn api_version(self) -> &'static str {
        match self {
            ListenerSetApi::V1 => "gateway.networking.k8s.io/v1",
            ListenerSetApi::XV1Alpha1 => "gateway.networking.x-k8s.io/v1alpha1",
        }
    }
}

/// A ListenerSet together with the API it was read from.
#[derive(Clone, Debug, PartialEq)]
pub struct VersionedListenerSet {
    pub api: ListenerSetApi,
    pub set: ListenerSet,
}

/// Every object the translator reads, keyed by (namespace, name).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub gateway_classes: BTreeMap<ObjectKey, GatewayClass>,
    pub gateways: BTreeMap<ObjectKey, Gateway>,
    pub tcp_routes: BTreeMap<ObjectKey, VersionedTcpRoute>,
    pub udp_routes: BTreeMap<ObjectKey, VersionedUdpRoute>,
    pub listener_sets: BTreeMap<ObjectKey, VersionedListenerSet>,
    pub reference_grants: BTreeMap<ObjectKey, ReferenceGrant>,
    pub services: BTreeMap<ObjectKey, Service>,
    pub endpoint_slices: BTreeMap<ObjectKey, EndpointSlice>,
    pub namespaces: BTreeMap<ObjectKey, Namespace>,
    pub listener_policies: BTreeMap<ObjectKey, policies::ListenerPolicy>,
    pub backend_policies: BTreeMap<ObjectKey, policies::BackendPolicy>,
    /// (kind, key) of sockgate's policies → fields of the manifest last applied
    /// with kubectl that the API server dropped (pruned: its schema has no such
    /// field), each said as the schema check says it. Kubernetes mode only.
    pub pruned_fields: BTreeMap<(String, ObjectKey), Vec<String>>,
}

impl Snapshot {
    pub fn object_count(&self) -> usize {
        self.gateway_classes.len()
            + self.gateways.len()
            + self.tcp_routes.len()
            + self.udp_routes.len()
            + self.listener_sets.len()
            + self.reference_grants.len()
            + self.services.len()
            + self.endpoint_slices.len()
            + self.namespaces.len()
            + self.listener_policies.len()
            + self.backend_policies.len()
    }
}
