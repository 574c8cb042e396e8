//! What the eBPF parts need from the node, checked once at start: each
//! missing piece is named with what it turns off and the command that fixes
//! it, before anything fails half-way with a kernel error number. The rules
//! are pure over what was read ([`Node`]); [`Node::read`] is the I/O.
use std::path::{Path, PathBuf};

use crate::dataplane::DataplaneMode;

/// Capability bits (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// What the node offers this process.
#[derive(Clone, Debug)]
pub struct Node {
    /// The effective capability set (CapEff in /proc/self/status).
    pub capabilities: u64,
    /// Whether a cgroup v2 hierarchy is mounted anywhere.
    pub cgroup2_mounted: bool,
    /// Whether the pin directory is (or, once created, will be) on bpffs.
    pub pin_dir_on_bpffs: bool,
}

/// One missing piece.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    pub what: String,
    pub turns_off: &'static str,
    pub fix: String,
}

impl Node {
    pub fn read(pin_dir: &Path) -> Node {
        let capabilities = effective_capabilities();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let cgroup2_mounted = mounts.lines().any(|l| l.split_whitespace().nth(2) == Some("cgroup2"));
        Node { capabilities, cgroup2_mounted, pin_dir_on_bpffs: on_bpffs(pin_dir) }
    }
}

/// This process's effective capability set (CapEff in /proc/self/status; 0 if unreadable).
pub fn effective_capabilities() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok()).unwrap_or(0)
}

/// The pin directory, or its nearest existing ancestor (the agent creates
/// the rest), is on a bpf filesystem.
fn on_bpffs(pin_dir: &Path) -> bool {
    let mut at: PathBuf = pin_dir.to_path_buf();
    while !at.exists() {
        if !at.pop() {
            return false;
        }
    }
    let Ok(c_path) = std::ffi::CString::new(at.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: a zeroed statfs for statfs(2) to fill; c_path is NUL-terminated.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c_path.as_ptr(), &mut fs) }) == 0 && fs.f_type as i64 == BPF_FS_MAGIC
}

/// What `mode` would use and `node` lacks. `cgroup_given`: --cgroup names one.
pub fn missing(node: &Node, mode: DataplaneMode, pin_dir: &Path, cgroup_given: bool) -> Vec<Missing> {
    if !matches!(mode, DataplaneMode::Auto | DataplaneMode::Ebpf) {
        return Vec::new();
    }
    let has = |cap: u32| node.capabilities & (1 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push(Missing {
            what: "capability CAP_BPF".into(),
            turns_off: "every eBPF part (listener counters, the kernel TCP splice, the kernel UDP NAT, the XDP client filter)",
            fix: "run as root, or add CAP_BPF and CAP_PERFMON (the chart does)".into(),
        });
    }
    if !has(CAP_NET_ADMIN) {
        missing.push(Missing {
            what: "capability CAP_NET_ADMIN".into(),
            turns_off: "attaching TC, XDP and sock_ops programs, and the kernel TCP splice's repair mode",
            fix: "add CAP_NET_ADMIN (the chart does)".into(),
        });
    }
    if !has(CAP_NET_RAW) {
        missing.push(Missing {
            what: "capability CAP_NET_RAW".into(),
            turns_off: if mode == DataplaneMode::Ebpf {
                "the segments the kernel TCP splice sends itself (resets of the flows it ends, window updates after a handover), so its self-test fails and connections are served on splice(2)"
            } else {
                "the kernel TCP splice, which sends segments itself (resets, window updates): auto's self-test refuses it and a userspace path serves"
            },
            fix: "add CAP_NET_RAW (the chart does)".into(),
        });
    }
    if !node.pin_dir_on_bpffs {
        let mount_at = if pin_dir.starts_with("/sys/fs/bpf") { Path::new("/sys/fs/bpf") } else { pin_dir };
        missing.push(Missing {
            what: format!("a bpf filesystem at {}", pin_dir.display()),
            turns_off: "every eBPF part: their maps are pinned there (inspect and bpftool read them, a successor agent adopts them)",
            fix: format!("mount -t bpf bpf {}", mount_at.display()),
        });
    }
    if !node.cgroup2_mounted && !cgroup_given {
        missing.push(Missing {
            what: "a cgroup v2 hierarchy".into(),
            turns_off: "the per-listener connection and byte counters (sock_ops and cgroup_skb programs)",
            fix: "mount -t cgroup2 none /sys/fs/cgroup (or give --cgroup a cgroup v2 directory)".into(),
        });
    }
    missing
}

/// Logs each missing piece once, as a warning: the user asked for (auto)
/// or insisted on (ebpf) what it turns off.
pub fn warn_missing(mode: DataplaneMode, pin_dir: &Path, cgroup_given: bool) {
    for m in missing(&Node::read(pin_dir), mode, pin_dir, cgroup_given) {
        tracing::warn!(fix = %m.fix, "node requirement missing: {}; this turns off {}", m.what, m.turns_off);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: u64 = (1 << 40) - 1;

    fn root() -> Node {
        Node { capabilities: ROOT, cgroup2_mounted: true, pin_dir_on_bpffs: true }
    }

    #[test]
    fn root_on_a_node_with_bpffs_and_cgroup2_lacks_nothing() {
        assert_eq!(missing(&root(), DataplaneMode::Ebpf, Path::new("/sys/fs/bpf/sockgate"), false), vec![]);
    }

    #[test]
    fn userspace_modes_need_nothing_even_on_a_bare_node() {
        let bare = Node { capabilities: 0, cgroup2_mounted: false, pin_dir_on_bpffs: false };
        for mode in [DataplaneMode::Userspace, DataplaneMode::Splice, DataplaneMode::Copy] {
            assert_eq!(missing(&bare, mode, Path::new("/x"), false), vec![]);
        }
    }

    #[test]
    fn each_missing_piece_is_named_with_the_command_that_fixes_it() {
        let node = Node { capabilities: ROOT & !(1 << CAP_NET_RAW), cgroup2_mounted: false, pin_dir_on_bpffs: false };
        let found = missing(&node, DataplaneMode::Ebpf, Path::new("/sys/fs/bpf/sockgate"), false);
        let whats: Vec<&str> = found.iter().map(|m| m.what.as_str()).collect();
        assert_eq!(whats, ["capability CAP_NET_RAW", "a bpf filesystem at /sys/fs/bpf/sockgate", "a cgroup v2 hierarchy"]);
        assert_eq!(found[1].fix, "mount -t bpf bpf /sys/fs/bpf");
        assert!(found[2].fix.starts_with("mount -t cgroup2 none /sys/fs/cgroup"));
        // auto picks the kernel splice too, so it needs raw sockets; a given cgroup needs no mount found.
        let auto = missing(&node, DataplaneMode::Auto, Path::new("/sys/fs/bpf/sockgate"), true);
        assert_eq!(auto.iter().map(|m| m.what.as_str()).collect::<Vec<_>>(), ["capability CAP_NET_RAW", "a bpf filesystem at /sys/fs/bpf/sockgate"]);
        assert!(auto[0].turns_off.contains("auto's self-test refuses it"), "{}", auto[0].turns_off);
    }

    #[test]
    fn without_cap_bpf_or_cap_sys_admin_every_ebpf_part_is_off() {
        let node = Node { capabilities: ROOT & !(1 << CAP_BPF) & !(1 << CAP_SYS_ADMIN), ..root() };
        let found = missing(&node, DataplaneMode::Auto, Path::new("/sys/fs/bpf/sockgate"), false);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].what, "capability CAP_BPF");
        assert!(found[0].turns_off.starts_with("every eBPF part"));
    }
}
