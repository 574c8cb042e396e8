//! gateway-agent: sockgate's node agent.
use anyhow::Result;
use clap::Parser;

use gateway_agent::cli::{Cli, Command};

fn main() -> Result<std::process::ExitCode> {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run(_)) {
        // A printing command piped into `head` ends quietly when the reader
        // goes, as Unix tools do, instead of panicking in println!. (The agent
        // itself keeps SIGPIPE ignored: a peer's closed socket is an error to
        // handle, not a reason to die.)
        // SAFETY: restoring a signal's default disposition before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Run(args) => {
            // Before anything opens a descriptor: one connection holds six.
            gateway_agent::limits::raise_and_log();
            gateway_agent::memory::limit_arenas();
            tokio::runtime::Runtime::new()?.block_on(gateway_agent::run::run(args))?
        }
        Command::Check(args) => {
            if gateway_agent::check::check(&args)? == gateway_agent::check::Verdict::FalseConditions {
                return Ok(std::process::ExitCode::from(3));
            }
        }
        Command::Status(args) => gateway_agent::check::status(&args)?,
        Command::Inspect(args) => gateway_agent::inspect::inspect(&args)?,
        Command::Crds(args) if args.reference => print!("{}", gateway_agent::resources::policies::reference_markdown()),
        Command::Crds(_) => print!("{}", gateway_agent::resources::policies::crds_yaml()),
    }
    Ok(std::process::ExitCode::SUCCESS)
}
