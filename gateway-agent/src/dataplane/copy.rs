//! The plain userspace copy path: read from one socket, write to the other.
//! Always available, and the reference every faster path is checked against.
use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::path::{finish, until_done, DataPath, Forwarding};

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

    fn forward<'a>(&'a self, mut client: TcpStream, mut backend: TcpStream, stop: CancellationToken) -> Forwarding<'a> {
        Box::pin(async move {
            let mut up = 0u64;
            let mut down = 0u64;
            let end = {
                let (mut client_read, mut client_write) = client.split();
                let (mut backend_read, mut backend_write) = backend.split();
                let both = async {
                    tokio::try_join!(
                        pump(&mut client_read, &mut backend_write, &mut up),
                        pump(&mut backend_read, &mut client_write, &mut down),
                    )
                };
                until_done(both, &stop).await
            };
            Ok(finish(client, backend, end, up, down))
        })
    }
}

/// Copies `from` to `to` until end-of-stream, then half-closes `to`.
async fn pump<R, W>(from: &mut R, to: &mut W, moved: &mut u64) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        *moved += n as u64;
    }
}
