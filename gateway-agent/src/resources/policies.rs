//! sockgate's own policy kinds (group `sockgate.io`, version `v1alpha1`),
//! attached to Gateway API objects as GEP-713 describes: `ListenerPolicy` to a
//! Gateway (or one listener of it, by `sectionName`), `BackendPolicy` to a
//! TCPRoute or a Service. The CRD YAML is generated from these types
//! (`gateway-agent crds`), so schema and code cannot drift apart.
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "sockgate.io";
pub const VERSION: &str = "v1alpha1";

/// Policy for the connections arriving at a Gateway's listeners.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(group = "sockgate.io", version = "v1alpha1", kind = "ListenerPolicy", namespaced, status = "PolicyStatus", derive = "PartialEq")]
#[kube(shortname = "lpol", printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#)]
#[serde(rename_all = "camelCase")]
pub struct ListenerPolicySpec {
    /// Gateways (in the policy's namespace) and optionally one listener of each, by sectionName.
    #[schemars(length(min = 1, max = 16))]
    pub target_refs: Vec<ListenerTargetRef>,
    /// Client source addresses allowed or denied, dropped in XDP before the TCP stack. Deny wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cidrs: Option<ClientCidrLists>,
    /// New connections beyond this many open ones on the listener are reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_connections: Option<u32>,
    /// A connection with no byte in either direction for this long (e.g. "30s", "5m") is closed on both sides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    /// Accept a PROXY protocol (v1 or v2) header from an outer load balancer and use its client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<AcceptProxyProtocol>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListenerTargetRef {
    pub group: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClientCidrLists {
    /// When not empty, only these clients may connect (IPv4 or IPv6 CIDRs, or bare addresses).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// These clients may never connect, even when also allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AcceptProxyProtocol {
    pub accept: bool,
}

/// Policy for the connections sockgate opens to backends.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(group = "sockgate.io", version = "v1alpha1", kind = "BackendPolicy", namespaced, status = "PolicyStatus", derive = "PartialEq")]
#[kube(shortname = "bpol", printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#)]
#[serde(rename_all = "camelCase")]
pub struct BackendPolicySpec {
    /// TCPRoutes (every backend of the route) or Services, in the policy's namespace.
    #[schemars(length(min = 1, max = 16))]
    pub target_refs: Vec<BackendTargetRef>,
    /// Send a PROXY protocol header with the client's address before the first byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<SendProxyProtocol>,
    /// Deadline for connecting to one endpoint (e.g. "2s", "500ms").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<String>,
    /// Further endpoints tried when connecting fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    /// Endpoints that fail to connect this many times in a row get no new connections for a while.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BackendTargetRef {
    /// "" (or absent) for a Service, gateway.networking.k8s.io for a TCPRoute.
    /// Optional and nullable: kubectl sends the core group's "" as null.
    #[serde(default)]
    pub group: Option<String>,
    pub kind: String,
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ProxyProtocolVersion {
    #[serde(rename = "v1")]
    V1,
    #[serde(rename = "v2")]
    V2,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SendProxyProtocol {
    pub version: ProxyProtocolVersion,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Retries {
    #[schemars(range(max = 16))]
    pub attempts: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    #[schemars(range(min = 1))]
    pub consecutive_connect_failures: u32,
    pub ejection_time: String,
}

/// GEP-713 policy status: one entry per ancestor the policy was evaluated for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PolicyStatus {
    #[serde(default)]
    pub ancestors: Vec<PolicyAncestorStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyAncestorStatus {
    pub ancestor_ref: AncestorRef,
    pub controller_name: String,
    pub conditions: Vec<PolicyCondition>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AncestorRef {
    /// Absent for the core group (a Service): server-side apply turns "" into null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    pub last_transition_time: String,
}

/// The CRDs of both kinds, as YAML documents (what `gateway-agent crds` prints and the chart installs).
pub fn crds_yaml() -> String {
    use kube::CustomResourceExt;
    let mut out = String::new();
    for crd in [ListenerPolicy::crd(), BackendPolicy::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd).expect("a CRD serializes"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crds_are_structural_namespaced_and_name_the_policy_fields() {
        let yaml = crds_yaml();
        let docs: Vec<serde_json::Value> = yaml.split("---\n").filter(|d| !d.trim().is_empty()).map(|d| serde_yaml::from_str(d).unwrap()).collect();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["metadata"]["name"], "listenerpolicies.sockgate.io");
        assert_eq!(docs[1]["metadata"]["name"], "backendpolicies.sockgate.io");
        for doc in &docs {
            assert_eq!(doc["spec"]["scope"], "Namespaced");
            assert_eq!(doc["spec"]["versions"][0]["name"], "v1alpha1");
            assert!(doc["spec"]["versions"][0]["subresources"]["status"].is_object());
        }
        let spec = &docs[0]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        for field in ["targetRefs", "clientCidrs", "maxConnections", "idleTimeout", "proxyProtocol"] {
            assert!(spec[field].is_object(), "ListenerPolicy.spec.{field} missing: {spec}");
        }
        let spec = &docs[1]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        for field in ["targetRefs", "proxyProtocol", "connectTimeout", "retries", "outlierDetection"] {
            assert!(spec[field].is_object(), "BackendPolicy.spec.{field} missing: {spec}");
        }
        assert!(!yaml.contains("\"$ref\"") && !yaml.contains("$ref:"), "a structural schema has no references");
    }
}
