//! Checksummed traffic: every data-path test checks content, not just success.
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};

use sha2::{Digest, Sha256};

/// `len` pseudo-random bytes from `seed` (xorshift64*): cheap, reproducible,
/// and no run of it repeats, so a replayed or skipped chunk changes the digest.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn digest(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// What one side received: how many bytes and their SHA-256.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    pub len: u64,
    pub sha256: [u8; 32],
}

impl Received {
    pub fn of(data: &[u8]) -> Received {
        Received { len: data.len() as u64, sha256: digest(data) }
    }
}

/// Writes all of `data` in uneven chunks (to cross buffer boundaries), then
/// half-closes the write side.
pub fn send_then_fin(stream: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    let mut offset = 0;
    let mut chunk = 1;
    while offset < data.len() {
        let end = (offset + chunk).min(data.len());
        stream.write_all(&data[offset..end])?;
        offset = end;
        chunk = (chunk * 7 + 13) % (256 * 1024) + 1;
    }
    stream.shutdown(Shutdown::Write)
}

/// Reads until end-of-stream, hashing as it goes.
pub fn receive_to_eof(stream: &mut TcpStream) -> std::io::Result<Received> {
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        // A signal to this process (a child exiting, under tokio's SIGCHLD
        // handler) interrupts a read with a timeout set: not an end of stream.
        let n = match stream.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => other?,
        };
        if n == 0 {
            return Ok(Received { len, sha256: hasher.finalize().into() });
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
}

/// Sends `data` (then FIN) and receives to end-of-stream at the same time.
pub fn exchange(stream: TcpStream, data: Vec<u8>) -> std::io::Result<Received> {
    let mut writer = stream.try_clone()?;
    let sender = std::thread::spawn(move || send_then_fin(&mut writer, &data));
    let mut reader = stream;
    let received = receive_to_eof(&mut reader);
    sender.join().expect("sender thread")?;
    received
}
