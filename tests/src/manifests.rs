//! Manifests for tests, written as a user would write them.
use std::fmt::Write;

/// A GatewayClass of sockgate's and a Gateway `gw` with TCP listeners (name, port).
pub fn gateway(listeners: &[(&str, u16)]) -> String {
    let mut y = String::from(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata:\n  name: sockgate\nspec:\n  controllerName: sockgate.io/gateway-controller\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw\nspec:\n  gatewayClassName: sockgate\n  listeners:\n",
    );
    for (name, port) in listeners {
        writeln!(y, "  - name: {name}\n    protocol: TCP\n    port: {port}").unwrap();
    }
    y
}

/// A TCPRoute `name` attached to listener `section` of Gateway `gw`, to Service `service:port`.
pub fn route(name: &str, section: &str, service: &str, port: u16) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata:\n  name: {name}\nspec:\n  parentRefs:\n  - name: gw\n    sectionName: {section}\n  rules:\n  - backendRefs:\n    - name: {service}\n      port: {port}\n"
    )
}

/// A Service `name` (port → targetPort) and its EndpointSlice with ready `endpoints`.
pub fn service(name: &str, port: u16, target_port: u16, endpoints: &[&str]) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  ports:\n  - name: tcp\n    port: {port}\n    targetPort: {target_port}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  labels:\n    kubernetes.io/service-name: {name}\naddressType: IPv4\n\
         ports:\n- name: tcp\n  port: {target_port}\n  protocol: TCP\nendpoints:\n"
    );
    for e in endpoints {
        writeln!(y, "- addresses: [\"{e}\"]\n  conditions:\n    ready: true").unwrap();
    }
    y
}

/// Joins documents with `---`.
pub fn documents(docs: &[String]) -> String {
    docs.join("---\n")
}

/// A TCPRoute with any parentRefs and backendRefs (YAML flow lists) and extra metadata fields.
pub fn route_with(name: &str, metadata: &str, parent_refs: &str, backend_refs: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {{name: {name}{metadata}}}\nspec:\n  parentRefs: {parent_refs}\n  rules:\n  - backendRefs: {backend_refs}\n"
    )
}

/// A Service in `namespace` and its EndpointSlice (see [`service`]).
pub fn service_in(namespace: &str, name: &str, port: u16, target_port: u16, endpoints: &[&str]) -> String {
    service(name, port, target_port, endpoints).replace(&format!("  name: {name}\n"), &format!("  name: {name}\n  namespace: {namespace}\n")).replace(
        &format!("  name: {name}-1\n"),
        &format!("  name: {name}-1\n  namespace: {namespace}\n"),
    )
}
