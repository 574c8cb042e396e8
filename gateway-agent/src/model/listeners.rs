//! Which listeners of sockgate's Gateways are valid, and who owns each port.
//!
//! One agent serves every Gateway of its class on the node's addresses, so a
//! (protocol, port) can carry one listener only: inside a Gateway two
//! listeners of one protocol on one port conflict (both `Conflicted`), and
//! across Gateways the oldest Gateway keeps the port and later ones get
//! `Accepted=False/PortUnavailable`. TCP port 53 and UDP port 53 are two
//! ports: a TCP and a UDP listener on one number are both served. HTTP,
//! HTTPS and TLS listeners, which sockgate does not serve, still live in
//! TCP's port space: GEP-2644 says a TCP listener sharing its port with one of
//! them conflicts (both `Conflicted=True/ProtocolConflict`, neither served),
//! and in a Gateway's merged list such a listener of an earlier owner takes the
//! port from a later TCP listener (the conformance case
//! ListenerSetProtocolConflict). Across Gateways only the listeners sockgate
//! serves claim a port. A ListenerSet's listeners are judged as the
//! Gateway's, after its own (see [`super::listener_sets`] for the order).
use std::collections::BTreeMap;
use std::fmt;

use super::status::{reasons, types, Condition};
use crate::resources::gateway_api::{Listener, RouteGroupKind, GROUP};
use crate::resources::{Gateway, ObjectKey};

pub const TCP_ROUTE_KIND: &str = "TCPRoute";
pub const UDP_ROUTE_KIND: &str = "UDPRoute";

/// The route kinds sockgate serves, one per listener protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteKind {
    Tcp,
    Udp,
}

impl RouteKind {
    pub const ALL: [RouteKind; 2] = [RouteKind::Tcp, RouteKind::Udp];

    /// The kind a listener of `protocol` serves, if sockgate serves that protocol.
    pub fn for_protocol(protocol: &str) -> Option<RouteKind> {
        match protocol {
            "TCP" => Some(RouteKind::Tcp),
            "UDP" => Some(RouteKind::Udp),
            _ => None,
        }
    }

    /// `TCPRoute` or `UDPRoute`.
    pub fn name(self) -> &'static str {
        match self {
            RouteKind::Tcp => TCP_ROUTE_KIND,
            RouteKind::Udp => UDP_ROUTE_KIND,
        }
    }

    /// The listener protocol and the Service port protocol of the kind.
    pub fn protocol(self) -> &'static str {
        match self {
            RouteKind::Tcp => "TCP",
            RouteKind::Udp => "UDP",
        }
    }

    /// The transport whose ports a listener of `protocol` uses: TCP for TCP,
    /// HTTP, HTTPS and TLS; UDP for UDP; None for a protocol sockgate cannot place.
    pub fn port_space(protocol: &str) -> Option<RouteKind> {
        match protocol {
            "TCP" | "HTTP" | "HTTPS" | "TLS" => Some(RouteKind::Tcp),
            "UDP" => Some(RouteKind::Udp),
            _ => None,
        }
    }

    fn group_kind(self) -> RouteGroupKind {
        RouteGroupKind { group: Some(GROUP.to_string()), kind: self.name().to_string() }
    }
}

/// Whose listener it is: a Gateway's own, or one a ListenerSet adds to its Gateway.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ListenerOwner {
    Gateway(ObjectKey),
    ListenerSet(ObjectKey),
}

impl fmt::Display for ListenerOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenerOwner::Gateway(k) => write!(f, "Gateway {k}"),
            ListenerOwner::ListenerSet(k) => write!(f, "ListenerSet {k}"),
        }
    }
}

/// The verdict on one listener before routes are considered.
#[derive(Clone, Debug)]
pub struct ListenerVerdict {
    /// The Gateway the listener is served for (a ListenerSet's parent).
    pub gateway: ObjectKey,
    pub owner: ListenerOwner,
    /// Its index in its owner's `spec.listeners`.
    pub index: usize,
    /// The route kind its protocol serves; None for a protocol sockgate does not serve.
    pub kind: Option<RouteKind>,
    /// Usable: accepted, not conflicted, with a valid route kind.
    pub valid: bool,
    pub supported_kinds: Vec<RouteGroupKind>,
    pub conditions: Vec<Condition>,
}

/// The route kinds a listener serving `kind` admits: that kind, or of
/// `allowedRoutes.kinds` those that are that kind. Returns (supported, had invalid kinds).
fn supported_kinds(listener: &Listener, kind: Option<RouteKind>) -> (Vec<RouteGroupKind>, bool) {
    let own: Vec<RouteGroupKind> = kind.map(RouteKind::group_kind).into_iter().collect();
    let Some(kinds) = listener.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref()).filter(|k| !k.is_empty()) else {
        return (own, false);
    };
    let is_own = |k: &RouteGroupKind| kind.is_some_and(|kind| k.kind == kind.name()) && k.group.as_deref().unwrap_or(GROUP) == GROUP;
    let (ok, bad): (Vec<_>, Vec<_>) = kinds.iter().partition(|k| is_own(k));
    let supported = if ok.is_empty() { vec![] } else { own };
    (supported, !bad.is_empty())
}

/// Judges the listeners of `gateways` (sockgate's, oldest first), each
/// Gateway's own listeners followed by those of its attached ListenerSets
/// (`sets`, in precedence order).
pub fn judge(gateways: &[(&ObjectKey, &Gateway)], sets: &BTreeMap<ObjectKey, Vec<(&ObjectKey, &[Listener])>>) -> Vec<ListenerVerdict> {
    let mut verdicts = Vec::new();
    // (kind, port) → owning Gateway (the first, i.e. oldest, to claim it).
    let mut port_owner: BTreeMap<(RouteKind, i32), &ObjectKey> = BTreeMap::new();
    for (key, gateway) in gateways {
        let own = std::iter::once((ListenerOwner::Gateway((*key).clone()), gateway.spec.listeners.as_slice()));
        let added = sets.get(*key).into_iter().flatten().map(|(k, l)| (ListenerOwner::ListenerSet((*k).clone()), *l));
        // (kind, port) → the listener of an earlier owner of this Gateway's merged list that uses it.
        let mut claimed: BTreeMap<(RouteKind, i32), String> = BTreeMap::new();
        // The same, for listeners of a protocol sockgate serves: what claims a port across Gateways.
        let mut served_ports = Vec::new();
        for (owner, listeners) in own.chain(added) {
            judge_owner(key, &owner, listeners, &port_owner, &claimed, &mut verdicts);
            for l in listeners {
                if let Some(space) = RouteKind::port_space(&l.protocol) {
                    claimed.entry((space, l.port)).or_insert_with(|| format!("listener {:?} ({}) of {owner}", l.name, l.protocol));
                }
                if let Some(kind) = RouteKind::for_protocol(&l.protocol) {
                    served_ports.push((kind, l.port));
                }
            }
        }
        for (kind, port) in served_ports {
            port_owner.entry((kind, port)).or_insert(key);
        }
    }
    verdicts
}

/// The verdicts on one owner's listeners. Inside one owner two listeners of
/// a protocol on one port are both conflicted (the spec picks no winner);
/// against an earlier owner of the merged list (the Gateway, then older
/// ListenerSets) the later listener alone loses, as the spec's precedence says.
fn judge_owner(
    gateway: &ObjectKey,
    owner: &ListenerOwner,
    listeners: &[Listener],
    port_owner: &BTreeMap<(RouteKind, i32), &ObjectKey>,
    claimed: &BTreeMap<(RouteKind, i32), String>,
    verdicts: &mut Vec<ListenerVerdict>,
) {
    // (port space, port) → the owner's listeners there, by index.
    let mut ports: BTreeMap<(RouteKind, i32), Vec<usize>> = BTreeMap::new();
    for (index, l) in listeners.iter().enumerate() {
        if let Some(space) = RouteKind::port_space(&l.protocol) {
            ports.entry((space, l.port)).or_default().push(index);
        }
    }
    // The other listeners of this owner `index` conflicts with: any other in
    // its port space when one of them is TCP or UDP (two HTTPS listeners
    // differing by hostname are distinct; sockgate serves neither and judges
    // only what touches its protocols).
    let rivals = |index: usize| -> Vec<String> {
        let l = &listeners[index];
        let Some(sharing) = RouteKind::port_space(&l.protocol).and_then(|space| ports.get(&(space, l.port))) else { return Vec::new() };
        if !sharing.iter().any(|i| RouteKind::for_protocol(&listeners[*i].protocol).is_some()) {
            return Vec::new();
        }
        sharing.iter().filter(|i| **i != index).map(|i| format!("listener {:?} ({})", listeners[*i].name, listeners[*i].protocol)).collect()
    };
    for (index, l) in listeners.iter().enumerate() {
        let mut conditions = Vec::new();
        let mut valid = true;
        let kind = RouteKind::for_protocol(&l.protocol);
        let (kinds, bad_kinds) = supported_kinds(l, kind);
        let other_gateway = kind.and_then(|k| port_owner.get(&(k, l.port))).filter(|owner| *owner != &gateway);
        let earlier = kind.and_then(|k| claimed.get(&(k, l.port))).filter(|_| other_gateway.is_none());
        match kind {
            None => {
                valid = false;
                conditions.push(Condition::new(types::ACCEPTED, false, reasons::UNSUPPORTED_PROTOCOL,
                    format!("sockgate serves TCP and UDP listeners only, not {}", l.protocol)));
            }
            Some(_) if other_gateway.is_some() => {
                valid = false;
                conditions.push(Condition::new(types::ACCEPTED, false, reasons::PORT_UNAVAILABLE,
                    format!("{} port {} is served for Gateway {}", l.protocol, l.port, other_gateway.expect("checked"))));
            }
            Some(_) if earlier.is_some() => {
                valid = false;
                conditions.push(Condition::new(types::ACCEPTED, false, reasons::PROTOCOL_CONFLICT,
                    format!("{} port {} is used by {}, which takes precedence", l.protocol, l.port, earlier.expect("checked"))));
            }
            Some(_) => conditions.push(Condition::new(types::ACCEPTED, true, reasons::ACCEPTED, "")),
        }
        let rivals = rivals(index);
        if let Some(other) = other_gateway {
            // sockgate keeps the older Gateway's listener serving rather than
            // stop both (one agent serves every Gateway on the node's
            // addresses); the loser is told it conflicts, and with whom.
            conditions.push(Condition::new(types::CONFLICTED, true, reasons::PROTOCOL_CONFLICT,
                format!("{} port {} is served for Gateway {other}, which is older", l.protocol, l.port)));
        } else if let Some(earlier) = earlier {
            conditions.push(Condition::new(types::CONFLICTED, true, reasons::PROTOCOL_CONFLICT,
                format!("{} port {} is used by {earlier}, which takes precedence", l.protocol, l.port)));
        } else if !rivals.is_empty() {
            valid = false;
            let space = RouteKind::port_space(&l.protocol).map_or("", RouteKind::protocol);
            conditions.push(Condition::new(types::CONFLICTED, true, reasons::PROTOCOL_CONFLICT,
                format!("{space} port {} is also used by {}: listeners on one {space} port must be distinct, and a {space} listener shares its port with no other", l.port, rivals.join(", "))));
        } else {
            conditions.push(Condition::new(types::CONFLICTED, false, reasons::NO_CONFLICTS, ""));
        }
        if bad_kinds {
            let message = match kind {
                Some(k) => format!("only {} is supported on a {} listener", k.name(), k.protocol()),
                None => format!("sockgate supports no route kind on a {} listener", l.protocol),
            };
            conditions.push(Condition::new(types::RESOLVED_REFS, false, reasons::INVALID_ROUTE_KINDS, message));
            valid &= !kinds.is_empty();
        } else {
            conditions.push(Condition::new(types::RESOLVED_REFS, true, reasons::RESOLVED_REFS, ""));
        }
        conditions.push(if earlier.is_some() {
            Condition::new(types::PROGRAMMED, false, reasons::PROTOCOL_CONFLICT, "the listener lost its port to one that takes precedence")
        } else if valid {
            Condition::new(types::PROGRAMMED, true, reasons::PROGRAMMED, "")
        } else {
            Condition::new(types::PROGRAMMED, false, reasons::INVALID, "the listener is not valid")
        });
        verdicts.push(ListenerVerdict { gateway: gateway.clone(), owner: owner.clone(), index, kind, valid, supported_kinds: kinds, conditions });
    }
}
