//! Whether a new flow may start: the listener's clientCIDRs (deny wins over
//! allow; an allow list admits only its CIDRs) and its flow cap.
//!
//! Judged once per flow, at its first datagram: a flow's later datagrams
//! are the flow's. When a policy tightens, the agent's sweep ends the flows
//! of clients it no longer admits, so the next datagram is judged afresh.
use aya_ebpf::{
    btf_maps::{lpm_trie::Key, Array, LpmTrie},
    macros::btf_map,
};
use gateway_common::{UdpCidrKey, UdpListenerPort, UdpNatListener, UDP_NAT_MAX_CIDRS, UDP_NAT_MAX_LISTENERS};

use super::count;

const MAX_CIDRS: usize = UDP_NAT_MAX_CIDRS as usize;
const MAX_LISTENERS: usize = UDP_NAT_MAX_LISTENERS as usize;
/// Key bits: the port's 32, then the address's 32.
const FULL_PREFIX: u32 = 64;

#[btf_map]
static UDP_NAT_ALLOW: LpmTrie<UdpCidrKey, u32, MAX_CIDRS> = LpmTrie::new();
#[btf_map]
static UDP_NAT_DENY: LpmTrie<UdpCidrKey, u32, MAX_CIDRS> = LpmTrie::new();
/// Live flows per listener index: the program adds each flow it creates,
/// the agent's sweep sets the count it finds in the table (so flows the
/// LRU evicted or the sweep ended leave it).
#[btf_map]
static UDP_NAT_LIVE: Array<u64, MAX_LISTENERS> = Array::new();

#[inline(always)]
pub fn admits(listener: &UdpNatListener, port: UdpListenerPort, client: [u8; 4]) -> bool {
    let key = Key::new(FULL_PREFIX, UdpCidrKey { port: port.to_be_bytes(), addr: client });
    let denied = UDP_NAT_DENY.get(&key).is_some() || (listener.allow_cidrs != 0 && UDP_NAT_ALLOW.get(&key).is_none());
    if denied {
        count(port, |s| s.dropped_client_denied += 1);
        return false;
    }
    if listener.max_flows != 0 {
        let live = UDP_NAT_LIVE.get(listener.index).copied().unwrap_or(0);
        if live >= u64::from(listener.max_flows) {
            count(port, |s| s.dropped_flow_limit += 1);
            return false;
        }
    }
    true
}

/// A flow was created on `listener`.
#[inline(always)]
pub fn created(listener: &UdpNatListener) {
    if let Some(live) = UDP_NAT_LIVE.get_ptr_mut(listener.index) {
        // SAFETY: an element of an array map, valid for this run; other CPUs add to it too.
        crate::counter::add64(unsafe { &mut *live }, 1);
    }
}
