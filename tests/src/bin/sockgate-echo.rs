//! The echo backend: `sockgate-echo --listen 0.0.0.0:3000`, identity from the
//! same environment variables echo-basic reads (POD_NAME, NAMESPACE, SERVICE_NAME).
use std::net::{SocketAddr, TcpListener};

use clap::Parser;
use sockgate_tests::echo::{serve, Identity};

#[derive(Parser)]
#[command(about = "HTTP echo backend answering with JSON that names the pod and service")]
struct Args {
    #[arg(long, default_value = "0.0.0.0:3000")]
    listen: SocketAddr,
    #[arg(long, env = "POD_NAME", default_value = "")]
    pod: String,
    #[arg(long, env = "NAMESPACE", default_value = "default")]
    namespace: String,
    #[arg(long, env = "SERVICE_NAME", default_value = "")]
    service: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen)?;
    eprintln!("sockgate-echo: serving {} as pod {:?} of service {:?}", args.listen, args.pod, args.service);
    serve(listener, Identity { pod: args.pod, namespace: args.namespace, service: args.service });
    Ok(())
}
