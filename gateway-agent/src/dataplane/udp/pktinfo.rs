//! Replies from the address the client sent to. A listener bound to 0.0.0.0
//! on a node with several addresses would otherwise answer from whichever
//! address routing prefers, and a client (dig, any connected UDP socket)
//! drops an answer from an address it did not ask. IPv4 only: IP_PKTINFO
//! tells each datagram's destination, and the reply names it as its source.
//! Listeners on a specific address, or on `::`, keep the kernel's choice.
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Asks the kernel for each datagram's destination address.
pub fn enable(socket: &socket2::Socket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with a valid fd and an int option.
    let rc = unsafe { libc::setsockopt(socket.as_raw_fd(), libc::IPPROTO_IP, libc::IP_PKTINFO, &on as *const _ as *const libc::c_void, size_of::<libc::c_int>() as u32) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

const CMSG_SPACE: usize = 64;

/// One datagram, its sender and the local address it was sent to (when known).
pub async fn recv(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<Ipv4Addr>)> {
    loop {
        socket.readable().await?;
        match socket.try_io(Interest::READABLE, || recvmsg(socket.as_raw_fd(), buf)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

fn recvmsg(fd: i32, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<Ipv4Addr>)> {
    // SAFETY: every pointer handed to recvmsg points into live locals of the right sizes.
    unsafe {
        let mut from: libc::sockaddr_storage = zeroed();
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
        let mut control = [0u8; CMSG_SPACE];
        let mut msg: libc::msghdr = zeroed();
        msg.msg_name = &mut from as *mut _ as *mut libc::c_void;
        msg.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = CMSG_SPACE;
        let n = libc::recvmsg(fd, &mut msg, 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let peer = match from.ss_family as i32 {
            libc::AF_INET => {
                let a = &*(&from as *const _ as *const libc::sockaddr_in);
                SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)), u16::from_be(a.sin_port)))
            }
            _ => return Err(io::Error::other("a datagram from a non-IPv4 peer on an IPv4 socket")),
        };
        let mut local = None;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::IPPROTO_IP && (*cmsg).cmsg_type == libc::IP_PKTINFO {
                let info = &*(libc::CMSG_DATA(cmsg) as *const libc::in_pktinfo);
                local = Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        Ok((n as usize, peer, local))
    }
}

/// Sends `data` to `to` from local address `from` (the address the client sent to).
pub async fn send(socket: &UdpSocket, data: &[u8], to: SocketAddr, from: Ipv4Addr) -> io::Result<usize> {
    let SocketAddr::V4(to) = to else { return socket.send_to(data, to).await };
    loop {
        socket.writable().await?;
        match socket.try_io(Interest::WRITABLE, || sendmsg(socket.as_raw_fd(), data, to, from)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

fn sendmsg(fd: i32, data: &[u8], to: SocketAddrV4, from: Ipv4Addr) -> io::Result<usize> {
    // SAFETY: as in recvmsg; the control buffer holds exactly one in_pktinfo message.
    unsafe {
        let mut dest: libc::sockaddr_in = zeroed();
        dest.sin_family = libc::AF_INET as u16;
        dest.sin_port = to.port().to_be();
        dest.sin_addr.s_addr = u32::from(*to.ip()).to_be();
        let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
        let space = libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) as usize;
        let mut control = [0u8; CMSG_SPACE];
        let mut msg: libc::msghdr = zeroed();
        msg.msg_name = &mut dest as *mut _ as *mut libc::c_void;
        msg.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::IPPROTO_IP;
        (*cmsg).cmsg_type = libc::IP_PKTINFO;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as usize;
        let mut info: libc::in_pktinfo = zeroed();
        info.ipi_spec_dst.s_addr = u32::from(from).to_be();
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut libc::in_pktinfo, info);
        let n = libc::sendmsg(fd, &msg, 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// Whether a listener bound to `ip` needs this (an unspecified IPv4 address).
pub fn wanted(ip: IpAddr) -> bool {
    ip == IpAddr::V4(Ipv4Addr::UNSPECIFIED)
}
