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

/// The UDP echo backend of the datagram-rate workloads (`udp_echo`).
pub const UDP_ECHO: Service = Service {
    name: "udp-echo",
    listener: 9053,
    backend: 7053,
};
/// `iperf3 -u`: its data stream is UDP to the same port as its TCP control
/// connection, so a contender carries this UDP service beside `IPERF`.
pub const IPERF_UDP: Service = Service {
    name: "iperf-udp",
    listener: IPERF.listener,
    backend: IPERF.backend,
};
/// What a contender that carries UDP serves besides `SERVICES`.
pub const UDP_SERVICES: [Service; 2] = [UDP_ECHO, IPERF_UDP];

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
    wait_bound(ns, "-Hltn", ports, timeout)
}

/// Waits until a UDP socket is bound to every one of `ports` in `ns` (`ss -lun`: no datagram is sent to find out).
pub fn wait_udp_bound(ns: &NetNs, ports: &[u16], timeout: Duration) -> Result<()> {
    wait_bound(ns, "-Hlun", ports, timeout)
}

fn wait_bound(ns: &NetNs, ss_flags: &str, ports: &[u16], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let out = ns.command("ss").arg(ss_flags).output()?;
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
            bail!("nothing {} on {missing:?} in {} after {timeout:?}", if ss_flags.contains('u') { "is bound (UDP)" } else { "listens" }, ns.name);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
