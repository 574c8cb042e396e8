//! Start-up self-test of a data path: before `auto` trusts a path, it forwards
//! checksummed traffic both ways through it over loopback, with both sides
//! writing at once, and checks every byte and the half-close.
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::path::{Carried, Control, DataPath, End, Outcome};

/// Bytes each way; enough to cross many buffer and pipe boundaries.
const BYTES: usize = 4 << 20;

/// Ok(()) when `path` moved both directions intact and ended cleanly.
pub async fn verify(path: Arc<dyn DataPath>) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(20), run(path)).await.map_err(|_| anyhow::anyhow!("self-test timed out"))?
}

async fn run(path: Arc<dyn DataPath>) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // client ⇄ [proxy_client | path | proxy_backend] ⇄ backend
    let client = TcpStream::connect(addr).await?;
    let (proxy_client, _) = listener.accept().await?;
    let backend_side = TcpStream::connect(addr).await?;
    let (proxy_backend, _) = listener.accept().await?;
    let forwarding =
        tokio::spawn(async move { path.forward(proxy_client, proxy_backend, Carried::default(), Carried::default(), Control::default()).await });
    let up = pattern(0x5eed, BYTES);
    let down = pattern(0xfeed, BYTES);
    let (client_got, backend_got) = tokio::try_join!(exchange(client, up.clone()), exchange(backend_side, down.clone()))?;
    let transfer = match forwarding.await?? {
        Outcome::Ended(transfer) => transfer,
        Outcome::Detached(rest) => rest.await,
        Outcome::Paused(_) => anyhow::bail!("the path paused although nobody asked it to"),
    };
    anyhow::ensure!(backend_got == Sha256::digest(&up).to_vec(), "client → backend bytes differ");
    anyhow::ensure!(client_got == Sha256::digest(&down).to_vec(), "backend → client bytes differ");
    anyhow::ensure!(transfer.end == End::Closed, "ended with {:?}, not a clean close", transfer.end);
    Ok(())
}

async fn exchange(stream: TcpStream, data: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    let (mut read, mut write) = stream.into_split();
    let send = async move {
        write.write_all(&data).await?;
        write.shutdown().await
    };
    let receive = async move {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = read.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(hasher.finalize().to_vec());
            }
            hasher.update(&buf[..n]);
        }
    };
    let ((), digest) = tokio::try_join!(send, receive)?;
    Ok(digest)
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::copy::CopyPath;
    use crate::dataplane::splice::SplicePath;
    use crate::dataplane::path::{Forwarding, Transfer};

    #[tokio::test]
    async fn the_copy_and_splice_paths_pass_the_self_test() {
        verify(Arc::new(CopyPath)).await.unwrap();
        verify(Arc::new(SplicePath)).await.unwrap();
    }

    /// A path that flips one bit in the middle of the stream must fail.
    struct Corrupting;
    impl DataPath for Corrupting {
        fn name(&self) -> &'static str {
            "corrupting"
        }
        fn code(&self) -> u32 {
            0
        }
        fn forward<'a>(&'a self, mut client: TcpStream, mut backend: TcpStream, _: Carried, _: Carried, _: Control) -> Forwarding<'a> {
            Box::pin(async move {
                let (mut cr, mut cw) = client.split();
                let (mut br, mut bw) = backend.split();
                let up = async {
                    let mut buf = vec![0u8; 1 << 16];
                    let mut total = 0u64;
                    loop {
                        let n = cr.read(&mut buf).await?;
                        if n == 0 {
                            bw.shutdown().await?;
                            return Ok::<_, std::io::Error>(total);
                        }
                        if total == 0 {
                            buf[0] ^= 1;
                        }
                        bw.write_all(&buf[..n]).await?;
                        total += n as u64;
                    }
                };
                let down = async { tokio::io::copy(&mut br, &mut cw).await };
                let (u, d) = tokio::try_join!(up, down)?;
                cw.shutdown().await?;
                Ok(Outcome::Ended(Transfer { client_to_backend: u, backend_to_client: d, end: End::Closed }))
            })
        }
    }

    #[tokio::test]
    async fn a_path_that_corrupts_one_bit_fails_the_self_test() {
        let err = verify(Arc::new(Corrupting)).await.unwrap_err();
        assert!(err.to_string().contains("client → backend bytes differ"), "{err}");
    }
}
