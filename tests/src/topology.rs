//! The test hosts: a client, the gateway node, and backend hosts, each a network
//! namespace, on 198.18.0.0/15 (the benchmarking range; nothing else is ever a target).
//!
//! ```text
//!  client 198.18.1.1 ── 198.18.1.2 node 198.18.2.1 ── 198.18.2.2 backend1
//!                                       198.18.3.1 ── 198.18.3.2 backend2
//! ```
use std::net::Ipv4Addr;

use anyhow::Result;

use crate::netns::{link, NetNs};

pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
pub const BACKEND1: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
pub const BACKEND2: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 2);

/// Dropping it deletes every namespace and kills what runs in them.
pub struct Topology {
    pub client: NetNs,
    pub node: NetNs,
    pub backend1: NetNs,
    pub backend2: NetNs,
}

impl Topology {
    pub fn create() -> Result<Topology> {
        Self::create_on(1)
    }

    /// The same hosts on the /24s 198.18.`base` (client–node), `base`+1
    /// (node–backend1) and `base`+2 (node–backend2): the node is
    /// 198.18.`base`.2, the backends 198.18.`base+1`.2 and 198.18.`base+2`.2.
    pub fn create_on(base: u8) -> Result<Topology> {
        let t = Topology {
            client: NetNs::create("sg-client")?,
            node: NetNs::create("sg-node")?,
            backend1: NetNs::create("sg-backend1")?,
            backend2: NetNs::create("sg-backend2")?,
        };
        let (b1, b2) = (base + 1, base + 2);
        link(&t.client, &format!("198.18.{base}.1/24"), &t.node, &format!("198.18.{base}.2/24"))?;
        link(&t.node, &format!("198.18.{b1}.1/24"), &t.backend1, &format!("198.18.{b1}.2/24"))?;
        link(&t.node, &format!("198.18.{b2}.1/24"), &t.backend2, &format!("198.18.{b2}.2/24"))?;
        Ok(t)
    }
}
