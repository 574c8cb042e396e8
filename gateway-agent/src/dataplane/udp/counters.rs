//! What the UDP relay counts: datagrams and bytes each way, flows created,
//! flows ended by reason, datagrams dropped by reason. One set per
//! (listener, route), so a listener whose route changes keeps both apart and
//! a route on several listeners can be summed.
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Why a flow left the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowEnd {
    /// No datagram either way for the listener's idle timeout.
    Idle,
    /// Its endpoint left the route's ready endpoints (or its backend's share
    /// changed): the client's next datagram starts a new flow, picked afresh.
    EndpointRemoved,
    /// The listener now serves another route, or none.
    RouteChanged,
    /// The listener went away (or the agent stopped).
    ListenerRemoved,
}

impl FlowEnd {
    pub const ALL: [FlowEnd; 4] = [FlowEnd::Idle, FlowEnd::EndpointRemoved, FlowEnd::RouteChanged, FlowEnd::ListenerRemoved];

    pub fn label(self) -> &'static str {
        match self {
            FlowEnd::Idle => "idle",
            FlowEnd::EndpointRemoved => "endpoint_removed",
            FlowEnd::RouteChanged => "route_changed",
            FlowEnd::ListenerRemoved => "listener_removed",
        }
    }
}

/// Why a datagram was not forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The listener has no route.
    NoRoute,
    /// The flow's share belongs to a backendRef that cannot serve (missing,
    /// not permitted, no ready endpoint): dropped, as TCP connections are reset.
    InvalidBackend,
    /// The client's address is not allowed (ListenerPolicy clientCIDRs).
    ClientDenied,
    /// A new flow beyond the listener's maxConnections.
    FlowLimit,
    /// A new flow while the relay holds as many flows as its share of the
    /// open-files limit allows (each flow is a socket): old flows keep going.
    TableFull,
    /// The socket toward the backend (or back to the client) refused it.
    SendFailed,
    /// The backend answered with ICMP port unreachable (the datagram is lost).
    BackendUnreachable,
}

impl DropReason {
    pub const ALL: [DropReason; 7] =
        [DropReason::NoRoute, DropReason::InvalidBackend, DropReason::ClientDenied, DropReason::FlowLimit, DropReason::TableFull, DropReason::SendFailed, DropReason::BackendUnreachable];

    pub fn label(self) -> &'static str {
        match self {
            DropReason::NoRoute => "no_route",
            DropReason::InvalidBackend => "invalid_backend",
            DropReason::ClientDenied => "client_denied",
            DropReason::FlowLimit => "flow_limit",
            DropReason::TableFull => "table_full",
            DropReason::SendFailed => "send_failed",
            DropReason::BackendUnreachable => "backend_unreachable",
        }
    }
}

#[derive(Debug, Default)]
pub struct UdpCounters {
    pub datagrams_from_clients: AtomicU64,
    pub bytes_from_clients: AtomicU64,
    pub datagrams_to_clients: AtomicU64,
    pub bytes_to_clients: AtomicU64,
    pub flows_created: AtomicU64,
    flows_ended: [AtomicU64; FlowEnd::ALL.len()],
    dropped: [AtomicU64; DropReason::ALL.len()],
}

impl UdpCounters {
    pub fn from_client(&self, bytes: usize) {
        self.datagrams_from_clients.fetch_add(1, Ordering::Relaxed);
        self.bytes_from_clients.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn to_client(&self, bytes: usize) {
        self.datagrams_to_clients.fetch_add(1, Ordering::Relaxed);
        self.bytes_to_clients.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn ended(&self, why: FlowEnd, flows: u64) {
        self.flows_ended[why as usize].fetch_add(flows, Ordering::Relaxed);
    }

    pub fn dropped(&self, why: DropReason) {
        self.dropped[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn read(&self) -> CounterValues {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CounterValues {
            datagrams_from_clients: get(&self.datagrams_from_clients),
            bytes_from_clients: get(&self.bytes_from_clients),
            datagrams_to_clients: get(&self.datagrams_to_clients),
            bytes_to_clients: get(&self.bytes_to_clients),
            flows_created: get(&self.flows_created),
            flows_ended: FlowEnd::ALL.iter().map(|r| (r.label().to_string(), get(&self.flows_ended[*r as usize]))).collect(),
            dropped: DropReason::ALL.iter().map(|r| (r.label().to_string(), get(&self.dropped[*r as usize]))).collect(),
            translated: Vec::new(),
        }
    }
}

/// The counters at one moment, as metrics and `inspect` show them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CounterValues {
    pub datagrams_from_clients: u64,
    pub bytes_from_clients: u64,
    pub datagrams_to_clients: u64,
    pub bytes_to_clients: u64,
    pub flows_created: u64,
    /// Flows ended, by reason label.
    pub flows_ended: Vec<(String, u64)>,
    /// Datagrams dropped, by reason label.
    pub dropped: Vec<(String, u64)>,
    /// The kernel NAT only: packets translated besides whole datagrams, by
    /// kind (`fragment`: a datagram's later fragments; `icmp_error`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub translated: Vec<(String, u64)>,
}
