//! What the XDP filter's maps must hold for a set of rules, and the order in
//! which to change them so no client is ever judged by a state that is
//! neither the old rules nor the new ones.
//!
//! The program judges one packet at a time against whatever the maps hold at
//! that instant, and the agent changes them one entry at a time. [`plan`]
//! orders the changes so that at every step in between, a client both the old
//! and the new rules drop is dropped, and a client both pass is passed:
//! tightening changes (new deny entries, a new allow list's entries) go in
//! before the port's settings switch, loosening ones (old deny entries, old
//! allow entries) come out after. The property test below checks this for
//! random old and new rules, at every step, against [`verdict`], a model of
//! the program's decision.
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use gateway_common::{ClientCidr, ClientCidrEntry, ListenerPort, XdpPortFilter, CIDR_PORT_BITS};

use super::{Cidr, ClientCidrs};

/// An LPM-trie key: bits of `data` to match, and the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TrieKey {
    pub prefix_len: u32,
    pub data: ClientCidr,
}

/// The allow or the deny trie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum List {
    Allow,
    Deny,
}

/// The contents of `XDP_ALLOW`, `XDP_DENY` and `XDP_PORTS`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tables {
    pub allow: BTreeMap<TrieKey, ClientCidrEntry>,
    pub deny: BTreeMap<TrieKey, ClientCidrEntry>,
    pub ports: BTreeMap<ListenerPort, XdpPortFilter>,
}

/// One map write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Insert(List, TrieKey, ClientCidrEntry),
    Remove(List, TrieKey),
    SetPort(ListenerPort, XdpPortFilter),
    RemovePort(ListenerPort),
}

const LISTED: ClientCidrEntry = ClientCidrEntry { listed: 1 };
const NOT_LISTED: ClientCidrEntry = ClientCidrEntry { listed: 0 };
/// `::ffff:0:0/96`, where IPv4 clients live as IPv4-mapped addresses.
const MAPPED_RANGE: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0];

impl Tables {
    /// The maps' contents for `rules` (ports without CIDRs are not filtered).
    pub fn for_rules(rules: &BTreeMap<u16, ClientCidrs>) -> Tables {
        let mut tables = Tables::default();
        for (&port, cidrs) in rules {
            let port = ListenerPort::from(port);
            let allow: BTreeSet<Cidr> = cidrs.allow.iter().copied().collect();
            let deny: BTreeSet<Cidr> = cidrs.deny.iter().copied().collect();
            if allow.is_empty() && deny.is_empty() {
                continue;
            }
            trie_entries(port, &allow, &mut tables.allow);
            trie_entries(port, &deny, &mut tables.deny);
            tables.ports.insert(
                port,
                XdpPortFilter {
                    allow_cidrs: allow.len() as u32,
                    deny_cidrs: deny.len() as u32,
                },
            );
        }
        tables
    }

    /// The state after `op`.
    pub fn apply(&mut self, op: &Op) {
        match *op {
            Op::Insert(list, key, entry) => {
                self.trie_mut(list).insert(key, entry);
            }
            Op::Remove(list, key) => {
                self.trie_mut(list).remove(&key);
            }
            Op::SetPort(port, filter) => {
                self.ports.insert(port, filter);
            }
            Op::RemovePort(port) => {
                self.ports.remove(&port);
            }
        }
    }

    fn trie(&self, list: List) -> &BTreeMap<TrieKey, ClientCidrEntry> {
        match list {
            List::Allow => &self.allow,
            List::Deny => &self.deny,
        }
    }

    fn trie_mut(&mut self, list: List) -> &mut BTreeMap<TrieKey, ClientCidrEntry> {
        match list {
            List::Allow => &mut self.allow,
            List::Deny => &mut self.deny,
        }
    }
}

/// The trie entries of one port's list. An IPv6 network that covers the
/// IPv4-mapped range (`::/0`, `::/64`...) would otherwise match IPv4 clients
/// too (they are looked up as `::ffff:a.b.c.d`): a `listed: 0` entry at
/// `::ffff:0:0/96`, a longer match for every IPv4 client, stops that, unless
/// the list itself holds `0.0.0.0/0`, whose entry it is.
fn trie_entries(
    port: ListenerPort,
    cidrs: &BTreeSet<Cidr>,
    out: &mut BTreeMap<TrieKey, ClientCidrEntry>,
) {
    let mapped_range = TrieKey {
        prefix_len: CIDR_PORT_BITS + 96,
        data: ClientCidr {
            port,
            addr: MAPPED_RANGE,
        },
    };
    for cidr in cidrs {
        if let IpAddr::V6(net) = cidr.addr() {
            if cidr.prefix_len() <= 96 && cidr.contains_mapped_range(net) {
                out.entry(mapped_range).or_insert(NOT_LISTED);
            }
        }
    }
    for cidr in cidrs {
        out.insert(key_of(port, cidr), LISTED);
    }
}

impl Cidr {
    /// Whether this IPv6 network (`net` is its address) holds `::ffff:0:0/96`.
    fn contains_mapped_range(&self, net: std::net::Ipv6Addr) -> bool {
        let mask = u128::MAX
            .checked_shl(128 - u32::from(self.prefix_len()))
            .unwrap_or(0);
        u128::from_be_bytes(MAPPED_RANGE) & mask == u128::from(net)
    }
}

/// The trie key of `cidr` on `port`.
pub fn key_of(port: ListenerPort, cidr: &Cidr) -> TrieKey {
    let (addr, bits) = match cidr.addr() {
        IpAddr::V4(v4) => (
            v4.to_ipv6_mapped().octets(),
            96 + u32::from(cidr.prefix_len()),
        ),
        IpAddr::V6(v6) => (v6.octets(), u32::from(cidr.prefix_len())),
    };
    TrieKey {
        prefix_len: CIDR_PORT_BITS + bits,
        data: ClientCidr { port, addr },
    }
}

/// The writes that turn `current` into `desired`, in a safe order (module docs).
pub fn plan(current: &Tables, desired: &Tables) -> Vec<Op> {
    let mut ops = Vec::new();
    // 1. Tighten the deny lists: entries that exclude first (they only shield
    //    addresses from covering entries inserted in the same step), then those that list.
    push_inserts(&mut ops, List::Deny, current, desired);
    // 2. Widen the allow lists the same way, before any port starts using them.
    push_inserts(&mut ops, List::Allow, current, desired);
    // 3. Switch each port to its new settings (or stop filtering it).
    for (port, filter) in &desired.ports {
        if current.ports.get(port) != Some(filter) {
            ops.push(Op::SetPort(*port, *filter));
        }
    }
    for port in current
        .ports
        .keys()
        .filter(|p| !desired.ports.contains_key(p))
    {
        ops.push(Op::RemovePort(*port));
    }
    // 4. Narrow the allow lists, then 5. loosen the deny lists: entries that
    //    list go (or turn into exclusions) before the exclusions that shield from them.
    push_removals(&mut ops, List::Allow, current, desired);
    push_removals(&mut ops, List::Deny, current, desired);
    ops
}

fn push_inserts(ops: &mut Vec<Op>, list: List, current: &Tables, desired: &Tables) {
    let (now, want) = (current.trie(list), desired.trie(list));
    for listed in [0, 1] {
        for (key, entry) in want.iter().filter(|(_, e)| e.listed == listed) {
            // An exclusion only goes in where nothing was; one replacing a
            // listing entry is a loosening change, made in step 5.
            let due = match now.get(key) {
                None => true,
                Some(old) => listed == 1 && old.listed == 0,
            };
            if due {
                ops.push(Op::Insert(list, *key, *entry));
            }
        }
    }
}

fn push_removals(ops: &mut Vec<Op>, list: List, current: &Tables, desired: &Tables) {
    let (now, want) = (current.trie(list), desired.trie(list));
    for listed in [1, 0] {
        for key in now
            .iter()
            .filter(|(_, e)| e.listed == listed)
            .map(|(k, _)| k)
        {
            match want.get(key) {
                None => ops.push(Op::Remove(list, *key)),
                // A listing entry turning into an exclusion loosens a deny list, narrows an allow list.
                Some(new) if listed == 1 && new.listed == 0 => {
                    ops.push(Op::Insert(list, *key, *new))
                }
                Some(_) => {}
            }
        }
    }
}

#[cfg(test)]
/// The program's decision for a TCP packet from `client` to a node address on
/// `port`, given the maps' contents: true drops it (a model of `judge` in
/// gateway-ebpf/src/xdp_filter.rs, for tests).
pub fn verdict(tables: &Tables, port: ListenerPort, client: IpAddr) -> bool {
    let Some(filter) = tables.ports.get(&port) else {
        return false;
    };
    let addr = match client {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    let listed = |trie: &BTreeMap<TrieKey, ClientCidrEntry>| {
        longest_match(trie, port, addr).is_some_and(|e| e.listed != 0)
    };
    listed(&tables.deny) || (filter.allow_cidrs != 0 && !listed(&tables.allow))
}

#[cfg(test)]
/// The kernel's longest-prefix match: bits compared from the key data's
/// first byte, most significant bit first.
fn longest_match(
    trie: &BTreeMap<TrieKey, ClientCidrEntry>,
    port: ListenerPort,
    addr: [u8; 16],
) -> Option<ClientCidrEntry> {
    let probe = bytes(&ClientCidr { port, addr });
    trie.iter()
        .filter(|(key, _)| {
            let data = bytes(&key.data);
            (0..key.prefix_len as usize)
                .all(|bit| (data[bit / 8] ^ probe[bit / 8]) & (0x80 >> (bit % 8)) == 0)
        })
        .max_by_key(|(key, _)| key.prefix_len)
        .map(|(_, entry)| *entry)
}

#[cfg(test)]
/// The key data as the kernel sees it: the port's bytes in memory order, then the address.
fn bytes(data: &ClientCidr) -> [u8; 20] {
    let mut out = [0u8; 20];
    out[..4].copy_from_slice(&data.port.to_ne_bytes());
    out[4..].copy_from_slice(&data.addr);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    fn rules(port: u16, allow: &[&str], deny: &[&str]) -> BTreeMap<u16, ClientCidrs> {
        BTreeMap::from([(
            port,
            ClientCidrs {
                allow: cidrs(allow),
                deny: cidrs(deny),
            },
        )])
    }

    fn drops(rules: &BTreeMap<u16, ClientCidrs>, port: u16, client: &str) -> bool {
        verdict(
            &Tables::for_rules(rules),
            port.into(),
            client.parse().unwrap(),
        )
    }

    #[test]
    fn a_deny_list_drops_its_clients_only() {
        let r = rules(8088, &[], &["198.18.1.0/24", "2001:db8::/32"]);
        assert!(drops(&r, 8088, "198.18.1.1"));
        assert!(drops(&r, 8088, "2001:db8::7"));
        assert!(!drops(&r, 8088, "198.18.2.1"));
        assert!(!drops(&r, 8088, "2001:db9::7"));
        assert!(
            !drops(&r, 8089, "198.18.1.1"),
            "another port is not filtered"
        );
    }

    #[test]
    fn an_allow_list_drops_everyone_else_and_deny_wins_over_it() {
        let r = rules(8088, &["198.18.0.0/15"], &["198.18.1.1"]);
        assert!(!drops(&r, 8088, "198.18.1.2"));
        assert!(drops(&r, 8088, "198.18.1.1"), "deny wins over allow");
        assert!(drops(&r, 8088, "192.0.2.1"), "not in the allow list");
        assert!(
            drops(&r, 8088, "2001:db8::1"),
            "an IPv6 client is in no IPv4 allow list"
        );
    }

    #[test]
    fn no_lists_no_filtering() {
        let r = rules(8088, &[], &[]);
        assert!(Tables::for_rules(&r).ports.is_empty());
        assert!(!drops(&r, 8088, "192.0.2.1"));
    }

    #[test]
    fn ipv6_networks_never_match_ipv4_clients_and_the_reverse() {
        let r = rules(8088, &[], &["::/0"]);
        assert!(drops(&r, 8088, "2001:db8::1"));
        assert!(!drops(&r, 8088, "198.18.1.1"), "::/0 holds no IPv4 client");
        let r = rules(8088, &["::/0"], &[]);
        assert!(
            drops(&r, 8088, "198.18.1.1"),
            "an IPv4 client is not in an allow list of ::/0"
        );
        let r = rules(8088, &["::/0", "10.0.0.0/8"], &[]);
        assert!(!drops(&r, 8088, "10.1.1.1"));
        assert!(drops(&r, 8088, "11.1.1.1"));
        let r = rules(8088, &[], &["::/0", "0.0.0.0/0"]);
        assert!(
            drops(&r, 8088, "198.18.1.1") && drops(&r, 8088, "2001:db8::1"),
            "both families denied"
        );
        let r = rules(8088, &[], &["0.0.0.0/0"]);
        assert!(
            !drops(&r, 8088, "2001:db8::1"),
            "0.0.0.0/0 holds no IPv6 client"
        );
        let r = rules(8088, &[], &["::ffff:198.18.1.1"]);
        assert!(drops(&r, 8088, "198.18.1.1"), "an IPv4-mapped CIDR is IPv4");
    }

    #[test]
    fn the_tables_count_each_lists_distinct_cidrs() {
        let t = Tables::for_rules(&rules(8088, &["10.0.0.0/8", "10.1.2.3/8"], &["::/0"]));
        assert_eq!(
            t.ports[&8088],
            XdpPortFilter {
                allow_cidrs: 1,
                deny_cidrs: 1
            }
        );
        assert_eq!(t.deny.len(), 2, "::/0 and its IPv4 exclusion: {:?}", t.deny);
        assert_eq!(
            key_of(8088, &"10.0.0.0/8".parse().unwrap()).prefix_len,
            32 + 96 + 8
        );
        assert_eq!(
            key_of(8088, &"2001:db8::/32".parse().unwrap()).prefix_len,
            32 + 32
        );
    }

    #[test]
    fn planning_from_the_rules_to_themselves_writes_nothing() {
        let t = Tables::for_rules(&rules(8088, &["10.0.0.0/8", "::/0"], &["10.1.0.0/16"]));
        assert!(plan(&t, &t).is_empty());
    }

    #[test]
    fn a_new_deny_entry_goes_in_before_the_port_and_an_old_one_comes_out_after() {
        let old = Tables::for_rules(&rules(8088, &[], &["10.0.0.0/8"]));
        let new = Tables::for_rules(&rules(8088, &[], &["11.0.0.0/8"]));
        let ops = plan(&old, &new);
        let at = |pred: &dyn Fn(&Op) -> bool| ops.iter().position(pred).unwrap();
        let insert = at(&|op| matches!(op, Op::Insert(List::Deny, ..)));
        let remove = at(&|op| matches!(op, Op::Remove(List::Deny, ..)));
        assert!(insert < remove, "{ops:?}");
    }

    const UNIVERSE: &[&str] = &[
        "0.0.0.0/0",
        "10.0.0.0/8",
        "10.1.0.0/16",
        "10.1.2.3",
        "198.18.1.1",
        "198.18.0.0/15",
        "::/0",
        "::/64",
        "::ffff:0:0/95",
        "2001:db8::/32",
        "2001:db8::1",
        "fd00::/8",
    ];
    const CLIENTS: &[&str] = &[
        "10.1.2.3",
        "10.1.9.9",
        "10.9.9.9",
        "11.0.0.1",
        "198.18.1.1",
        "198.19.0.1",
        "2001:db8::1",
        "2001:db8::2",
        "fd00::1",
        "::1",
        "::2:1",
    ];

    fn arbitrary_rules() -> impl Strategy<Value = BTreeMap<u16, ClientCidrs>> {
        let list = proptest::collection::vec(proptest::sample::select(UNIVERSE), 0..4);
        let port_rules = (list.clone(), list).prop_map(|(allow, deny)| ClientCidrs {
            allow: cidrs(&allow),
            deny: cidrs(&deny),
        });
        proptest::collection::btree_map(
            proptest::sample::select(&[1u16, 2, 3][..]),
            port_rules,
            0..3,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn every_step_of_a_change_agrees_with_the_old_and_new_rules_wherever_they_agree(old in arbitrary_rules(), new in arbitrary_rules()) {
            let (before, after) = (Tables::for_rules(&old), Tables::for_rules(&new));
            let mut state = before.clone();
            let ops = plan(&before, &after);
            for (step, op) in ops.iter().enumerate() {
                state.apply(op);
                for port in [1u32, 2, 3] {
                    for client in CLIENTS {
                        let client: IpAddr = client.parse().unwrap();
                        let (was, will, now) = (verdict(&before, port, client), verdict(&after, port, client), verdict(&state, port, client));
                        prop_assert!(!(was && will) || now, "step {step} ({op:?}) passes {client} on {port}, which both rule sets drop; ops {ops:?}");
                        prop_assert!(was || will || !now, "step {step} ({op:?}) drops {client} on {port}, which both rule sets pass; ops {ops:?}");
                    }
                }
            }
            prop_assert_eq!(state, after, "the plan must end in the desired tables");
        }

        #[test]
        fn the_model_agrees_with_the_rules_as_written(rules in arbitrary_rules()) {
            let tables = Tables::for_rules(&rules);
            for port in [1u16, 2, 3] {
                for client in CLIENTS {
                    let client: IpAddr = client.parse().unwrap();
                    let expected = rules.get(&port).is_some_and(|r| {
                        r.deny.iter().any(|c| c.contains(client)) || (!r.allow.is_empty() && !r.allow.iter().any(|c| c.contains(client)))
                    });
                    prop_assert_eq!(verdict(&tables, port.into(), client), expected, "port {} client {} rules {:?}", port, client, rules);
                }
            }
        }
    }
}
