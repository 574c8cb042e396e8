//! What the data plane should do: the translator's output, the data plane's input.
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::dataplane::xdp::Cidr;
use crate::resources::policies::ProxyProtocolVersion;
use crate::resources::ObjectKey;

/// Listener port → what to do with connections (TCP) and datagrams (UDP)
/// arriving there. TCP and UDP ports are apart: one number may be in both.
/// Serializable for `inspect`, which names what each port serves from it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataplaneConfig {
    /// TCP listeners (TCPRoutes).
    pub listeners: BTreeMap<u16, ListenerConfig>,
    /// UDP listeners (UDPRoutes); `route` is a UDPRoute, and a flow stands
    /// where a connection would (maxConnections caps flows, idleTimeout ends them).
    pub udp_listeners: BTreeMap<u16, ListenerConfig>,
}

/// Serializable: a takeover hands it to the next agent with the listening socket.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListenerConfig {
    pub gateway: ObjectKey,
    /// The ListenerSet that added the listener to `gateway`, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_set: Option<ObjectKey>,
    pub listener: String,
    /// The route that gets this listener's traffic; None resets every connection.
    pub route: Option<ObjectKey>,
    /// The route's backendRefs, each with its weight.
    pub backends: Vec<BackendGroup>,
    /// What ListenerPolicies say about this listener (defaults when none does).
    #[serde(default)]
    pub policy: ListenerPolicyConfig,
    /// How a connection picks among `backends` (a BackendPolicy on the route says).
    #[serde(default)]
    pub load_balancer: LoadBalancing,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoadBalancing {
    #[default]
    RoundRobin,
    /// The backendRef by weight, then its endpoint with the fewest open connections.
    LeastConnections,
    /// By the client's IP address.
    ConsistentHash,
}

/// A listener's effective ListenerPolicy fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerPolicyConfig {
    /// Only these clients may connect, when not empty.
    #[serde(with = "cidr_strings")]
    pub allow: Vec<Cidr>,
    /// These clients may never connect (deny wins over allow).
    #[serde(with = "cidr_strings")]
    pub deny: Vec<Cidr>,
    pub max_connections: Option<u32>,
    pub idle_timeout: Option<Duration>,
    /// Expect a PROXY protocol header first and take the client's address from it.
    pub accept_proxy_protocol: bool,
    /// Toward the client (`#[serde(default)]`: an older agent's takeover payload has none).
    #[serde(default)]
    pub liveness: Liveness,
}

impl ListenerPolicyConfig {
    /// Whether `client` may connect: not denied, and allowed when an allow list exists.
    pub fn admits(&self, client: std::net::IpAddr) -> bool {
        !self.deny.iter().any(|c| c.contains(client)) && (self.allow.is_empty() || self.allow.iter().any(|c| c.contains(client)))
    }
}

/// A backend's effective BackendPolicy fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendPolicyConfig {
    pub send_proxy_protocol: Option<ProxyProtocolVersion>,
    pub connect_timeout: Option<Duration>,
    /// Further endpoints tried after a failed connect.
    pub retries: Option<u32>,
    pub outlier: Option<OutlierConfig>,
    /// Toward the backend.
    #[serde(default)]
    pub liveness: Liveness,
    /// Active checks of its endpoints.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
}

/// An active health check, parsed (ordered, so that one endpoint's checks can be keyed by it).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HealthCheckConfig {
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
    /// Written once connected (empty: nothing).
    pub send: Vec<u8>,
    /// Must appear in the answer (empty: a connect is enough).
    pub receive: Vec<u8>,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig { interval: Duration::from_secs(5), timeout: Duration::from_secs(1), unhealthy_threshold: 3, healthy_threshold: 2, send: Vec::new(), receive: Vec::new() }
    }
}

/// How one side of a connection finds out its peer is gone without a FIN or
/// RST: keepalive probes after a quiet time, and TCP_USER_TIMEOUT for data
/// that stays unacknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    pub keepalive_idle: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_probes: u32,
    /// None: the kernel's default.
    pub user_timeout: Option<Duration>,
}

impl Default for Liveness {
    /// A quiet connection is probed after 2 minutes and closed after 4
    /// unanswered probes 30 s apart: a vanished peer is let go of within 4
    /// minutes, at the cost of one small segment per 2 quiet minutes.
    fn default() -> Self {
        Liveness { keepalive_idle: Duration::from_secs(120), keepalive_interval: Duration::from_secs(30), keepalive_probes: 4, user_timeout: None }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutlierConfig {
    pub consecutive_failures: u32,
    pub ejection: Duration,
}

/// CIDRs travel (takeover) in the form a policy writes them.
mod cidr_strings {
    use crate::dataplane::xdp::Cidr;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(cidrs: &[Cidr], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(cidrs.iter().map(ToString::to_string))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Cidr>, D::Error> {
        Vec::<String>::deserialize(d)?.iter().map(|c| c.parse().map_err(serde::de::Error::custom)).collect()
    }
}

/// One backendRef: a share of new connections and the endpoints that serve it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackendGroup {
    /// "namespace/service:port", for logs.
    pub name: String,
    /// The Service it names (BackendPolicies attach to it).
    #[serde(default)]
    pub service: ObjectKey,
    pub weight: u32,
    /// Ready endpoints. Empty: the backend is invalid or has no ready endpoint,
    /// and its share of connections is reset, as the spec requires.
    pub endpoints: Vec<SocketAddr>,
    /// What BackendPolicies say about connecting to it (defaults when none does).
    #[serde(default)]
    pub policy: BackendPolicyConfig,
}

impl fmt::Display for ListenerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.describe(f, "TCPRoute")
    }
}

/// A UDP listener in words (its route is a UDPRoute, its traffic datagrams).
pub struct UdpListenerDisplay<'a>(pub &'a ListenerConfig);

impl fmt::Display for UdpListenerDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.describe(f, "UDPRoute")
    }
}

impl ListenerConfig {
    /// "gateway/listener", or for a ListenerSet's listener
    /// "gateway (ListenerSet set)/listener": listener names are unique only per owner.
    pub fn place(&self) -> String {
        match &self.listener_set {
            None => format!("{}/{}", self.gateway, self.listener),
            Some(set) => format!("{} (ListenerSet {set})/{}", self.gateway, self.listener),
        }
    }

    fn describe(&self, f: &mut fmt::Formatter<'_>, route_kind: &str) -> fmt::Result {
        write!(f, "{} ", self.place())?;
        match &self.route {
            None if route_kind == "UDPRoute" => write!(f, "has no route: datagrams are dropped"),
            None => write!(f, "has no route: connections are reset"),
            Some(route) => {
                write!(f, "-> {route_kind} {route}:")?;
                for b in &self.backends {
                    let eps: Vec<String> = b.endpoints.iter().map(ToString::to_string).collect();
                    let none = if route_kind == "UDPRoute" { "none: dropped" } else { "none: reset" };
                    let eps = if eps.is_empty() { none.to_string() } else { eps.join(" ") };
                    write!(f, " [{} weight {} endpoints {eps}]", b.name, b.weight)?;
                }
                Ok(())
            }
        }
    }
}
