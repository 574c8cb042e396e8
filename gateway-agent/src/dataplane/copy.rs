//! The plain userspace copy path: read from one socket, write to the other.
//! Always available, and the reference every faster path is checked against.
use std::io;

use tokio::net::TcpStream;

use super::path::{conclude, deliver, deliver_pending, pass_fin, readable_or_paused, until_done, Carried, Control, DataPath, Flow, Forwarding};

const BUFFER: usize = 64 * 1024;

#[derive(Debug, Default)]
pub struct CopyPath;

impl DataPath for CopyPath {
    fn name(&self) -> &'static str {
        "copy"
    }

    fn code(&self) -> u32 {
        gateway_common::PATH_COPY
    }

    fn forward<'a>(&'a self, client: TcpStream, backend: TcpStream, up: Carried, down: Carried, control: Control) -> Forwarding<'a> {
        Box::pin(async move {
            let (mut up, mut down) = (Flow::from(up), Flow::from(down));
            let end = {
                let both = async {
                    tokio::try_join!(pump(&client, &backend, &mut up, &control), pump(&backend, &client, &mut down, &control))
                };
                until_done(both, &control).await
            };
            Ok(conclude(client, backend, end, up, down))
        })
    }
}

/// Copies `from` to `to` until end-of-stream (then half-closes `to`) or until
/// `pause` fires; bytes read and not yet written are left in `flow.pending`.
async fn pump(from: &TcpStream, to: &TcpStream, flow: &mut Flow, control: &Control) -> io::Result<()> {
    if flow.done || !deliver_pending(to, flow, control).await? {
        return Ok(());
    }
    let mut buf = vec![0u8; BUFFER];
    loop {
        if !readable_or_paused(from, &control.pause).await? {
            return Ok(());
        }
        let n = match from.try_read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return pass_fin(to, flow);
        }
        let sent = deliver(to, &buf[..n], control).await?;
        flow.moved += sent as u64;
        if sent < n {
            flow.pending = buf[sent..n].to_vec();
            return Ok(());
        }
    }
}
