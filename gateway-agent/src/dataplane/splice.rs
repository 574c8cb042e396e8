//! The zero-copy userspace path: `splice(2)` from one socket into a pipe and
//! from the pipe into the other socket (HAProxy's technique). The payload moves
//! between kernel buffers; userspace only waits for readiness and counts.
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::Interest;
use tokio::net::TcpStream;

use super::path::{conclude, deliver_pending, pass_fin, readable_or_paused, until_done, Carried, Control, DataPath, Flow, Forwarding};

/// Bytes asked of one splice call; the pipe is sized to hold it.
const CHUNK: usize = 1 << 20;

#[derive(Debug, Default)]
pub struct SplicePath;

impl DataPath for SplicePath {
    fn name(&self) -> &'static str {
        "splice"
    }

    fn code(&self) -> u32 {
        gateway_common::PATH_SPLICE
    }

    fn descriptors_per_connection(&self) -> u64 {
        6 // two sockets and two pipes
    }

    fn forward<'a>(&'a self, client: TcpStream, backend: TcpStream, up: Carried, down: Carried, control: Control) -> Forwarding<'a> {
        Box::pin(async move {
            let (mut up, mut down) = (Flow::from(up), Flow::from(down));
            let end = {
                let both = async {
                    let (p1, p2) = (Pipe::new()?, Pipe::new()?);
                    tokio::try_join!(pump(&client, &backend, &p1, &mut up, &control), pump(&backend, &client, &p2, &mut down, &control))
                };
                until_done(both, &control).await
            };
            Ok(conclude(client, backend, end, up, down))
        })
    }
}

/// A non-blocking pipe, both ends closed on drop.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 writes two fds into the array on success.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both fds were just returned by pipe2 and are owned by nobody else.
        let pipe = unsafe { Pipe { read: OwnedFd::from_raw_fd(fds[0]), write: OwnedFd::from_raw_fd(fds[1]) } };
        // A larger pipe moves more per call; failure (a low pipe-max-size) only costs speed.
        // SAFETY: fcntl on an fd we own.
        unsafe { libc::fcntl(pipe.write.as_raw_fd(), libc::F_SETPIPE_SZ, CHUNK as libc::c_int) };
        Ok(pipe)
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: plain splice(2) between fds the caller keeps open; null offsets (streams).
    let n = unsafe {
        libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK)
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Moves `from` → pipe → `to` until end-of-stream (then half-closes `to`) or
/// until `pause` fires. A pause while bytes sit in the pipe takes them out into
/// `flow.pending`, so the pipe can be dropped and nothing is lost.
async fn pump(from: &TcpStream, to: &TcpStream, pipe: &Pipe, flow: &mut Flow, control: &Control) -> io::Result<()> {
    if flow.done || !deliver_pending(to, flow, control).await? {
        return Ok(());
    }
    loop {
        // Fill the pipe from the socket (WouldBlock clears tokio's readiness, so we wait again).
        let n = loop {
            if !readable_or_paused(from, &control.pause).await? {
                return Ok(());
            }
            match from.try_io(Interest::READABLE, || splice(from.as_raw_fd(), pipe.write.as_raw_fd(), CHUNK)) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            // The pipe is empty here: everything read was written below before reading again.
            return pass_fin(to, flow);
        }
        // Drain exactly what came in to the other socket.
        let mut left = n;
        while left > 0 {
            tokio::select! {
                biased;
                _ = control.pause.cancelled() => {
                    flow.pending = take(&pipe.read, left)?;
                    return Ok(());
                }
                ready = to.writable() => ready?,
            }
            match to.try_io(Interest::WRITABLE, || splice(pipe.read.as_raw_fd(), to.as_raw_fd(), left)) {
                Ok(written) => {
                    left -= written;
                    flow.moved += written as u64;
                    control.activity.fetch_add(written as u64, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Reads exactly `len` bytes that are known to sit in the pipe.
fn take(pipe: &OwnedFd, len: usize) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; len];
    let mut got = 0;
    while got < len {
        // SAFETY: reading into the unfilled tail of a buffer we own, from an fd we own.
        let n = unsafe { libc::read(pipe.as_raw_fd(), bytes[got..].as_mut_ptr().cast(), len - got) };
        match n {
            n if n > 0 => got += n as usize,
            0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "pipe ended before its bytes were taken")),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(bytes)
}
