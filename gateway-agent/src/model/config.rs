//! What the data plane should do: the translator's output, the data plane's input.
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use crate::resources::ObjectKey;

/// Listener port → what to do with connections arriving there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataplaneConfig {
    pub listeners: BTreeMap<u16, ListenerConfig>,
}

/// Serializable: a takeover hands it to the next agent with the listening socket.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListenerConfig {
    pub gateway: ObjectKey,
    pub listener: String,
    /// The route that gets this listener's traffic; None resets every connection.
    pub route: Option<ObjectKey>,
    /// The route's backendRefs, each with its weight.
    pub backends: Vec<BackendGroup>,
}

/// One backendRef: a share of new connections and the endpoints that serve it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackendGroup {
    /// "namespace/service:port", for logs.
    pub name: String,
    pub weight: u32,
    /// Ready endpoints. Empty: the backend is invalid or has no ready endpoint,
    /// and its share of connections is reset, as the spec requires.
    pub endpoints: Vec<SocketAddr>,
}

impl fmt::Display for ListenerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} ", self.gateway, self.listener)?;
        match &self.route {
            None => write!(f, "has no route: connections are reset"),
            Some(route) => {
                write!(f, "-> TCPRoute {route}:")?;
                for b in &self.backends {
                    let eps: Vec<String> = b.endpoints.iter().map(ToString::to_string).collect();
                    let eps = if eps.is_empty() { "none: reset".to_string() } else { eps.join(" ") };
                    write!(f, " [{} weight {} endpoints {eps}]", b.name, b.weight)?;
                }
                Ok(())
            }
        }
    }
}
