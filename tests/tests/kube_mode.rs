//! Kubernetes mode against a real kube-apiserver + etcd (`cargo xtask cluster up`,
//! which `cargo xtask test` runs first): routes applied with kubectl are served,
//! status is written by one elected agent, the chart's objects apply.
//!
//! Tests share one API server, so each uses its own namespace and (but for the
//! guide's test) its own controllerName and GatewayClass.
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};
use sockgate_tests::chart::render;
use sockgate_tests::cluster::{apply, can_i, eventually, get, kubectl};
use sockgate_tests::echo::get as http_get;
use sockgate_tests::harness::{serve, GatewayNode};
use sockgate_tests::netns::unique_name;
use sockgate_tests::workspace_root;

const WAIT: Duration = Duration::from_secs(30);

/// A namespace of the test's own. The test API server runs no controllers, so
/// deleting a namespace would not delete what is in it: the guard deletes the
/// objects itself when the test ends, pass or fail.
struct Namespace(String);

impl Namespace {
    fn create(prefix: &str) -> Namespace {
        let ns = unique_name(prefix);
        kubectl(&["create", "namespace", &ns], None).unwrap();
        Namespace(ns)
    }
}

impl std::ops::Deref for Namespace {
    type Target = String;
    fn deref(&self) -> &String {
        &self.0
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let kinds = "gateways.gateway.networking.k8s.io,listenersets.gateway.networking.k8s.io,tcproutes.gateway.networking.k8s.io,udproutes.gateway.networking.k8s.io,referencegrants.gateway.networking.k8s.io,services,endpointslices.discovery.k8s.io,leases.coordination.k8s.io,deployments.apps,daemonsets.apps,listenerpolicies.sockgate.io,backendpolicies.sockgate.io";
        let _ = kubectl(&["delete", kinds, "--all", "-n", &self.0, "--wait=false"], None);
        let _ = kubectl(&["delete", "gatewayclass", &self.0, "--ignore-not-found", "--wait=false"], None);
        let _ = kubectl(&["delete", "namespace", &self.0, "--wait=false"], None);
    }
}

fn namespace(prefix: &str) -> Namespace {
    Namespace::create(prefix)
}

fn in_namespace(yaml: &str, ns: &str) -> String {
    yaml.replace("metadata:\n  name:", &format!("metadata:\n  namespace: {ns}\n  name:"))
}

fn without_deployments(yaml: &str) -> String {
    yaml.split("\n---\n").filter(|doc| !doc.contains("\nkind: Deployment\n")).collect::<Vec<_>>().join("\n---\n")
}

/// A 1.20 server serves EndpointSlices as v1beta1 only (same fields sockgate reads).
fn for_this_server(yaml: &str) -> String {
    yaml.replace("apiVersion: discovery.k8s.io/v1\n", "apiVersion: discovery.k8s.io/v1beta1\n")
}

const SOCKGATE: &str = "sockgate.io/gateway-controller";

/// The entries of a status list (route parents, policy ancestors) written by `controller`.
fn entries_of(list: &Value, controller: &str) -> Vec<Value> {
    list.as_array().map(|a| a.iter().filter(|e| e["controllerName"] == controller).cloned().collect()).unwrap_or_default()
}

fn conditions(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| a.iter().map(|c| format!("{}={}/{}", c["type"].as_str().unwrap_or(""), c["status"].as_str().unwrap_or(""), c["reason"].as_str().unwrap_or(""))).collect())
        .unwrap_or_default()
}

#[test]
fn the_guides_manifests_applied_with_kubectl_are_served_and_their_status_written() {
    let ns = namespace("guide");
    // Class `eg` is cluster-wide: Gateways of it from an interrupted earlier run would hold 8088/8089.
    let stale = kubectl(&["get", "gateways.gateway.networking.k8s.io", "-A", "-o", "json"], None).unwrap();
    for g in serde_json::from_str::<Value>(&stale).unwrap()["items"].as_array().unwrap() {
        if g["spec"]["gatewayClassName"] == "eg" {
            let (gns, name) = (g["metadata"]["namespace"].as_str().unwrap(), g["metadata"]["name"].as_str().unwrap());
            kubectl(&["delete", "gateway", name, "-n", gns], None).unwrap();
        }
    }
    let example = |f: &str| std::fs::read_to_string(workspace_root().join("examples/tcp-routing").join(f)).unwrap();
    for file in ["gateway.yaml", "backends.yaml", "tcproutes.yaml"] {
        // As the guide applies them (into this test's namespace), but for the
        // Deployments: their pods would run on the cluster's node, and this
        // test's backends are its own hosts (endpointslices.yaml). The pods
        // run for real in cluster_guide.rs.
        kubectl(&["apply", "--validate=false", "-n", &ns, "-f", "-"], Some(&without_deployments(&example(file)))).unwrap();
    }
    kubectl(&["apply", "--validate=false", "-n", &ns, "-f", "-"], Some(&for_this_server(&example("endpointslices.yaml")))).unwrap();

    let node = GatewayNode::start_in_cluster(&["--dataplane", "userspace", "--gateway-address", "198.18.1.2", "--node-name", "node-a", "--lease-namespace", &ns]).unwrap();
    let _foo = sockgate_tests::echo::start(&node.hosts.backend1, "foo", "backend-1-demo", node.logs.path()).unwrap();
    let _bar = sockgate_tests::echo::start(&node.hosts.backend2, "bar", "backend-2-demo", node.logs.path()).unwrap();
    node.wait_for_port(8088).unwrap();
    node.wait_for_port(8089).unwrap();
    for (port, service) in [(8088, "foo"), (8089, "bar")] {
        let (status, echo) = http_get(&mut node.connect(port).unwrap(), "198.18.1.2").unwrap();
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(echo.service, service, "port {port}");
    }

    // Status, as `kubectl get` shows it, written by this (the only, so the leading) agent.
    let gateway = eventually(WAIT, "the Gateway's status", || {
        get("gateway", &ns, "tcp-gateway").filter(|g| g["status"]["listeners"][0]["attachedRoutes"] == 1 && g["status"]["listeners"][1]["attachedRoutes"] == 1)
    })
    .unwrap();
    assert_eq!(gateway["status"]["addresses"], json!([{ "type": "IPAddress", "value": "198.18.1.2" }]));
    assert_eq!(conditions(&gateway["status"]["conditions"]), ["Accepted=True/Accepted", "Programmed=True/Programmed"]);
    for (route, section) in [("tcp-app-1", "foo"), ("tcp-app-2", "bar")] {
        let route = eventually(WAIT, "the TCPRoute's status", || get("tcproute", &ns, route).filter(|r| r["status"]["parents"].is_array())).unwrap();
        let parent = &entries_of(&route["status"]["parents"], SOCKGATE)[0];
        assert_eq!(parent["parentRef"]["sectionName"], section);
        assert_eq!(conditions(&parent["conditions"]), ["Accepted=True/Accepted", "ResolvedRefs=True/ResolvedRefs"]);
    }
    let class = get("gatewayclass", "", "eg").unwrap();
    assert_eq!(conditions(&class["status"]["conditions"]), ["Accepted=True/Accepted", "SupportedVersion=True/SupportedVersion"]);

    // Policies (sockgate's CRDs, installed by `cluster up` from the chart): the
    // example BackendPolicies and one ListenerPolicy for a Gateway that does not exist.
    let policies = std::fs::read_to_string(workspace_root().join("examples/policies/backend-policies.yaml")).unwrap();
    kubectl(&["apply", "-n", &ns, "-f", "-"], Some(&policies)).unwrap();
    let ghost = "apiVersion: sockgate.io/v1alpha1\nkind: ListenerPolicy\nmetadata:\n  name: ghost\nspec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: nowhere}]\n  maxConnections: 5\n";
    kubectl(&["apply", "-n", &ns, "-f", "-"], Some(ghost)).unwrap();
    for (kind, name, expected) in [
        ("backendpolicy", "tcp-app-1-resilience", "Accepted=True/Accepted"),
        ("backendpolicy", "bar-client-address", "Accepted=True/Accepted"),
        ("listenerpolicy", "ghost", "Accepted=False/TargetNotFound"),
    ] {
        // Other tests' agents (other controllerNames) may add entries of their
        // own to the ghost policy: sockgate's entry is the one to check.
        let policy = eventually(WAIT, "the policy's status", || get(kind, &ns, name).filter(|p| !entries_of(&p["status"]["ancestors"], SOCKGATE).is_empty()))
            .unwrap_or_else(|e| panic!("{e}: {kind} {name}; agent log:\n{}", node.agent.logs()));
        let ours = entries_of(&policy["status"]["ancestors"], SOCKGATE);
        assert_eq!(ours.len(), 1, "{kind} {name}: {policy}");
        let ancestor = &ours[0];
        assert_eq!(conditions(&ancestor["conditions"]), [expected], "{kind} {name}: {policy}");
    }

    // Deleting a route: its listener stops serving it, the status follows.
    kubectl(&["delete", "tcproute", "tcp-app-2", "-n", &ns], None).unwrap();
    eventually(WAIT, "attachedRoutes 0 on listener bar", || get("gateway", &ns, "tcp-gateway").filter(|g| g["status"]["listeners"][1]["attachedRoutes"] == 0)).unwrap();
    assert_eq!(node.refusal(8089), ErrorKind::ConnectionReset);
    let (_, echo) = http_get(&mut node.connect(8088).unwrap(), "198.18.1.2").unwrap_or_else(|e| panic!("{e}; agent log:\n{}", node.agent.logs()));
    assert_eq!(echo.service, "foo", "the other route is undisturbed");
}

/// A GatewayClass of a controllerName of this test's own, a Gateway with a TCP
/// listener on 9000, a route to Service `one` (198.18.2.2:7000).
fn private_setup(ns: &str) -> String {
    let controller = format!("sockgate.io/{ns}");
    let yaml = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata:\n  name: {ns}\nspec:\n  controllerName: {controller}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  namespace: {ns}\nspec:\n  gatewayClassName: {ns}\n  listeners:\n  - {{name: a, port: 9000, protocol: TCP}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata:\n  name: r\n  namespace: {ns}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules: [{{backendRefs: [{{name: one, port: 80}}]}}]\n---\n"
    );
    let service = in_namespace(&for_this_server(&sockgate_tests::manifests::service("one", 80, 7000, &["198.18.2.2"])), ns);
    apply(&format!("{yaml}{service}")).unwrap();
    controller
}

/// A route attached to a sockgate Gateway and to another implementation's:
/// each controller owns its own entry in `status.parents` (an atomic list), so
/// sockgate must merge rather than overwrite, and take only its own entry away.
#[test]
fn a_routes_status_keeps_another_controllers_entry_and_loses_only_ours_when_it_detaches() {
    let ns = namespace("shared");
    let controller = private_setup(&ns);
    let other_class = format!("{}-other", ns.as_str());
    let route = |parents: &str| {
        format!("apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata:\n  name: r\n  namespace: {}\nspec:\n  parentRefs: {parents}\n  rules: [{{backendRefs: [{{name: one, port: 80}}]}}]\n", ns.as_str())
    };
    apply(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata:\n  name: {other_class}\nspec:\n  controllerName: example.com/other\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: foreign\n  namespace: {}\nspec:\n  gatewayClassName: {other_class}\n  listeners:\n  - {{name: x, port: 9100, protocol: TCP}}\n---\n{}",
        ns.as_str(),
        route("[{name: gw}, {name: foreign}]")
    ))
    .unwrap();
    // What the other controller wrote before sockgate started.
    let theirs = json!({ "parentRef": { "name": "foreign" }, "controllerName": "example.com/other",
        "conditions": [{ "type": "Accepted", "status": "True", "reason": "Accepted", "message": "theirs", "lastTransitionTime": "2026-01-01T00:00:00Z" }] });
    let patch = json!({ "status": { "parents": [theirs] } }).to_string();
    kubectl(&["patch", "tcproute", "r", "-n", &ns, "--subresource=status", "--type=merge", "-p", &patch], None).unwrap();

    let node = GatewayNode::start_in_cluster(&["--dataplane", "userspace", "--controller-name", &controller, "--lease-namespace", &ns, "--node-name", "node-a"]).unwrap();
    let both = eventually(WAIT, "sockgate's entry beside the other controller's", || {
        get("tcproute", &ns, "r").filter(|r| !entries_of(&r["status"]["parents"], &controller).is_empty())
    })
    .unwrap_or_else(|e| panic!("{e}; agent log:\n{}", node.agent.logs()));
    let ours = entries_of(&both["status"]["parents"], &controller);
    assert_eq!(ours.len(), 1, "{both}");
    assert_eq!(ours[0]["parentRef"]["name"], "gw");
    assert_eq!(conditions(&ours[0]["conditions"]), ["Accepted=True/Accepted", "ResolvedRefs=True/ResolvedRefs"]);
    let kept = entries_of(&both["status"]["parents"], "example.com/other");
    assert_eq!(kept.len(), 1, "the other controller's entry survives sockgate's write: {both}");
    assert_eq!((&kept[0]["parentRef"]["name"], &kept[0]["conditions"][0]["message"]), (&json!("foreign"), &json!("theirs")));

    // The route leaves sockgate's Gateway: sockgate's entry goes, theirs stays.
    apply(&route("[{name: foreign}]")).unwrap();
    let after = eventually(WAIT, "sockgate's entry to leave", || {
        get("tcproute", &ns, "r").filter(|r| entries_of(&r["status"]["parents"], &controller).is_empty())
    })
    .unwrap_or_else(|e| panic!("{e}; agent log:\n{}", node.agent.logs()));
    assert_eq!(entries_of(&after["status"]["parents"], "example.com/other").len(), 1, "{after}");
    let _ = kubectl(&["delete", "gatewayclass", &other_class, "--ignore-not-found", "--wait=false"], None);
}

/// A UDPRoute applied with kubectl: watched (discovery picks v1), served by the
/// relay, its status and the Gateway's written by the (only, so leading) agent.
#[test]
fn a_udproute_applied_with_kubectl_is_served_and_its_status_written() {
    use sockgate_tests::udp::{ask, checksummed, client, udp_echo, udp_service};
    let ns = namespace("udp");
    let controller = format!("sockgate.io/{}", ns.as_str());
    let route = format!("apiVersion: gateway.networking.k8s.io/v1\nkind: UDPRoute\nmetadata:\n  name: r\n  namespace: {ns}\nspec:\n  parentRefs: [{{name: gw, sectionName: dns}}]\n  rules: [{{backendRefs: [{{name: one, port: 80}}]}}]\n", ns = ns.as_str());
    apply(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata:\n  name: {ns}\nspec:\n  controllerName: {controller}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  namespace: {ns}\nspec:\n  gatewayClassName: {ns}\n  listeners:\n  - {{name: dns, port: 5300, protocol: UDP}}\n  - {{name: tcp, port: 5300, protocol: TCP}}\n---\n{route}---\n{}",
        for_this_server(&udp_service("one", 80, 7000, &["198.18.2.2"])).replace("metadata: {name: one", &format!("metadata: {{namespace: {}, name: one", ns.as_str())),
        ns = ns.as_str()
    ))
    .unwrap();
    let node = GatewayNode::start_in_cluster(&["--dataplane", "userspace", "--controller-name", &controller, "--lease-namespace", &ns, "--node-name", "node-a", "--gateway-address", "198.18.1.2"]).unwrap();
    assert!(node.agent.logs().contains("kind=UDPRoute"), "the agent watches UDPRoutes: {}", node.agent.logs());
    let _echo = udp_echo(&node.hosts.backend1, 7000, "one").unwrap();
    let c = client(&node.hosts.client, Duration::from_millis(500)).unwrap();
    let gateway = "198.18.1.2:5300".parse().unwrap();
    let mut seq = 0;
    let mut answer = || {
        seq += 1;
        ask(&c, gateway, &checksummed(seq, 512)).unwrap()
    };
    eventually(WAIT, "an answer through the UDP listener", || answer().filter(|who| who == "one")).unwrap_or_else(|e| panic!("{e}; agent log:\n{}", node.agent.logs()));

    let route_status = eventually(WAIT, "the UDPRoute's status", || get("udproute", &ns, "r").filter(|r| !entries_of(&r["status"]["parents"], &controller).is_empty()))
        .unwrap_or_else(|e| panic!("{e}; agent log:\n{}", node.agent.logs()));
    assert_eq!(conditions(&entries_of(&route_status["status"]["parents"], &controller)[0]["conditions"]), ["Accepted=True/Accepted", "ResolvedRefs=True/ResolvedRefs"]);
    let gw = eventually(WAIT, "the Gateway's listeners", || get("gateway", &ns, "gw").filter(|g| g["status"]["listeners"][0]["attachedRoutes"] == 1)).unwrap();
    assert_eq!(gw["status"]["listeners"][0]["supportedKinds"], json!([{ "group": "gateway.networking.k8s.io", "kind": "UDPRoute" }]));
    assert_eq!(gw["status"]["listeners"][1]["supportedKinds"], json!([{ "group": "gateway.networking.k8s.io", "kind": "TCPRoute" }]));
    let class = eventually(WAIT, "the GatewayClass's features", || get("gatewayclass", "", &ns).filter(|c| c["status"]["supportedFeatures"].is_array())).unwrap();
    assert!(class["status"]["supportedFeatures"].as_array().unwrap().contains(&json!({ "name": "UDPRoute" })), "{class}");

    // Deleting the route: the listener answers no more, the status follows.
    kubectl(&["delete", "udproute", "r", "-n", &ns], None).unwrap();
    eventually(WAIT, "attachedRoutes 0", || get("gateway", &ns, "gw").filter(|g| g["status"]["listeners"][0]["attachedRoutes"] == 0)).unwrap();
    eventually(WAIT, "no answer", || answer().is_none().then_some(())).unwrap();
}

/// A ListenerSet applied with kubectl (the server serves ListenerSet v1, so
/// discovery picks it): its listener is merged onto the Gateway that allows
/// it and serves a TCPRoute attached to the set by `sectionName`; its
/// listener on the Gateway's own port loses, and all three statuses say so.
#[test]
fn a_listenerset_applied_with_kubectl_serves_its_routes_and_its_status_is_written() {
    let ns = namespace("lset");
    let controller = format!("sockgate.io/{}", ns.as_str());
    apply(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata:\n  name: {ns}\nspec:\n  controllerName: {controller}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  namespace: {ns}\nspec:\n  gatewayClassName: {ns}\n  allowedListeners: {{namespaces: {{from: Same}}}}\n  listeners:\n  - {{name: own, port: 9000, protocol: TCP}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: ListenerSet\nmetadata:\n  name: extra\n  namespace: {ns}\nspec:\n  parentRef: {{name: gw}}\n  listeners:\n  - {{name: more, port: 9001, protocol: TCP}}\n  - {{name: taken, port: 9000, protocol: TCP}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata:\n  name: r\n  namespace: {ns}\nspec:\n  parentRefs: [{{group: gateway.networking.k8s.io, kind: ListenerSet, name: extra, sectionName: more}}]\n  rules: [{{backendRefs: [{{name: one, port: 80}}]}}]\n---\n{}",
        in_namespace(&for_this_server(&sockgate_tests::manifests::service("one", 80, 7000, &["198.18.2.2"])), ns.as_str()),
        ns = ns.as_str()
    ))
    .unwrap();
    let node = GatewayNode::start_in_cluster(&["--dataplane", "userspace", "--controller-name", &controller, "--lease-namespace", &ns, "--node-name", "node-a"]).unwrap();
    assert!(node.agent.logs().contains("kind=ListenerSet"), "the agent watches ListenerSets: {}", node.agent.logs());
    identity_then_echo_backend(&node);
    let through_the_set = || {
        let mut s = node.connect(9001).ok()?;
        s.shutdown(std::net::Shutdown::Write).ok()?;
        let mut name = String::new();
        s.read_to_string(&mut name).ok()?;
        Some(name)
    };
    eventually(WAIT, "the ListenerSet's listener to reach the route's backend", || through_the_set().filter(|who| who == "one"))
        .unwrap_or_else(|e| panic!("{e}; agent log:\n{}", node.agent.logs()));

    let set = eventually(WAIT, "the ListenerSet's status", || get("listenerset", &ns, "extra").filter(|s| s["status"]["listeners"].as_array().is_some_and(|l| l.len() == 2)))
        .unwrap_or_else(|e| panic!("{e}; agent log:\n{}", node.agent.logs()));
    assert_eq!(conditions(&set["status"]["conditions"]), ["Accepted=True/ListenersNotValid", "Programmed=True/Programmed"], "{set}");
    let listener = |name: &str| set["status"]["listeners"].as_array().unwrap().iter().find(|l| l["name"] == name).cloned().unwrap();
    assert_eq!(listener("more")["attachedRoutes"], 1, "{set}");
    assert_eq!(conditions(&listener("more")["conditions"]), ["Accepted=True/Accepted", "Conflicted=False/NoConflicts", "ResolvedRefs=True/ResolvedRefs", "Programmed=True/Programmed"]);
    assert_eq!(conditions(&listener("taken")["conditions"])[1], "Conflicted=True/ProtocolConflict", "the Gateway's own listener holds 9000: {set}");

    let gw = eventually(WAIT, "the Gateway's attachedListenerSets", || get("gateway", &ns, "gw").filter(|g| g["status"]["attachedListenerSets"] == 1))
        .unwrap_or_else(|e| panic!("{e}; agent log:\n{}", node.agent.logs()));
    assert_eq!(gw["status"]["listeners"].as_array().unwrap().len(), 1, "a set's listeners are in the set's status, not the Gateway's: {gw}");
    let route = eventually(WAIT, "the TCPRoute's status", || get("tcproute", &ns, "r").filter(|r| !entries_of(&r["status"]["parents"], &controller).is_empty())).unwrap();
    let ours = entries_of(&route["status"]["parents"], &controller);
    assert_eq!((ours[0]["parentRef"]["kind"].as_str(), ours[0]["parentRef"]["name"].as_str()), (Some("ListenerSet"), Some("extra")));
    assert_eq!(conditions(&ours[0]["conditions"]), ["Accepted=True/Accepted", "ResolvedRefs=True/ResolvedRefs"]);
    let class = eventually(WAIT, "the GatewayClass's features", || get("gatewayclass", "", &ns).filter(|c| c["status"]["supportedFeatures"].is_array())).unwrap();
    assert!(class["status"]["supportedFeatures"].as_array().unwrap().contains(&json!({ "name": "ListenerSet" })), "{class}");
    // The cluster has the v1.6.1 CRDs: read from their bundle-version annotations.
    assert_eq!(conditions(&class["status"]["conditions"]), ["Accepted=True/Accepted", "SupportedVersion=True/SupportedVersion"], "{class}");
    assert!(class["status"]["conditions"][1]["message"].as_str().unwrap().contains("v1.6.1"), "{class}");

    // The set deleted: its port closes, the Gateway counts no set.
    kubectl(&["delete", "listenerset", "extra", "-n", &ns], None).unwrap();
    eventually(WAIT, "attachedListenerSets 0", || get("gateway", &ns, "gw").filter(|g| g["status"]["attachedListenerSets"] == 0)).unwrap();
    eventually(WAIT, "port 9001 to close", || node.connect(9001).is_err().then_some(())).unwrap();
}

/// A listener whose port another process holds on the node: the agent says
/// so in its node Lease, and the leader writes that listener `Programmed=False`
/// (reason Pending, the port and the error named) while the others stay
/// programmed; once the port is free the agent binds it and the status follows.
#[test]
fn a_port_held_by_another_process_makes_its_listener_programmed_false_until_it_is_free() {
    let ns = namespace("held");
    let controller = private_setup(&ns);
    let node = GatewayNode::start_in_cluster(&["--dataplane", "userspace", "--controller-name", &controller, "--lease-namespace", &ns, "--node-name", "node-a"]).unwrap();
    let squatter = node.hosts.node.enter(|| std::net::TcpListener::bind("0.0.0.0:9100")).unwrap().unwrap();
    apply(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  namespace: {ns}\nspec:\n  gatewayClassName: {ns}\n  listeners:\n  - {{name: a, port: 9000, protocol: TCP}}\n  - {{name: held, port: 9100, protocol: TCP}}\n",
        ns = ns.as_str()
    ))
    .unwrap();
    let programmed = |g: &Value, listener: &str| -> Option<Value> {
        let l = g["status"]["listeners"].as_array()?.iter().find(|l| l["name"] == listener)?.clone();
        l["conditions"].as_array()?.iter().find(|c| c["type"] == "Programmed").cloned()
    };
    let gw = eventually(WAIT, "listener held to be Programmed=False", || get("gateway", &ns, "gw").filter(|g| programmed(g, "held").is_some_and(|c| c["status"] == "False")))
        .unwrap_or_else(|e| panic!("{e}; agent log:\n{}", node.agent.logs()));
    let held = programmed(&gw, "held").unwrap();
    assert_eq!(held["reason"], "Pending", "{gw}");
    let message = held["message"].as_str().unwrap();
    assert!(message.starts_with("TCP port 9100 cannot be bound on 1 of 1 node (node-a: cannot listen on 0.0.0.0:9100: Address already in use"), "{message}");
    assert_eq!(programmed(&gw, "a").unwrap()["status"], "True", "the other listener serves: {gw}");
    let gateway_programmed = gw["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Programmed").unwrap().clone();
    assert_eq!(gateway_programmed["status"], "True", "listener a is bound: {gw}");

    drop(squatter);
    eventually(WAIT, "listener held to be Programmed=True once the port is free", || get("gateway", &ns, "gw").filter(|g| programmed(g, "held").is_some_and(|c| c["status"] == "True")))
        .unwrap_or_else(|e| panic!("{e}; agent log:\n{}", node.agent.logs()));
}

/// A misspelt field of sockgate's policy API in Kubernetes mode: kubectl's
/// validation refuses it by name where the server publishes the schema, and
/// where it is applied anyway the server prunes it: the policy's status then
/// says `Accepted=False`, naming the field (read from the manifest kubectl
/// recorded), and none of its fields applies.
#[test]
fn a_misspelt_policy_field_is_refused_by_kubectl_and_when_the_server_prunes_it_the_status_names_it() {
    let ns = namespace("typo");
    let controller = private_setup(&ns);
    let policy = format!(
        "apiVersion: sockgate.io/v1alpha1\nkind: ListenerPolicy\nmetadata:\n  name: typo\n  namespace: {}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]\n  maxConnections: 1\n  clientCIDR: {{deny: [198.18.0.0/15]}}\n",
        ns.as_str()
    );
    let refused = kubectl(&["apply", "-f", "-"], Some(&policy)).unwrap_err().to_string();
    assert!(refused.contains("unknown field \"clientCIDR\""), "{refused}");
    let node = GatewayNode::start_in_cluster(&["--dataplane", "userspace", "--controller-name", &controller, "--lease-namespace", &ns, "--node-name", "node-a"]).unwrap();
    apply(&policy).unwrap(); // --validate=false: the server prunes the field
    assert!(get("listenerpolicy", &ns, "typo").unwrap()["spec"].get("clientCIDR").is_none(), "the server pruned it");
    let status = eventually(WAIT, "the policy's status", || get("listenerpolicy", &ns, "typo").filter(|p| !entries_of(&p["status"]["ancestors"], &controller).is_empty()))
        .unwrap_or_else(|e| panic!("{e}; agent log:\n{}", node.agent.logs()));
    let ours = entries_of(&status["status"]["ancestors"], &controller);
    assert_eq!(conditions(&ours[0]["conditions"]), ["Accepted=False/Invalid"], "{status}");
    let message = ours[0]["conditions"][0]["message"].as_str().unwrap();
    assert!(message.starts_with("unknown field \"spec.clientCIDR\" (did you mean \"clientCIDRs\"?): in the manifest last applied with kubectl, dropped by the API server"), "{message}");
    // Not accepted, so maxConnections: 1 does not apply either: two connections are both served.
    identity_then_echo_backend(&node);
    let (first, second) = (node.connect(9000).unwrap(), node.connect(9000).unwrap());
    for mut s in [first, second] {
        let mut hello = [0u8; 3];
        s.read_exact(&mut hello).unwrap();
        assert_eq!(&hello, b"one");
    }
}

fn lease_holder(ns: &str) -> Option<String> {
    get("lease", ns, "sockgate-status-writer").and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
}

/// Writes "one", then sends back whatever it receives until the client's FIN:
/// a new connection says which backend it reached, a long one carries a
/// checksummed transfer.
fn identity_then_echo_backend(node: &GatewayNode) {
    let _ = serve(&node.hosts.backend1, 7000, |mut s: TcpStream| {
        if s.write_all(b"one").is_ok() {
            let mut reader = s.try_clone().unwrap();
            if std::io::copy(&mut reader, &mut s).is_ok() {
                let _ = s.shutdown(std::net::Shutdown::Write);
            }
        }
    })
    .unwrap();
}

/// A new connection through `node`'s port 9000 to that backend: what it says, half-closing at once.
fn who_echoes(node: &GatewayNode) -> String {
    let mut s = node.connect(9000).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut name = String::new();
    s.read_to_string(&mut name).unwrap();
    name
}

/// Two nodes (each agent in its own node namespace, with its own backend host)
/// against the same API server: both addresses in the Gateway's status, one
/// status writer; the leader killed, the survivor keeps serving (a transfer in
/// flight through it and new connections) and becomes the status writer,
/// which takes the dead node's address out.
#[test]
fn one_elected_agent_writes_status_and_another_takes_over_when_it_is_killed() {
    let ns = namespace("lead");
    let controller = private_setup(ns.as_str());
    let start = |node: &str, address: &str| {
        GatewayNode::start_in_cluster(&["--dataplane", "userspace", "--controller-name", &controller, "--lease-namespace", &ns, "--node-name", node, "--gateway-address", address]).unwrap()
    };
    let mut a = start("node-a", "198.18.1.2");
    let mut b = start("node-b", "198.18.1.3");
    for node in [&a, &b] {
        identity_then_echo_backend(node);
        node.wait_for_port(9000).unwrap();
        assert_eq!(who_echoes(node), "one", "every agent programs its own node");
    }
    // Both nodes' addresses reach the Gateway's status through their node Leases.
    eventually(WAIT, "both addresses in Gateway status", || {
        get("gateway", &ns, "gw").filter(|g| g["status"]["addresses"] == json!([{ "type": "IPAddress", "value": "198.18.1.2" }, { "type": "IPAddress", "value": "198.18.1.3" }]))
    })
    .unwrap();
    let leader = lease_holder(&ns).unwrap();
    let (survivor, survivor_address) = if leader == "node-a" { ("node-b", "198.18.1.3") } else { ("node-a", "198.18.1.2") };
    let (leading, following) = if leader == "node-a" { (&mut a, &mut b) } else { (&mut b, &mut a) };
    assert!(leading.agent.logs().contains("status written"));
    assert!(!following.agent.logs().contains("status written"), "only the leader writes status:\n{}", following.agent.logs());

    // A checksummed transfer through the survivor, in flight while the other node dies.
    let mut through_survivor = following.connect(9000).unwrap();
    let mut hello = [0u8; 3];
    through_survivor.read_exact(&mut hello).unwrap();
    assert_eq!(&hello, b"one");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let transfer = std::thread::spawn({
        let stop = stop.clone();
        move || sockgate_tests::node_cluster::paced_echo(through_survivor, 2 << 20, stop)
    });
    std::thread::sleep(Duration::from_secs(1));

    // The leader is killed (no chance to resign): the other takes over once the
    // Lease expires (6 s) plus at most one renewal round (2 s), and keeps status
    // current. The bound leaves 2 s for polling and load.
    leading.agent.kill();
    let killed = std::time::Instant::now();
    eventually(WAIT, "the other agent to take the lease", || (lease_holder(&ns).as_deref() == Some(survivor)).then_some(())).unwrap();
    let takeover = killed.elapsed();
    assert!(takeover <= Duration::from_secs(10), "took over after {takeover:?}, beyond the Lease duration and a renewal");
    eprintln!("leader killed; the other agent took the Lease after {takeover:?}");
    eventually(WAIT, "only the survivor's address in the status", || {
        get("gateway", &ns, "gw").filter(|g| g["status"]["addresses"] == json!([{ "type": "IPAddress", "value": survivor_address }]))
    })
    .unwrap_or_else(|e| panic!("{e}; survivor's log:\n{}", following.agent.logs()));
    eprintln!("the dead node's address left the status {:?} after the kill", killed.elapsed());
    // The survivor serves new connections; the dead node refuses them.
    for _ in 0..20 {
        assert_eq!(who_echoes(following), "one", "the survivor serves new connections");
    }
    assert_eq!(leading.refusal(9000), ErrorKind::ConnectionRefused, "nothing listens on the dead node");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let transfer = transfer.join().unwrap().unwrap_or_else(|e| panic!("the transfer through the survivor broke: {e}\n{}", following.agent.logs()));
    assert_eq!(transfer.echoed, transfer.sent, "the survivor's transfer changed bytes while the other node died");
    assert!(transfer.sent.len >= 8 << 20, "the transfer spanned the death ({} bytes in {:.1} s)", transfer.sent.len, transfer.seconds);

    kubectl(&["delete", "tcproute", "r", "-n", &ns], None).unwrap();
    eventually(WAIT, "attachedRoutes 0 written by the new leader", || get("gateway", &ns, "gw").filter(|g| g["status"]["listeners"][0]["attachedRoutes"] == 0)).unwrap();
    following.wait_for_log("status writer elected").unwrap();
}

/// The chart's cluster-scoped objects this test applies (no namespace takes
/// them away): deleted when it ends, pass or fail, or the cluster tests'
/// `helm install` refuses to adopt a ClusterRole no release owns.
struct ClusterScoped;

impl Drop for ClusterScoped {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "clusterrole/sockgate-agent", "clusterrolebinding/sockgate-agent", "--ignore-not-found", "--wait=false"], None);
    }
}

#[test]
fn the_charts_objects_apply_to_a_real_api_server() {
    let ns = namespace("chart");
    let _cluster_scoped = ClusterScoped;
    // Rendered offline (`helm template`, for the newest Kubernetes), so with
    // the values a 1.20 cluster needs (no DaemonSet surge before 1.22; a real
    // `helm install` asks the server and leaves maxSurge out by itself, as
    // cluster_guide.rs shows). The node selector matches no node: this agent
    // must not run beside the other tests' agents.
    let values = json!({ "gatewayClassName": ns.as_str(), "updateStrategy": { "maxSurge": 0, "maxUnavailable": 1 }, "nodeSelector": { "sockgate.io/test": "apply-only" } });
    let rendered = render("sockgate", &ns, values).unwrap();
    let out = apply(&rendered).unwrap();
    for object in [
        "serviceaccount/sockgate-agent",
        "clusterrole.rbac.authorization.k8s.io/sockgate-agent",
        "clusterrolebinding.rbac.authorization.k8s.io/sockgate-agent",
        "role.rbac.authorization.k8s.io/sockgate-leases",
        "rolebinding.rbac.authorization.k8s.io/sockgate-leases",
        "daemonset.apps/sockgate-agent",
    ] {
        assert!(out.contains(object), "{object} not applied:\n{out}");
    }
    let ds = get("daemonset", &ns, "sockgate-agent").unwrap();
    assert_eq!(ds["spec"]["template"]["spec"]["hostNetwork"], true);
    assert!(get("gatewayclass", "", &ns).is_some());
    // The agent's RBAC lets it do what it does: the API server's own authorizer says so.
    let sa = format!("system:serviceaccount:{}:sockgate-agent", ns.as_str());
    for (verb, resource, allowed) in [
        ("watch", "tcproutes.gateway.networking.k8s.io", "yes"),
        ("watch", "udproutes.gateway.networking.k8s.io", "yes"),
        ("patch", "udproutes.gateway.networking.k8s.io/status", "yes"),
        ("watch", "listenersets.gateway.networking.k8s.io", "yes"),
        ("patch", "listenersets.gateway.networking.k8s.io/status", "yes"),
        ("get", "customresourcedefinitions.apiextensions.k8s.io", "yes"),
        ("update", "customresourcedefinitions.apiextensions.k8s.io", "no"),
        ("patch", "gateways.gateway.networking.k8s.io/status", "yes"),
        ("list", "endpointslices.discovery.k8s.io", "yes"),
        ("update", "leases.coordination.k8s.io", "yes"),
        ("update", "gateways.gateway.networking.k8s.io", "no"),
        ("delete", "services", "no"),
        ("get", "secrets", "no"),
    ] {
        let (resource, sub) = resource.split_once('/').map(|(r, s)| (r, Some(s))).unwrap_or((resource, None));
        let mut args = vec![verb, resource, "-n", &ns, "--as", &sa];
        if let Some(s) = sub {
            args.push("--subresource");
            args.push(s);
        }
        assert_eq!(can_i(&args).unwrap(), allowed, "can {sa} {verb} {resource} {sub:?}?");
    }
}

/// Who answers on 9000 now: the backend's name, or "reset" when the connection is refused or reset.
fn answer(node: &GatewayNode) -> String {
    let Ok(mut s) = node.connect(9000) else { return "reset".into() };
    let mut name = String::new();
    match s.read_to_string(&mut name) {
        Ok(_) if !name.is_empty() => name,
        _ => "reset".into(),
    }
}

/// Time from the API server accepting a change (kubectl returned) until new
/// connections follow it. Polls every 10 ms.
fn follow(node: &GatewayNode, change: &str, expect: &str) -> Duration {
    apply(change).unwrap();
    let start = std::time::Instant::now();
    while answer(node) != expect {
        assert!(start.elapsed() < Duration::from_secs(5), "the data plane never followed the change to {expect:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

#[test]
fn the_data_plane_follows_route_edits_endpoint_scaling_and_deletion_within_a_second() {
    let ns = namespace("follow");
    let controller = private_setup(ns.as_str());
    let two = in_namespace(&for_this_server(&sockgate_tests::manifests::service("two", 80, 7000, &["198.18.3.2"])), ns.as_str());
    apply(&two).unwrap();
    let node = GatewayNode::start_in_cluster(&["--dataplane", "userspace", "--controller-name", &controller, "--lease-namespace", &ns, "--node-name", "node-a"]).unwrap();
    for (host, name) in [(&node.hosts.backend1, "one"), (&node.hosts.backend2, "two")] {
        let _ = serve(host, 7000, move |mut s: TcpStream| {
            let _ = s.write_all(name.as_bytes());
        })
        .unwrap();
    }
    node.wait_for_port(9000).unwrap();
    assert_eq!(answer(&node), "one");
    let route_to = |service: &str| {
        format!("apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata:\n  name: r\n  namespace: {}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules: [{{backendRefs: [{{name: {service}, port: 80}}]}}]\n", ns.as_str())
    };
    let slice_of_two = |endpoints: &[&str]| {
        let yaml = in_namespace(&for_this_server(&sockgate_tests::manifests::service("two", 80, 7000, endpoints)), ns.as_str());
        yaml.split("---\n").nth(1).unwrap().to_string()
    };
    let mut delays = Vec::new();
    for _ in 0..5 {
        delays.push(follow(&node, &route_to("two"), "two")); // a route's backend edited
        delays.push(follow(&node, &slice_of_two(&[]), "reset")); // its EndpointSlice scaled to zero
        delays.push(follow(&node, &slice_of_two(&["198.18.3.2"]), "two")); // and back to one
        delays.push(follow(&node, &route_to("one"), "one"));
    }
    kubectl(&["delete", "tcproute", "r", "-n", &ns], None).unwrap();
    let start = std::time::Instant::now();
    while answer(&node) != "reset" {
        assert!(start.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(10));
    }
    delays.push(start.elapsed()); // a route deleted
    delays.sort();
    let p50 = delays[delays.len() / 2];
    let p99 = delays[(delays.len() * 99 / 100).min(delays.len() - 1)];
    eprintln!("API change to traffic following, {} changes: p50 {p50:?}, p99 {p99:?}, max {:?}", delays.len(), delays.last().unwrap());
    assert!(*delays.last().unwrap() < Duration::from_secs(1), "the data plane must follow within 1 s: {delays:?}");
}
