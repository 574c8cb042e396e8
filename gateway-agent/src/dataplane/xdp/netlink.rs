//! The two rtnetlink requests the XDP filter needs that aya does not offer:
//! which XDP programs an interface runs (and in which mode), and detaching a
//! program attached through netlink (as opposed to a bpf_link). Both act in
//! the calling thread's network namespace.
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLA_F_NESTED: u16 = 1 << 15;
const NLA_TYPE_MASK: u16 = 0x3fff;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const IFLA_XDP_HW_PROG_ID: u16 = 7;
const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;

/// XDP attach-mode flags (`XDP_FLAGS_*_MODE`), as netlink and bpf_link_create take them.
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
pub const XDP_FLAGS_HW_MODE: u32 = 1 << 3;

/// One XDP program attached to an interface: its mode flag and program id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attached {
    pub mode: u32,
    pub program_id: u32,
}

/// The XDP programs attached to interface `ifindex` (at most one per mode).
pub fn attached(ifindex: u32) -> io::Result<Vec<Attached>> {
    let reply = request(RTM_GETLINK, NLM_F_REQUEST, ifindex, &[])?;
    let mut found = Vec::new();
    for (kind, payload) in attributes(
        reply
            .get(NLMSG_HDRLEN + IFINFOMSG_LEN..)
            .unwrap_or_default(),
    ) {
        if kind != IFLA_XDP {
            continue;
        }
        for (kind, value) in attributes(payload) {
            let mode = match kind {
                IFLA_XDP_DRV_PROG_ID => XDP_FLAGS_DRV_MODE,
                IFLA_XDP_SKB_PROG_ID => XDP_FLAGS_SKB_MODE,
                IFLA_XDP_HW_PROG_ID => XDP_FLAGS_HW_MODE,
                _ => continue,
            };
            if let Some(id) = value.get(..4) {
                found.push(Attached {
                    mode,
                    program_id: u32::from_ne_bytes(id.try_into().unwrap()),
                });
            }
        }
    }
    Ok(found)
}

/// Detaches the netlink-attached XDP program of `mode` from `ifindex`. Fails
/// (EBUSY) when the program is attached through a bpf_link instead.
pub fn detach(ifindex: u32, mode: u32) -> io::Result<()> {
    let mut xdp = Vec::new();
    push_attribute(&mut xdp, IFLA_XDP_FD, &(-1i32).to_ne_bytes());
    push_attribute(&mut xdp, IFLA_XDP_FLAGS, &mode.to_ne_bytes());
    let mut attrs = Vec::new();
    push_attribute(&mut attrs, IFLA_XDP | NLA_F_NESTED, &xdp);
    request(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, ifindex, &attrs).map(|_| ())
}

/// Sends one rtnetlink request about `ifindex` and returns its one answer
/// (RTM_NEWLINK for a query; for an acknowledged change, the ack).
fn request(kind: u16, flags: u16, ifindex: u32, attrs: &[u8]) -> io::Result<Vec<u8>> {
    // SAFETY: plain socket(2); the fd is owned at once.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh fd nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut message = Vec::with_capacity(NLMSG_HDRLEN + IFINFOMSG_LEN + attrs.len());
    let len = (NLMSG_HDRLEN + IFINFOMSG_LEN + attrs.len()) as u32;
    message.extend_from_slice(&len.to_ne_bytes());
    message.extend_from_slice(&kind.to_ne_bytes());
    message.extend_from_slice(&flags.to_ne_bytes());
    message.extend_from_slice(&1u32.to_ne_bytes()); // sequence number
    message.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
                                                    // ifinfomsg: family AF_UNSPEC, padding, type, index, flags, change.
    message.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    message.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    message.extend_from_slice(&[0u8; 8]);
    message.extend_from_slice(attrs);
    // SAFETY: the buffer is valid for its length; the kernel is the peer (zeroed sockaddr_nl).
    let sent = unsafe {
        let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
        kernel.nl_family = libc::AF_NETLINK as u16;
        libc::sendto(
            socket.as_raw_fd(),
            message.as_ptr().cast(),
            message.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut reply = vec![0u8; 64 * 1024];
    // SAFETY: the buffer is writable for its length.
    let got = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            reply.as_mut_ptr().cast(),
            reply.len(),
            0,
        )
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    reply.truncate(got as usize);
    if reply.len() < NLMSG_HDRLEN {
        return Err(io::Error::other("short netlink reply"));
    }
    let reply_kind = u16::from_ne_bytes([reply[4], reply[5]]);
    if reply_kind == NLMSG_ERROR {
        let errno = reply
            .get(NLMSG_HDRLEN..NLMSG_HDRLEN + 4)
            .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
            .unwrap_or(0);
        return if errno == 0 {
            Ok(reply)
        } else {
            Err(io::Error::from_raw_os_error(-errno))
        };
    }
    if kind == RTM_GETLINK && reply_kind != RTM_NEWLINK {
        return Err(io::Error::other(format!(
            "unexpected netlink reply type {reply_kind}"
        )));
    }
    Ok(reply)
}

/// The (type, payload) of each netlink attribute in `data`.
fn attributes(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([data[0], data[1]]));
        let kind = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > data.len() {
            return None;
        }
        let payload = &data[4..len];
        data = &data[align(len).min(data.len())..];
        Some((kind, payload))
    })
}

fn push_attribute(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len() + align(len) - len, 0);
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_with_padding_and_nesting() {
        let mut inner = Vec::new();
        push_attribute(&mut inner, IFLA_XDP_SKB_PROG_ID, &42u32.to_ne_bytes());
        push_attribute(&mut inner, 2, &[1]); // a 1-byte attribute, padded to 8
        let mut outer = Vec::new();
        push_attribute(&mut outer, 3, b"ab");
        push_attribute(&mut outer, IFLA_XDP | NLA_F_NESTED, &inner);
        let parsed: Vec<(u16, Vec<u8>)> =
            attributes(&outer).map(|(k, v)| (k, v.to_vec())).collect();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0], (3, b"ab".to_vec()));
        assert_eq!(parsed[1].0, IFLA_XDP, "the nested flag is masked off");
        let nested: Vec<(u16, Vec<u8>)> = attributes(&parsed[1].1)
            .map(|(k, v)| (k, v.to_vec()))
            .collect();
        assert_eq!(
            nested,
            vec![
                (IFLA_XDP_SKB_PROG_ID, 42u32.to_ne_bytes().to_vec()),
                (2, vec![1])
            ]
        );
    }

    #[test]
    fn truncated_attributes_end_the_walk_instead_of_reading_past_the_buffer() {
        let mut data = Vec::new();
        push_attribute(&mut data, 1, &[0; 8]);
        data.truncate(10);
        assert_eq!(attributes(&data).count(), 0);
    }
}
