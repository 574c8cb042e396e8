//! The hosts every contender is measured on, built afresh for each contender
//! in each round: client, gateway node and backend (network namespaces on
//! 198.18.0.0/15, see `topology`), with the node also routing client ⇄ backend
//! (the direct and DNAT contenders' path), and the backend's programs.
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::backends::Backends;
use crate::netns::NetNs;
use crate::topology::Topology;

/// One service of the backend: its port there, and the port the node listens on for it.
#[derive(Clone, Copy, Debug)]
pub struct Service {
    pub name: &'static str,
    pub listener: u16,
    pub backend: u16,
}

pub const BULK: Service = Service {
    name: "bulk",
    listener: 9000,
    backend: 7000,
};
pub const ECHO: Service = Service {
    name: "echo",
    listener: 9001,
    backend: 7001,
};
/// The handover-stall workload's backend (in the bench process, so that its
/// receipt times and the client's send times are read from one clock).
pub const STALL: Service = Service {
    name: "stall",
    listener: 9002,
    backend: 7002,
};
pub const IPERF: Service = Service {
    name: "iperf",
    listener: 9201,
    backend: 5201,
};
pub const REDIS: Service = Service {
    name: "redis",
    listener: 9379,
    backend: 6379,
};
pub const SERVICES: [Service; 5] = [BULK, ECHO, STALL, IPERF, REDIS];

pub struct Testbed {
    // Declared first: the backends stop before their namespace goes.
    pub backends: Backends,
    pub hosts: Topology,
}

impl Testbed {
    pub fn create(down: Arc<Vec<u8>>) -> Result<Testbed> {
        let hosts = Topology::create()?;
        // The node routes between client and backend (no proxy needed for direct and DNAT).
        sysctl(&hosts.node, "net.ipv4.ip_forward=1")?;
        hosts.client.ip(&["route", "add", "198.18.2.0/24", "via", "198.18.1.2"])?;
        hosts.backend1.ip(&["route", "add", "198.18.1.0/24", "via", "198.18.2.1"])?;
        // The connection-rate workload opens tens of thousands of connections
        // in seconds; the side that closes first keeps each in TIME_WAIT.
        for ns in [&hosts.client, &hosts.node] {
            sysctl(ns, "net.ipv4.ip_local_port_range=10000 65535")?;
            sysctl(ns, "net.ipv4.tcp_tw_reuse=1")?;
        }
        let backends = Backends::start(&hosts.backend1, down)?;
        Ok(Testbed { backends, hosts })
    }
}

/// `sysctl -w` inside a namespace (net.* settings are per namespace).
pub fn sysctl(ns: &NetNs, setting: &str) -> Result<()> {
    let out = ns.command("sysctl").args(["-qw", setting]).output()?;
    if !out.status.success() {
        bail!("sysctl -w {setting} in {}: {}", ns.name, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Waits until something listens on every one of `ports` in `ns` (asked of
/// `ss`, so no probe connection reaches the program).
pub fn wait_listening(ns: &NetNs, ports: &[u16], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let out = ns.command("ss").args(["-Hltn"]).output()?;
        let listing = String::from_utf8_lossy(&out.stdout);
        let missing: Vec<u16> = ports
            .iter()
            .copied()
            .filter(|p| {
                !listing
                    .lines()
                    .any(|l| l.split_whitespace().nth(3).is_some_and(|local| local.ends_with(&format!(":{p}"))))
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nothing listens on {missing:?} in {} after {timeout:?}", ns.name);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
