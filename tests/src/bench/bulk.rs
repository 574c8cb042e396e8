//! The checksummed bulk transfer: N bytes each way at once through one
//! connection, CRC-32 checked on both sides (a mismatch is a failure, not a
//! number), and the whole machine's CPU time it took.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::procfs::CpuTimes;
use crate::integrity::pattern;
use crate::netns::NetNs;

/// What each side sends, made once for the whole run, and its checksum.
pub struct Patterns {
    pub up: Arc<Vec<u8>>,
    pub down: Arc<Vec<u8>>,
    pub up_crc: u32,
    pub down_crc: u32,
}

impl Patterns {
    pub fn new(bytes: usize) -> Patterns {
        let (up, down) = (pattern(1, bytes), pattern(2, bytes));
        Patterns {
            up_crc: crc32fast::hash(&up),
            down_crc: crc32fast::hash(&down),
            up: Arc::new(up),
            down: Arc::new(down),
        }
    }

    pub fn bytes(&self) -> usize {
        self.up.len()
    }
}

pub struct Bulk {
    /// GiB per second, per direction.
    pub gib_per_second: f64,
    /// Whole-machine CPU seconds per GiB moved, both directions counted.
    pub cpu_per_gib: f64,
}

/// One transfer from `client` to `target`; the backend's report arrives on `reports`.
pub fn transfer(client: &NetNs, target: SocketAddr, patterns: &Patterns, reports: &std::sync::mpsc::Receiver<super::backends::BulkReport>) -> Result<Bulk> {
    // A report left over from an earlier, failed transfer must not be taken for this one's.
    while reports.try_recv().is_ok() {}
    let stream = client.enter(move || TcpStream::connect_timeout(&target, Duration::from_secs(5)))??;
    let cpu_before = CpuTimes::now()?;
    let started = Instant::now();
    let (received, got) = exchange(stream, patterns.up.clone()).context("client side of the transfer")?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = CpuTimes::now()?.since(&cpu_before).busy;
    if received != patterns.bytes() as u64 || got != patterns.down_crc {
        bail!(
            "backend → client bytes differ ({received} bytes, CRC-32 {got:08x}; expected {} bytes, {:08x})",
            patterns.bytes(),
            patterns.down_crc
        );
    }
    let report = reports
        .recv_timeout(Duration::from_secs(60))
        .context("no report from the bulk backend within 60 s")?;
    if let Some(e) = report.error {
        bail!("backend side of the transfer: {e}");
    }
    if report.received != patterns.bytes() as u64 || report.crc != patterns.up_crc {
        bail!(
            "client → backend bytes differ ({} bytes, CRC-32 {:08x}; expected {} bytes, {:08x})",
            report.received,
            report.crc,
            patterns.bytes(),
            patterns.up_crc
        );
    }
    let gib = patterns.bytes() as f64 / (1u64 << 30) as f64;
    Ok(Bulk {
        gib_per_second: gib / seconds,
        cpu_per_gib: cpu / (2.0 * gib),
    })
}

/// Sends `data` in 1 MiB writes, then FIN, while reading to end-of-stream; how many bytes arrived and their CRC-32.
fn exchange(stream: TcpStream, data: Arc<Vec<u8>>) -> std::io::Result<(u64, u32)> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    let mut writer = stream.try_clone()?;
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        for chunk in data.chunks(1 << 20) {
            writer.write_all(chunk)?;
        }
        writer.shutdown(std::net::Shutdown::Write)
    });
    let mut reader = stream;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut received = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        received += n as u64;
    }
    sender.join().map_err(|_| std::io::Error::other("sender thread panicked"))??;
    Ok((received, hasher.finalize()))
}
