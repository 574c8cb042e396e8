//! Gateway API objects, as sockgate reads them.
//!
//! Own serde types rather than generated ones: one spec type serves TCPRoute
//! and UDPRoute, `v1` and `v1alpha2` alike (in v1.6 all four have the same
//! shape: parentRefs and rules of backendRefs, with different rule limits), absent fields keep the
//! defaults the CRDs declare, and the checks a 1.20 API server cannot run (CEL)
//! live next to the fields they guard, in `validate()`.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "gateway.networking.k8s.io";
/// The Gateway API release sockgate is built against (its vendored schemas'):
/// CRDs of this minor version are supported (GatewayClass `SupportedVersion`).
pub const BUNDLE_VERSION: &str = "v1.6.1";
/// The annotation on each Gateway API CRD naming its release.
pub const BUNDLE_VERSION_ANNOTATION: &str = "gateway.networking.k8s.io/bundle-version";
/// The experimental group, where ListenerSet lived as `XListenerSet` before v1.6.
pub const X_GROUP: &str = "gateway.networking.x-k8s.io";

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayClass {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: GatewayClassSpec,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayClassSpec {
    pub controller_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Gateway {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: GatewaySpec,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    pub gateway_class_name: String,
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Which ListenerSets may add listeners; absent means none (the CRD default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_listeners: Option<AllowedListeners>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AllowedListeners {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<ListenerNamespaces>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ListenerNamespaces {
    /// `None` (the CRD default), `Same`, `All` or `Selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// A ListenerSet (`gateway.networking.k8s.io/v1`, or `XListenerSet` of the
/// experimental group on servers older than v1.6): listeners added to a Gateway.
/// Its entries have the fields of a Gateway's listeners that sockgate reads.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ListenerSet {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: ListenerSetSpec,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ListenerSetSpec {
    pub parent_ref: ParentGatewayReference,
    #[serde(default)]
    pub listeners: Vec<Listener>,
}

/// A ListenerSet's parent: always a Gateway (group and kind are defaulted by the CRD).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ParentGatewayReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    pub port: i32,
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_routes: Option<AllowedRoutes>,
    /// Read only for the CRD's CEL rules (sockgate terminates no TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AllowedRoutes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<RouteNamespaces>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinds: Option<Vec<RouteGroupKind>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteNamespaces {
    /// `Same` (the CRD default), `All` or `Selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct RouteGroupKind {
    /// Absent means the Gateway API group (the CRD default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub kind: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TcpRoute {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: TcpRouteSpec,
}

/// A UDPRoute: the same spec as a TCPRoute (parentRefs, rules without
/// matches), its own kind, so that a TCPRoute and a UDPRoute may share a name.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UdpRoute {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: TcpRouteSpec,
}

/// The spec of both route kinds sockgate serves (TCPRoute, UDPRoute).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TcpRouteSpec {
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    #[serde(default)]
    pub rules: Vec<TcpRouteRule>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TcpRouteRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    /// Absent or "" means the core group (a 1.20 server does not fill the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Relative share of new connections, 0..=1_000_000; absent means 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrant {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: ReferenceGrantSpec,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrantSpec {
    #[serde(default)]
    pub from: Vec<ReferenceGrantFrom>,
    #[serde(default)]
    pub to: Vec<ReferenceGrantTo>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrantFrom {
    #[serde(default)]
    pub group: String,
    pub kind: String,
    pub namespace: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrantTo {
    #[serde(default)]
    pub group: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// TCPRoute (and UDPRoute) API versions differ only in how many rules they allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpRouteVersion {
    /// Standard channel: exactly one rule.
    V1,
    /// Experimental channel: one to sixteen rules.
    V1Alpha2,
}

impl TcpRouteVersion {
    pub fn max_rules(self) -> usize {
        match self {
            TcpRouteVersion::V1 => 1,
            TcpRouteVersion::V1Alpha2 => 16,
        }
    }
}

pub const MAX_WEIGHT: i32 = 1_000_000;

impl Gateway {
    /// What the CRD schema and its CEL rules would have rejected at the API server.
    pub fn validate(&self) -> Result<(), String> {
        if self.spec.gateway_class_name.is_empty() {
            return Err("spec.gatewayClassName is required".into());
        }
        validate_listeners(&self.spec.listeners)
    }
}

impl ListenerSet {
    /// What the CRD schema and its CEL rules would have rejected at the API
    /// server (the listener rules are the Gateway's).
    pub fn validate(&self) -> Result<(), String> {
        if self.spec.parent_ref.name.is_empty() {
            return Err("spec.parentRef.name is required".into());
        }
        validate_listeners(&self.spec.listeners)
    }
}

/// The rules a Gateway's and a ListenerSet's `spec.listeners` share.
fn validate_listeners(listeners: &[Listener]) -> Result<(), String> {
    if listeners.is_empty() || listeners.len() > 64 {
        return Err(format!("spec.listeners must have 1 to 64 items, has {}", listeners.len()));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, l) in listeners.iter().enumerate() {
        if l.name.is_empty() {
            return Err(format!("spec.listeners[{i}].name is required"));
        }
        if !names.insert(l.name.as_str()) {
            return Err(format!("spec.listeners[{i}].name {:?} is not unique", l.name));
        }
        if !(1..=65535).contains(&l.port) {
            return Err(format!("spec.listeners[{i}].port {} is outside 1..65535", l.port));
        }
        if l.protocol.is_empty() {
            return Err(format!("spec.listeners[{i}].protocol is required"));
        }
        // The CRD's CEL rules on protocols, hostnames and tls.
        let (protocol, name) = (l.protocol.as_str(), &l.name);
        if matches!(protocol, "TCP" | "UDP") && l.hostname.as_deref().is_some_and(|h| !h.is_empty()) {
            return Err(format!("spec.listeners[{i}]: hostname must not be specified for protocols ['TCP', 'UDP'] (listener {name:?} is {protocol}): remove it"));
        }
        if matches!(protocol, "HTTP" | "TCP" | "UDP") && l.tls.is_some() {
            return Err(format!("spec.listeners[{i}]: tls must not be specified for protocols ['HTTP', 'TCP', 'UDP'] (listener {name:?} is {protocol}): remove it"));
        }
        let mode = l.tls.as_ref().and_then(|t| t.get("mode")).and_then(|m| m.as_str()).unwrap_or("");
        if protocol == "HTTPS" && !matches!(mode, "" | "Terminate") {
            return Err(format!("spec.listeners[{i}]: tls mode must be Terminate for protocol HTTPS (listener {name:?} has {mode})"));
        }
        if protocol == "TLS" && mode.is_empty() {
            return Err(format!("spec.listeners[{i}]: tls mode must be set for protocol TLS (listener {name:?})"));
        }
        let same = listeners[..i].iter().position(|o| o.port == l.port && o.protocol == l.protocol && o.hostname == l.hostname);
        if let Some(j) = same {
            return Err(format!("spec.listeners[{i}] and [{j}]: the combination of port, protocol and hostname must be unique for each listener"));
        }
    }
    Ok(())
}

impl TcpRouteSpec {
    /// The CRD's CEL rules on parentRefs: references to the same parent must all
    /// set sectionName or none, all set port or none, and differ in them.
    fn validate_parent_refs(&self) -> Result<(), String> {
        let refs = &self.parent_refs;
        let parent = |p: &ParentReference| {
            (p.group.clone().unwrap_or_else(|| GROUP.into()), p.kind.clone().unwrap_or_else(|| "Gateway".into()), p.namespace.clone().unwrap_or_default(), p.name.clone())
        };
        let section = |p: &ParentReference| p.section_name.clone().filter(|s| !s.is_empty());
        let port = |p: &ParentReference| p.port.filter(|p| *p != 0);
        for (i, a) in refs.iter().enumerate() {
            for (j, b) in refs[..i].iter().enumerate() {
                if parent(a) != parent(b) {
                    continue;
                }
                if section(a).is_some() != section(b).is_some() || port(a).is_some() != port(b).is_some() {
                    return Err(format!("spec.parentRefs[{j}] and [{i}]: sectionName or port must be specified when parentRefs includes 2 or more references to the same parent"));
                }
                if section(a) == section(b) && port(a) == port(b) {
                    return Err(format!("spec.parentRefs[{j}] and [{i}]: sectionName or port must be unique when parentRefs includes 2 or more references to the same parent"));
                }
            }
        }
        Ok(())
    }

    /// What the CRD schema and its CEL rules of `kind` (TCPRoute or UDPRoute,
    /// whose rules are the same) would have rejected at the API server.
    pub fn validate(&self, kind: &str, version: TcpRouteVersion) -> Result<(), String> {
        let rules = self.rules.len();
        if rules == 0 || rules > version.max_rules() {
            return Err(match version {
                TcpRouteVersion::V1 => format!("spec.rules must have exactly 1 rule in {kind} v1 (v1alpha2 allows up to 16), has {rules}"),
                TcpRouteVersion::V1Alpha2 => format!("spec.rules must have 1 to 16 rules in {kind} v1alpha2, has {rules}"),
            });
        }
        if self.parent_refs.len() > 32 {
            return Err("spec.parentRefs may have at most 32 items".into());
        }
        for (i, p) in self.parent_refs.iter().enumerate() {
            if p.name.is_empty() {
                return Err(format!("spec.parentRefs[{i}].name is required"));
            }
            if let Some(port) = p.port {
                if !(1..=65535).contains(&port) {
                    return Err(format!("spec.parentRefs[{i}].port {port} is outside 1..65535"));
                }
            }
        }
        self.validate_parent_refs()?;
        for (r, rule) in self.rules.iter().enumerate() {
            if let Some(name) = &rule.name {
                if self.rules[..r].iter().any(|o| o.name.as_ref() == Some(name)) {
                    return Err(format!("spec.rules[{r}].name {name:?}: rule name must be unique within the route"));
                }
            }
            if rule.backend_refs.len() > 16 {
                return Err(format!("spec.rules[{r}].backendRefs may have at most 16 items"));
            }
            for (b, backend) in rule.backend_refs.iter().enumerate() {
                let at = format!("spec.rules[{r}].backendRefs[{b}]");
                if backend.name.is_empty() {
                    return Err(format!("{at}.name is required"));
                }
                if let Some(w) = backend.weight {
                    if !(0..=MAX_WEIGHT).contains(&w) {
                        return Err(format!("{at}.weight {w} is outside 0..{MAX_WEIGHT}"));
                    }
                }
                let is_service = backend.group.as_deref().unwrap_or("").is_empty()
                    && backend.kind.as_deref().unwrap_or("Service") == "Service";
                match backend.port {
                    None if is_service => return Err(format!("{at}.port is required when referring to a Service")),
                    Some(p) if !(1..=65535).contains(&p) => return Err(format!("{at}.port {p} is outside 1..65535")),
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

impl TcpRoute {
    pub fn validate(&self, version: TcpRouteVersion) -> Result<(), String> {
        self.spec.validate("TCPRoute", version)
    }
}

impl UdpRoute {
    pub fn validate(&self, version: TcpRouteVersion) -> Result<(), String> {
        self.spec.validate("UDPRoute", version)
    }
}
