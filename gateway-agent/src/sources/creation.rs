//! creationTimestamp for objects that come without one.
//!
//! The API server stamps every object when it is created, and the spec's
//! tie-breaks ("the oldest route wins a listener", "the older policy wins")
//! depend on it. Manifests on disk carry no timestamp, so standalone mode stamps
//! each object with the time an agent first saw it, and keeps that stamp across
//! reloads: an object that was there first stays older than one added later, as
//! it would in a cluster.
//!
//! The stamps also survive restarts and takeovers: they are kept in a small file
//! beside the manifests (`DIR/.sockgate-first-seen.json` by default, not a
//! manifest itself), rewritten whenever an object appears or goes, and read by
//! the next agent and by `check`/`status`, so that a restart changes no winner
//! and `check` reports what the running agent does. An object deleted and added
//! again is new. A `metadata.creationTimestamp` written in a manifest always
//! wins over the file, for whoever wants to pin an order by hand.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use crate::resources::{ObjectKey, Snapshot};

#[derive(Debug, Default)]
pub struct CreationClock {
    first_seen: BTreeMap<(&'static str, ObjectKey), Time>,
    /// Whether `first_seen` changed since it was last saved or loaded.
    changed: bool,
}

/// The file's form: "Kind namespace/name" → RFC 3339 time with its fraction of
/// a second (metav1.Time keeps whole seconds only, which would tie two objects
/// seen within one second and let the name decide after a restart).
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Saved {
    #[serde(rename = "firstSeen")]
    first_seen: BTreeMap<String, String>,
}

/// Where standalone mode keeps first-seen times for `dir` unless told otherwise.
pub fn default_file(manifests: &Path) -> PathBuf {
    manifests.join(".sockgate-first-seen.json")
}

const KINDS: [&str; 10] = ["GatewayClass", "Gateway", "TCPRoute", "UDPRoute", "ReferenceGrant", "Service", "EndpointSlice", "Namespace", "ListenerPolicy", "BackendPolicy"];

impl CreationClock {
    /// The stamps saved in `file`; none if there is no file yet. An unreadable
    /// or garbled file is an error (the caller says so and starts afresh).
    pub fn load(file: &Path) -> Result<CreationClock, String> {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(CreationClock::default()),
            Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
        };
        let saved: Saved = serde_json::from_str(&text).map_err(|e| format!("{} is not a first-seen file: {e}", file.display()))?;
        let mut first_seen = BTreeMap::new();
        for (name, time) in saved.first_seen {
            let Some((kind, key)) = name.split_once(' ') else { continue };
            let Some(kind) = KINDS.iter().find(|k| **k == kind) else { continue };
            let key = match key.split_once('/') {
                Some((ns, n)) => ObjectKey::new(ns, n),
                None => ObjectKey::cluster(key),
            };
            let Ok(time) = time.parse::<Timestamp>() else { continue };
            first_seen.insert((*kind, key), Time(time));
        }
        Ok(CreationClock { first_seen, changed: false })
    }

    /// Writes the stamps to `file` if they changed (atomically: a temporary file renamed over it).
    pub fn save(&mut self, file: &Path) -> std::io::Result<()> {
        if !self.changed {
            return Ok(());
        }
        let saved = Saved { first_seen: self.first_seen.iter().map(|((kind, key), t)| (format!("{kind} {key}"), t.0.to_string())).collect() };
        let temporary = file.with_extension("json.tmp");
        std::fs::write(&temporary, serde_json::to_string_pretty(&saved).expect("stamps serialize") + "\n")?;
        std::fs::rename(&temporary, file)?;
        self.changed = false;
        Ok(())
    }

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
        // ListenerSets' age decides which keeps a contested port.
        for (k, o) in snapshot.listener_sets.iter_mut() {
            visit("ListenerSet", k, &mut o.set.metadata);
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
        if seen != self.first_seen {
            self.changed = true;
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
    fn first_seen_times_survive_a_restart_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = default_file(dir.path());
        let t1: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t2: Timestamp = "2026-01-01T00:00:00.5Z".parse().unwrap();
        let mut clock = CreationClock::load(&file).unwrap();
        let mut s = Snapshot::default();
        s.tcp_routes.extend([route("zeta")]);
        clock.stamp(&mut s, t1);
        clock.save(&file).unwrap();
        // A restart: a new clock from the file, and alpha is new.
        let mut restarted = CreationClock::load(&file).unwrap();
        let mut s = Snapshot::default();
        s.tcp_routes.extend([route("zeta"), route("alpha")]);
        restarted.stamp(&mut s, t2);
        assert_eq!((stamp_of(&s, "zeta"), stamp_of(&s, "alpha")), (t1, t2), "zeta stays older than alpha, even within one second");
        restarted.save(&file).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("\"TCPRoute default/zeta\": \"2026-01-01T00:00:00Z\""), "{text}");
        std::fs::write(&file, "garbage").unwrap();
        assert!(CreationClock::load(&file).unwrap_err().contains("is not a first-seen file"));
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
