//! The backend host's programs, the same behind every contender: a bulk
//! server (sends its pattern, checksums what it receives; in the bench
//! process), an echo server (ping-pong, connection rate, idle connections; a
//! process of its own, `sockgate-bench --echo-server`, so that its sockets do
//! not count against the bench's descriptor limit), the handover-stall server
//! (`stall`, in the bench process: one clock with the client), `iperf3 -s`
//! (TCP and `-u`), a real `redis-server`, and the UDP echo server of the
//! datagram-rate workloads (`udp_echo`, a process of its own too).
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::rlimit;
use super::stall::{self, StallReport};
use super::testbed::{wait_listening, wait_udp_bound, BULK, ECHO, IPERF, REDIS, STALL, UDP_ECHO};
use crate::agent::Process;
use crate::netns::NetNs;
use crate::topology::BACKEND1;

/// What the bulk server saw of one connection.
#[derive(Debug)]
pub struct BulkReport {
    pub received: u64,
    pub crc: u32,
    pub error: Option<String>,
}

pub struct Backends {
    // Processes first, so they stop before their files go.
    _echo: Process,
    _udp_echo: Process,
    _iperf: Process,
    _redis: Process,
    /// The bulk server; dropping it closes its sockets.
    runtime: Option<tokio::runtime::Runtime>,
    pub bulk_reports: mpsc::Receiver<BulkReport>,
    /// What the handover-stall server saw of each connection.
    pub stall_reports: mpsc::Receiver<StallReport>,
    _files: tempfile::TempDir,
}

impl Drop for Backends {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

impl Backends {
    /// Starts everything on `host` and waits until it listens. `down` is what
    /// the bulk server sends on each connection.
    pub fn start(host: &NetNs, down: Arc<Vec<u8>>) -> Result<Backends> {
        let files = tempfile::tempdir()?;
        let mut iperf = host.command("iperf3");
        iperf.args(["-s", "-B", &BACKEND1.to_string(), "-p", &IPERF.backend.to_string()]);
        rlimit::as_inherited(&mut iperf);
        let iperf = Process::spawn("iperf3-server", iperf, files.path())?;
        let mut redis = host.command("redis-server");
        redis
            .args([
                "--bind",
                &BACKEND1.to_string(),
                "--port",
                &REDIS.backend.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ])
            .arg("--dir")
            .arg(files.path());
        rlimit::as_inherited(&mut redis);
        let redis = Process::spawn("redis-server", redis, files.path())?;
        let mut echo = host.command(crate::workspace_bin("sockgate-bench")?);
        echo.arg("--echo-server").arg(SocketAddr::new(BACKEND1.into(), ECHO.backend).to_string());
        rlimit::as_inherited(&mut echo);
        let echo = Process::spawn("echo-server", echo, files.path())?;
        let mut udp_echo = host.command(crate::workspace_bin("sockgate-bench")?);
        udp_echo.arg("--udp-echo-server").arg(SocketAddr::new(BACKEND1.into(), UDP_ECHO.backend).to_string());
        let udp_echo = Process::spawn("udp-echo-server", udp_echo, files.path())?;

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bulk-backend")
            .enable_all()
            .build()?;
        let bind = |port: u16| -> Result<std::net::TcpListener> {
            let l = host.enter(move || std::net::TcpListener::bind(SocketAddr::new(BACKEND1.into(), port)))??;
            l.set_nonblocking(true)?;
            Ok(l)
        };
        let bulk = bind(BULK.backend)?;
        let stall = bind(STALL.backend)?;
        let (tx, bulk_reports) = mpsc::channel();
        let (stall_tx, stall_reports) = mpsc::channel();
        runtime.block_on(async {
            let bulk = TcpListener::from_std(bulk)?;
            tokio::spawn(serve_bulk(bulk, down, tx));
            tokio::spawn(stall::serve(TcpListener::from_std(stall)?, stall_tx));
            anyhow::Ok(())
        })?;
        wait_listening(host, &[IPERF.backend, REDIS.backend, ECHO.backend], Duration::from_secs(10)).context("iperf3 -s, redis-server and the echo server")?;
        wait_udp_bound(host, &[UDP_ECHO.backend], Duration::from_secs(10)).context("the UDP echo server")?;
        Ok(Backends {
            _echo: echo,
            _udp_echo: udp_echo,
            _iperf: iperf,
            _redis: redis,
            runtime: Some(runtime),
            bulk_reports,
            stall_reports,
            _files: files,
        })
    }
}

async fn serve_bulk(listener: TcpListener, down: Arc<Vec<u8>>, reports: mpsc::Sender<BulkReport>) {
    while let Ok((stream, _)) = listener.accept().await {
        let (down, reports) = (down.clone(), reports.clone());
        tokio::spawn(async move {
            let report = match bulk_exchange(stream, down).await {
                Ok((received, crc)) => BulkReport { received, crc, error: None },
                Err(e) => BulkReport {
                    received: 0,
                    crc: 0,
                    error: Some(e.to_string()),
                },
            };
            let _ = reports.send(report);
        });
    }
}

/// Sends `down` then FIN, while checksumming everything received until the client's FIN.
async fn bulk_exchange(stream: TcpStream, down: Arc<Vec<u8>>) -> std::io::Result<(u64, u32)> {
    let (mut reader, mut writer) = stream.into_split();
    let sender = tokio::spawn(async move {
        for chunk in down.chunks(1 << 20) {
            writer.write_all(chunk).await?;
        }
        writer.shutdown().await
    });
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut received = 0u64;
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        received += n as u64;
    }
    sender.await.map_err(std::io::Error::other)??;
    Ok((received, hasher.finalize()))
}

/// `sockgate-bench --echo-server ADDR`: echoes every byte on every
/// connection until killed.
pub fn run_echo_server(addr: SocketAddr) -> Result<()> {
    // Named, so that a whole-machine profile tells its threads from the agent's (tokio's default name).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("echo-backend")
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        serve_echo(listener).await;
        anyhow::Ok(())
    })
}

async fn serve_echo(listener: TcpListener) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            // Small: 10,000 of these sit idle at once in the memory workload.
            let mut buf = [0u8; 512];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}
