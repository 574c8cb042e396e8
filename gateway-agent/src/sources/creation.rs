//! creationTimestamp for objects that come without one.
//!
//! The API server stamps every object when it is created, and the spec's
//! tie-breaks ("the oldest route wins a listener") depend on it. Manifests on
//! disk carry no timestamp, so standalone mode stamps each object with the time
//! the agent first saw it, and keeps that stamp across reloads: an object that
//! was there first stays older than one added later, as it would in a cluster.
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use crate::resources::{ObjectKey, Snapshot};

#[derive(Debug, Default)]
pub struct CreationClock {
    first_seen: BTreeMap<(&'static str, ObjectKey), Time>,
}

impl CreationClock {
    /// Fills in missing creationTimestamps with the first time each object was
    /// seen (`now` for objects new in this snapshot), and forgets objects that
    /// are gone, so that one deleted and re-added is new again.
    pub fn stamp(&mut self, snapshot: &mut Snapshot, now: Timestamp) {
        let mut seen = BTreeMap::new();
        let mut visit = |kind: &'static str, key: &ObjectKey, meta: &mut ObjectMeta| {
            if meta.creation_timestamp.is_none() {
                let stamp = self.first_seen.get(&(kind, key.clone())).cloned().unwrap_or(Time(now));
                meta.creation_timestamp = Some(stamp.clone());
                seen.insert((kind, key.clone()), stamp);
            }
        };
        for (k, o) in snapshot.gateway_classes.iter_mut() {
            visit("GatewayClass", k, &mut o.metadata);
        }
        for (k, o) in snapshot.gateways.iter_mut() {
            visit("Gateway", k, &mut o.metadata);
        }
        for (k, o) in snapshot.tcp_routes.iter_mut() {
            visit("TCPRoute", k, &mut o.route.metadata);
        }
        for (k, o) in snapshot.udp_routes.iter_mut() {
            visit("UDPRoute", k, &mut o.route.metadata);
        }
        for (k, o) in snapshot.reference_grants.iter_mut() {
            visit("ReferenceGrant", k, &mut o.metadata);
        }
        for (k, o) in snapshot.services.iter_mut() {
            visit("Service", k, &mut o.metadata);
        }
        for (k, o) in snapshot.endpoint_slices.iter_mut() {
            visit("EndpointSlice", k, &mut o.metadata);
        }
        for (k, o) in snapshot.namespaces.iter_mut() {
            visit("Namespace", k, &mut o.metadata);
        }
        // Policy conflicts are settled by age, as route conflicts are.
        for (k, o) in snapshot.listener_policies.iter_mut() {
            visit("ListenerPolicy", k, &mut o.metadata);
        }
        for (k, o) in snapshot.backend_policies.iter_mut() {
            visit("BackendPolicy", k, &mut o.metadata);
        }
        self.first_seen = seen;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{gateway_api::TcpRouteSpec, TcpRoute, TcpRouteVersion, VersionedTcpRoute};

    fn route(name: &str) -> (ObjectKey, VersionedTcpRoute) {
        let mut r = TcpRoute { spec: TcpRouteSpec::default(), ..Default::default() };
        r.metadata.name = Some(name.into());
        (ObjectKey::new("default", name), VersionedTcpRoute { version: TcpRouteVersion::V1, route: r })
    }

    fn stamp_of(s: &Snapshot, name: &str) -> Timestamp {
        s.tcp_routes[&ObjectKey::new("default", name)].route.metadata.creation_timestamp.clone().unwrap().0
    }

    #[test]
    fn objects_keep_their_first_seen_time_and_newcomers_are_younger() {
        let t1: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t2: Timestamp = "2026-01-01T00:00:05Z".parse().unwrap();
        let mut clock = CreationClock::default();
        let mut first = Snapshot::default();
        first.tcp_routes.extend([route("a")]);
        clock.stamp(&mut first, t1);

        let mut second = Snapshot::default();
        second.tcp_routes.extend([route("a"), route("b")]);
        clock.stamp(&mut second, t2);
        assert_eq!(stamp_of(&second, "a"), t1);
        assert_eq!(stamp_of(&second, "b"), t2);
    }

    #[test]
    fn an_object_removed_and_added_again_is_new() {
        let t1: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t3: Timestamp = "2026-01-01T00:00:09Z".parse().unwrap();
        let mut clock = CreationClock::default();
        let mut s = Snapshot::default();
        s.tcp_routes.extend([route("a")]);
        clock.stamp(&mut s, t1);
        clock.stamp(&mut Snapshot::default(), t1);
        let mut again = Snapshot::default();
        again.tcp_routes.extend([route("a")]);
        clock.stamp(&mut again, t3);
        assert_eq!(stamp_of(&again, "a"), t3);
    }

    #[test]
    fn a_timestamp_given_in_the_manifest_is_kept() {
        let given: Timestamp = "2020-05-05T00:00:00Z".parse().unwrap();
        let mut s = Snapshot::default();
        let (k, mut r) = route("a");
        r.route.metadata.creation_timestamp = Some(Time(given));
        s.tcp_routes.insert(k, r);
        CreationClock::default().stamp(&mut s, "2026-01-01T00:00:00Z".parse().unwrap());
        assert_eq!(stamp_of(&s, "a"), given);
    }
}
