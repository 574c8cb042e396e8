//! The node: containerd (CRI, runc, CNI) and the kubelet, inside the node's
//! network namespace, with every file they keep under target/cluster/ or
//! /run/sockgate-cluster/, and what they change on the host recorded so
//! `down` puts it back: cgroups, mounts, kernel tunables, log directories.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::daemon::{running, spawn_daemon, stop, wait_until, Daemon};
use super::network::{self, NODE_IP, NODE_NETNS};
use super::{cluster_dir, remove_dir_if_present};
use crate::run_quiet;
use anyhow::{Context, Result};

pub const NODE_NAME: &str = "sockgate-node";
/// Sockets and runtime state, on tmpfs and with short paths (a Unix socket's
/// path is at most 107 bytes, whatever the clone's directory).
pub const RUN_DIR: &str = "/run/sockgate-cluster";
/// The sandbox image containerd's CRI starts every pod with; built locally.
pub const PAUSE_IMAGE: &str = "k8s.gcr.io/pause:3.2";

const CONTAINERD: Daemon = Daemon { name: "containerd", program: "containerd", netns: Some(NODE_NETNS) };
const KUBELET: Daemon = Daemon { name: "kubelet", program: "kubelet", netns: Some(NODE_NETNS) };

/// The kubelet sets these kernel tunables (global, not per namespace) at start;
/// `up` records them and `down` restores them.
const KERNEL_TUNABLES: &[&str] = &["vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops", "kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes"];
/// Directories the kubelet and containerd's shims create at fixed places;
/// `down` removes those that did not exist before `up`.
/// The chart's hostPath for the takeover socket and the agent's default pin
/// directory are made by the agent pod, and go with the cluster too.
const FIXED_DIRECTORIES: &[&str] = &["/var/log/pods", "/var/log/containers", "/run/containerd", "/run/sockgate", "/sys/fs/bpf/sockgate"];

pub fn containerd_socket() -> PathBuf {
    Path::new(RUN_DIR).join("containerd.sock")
}

/// `ctr` against the node's containerd, in the kubelet's image namespace.
pub fn ctr() -> Command {
    let mut command = Command::new("ctr");
    command.arg("--address").arg(containerd_socket()).args(["--namespace", "k8s.io"]);
    command
}

fn node_dir() -> PathBuf {
    cluster_dir().join("node")
}

fn record_path() -> PathBuf {
    cluster_dir().join("node-host-changes")
}

pub fn running_already() -> bool {
    running(&CONTAINERD).is_some() && running(&KUBELET).is_some()
}

/// Starts containerd in the node's namespace and waits for its socket.
pub fn start_containerd() -> Result<()> {
    record_host_state()?;
    let dir = node_dir();
    for sub in ["containerd/root", "containerd/opt", "cni/net.d", "cni/ipam"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    fs::create_dir_all(RUN_DIR)?;
    fs::write(dir.join("cni/net.d/10-sockgate.conflist"), network::cni_config(&dir.join("cni/ipam")))?;
    let config = dir.join("containerd.toml");
    fs::write(&config, containerd_config(&dir))?;
    spawn_daemon(&CONTAINERD, &["--config".into(), config.display().to_string()])?;
    wait_until(&CONTAINERD, "containerd to answer", || ctr().arg("version").output().is_ok_and(|o| o.status.success()))
}

fn containerd_config(dir: &Path) -> String {
    format!(
        r#"version = 2
root = "{root}"
state = "{run}/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{socket}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # The kubelet asks for oom_score_adj down to -998, which needs
  # CAP_SYS_RESOURCE (root lacks it here): clamp to containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
    max_conf_num = 1
"#,
        root = dir.join("containerd/root").display(),
        run = RUN_DIR,
        socket = containerd_socket().display(),
        opt = dir.join("containerd/opt").display(),
        cni = dir.join("cni/net.d").display(),
    )
}

/// Starts the kubelet in the node's namespace, registering node `sockgate-node`
/// with address NODE_IP, its pods' cgroups below this process's own.
pub fn start_kubelet(kubeconfig: &Path) -> Result<()> {
    let dir = node_dir();
    let root = dir.join("kubelet");
    fs::create_dir_all(&root)?;
    // Pods get no nameserver: no cluster DNS runs, and no query may leave the node.
    let resolv = dir.join("resolv.conf");
    fs::write(&resolv, "# no DNS on the sockgate test node\n")?;
    let cgroup_root = cgroup_root()?;
    create_cgroup_root(&cgroup_root)?;
    let args = [
        format!("--kubeconfig={}", kubeconfig.display()),
        "--container-runtime=remote".to_string(),
        format!("--container-runtime-endpoint=unix://{}", containerd_socket().display()),
        format!("--root-dir={}", root.display()),
        format!("--cert-dir={}", root.join("pki").display()),
        format!("--volume-plugin-dir={}", root.join("volume-plugins").display()),
        format!("--hostname-override={NODE_NAME}"),
        format!("--node-ip={NODE_IP}"),
        "--cgroup-driver=cgroupfs".to_string(),
        format!("--cgroup-root={cgroup_root}"),
        format!("--resolv-conf={}", resolv.display()),
        // Images cannot be pulled again here: never collect them.
        "--image-gc-high-threshold=100".to_string(),
        "--image-gc-low-threshold=99".to_string(),
        // Evict only when the disk is really full: the defaults (imagefs
        // under 15% free) evicted the agent pod over and over on a shared
        // disk that was 86% used yet had 35 GB free.
        "--eviction-hard=memory.available<100Mi,nodefs.available<1Gi,imagefs.available<1Gi".to_string(),
        // Only reachable inside the node's namespace.
        "--address=127.0.0.1".to_string(),
        "--read-only-port=0".to_string(),
        "--anonymous-auth=false".to_string(),
        "--fail-swap-on=false".to_string(),
        "--v=1".to_string(),
    ];
    spawn_daemon(&KUBELET, &args)
}

/// This process's memory cgroup (the sandbox it runs in) plus `sockgate`: the
/// pods stay inside whatever contains the caller.
fn cgroup_root() -> Result<String> {
    let own = fs::read_to_string("/proc/self/cgroup")?;
    let memory = own.lines().find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string())).unwrap_or_else(|| "/".into());
    Ok(format!("{}/sockgate", memory.trim_end_matches('/')))
}

/// The cgroup v1 hierarchies (the kubelet checks the root exists in each).
fn hierarchies() -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir("/sys/fs/cgroup") else { return Vec::new() };
    entries.flatten().map(|e| e.path()).filter(|p| p.file_name().is_some_and(|n| n != "unified") && p.join("cgroup.procs").exists()).collect()
}

/// Creates the cgroup root in every hierarchy, recording each directory made.
fn create_cgroup_root(cgroup_root: &str) -> Result<()> {
    let mut made = Vec::new();
    for hierarchy in hierarchies().into_iter().chain([PathBuf::from("/sys/fs/cgroup/unified")]) {
        let mut path = hierarchy.clone();
        for part in cgroup_root.trim_start_matches('/').split('/') {
            path.push(part);
            if !path.exists() {
                fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
                made.push(path.display().to_string());
            }
        }
    }
    let mut record = fs::read_to_string(record_path()).unwrap_or_default();
    // `down` may run from another cgroup (a later session): it reads this one.
    record.push_str(&format!("cgroup-root {cgroup_root}\n"));
    for dir in made {
        record.push_str(&format!("cgroup {dir}\n"));
    }
    fs::write(record_path(), record)?;
    Ok(())
}

/// What the node will change on the host, recorded once before anything starts.
fn record_host_state() -> Result<()> {
    if record_path().exists() {
        return Ok(()); // an earlier `up` recorded the state before it
    }
    let mut record = String::new();
    for tunable in KERNEL_TUNABLES {
        let value = fs::read_to_string(Path::new("/proc/sys").join(tunable.replace('.', "/"))).unwrap_or_default();
        if !value.trim().is_empty() {
            record.push_str(&format!("sysctl {tunable}={}\n", value.trim()));
        }
    }
    for dir in FIXED_DIRECTORIES {
        if !Path::new(dir).exists() {
            record.push_str(&format!("directory {dir}\n"));
        }
    }
    if !mount_is_shared("/sys/fs/bpf") {
        // The chart mounts bpffs with HostToContainer propagation, which needs
        // a shared (or slave) mount; systemd hosts make every mount shared.
        run_quiet(Command::new("mount").args(["--make-shared", "/sys/fs/bpf"]), "mount --make-shared /sys/fs/bpf")?;
        record.push_str("private-mount /sys/fs/bpf\n");
    }
    fs::write(record_path(), record).context("recording the host's state")
}

fn mount_is_shared(target: &str) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else { return false };
    info.lines().any(|l| {
        let fields: Vec<&str> = l.split_whitespace().collect();
        fields.get(4) == Some(&target) && fields.iter().skip(6).take_while(|f| **f != "-").any(|f| f.starts_with("shared:"))
    })
}

/// Stops the kubelet, every container and shim, containerd; unmounts what they
/// mounted; deletes the namespaces; restores what `up` recorded. Fine when
/// nothing runs.
pub fn down() -> Result<()> {
    stop(&KUBELET)?;
    kill_pods();
    stop(&CONTAINERD)?;
    kill_shims();
    unmount_below(&[cluster_dir(), PathBuf::from(RUN_DIR)]);
    network::remove();
    restore_host_state();
    remove_dir_if_present(Path::new(RUN_DIR))?;
    remove_dir_if_present(&node_dir())
}

/// Every process in the pods' cgroups (containers, pause), by PID.
fn kill_pods() {
    let record = fs::read_to_string(record_path()).unwrap_or_default();
    let Some(root) = record.lines().find_map(|l| l.strip_prefix("cgroup-root ")) else { return };
    for _ in 0..50 {
        let pids = pids_below(&Path::new("/sys/fs/cgroup/pids").join(root.trim_start_matches('/')));
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = Command::new("kill").args(["-s", "KILL", &pid.to_string()]).status();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn pids_below(dir: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten().filter(|e| e.path().is_dir()) {
            pids.extend(pids_below(&entry.path()));
        }
    }
    pids
}

/// The node containerd's shims (each names our socket in its arguments).
fn kill_shims() {
    let socket = containerd_socket().display().to_string();
    let Ok(entries) = fs::read_dir("/proc") else { return };
    for entry in entries.flatten() {
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let is_shim = args.first().is_some_and(|a| a.ends_with("containerd-shim-runc-v2"));
        if is_shim && args.iter().any(|a| *a == socket) {
            let _ = Command::new("kill").args(["-s", "KILL", &entry.file_name().to_string_lossy()]).status();
        }
    }
}

/// Unmounts, deepest first, every mount below `dirs` (containers' root
/// filesystems, pods' volumes, the kubelet's own bind mount).
fn unmount_below(dirs: &[PathBuf]) {
    for _ in 0..3 {
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut targets: Vec<String> = info
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4).map(String::from))
            .filter(|t| dirs.iter().any(|d| Path::new(t).starts_with(d)))
            .collect();
        if targets.is_empty() {
            return;
        }
        targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
        for target in targets {
            let _ = Command::new("umount").arg(&target).stderr(std::process::Stdio::null()).status();
        }
    }
}

fn restore_host_state() {
    let Ok(record) = fs::read_to_string(record_path()) else { return };
    let mut cgroups = Vec::new();
    for line in record.lines() {
        match line.split_once(' ') {
            Some(("sysctl", setting)) => {
                let _ = Command::new("sysctl").args(["-q", "-w", setting]).status();
            }
            Some(("directory", dir)) => {
                let _ = fs::remove_dir_all(dir);
            }
            Some(("private-mount", target)) => {
                let _ = Command::new("mount").args(["--make-private", target]).status();
            }
            Some(("cgroup", dir)) => cgroups.push(PathBuf::from(dir)),
            _ => {}
        }
    }
    // Below the recorded roots are the kubelet's and runc's cgroups: deepest first.
    for dir in &cgroups {
        remove_cgroup_tree(dir);
    }
    let _ = fs::remove_file(record_path());
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten().filter(|e| e.path().is_dir()) {
            remove_cgroup_tree(&entry.path());
        }
    }
    let _ = fs::remove_dir(dir);
}
