//! The ways through the node, each started inside the node's namespace with
//! its configuration in a temporary directory, and stopped (files removed) on
//! drop: direct routing, iptables DNAT, sockgate's agent with each data path,
//! HAProxy and nginx stream. Those that carry UDP (`Contender::udp`) also
//! serve the UDP services (`UDP_SERVICES`).
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::rlimit;
use super::testbed::{wait_listening, wait_udp_bound, Service, Testbed, SERVICES, UDP_SERVICES};
use crate::agent::{wait_for_log, Process};
use crate::cgroup::Cgroup;
use crate::manifests::{documents, gateway, route, service};
use crate::udp::{udp_route, udp_service};
use crate::topology::{BACKEND1, GATEWAY};
use crate::workspace_bin;

/// HAProxy with `option splice-request` and `option splice-response`, or without.
/// Measured both ways on this machine (see BENCHMARKS.md's method); the
/// faster one is the `haproxy` contender, the other stays selectable.
pub const HAPROXY_SPLICES_BY_DEFAULT: bool = false;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Contender {
    /// The node's kernel routes client ⇄ backend: no proxy, the topology's limit.
    Direct,
    /// iptables DNAT on the node (what kube-proxy does): per packet, no socket termination.
    Dnat,
    /// sockgate as deployed: `--dataplane auto` (the kernel TCP splice where
    /// its self-test passes, as here, else splice(2); eBPF maps and counters).
    Auto,
    /// sockgate with the kernel TCP splice: `--dataplane ebpf` (set-up in
    /// userspace, then a TC program carries the segments; pairs it cannot
    /// take stay on splice(2)).
    Ebpf,
    /// sockgate with the splice(2) path only, no BPF.
    Splice,
    /// sockgate with the copy path only, no BPF.
    Copy,
    Haproxy {
        splice: bool,
    },
    Nginx,
}

impl Contender {
    pub fn default_set() -> Vec<Contender> {
        vec![
            Contender::Direct,
            Contender::Dnat,
            Contender::Auto,
            Contender::Ebpf,
            Contender::Splice,
            Contender::Copy,
            Contender::Haproxy {
                splice: HAPROXY_SPLICES_BY_DEFAULT,
            },
            Contender::Nginx,
        ]
    }

    /// The name on the command line.
    pub fn key(&self) -> &'static str {
        match self {
            Contender::Direct => "direct",
            Contender::Dnat => "dnat",
            Contender::Auto => "auto",
            Contender::Ebpf => "ebpf",
            Contender::Splice => "splice",
            Contender::Copy => "copy",
            Contender::Haproxy { splice } if *splice == HAPROXY_SPLICES_BY_DEFAULT => "haproxy",
            Contender::Haproxy { splice: true } => "haproxy-splice",
            Contender::Haproxy { splice: false } => "haproxy-nosplice",
            Contender::Nginx => "nginx",
        }
    }

    pub fn parse(key: &str) -> Result<Contender> {
        let all = [
            Contender::Direct,
            Contender::Dnat,
            Contender::Auto,
            Contender::Ebpf,
            Contender::Splice,
            Contender::Copy,
            Contender::Haproxy {
                splice: HAPROXY_SPLICES_BY_DEFAULT,
            },
            Contender::Haproxy {
                splice: !HAPROXY_SPLICES_BY_DEFAULT,
            },
            Contender::Nginx,
        ];
        all.into_iter().find(|c| c.key() == key).with_context(|| {
            format!(
                "unknown contender {key:?}; known: {}",
                all.iter().map(Contender::key).collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// The name in the report.
    pub fn label(&self) -> String {
        match self {
            Contender::Direct => "direct (routed, no proxy)".into(),
            Contender::Dnat => "iptables DNAT".into(),
            Contender::Auto => "sockgate `auto` (default)".into(),
            Contender::Ebpf => "sockgate `ebpf` (kernel TCP splice)".into(),
            Contender::Splice => "sockgate `splice`".into(),
            Contender::Copy => "sockgate `copy`".into(),
            Contender::Haproxy { splice: true } => "HAProxy 2.6 (splice)".into(),
            Contender::Haproxy { splice: false } => "HAProxy 2.6".into(),
            Contender::Nginx => "nginx 1.22 stream".into(),
        }
    }

    /// How it carries the UDP workloads, or why it has no figure there ("n/a" in those rows).
    pub fn udp(&self) -> Result<&'static str, &'static str> {
        match self {
            Contender::Direct => Ok("routed by the node"),
            Contender::Dnat => Ok("iptables DNAT (`-p udp`)"),
            // auto does not pick the kernel UDP NAT: only `--dataplane ebpf` loads it.
            Contender::Auto => Ok("the userspace relay"),
            Contender::Ebpf => Ok("the kernel UDP NAT (`sockgate_udp_nat`)"),
            Contender::Splice | Contender::Copy => Err("n/a: its UDP path is the userspace relay, measured as `auto`"),
            Contender::Haproxy { .. } => Err("n/a: HAProxy 2.6 has no UDP proxy"),
            Contender::Nginx => Ok("the stream module, `listen … udp`"),
        }
    }

    /// The name in the UDP tables, where sockgate's modes run other paths than for TCP.
    pub fn udp_label(&self) -> String {
        match self {
            Contender::Auto => "sockgate `auto` (default: the UDP relay)".into(),
            Contender::Ebpf => "sockgate `ebpf` (kernel UDP NAT)".into(),
            _ => self.label(),
        }
    }

    pub fn is_sockgate(&self) -> bool {
        matches!(self, Contender::Auto | Contender::Ebpf | Contender::Splice | Contender::Copy)
    }

    /// Whether the agent loads BPF in this mode (and so gets a cgroup of its own).
    fn loads_bpf(&self) -> bool {
        matches!(self, Contender::Auto | Contender::Ebpf)
    }

    /// Starts this way through the node of `bed` and waits until it serves.
    pub fn start(&self, bed: &Testbed) -> Result<Forwarder> {
        let mut forwarder = Forwarder {
            contender: *self,
            process: None,
            _cgroup: None,
            pin_dir: None,
            files: tempfile::tempdir()?,
        };
        match self {
            Contender::Direct => {}
            Contender::Dnat => dnat(bed)?,
            Contender::Auto | Contender::Ebpf | Contender::Splice | Contender::Copy => forwarder.start_agent(bed)?,
            Contender::Haproxy { splice } => {
                let conf = forwarder.files.path().join("haproxy.cfg");
                std::fs::write(&conf, haproxy_config(*splice))?;
                let mut command = bed.hosts.node.command("haproxy");
                command.arg("-db").arg("-f").arg(&conf);
                forwarder.spawn("haproxy", command, bed, false)?;
            }
            Contender::Nginx => {
                let dir = forwarder.files.path().to_path_buf();
                std::fs::write(dir.join("nginx.conf"), nginx_config(&dir.display().to_string()))?;
                let mut command = bed.hosts.node.command("nginx");
                command
                    .arg("-p")
                    .arg(&dir)
                    .arg("-c")
                    .arg(dir.join("nginx.conf"))
                    .arg("-e")
                    .arg(dir.join("error.log"))
                    .args(["-g", "daemon off;"]);
                forwarder.spawn("nginx", command, bed, true)?;
            }
        }
        Ok(forwarder)
    }
}

/// A running contender. Dropping it stops the process (SIGTERM, then SIGKILL)
/// and removes its files, cgroup and BPF pins.
pub struct Forwarder {
    pub contender: Contender,
    // Declared first: the process stops before its cgroup and files go.
    process: Option<Process>,
    _cgroup: Option<Cgroup>,
    pin_dir: Option<std::path::PathBuf>,
    files: tempfile::TempDir,
}

/// Where an agent serves /metrics, inside the node's namespace.
const METRICS: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9090);

impl Forwarder {
    /// Where the client connects for `service`.
    pub fn target(&self, service: &Service) -> SocketAddr {
        match self.contender {
            Contender::Direct => SocketAddr::new(IpAddr::V4(BACKEND1), service.backend),
            _ => SocketAddr::new(IpAddr::V4(GATEWAY), service.listener),
        }
    }

    /// The forwarder's processes (none for direct and DNAT: the kernel forwards).
    pub fn pids(&self) -> Vec<u32> {
        self.process.as_ref().map(|p| super::procfs::with_descendants(p.pid())).unwrap_or_default()
    }

    pub fn main_pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// The forwarder's log (agent log, HAProxy's stderr, nginx's error log), for failures.
    pub fn log(&self) -> String {
        let mut log = self.process.as_ref().map(Process::logs).unwrap_or_default();
        log += &std::fs::read_to_string(self.files.path().join("error.log")).unwrap_or_default();
        log
    }

    /// The agent's /metrics (sockgate only), fetched inside the node's namespace `node`.
    pub fn metrics(&self, node: &crate::netns::NetNs) -> Result<String> {
        if !self.contender.is_sockgate() {
            bail!("{} serves no /metrics", self.contender.key());
        }
        let text = node.enter(|| -> std::io::Result<String> {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect_timeout(&METRICS, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: sockgate\r\nConnection: close\r\n\r\n")?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text)
        })??;
        let (_, body) = text.split_once("\r\n\r\n").context("no HTTP body from /metrics")?;
        Ok(body.to_string())
    }

    /// Starts a proxy and waits for its TCP listeners, and its UDP sockets if it serves `udp`.
    fn spawn(&mut self, name: &str, mut command: std::process::Command, bed: &Testbed, udp: bool) -> Result<()> {
        rlimit::as_inherited(&mut command);
        let mut process = Process::spawn(name, command, self.files.path())?;
        let ports: Vec<u16> = SERVICES.iter().map(|s| s.listener).collect();
        let udp_ports: Vec<u16> = if udp { UDP_SERVICES.iter().map(|s| s.listener).collect() } else { Vec::new() };
        let listening = wait_listening(&bed.hosts.node, &ports, Duration::from_secs(20)).and_then(|_| wait_udp_bound(&bed.hosts.node, &udp_ports, Duration::from_secs(20)));
        if let Err(e) = listening {
            process.ensure_running()?;
            return Err(e.context(format!("{name} log:\n{}", process.logs())));
        }
        self.process = Some(process);
        Ok(())
    }

    fn start_agent(&mut self, bed: &Testbed) -> Result<()> {
        // The Gateway's listeners list comes last in its document: the UDP listeners follow the TCP ones.
        let mut gw = gateway(&SERVICES.map(|s| (s.name, s.listener)));
        for u in UDP_SERVICES {
            let _ = writeln!(gw, "  - name: {}\n    protocol: UDP\n    port: {}", u.name, u.listener);
        }
        let mut docs = vec![gw];
        for s in SERVICES {
            docs.push(route(s.name, s.name, s.name, s.backend));
            docs.push(service(s.name, s.backend, s.backend, &[&BACKEND1.to_string()]));
        }
        for u in UDP_SERVICES {
            docs.push(udp_route(u.name, &format!("[{{name: gw, sectionName: {}}}]", u.name), &format!("[{{name: {}, port: {}}}]", u.name, u.backend)));
            docs.push(udp_service(u.name, u.backend, u.backend, &[&BACKEND1.to_string()]));
        }
        let manifests = self.files.path().join("manifests");
        std::fs::create_dir(&manifests)?;
        std::fs::write(manifests.join("bench.yaml"), documents(&docs))?;
        let pin_dir = std::path::PathBuf::from(format!("/sys/fs/bpf/{}", crate::netns::unique_name("sockgate-bench")));
        let mode = match self.contender {
            Contender::Auto => "auto",
            Contender::Ebpf => "ebpf",
            Contender::Splice => "splice",
            _ => "copy",
        };
        let mut command = bed.hosts.node.command(workspace_bin("gateway-agent")?);
        // Info level, as deployed: no log line per connection. SOCKGATE_BENCH_AGENT_LOG
        // overrides it (e.g. `info,gateway_agent::dataplane::kernel_splice=debug`), and keeps
        // each agent's log as /tmp/sockgate-bench-agent-KEY-PID.log, to look into a figure.
        let level = std::env::var("SOCKGATE_BENCH_AGENT_LOG").unwrap_or_else(|_| "info".into());
        command
            .env("SOCKGATE_LOG", level)
            .args(["run", "--reload-interval", "1s", "--dataplane", mode, "--manifests"])
            .arg(&manifests);
        command.arg("--bpf-pin-dir").arg(&pin_dir);
        // A takeover socket of its own: at the default path, an agent of anyone else's test on
        // this machine would hand its listeners to this one, or take this one's away.
        command.arg("--takeover-socket").arg(self.files.path().join("takeover.sock"));
        // The client has closed everything by teardown; no need to wait the default 20 s for stragglers.
        command.args(["--drain-timeout", "2s"]);
        // Its counters (the kernel splice's: spliced, kept on splice(2) by reason) are read per workload.
        command.arg("--health-address").arg(METRICS.to_string());
        if self.contender.loads_bpf() {
            // A cgroup of its own, as a pod has: its programs see the agent's sockets only.
            let cgroup = Cgroup::create()?;
            command.arg("--cgroup").arg(cgroup.path());
            cgroup.enroll(&mut command);
            self._cgroup = Some(cgroup);
        }
        self.pin_dir = Some(pin_dir);
        rlimit::as_inherited(&mut command);
        let mut process = Process::spawn("gateway-agent", command, self.files.path())?;
        wait_for_log(&mut process, "configuration applied", Duration::from_secs(30))?;
        self.process = Some(process);
        let ports: Vec<u16> = SERVICES.iter().map(|s| s.listener).collect();
        let udp_ports: Vec<u16> = UDP_SERVICES.iter().map(|s| s.listener).collect();
        wait_listening(&bed.hosts.node, &ports, Duration::from_secs(10))
            .and_then(|_| wait_udp_bound(&bed.hosts.node, &udp_ports, Duration::from_secs(10)))
            .with_context(|| format!("agent log:\n{}", self.log()))
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop(Duration::from_secs(10));
            if self.contender.is_sockgate() && std::env::var_os("SOCKGATE_BENCH_AGENT_LOG").is_some() {
                let kept = format!("/tmp/sockgate-bench-agent-{}-{}.log", self.contender.key(), process.pid());
                if std::fs::write(&kept, process.logs()).is_ok() {
                    eprintln!("    agent log kept in {kept}");
                }
            }
        }
        // The agent unpins on SIGTERM; a killed one leaves its pins, which go here.
        if let Some(dir) = &self.pin_dir {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// kube-proxy's way: rewrite the destination of each packet to the node, and route (TCP and UDP alike).
fn dnat(bed: &Testbed) -> Result<()> {
    let tcp = SERVICES.iter().map(|s| ("tcp", s));
    let udp = UDP_SERVICES.iter().map(|s| ("udp", s));
    for (protocol, s) in tcp.chain(udp) {
        let out = bed
            .hosts
            .node
            .command("iptables")
            .args([
                "-w",
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-d",
                &GATEWAY.to_string(),
                "-p",
                protocol,
                "--dport",
                &s.listener.to_string(),
            ])
            .args(["-j", "DNAT", "--to-destination", &format!("{BACKEND1}:{}", s.backend)])
            .output()?;
        if !out.status.success() {
            bail!("iptables DNAT for {} ({protocol}): {}", s.name, String::from_utf8_lossy(&out.stderr).trim());
        }
    }
    Ok(())
}

/// TCP mode, one frontend and backend per service. Threads: HAProxy 2.6's
/// default, one per CPU. No `maxconn`: HAProxy then sizes it from the
/// descriptor limit it was given (an explicit one above what the limit allows
/// makes it refuse to start). Timeouts long enough for the idle connections.
fn haproxy_config(splice: bool) -> String {
    let mut c = String::from("defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 10m\n    timeout server 10m\n");
    if splice {
        c += "    option splice-request\n    option splice-response\n";
    }
    for s in SERVICES {
        let _ = write!(
            c,
            "\nfrontend {name}\n    bind {GATEWAY}:{listener}\n    default_backend {name}\n\nbackend {name}\n    server {name} {BACKEND1}:{backend}\n",
            name = s.name,
            listener = s.listener,
            backend = s.backend
        );
    }
    c
}

/// The stream module, one worker per CPU, one server block per service.
/// `proxy_half_close on`: without it nginx ends the whole session at the
/// first FIN, cutting off the other direction (the checksummed transfer
/// half-closes its upload while the download still flows).
///
/// UDP: `listen … udp reuseport`, so that each worker has a socket of its own
/// and the kernel sends all of a client's datagrams to the same worker (with
/// one shared socket, any worker may take any datagram, and each would keep a
/// session, an upstream socket, of its own for the same client). A session
/// is a client address and port, as sockgate's flow is; it ends after
/// `proxy_timeout 60s` without a datagram (sockgate's default idle timeout).
/// No `proxy_responses`: a limit (1 for DNS) ends the session as soon as
/// every datagram so far is answered, so a client with a window of
/// datagrams in flight would get a new session and upstream socket whenever
/// its answers caught up, and iperf3's one-way stream would end at its first
/// answer; sockgate's flows last until idle.
fn nginx_config(dir: &str) -> String {
    let mut c = format!(
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\nworker_processes auto;\nworker_rlimit_nofile 100000;\npid {dir}/nginx.pid;\n\
         error_log {dir}/error.log warn;\nevents {{\n    worker_connections 50000;\n}}\nstream {{\n"
    );
    for s in SERVICES {
        let _ = writeln!(
            c,
            "    server {{\n        listen {GATEWAY}:{};\n        proxy_pass {BACKEND1}:{};\n        proxy_timeout 10m;\n        proxy_half_close on;\n    }}",
            s.listener, s.backend
        );
    }
    for s in UDP_SERVICES {
        let _ = writeln!(
            c,
            "    server {{\n        listen {GATEWAY}:{} udp reuseport;\n        proxy_pass {BACKEND1}:{};\n        proxy_timeout 60s;\n    }}",
            s.listener, s.backend
        );
    }
    c += "}\n";
    c
}
