//! The XDP filter an earlier agent left on an interface: found, and either
//! taken over in place or removed, so a new agent can attach its own.
//!
//! An agent attaches through a bpf_link. If that agent is still running (an
//! upgrade starts the new agent beside the old one), the new agent takes the
//! link over: `BPF_LINK_UPDATE` swaps the program the link runs in one step,
//! so no packet goes unjudged and the driver never leaves XDP mode (on many
//! NICs entering or leaving it resets the rings). When an agent dies, the
//! kernel closes its link and detaches the program: nothing remains. What can
//! remain is a sockgate program attached through netlink (aya's fallback where
//! bpf_link_create is refused, or someone's `bpftool net attach`): it is
//! detached, and the new program attached after it. A program that is not
//! sockgate's is left alone, and attaching fails saying whose it is.
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use anyhow::{bail, Context};
use gateway_common::XDP_FILTER_PROGRAM;

use super::netlink;

/// A sockgate XDP program already attached to an interface.
#[derive(Debug)]
pub enum Existing {
    /// Through a bpf_link (its id): can be taken over in place.
    Link { link: u32, program: u32, mode: u32 },
    /// Through netlink: can only be detached.
    Netlink { program: u32, mode: u32 },
}

/// The sockgate XDP programs attached to `ifindex` (named `ifname`); fails if
/// any other program is attached.
pub fn find(ifindex: u32, ifname: &str) -> anyhow::Result<Vec<Existing>> {
    let mut found = Vec::new();
    for attached in netlink::attached(ifindex)
        .with_context(|| format!("asking which XDP programs {ifname} runs"))?
    {
        let name = program_name(attached.program_id).unwrap_or_default();
        // The kernel keeps the first 15 bytes of a program's name.
        if name.is_empty() || !XDP_FILTER_PROGRAM.starts_with(name.as_str()) {
            bail!(
                "{ifname} already runs XDP program {name:?} (id {}, {} mode), which is not sockgate's; \
                 sockgate does not replace another program: detach it first (ip link set dev {ifname} xdp off)",
                attached.program_id,
                mode_name(attached.mode)
            );
        }
        let links = links_of(attached.program_id, ifindex)
            .with_context(|| format!("listing the XDP links of {ifname}"))?;
        match links.first() {
            Some(&link) => found.push(Existing::Link {
                link,
                program: attached.program_id,
                mode: attached.mode,
            }),
            None => found.push(Existing::Netlink {
                program: attached.program_id,
                mode: attached.mode,
            }),
        }
    }
    Ok(found)
}

pub fn mode_name(mode: u32) -> &'static str {
    match mode {
        netlink::XDP_FLAGS_DRV_MODE => "driver",
        netlink::XDP_FLAGS_SKB_MODE => "generic (skb)",
        netlink::XDP_FLAGS_HW_MODE => "offload",
        _ => "unknown",
    }
}

/// Makes bpf_link `link` run `program` instead of what it runs, in one step,
/// and returns an fd that keeps the link alive whoever else closes theirs.
pub fn take_over(link: u32, program: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let fd = link_fd(link)?;
    // union bpf_attr, link_update: link_fd, new_prog_fd, flags, old_prog_fd.
    bpf(
        BPF_LINK_UPDATE,
        &mut [fd.as_raw_fd() as u32, program.as_raw_fd() as u32, 0, 0],
    )?;
    Ok(fd)
}

/// Detaches the bpf_link behind `fd` if it still runs program `program` (and
/// leaves it alone if a newer agent has taken it over since).
pub fn detach_if_running(fd: &OwnedFd, program: u32) -> io::Result<()> {
    let info = link_info(fd)?;
    if info[2] == program {
        bpf(BPF_LINK_DETACH, &mut [fd.as_raw_fd() as u32])?;
    }
    Ok(())
}

/// Detaches bpf_link `link` (a sockgate link nobody will take over).
pub fn detach_link(link: u32) -> io::Result<()> {
    let fd = link_fd(link)?;
    bpf(BPF_LINK_DETACH, &mut [fd.as_raw_fd() as u32]).map(|_| ())
}

fn program_name(id: u32) -> Option<String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .and_then(|p| p.name_as_str().map(str::to_string))
}

// bpf(2) commands and the link type, from include/uapi/linux/bpf.h.
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_UPDATE: libc::c_long = 29;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_LINK_GET_NEXT_ID: libc::c_long = 31;
const BPF_LINK_DETACH: libc::c_long = 34;
const BPF_LINK_TYPE_XDP: u32 = 6;

fn bpf(cmd: libc::c_long, attr: &mut [u32]) -> io::Result<i64> {
    // SAFETY: attr is a valid, writable prefix of union bpf_attr of the given
    // size; the kernel reads (and for some commands writes) only that much.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret)
}

fn link_fd(id: u32) -> io::Result<OwnedFd> {
    let fd = bpf(BPF_LINK_GET_FD_BY_ID, &mut [id, 0, 0])?;
    // SAFETY: the kernel just returned this fd to us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The start of struct bpf_link_info: type, id, prog_id, then (8-aligned, at
/// word 4) the type's union, whose xdp member starts with the ifindex.
fn link_info(fd: &OwnedFd) -> io::Result<[u32; 16]> {
    let mut info = [0u32; 16];
    let address = info.as_mut_ptr() as u64;
    // union bpf_attr, info: bpf_fd, info_len, info (a u64 pointer).
    let mut attr = [
        fd.as_raw_fd() as u32,
        std::mem::size_of_val(&info) as u32,
        address as u32,
        (address >> 32) as u32,
    ];
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    // SAFETY: the kernel wrote through the pointer; read what it wrote.
    Ok(unsafe { std::ptr::read_volatile(&info) })
}

/// The XDP links that attach program `program_id` to `ifindex`.
fn links_of(program_id: u32, ifindex: u32) -> io::Result<Vec<u32>> {
    let mut found = Vec::new();
    let mut id = 0;
    loop {
        let mut attr = [id, 0, 0];
        match bpf(BPF_LINK_GET_NEXT_ID, &mut attr) {
            Ok(_) => id = attr[1],
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(found),
            Err(e) => return Err(e),
        }
        // Gone meanwhile, or not readable: not the one we look for.
        let Ok(info) = link_fd(id).and_then(|fd| link_info(&fd)) else {
            continue;
        };
        if info[0] == BPF_LINK_TYPE_XDP && info[2] == program_id && info[4] == ifindex {
            found.push(id);
        }
    }
}
