//! A gateway node under test: the test hosts, a manifests directory, and
//! gateway-agent running on the node with it. Everything goes on drop.
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::agent::{wait_for_log, wait_for_port, Process};
use crate::netns::NetNs;
use crate::topology::{Topology, GATEWAY};
use crate::workspace_bin;

pub struct GatewayNode {
    // Declared first so it stops before the namespaces go.
    pub agent: Process,
    pub hosts: Topology,
    pub manifests: tempfile::TempDir,
    /// Agent logs and the agent's takeover socket (each node its own).
    pub logs: tempfile::TempDir,
    /// The agent's command line after `run`, for a successor started alike.
    run_args: Vec<std::ffi::OsString>,
    kubeconfig: Option<std::path::PathBuf>,
    agents_started: usize,
    /// A bpffs directory of this node's own, removed at the end, when the
    /// test gave none: agents of tests running at once must not share pins.
    own_pin_dir: Option<std::path::PathBuf>,
}

impl Drop for GatewayNode {
    fn drop(&mut self) {
        if let Some(dir) = &self.own_pin_dir {
            self.agent.stop(Duration::from_secs(3));
            // The agent removes its own pins as it goes; a removal racing it
            // fails on a file just gone, so try again until the directory is.
            for _ in 0..20 {
                if std::fs::remove_dir_all(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl GatewayNode {
    /// Writes `files` (name, YAML) into a fresh manifests directory, starts the
    /// agent on the node with `args` and waits until the first configuration is applied.
    pub fn start(files: &[(&str, String)], args: &[&str]) -> Result<GatewayNode> {
        Self::start_with(files, args, |_| {})
    }

    /// As `start`, with a last word on the agent's command (e.g. a cgroup to join).
    pub fn start_with(files: &[(&str, String)], args: &[&str], configure: impl FnOnce(&mut std::process::Command)) -> Result<GatewayNode> {
        Self::start_on(1, files, args, configure)
    }

    /// As `start_with`, on the subnets of [`Topology::create_on`]`(base)`
    /// (`connect` and `wait_for_port` assume base 1).
    pub fn start_on(base: u8, files: &[(&str, String)], args: &[&str], configure: impl FnOnce(&mut std::process::Command)) -> Result<GatewayNode> {
        let hosts = Topology::create_on(base)?;
        let manifests = tempfile::tempdir()?;
        for (name, yaml) in files {
            std::fs::write(manifests.path().join(name), yaml)?;
        }
        let mut run_args: Vec<std::ffi::OsString> = vec!["--reload-interval".into(), "100ms".into(), "--manifests".into(), manifests.path().into()];
        run_args.extend(args.iter().map(Into::into));
        let own_pin_dir = (!args.iter().any(|a| a.starts_with("--bpf-pin-dir"))).then(|| std::path::PathBuf::from(format!("/sys/fs/bpf/{}", crate::netns::unique_name("sockgate-test"))));
        if let Some(dir) = &own_pin_dir {
            run_args.extend(["--bpf-pin-dir".into(), dir.into()]);
        }
        let mut node = Self::launch(hosts, run_args, manifests, None, configure, Duration::from_secs(20), "configuration applied")?;
        node.own_pin_dir = own_pin_dir;
        Ok(node)
    }

    /// As `start`, for manifests the agent must refuse: waits until it logs `needle` instead.
    pub fn start_refusing(files: &[(&str, String)], args: &[&str], needle: &str) -> Result<GatewayNode> {
        let hosts = Topology::create()?;
        let manifests = tempfile::tempdir()?;
        for (name, yaml) in files {
            std::fs::write(manifests.path().join(name), yaml)?;
        }
        let mut run_args: Vec<std::ffi::OsString> = vec!["--reload-interval".into(), "100ms".into(), "--manifests".into(), manifests.path().into()];
        run_args.extend(args.iter().map(Into::into));
        Self::launch(hosts, run_args, manifests, None, |_| {}, Duration::from_secs(20), needle)
    }

    /// Kubernetes mode: the agent on the node reads the test API server
    /// (`cargo xtask cluster up`), bridged onto the node's loopback.
    pub fn start_in_cluster(args: &[&str]) -> Result<GatewayNode> {
        let hosts = Topology::create()?;
        crate::bridge::bridge_port(&hosts.node, crate::cluster::api_port()?)?;
        let run_args = args.iter().map(Into::into).collect();
        Self::launch(hosts, run_args, tempfile::tempdir()?, Some(crate::cluster::kubeconfig()), |_| {}, Duration::from_secs(30), "configuration applied")
    }

    /// Starts the agent and waits until it applied its first configuration.
    fn launch(
        hosts: Topology,
        run_args: Vec<std::ffi::OsString>,
        manifests: tempfile::TempDir,
        kubeconfig: Option<std::path::PathBuf>,
        configure: impl FnOnce(&mut std::process::Command),
        timeout: Duration,
        ready: &str,
    ) -> Result<GatewayNode> {
        let logs = tempfile::tempdir()?;
        let mut command = agent_command(&hosts, logs.path(), &run_args, kubeconfig.as_deref())?;
        configure(&mut command);
        let mut agent = Process::spawn("gateway-agent", command, logs.path())?;
        wait_for_log(&mut agent, ready, timeout)?;
        Ok(GatewayNode { agent, hosts, manifests, logs, run_args, kubeconfig, agents_started: 1, own_pin_dir: None })
    }

    /// Starts a second agent on the node, as an upgrade would (same command
    /// line and takeover socket, plus `extra`). It takes over from the running
    /// one; returns it without waiting (see `agent::wait_for_log`).
    pub fn start_successor(&mut self, extra: &[&str], configure: impl FnOnce(&mut std::process::Command)) -> Result<Process> {
        let mut args = self.run_args.clone();
        args.extend(extra.iter().map(Into::into));
        let mut command = agent_command(&self.hosts, self.logs.path(), &args, self.kubeconfig.as_deref())?;
        configure(&mut command);
        self.agents_started += 1;
        Process::spawn(&format!("gateway-agent-{}", self.agents_started), command, self.logs.path())
    }

    /// Replaces a manifest file atomically (write aside, rename), as editors and ConfigMaps do.
    pub fn write(&self, name: &str, yaml: &str) -> Result<()> {
        let aside = self.manifests.path().join(format!(".{name}.tmp"));
        std::fs::write(&aside, yaml)?;
        std::fs::rename(&aside, self.manifests.path().join(name))?;
        Ok(())
    }

    pub fn remove(&self, name: &str) -> Result<()> {
        Ok(std::fs::remove_file(self.manifests.path().join(name))?)
    }

    /// Connects from the client host to the gateway's `port`.
    pub fn connect(&self, port: u16) -> Result<TcpStream> {
        let addr = SocketAddr::new(GATEWAY.into(), port);
        let stream = self.hosts.client.enter(move || TcpStream::connect_timeout(&addr, Duration::from_secs(5)))??;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_write_timeout(Some(Duration::from_secs(30)))?;
        Ok(stream)
    }

    /// A connection to `port` whose receive buffer is fixed at `bytes` before
    /// the handshake: a locked buffer clamps the window, so the client
    /// advertises a small window scale whatever the host's sysctls say.
    pub fn connect_with_receive_buffer(&self, port: u16, bytes: usize) -> Result<TcpStream> {
        use socket2::{Domain, Socket, Type};
        let addr = SocketAddr::new(GATEWAY.into(), port);
        let stream: TcpStream = self.hosts.client.enter(move || -> std::io::Result<TcpStream> {
            let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
            socket.set_recv_buffer_size(bytes)?;
            socket.connect_timeout(&addr.into(), Duration::from_secs(5))?;
            Ok(socket.into())
        })??;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_write_timeout(Some(Duration::from_secs(30)))?;
        Ok(stream)
    }

    /// How a new connection to `port` ends when the gateway refuses to serve it.
    /// The agent accepts, then resets: the client sees the reset either on its
    /// first read or, if the RST wins the race, already as the connect's result.
    pub fn refusal(&self, port: u16) -> std::io::ErrorKind {
        use std::io::Read;
        let mut stream = match self.connect(port) {
            Ok(s) => s,
            Err(e) => return e.downcast::<std::io::Error>().map(|e| e.kind()).unwrap_or(std::io::ErrorKind::Other),
        };
        let mut buf = [0u8; 1];
        match stream.read(&mut buf) {
            Ok(0) => std::io::ErrorKind::UnexpectedEof,
            Ok(_) => std::io::ErrorKind::InvalidData,
            Err(e) => e.kind(),
        }
    }

    pub fn wait_for_port(&self, port: u16) -> Result<()> {
        wait_for_port(&self.hosts.client, SocketAddr::new(GATEWAY.into(), port), Duration::from_secs(10))
            .with_context(|| format!("agent log:\n{}", self.agent.logs()))
    }

    /// Waits for the agent to log `needle` (after a reload, say).
    pub fn wait_for_log(&mut self, needle: &str) -> Result<()> {
        wait_for_log(&mut self.agent, needle, Duration::from_secs(10))
    }

    /// `GET path` from inside the node, of the agent's health endpoint at
    /// `address` (its `--health-address`): the whole HTTP response.
    pub fn health_get(&self, address: &str, path: &str) -> Result<String> {
        let (address, request) = (address.to_string(), format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
        let response = self.hosts.node.enter(move || {
            let mut s = TcpStream::connect(address.as_str())?;
            std::io::Write::write_all(&mut s, request.as_bytes())?;
            let mut response = String::new();
            std::io::Read::read_to_string(&mut s, &mut response)?;
            Ok::<_, std::io::Error>(response)
        })??;
        Ok(response)
    }

    /// How many times the agent logged `needle` so far.
    pub fn log_count(&self, needle: &str) -> usize {
        self.agent.logs().matches(needle).count()
    }
}

/// gateway-agent on the node, logging at debug level (tests read the log),
/// with its takeover socket and UDP relay state file (`udp-flows.json`) in
/// `state` so agents of different tests never meet.
fn agent_command(hosts: &Topology, state: &std::path::Path, run_args: &[std::ffi::OsString], kubeconfig: Option<&std::path::Path>) -> Result<std::process::Command> {
    let mut command = hosts.node.command(workspace_bin("gateway-agent")?);
    command.env("SOCKGATE_LOG", "info,gateway_agent=debug");
    command.arg("run").arg("--takeover-socket").arg(state.join("takeover.sock")).arg("--udp-state-file").arg(state.join("udp-flows.json")).arg("--backend-health-file").arg(state.join("backend-health.json")).arg("--listeners-file").arg(state.join("listeners.json")).args(run_args);
    if let Some(kubeconfig) = kubeconfig {
        command.env("KUBECONFIG", kubeconfig);
    }
    Ok(command)
}

/// A TCP server on `port` of host `ns`: each accepted connection is given to
/// `handler` on its own thread, and what the handler returns arrives on the receiver.
pub fn serve<T: Send + 'static>(
    ns: &NetNs,
    port: u16,
    handler: impl Fn(TcpStream) -> T + Send + Sync + Clone + 'static,
) -> Result<mpsc::Receiver<T>> {
    serve_on(ns, SocketAddr::from(([0, 0, 0, 0], port)), handler)
}

/// As [`serve`], listening on `addr` (e.g. `[::]:7000` for IPv6 clients).
pub fn serve_on<T: Send + 'static>(
    ns: &NetNs,
    addr: SocketAddr,
    handler: impl Fn(TcpStream) -> T + Send + Sync + Clone + 'static,
) -> Result<mpsc::Receiver<T>> {
    let listener = ns.enter(move || TcpListener::bind(addr))??;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
            let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
            let (tx, handler) = (tx.clone(), handler.clone());
            std::thread::spawn(move || {
                let _ = tx.send(handler(stream));
            });
        }
    });
    Ok(rx)
}
