//! Status conditions, with the Gateway API's types and reasons.
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::jiff::Timestamp;

use crate::resources::gateway_api::{ParentReference, RouteGroupKind};
use crate::resources::policies::AncestorRef;
use crate::resources::ObjectKey;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
    /// metadata.generation of the object the condition was computed from.
    pub observed_generation: i64,
    /// When `status` last changed. The translator leaves it unset (it has no
    /// clock); [`super::transitions::carry`] fills it from the previous report.
    pub last_transition_time: Option<Timestamp>,
}

impl Condition {
    pub fn new(type_: &'static str, status: bool, reason: &'static str, message: impl Into<String>) -> Self {
        Condition { type_, status, reason, message: message.into(), observed_generation: 0, last_transition_time: None }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = if self.status { "True" } else { "False" };
        write!(f, "{}={}/{}", self.type_, status, self.reason)?;
        if !self.message.is_empty() {
            write!(f, " ({})", self.message)?;
        }
        Ok(())
    }
}

/// The conformance features a GatewayClass of sockgate's advertises in
/// `status.supportedFeatures` (the spec wants them sorted by name).
pub const SUPPORTED_FEATURES: [&str; 5] = ["Gateway", "ListenerSet", "ReferenceGrant", "TCPRoute", "UDPRoute"];

pub mod types {
    pub const ACCEPTED: &str = "Accepted";
    pub const PROGRAMMED: &str = "Programmed";
    pub const CONFLICTED: &str = "Conflicted";
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    pub const PARTIALLY_INVALID: &str = "PartiallyInvalid";
    pub const SUPPORTED_VERSION: &str = "SupportedVersion";
}

pub mod reasons {
    pub const ACCEPTED: &str = "Accepted";
    pub const PROGRAMMED: &str = "Programmed";
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    pub const NO_CONFLICTS: &str = "NoConflicts";
    pub const INVALID: &str = "Invalid";
    pub const INVALID_PARAMETERS: &str = "InvalidParameters";
    pub const LISTENERS_NOT_VALID: &str = "ListenersNotValid";
    pub const UNSUPPORTED_PROTOCOL: &str = "UnsupportedProtocol";
    pub const PROTOCOL_CONFLICT: &str = "ProtocolConflict";
    pub const PORT_UNAVAILABLE: &str = "PortUnavailable";
    /// Programmed=False while a node cannot bind a listener's port (it may yet).
    pub const PENDING: &str = "Pending";
    pub const SUPPORTED_VERSION: &str = "SupportedVersion";
    pub const UNSUPPORTED_VERSION: &str = "UnsupportedVersion";
    pub const INVALID_ROUTE_KINDS: &str = "InvalidRouteKinds";
    pub const NOT_ALLOWED_BY_LISTENERS: &str = "NotAllowedByListeners";
    pub const NO_MATCHING_PARENT: &str = "NoMatchingParent";
    pub const BACKEND_NOT_FOUND: &str = "BackendNotFound";
    pub const REF_NOT_PERMITTED: &str = "RefNotPermitted";
    pub const INVALID_KIND: &str = "InvalidKind";
    pub const UNSUPPORTED_VALUE: &str = "UnsupportedValue";
    /// A ListenerSet its Gateway's allowedListeners does not take.
    pub const NOT_ALLOWED: &str = "NotAllowed";
    // GEP-713 policy reasons
    pub const TARGET_NOT_FOUND: &str = "TargetNotFound";
    pub const CONFLICTED: &str = "Conflicted";
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenerStatus {
    pub name: String,
    /// Written only for XListenerSet, whose entry status requires it.
    pub port: i32,
    pub attached_routes: u32,
    pub supported_kinds: Vec<RouteGroupKind>,
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GatewayStatus {
    /// Where the Gateway is reachable: the addresses of the nodes whose agents serve it.
    pub addresses: Vec<IpAddr>,
    pub conditions: Vec<Condition>,
    pub listeners: Vec<ListenerStatus>,
    /// ListenerSets attached and Accepted (`status.attachedListenerSets`).
    pub attached_listener_sets: u32,
}

/// A ListenerSet's status: its conditions and its listeners'.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenerSetStatus {
    pub conditions: Vec<Condition>,
    pub listeners: Vec<ListenerStatus>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RouteParentStatus {
    pub parent_ref: ParentReference,
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PolicyKind {
    Listener,
    Backend,
}

/// A policy's status for one of its targets (GEP-713's ancestor status).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyAncestor {
    pub ancestor: AncestorRef,
    pub conditions: Vec<Condition>,
}

/// The computed status of every object this controller owns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatusReport {
    pub gateway_classes: BTreeMap<ObjectKey, Vec<Condition>>,
    pub gateways: BTreeMap<ObjectKey, GatewayStatus>,
    /// ListenerSets whose parent is one of sockgate's Gateways.
    pub listener_sets: BTreeMap<ObjectKey, ListenerSetStatus>,
    /// TCPRoutes' parents.
    pub routes: BTreeMap<ObjectKey, Vec<RouteParentStatus>>,
    /// UDPRoutes' parents.
    pub udp_routes: BTreeMap<ObjectKey, Vec<RouteParentStatus>>,
    pub policies: BTreeMap<(PolicyKind, ObjectKey), Vec<PolicyAncestor>>,
}

impl StatusReport {
    /// The lines of [`lines`](Self::lines) that carry a False Accepted,
    /// ResolvedRefs or Programmed condition: what makes `check` fail.
    pub fn failing_lines(&self) -> Vec<String> {
        let gate = [types::ACCEPTED, types::RESOLVED_REFS, types::PROGRAMMED];
        let failing = |c: &[Condition]| c.iter().any(|c| !c.status && gate.contains(&c.type_));
        let mut out = Vec::new();
        let mut lines = self.lines().into_iter();
        // lines() walks the report in this same order, one line per condition list.
        let mut take = |bad: bool| {
            let line = lines.next().unwrap_or_default();
            if bad {
                out.push(line.trim_start().to_string());
            }
        };
        for c in self.gateway_classes.values() {
            take(failing(c));
        }
        for g in self.gateways.values() {
            take(failing(&g.conditions));
            for l in &g.listeners {
                take(failing(&l.conditions));
            }
        }
        for set in self.listener_sets.values() {
            take(failing(&set.conditions));
            for l in &set.listeners {
                take(failing(&l.conditions));
            }
        }
        for routes in [&self.routes, &self.udp_routes] {
            for parents in routes.values() {
                for p in parents {
                    take(failing(&p.conditions));
                }
            }
        }
        for ancestors in self.policies.values() {
            for a in ancestors {
                take(failing(&a.conditions));
            }
        }
        out
    }

    /// Human-readable lines, for logs and `gateway-agent check`.
    pub fn lines(&self) -> Vec<String> {
        let join = |c: &[Condition]| c.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        let mut out = Vec::new();
        for (k, c) in &self.gateway_classes {
            out.push(format!("GatewayClass {k}: {}", join(c)));
        }
        for (k, g) in &self.gateways {
            let sets = if g.attached_listener_sets > 0 { format!(" (attachedListenerSets={})", g.attached_listener_sets) } else { String::new() };
            out.push(format!("Gateway {k}{sets}: {}", join(&g.conditions)));
            for l in &g.listeners {
                out.push(format!("  listener {} (attachedRoutes={}): {}", l.name, l.attached_routes, join(&l.conditions)));
            }
        }
        for (k, set) in &self.listener_sets {
            out.push(format!("ListenerSet {k}: {}", join(&set.conditions)));
            for l in &set.listeners {
                out.push(format!("  listener {} (attachedRoutes={}): {}", l.name, l.attached_routes, join(&l.conditions)));
            }
        }
        for (kind, routes) in [("TCPRoute", &self.routes), ("UDPRoute", &self.udp_routes)] {
            for (k, parents) in routes {
                for p in parents {
                    let section = p.parent_ref.section_name.as_deref().map(|s| format!("/{s}")).unwrap_or_default();
                    out.push(format!("{kind} {k} -> {}{section}: {}", p.parent_ref.name, join(&p.conditions)));
                }
            }
        }
        for ((kind, k), ancestors) in &self.policies {
            for a in ancestors {
                let section = a.ancestor.section_name.as_deref().map(|s| format!("/{s}")).unwrap_or_default();
                let kind = super::policies::kind_name(*kind);
                out.push(format!("{kind} {k} -> {} {}/{}{section}: {}", a.ancestor.kind, a.ancestor.namespace, a.ancestor.name, join(&a.conditions)));
            }
        }
        out
    }
}
