//! What a handover reads from, and does to, one of the gateway's TCP sockets:
//! TCP_INFO, queue lengths, sequence numbers and the timestamp clock (through
//! TCP_REPAIR), and repair mode itself. Thin wrappers over the syscalls.
use std::io;
use std::os::fd::{AsRawFd, RawFd};

/// `TCP_REPAIR` values (linux/tcp.h).
const TCP_REPAIR_ON: libc::c_int = 1;
const TCP_REPAIR_OFF: libc::c_int = 0;
/// Leaves repair mode without the window probe TCP_REPAIR_OFF sends.
const TCP_REPAIR_OFF_NO_WP: libc::c_int = -1;
const TCP_RECV_QUEUE: libc::c_int = 1;
const TCP_SEND_QUEUE: libc::c_int = 2;
const SIOCINQ: libc::c_ulong = libc::FIONREAD;
const SIOCOUTQ: libc::c_ulong = libc::TIOCOUTQ;
const SIOCOUTQNSD: libc::c_ulong = 0x894b;

const TCPI_OPT_TIMESTAMPS: u8 = 1;
const TCPI_OPT_SACK: u8 = 2;
const TCPI_OPT_WSCALE: u8 = 4;

/// `tcpi_state` values (include/net/tcp_states.h).
pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_CLOSE_WAIT: u8 = 8;

/// The parts of `struct tcp_info` a handover needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpInfo {
    pub state: u8,
    pub timestamps: bool,
    pub sack: bool,
    pub window_scaling: bool,
    /// The scale this socket applies to the windows its peer advertises, and
    /// the one it applies to its own (the peer shifts by it).
    pub snd_wscale: u8,
    pub rcv_wscale: u8,
    /// The MSS this socket advertised to its peer.
    pub advmss: u32,
    pub rtt_us: u32,
}

pub fn tcp_info(fd: &impl AsRawFd) -> io::Result<TcpInfo> {
    let mut raw = [0u8; 104];
    let mut len = raw.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into our buffer.
    let rc = unsafe { libc::getsockopt(fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, raw.as_mut_ptr().cast(), &mut len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let word = |index: usize| u32::from_ne_bytes(raw[8 + index * 4..12 + index * 4].try_into().unwrap());
    let options = raw[5];
    Ok(TcpInfo {
        state: raw[0],
        timestamps: options & TCPI_OPT_TIMESTAMPS != 0,
        sack: options & TCPI_OPT_SACK != 0,
        window_scaling: options & TCPI_OPT_WSCALE != 0,
        // Bit fields, low bits first: tcpi_snd_wscale:4, tcpi_rcv_wscale:4.
        snd_wscale: raw[6] & 0x0f,
        rcv_wscale: raw[6] >> 4,
        // u32 words after the 8 leading bytes: rto, ato, snd_mss, rcv_mss,
        // unacked, sacked, lost, retrans, fackets, 4 times, pmtu,
        // rcv_ssthresh, rtt (15), rttvar, snd_ssthresh, snd_cwnd, advmss (19).
        advmss: word(19),
        rtt_us: word(15),
    })
}

/// Bytes received and not yet read.
pub fn unread(fd: &impl AsRawFd) -> io::Result<u32> {
    ioctl_int(fd.as_raw_fd(), SIOCINQ)
}

/// Bytes written and not yet acknowledged by the peer.
pub fn unacked(fd: &impl AsRawFd) -> io::Result<u32> {
    ioctl_int(fd.as_raw_fd(), SIOCOUTQ)
}

/// Bytes written and not yet sent at all (SIOCOUTQNSD).
pub fn unsent(fd: &impl AsRawFd) -> io::Result<u32> {
    ioctl_int(fd.as_raw_fd(), SIOCOUTQNSD)
}

fn ioctl_int(fd: RawFd, request: libc::c_ulong) -> io::Result<u32> {
    let mut value: libc::c_int = 0;
    // SAFETY: both requests write one int.
    if unsafe { libc::ioctl(fd, request, &mut value) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value as u32)
}

fn set_int(fd: RawFd, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: an int option.
    let rc = unsafe { libc::setsockopt(fd, libc::IPPROTO_TCP, name, (&value as *const libc::c_int).cast(), 4) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn get_u32(fd: RawFd, name: libc::c_int) -> io::Result<u32> {
    let mut value: u32 = 0;
    let mut len: libc::socklen_t = 4;
    // SAFETY: a 4-byte option into a 4-byte buffer.
    let rc = unsafe { libc::getsockopt(fd, libc::IPPROTO_TCP, name, (&mut value as *mut u32).cast(), &mut len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// Puts the socket in repair mode: from then on `close()` sends nothing
/// (no FIN, no RST) and its sequence state can be read. It does not by itself
/// silence the socket (timers still run); what silences it is that nothing
/// reaches it any more and nothing is left in its queues.
pub fn repair_on(fd: &impl AsRawFd) -> io::Result<()> {
    set_int(fd.as_raw_fd(), libc::TCP_REPAIR, TCP_REPAIR_ON)
}

/// Leaves repair mode without sending anything.
pub fn repair_off_quietly(fd: &impl AsRawFd) -> io::Result<()> {
    set_int(fd.as_raw_fd(), libc::TCP_REPAIR, TCP_REPAIR_OFF_NO_WP)
}

/// Makes the peer answer at once: entering and leaving repair mode sends a
/// window probe (a segment just below the peer's window), which the peer
/// acknowledges immediately, with its current timestamp and window. Peers
/// rate-limit such answers (net.ipv4.tcp_invalid_ratelimit, 500 ms).
pub fn prompt_ack(fd: &impl AsRawFd) -> io::Result<()> {
    set_int(fd.as_raw_fd(), libc::TCP_REPAIR, TCP_REPAIR_ON)?;
    set_int(fd.as_raw_fd(), libc::TCP_REPAIR, TCP_REPAIR_OFF)
}

/// The sequence state of a socket in repair mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sequences {
    /// The sequence number of the next byte written (= snd_nxt when nothing is unsent).
    pub write_seq: u32,
    /// The next sequence number expected from the peer.
    pub rcv_nxt: u32,
    /// The socket's timestamp clock now (its TSval for a segment sent now).
    pub ts_now: u32,
    /// The MSS the peer announced (TCP_MAXSEG reads it in repair mode).
    pub peer_mss: u32,
}

pub fn sequences(fd: &impl AsRawFd) -> io::Result<Sequences> {
    let fd = fd.as_raw_fd();
    set_int(fd, libc::TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)?;
    let write_seq = get_u32(fd, libc::TCP_QUEUE_SEQ)?;
    set_int(fd, libc::TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)?;
    let rcv_nxt = get_u32(fd, libc::TCP_QUEUE_SEQ)?;
    let ts_now = get_u32(fd, libc::TCP_TIMESTAMP)?;
    let peer_mss = get_u32(fd, libc::TCP_MAXSEG)?;
    Ok(Sequences { write_seq, rcv_nxt, ts_now, peer_mss })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn repair_mode_reads_sequence_numbers_that_move_with_the_bytes_written_and_read() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        repair_on(&client).unwrap();
        let before = sequences(&client).unwrap();
        repair_off_quietly(&client).unwrap();
        client.write_all(&[7u8; 1000]).unwrap();
        let mut got = [0u8; 1000];
        server.read_exact(&mut got).unwrap();
        server.write_all(&[9u8; 300]).unwrap();
        let mut back = [0u8; 300];
        client.read_exact(&mut back).unwrap();
        repair_on(&client).unwrap();
        let after = sequences(&client).unwrap();
        repair_off_quietly(&client).unwrap();
        assert_eq!(after.write_seq.wrapping_sub(before.write_seq), 1000);
        assert_eq!(after.rcv_nxt.wrapping_sub(before.rcv_nxt), 300);
        let info = tcp_info(&client).unwrap();
        assert_eq!(info.state, TCP_ESTABLISHED);
        assert!(info.advmss > 0 && after.peer_mss > 0, "{info:?} {after:?}");
        assert_eq!(unread(&client).unwrap(), 0);
    }
}
