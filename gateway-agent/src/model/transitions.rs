//! lastTransitionTime: a condition's time changes only when its status does.
//!
//! Pure: the previous report and the current time come in as data.
use k8s_openapi::jiff::Timestamp;

use super::status::{Condition, StatusReport};

/// Gives every condition of `current` its transition time: the previous one
/// when the same condition (same object, same place, same type) had the same
/// status before, `now` otherwise.
pub fn carry(previous: &StatusReport, current: &mut StatusReport, now: Timestamp) {
    let since = |before: Option<&Vec<Condition>>, c: &Condition| {
        before
            .and_then(|b| b.iter().find(|p| p.type_ == c.type_))
            .filter(|p| p.status == c.status)
            .and_then(|p| p.last_transition_time)
            .unwrap_or(now)
    };
    for (key, conditions) in current.gateway_classes.iter_mut() {
        let before = previous.gateway_classes.get(key);
        for c in conditions.iter_mut() {
            c.last_transition_time = Some(since(before, c));
        }
    }
    for (key, gateway) in current.gateways.iter_mut() {
        let before = previous.gateways.get(key);
        for c in gateway.conditions.iter_mut() {
            c.last_transition_time = Some(since(before.map(|g| &g.conditions), c));
        }
        for listener in gateway.listeners.iter_mut() {
            let before = before.and_then(|g| g.listeners.iter().find(|l| l.name == listener.name)).map(|l| &l.conditions);
            for c in listener.conditions.iter_mut() {
                c.last_transition_time = Some(since(before, c));
            }
        }
    }
    for (key, set) in current.listener_sets.iter_mut() {
        let before = previous.listener_sets.get(key);
        for c in set.conditions.iter_mut() {
            c.last_transition_time = Some(since(before.map(|s| &s.conditions), c));
        }
        for listener in set.listeners.iter_mut() {
            let before = before.and_then(|s| s.listeners.iter().find(|l| l.name == listener.name)).map(|l| &l.conditions);
            for c in listener.conditions.iter_mut() {
                c.last_transition_time = Some(since(before, c));
            }
        }
    }
    for (routes, previous_routes) in [(&mut current.routes, &previous.routes), (&mut current.udp_routes, &previous.udp_routes)] {
        for (key, parents) in routes.iter_mut() {
            let before = previous_routes.get(key);
            for parent in parents.iter_mut() {
                let before = before.and_then(|ps| ps.iter().find(|p| p.parent_ref == parent.parent_ref)).map(|p| &p.conditions);
                for c in parent.conditions.iter_mut() {
                    c.last_transition_time = Some(since(before, c));
                }
            }
        }
    }
    for (key, ancestors) in current.policies.iter_mut() {
        let before = previous.policies.get(key);
        for ancestor in ancestors.iter_mut() {
            let before = before.and_then(|a| a.iter().find(|p| p.ancestor == ancestor.ancestor)).map(|p| &p.conditions);
            for c in ancestor.conditions.iter_mut() {
                c.last_transition_time = Some(since(before, c));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::status::{reasons, types};
    use crate::resources::ObjectKey;

    fn report(accepted: bool, programmed: bool) -> StatusReport {
        let mut r = StatusReport::default();
        r.gateway_classes.insert(
            ObjectKey::cluster("c"),
            vec![
                Condition::new(types::ACCEPTED, accepted, reasons::ACCEPTED, ""),
                Condition::new(types::PROGRAMMED, programmed, reasons::PROGRAMMED, ""),
            ],
        );
        r
    }

    fn times(r: &StatusReport) -> Vec<Timestamp> {
        r.gateway_classes[&ObjectKey::cluster("c")].iter().map(|c| c.last_transition_time.unwrap()).collect()
    }

    #[test]
    fn a_condition_keeps_its_time_until_its_status_changes() {
        let (t1, t2, t3): (Timestamp, Timestamp, Timestamp) =
            ("2026-01-01T00:00:01Z".parse().unwrap(), "2026-01-01T00:00:02Z".parse().unwrap(), "2026-01-01T00:00:03Z".parse().unwrap());
        let mut first = report(true, true);
        carry(&StatusReport::default(), &mut first, t1);
        assert_eq!(times(&first), [t1, t1]);
        let mut second = report(true, true);
        carry(&first, &mut second, t2);
        assert_eq!(times(&second), [t1, t1], "nothing changed: times stay");
        let mut third = report(true, false);
        carry(&second, &mut third, t3);
        assert_eq!(times(&third), [t1, t3], "only the condition that flipped gets the new time");
    }
}
