//! The long soak: `sockgate-soak --seconds N --connections C` (what `cargo
//! xtask soak` runs). Prints the figures and exits non-zero if an invariant
//! failed (tests/src/soak.rs says which are checked). `sockgate-soak echo
//! --listen ADDR` is the soak's echo backend, run in each backend namespace.
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sockgate_tests::soak::{echo_main, run, Settings};

#[derive(Parser)]
#[command(about = "Hold many checksummed connections through gateway-agent while routes and endpoints change every second")]
struct Args {
    #[command(subcommand)]
    role: Option<Role>,
    /// How long the full load is held (bounded: at most one hour).
    #[arg(long, default_value = "180", value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    /// Connections held at once (fewer if the agent's descriptor limit cannot hold them; the report says so).
    #[arg(long, default_value = "10000", value_parser = clap::value_parser!(u64).range(10..=100_000))]
    connections: u64,
    /// Each connection sends one chunk this often, in milliseconds.
    #[arg(long, default_value = "1000", value_parser = clap::value_parser!(u64).range(10..=60_000))]
    chunk_interval_ms: u64,
    /// The agent's data path: auto (splice and the eBPF maps), splice or copy.
    #[arg(long, default_value = "auto", value_parser = ["auto", "splice", "copy"])]
    dataplane: String,
    /// Connections set up at once (connect, and the first echo back) during the ramp and reconnects.
    #[arg(long, default_value = "128", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    connect_concurrency: u64,
    /// Ask for --connections even beyond what the agent's descriptor limit holds (to watch it run out).
    #[arg(long)]
    beyond_fd_limit: bool,
}

#[derive(Subcommand)]
enum Role {
    /// The echo backend the soak starts in each backend namespace.
    Echo {
        #[arg(long)]
        listen: SocketAddr,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Role::Echo { listen }) = args.role {
        return match echo_main(listen) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("echo: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let settings = Settings {
        connections: args.connections as usize,
        hold: Duration::from_secs(args.seconds),
        chunk_interval: Duration::from_millis(args.chunk_interval_ms),
        dataplane: args.dataplane,
        cap_to_fd_limit: !args.beyond_fd_limit,
        connect_concurrency: args.connect_concurrency as usize,
        ..Settings::ci()
    };
    match run(&settings) {
        Ok(report) => {
            println!("{report}");
            let failed = report.verdict();
            if failed.is_empty() {
                println!("soak passed");
                ExitCode::SUCCESS
            } else {
                println!("soak FAILED:\n  {}", failed.join("\n  "));
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("sockgate-soak: {e:#}");
            ExitCode::FAILURE
        }
    }
}
