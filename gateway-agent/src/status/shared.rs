//! Status lists that several controllers share.
//!
//! A route's (TCPRoute, UDPRoute) `status.parents` and a policy's `status.ancestors` hold one
//! entry per (parent, controller): a route attached to a sockgate Gateway and
//! to another implementation's Gateway carries both controllers' entries. The
//! CRDs declare these lists atomic, so whoever writes one writes all of it: a
//! controller must read the live list, keep the entries other controllers
//! wrote, and replace only its own. Writing the whole list blindly (as a
//! server-side apply of the list does) erases the neighbours' entries.

use serde_json::Value;

/// The status list of `kind` whose entries carry a `controllerName`, if it has one.
pub fn shared_list(kind: &str) -> Option<&'static str> {
    match kind {
        "TCPRoute" | "UDPRoute" => Some("parents"),
        "ListenerPolicy" | "BackendPolicy" => Some("ancestors"),
        _ => None,
    }
}

/// The list to write: `live` without this controller's entries (the others in
/// their order), then `ours`. Entries without a controllerName are someone
/// else's and stay.
pub fn merge(live: &[Value], ours: &[Value], controller: &str) -> Vec<Value> {
    live.iter()
        .filter(|entry| !is_ours(entry, controller))
        .cloned()
        .chain(ours.iter().cloned())
        .collect()
}

/// Whether `entry` was written by `controller`.
pub fn is_ours(entry: &Value, controller: &str) -> bool {
    entry["controllerName"].as_str() == Some(controller)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const US: &str = "sockgate.io/gateway-controller";

    fn entry(parent: &str, controller: &str) -> Value {
        json!({ "parentRef": { "name": parent }, "controllerName": controller, "conditions": [] })
    }

    #[test]
    fn other_controllers_entries_are_kept_in_order_and_ours_replaced() {
        let live = [entry("envoy-gw", "gateway.envoyproxy.io/gatewayclass-controller"), entry("old", US), entry("istio-gw", "istio.io/gateway-controller")];
        let ours = [entry("tcp-gateway", US)];
        assert_eq!(
            merge(&live, &ours, US),
            [entry("envoy-gw", "gateway.envoyproxy.io/gatewayclass-controller"), entry("istio-gw", "istio.io/gateway-controller"), entry("tcp-gateway", US)]
        );
    }

    #[test]
    fn with_no_entries_of_ours_the_merge_removes_only_ours() {
        let live = [entry("a", US), entry("b", "example.com/other"), entry("c", US)];
        assert_eq!(merge(&live, &[], US), [entry("b", "example.com/other")]);
    }

    #[test]
    fn another_sockgate_with_a_different_controller_name_is_another_controller() {
        let live = [entry("gw", "sockgate.io/team-b")];
        let merged = merge(&live, &[entry("gw", US)], US);
        assert_eq!(merged.len(), 2, "{merged:?}");
        assert!(is_ours(&merged[1], US) && !is_ours(&merged[0], US));
    }

    #[test]
    fn only_routes_and_policies_have_shared_lists() {
        assert_eq!(shared_list("TCPRoute"), Some("parents"));
        assert_eq!(shared_list("ListenerPolicy"), Some("ancestors"));
        assert_eq!(shared_list("BackendPolicy"), Some("ancestors"));
        assert_eq!(shared_list("Gateway"), None);
        assert_eq!(shared_list("GatewayClass"), None);
    }
}
