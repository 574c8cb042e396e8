//! The seed scenario, end to end (`cargo xtask demo` runs this): Envoy
//! Gateway's "TCP Routing" guide served by sockgate in standalone mode.
//!
//! Builds the test hosts (client, node, two backends), starts the echo backends
//! for Services foo and bar on port 3000, starts gateway-agent on the node with
//! `--manifests examples/tcp-routing`, then runs from the client exactly what
//! the guide runs and prints the real output. Exits 0 only if 8088 reached
//! service foo and 8089 service bar. Everything it made is removed on exit.
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sockgate_tests::agent::{wait_for_port, Process};
use sockgate_tests::echo::EchoResponse;
use sockgate_tests::netns::NetNs;
use sockgate_tests::topology::{Topology, GATEWAY};
use sockgate_tests::{workspace_bin, workspace_root};

fn main() {
    match demo() {
        Ok(()) => println!("\ndemo: OK: port 8088 reached service foo and port 8089 service bar"),
        Err(e) => {
            eprintln!("\ndemo: FAILED: {e:#}");
            std::process::exit(1);
        }
    }
}

fn demo() -> Result<()> {
    let agent_bin = workspace_bin("gateway-agent")?;
    let manifests = workspace_root().join("examples/tcp-routing");
    let logs = tempfile::tempdir()?;
    let pin_dir = format!("/sys/fs/bpf/sockgate-demo-{}", std::process::id());

    println!("== test hosts: client 198.18.1.1, gateway node {GATEWAY}, backends 198.18.2.2 (foo) and 198.18.3.2 (bar)");
    let hosts = Topology::create()?;
    let _foo = sockgate_tests::echo::start(&hosts.backend1, "foo", "backend-1-demo", logs.path())?;
    let _bar = sockgate_tests::echo::start(&hosts.backend2, "bar", "backend-2-demo", logs.path())?;

    println!("== gateway-agent run --manifests {}", manifests.display());
    let mut agent_cmd = hosts.node.command(&agent_bin);
    agent_cmd.args(["run", "--manifests"]).arg(&manifests).args(["--bpf-pin-dir", &pin_dir]);
    // Its own takeover socket: an agent already serving this machine is not the demo's to take over.
    agent_cmd.arg("--takeover-socket").arg(logs.path().join("takeover.sock"));
    // And its own state files, which inspect reads below.
    let listeners_file = logs.path().join("listeners.json");
    agent_cmd.arg("--listeners-file").arg(&listeners_file);
    let mut agent = Process::spawn("gateway-agent", agent_cmd, logs.path())?;
    for port in [8088, 8089] {
        wait_for_port(&hosts.client, SocketAddr::new(GATEWAY.into(), port), Duration::from_secs(20))
            .with_context(|| format!("the gateway's port {port}; agent log:\n{}", agent.logs()))?;
    }
    // The eBPF maps are installed beside serving, once the verifier is done.
    sockgate_tests::agent::wait_for_log(&mut agent, "eBPF:", Duration::from_secs(20))?;
    agent.ensure_running()?;
    for line in agent.logs().lines().filter(|l| l.contains("data path") || l.contains("eBPF:") || l.contains("status:") || l.contains("listening")) {
        println!("   agent| {}", line.trim());
    }

    let host = GATEWAY.to_string();
    for port in ["8088", "8089"] {
        shell(&hosts.client, "nc", &["-zv", &host, port])?;
    }
    let from_8088 = curl(&hosts.client, &format!("http://{host}:8088"))?;
    let from_8089 = curl(&hosts.client, &format!("http://{host}:8089"))?;

    // The guide's requests each end within a millisecond, on splice(2), before
    // a handover is due. One connection held open a moment first is handed to
    // the kernel (when auto picked it), so its GET and answer pass through the
    // TC splice and the flow table below shows it.
    println!("\n== one more GET to 8088, on a connection held open 200 ms first (past --kernel-splice-after)");
    let held_to = SocketAddr::new(GATEWAY.into(), 8088);
    let mut held = hosts.client.enter(move || std::net::TcpStream::connect_timeout(&held_to, Duration::from_secs(5)))??;
    held.set_read_timeout(Some(Duration::from_secs(10)))?;
    std::thread::sleep(Duration::from_millis(200));
    let (status, from_held) = sockgate_tests::echo::get(&mut held, &format!("{host}:8088"))?;
    println!("   {status}: service {}, pod {}", from_held.service, from_held.pod);

    println!("\n== the kernel's view: gateway-agent inspect --bpf-pin-dir {pin_dir} --listeners-file {}", listeners_file.display());
    let inspect = Command::new(&agent_bin).args(["inspect", "--bpf-pin-dir", &pin_dir, "--listeners-file"]).arg(&listeners_file).output()?;
    print!("{}{}", String::from_utf8_lossy(&inspect.stdout), String::from_utf8_lossy(&inspect.stderr));
    if !inspect.status.success() {
        bail!("gateway-agent inspect failed: the eBPF listener maps are not there");
    }
    for map in ["LISTENERS", "LISTENER_STATS"] {
        shell_here("bpftool", &["map", "dump", "pinned", &format!("{pin_dir}/{map}")])?;
    }
    // The held connection's two entries (the kernel splice's flow table).
    if std::path::Path::new(&format!("{pin_dir}/FLOWS")).exists() {
        shell_here("bpftool", &["map", "dump", "pinned", &format!("{pin_dir}/FLOWS")])?;
    }

    drop(held);
    agent.ensure_running()?;
    agent.stop(Duration::from_secs(5));
    let _ = std::fs::remove_dir_all(&pin_dir);
    if from_8088.service != "foo" || from_8089.service != "bar" || from_held.service != "foo" {
        bail!("8088 answered from service {:?} (and {:?} on the held connection) and 8089 from {:?}", from_8088.service, from_held.service, from_8089.service);
    }
    Ok(())
}

/// Runs a program on the client host, printing the command and its output.
fn shell(host: &NetNs, program: &str, args: &[&str]) -> Result<String> {
    println!("\n$ {program} {}", args.join(" "));
    let out = host.command(program).args(args).stdin(Stdio::null()).output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // nc reports on stderr; both go to stdout so they read in order.
    print!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("{program} {} failed ({})", args.join(" "), out.status);
    }
    Ok(stdout)
}

/// Runs a program on this host (bpftool reads the agent's pinned maps), printing it.
fn shell_here(program: &str, args: &[&str]) -> Result<()> {
    println!("\n$ {program} {}", args.join(" "));
    let out = Command::new(program).args(args).stdin(Stdio::null()).output()?;
    print!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("{program} failed ({})", out.status);
    }
    Ok(())
}

fn curl(host: &NetNs, url: &str) -> Result<EchoResponse> {
    let output = shell(host, "curl", &["-i", "--silent", "--show-error", "--max-time", "10", url])?;
    println!();
    let body = output.split_once("\r\n\r\n").map(|(_, b)| b).context("no HTTP body in curl's output")?;
    serde_json::from_str(body).with_context(|| format!("the answer from {url} is not the echo's JSON"))
}
