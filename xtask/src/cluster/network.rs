//! The node's and the outside client's network namespaces, and the pod network.
//!
//! The node (kubelet, containerd, every pod, the agent on the host network) runs
//! in the namespace `sockgate-node`, so nothing the agent attaches (TC, XDP)
//! ever touches this machine's own interfaces. A veth joins it to
//! `sockgate-client`, the "other machine" a Gateway's client connects from.
//! Every address is inside 198.18.0.0/15, in /24s no other test uses:
//!
//! ```text
//!  sockgate-client            sockgate-node                          pods
//!  sg-client0 198.18.241.2 ── sg-node0 198.18.241.1 (the node's IP)
//!                             sg-cni0  198.18.240.1 (CNI bridge) ─── 198.18.240.2.. (host-local)
//!                             Service range 198.19.240.0/24 (allocation only, but for
//!                             `kubernetes` at .1: one DNAT rule to the API server)
//! ```
//!
//! The API server listens on 127.0.0.1 of this machine, where the older tests
//! reach it. The node reaches it at its own 127.0.0.1 through a pair of socat
//! relays meeting at a Unix socket (which no network namespace hides), and pods
//! on the host network (the agent) reach the `kubernetes` Service's address the
//! way kube-proxy would provide it, by one DNAT rule in the node's namespace.
use std::process::Command;

use crate::run_quiet;
use anyhow::Result;

pub const NODE_NETNS: &str = "sockgate-node";
pub const CLIENT_NETNS: &str = "sockgate-client";
pub const NODE_IP: &str = "198.18.241.1";
const CLIENT_IP: &str = "198.18.241.2";
const NODE_LINK: &str = "sg-node0";
const CLIENT_LINK: &str = "sg-client0";
pub const POD_SUBNET: &str = "198.18.240.0/24";
pub const POD_GATEWAY: &str = "198.18.240.1";
pub const POD_BRIDGE: &str = "sg-cni0";
pub const SERVICE_RANGE: &str = "198.19.240.0/24";
/// The first address of the Service range: the `kubernetes` Service's ClusterIP.
pub const KUBERNETES_SERVICE_IP: &str = "198.19.240.1";

fn ip(args: &[&str]) -> Result<()> {
    run_quiet(Command::new("ip").args(args), &format!("ip {}", args.join(" ")))
}

fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

/// Creates both namespaces and their link, fresh (whatever a previous run left goes first).
pub fn create(apiserver_port: u16) -> Result<()> {
    remove();
    ip(&["netns", "add", NODE_NETNS])?;
    ip(&["netns", "add", CLIENT_NETNS])?;
    ip(&["-n", NODE_NETNS, "link", "set", "lo", "up"])?;
    ip(&["-n", CLIENT_NETNS, "link", "set", "lo", "up"])?;
    ip(&["link", "add", NODE_LINK, "netns", NODE_NETNS, "type", "veth", "peer", "name", CLIENT_LINK, "netns", CLIENT_NETNS])?;
    ip(&["-n", NODE_NETNS, "addr", "add", &format!("{NODE_IP}/24"), "dev", NODE_LINK])?;
    ip(&["-n", CLIENT_NETNS, "addr", "add", &format!("{CLIENT_IP}/24"), "dev", CLIENT_LINK])?;
    ip(&["-n", NODE_NETNS, "link", "set", NODE_LINK, "up"])?;
    ip(&["-n", CLIENT_NETNS, "link", "set", CLIENT_LINK, "up"])?;
    // No default route: nothing on the node reaches beyond 198.18.0.0/15
    // (the kubelet is told its address with --node-ip).
    // The Service range is local to the node: a connect() to it needs a route,
    // and the DNAT below turns it into the API server's relay on 127.0.0.1.
    ip(&["-n", NODE_NETNS, "route", "add", SERVICE_RANGE, "dev", "lo"])?;
    let dnat = [
        "netns", "exec", NODE_NETNS, "iptables", "-t", "nat", "-A", "OUTPUT", "-d", &format!("{KUBERNETES_SERVICE_IP}/32"), "-p", "tcp", "--dport", "443",
        "-j", "DNAT", "--to-destination", &format!("127.0.0.1:{apiserver_port}"),
    ];
    ip(&dnat)?;
    // Pods' traffic is routed by the node (the CNI bridge plugin asks for it too).
    ip(&["netns", "exec", NODE_NETNS, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
}

/// Deletes the pods' namespaces (left by containerd's CNI when it was stopped
/// without tearing its sandboxes down), then the node's and the client's: their
/// interfaces, bridge, routes and iptables rules go with them. Fine when none exist.
pub fn remove() {
    for name in pod_netns() {
        let _ = ip(&["netns", "del", &name]);
    }
    for name in [NODE_NETNS, CLIENT_NETNS] {
        if netns_exists(name) {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// containerd's CRI names each pod's namespace `cni-UUID`; only the node's
/// containerd makes them on this machine.
fn pod_netns() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/run/netns") else { return Vec::new() };
    entries.flatten().filter_map(|e| e.file_name().into_string().ok()).filter(|n| n.starts_with("cni-")).collect()
}

/// The CNI network config: a bridge on the node, host-local addresses from the
/// pod subnet (its state under target/cluster), portmap for hostPorts.
pub fn cni_config(ipam_dir: &std::path::Path) -> String {
    format!(
        r#"{{
  "cniVersion": "0.4.0",
  "name": "sockgate-pods",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "{POD_BRIDGE}",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {{
        "type": "host-local",
        "dataDir": "{}",
        "ranges": [[{{ "subnet": "{POD_SUBNET}", "gateway": "{POD_GATEWAY}" }}]],
        "routes": [{{ "dst": "0.0.0.0/0" }}]
      }}
    }},
    {{ "type": "portmap", "capabilities": {{ "portMappings": true }} }}
  ]
}}
"#,
        ipam_dir.display()
    )
}
