//! What the fuzz targets share: the agent's pipeline from a loaded snapshot to
//! the status it would write, with the properties every run must keep, and a
//! structured generator of Gateway API objects (`world`).
//!
//! A property that does not hold panics, which libFuzzer reports as a crash
//! and saves as a reproducer, like any other panic in the code under test.
pub mod world;

use std::collections::BTreeSet;

use gateway_agent::model::attach::parent_gateway;
use gateway_agent::model::status::{types, Condition, StatusReport};
use gateway_agent::model::transitions::carry;
use gateway_agent::model::{translate, Settings, Translation};
use gateway_agent::resources::gateway_api::MAX_WEIGHT;
use gateway_agent::resources::Snapshot;
use gateway_agent::sources::creation::CreationClock;
use gateway_agent::sources::manifests::Loaded;
use gateway_agent::status::render::{status_objects, to_yaml};
use k8s_openapi::jiff::Timestamp;

/// Runs what the agent runs after a successful load (stamp creation times,
/// translate, carry transition times, render status) and checks the result.
pub fn check_pipeline(loaded: Loaded) {
    let mut snapshot = loaded.snapshot;
    check_loaded(&snapshot);
    let first_seen = Timestamp::from_second(1_800_000_000).unwrap();
    CreationClock::default().stamp(&mut snapshot, first_seen);
    let settings = Settings {
        gateway_addresses: vec!["198.18.0.1".parse().unwrap()],
        ..Settings::default()
    };

    let mut translation = translate(&snapshot, &settings);
    assert_eq!(
        translation,
        translate(&snapshot, &settings),
        "the translator is deterministic"
    );
    check_translation(&snapshot, &translation);

    carry(
        &StatusReport::default(),
        &mut translation.status,
        first_seen,
    );
    // The same snapshot a second later: nothing flipped, so no time moves.
    let mut again = translate(&snapshot, &settings);
    let later = Timestamp::from_second(1_800_000_001).unwrap();
    carry(&translation.status, &mut again.status, later);
    for condition in all_conditions(&again.status) {
        assert_eq!(
            condition.last_transition_time,
            Some(first_seen),
            "{condition} moved although nothing changed"
        );
    }

    let objects = status_objects(&snapshot, &again.status, &settings.controller_name);
    let yaml = to_yaml(&objects);
    if objects.is_empty() {
        // YAML reads an empty text as one null document.
        assert!(yaml.is_empty());
        return;
    }
    let reread: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&yaml)
        .map(|document| {
            serde::Deserialize::deserialize(document).expect("the status YAML reads back")
        })
        .collect();
    assert_eq!(reread, objects, "the status YAML reads back as written");
}

/// What the loader promises about what it accepted.
fn check_loaded(snapshot: &Snapshot) {
    for (key, gateway) in &snapshot.gateways {
        assert!(
            !key.namespace.is_empty(),
            "namespaced objects get a namespace"
        );
        gateway
            .validate()
            .expect("the loader only accepts valid Gateways");
    }
    for (key, route) in &snapshot.tcp_routes {
        assert!(
            !key.namespace.is_empty(),
            "namespaced objects get a namespace"
        );
        route
            .route
            .validate(route.version)
            .expect("the loader only accepts valid TCPRoutes");
    }
    for key in snapshot
        .gateway_classes
        .keys()
        .chain(snapshot.namespaces.keys())
    {
        assert!(
            key.namespace.is_empty(),
            "cluster-scoped objects have no namespace"
        );
    }
}

/// The data plane programs exactly the listeners the status calls Programmed.
fn check_translation(snapshot: &Snapshot, t: &Translation) {
    let mut programmed = BTreeSet::new();
    for (gateway_key, gateway) in &t.status.gateways {
        for listener in &gateway.listeners {
            if has(&listener.conditions, types::PROGRAMMED, true) {
                programmed.insert((gateway_key.clone(), listener.name.clone()));
            }
        }
    }
    // TCP and UDP listeners are served from two tables (a TCP and a UDP
    // listener may share a port number); each is one listener per port.
    let served: BTreeSet<_> = t
        .dataplane
        .listeners
        .values()
        .chain(t.dataplane.udp_listeners.values())
        .map(|l| (l.gateway.clone(), l.listener.clone()))
        .collect();
    assert_eq!(
        served.len(),
        t.dataplane.listeners.len() + t.dataplane.udp_listeners.len(),
        "one listener per port and protocol"
    );
    assert_eq!(
        served, programmed,
        "the listeners served are the listeners reported Programmed"
    );

    for (gateway_key, status) in &t.status.gateways {
        let spec = &snapshot.gateways[gateway_key].spec;
        assert_eq!(
            status.listeners.len(),
            spec.listeners.len(),
            "one status per listener"
        );
        // Routes (not parentRefs) Accepted on this Gateway: no listener can
        // count more, whatever the parentRefs look like.
        let accepted_routes = t
            .status
            .routes
            .iter()
            .filter(|(route, parents)| {
                parents.iter().any(|p| {
                    has(&p.conditions, types::ACCEPTED, true)
                        && parent_gateway(route, &p.parent_ref).as_ref() == Some(gateway_key)
                })
            })
            .count();
        for listener in &status.listeners {
            assert!(
                listener.attached_routes as usize <= accepted_routes,
                "listener {} of {gateway_key} counts {} attached routes, but only {accepted_routes} routes are Accepted there",
                listener.name,
                listener.attached_routes
            );
            if has(&listener.conditions, types::CONFLICTED, true) {
                assert!(
                    !has(&listener.conditions, types::PROGRAMMED, true),
                    "a conflicted listener is not programmed"
                );
            }
        }
    }
    for (route, parents) in &t.status.routes {
        for p in parents {
            let gateway =
                parent_gateway(route, &p.parent_ref).expect("status only for Gateway parents");
            assert!(
                t.status.gateways.contains_key(&gateway),
                "status only for parents that are sockgate's Gateways"
            );
        }
    }

    for (port, listener) in &t.dataplane.listeners {
        let gateway = &snapshot.gateways[&listener.gateway];
        let spec = gateway
            .spec
            .listeners
            .iter()
            .find(|l| l.name == listener.listener)
            .expect("a served listener exists in its Gateway");
        assert_eq!(spec.port, i32::from(*port), "served on its own port");
        assert_eq!(spec.protocol, "TCP");
        let status = &t.status.gateways[&listener.gateway];
        let listener_status = status
            .listeners
            .iter()
            .find(|l| l.name == listener.listener)
            .unwrap();
        if let Some(route) = &listener.route {
            assert!(
                listener_status.attached_routes >= 1,
                "a routed listener counts its route"
            );
            let parents = &t.status.routes[route];
            assert!(
                parents
                    .iter()
                    .any(|p| has(&p.conditions, types::ACCEPTED, true)),
                "the route that gets the traffic is Accepted"
            );
        } else {
            assert!(listener.backends.is_empty(), "no route, no backends");
        }
        for backend in &listener.backends {
            assert!(backend.weight <= MAX_WEIGHT as u32);
            assert!(
                backend.endpoints.iter().all(|e| e.port() != 0),
                "no endpoint on port 0"
            );
        }
    }
}

fn has(conditions: &[Condition], type_: &str, status: bool) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == status)
}

fn all_conditions(report: &StatusReport) -> Vec<&Condition> {
    let mut out: Vec<&Condition> = report.gateway_classes.values().flatten().collect();
    for gateway in report.gateways.values() {
        out.extend(&gateway.conditions);
        out.extend(gateway.listeners.iter().flat_map(|l| &l.conditions));
    }
    out.extend(report.routes.values().flatten().flat_map(|p| &p.conditions));
    out
}
