//! What a new configuration changes for connections, in words, for the log:
//! a port that now goes to another route, opens, or closes. Policy and backend
//! changes are left to the status lines.
use super::config::{DataplaneConfig, ListenerConfig};

/// One line per port whose route (or existence) differs between `old` and `new`.
pub fn port_changes(old: &DataplaneConfig, new: &DataplaneConfig) -> Vec<String> {
    let mut out = Vec::new();
    for (protocol, route_kind, old, new) in [("TCP", "TCPRoute", &old.listeners, &new.listeners), ("UDP", "UDPRoute", &old.udp_listeners, &new.udp_listeners)] {
        let route = |l: &ListenerConfig| l.route.as_ref().map(|r| format!("{route_kind} {r}")).unwrap_or_else(|| "no route (connections are reset)".into());
        let ports = old.keys().chain(new.keys()).collect::<std::collections::BTreeSet<_>>();
        for port in ports {
            match (old.get(port), new.get(port)) {
                (Some(a), Some(b)) if a.route != b.route || a.place() != b.place() => out.push(format!(
                    "{protocol} port {port} changes route: was {} (listener {}), now {} (listener {})",
                    route(a), a.place(), route(b), b.place()
                )),
                (None, Some(b)) => out.push(format!("{protocol} port {port} opens: listener {}, {}", b.place(), route(b))),
                (Some(a), None) => out.push(format!("{protocol} port {port} closes: listener {} is gone (it served {})", a.place(), route(a))),
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::ObjectKey;

    fn listener(route: Option<&str>) -> ListenerConfig {
        ListenerConfig { gateway: ObjectKey::new("default", "gw"), listener_set: None, listener: "web".into(), route: route.map(|r| ObjectKey::new("default", r)), backends: vec![], policy: Default::default(), load_balancer: Default::default() }
    }

    #[test]
    fn a_port_that_goes_to_another_route_opens_or_closes_is_said_and_an_unchanged_one_is_not() {
        let mut old = DataplaneConfig::default();
        old.listeners.insert(8080, listener(Some("web")));
        old.listeners.insert(8081, listener(Some("same")));
        old.listeners.insert(8082, listener(None));
        let mut new = DataplaneConfig::default();
        new.listeners.insert(8080, listener(Some("redis")));
        new.listeners.insert(8081, listener(Some("same")));
        new.udp_listeners.insert(53, listener(Some("dns")));
        assert_eq!(
            port_changes(&old, &new),
            [
                "TCP port 8080 changes route: was TCPRoute default/web (listener default/gw/web), now TCPRoute default/redis (listener default/gw/web)",
                "TCP port 8082 closes: listener default/gw/web is gone (it served no route (connections are reset))",
                "UDP port 53 opens: listener default/gw/web, UDPRoute default/dns",
            ]
        );
        assert!(port_changes(&new, &new).is_empty());
    }
}
