//! A connection paused and resumed (what a takeover does to it) loses,
//! duplicates and reorders nothing, whichever path forwards it before and after.
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::copy::CopyPath;
use super::path::{Carried, Control, DataPath, End, Outcome};
use super::splice::SplicePath;

async fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let outer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (inner, _) = listener.accept().await.unwrap();
    (outer, inner)
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[(i + seed as usize) % 4] ^ seed).collect()
}

/// Writes `data` (in small writes, so the stream is busy across pauses), then
/// half-closes; meanwhile hashes everything read until end-of-stream.
async fn exchange(stream: TcpStream, data: Vec<u8>) -> Vec<u8> {
    let (mut read, mut write) = stream.into_split();
    let send = async move {
        for chunk in data.chunks(7919) {
            write.write_all(chunk).await.unwrap();
        }
        write.shutdown().await.unwrap();
    };
    let receive = async move {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 65536];
        loop {
            let n = read.read(&mut buf).await.unwrap();
            if n == 0 {
                return hasher.finalize().to_vec();
            }
            hasher.update(&buf[..n]);
        }
    };
    tokio::join!(send, receive).1
}

/// Forwards with `paths` in turn, pausing each after `every`, the last to the end.
async fn forward_with_pauses(paths: Vec<Arc<dyn DataPath>>, up_bytes: usize, down_bytes: usize, every: Duration) -> usize {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (client, proxy_client) = pair(&listener).await;
    let (backend, proxy_backend) = pair(&listener).await;
    let (up, down) = (pattern(1, up_bytes), pattern(2, down_bytes));
    let (want_up, want_down) = (Sha256::digest(&up).to_vec(), Sha256::digest(&down).to_vec());
    let client_side = tokio::spawn(exchange(client, up));
    let backend_side = tokio::spawn(exchange(backend, down));

    let mut sockets = (proxy_client, proxy_backend);
    let mut carried = (Carried::default(), Carried::default());
    let mut pauses = 0;
    for (i, path) in paths.iter().enumerate() {
        let control = Control::default();
        let last = i + 1 == paths.len();
        let pause = control.pause.clone();
        if every.is_zero() && !last {
            pause.cancel();
        }
        let pauser = tokio::spawn(async move {
            if !last {
                tokio::time::sleep(every).await;
                pause.cancel();
            }
        });
        let outcome = path.forward(sockets.0, sockets.1, carried.0, carried.1, control).await.unwrap();
        pauser.abort();
        match outcome {
            Outcome::Paused(p) => {
                pauses += 1;
                sockets = (p.client, p.backend);
                carried = (p.up, p.down);
            }
            Outcome::Ended(t) => {
                assert_eq!(t.end, End::Closed);
                break;
            }
            Outcome::Detached(_) => panic!("{} has no kernel to detach a connection to", path.name()),
        }
    }
    let (got_down, got_up) = (client_side.await.unwrap(), backend_side.await.unwrap());
    assert_eq!(got_up, want_up, "client → backend bytes differ after {pauses} pauses");
    assert_eq!(got_down, want_down, "backend → client bytes differ after {pauses} pauses");
    pauses
}

fn alternating(n: usize) -> Vec<Arc<dyn DataPath>> {
    (0..n).map(|i| if i % 2 == 0 { Arc::new(SplicePath) as Arc<dyn DataPath> } else { Arc::new(CopyPath) }).collect()
}

#[tokio::test]
async fn a_busy_connection_paused_and_resumed_eight_times_arrives_intact_both_ways() {
    let pauses = forward_with_pauses(alternating(9), 48 << 20, 48 << 20, Duration::from_millis(15)).await;
    assert!(pauses >= 3, "the transfer ended before it could be paused often ({pauses})");
}

#[tokio::test]
async fn a_half_closed_direction_stays_closed_across_a_pause() {
    // Up is tiny and ends at once; down keeps flowing across the pauses.
    let pauses = forward_with_pauses(alternating(4), 10, 32 << 20, Duration::from_millis(20)).await;
    assert!(pauses >= 1);
}

#[tokio::test]
async fn a_connection_paused_before_it_starts_resumes_intact_on_another_path() {
    let pauses = forward_with_pauses(vec![Arc::new(SplicePath), Arc::new(CopyPath)], 1 << 20, 1 << 20, Duration::ZERO).await;
    assert_eq!(pauses, 1);
}
