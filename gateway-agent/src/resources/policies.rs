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

/// The Gateway API duration format (GEP-2257): one to four parts of up to
/// five digits and a unit (h, m, s, ms), e.g. `30s`, `1m30s`, `500ms`. A bare number is not a duration.
pub const DURATION_PATTERN: &str = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$";

/// ListenerPolicy: how sockgate accepts connections on a Gateway's listeners: which
/// clients may connect, how many connections a listener takes, when an idle
/// connection is closed, and whether clients arrive through a PROXY-protocol load balancer.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(group = "sockgate.io", version = "v1alpha1", kind = "ListenerPolicy", namespaced, status = "PolicyStatus", derive = "PartialEq")]
#[kube(doc = "ListenerPolicy sets how sockgate accepts connections on a Gateway's listeners (GEP-713 Direct policy attached to a Gateway or one of its listeners).")]
#[kube(label("gateway.networking.k8s.io/policy", "Direct"))]
#[kube(shortname = "lpol")]
#[kube(printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.ancestors[0].conditions[?(@.type==\"Accepted\")].status","description":"Whether sockgate applies the policy to its first target"}"#)]
#[kube(printcolumn = r#"{"name":"Targets","type":"string","jsonPath":".spec.targetRefs[*].name","description":"The Gateways the policy attaches to"}"#)]
#[kube(printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#)]
#[serde(rename_all = "camelCase")]
pub struct ListenerPolicySpec {
    /// The Gateways (in the policy's namespace) this policy applies to, each optionally narrowed to one listener by sectionName.
    #[schemars(length(min = 1, max = 16))]
    pub target_refs: Vec<ListenerTargetRef>,
    /// Client source addresses allowed or denied. With XDP interfaces configured they are dropped before the TCP stack; otherwise they are reset at accept. Deny wins over allow.
    #[serde(default, rename = "clientCIDRs", skip_serializing_if = "Option::is_none")]
    pub client_cidrs: Option<ClientCidrLists>,
    /// Deprecated: renamed clientCIDRs (Kubernetes spells initialisms in one case). Still read in v1alpha1, with a warning; removed in the next API version. Setting both is an error.
    #[serde(default, rename = "clientCidrs", skip_serializing_if = "Option::is_none")]
    pub deprecated_client_cidrs: Option<ClientCidrLists>,
    /// The most connections open at once on the listener; new connections beyond it are reset. At least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_connections: Option<i32>,
    /// A connection with no byte in either direction for this long is closed on both sides. Gateway API duration format (GEP-2257), e.g. 30s, 5m, 1m30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub idle_timeout: Option<String>,
    /// Accept a PROXY protocol (v1 or v2) header from an outer load balancer and use the client address it carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<AcceptProxyProtocol>,
    /// TCP keepalive probes toward clients, so a client that vanished without a FIN or RST does not hold its connection forever. Default: idleTime 2m, interval 30s, probes 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// TCP_USER_TIMEOUT toward clients: a connection whose sent data stays unacknowledged this long is closed. Gateway API duration format (GEP-2257). Default: the kernel's (about 15 minutes of retransmissions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub tcp_user_timeout: Option<String>,
}

/// TCP keepalive on one side of the gateway (SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TcpKeepalive {
    /// How long a connection is quiet before the first probe, at least 1s. Gateway API duration format (GEP-2257). Default 2m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub idle_time: Option<String>,
    /// Time between unanswered probes, at least 1s. Default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub interval: Option<String>,
    /// Unanswered probes after which the connection is closed, 1 to 127. Default 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 127))]
    pub probes: Option<i32>,
}

/// A Gateway, or one listener of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListenerTargetRef {
    /// gateway.networking.k8s.io
    pub group: String,
    /// Gateway
    pub kind: String,
    /// The Gateway's name, in the policy's namespace.
    pub name: String,
    /// One listener of the Gateway, by name; absent for all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// Client address lists (IPv4 or IPv6 CIDRs, or bare addresses).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClientCidrLists {
    /// When not empty, only these clients may connect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// These clients may never connect, even when also allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// Whether clients arrive through a load balancer that sends a PROXY protocol header.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AcceptProxyProtocol {
    /// true: every connection must start with a PROXY header (v1 or v2), and its client address is the one used.
    pub accept: bool,
}

/// BackendPolicy: how sockgate connects to the backends of a TCPRoute or a
/// Service: connect deadline, retries on other endpoints, outlier ejection, and
/// a PROXY-protocol header carrying the client's address.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(group = "sockgate.io", version = "v1alpha1", kind = "BackendPolicy", namespaced, status = "PolicyStatus", derive = "PartialEq")]
#[kube(doc = "BackendPolicy sets how sockgate connects to the backends of a TCPRoute or a Service (GEP-713 Direct policy).")]
#[kube(label("gateway.networking.k8s.io/policy", "Direct"))]
#[kube(shortname = "bpol")]
#[kube(printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.ancestors[0].conditions[?(@.type==\"Accepted\")].status","description":"Whether sockgate applies the policy for its first ancestor"}"#)]
#[kube(printcolumn = r#"{"name":"Targets","type":"string","jsonPath":".spec.targetRefs[*].name","description":"The TCPRoutes and Services the policy attaches to"}"#)]
#[kube(printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#)]
#[serde(rename_all = "camelCase")]
pub struct BackendPolicySpec {
    /// TCPRoutes (every backend of the route) or Services, in the policy's namespace.
    #[schemars(length(min = 1, max = 16))]
    pub target_refs: Vec<BackendTargetRef>,
    /// Send a PROXY protocol header with the client's address before the first byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<SendProxyProtocol>,
    /// Deadline for connecting to one endpoint. Gateway API duration format (GEP-2257), e.g. 2s, 500ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub connect_timeout: Option<String>,
    /// Further endpoints tried when connecting fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    /// Endpoints that fail to connect this many times in a row get no new connections for a while.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// How a new connection picks among the route's backends. Only on a policy whose targets are TCPRoutes (it is about all of a route's backends). Default RoundRobin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    /// Active health checks of the target Services' endpoints (TCP connect, optionally send and expect bytes). Only on a policy whose targets are Services. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// TCP keepalive probes toward the backends, so a backend that vanished does not hold connections forever. Default: idleTime 2m, interval 30s, probes 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// TCP_USER_TIMEOUT toward the backends: a connection whose sent data stays unacknowledged this long is closed. Gateway API duration format (GEP-2257). Default: the kernel's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub tcp_user_timeout: Option<String>,
}

/// A TCPRoute or a Service in the policy's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BackendTargetRef {
    /// "" (or absent) for a Service, gateway.networking.k8s.io for a TCPRoute.
    /// Optional and nullable: kubectl sends the core group's "" as null.
    #[serde(default)]
    pub group: Option<String>,
    /// Service or TCPRoute
    pub kind: String,
    /// The object's name, in the policy's namespace.
    pub name: String,
}

/// A PROXY protocol version. `v1` and `v2` are deprecated spellings of V1 and V2
/// (enum values are CamelCase in Kubernetes APIs), read in v1alpha1 with a warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ProxyProtocolVersion {
    /// The text header.
    #[serde(rename = "V1", alias = "v1")]
    V1,
    /// The binary header.
    #[serde(rename = "V2", alias = "v2")]
    V2,
}

/// The load-balancing algorithm of a route's backends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LoadBalancer {
    /// RoundRobin: weighted, interleaved (the default). LeastConnections: the backendRef by weight as RoundRobin picks it (the route's split holds), then its endpoint with the fewest connections this agent holds open to it (ties take turns). ConsistentHash: by the client's IP address (the one its PROXY header declares, on a listener that accepts the PROXY protocol; weighted rendezvous hashing), so a client keeps its endpoint across connections and removing one of N endpoints moves only the clients it had (about 1/N).
    #[serde(rename = "type")]
    pub type_: LoadBalancerType,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum LoadBalancerType {
    RoundRobin,
    LeastConnections,
    ConsistentHash,
}

/// Active health checks of a Service's endpoints: each agent checks every
/// endpoint it may send connections to, and a new connection skips an
/// endpoint whose last `unhealthyThreshold` checks failed, until it passes
/// `healthyThreshold` in a row. If every endpoint of a backendRef fails, the
/// checks are ignored for it (fail open, as outlier ejection is) rather than
/// reset all of its share.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// Time between two checks of one endpoint. Gateway API duration format (GEP-2257). Default 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub interval: Option<String>,
    /// How long one check may take: the connect, and the answer when receive is set. Default 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub timeout: Option<String>,
    /// Failed checks in a row that take an endpoint out, 1 to 100. Default 3. The first check of a new endpoint decides alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub unhealthy_threshold: Option<i32>,
    /// Passed checks in a row that bring it back, 1 to 100. Default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub healthy_threshold: Option<i32>,
    /// Bytes written once connected. Without send and receive a check is a TCP connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<HealthCheckPayload>,
    /// Bytes the endpoint's answer must contain (read until they are found, the endpoint closes, 64 KiB, or the timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive: Option<HealthCheckPayload>,
}

/// Bytes of a health check, as text or as hexadecimal (exactly one of the two).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HealthCheckPayload {
    /// UTF-8 text, e.g. "PING\r\n".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub text: Option<String>,
    /// Hexadecimal bytes, e.g. "0d0a".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 2048), regex(pattern = r"^([0-9a-fA-F]{2})+$"))]
    pub hex: Option<String>,
}

/// The PROXY header sent to backends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SendProxyProtocol {
    /// V1 (text) or V2 (binary); v1 and v2 are deprecated spellings, read in v1alpha1 only.
    #[schemars(with = "String", extend("enum" = ["V1", "V2", "v1", "v2"]))]
    pub version: ProxyProtocolVersion,
}

/// Retries on other endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Retries {
    /// How many more endpoints are tried after the first fails to connect, 0 to 16.
    #[schemars(range(min = 0, max = 16))]
    pub attempts: i32,
}

/// Passive outlier detection on connect failures.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    /// Failed connects in a row that eject an endpoint. At least 1.
    #[schemars(range(min = 1))]
    pub consecutive_connect_failures: i32,
    /// How long an ejected endpoint gets no new connections. Gateway API duration format (GEP-2257), e.g. 30s.
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub ejection_time: String,
}

/// GEP-713 policy status: one entry per ancestor the policy was evaluated for, at most 16.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PolicyStatus {
    /// The policy's status for each ancestor (the Gateway a listener policy applies to, or the Gateway a backend is reached through), at most 16.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub ancestors: Vec<PolicyAncestorStatus>,
}

/// The policy's status for one ancestor, as one controller sees it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyAncestorStatus {
    /// The object the status is about.
    pub ancestor_ref: AncestorRef,
    /// The controller that wrote this entry (sockgate.io/gateway-controller).
    pub controller_name: String,
    /// Accepted, with a reason: Accepted, Conflicted, Invalid or TargetNotFound.
    #[schemars(length(max = 8))]
    pub conditions: Vec<PolicyCondition>,
}

/// A Gateway API ParentReference to the ancestor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AncestorRef {
    /// Absent for the core group (a Service): server-side apply turns "" into null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Gateway, TCPRoute or Service.
    pub kind: String,
    /// The ancestor's namespace.
    pub namespace: String,
    /// The ancestor's name.
    pub name: String,
    /// The listener, for a policy attached to one listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// The standard Kubernetes condition (metav1.Condition).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyCondition {
    /// The condition's type, in CamelCase (Accepted).
    #[serde(rename = "type")]
    #[schemars(length(max = 316), regex(pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"))]
    pub type_: String,
    /// True, False or Unknown.
    #[schemars(extend("enum" = ["True", "False", "Unknown"]))]
    pub status: String,
    /// Why, in CamelCase.
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"))]
    pub reason: String,
    /// What a person needs to know, in words.
    #[schemars(length(max = 32768))]
    pub message: String,
    /// The policy's metadata.generation the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
    /// When the status last changed (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: String,
}

/// What a raw policy object spells the pre-convention way (read in v1alpha1,
/// with these warnings): `clientCidrs`, and lower-case PROXY protocol versions.
pub fn deprecated_spellings(policy: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    if policy.pointer("/spec/clientCidrs").is_some() {
        out.push("spec.clientCidrs is deprecated: rename it to spec.clientCIDRs (the old spelling is read in v1alpha1 only)".to_string());
    }
    if let Some(v @ ("v1" | "v2")) = policy.pointer("/spec/proxyProtocol/version").and_then(serde_json::Value::as_str) {
        out.push(format!("spec.proxyProtocol.version {v:?} is deprecated: write {:?} (enum values are CamelCase; the old spelling is read in v1alpha1 only)", v.to_uppercase()));
    }
    out
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

/// The policy reference in Markdown, generated from the CRDs' schemas (field,
/// type with its limits, required, description): the README carries this text
/// between its `policy-reference` markers, and a test keeps the two equal, so
/// the docs cannot drift from the schema. `gateway-agent crds --reference`.
pub fn reference_markdown() -> String {
    use kube::CustomResourceExt;
    let mut out = String::new();
    for crd in [ListenerPolicy::crd(), BackendPolicy::crd()] {
        let version = &crd.spec.versions[0];
        let schema = serde_json::to_value(version.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref())).expect("a schema is JSON");
        out.push_str(&format!("#### {} (`{}/{}`)\n\n", crd.spec.names.kind, crd.spec.group, version.name));
        out.push_str("| field | type | description |\n| --- | --- | --- |\n");
        rows(&schema["properties"]["spec"], "spec", &mut out);
        out.push('\n');
    }
    out
}

fn rows(schema: &serde_json::Value, path: &str, out: &mut String) {
    let Some(properties) = schema["properties"].as_object() else { return };
    let required: Vec<&str> = schema["required"].as_array().map(|r| r.iter().filter_map(|v| v.as_str()).collect()).unwrap_or_default();
    for (name, field) in properties {
        let path = format!("{path}.{name}");
        let item = if field["type"] == "array" { &field["items"] } else { field };
        let mut kind = match (field["type"].as_str(), item["type"].as_str()) {
            (Some("array"), Some(t)) => format!("[]{t}"),
            (Some(t), _) => t.to_string(),
            _ => "object".to_string(),
        };
        if let Some(values) = item["enum"].as_array() {
            kind = values.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(" \\| ");
        }
        let mut limits = Vec::new();
        for (key, word) in [("minimum", "≥"), ("maximum", "≤")] {
            if let Some(n) = item[key].as_f64() {
                limits.push(format!("{word} {n}"));
            }
        }
        for (key, word) in [("minItems", "min items"), ("maxItems", "max items")] {
            if let Some(n) = field[key].as_u64() {
                limits.push(format!("{word} {n}"));
            }
        }
        if item["pattern"].is_string() {
            kind = "duration (GEP-2257: 1m30s, 500ms)".into();
        }
        if required.contains(&name.as_str()) {
            limits.push("required".into());
        }
        let limits = if limits.is_empty() { String::new() } else { format!(" ({})", limits.join(", ")) };
        let description = field["description"].as_str().unwrap_or_default().replace('|', "\\|").replace('\n', " ");
        out.push_str(&format!("| `{path}` | {kind}{limits} | {description} |\n"));
        rows(item, &path, out);
    }
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
        for field in ["targetRefs", "clientCIDRs", "maxConnections", "idleTimeout", "proxyProtocol"] {
            assert!(spec[field].is_object(), "ListenerPolicy.spec.{field} missing: {spec}");
        }
        let spec = &docs[1]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        for field in ["targetRefs", "proxyProtocol", "connectTimeout", "retries", "outlierDetection"] {
            assert!(spec[field].is_object(), "BackendPolicy.spec.{field} missing: {spec}");
        }
        assert!(!yaml.contains("\"$ref\"") && !yaml.contains("$ref:"), "a structural schema has no references");
    }

    #[test]
    fn the_crds_follow_the_api_conventions_gep_713_and_gep_2257() {
        let yaml = crds_yaml();
        let docs: Vec<serde_json::Value> = yaml.split("---\n").filter(|d| !d.trim().is_empty()).map(|d| serde_yaml::from_str(d).unwrap()).collect();
        for doc in &docs {
            assert_eq!(doc["metadata"]["labels"]["gateway.networking.k8s.io/policy"], "Direct", "GEP-713's policy label");
            let version = &doc["spec"]["versions"][0];
            let columns: Vec<&str> = version["additionalPrinterColumns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
            assert_eq!(columns, ["Accepted", "Targets", "Age"]);
            let schema = &version["schema"]["openAPIV3Schema"];
            let description = schema["description"].as_str().unwrap();
            assert!(!description.contains("Auto-generated"), "{description}");
            let ancestors = &schema["properties"]["status"]["properties"]["ancestors"];
            assert_eq!(ancestors["maxItems"], 16, "GEP-713 caps ancestors at 16");
            let condition = &ancestors["items"]["properties"]["conditions"]["items"]["properties"];
            assert_eq!(condition["status"]["enum"], serde_json::json!(["True", "False", "Unknown"]));
            assert_eq!(condition["lastTransitionTime"]["format"], "date-time");
        }
        let listener = &docs[0]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        assert!(listener["clientCIDRs"].is_object());
        assert!(listener["clientCidrs"]["description"].as_str().unwrap().starts_with("Deprecated: renamed clientCIDRs"));
        assert_eq!(listener["maxConnections"]["format"], "int32");
        assert_eq!(listener["idleTimeout"]["pattern"], DURATION_PATTERN);
        let backend = &docs[1]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        assert_eq!(backend["connectTimeout"]["pattern"], DURATION_PATTERN);
        assert_eq!(backend["retries"]["properties"]["attempts"]["format"], "int32");
        assert_eq!(backend["outlierDetection"]["properties"]["consecutiveConnectFailures"]["format"], "int32");
        assert_eq!(backend["outlierDetection"]["properties"]["ejectionTime"]["pattern"], DURATION_PATTERN);
        assert_eq!(backend["proxyProtocol"]["properties"]["version"]["enum"], serde_json::json!(["V1", "V2", "v1", "v2"]));
        assert!(!yaml.contains("uint32"), "integers are int32");
    }
}
