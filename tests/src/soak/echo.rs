//! The soak's echo backend: a process of its own (`sockgate-soak echo`) in
//! each backend namespace, so its sockets do not count against the test
//! process's descriptors.
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use gateway_agent::limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::ECHO_PORT;
use crate::agent::{wait_for_port, Process};
use crate::netns::NetNs;

/// The echo backend, a process of its own in a backend's namespace (so its
/// sockets do not count against the test process's descriptors): every byte
/// back, FIN for FIN. Logs "echo: N accepted, M open" every second.
pub fn echo_main(listen: SocketAddr) -> Result<()> {
    let raised = limits::raise()?;
    eprintln!("echo: listening on {listen}, open files limit {}", raised.after.soft);
    let listener = {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::for_address(listen), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.bind(&listen.into())?;
        // The kernel caps this at net.core.somaxconn; the agent's connects are paced anyway.
        socket.listen(4096)?;
        socket.set_nonblocking(true)?;
        std::net::TcpListener::from(socket)
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = TcpListener::from_std(listener)?;
        let accepted = Arc::new(AtomicU64::new(0));
        let open = Arc::new(AtomicU64::new(0));
        let (a, o) = (accepted.clone(), open.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                eprintln!("echo: {} accepted, {} open", a.load(Relaxed), o.load(Relaxed));
            }
        });
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                // EMFILE and the like: wait for descriptors to come back.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            accepted.fetch_add(1, Relaxed);
            open.fetch_add(1, Relaxed);
            let open = open.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) => {
                            let _ = stream.shutdown().await;
                            break;
                        }
                        Ok(n) if stream.write_all(&buf[..n]).await.is_ok() => {}
                        _ => break,
                    }
                }
                open.fetch_sub(1, Relaxed);
            });
        }
    })
}

/// Starts `sockgate-soak echo` on the echo port of `ns` and waits until it listens.
pub(super) fn start(ns: &NetNs, name: &str, logs: &Path) -> Result<Process> {
    let mut command = ns.command(crate::workspace_bin("sockgate-soak")?);
    command.args(["echo", "--listen"]).arg(format!("0.0.0.0:{ECHO_PORT}"));
    let mut process = Process::spawn(name, command, logs)?;
    wait_for_port(ns, SocketAddr::from(([127, 0, 0, 1], ECHO_PORT)), Duration::from_secs(10))?;
    process.ensure_running()?;
    Ok(process)
}

/// The last "N accepted" an echo process logged.
pub(super) fn accepted(process: &Process) -> u64 {
    let logs = process.logs();
    logs.lines().rev().find_map(|l| l.strip_prefix("echo: ")?.split(" accepted").next()?.parse().ok()).unwrap_or(0)
}
