//! Day 2 on the one-node cluster (`cargo xtask cluster up`), under the
//! kubelet: a backend pod deleted, and the agent's own pod deleted.
//!
//! What happens to a connection in flight when the agent's pod is deleted:
//! the kubelet sends SIGTERM, the agent closes its listeners at once and lets
//! established connections finish for the chart's drainTimeoutSeconds; a
//! request on a connection opened before the deletion is still answered
//! after it. The DaemonSet controller creates the replacement pod only once
//! the old one is gone (a terminating pod still counts as the node's), so
//! new connections are refused from the SIGTERM until the new agent listens
//! (cluster_upgrade.rs measures that window), and then served by it.
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sockgate_tests::cluster::{eventually, kubectl};
use sockgate_tests::node_cluster::{curl, env, gateway_host, ready_pods, wait_for_answers_from, who_answers, Guide, Release, AGENT_PODS, RELEASE_NAMESPACE};

/// One keep-alive HTTP connection from the client's namespace (socat's stdin/stdout).
struct Connection {
    child: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
}

impl Connection {
    fn open(host: &str, port: u16) -> Connection {
        let netns = env("GATEWAY_CLIENT_NETNS").unwrap();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &netns, "socat", "-", &format!("TCP:{host}:{port}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let to = child.stdin.take().unwrap();
        let from = BufReader::new(child.stdout.take().unwrap());
        Connection { child, to, from }
    }

    /// One GET on this connection; the echo's JSON.
    fn get(&mut self, host: &str) -> std::io::Result<Value> {
        write!(self.to, "GET / HTTP/1.1\r\nHost: {host}\r\n\r\n")?;
        self.to.flush()?;
        let mut length = 0;
        loop {
            let mut line = String::new();
            if self.from.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if line.trim().is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        self.from.read_exact(&mut body)?;
        Ok(serde_json::from_slice(&body)?)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_deleted_backend_pod_is_avoided_and_a_deleted_agent_pod_comes_back_serving() {
    let _release = Release::install(json!({ "gatewayClassName": "" }));
    let _guide = Guide::apply();
    kubectl(&["wait", "--timeout=300s", "-n", "default", "deployment/backend-1", "deployment/backend-2", "--for=condition=Available"], None).unwrap();
    kubectl(&["scale", "deployment/backend-1", "-n", "default", "--replicas=2"], None).unwrap();
    let two = eventually(Duration::from_secs(180), "two Ready pods of backend-1", || Some(ready_pods("default", "app=backend-1")).filter(|p| p.len() == 2)).unwrap();
    let host = gateway_host();
    wait_for_answers_from(&host, 8088, &two);

    // A backend pod deleted: its EndpointSlice change reaches the data plane
    // and new connections avoid it (its replacement joins once Ready).
    let victim = two[0].clone();
    kubectl(&["delete", "pod", &victim, "-n", "default", "--wait=false"], None).unwrap();
    let deleted = Instant::now();
    eventually(Duration::from_secs(20), "new connections to avoid the deleted pod", || {
        (0..10).all(|_| who_answers(&host, 8088).1 != victim).then_some(())
    })
    .unwrap();
    eprintln!("a deleted backend pod stopped getting new connections within {:?}", deleted.elapsed());
    for _ in 0..20 {
        assert_ne!(who_answers(&host, 8088).1, victim, "a new connection reached the deleted pod");
    }

    // The agent's pod deleted, with a connection in flight.
    let agents = ready_pods(RELEASE_NAMESPACE, AGENT_PODS);
    assert_eq!(agents.len(), 1);
    let mut in_flight = Connection::open(&host, 8089);
    assert_eq!(in_flight.get(&host).unwrap()["service"], "bar");
    let deleting = std::thread::spawn({
        let agent = agents[0].clone();
        move || kubectl(&["delete", "pod", &agent, "-n", RELEASE_NAMESPACE, "--wait=true", "--timeout=60s"], None)
    });
    // The kubelet has sent SIGTERM: the agent drains, and the established
    // connection is still answered.
    eventually(Duration::from_secs(10), "the agent's pod to be terminating", || {
        let pod = sockgate_tests::cluster::get("pod", RELEASE_NAMESPACE, &agents[0])?;
        (!pod["metadata"]["deletionTimestamp"].is_null()).then_some(())
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(in_flight.get(&host).expect("a connection in flight is still served during the drain")["service"], "bar");
    drop(in_flight);
    deleting.join().unwrap().unwrap();
    // The DaemonSet makes a new pod, the kubelet runs it, and it serves again.
    let successor = eventually(Duration::from_secs(120), "the agent's new pod to be Ready", || {
        Some(ready_pods(RELEASE_NAMESPACE, AGENT_PODS)).filter(|p| p.len() == 1 && p[0] != agents[0])
    })
    .unwrap();
    eventually(Duration::from_secs(30), "the new agent to serve", || curl(&host, 8088).ok().filter(|(_, e)| e["service"] == "foo")).unwrap();
    eprintln!("agent pod {} deleted; {} serves", agents[0], successor[0]);
}
