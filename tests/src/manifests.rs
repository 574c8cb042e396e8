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
