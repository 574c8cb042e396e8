//! Day 2 on the one-node cluster (`cargo xtask cluster up`): `helm upgrade`
//! to a new image tag rolls the agent's DaemonSet, and `helm rollback` rolls
//! it back, as an operator would do them, on Kubernetes 1.20.
//!
//! What a 1.20 rollout is, measured here: no DaemonSet surge (the chart
//! renders `maxUnavailable: 1` by `.Capabilities`), and the DaemonSet
//! controller creates a node's new pod only once the old one is gone, not
//! while it terminates (`podsShouldBeOnNode`: `shouldSchedule && !exists`,
//! where a terminating pod still exists). So the two agents never overlap and
//! there is no takeover: the old agent closes its listeners at SIGTERM and
//! drains (connections in flight finish, within the chart's drainTimeoutSeconds),
//! exits, and only then does the new pod start. New connections are refused
//! from the SIGTERM until the new agent listens: this test measures that
//! window (one per rollout) and checks a checksummed transfer in flight
//! finishes intact on the old agent. The takeover with no refusal needs the
//! surge of 1.22+ (the chart renders maxSurge 1, maxUnavailable 0 there),
//! which this 1.20 cluster cannot run.
//!
//! The new tag is a second reference to the same image content in the node's
//! containerd (`ctr images tag`): the pod template changes as in any upgrade
//! and the new pod is a new container and process; no registry is reachable
//! to serve a differently built image.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sockgate_tests::cluster::{apply, eventually, kubectl};
use sockgate_tests::node_cluster::{
    agent_logs, agent_pods, echo_answers, echo_connection_loop, paced_echo_transfer, ready_pods, tag_image, wait_pods_gone, LogKeeper, Release, AGENT_PODS, RELEASE_NAMESPACE,
};

const NAMESPACE: &str = "rollout";
const PORT: u16 = 8090;

/// A TCP echo behind a Gateway of the chart's own GatewayClass: the guide's
/// backend image, with its raw echo turned on.
fn manifests() -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: bulk-echo
  namespace: {NAMESPACE}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: bulk-echo}}
  template:
    metadata:
      labels: {{app: bulk-echo}}
    spec:
      containers:
      - name: echo
        image: gcr.io/k8s-staging-gateway-api/echo-basic:v20231214-v1.0.0-140-gf544a46e
        imagePullPolicy: IfNotPresent
        args: ["--tcp-echo", "0.0.0.0:4000"]
---
apiVersion: v1
kind: Service
metadata:
  name: bulk-echo
  namespace: {NAMESPACE}
spec:
  selector: {{app: bulk-echo}}
  ports:
  - {{name: echo, port: 4000, targetPort: 4000, protocol: TCP}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: rollout-gateway
  namespace: {NAMESPACE}
spec:
  gatewayClassName: sockgate
  listeners:
  - {{name: bulk, protocol: TCP, port: {PORT}, allowedRoutes: {{kinds: [{{kind: TCPRoute}}]}}}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata:
  name: bulk-echo
  namespace: {NAMESPACE}
spec:
  parentRefs: [{{name: rollout-gateway, sectionName: bulk}}]
  rules:
  - backendRefs: [{{name: bulk-echo, port: 4000}}]
"#
    )
}

/// The test's namespace, deleted (and its pods waited out) when it ends.
struct Objects;

impl Drop for Objects {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", "--timeout=90s"], None);
        let _ = wait_pods_gone(NAMESPACE, "app=bulk-echo", Duration::from_secs(60));
    }
}

/// Runs one rollout (`roll`) and returns the new pod's name once it is the
/// DaemonSet's only pod, Ready, with `image`; checks that the old and new
/// pods never ran side by side and that the old agent drained.
fn rolls_stop_first(what: &str, image: &str, logs: &LogKeeper, roll: impl FnOnce() + Send) -> (String, Duration) {
    let before: Vec<String> = agent_pods().into_keys().collect();
    assert_eq!(before.len(), 1, "one agent pod before the {what}: {before:?}");
    let started = Instant::now();
    let rolling = Arc::new(AtomicBool::new(true));
    // Watches the pods while the rollout runs: the most seen at once.
    let watcher = std::thread::spawn({
        let rolling = rolling.clone();
        move || {
            let mut most = 0;
            while rolling.load(Ordering::Relaxed) {
                most = most.max(agent_pods().len());
                std::thread::sleep(Duration::from_millis(50));
            }
            most
        }
    });
    roll();
    let after = eventually(Duration::from_secs(120), &format!("the {what} to leave one Ready agent pod of {image}"), || {
        let pods = agent_pods();
        let ready = ready_pods(RELEASE_NAMESPACE, AGENT_PODS);
        (pods.len() == 1 && ready.len() == 1 && pods.get(&ready[0]).is_some_and(|(i, deleting)| i == image && !deleting)).then(|| ready[0].clone())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent_logs()));
    let took = started.elapsed();
    rolling.store(false, Ordering::Relaxed);
    let most = watcher.join().unwrap();
    assert_ne!(after, before[0], "the {what} replaced the pod");
    assert_eq!(most, 1, "a 1.20 DaemonSet rollout never runs the old and new pod side by side");
    let old_log = logs.of(&before[0]);
    assert!(old_log.contains("drained; shutting down"), "the old agent drained on SIGTERM:\n{old_log}");
    let new_log = eventually(Duration::from_secs(10), "the new agent's log", || Some(logs.of(&after)).filter(|l| l.contains("serving"))).unwrap();
    assert!(!new_log.contains("took over from the running agent"), "nothing was left to take over from:\n{new_log}");
    eprintln!("{what}: {} -> {after} ({image}) in {took:?}", before[0]);
    (after, took)
}

#[test]
fn helm_upgrade_and_rollback_on_1_20_roll_the_agent_pod_stop_first_a_transfer_in_flight_finishes_intact_and_refusals_stay_in_one_window_per_rollout() {
    let release = Release::install(json!({}));
    let objects = Objects;
    apply(&manifests()).unwrap();
    kubectl(&["wait", "--timeout=300s", "-n", NAMESPACE, "deployment/bulk-echo", "--for=condition=Available"], None).unwrap();
    let host = eventually(Duration::from_secs(60), "the Gateway's address", || {
        let host = kubectl(&["get", "gateway/rollout-gateway", "-n", NAMESPACE, "-o", "jsonpath={.status.addresses[0].value}"], None).ok()?;
        (!host.trim().is_empty()).then(|| host.trim().to_string())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent_logs()));
    let addr: SocketAddr = format!("{host}:{PORT}").parse().unwrap();
    eventually(Duration::from_secs(30), "the echo to answer through the Gateway", || echo_answers(addr).then_some(())).unwrap_or_else(|e| panic!("{e}\n{}", agent_logs()));

    let logs = LogKeeper::start();
    let stop_loop = Arc::new(AtomicBool::new(false));
    let looping = echo_connection_loop(addr, stop_loop.clone());
    // 8 s at 4 MiB/s each way, started 2 s before the upgrade: it is in
    // flight when the old agent is signalled, and ends within its drain.
    let stop_transfer = Arc::new(AtomicBool::new(false));
    let transfer = paced_echo_transfer(addr, 4 << 20, stop_transfer.clone());
    let timer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(8));
        stop_transfer.store(true, Ordering::Relaxed);
    });
    std::thread::sleep(Duration::from_secs(2));

    let old_image = agent_pods().into_values().next().unwrap().0;
    let repository = old_image.rsplit_once(':').unwrap().0;
    let new_image = format!("{repository}:0.1.0-rollout");
    tag_image(&old_image, &new_image).unwrap();
    let (_, upgrade) = rolls_stop_first("helm upgrade", &new_image, &logs, || {
        release.upgrade(json!({ "image": { "tag": "0.1.0-rollout" } }));
    });
    timer.join().unwrap();
    let transfer = transfer.join().unwrap().unwrap_or_else(|e| panic!("the transfer in flight broke: {e}\n{}", agent_logs()));
    assert_eq!(transfer.echoed, transfer.sent, "the bytes that came back differ from those sent");
    assert!(transfer.sent.len >= 16 << 20, "the transfer ran ({} bytes)", transfer.sent.len);
    eventually(Duration::from_secs(30), "the new agent to answer", || echo_answers(addr).then_some(())).unwrap_or_else(|e| panic!("{e}\n{}", agent_logs()));
    std::thread::sleep(Duration::from_secs(2));

    let (_, rollback) = rolls_stop_first("helm rollback", &old_image, &logs, || {
        release.rollback(1);
    });
    eventually(Duration::from_secs(30), "the rolled-back agent to answer", || echo_answers(addr).then_some(())).unwrap_or_else(|e| panic!("{e}\n{}", agent_logs()));
    std::thread::sleep(Duration::from_secs(2));
    stop_loop.store(true, Ordering::Relaxed);
    let attempts = looping.join().unwrap();

    let windows: Vec<Duration> = attempts.refusal_windows().iter().map(|(a, b)| b.duration_since(*a)).collect();
    eprintln!(
        "upgrade rolled in {upgrade:?}, rollback in {rollback:?}; new connections: {} answered, {} refused in windows of {windows:?}, {} failed otherwise; the transfer in flight moved {} MiB each way intact over {:.1} s",
        attempts.answered,
        attempts.refused,
        attempts.failed.len(),
        transfer.sent.len >> 20,
        transfer.seconds
    );
    assert!(attempts.failed.is_empty(), "new connections failed other than by refusal: {:?}", &attempts.failed[..attempts.failed.len().min(5)]);
    assert!(windows.len() <= 2, "refusals come in one window per rollout (SIGTERM until the new agent listens), not scattered: {windows:?}");
    assert!(windows.iter().all(|w| *w < Duration::from_secs(60)), "a refusal window within the drain and a pod start: {windows:?}");
    assert!(attempts.answered > 100, "too few connections to prove anything ({})", attempts.answered);
    drop(logs);
    drop(objects);
    drop(release);
}
