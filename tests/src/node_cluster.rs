//! The one-node cluster `cargo xtask cluster up` made (kubelet, containerd,
//! controllers): its `target/cluster/env`, a client on another "machine" (the
//! network namespace GATEWAY_CLIENT_NETNS), pods, and the agent's log as the
//! kubelet wrote it (the API server cannot reach the kubelet for `kubectl logs`).
use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::chart::{install_or_upgrade, release_action};
use crate::cluster::{eventually, get, kubectl};
use crate::workspace_root;

/// A variable of target/cluster/env (`export NAME=value` lines).
pub fn env(name: &str) -> Result<String> {
    let path = workspace_root().join("target/cluster/env");
    let text = std::fs::read_to_string(&path).with_context(|| format!("no {}: run `cargo xtask cluster up` (cargo xtask test does)", path.display()))?;
    let prefix = format!("export {name}=");
    text.lines().find_map(|l| l.strip_prefix(&prefix).map(String::from)).with_context(|| format!("no {name} in {}", path.display()))
}

/// Runs `program args` in the client's network namespace, as a client on another machine would.
pub fn from_client(program: &str, args: &[&str]) -> Result<Output> {
    let netns = env("GATEWAY_CLIENT_NETNS")?;
    Command::new("ip").args(["netns", "exec", &netns, program]).args(args).output().with_context(|| format!("running {program} in {netns}"))
}

/// `curl -si http://HOST:PORT/` from the client: the status line and the JSON body.
pub fn curl(host: &str, port: u16) -> Result<(String, Value)> {
    let url = format!("http://{host}:{port}/");
    let out = from_client("curl", &["-si", "--max-time", "5", &url])?;
    if !out.status.success() {
        bail!("curl -i {url} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").with_context(|| format!("no HTTP head in {text:?}"))?;
    Ok((head.lines().next().unwrap_or_default().to_string(), serde_json::from_str(body).with_context(|| format!("the body is not JSON: {body:?}"))?))
}

/// The names of the pods matching `selector` in `namespace` that are Ready.
pub fn ready_pods(namespace: &str, selector: &str) -> Vec<String> {
    let Ok(out) = kubectl(&["get", "pods", "-n", namespace, "-l", selector, "-o", "json"], None) else { return Vec::new() };
    let Ok(list) = serde_json::from_str::<Value>(&out) else { return Vec::new() };
    let mut names: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| p["status"]["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True")))
        .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
        .collect();
    names.sort();
    names
}

/// Waits until no pod is left in `namespace` matching `selector` (deleted, not just terminating).
pub fn wait_pods_gone(namespace: &str, selector: &str, timeout: Duration) -> Result<()> {
    eventually(timeout, &format!("the pods {selector} in {namespace} to be gone"), || {
        let out = kubectl(&["get", "pods", "-n", namespace, "-l", selector, "-o", "name"], None).ok()?;
        out.trim().is_empty().then_some(())
    })
}

/// The container log the kubelet keeps for a pod (/var/log/pods/NS_NAME_UID/CONTAINER/*.log).
pub fn pod_log(namespace: &str, pod: &str) -> String {
    let prefix = format!("{namespace}_{pod}_");
    let Ok(dirs) = std::fs::read_dir("/var/log/pods") else { return String::new() };
    let mut text = String::new();
    for dir in dirs.flatten().filter(|d| d.file_name().to_string_lossy().starts_with(&prefix)) {
        for container in std::fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            for log in std::fs::read_dir(container.path()).into_iter().flatten().flatten() {
                text.push_str(&std::fs::read_to_string(log.path()).unwrap_or_default());
            }
        }
    }
    text
}

pub const RELEASE: &str = "sockgate";
pub const RELEASE_NAMESPACE: &str = "sockgate-system";
pub const AGENT_PODS: &str = "app.kubernetes.io/name=sockgate";
const GUIDE_FILES: [&str; 3] = ["gateway.yaml", "backends.yaml", "tcproutes.yaml"];

/// The chart installed as a Helm release; uninstalled (and its pod waited
/// out) on drop.
pub struct Release;

impl Release {
    pub fn install(values: Value) -> Release {
        // Whatever an interrupted run left goes first.
        let _ = release_action("uninstall", RELEASE, RELEASE_NAMESPACE, &["--wait", "60"]);
        let release = Release;
        install_or_upgrade("install", RELEASE, RELEASE_NAMESPACE, &values, 180).unwrap_or_else(|e| panic!("{e}\n{}", agent_logs()));
        release
    }
}

impl Release {
    /// `helm upgrade` of the release with `values` (over the chart's, as
    /// `helm upgrade` without --reuse-values does), waiting for it to be ready.
    pub fn upgrade(&self, values: Value) -> Value {
        install_or_upgrade("upgrade", RELEASE, RELEASE_NAMESPACE, &values, 180).unwrap_or_else(|e| panic!("{e}\n{}", agent_logs()))
    }

    /// `helm rollback` to `revision`, waiting for it to be ready.
    pub fn rollback(&self, revision: u32) -> String {
        let revision = revision.to_string();
        release_action("rollback", RELEASE, RELEASE_NAMESPACE, &["--revision", &revision, "--wait", "180"]).unwrap_or_else(|e| panic!("{e}\n{}", agent_logs()))
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if let Err(e) = release_action("uninstall", RELEASE, RELEASE_NAMESPACE, &["--wait", "60"]) {
            eprintln!("helm uninstall: {e}");
        }
        let _ = wait_pods_gone(RELEASE_NAMESPACE, AGENT_PODS, Duration::from_secs(60));
    }
}

/// The guide's objects, applied with kubectl as the guide does (namespace
/// default); deleted, and their pods waited out, on drop.
pub struct Guide;

fn guide_file(name: &str) -> String {
    workspace_root().join("examples/tcp-routing").join(name).display().to_string()
}

impl Guide {
    pub fn apply() -> Guide {
        let guide = Guide;
        for file in GUIDE_FILES {
            kubectl(&["apply", "--validate=false", "-f", &guide_file(file)], None).unwrap();
        }
        guide
    }
}

impl Drop for Guide {
    fn drop(&mut self) {
        for file in GUIDE_FILES.iter().rev() {
            let _ = kubectl(&["delete", "--ignore-not-found", "--wait=true", "--timeout=60s", "-f", &guide_file(file)], None);
        }
        for app in ["backend-1", "backend-2"] {
            let _ = wait_pods_gone("default", &format!("app={app}"), Duration::from_secs(60));
        }
    }
}

/// Every agent pod's log, for a failure's message.
pub fn agent_logs() -> String {
    let Ok(names) = kubectl(&["get", "pods", "-n", RELEASE_NAMESPACE, "-l", AGENT_PODS, "-o", "jsonpath={.items[*].metadata.name}"], None) else {
        return String::new();
    };
    names.split_whitespace().map(|pod| format!("--- agent pod {pod}:\n{}", pod_log(RELEASE_NAMESPACE, pod))).collect()
}

pub fn node_address() -> String {
    let node = get("node", "", "sockgate-node").expect("the cluster's node");
    let addresses = node["status"]["addresses"].as_array().unwrap();
    addresses.iter().find(|a| a["type"] == "InternalIP").and_then(|a| a["address"].as_str()).unwrap().to_string()
}

/// Which pod and service answered `curl -i http://HOST:PORT` from the client.
pub fn who_answers(host: &str, port: u16) -> (String, String) {
    let (status, echo) = curl(host, port).unwrap_or_else(|e| panic!("{e}\n{}", agent_logs()));
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(echo["namespace"], "default");
    (echo["service"].as_str().unwrap().to_string(), echo["pod"].as_str().unwrap().to_string())
}

/// GATEWAY_HOST=$(kubectl get gateway/tcp-gateway -o jsonpath='{.status.addresses[0].value}'), once written.
pub fn gateway_host() -> String {
    eventually(Duration::from_secs(60), "the Gateway's address", || {
        let host = kubectl(&["get", "gateway/tcp-gateway", "-n", "default", "-o", "jsonpath={.status.addresses[0].value}"], None).ok()?;
        (!host.trim().is_empty()).then(|| host.trim().to_string())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent_logs()))
}

/// Waits until 30 new connections to HOST:PORT are answered by exactly
/// `pods` (an EndpointSlice change takes moments to reach the agent).
pub fn wait_for_answers_from(host: &str, port: u16, pods: &[String]) -> BTreeSet<String> {
    let expected: BTreeSet<String> = pods.iter().cloned().collect();
    eventually(Duration::from_secs(30), "answers from every pod", || {
        let seen: BTreeSet<String> = (0..30).map(|_| who_answers(host, port).1).collect();
        (seen == expected).then_some(seen)
    })
    .unwrap_or_else(|e| panic!("{e}; pods {expected:?}\n{}", agent_logs()))
}

/// The node's containerd (xtask/src/cluster/node.rs: RUN_DIR/containerd.sock).
const CONTAINERD_SOCKET: &str = "/run/sockgate-cluster/containerd.sock";

/// Gives the image `from` a second reference `to` in the node's containerd
/// (same content; a new tag as a registry would serve it), so a release can
/// be upgraded to it with `imagePullPolicy: IfNotPresent`.
pub fn tag_image(from: &str, to: &str) -> Result<()> {
    let out = Command::new("ctr").args(["--address", CONTAINERD_SOCKET, "--namespace", "k8s.io", "images", "tag", "--force", from, to]).output()?;
    if !out.status.success() {
        bail!("ctr images tag {from} {to}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The agent pods (not yet being deleted or not) with their image, by name.
pub fn agent_pods() -> BTreeMap<String, (String, bool)> {
    let Ok(out) = kubectl(&["get", "pods", "-n", RELEASE_NAMESPACE, "-l", AGENT_PODS, "-o", "json"], None) else { return BTreeMap::new() };
    let Ok(list) = serde_json::from_str::<Value>(&out) else { return BTreeMap::new() };
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let name = p["metadata"]["name"].as_str()?.to_string();
            let image = p["spec"]["containers"][0]["image"].as_str().unwrap_or_default().to_string();
            Some((name, (image, !p["metadata"]["deletionTimestamp"].is_null())))
        })
        .collect()
}

/// Runs `f` on a thread inside the client's network namespace (another
/// machine, as it were): the sockets it makes live there for life.
pub fn in_client_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    let netns = env("GATEWAY_CLIENT_NETNS").unwrap();
    let file = std::fs::File::open(format!("/run/netns/{netns}")).unwrap();
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only, with a valid namespace fd.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            panic!("setns into the client's namespace: {}", std::io::Error::last_os_error());
        }
        f()
    })
}

/// What a connection loop saw: each attempt made once, never retried.
#[derive(Debug, Default)]
pub struct Attempts {
    pub answered: usize,
    /// connect() refused (RST to the SYN: no listener had the port).
    pub refused: usize,
    /// Anything else that went wrong (timeout, reset, a wrong echo), described.
    pub failed: Vec<String>,
    /// Every attempt in order: when it started, and whether it was refused.
    pub timeline: Vec<(Instant, bool)>,
}

impl Attempts {
    /// The stretches of consecutive refusals: (first refused, first answered after).
    pub fn refusal_windows(&self) -> Vec<(Instant, Instant)> {
        let mut windows = Vec::new();
        let mut open: Option<Instant> = None;
        for &(at, refused) in &self.timeline {
            match (refused, open) {
                (true, None) => open = Some(at),
                (false, Some(start)) => {
                    windows.push((start, at));
                    open = None;
                }
                _ => {}
            }
        }
        if let (Some(start), Some(&(end, _))) = (open, self.timeline.last()) {
            windows.push((start, end));
        }
        windows
    }
}

/// One connection to a TCP echo at `addr` (from the calling thread's
/// namespace): connect once, send a line, half-close, expect the line back.
fn echo_attempt(addr: SocketAddr, n: u64) -> std::io::Result<bool> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let line = format!("attempt {n}\n");
    s.write_all(line.as_bytes())?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut back = String::new();
    s.read_to_string(&mut back)?;
    Ok(back == line)
}

/// Whether a TCP echo at `addr` answers one connection from the client.
pub fn echo_answers(addr: SocketAddr) -> bool {
    in_client_netns(move || echo_attempt(addr, 0).unwrap_or(false)).join().unwrap()
}

/// New connections to a TCP echo at `addr` from the client, one every 20 ms
/// until `stop`: each attempt made once, never retried.
pub fn echo_connection_loop(addr: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Attempts> {
    in_client_netns(move || {
        let mut seen = Attempts::default();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let started = Instant::now();
            let outcome = echo_attempt(addr, n);
            seen.timeline.push((started, matches!(&outcome, Err(e) if e.kind() == ErrorKind::ConnectionRefused)));
            match outcome {
                Ok(true) => seen.answered += 1,
                Ok(false) => seen.failed.push(format!("attempt {n}: a wrong echo")),
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => seen.refused += 1,
                Err(e) => seen.failed.push(format!("attempt {n} after {:?}: {e}", started.elapsed())),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        seen
    })
}

/// Both directions of one long transfer through a TCP echo: what was sent and
/// what came back, each as length and SHA-256.
pub struct Transfer {
    pub sent: crate::integrity::Received,
    pub echoed: crate::integrity::Received,
    pub seconds: f64,
}

/// One connection to a TCP echo at `addr` from the client, sending a
/// checksummed pattern at about `bytes_per_second` until `stop`, then FIN;
/// whatever comes back is hashed to the end of the stream.
pub fn paced_echo_transfer(addr: SocketAddr, bytes_per_second: usize, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<std::io::Result<Transfer>> {
    in_client_netns(move || paced_echo(TcpStream::connect_timeout(&addr, Duration::from_secs(5))?, bytes_per_second, stop))
}

/// On a connection to a TCP echo: sends a checksummed pattern at about
/// `bytes_per_second` until `stop`, then FIN, hashing what comes back to the
/// end of the stream.
pub fn paced_echo(stream: TcpStream, bytes_per_second: usize, stop: Arc<AtomicBool>) -> std::io::Result<Transfer> {
    use sha2::{Digest, Sha256};
    let started = Instant::now();
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut writer = stream.try_clone()?;
    let sender = std::thread::spawn(move || -> std::io::Result<crate::integrity::Received> {
        const CHUNK: usize = 64 * 1024;
        let interval = Duration::from_secs_f64(CHUNK as f64 / bytes_per_second as f64);
        let (mut hasher, mut len) = (Sha256::new(), 0u64);
        let mut seed = 1u64;
        while !stop.load(Ordering::Relaxed) {
            let chunk = crate::integrity::pattern(seed, CHUNK - (seed as usize % 977));
            seed += 1;
            writer.write_all(&chunk)?;
            hasher.update(&chunk);
            len += chunk.len() as u64;
            std::thread::sleep(interval);
        }
        writer.shutdown(std::net::Shutdown::Write)?;
        Ok(crate::integrity::Received { len, sha256: hasher.finalize().into() })
    });
    let mut reader = stream;
    let echoed = crate::integrity::receive_to_eof(&mut reader);
    let sent = sender.join().expect("the sending thread")?;
    Ok(Transfer { sent, echoed: echoed?, seconds: started.elapsed().as_secs_f64() })
}

/// Agent pods that have a log directory on the node (`NAMESPACE_POD_UID`).
fn logged_agent_pods() -> Vec<String> {
    let prefix = format!("{RELEASE_NAMESPACE}_sockgate-agent-");
    let Ok(dirs) = std::fs::read_dir("/var/log/pods") else { return Vec::new() };
    dirs.flatten()
        .filter_map(|d| {
            let name = d.file_name().to_string_lossy().into_owned();
            let rest = name.strip_prefix(&format!("{RELEASE_NAMESPACE}_"))?;
            name.starts_with(&prefix).then(|| rest.rsplit_once('_').map(|(pod, _uid)| pod.to_string()))?
        })
        .collect()
}

/// Copies of the agent pods' logs, taken every 100 ms while it runs: the
/// kubelet removes a pod's log with the pod, and a replaced agent's last
/// words are what the tests read.
pub struct LogKeeper {
    logs: Arc<Mutex<BTreeMap<String, String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LogKeeper {
    pub fn start() -> LogKeeper {
        let logs: Arc<Mutex<BTreeMap<String, String>>> = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (logs, stop) = (logs.clone(), stop.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    // The API's list and the kubelet's log directories: a pod
                    // being deleted leaves the list before its last words
                    // (the drain) are all written, its directory later.
                    let mut pods: std::collections::BTreeSet<String> = agent_pods().into_keys().collect();
                    pods.extend(logged_agent_pods());
                    for pod in pods {
                        let text = pod_log(RELEASE_NAMESPACE, &pod);
                        let mut logs = logs.lock().unwrap();
                        let kept = logs.entry(pod).or_default();
                        if text.len() > kept.len() {
                            *kept = text;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        LogKeeper { logs, stop, thread: Some(thread) }
    }

    /// The longest log seen of `pod`.
    pub fn of(&self, pod: &str) -> String {
        self.logs.lock().unwrap().get(pod).cloned().unwrap_or_default()
    }
}

impl Drop for LogKeeper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
