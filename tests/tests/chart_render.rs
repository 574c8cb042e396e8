//! The Helm chart renders (with Go's text/template, as Helm would) into the
//! objects a careful operator expects. Applying them to a real API server is
//! in kube_mode.rs.
use serde::Deserialize;
use serde_json::{json, Value};
use sockgate_tests::chart::render;

fn objects(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml).map(|d| Value::deserialize(d).unwrap()).filter(|v| !v.is_null()).collect()
}

fn find<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects.iter().find(|o| o["kind"] == kind).unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn the_chart_renders_a_host_network_daemonset_with_named_capabilities_and_least_privilege_rbac() {
    let objs = objects(&render("sockgate", "sockgate-system", json!({})).unwrap());
    let kinds: Vec<&str> = objs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    for kind in ["DaemonSet", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "GatewayClass"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    let ds = find(&objs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    let agent = &pod["containers"][0];
    assert_eq!(agent["image"], "ghcr.io/sockgate/gateway-agent:0.1.0", "the tag defaults to the chart's appVersion");
    assert_eq!(agent["securityContext"]["capabilities"], json!({ "drop": ["ALL"], "add": ["BPF", "NET_ADMIN", "PERFMON", "NET_BIND_SERVICE", "NET_RAW"] }));
    assert!(agent["securityContext"].get("privileged").is_none());
    assert_eq!(agent["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(agent["livenessProbe"]["httpGet"]["path"], "/healthz");
    let env: Vec<&str> = agent["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(env, ["NODE_NAME", "NODE_IP", "POD_NAMESPACE"]);
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    // Upgrades surge a new pod beside the old one, which hands over to it: no
    // hostPort may stand in the way, and the takeover socket is shared on the node.
    assert_eq!(ds["spec"]["updateStrategy"]["rollingUpdate"], json!({ "maxSurge": 1, "maxUnavailable": 0 }));
    assert!(agent.get("ports").is_none(), "a hostNetwork containerPort is a hostPort and blocks the surge pod");
    let args: Vec<&str> = agent["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(args.contains(&"--takeover-socket=/run/sockgate/agent.sock") && args.contains(&"--after-handover=wait-for-signal"), "{args:?}");
    let mounts = agent["volumeMounts"].as_array().unwrap();
    assert!(mounts.iter().any(|m| m["mountPath"] == "/run/sockgate"), "{mounts:?}");
    // The drain deadline ends before the kubelet's SIGKILL.
    let drain: u64 = args.iter().find_map(|a| a.strip_prefix("--drain-timeout=")).unwrap().trim_end_matches('s').parse().unwrap();
    assert!(drain + 5 <= pod["terminationGracePeriodSeconds"].as_u64().unwrap(), "drain {drain}s vs grace {}", pod["terminationGracePeriodSeconds"]);
    // RBAC: reads what it watches, writes only status (and Leases, Events).
    let rules = find(&objs, "ClusterRole")["rules"].as_array().unwrap().clone();
    for rule in &rules {
        let writes = rule["verbs"].as_array().unwrap().iter().any(|v| ["create", "update", "patch", "delete"].contains(&v.as_str().unwrap()));
        if writes {
            let resources: Vec<&str> = rule["resources"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
            assert!(resources.iter().all(|r| r.ends_with("/status") || *r == "events"), "writes {resources:?}");
        }
    }
    assert_eq!(find(&objs, "GatewayClass")["spec"]["controllerName"], "sockgate.io/gateway-controller");
}

#[test]
fn chart_values_change_what_is_rendered() {
    let objs = objects(&render("edge", "gw", json!({ "image": { "tag": "dev" }, "dataplane": "splice", "gatewayClassName": "" })).unwrap());
    let ds = find(&objs, "DaemonSet");
    assert_eq!(ds["metadata"]["namespace"], "gw");
    assert_eq!(ds["metadata"]["name"], "edge-agent");
    let agent = &ds["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(agent["image"], "ghcr.io/sockgate/gateway-agent:dev");
    assert!(agent["args"].as_array().unwrap().contains(&json!("--dataplane=splice")));
    assert!(objs.iter().all(|o| o["kind"] != "GatewayClass"), "gatewayClassName empty: no GatewayClass");
    assert!(!agent["args"].as_array().unwrap().iter().any(|a| a.as_str().unwrap().starts_with("--kernel-splice-after")), "only dataplane ebpf takes --kernel-splice-after");
}

#[test]
fn dataplane_ebpf_passes_the_handover_delay_to_the_agent() {
    let objs = objects(&render("edge", "gw", json!({ "dataplane": "ebpf", "kernelSpliceAfter": "5ms" })).unwrap());
    let args = find(&objs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["args"].clone();
    let args = args.as_array().unwrap();
    assert!(args.contains(&json!("--dataplane=ebpf")), "{args:?}");
    assert!(args.contains(&json!("--kernel-splice-after=5ms")), "{args:?}");
}

#[test]
fn the_charts_policy_crds_are_exactly_what_the_agent_generates() {
    let committed = std::fs::read_to_string(sockgate_tests::workspace_root().join("charts/sockgate/crds/sockgate-policies.yaml")).unwrap();
    assert_eq!(committed, gateway_agent::resources::policies::crds_yaml(), "regenerate with: gateway-agent crds > charts/sockgate/crds/sockgate-policies.yaml");
}

#[test]
fn the_readmes_policy_reference_is_exactly_what_the_crds_schemas_generate() {
    let readme = std::fs::read_to_string(sockgate_tests::workspace_root().join("README.md")).unwrap();
    let (_, rest) = readme.split_once("<!-- policy-reference:begin -->\n").expect("the README has the begin marker");
    let (committed, _) = rest.split_once("<!-- policy-reference:end -->").expect("the README has the end marker");
    assert_eq!(committed, gateway_agent::resources::policies::reference_markdown(), "regenerate the README's policy reference with: gateway-agent crds --reference");
}
