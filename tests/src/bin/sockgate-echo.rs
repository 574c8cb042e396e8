//! The echo backend: `sockgate-echo --listen 0.0.0.0:3000`, identity from the
//! same environment variables echo-basic reads (POD_NAME, NAMESPACE, SERVICE_NAME).
//! With `--tcp-echo ADDR` it also sends every byte it receives on ADDR back
//! (long checksummed transfers through a Gateway, cluster_upgrade.rs).
use std::net::{SocketAddr, TcpListener, TcpStream};

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
    /// Also echo raw bytes back on this address (a TCP echo, no HTTP).
    #[arg(long)]
    tcp_echo: Option<SocketAddr>,
}

/// Every connection's bytes back to it, until it half-closes; then FIN.
fn tcp_echo(listener: TcpListener) {
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let Ok(mut reader) = stream.try_clone() else { return };
            let mut writer: TcpStream = stream;
            if std::io::copy(&mut reader, &mut writer).is_ok() {
                let _ = writer.shutdown(std::net::Shutdown::Write);
            }
        });
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen)?;
    if let Some(addr) = args.tcp_echo {
        let echo = TcpListener::bind(addr)?;
        eprintln!("sockgate-echo: echoing bytes on {addr}");
        std::thread::spawn(move || tcp_echo(echo));
    }
    eprintln!("sockgate-echo: serving {} as pod {:?} of service {:?}", args.listen, args.pod, args.service);
    serve(listener, Identity { pod: args.pod, namespace: args.namespace, service: args.service });
    Ok(())
}
