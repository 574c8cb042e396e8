//! Backend resolution: a route's backendRefs → weighted groups of ready endpoints.
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::BackendGroup;
use super::listeners::RouteKind;
use super::status::reasons;
use crate::resources::gateway_api::{BackendRef, GROUP};
use crate::resources::{ObjectKey, Snapshot};

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Why a backendRef could not be resolved (the route's ResolvedRefs=False reason).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefProblem {
    pub reason: &'static str,
    pub message: String,
}

/// The snapshot's EndpointSlices by the Service they belong to, built once per
/// translation: looking them up per backendRef by scanning every slice made
/// translation quadratic (2.6 s at 10,000 routes; see BENCHMARKS.md).
pub struct Backends<'a> {
    snapshot: &'a Snapshot,
    slices: BTreeMap<ObjectKey, Vec<&'a EndpointSlice>>,
}

impl<'a> Backends<'a> {
    pub fn new(snapshot: &'a Snapshot) -> Self {
        let mut slices: BTreeMap<ObjectKey, Vec<&EndpointSlice>> = BTreeMap::new();
        for (key, slice) in &snapshot.endpoint_slices {
            if let Some(service) = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) {
                slices.entry(ObjectKey::new(key.namespace.clone(), service.clone())).or_default().push(slice);
            }
        }
        Backends { snapshot, slices }
    }

    /// See [`resolve`].
    pub fn resolve(&self, kind: RouteKind, route: &ObjectKey, refs: &[&BackendRef]) -> (Vec<BackendGroup>, Vec<RefProblem>) {
        resolve(self, kind, route, refs)
    }
}

/// Resolves every backendRef of every rule; problems come back beside the groups
/// (an unresolvable ref still gets a group, without endpoints, so its share of
/// connections is reset rather than silently given to the others). A route of
/// `kind` needs Service ports (and EndpointSlice ports) of its protocol: a
/// UDPRoute to port 53 of a Service with TCP and UDP port 53 goes to the UDP one.
fn resolve(backends: &Backends, kind: RouteKind, route: &ObjectKey, refs: &[&BackendRef]) -> (Vec<BackendGroup>, Vec<RefProblem>) {
    let mut groups = Vec::new();
    let mut problems = Vec::new();
    for backend in refs {
        let namespace = backend.namespace.clone().unwrap_or_else(|| route.namespace.clone());
        let port = backend.port.unwrap_or(0);
        let name = format!("{namespace}/{}:{port}", backend.name);
        let weight = backend.weight.unwrap_or(1).clamp(0, i32::MAX) as u32;
        let endpoints = match resolve_one(backends, kind, route, backend, &namespace) {
            Ok(endpoints) => endpoints,
            Err(problem) => {
                problems.push(problem);
                Vec::new()
            }
        };
        let service = ObjectKey::new(namespace, backend.name.clone());
        groups.push(BackendGroup { name, service, weight, endpoints, ..Default::default() });
    }
    (groups, problems)
}

fn resolve_one(backends: &Backends, kind: RouteKind, route: &ObjectKey, backend: &BackendRef, namespace: &str) -> Result<Vec<SocketAddr>, RefProblem> {
    let snapshot = backends.snapshot;
    let group = backend.group.as_deref().unwrap_or("");
    let backend_kind = backend.kind.as_deref().unwrap_or("Service");
    if !group.is_empty() || backend_kind != "Service" {
        return Err(RefProblem {
            reason: reasons::INVALID_KIND,
            message: format!("backendRef {} has kind {group}/{backend_kind}; only core Services are supported", backend.name),
        });
    }
    if namespace != route.namespace && !reference_granted(snapshot, kind, &route.namespace, namespace, &backend.name) {
        return Err(RefProblem {
            reason: reasons::REF_NOT_PERMITTED,
            message: format!("no ReferenceGrant in namespace {namespace} allows {}s from {} to Service {}", kind.name(), route.namespace, backend.name),
        });
    }
    let service_key = ObjectKey::new(namespace, backend.name.clone());
    let Some(service) = snapshot.services.get(&service_key) else {
        return Err(RefProblem { reason: reasons::BACKEND_NOT_FOUND, message: format!("Service {service_key} not found") });
    };
    let protocol = kind.protocol();
    let Some(port) = service_port(service, backend.port.unwrap_or(0), protocol) else {
        return Err(RefProblem {
            reason: reasons::BACKEND_NOT_FOUND,
            message: format!("Service {service_key} has no {protocol} port {}", backend.port.unwrap_or(0)),
        });
    };
    let slices = backends.slices.get(&service_key).map(Vec::as_slice).unwrap_or_default();
    Ok(ready_endpoints(slices, port, protocol))
}

/// The Service's port `port` of `protocol` (a Service port without one is TCP).
fn service_port<'s>(service: &'s Service, port: i32, protocol: &str) -> Option<&'s ServicePort> {
    service
        .spec
        .as_ref()?
        .ports
        .iter()
        .flatten()
        .find(|p| p.port == port && p.protocol.as_deref().unwrap_or("TCP") == protocol)
}

/// A ReferenceGrant in `to_namespace` lets routes of `kind` in `from_namespace` refer to the Service.
fn reference_granted(snapshot: &Snapshot, kind: RouteKind, from_namespace: &str, to_namespace: &str, service: &str) -> bool {
    snapshot
        .reference_grants
        .iter()
        .filter(|(key, _)| key.namespace == to_namespace)
        .any(|(_, grant)| {
            let from_ok = grant
                .spec
                .from
                .iter()
                .any(|f| f.group == GROUP && f.kind == kind.name() && f.namespace == from_namespace);
            let to_ok = grant
                .spec
                .to
                .iter()
                .any(|t| t.group.is_empty() && t.kind == "Service" && t.name.as_deref().is_none_or(|n| n == service));
            from_ok && to_ok
        })
}

/// Ready endpoints of the Service's EndpointSlices for one Service port.
///
/// An EndpointSlice names its ports after the Service's ports and carries the
/// resolved target port, so a named `targetPort` works; a slice without ports
/// falls back to a numeric targetPort. `ready` absent counts as ready (API docs).
fn ready_endpoints(slices: &[&EndpointSlice], port: &ServicePort, protocol: &str) -> Vec<SocketAddr> {
    let port_name = port.name.clone().unwrap_or_default();
    let numeric_target = match &port.target_port {
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(_)) => None,
        None => Some(port.port),
    };
    let mut found = BTreeSet::new();
    for slice in slices {
        if slice.address_type == "FQDN" {
            continue;
        }
        let target = match slice.ports.as_deref() {
            None | Some([]) => numeric_target,
            Some(ports) => ports
                .iter()
                .find(|p| p.name.clone().unwrap_or_default() == port_name && p.protocol.as_deref().unwrap_or("TCP") == protocol)
                .and_then(|p| p.port),
        };
        let Some(target) = target.and_then(|t| u16::try_from(t).ok()).filter(|t| *t != 0) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let ready = endpoint.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready {
                continue;
            }
            for address in &endpoint.addresses {
                if let Ok(ip) = address.parse::<IpAddr>() {
                    found.insert(SocketAddr::new(ip, target));
                }
            }
        }
    }
    found.into_iter().collect()
}
