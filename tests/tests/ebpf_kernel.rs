//! The eBPF object really loads and attaches on this kernel, its maps are
//! pinned and readable with bpftool, and the kernel counts the listener's
//! connections. Needs root and BPF (cargo xtask setup provides both).
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use sockgate_tests::cgroup::Cgroup;
use sockgate_tests::harness::{serve, GatewayNode};
use sockgate_tests::integrity::{exchange, pattern, Received};
use sockgate_tests::manifests::{documents, gateway, route, service};
use sockgate_tests::netns::unique_name;
use sockgate_tests::workspace_bin;

/// Connections accepted on `port` according to `gateway-agent inspect`.
fn kernel_accepted(pin_dir: &str, port: u16) -> u64 {
    let out = Command::new(workspace_bin("gateway-agent").unwrap()).args(["inspect", "--bpf-pin-dir", pin_dir]).output().unwrap();
    assert!(out.status.success(), "inspect failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    // `port 9000:` or, with the agent's listeners file, `port 9000 (Gateway …):`.
    let of_port = |l: &&str| l.trim_start().strip_prefix(&format!("port {port}")).is_some_and(|rest| rest.starts_with(':') || rest.starts_with(" ("));
    let line = text.lines().find(of_port).unwrap_or_else(|| panic!("no port {port} in:\n{text}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "connections").unwrap();
    words[at - 1].parse().unwrap()
}

fn inspect_json(pin_dir: &str) -> serde_json::Value {
    let out = Command::new(workspace_bin("gateway-agent").unwrap()).args(["inspect", "--bpf-pin-dir", pin_dir, "--output", "json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_ebpf_object_loads_attaches_to_a_cgroup_and_counts_each_listeners_connections() {
    let cgroup = Cgroup::create().unwrap();
    let pin_dir = format!("/sys/fs/bpf/{}", unique_name("sockgate-test"));
    let yaml = documents(&[gateway(&[("a", 9000), ("b", 9001)]), route("ra", "a", "sink", 7001), route("rb", "b", "sink", 7001), service("sink", 7001, 7000, &["198.18.2.2"])]);
    let cg = cgroup.path().to_str().unwrap().to_string();
    let mut node = GatewayNode::start_with(&[("all.yaml", yaml)], &["--dataplane", "auto", "--bpf-pin-dir", &pin_dir, "--cgroup", &cg], |cmd| {
        cgroup.enroll(cmd);
        // The eBPF program's aya-log records arrive with its crate as their target.
        cmd.env("SOCKGATE_LOG", "info,gateway_agent=debug,gateway_ebpf=debug");
    })
    .unwrap();
    node.wait_for_log(&format!("eBPF listener maps pinned in {pin_dir} and sock_ops attached to {cg}")).unwrap();
    // Readiness probes connect and close at once; their exchanges fail, harmlessly.
    let _backend = serve(&node.hosts.backend1, 7000, |s: TcpStream| exchange(s, pattern(21, 64 * 1024)).ok()).unwrap();
    node.wait_for_port(9000).unwrap();
    node.wait_for_port(9001).unwrap();

    // bpftool reads the pinned listener map: both ports, as the agent wrote them.
    let dump = Command::new("bpftool").args(["-j", "map", "dump", "pinned", &format!("{pin_dir}/LISTENERS")]).output().unwrap();
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    let entries: serde_json::Value = serde_json::from_slice(&dump.stdout).unwrap();
    assert_eq!(entries.as_array().unwrap().len(), 2, "{entries}");

    let (before_a, before_b) = (kernel_accepted(&pin_dir, 9000), kernel_accepted(&pin_dir, 9001));
    for (port, n) in [(9000, 5), (9001, 3)] {
        for i in 0..n {
            let got = exchange(node.connect(port).unwrap(), pattern(i, 4096)).unwrap();
            assert_eq!(got, Received::of(&pattern(21, 64 * 1024)));
        }
    }
    assert_eq!(kernel_accepted(&pin_dir, 9000) - before_a, 5, "the kernel counts every accept on 9000");
    assert_eq!(kernel_accepted(&pin_dir, 9001) - before_b, 3, "the kernel counts every accept on 9001");
    // The program's own log lines reach the agent's log through aya-log.
    node.wait_for_log("connection accepted on listener port 9001").unwrap();

    // The route's endpoints and weights are in BACKENDS, printed by bpftool with field names (BTF)...
    let dump = Command::new("bpftool").args(["-j", "map", "dump", "pinned", &format!("{pin_dir}/BACKENDS")]).output().unwrap();
    let backends: serde_json::Value = serde_json::from_slice(&dump.stdout).unwrap();
    let first = &backends.as_array().unwrap()[0]["formatted"];
    assert_eq!(first["value"]["port"], 7000, "{backends}");
    assert_eq!(first["value"]["weight"], 1, "{backends}");
    // ...and by gateway-agent inspect, in words and as JSON.
    let view = inspect_json(&pin_dir);
    assert_eq!(view["listeners"][0]["backends"][0]["address"], "198.18.2.2", "{view}");
    // With the agent's listeners file, inspect names what each port serves.
    let listeners_file = node.logs.path().join("listeners.json");
    let named = Command::new(workspace_bin("gateway-agent").unwrap()).args(["inspect", "--bpf-pin-dir", &pin_dir, "--listeners-file"]).arg(&listeners_file).output().unwrap();
    let named = String::from_utf8_lossy(&named.stdout).into_owned();
    assert!(named.contains("port 9000 (Gateway default/gw, listener a, TCPRoute default/ra): routed"), "{named}");
    assert!(named.contains("port 9001 (Gateway default/gw, listener b, TCPRoute default/rb): routed"), "{named}");
    assert!(named.contains("backendRef 0 (default/sink:7001) weight 1: 198.18.2.2:7000"), "{named}");
    assert_eq!(view["listeners"][0]["backends"][0]["port"], 7000);
    // The kernel counted the payload each way on 9000: 5 × 4 KiB from clients,
    // 5 × 64 KiB to them (retransmissions, rare on veth, could only add).
    let (from, to) = (view["listeners"][0]["bytesFromClients"].as_u64().unwrap(), view["listeners"][0]["bytesToClients"].as_u64().unwrap());
    assert!((5 * 4096..2 * 5 * 4096).contains(&from), "bytes from clients: {from}");
    assert!((5 * 65536..2 * 5 * 65536).contains(&to), "bytes to clients: {to}");
    // A connection held open shows up live, with its data path, within a tick.
    let held = node.connect(9001).unwrap();
    let live = (0..100).find_map(|_| {
        std::thread::sleep(Duration::from_millis(50));
        let v = inspect_json(&pin_dir);
        (v["listeners"][1]["activeConnections"] == 1).then_some(v)
    });
    let live = live.expect("the held connection never showed as live");
    assert_eq!(live["listeners"][1]["dataPath"], "ebpf", "auto picks the kernel splice on this kernel (its self-test passes)");
    drop(held);

    // SIGTERM: the agent exits by itself, unpins its maps and detaches.
    assert!(node.agent.stop(Duration::from_secs(5)), "the agent must exit on SIGTERM");
    assert!(!std::path::Path::new(&pin_dir).exists(), "pins left behind in {pin_dir}");
    let show = Command::new("bpftool").args(["cgroup", "show", &cg]).output().unwrap();
    assert!(!String::from_utf8_lossy(&show.stdout).contains("sockgate_sockops"), "program still attached");
    node.wait_for_log("shutting down").unwrap_or(());
}

#[test]
fn userspace_mode_loads_no_bpf_and_pins_nothing() {
    let pin_dir = format!("/sys/fs/bpf/{}", unique_name("sockgate-test"));
    let node = GatewayNode::start(&[("gw.yaml", gateway(&[("a", 9000)]))], &["--dataplane", "userspace", "--bpf-pin-dir", &pin_dir]).unwrap();
    assert!(node.agent.logs().contains("userspace requested: no BPF loaded"), "{}", node.agent.logs());
    assert!(!std::path::Path::new(&pin_dir).exists());
}

#[test]
fn the_ebpf_data_path_refuses_to_start_on_an_interface_it_cannot_attach_to_saying_which() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(workspace_bin("gateway-agent").unwrap())
        .args(["run", "--dataplane", "ebpf", "--splice-interface", "sgnosuch0", "--bpf-pin-dir", "/sys/fs/bpf/sockgate-test-noif", "--manifests"])
        .arg(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It must fail at start; a bounded wait, so a regression cannot hang the suite.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("gateway-agent --dataplane ebpf on a missing interface kept running");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let _ = std::fs::remove_dir_all("/sys/fs/bpf/sockgate-test-noif");
    assert!(!status.success());
    assert!(stderr.contains("--dataplane ebpf: the kernel TCP splice cannot run here"), "{stderr}");
    assert!(stderr.contains("sgnosuch0"), "the refusal names the interface: {stderr}");
}

/// A machine where the kernel splice cannot load (simulated: the pin
/// directory is on a plain file system, not bpffs, so its maps cannot be
/// pinned): `--dataplane ebpf` says why in one log line and serves every
/// connection on splice(2), bytes intact both ways.
#[test]
fn when_the_kernel_splice_cannot_load_the_ebpf_mode_says_why_and_serves_on_splice() {
    let not_bpffs = tempfile::tempdir().unwrap();
    let pin_dir = not_bpffs.path().join("pins");
    let yaml = documents(&[gateway(&[("data", 9000)]), route("data", "data", "sink", 7001), service("sink", 7001, 7000, &["198.18.2.2"])]);
    let node = GatewayNode::start(&[("all.yaml", yaml)], &["--dataplane", "ebpf", "--bpf-pin-dir", pin_dir.to_str().unwrap()]).unwrap();
    node.wait_for_port(9000).unwrap();
    let (up, down) = (pattern(11, 8 << 20), pattern(12, 8 << 20));
    let down_for_backend = down.clone();
    let backend = serve(&node.hosts.backend1, 7000, move |s: TcpStream| exchange(s, down_for_backend.clone()).unwrap()).unwrap();
    let client = node.connect(9000).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let client_got = exchange(client, up.clone()).unwrap();
    assert_eq!(backend.recv_timeout(Duration::from_secs(30)).unwrap(), Received::of(&up), "client → backend corrupted");
    assert_eq!(client_got, Received::of(&down), "backend → client corrupted");
    let logs = node.agent.logs();
    let why: Vec<&str> = logs.lines().filter(|l| l.contains("the kernel TCP splice cannot run here; every connection is served on splice(2)")).collect();
    assert_eq!(why.len(), 1, "one line says why: {logs}");
    assert!(why[0].contains("error="), "the line gives the cause: {}", why[0]);
    assert!(!logs.contains("connection spliced in the kernel"), "{logs}");
    // And at start, the requirement check said what to mount.
    assert!(logs.contains(&format!("node requirement missing: a bpf filesystem at {}", pin_dir.display())), "{logs}");
    assert!(logs.contains(&format!("fix=mount -t bpf bpf {}", pin_dir.display())), "{logs}");
}

/// An exchange of `size` bytes each way at once through `node`'s port 9000 to
/// backend1's 7000, both checked.
fn exchange_both_ways(node: &GatewayNode, seed: u64, size: usize) {
    let (up, down) = (pattern(seed, size), pattern(seed + 1, size));
    let down_for_backend = down.clone();
    let backend = serve(&node.hosts.backend1, 7000, move |s: TcpStream| exchange(s, down_for_backend.clone()).ok()).unwrap();
    let client = node.connect(9000).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let client_got = exchange(client, up.clone()).unwrap();
    // The harness's port probe may reach the backend first, with nothing.
    let backend_got = loop {
        match backend.recv_timeout(Duration::from_secs(30)).unwrap() {
            Some(got) if got != Received::of(&[]) => break got,
            _ => continue,
        }
    };
    assert_eq!(backend_got, Received::of(&up), "client → backend corrupted");
    assert_eq!(client_got, Received::of(&down), "backend → client corrupted");
}

fn data_path_line(logs: &str) -> String {
    logs.lines().find(|l| l.contains("data path: ")).unwrap_or_else(|| panic!("no data path line: {logs}")).to_string()
}

/// The default, `auto`, on a node where the kernel splice works: its
/// self-test passes at start, it is chosen, and a connection that lasts is
/// handed to the kernel, every byte intact.
#[test]
fn auto_picks_the_kernel_splice_once_its_self_test_passes_and_a_lasting_connection_is_spliced() {
    let yaml = documents(&[gateway(&[("data", 9000)]), route("data", "data", "sink", 7001), service("sink", 7001, 7000, &["198.18.2.2"])]);
    let node = GatewayNode::start(&[("all.yaml", yaml)], &[]).unwrap();
    node.wait_for_port(9000).unwrap();
    exchange_both_ways(&node, 31, 64 << 20);
    let logs = node.agent.logs();
    let line = data_path_line(&logs);
    assert!(line.contains("path=\"ebpf\"") || line.contains("path=ebpf"), "{line}");
    assert!(line.contains("ebpf, chosen by auto") && line.contains("self-tests passed"), "{line}");
    assert_eq!(logs.matches("connection spliced in the kernel").count(), 1, "the 64 MiB exchange was not spliced: {logs}");
}

/// Without CAP_NET_RAW (dropped from the bounding set before exec, as a
/// container runtime would) the kernel splice cannot send its own resets:
/// auto's self-test refuses it, one warning says why, and splice(2) serves.
#[test]
fn without_cap_net_raw_auto_refuses_the_kernel_splice_says_why_and_serves_on_splice() {
    use std::os::unix::process::CommandExt;
    const CAP_NET_RAW: libc::c_ulong = 13;
    let yaml = documents(&[gateway(&[("data", 9000)]), route("data", "data", "sink", 7001), service("sink", 7001, 7000, &["198.18.2.2"])]);
    let node = GatewayNode::start_with(&[("all.yaml", yaml)], &[], |cmd| {
        // SAFETY: prctl(2) only, in the child before exec.
        unsafe {
            cmd.pre_exec(|| if libc::prctl(libc::PR_CAPBSET_DROP, CAP_NET_RAW, 0, 0, 0) == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) });
        }
    })
    .unwrap();
    node.wait_for_port(9000).unwrap();
    exchange_both_ways(&node, 41, 16 << 20);
    let logs = node.agent.logs();
    let line = data_path_line(&logs);
    assert!(line.contains("path=\"splice\"") || line.contains("path=splice"), "{line}");
    assert!(line.contains("not the kernel TCP splice") && line.contains("CAP_NET_RAW"), "{line}");
    let warned: Vec<&str> = logs.lines().filter(|l| l.contains("auto: the kernel TCP splice cannot run here")).collect();
    assert_eq!(warned.len(), 1, "one line says why: {logs}");
    assert!(warned[0].contains("WARN") && warned[0].contains("raw TCP socket"), "{}", warned[0]);
    assert!(!logs.contains("connection spliced in the kernel"), "{logs}");
}

/// Started without CAP_NET_RAW (dropped from its bounding set by setpriv, as
/// a container runtime would), `--dataplane ebpf` names the missing
/// capability, what it turns off and how to grant it, at start.
#[test]
fn a_missing_capability_is_named_at_start_with_what_it_turns_off_and_the_fix() {
    use std::io::BufRead;
    let ns = sockgate_tests::netns::NetNs::create("sg-req").unwrap();
    let state = tempfile::tempdir().unwrap();
    let pin_dir = format!("/sys/fs/bpf/{}", unique_name("sockgate-test"));
    let mut child = ns
        .command("setpriv")
        .args(["--bounding-set", "-net_raw", "--"])
        .arg(workspace_bin("gateway-agent").unwrap())
        .args(["run", "--dataplane", "ebpf", "--bpf-pin-dir", &pin_dir, "--manifests"])
        .arg(state.path())
        .arg("--takeover-socket")
        .arg(state.path().join("takeover.sock"))
        .arg("--udp-state-file")
        .arg(state.path().join("udp.json"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let found = loop {
        match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(line) if line.contains("node requirement missing: capability CAP_NET_RAW") => break Some(line),
            Ok(line) => seen.push(line),
            Err(_) => break None,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&pin_dir);
    let line = found.unwrap_or_else(|| panic!("no warning about CAP_NET_RAW in:\n{}", seen.join("\n")));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("resets of the flows it ends"), "says what it turns off: {line}");
    assert!(line.contains("add CAP_NET_RAW"), "says how to fix it: {line}");
}
