//! Command-line interface.
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::dataplane::kernel::DEFAULT_PIN_DIR;
use crate::dataplane::DataplaneMode;
use crate::model::DEFAULT_CONTROLLER_NAME;

#[derive(Parser, Debug)]
#[command(name = "gateway-agent", version, about = "sockgate: Gateway API TCPRoute and UDPRoute on an eBPF-accelerated L4 data plane")]
pub struct Cli {
    /// Log filter (tracing syntax, e.g. info or gateway_agent=debug); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info", env = "SOCKGATE_LOG", value_parser = parse_log_filter)]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the listeners of sockgate's Gateways on this node.
    Run(RunArgs),
    /// Load and translate a manifests directory, print the result, serve nothing.
    #[command(after_help = CHECK_EXIT_CODES)]
    Check(CheckArgs),
    /// Print, as YAML, the status sockgate computes for every object it owns in --manifests DIR.
    Status(CheckArgs),
    /// Print the pinned eBPF maps in words.
    Inspect(InspectArgs),
    /// Print the CustomResourceDefinitions of sockgate's policy kinds (ListenerPolicy, BackendPolicy).
    Crds(CrdsArgs),
}

#[derive(Args, Debug, Clone)]
pub struct CrdsArgs {
    /// Print the policy reference (Markdown, every field from the CRDs' schemas) instead.
    #[arg(long)]
    pub reference: bool,
}

#[derive(Args, Debug, Clone)]
pub struct SourceArgs {
    /// Standalone mode: a directory of Gateway API, Service and EndpointSlice manifests.
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    /// The GatewayClass controllerName this agent serves.
    #[arg(long, default_value = DEFAULT_CONTROLLER_NAME)]
    pub controller_name: String,
    /// An address of this node where the Gateways are reachable (repeatable);
    /// reported in each Gateway's status.addresses (the chart passes status.hostIP).
    #[arg(long = "gateway-address", value_name = "IP", env = "NODE_IP", value_delimiter = ',')]
    pub gateway_addresses: Vec<IpAddr>,
    /// Standalone mode: where the time each object was first seen is kept, so that
    /// the oldest route or policy still wins after a restart or takeover (run
    /// writes it, check and status read it). Default: DIR/.sockgate-first-seen.json.
    #[arg(long, value_name = "FILE")]
    pub first_seen_file: Option<PathBuf>,
}

impl SourceArgs {
    /// The first-seen file of standalone mode (None in Kubernetes mode: the API server stamps objects).
    pub fn first_seen_file(&self) -> Option<PathBuf> {
        self.first_seen_file.clone().or_else(|| self.manifests.as_deref().map(crate::sources::creation::default_file))
    }
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Which data path moves the bytes after connection set-up.
    #[arg(long, value_enum, default_value = "auto")]
    pub dataplane: DataplaneMode,
    /// Address the listener sockets bind to (`::` for dual stack).
    #[arg(long, default_value = "0.0.0.0")]
    pub listen_address: IpAddr,
    /// Deadline for connecting to a backend endpoint, e.g. 5s or 500ms (more than zero).
    #[arg(long, default_value = "5s", value_parser = parse_positive_duration)]
    pub connect_timeout: Duration,
    /// How often the manifests directory is checked for changes, e.g. 1s or 250ms (more than zero).
    #[arg(long, default_value = "1s", value_parser = parse_positive_duration)]
    pub reload_interval: Duration,
    /// bpffs directory where the eBPF maps are pinned (on a bpffs mount: mount -t bpf bpf /sys/fs/bpf).
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    pub bpf_pin_dir: PathBuf,
    /// cgroup v2 directory the sock_ops program attaches to (default: the agent's own).
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
    /// Serve /healthz, /readyz and /metrics here (e.g. 0.0.0.0:9090).
    #[arg(long, env = "SOCKGATE_HEALTH_ADDRESS")]
    pub health_address: Option<std::net::SocketAddr>,
    /// Kubernetes mode: this node's name (the chart passes spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Kubernetes mode: namespace of the leader-election and node Leases.
    #[arg(long, env = "POD_NAMESPACE", default_value = "sockgate-system")]
    pub lease_namespace: String,
    /// Interfaces where an XDP program drops the packets of clients a
    /// ListenerPolicy denies, before the TCP stack sees them (e.g. eth0;
    /// repeat or comma-separate). Without any, clientCIDRs are enforced at accept.
    #[arg(long = "xdp-interface", env = "SOCKGATE_XDP_INTERFACES", value_delimiter = ',')]
    pub xdp_interfaces: Vec<String>,
    /// Interfaces the kernel TCP splice (`--dataplane ebpf`) attaches to, on
    /// ingress: where clients' and backends' segments arrive (repeat or
    /// comma-separate). Default: every interface that is up, but loopback.
    #[arg(long = "splice-interface", env = "SOCKGATE_SPLICE_INTERFACES", value_delimiter = ',')]
    pub splice_interfaces: Vec<String>,
    /// `--dataplane ebpf`: how long a connection is forwarded on splice(2)
    /// before it is handed to the kernel (0s: at once). Most short
    /// connections end first and never pay for a handover.
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    pub kernel_splice_after: Duration,
    /// `--dataplane ebpf`: UDP flows the kernel NAT's table holds, all UDP
    /// listeners together (an LRU table: beyond it, the least recently used
    /// flows make room). About 100 bytes of kernel memory each. An agent that
    /// carries on an earlier agent's table of another size starts a new one.
    #[arg(long, default_value_t = gateway_common::UDP_NAT_MAX_FLOWS / 2, value_parser = clap::value_parser!(u32).range(64..=4_194_304))]
    pub udp_nat_max_flows: u32,
    /// Unix socket where a running agent hands its sockets and connections to a
    /// starting one (takeover on upgrade); a starting agent asks here first.
    #[arg(long, default_value = crate::takeover::DEFAULT_SOCKET)]
    pub takeover_socket: PathBuf,
    /// On SIGTERM: how long established connections may take to finish after
    /// the listeners close, before the rest are reset (0s resets them at once).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// After handing everything to a new agent: exit, or wait for a signal
    /// (in a DaemonSet, so the kubelet does not restart the old container).
    #[arg(long, value_enum, default_value = "exit")]
    pub after_handover: AfterHandover,
    /// Where the UDP relay's counters and flow table are written every tick, for `inspect`.
    #[arg(long, default_value = DEFAULT_UDP_STATE_FILE)]
    pub udp_state_file: PathBuf,
    /// Where the backends' active health checks are written every tick, for `inspect`.
    #[arg(long, default_value = DEFAULT_BACKEND_HEALTH_FILE)]
    pub backend_health_file: PathBuf,
    /// Where what each listener port serves (Gateway, listener, route, backendRefs) is written on every change, for `inspect`.
    #[arg(long, default_value = DEFAULT_LISTENERS_FILE)]
    pub listeners_file: PathBuf,
}

pub const DEFAULT_BACKEND_HEALTH_FILE: &str = "/run/sockgate/backend-health.json";
pub const DEFAULT_LISTENERS_FILE: &str = "/run/sockgate/listeners.json";

pub const DEFAULT_UDP_STATE_FILE: &str = "/run/sockgate/udp-flows.json";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AfterHandover {
    /// Exit once the new agent took everything.
    Exit,
    /// Serve nothing and wait for SIGTERM (in a DaemonSet container).
    WaitForSignal,
}

#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Exit 0 even when an object sockgate owns has a False Accepted, ResolvedRefs or Programmed condition (check only).
    #[arg(long)]
    pub allow_false_conditions: bool,
}

/// `check`'s exit codes, for scripts and CI pipelines.
pub const CHECK_EXIT_CODES: &str = "Exit codes:
  0  the manifests load and every object sockgate owns is Accepted, ResolvedRefs and Programmed
  1  the manifests are rejected (a YAML or schema error), or the directory holds no manifests
  2  the command line is wrong
  3  an object sockgate owns has a False Accepted, ResolvedRefs or Programmed condition (see --allow-false-conditions)";

#[derive(Args, Debug, Clone)]
pub struct InspectArgs {
    /// bpffs directory where the running agent pinned its eBPF maps (its --bpf-pin-dir).
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    pub bpf_pin_dir: PathBuf,
    /// text for people, json for scripts.
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// The UDP relay's state file (what `run --udp-state-file` writes).
    #[arg(long, default_value = DEFAULT_UDP_STATE_FILE)]
    pub udp_state_file: PathBuf,
    /// The backends' health check file (what `run --backend-health-file` writes).
    #[arg(long, default_value = DEFAULT_BACKEND_HEALTH_FILE)]
    pub backend_health_file: PathBuf,
    /// What each listener port serves, by name (what `run --listeners-file` writes).
    #[arg(long, default_value = DEFAULT_LISTENERS_FILE)]
    pub listeners_file: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Lines in words.
    Text,
    /// One JSON document.
    Json,
}

/// "5s", "500ms", "2m", or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::duration::parse(text)
}

/// A duration that must be more than zero (a zero interval or deadline has no meaning).
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err(format!("{text:?} is zero; give a duration of more than zero, e.g. 1s or 250ms")),
        d => Ok(d),
    }
}

/// A tracing filter that parses (an invalid one used to be ignored in silence).
pub fn parse_log_filter(text: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(text).map(|_| text.to_string()).map_err(|e| format!("{text:?} is not a log filter ({e}); e.g. info, debug or gateway_agent=debug"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_reject_nonsense() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn a_zero_reload_interval_or_connect_timeout_is_a_command_line_error_not_a_panic() {
        use clap::Parser;
        for flag in ["--reload-interval", "--connect-timeout"] {
            let e = Cli::try_parse_from(["gateway-agent", "run", flag, "0s"]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{e}");
            assert!(e.to_string().contains("is zero; give a duration of more than zero"), "{e}");
        }
        assert!(Cli::try_parse_from(["gateway-agent", "run", "--drain-timeout", "0s"]).is_ok(), "no drain at all is a choice");
        let e = Cli::try_parse_from(["gateway-agent", "check", "--log-level", "gateway_agent=loud"]).unwrap_err();
        assert!(e.to_string().contains("is not a log filter"), "{e}");
    }

    #[test]
    fn every_flag_of_every_command_has_help_text() {
        use clap::CommandFactory;
        let cli = Cli::command();
        for command in cli.get_subcommands() {
            for arg in command.get_arguments() {
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                assert!(!help.is_empty(), "{} --{} has no help", command.get_name(), arg.get_id());
                assert!(!help.contains("see above"), "{} --{}: {help}", command.get_name(), arg.get_id());
                let is_switch = matches!(arg.get_action(), clap::ArgAction::SetTrue | clap::ArgAction::SetFalse | clap::ArgAction::Help | clap::ArgAction::Version);
                for value in arg.get_possible_values().into_iter().filter(|_| !is_switch) {
                    assert!(value.get_help().is_some(), "{} --{} {} has no help", command.get_name(), arg.get_id(), value.get_name());
                }
            }
        }
    }
}
