//! The XDP client filter on a real interface: the client host (198.18.1.1,
//! fd00:5:6::1) connects to TCP echo servers on the gateway node (198.18.1.2,
//! fd00:5:6::2) while `XdpFilter` runs on the node's client-facing veth.
//! Denied clients' SYNs never reach the node's TCP stack (the connect times
//! out, the drop counters rise), allowed ones get their bytes echoed back
//! intact (SHA-256), rule changes apply to the next packet, and nothing of the
//! filter remains after it is dropped. Needs root and BPF.
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use gateway_agent::dataplane::xdp::{read_pinned_stats, AttachMode, ClientCidrs, XdpFilter};
use sockgate_tests::integrity::{exchange, pattern, Received};
use sockgate_tests::netns::{unique_name, NetNs};
use sockgate_tests::topology::{Topology, GATEWAY};

// A ULA prefix, inside the test's own namespaces only.
const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 5, 6, 0, 0, 0, 0, 1);
const NODE_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 5, 6, 0, 0, 0, 0, 2);
/// The node's veth facing the client (netns::link names it after the peer's role).
const NODE_INTERFACE: &str = "to-client";
const FILTERED: u16 = 7001;
const OTHER: u16 = 7002;
/// How long a connect may take before the test calls it dropped: a SYN the
/// node answers comes back within a millisecond on veth.
const CONNECT_DEADLINE: Duration = Duration::from_millis(1500);

/// The client and the node, with echo servers on FILTERED and OTHER (both
/// families), and the filter loaded on the node. The filter is dropped (in the
/// node's namespace) before the namespaces go.
struct Bench {
    filter: Option<XdpFilter>,
    hosts: Topology,
    pin_dir: String,
}

impl Bench {
    fn start() -> Bench {
        let hosts = Topology::create().unwrap();
        hosts
            .client
            .ip(&[
                "addr",
                "add",
                &format!("{CLIENT_V6}/64"),
                "dev",
                "to-node",
                "nodad",
            ])
            .unwrap();
        hosts
            .node
            .ip(&[
                "addr",
                "add",
                &format!("{NODE_V6}/64"),
                "dev",
                NODE_INTERFACE,
                "nodad",
            ])
            .unwrap();
        for port in [FILTERED, OTHER] {
            echo_server(&hosts.node, port);
        }
        let pin_dir = format!("/sys/fs/bpf/{}", unique_name("sockgate-xdp-test"));
        let mut filter = load(&hosts.node, &pin_dir).unwrap();
        filter
            .set_node_addresses(&[GATEWAY.into(), NODE_V6.into()])
            .unwrap();
        let filter = attach(&hosts.node, filter).unwrap();
        Bench {
            filter: Some(filter),
            hosts,
            pin_dir,
        }
    }

    fn filter(&mut self) -> &mut XdpFilter {
        self.filter.as_mut().unwrap()
    }

    fn set_rules(&mut self, rules: &[(u16, &[&str], &[&str])]) {
        let rules: BTreeMap<u16, ClientCidrs> = rules
            .iter()
            .map(|(port, allow, deny)| {
                let parse = |list: &[&str]| list.iter().map(|c| c.parse().unwrap()).collect();
                (
                    *port,
                    ClientCidrs {
                        allow: parse(allow),
                        deny: parse(deny),
                    },
                )
            })
            .collect();
        self.filter().set_rules(&rules).unwrap();
    }

    fn connect(&self, to: IpAddr, port: u16) -> std::io::Result<TcpStream> {
        let addr = SocketAddr::new(to, port);
        let stream = self
            .hosts
            .client
            .enter(move || TcpStream::connect_timeout(&addr, CONNECT_DEADLINE))
            .unwrap()?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        stream.set_write_timeout(Some(Duration::from_secs(20)))?;
        Ok(stream)
    }

    /// Connects and checks that 256 KiB come back intact.
    fn assert_echoes(&self, to: IpAddr, port: u16, seed: u64) {
        let stream = self
            .connect(to, port)
            .unwrap_or_else(|e| panic!("connecting to {to}:{port}: {e}"));
        let data = pattern(seed, 256 * 1024);
        let got = exchange(stream, data.clone()).unwrap();
        assert_eq!(
            got,
            Received::of(&data),
            "the echo from {to}:{port} differs from what was sent"
        );
    }

    /// Asserts the client's connection attempt gets no answer at all (its
    /// SYNs are dropped: no SYN-ACK, no reset) and returns how long it tried.
    fn assert_dropped(&self, to: IpAddr, port: u16) {
        let started = Instant::now();
        match self.connect(to, port) {
            Ok(_) => panic!("connected to {to}:{port}, which the filter should drop"),
            Err(e) => assert_eq!(
                e.kind(),
                ErrorKind::TimedOut,
                "connecting to {to}:{port}: {e} (a refusal would mean the SYN got through)"
            ),
        }
        assert!(
            started.elapsed() < CONNECT_DEADLINE + Duration::from_secs(1),
            "the failed connect must be bounded"
        );
    }

    fn dropped_packets(&self, port: u16) -> u64 {
        self.filter
            .as_ref()
            .unwrap()
            .drops()
            .unwrap()
            .get(&port)
            .map_or(0, |(packets, _)| *packets)
    }

    /// The XDP lines of `ip -d link show` for the node's interface.
    fn xdp_state(&self) -> String {
        let out = self
            .hosts
            .node
            .ip(&["-d", "link", "show", "dev", NODE_INTERFACE])
            .unwrap();
        out.lines()
            .filter(|l| l.contains("xdp"))
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        if let Some(filter) = self.filter.take() {
            let _ = self.hosts.node.enter(move || drop(filter));
        }
    }
}

fn load(node: &NetNs, pin_dir: &str) -> anyhow::Result<XdpFilter> {
    let pin_dir = pin_dir.to_string();
    node.enter(move || XdpFilter::load(Path::new(&pin_dir)))?
}

/// Attaches `filter` to the node's client-facing interface, from inside the
/// node's namespace (where the filter is dropped too if attaching fails).
fn attach(node: &NetNs, mut filter: XdpFilter) -> anyhow::Result<XdpFilter> {
    node.enter(move || filter.attach(NODE_INTERFACE).map(|_| filter))?
}

/// A TCP echo server on [::]:port (dual stack) in `host`, a thread per connection.
fn echo_server(host: &NetNs, port: u16) {
    let listener = host
        .enter(move || TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut writer = stream.try_clone()?;
                let mut reader = stream;
                std::io::copy(&mut reader, &mut writer)?;
                writer.shutdown(Shutdown::Write)
            });
        }
    });
}

/// The program id in an `ip -d link show` XDP line ("prog/xdp id 42 ...").
fn program_id(xdp_state: &str) -> Option<u32> {
    let words: Vec<&str> = xdp_state.split_whitespace().collect();
    let at = words.iter().position(|w| w.starts_with("prog/xdp"))?;
    (words.get(at + 1) == Some(&"id"))
        .then(|| words.get(at + 2)?.parse().ok())
        .flatten()
}

/// The id of the XDP bpf_link running program `program`, per bpftool.
fn xdp_link_running(program: u32) -> Option<u64> {
    let out = Command::new("bpftool")
        .args(["-j", "link", "list"])
        .output()
        .unwrap();
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    links
        .as_array()?
        .iter()
        .find_map(|l| (l["type"] == "xdp" && l["prog_id"] == program).then(|| l["id"].as_u64())?)
}

/// A bpffs pin the test made, removed however the test ends.
struct RemovedOnDrop(String);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn gateway() -> IpAddr {
    GATEWAY.into()
}

fn bpftool_dump(pin: &str) -> serde_json::Value {
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned", pin])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bpftool map dump pinned {pin}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_filter_attaches_to_a_veth_in_driver_mode_and_leaves_nothing_behind() {
    let mut bench = Bench::start();
    assert_eq!(
        bench.filter().attachments(),
        &[(NODE_INTERFACE.to_string(), AttachMode::Driver)]
    );
    let state = bench.xdp_state();
    assert!(
        state.contains("prog/xdp id") && state.contains("sockgate_xdp"),
        "ip -d link show: {state}"
    );
    for map in [
        "XDP_ALLOW",
        "XDP_DENY",
        "XDP_PORTS",
        "XDP_NODE_ADDRS",
        "XDP_STATS",
    ] {
        assert!(
            Path::new(&bench.pin_dir).join(map).exists(),
            "{map} is not pinned"
        );
    }
    let pin_dir = bench.pin_dir.clone();
    let filter = bench.filter.take().unwrap();
    bench.hosts.node.enter(move || drop(filter)).unwrap();
    assert_eq!(
        bench.xdp_state(),
        "",
        "an XDP program is still attached after the filter was dropped"
    );
    assert!(
        !Path::new(&pin_dir).exists(),
        "pins left behind in {pin_dir}"
    );
}

#[test]
fn a_denied_client_cannot_connect_and_its_dropped_packets_are_counted_while_another_port_is_untouched(
) {
    let mut bench = Bench::start();
    bench.set_rules(&[(FILTERED, &[], &["198.18.1.0/24"])]);
    bench.assert_dropped(gateway(), FILTERED);
    let (packets, bytes) = bench.filter().drops().unwrap()[&FILTERED];
    // At least the first SYN: an Ethernet frame of at least 14 + 20 + 20 bytes.
    assert!(
        packets >= 1 && bytes >= packets * 54,
        "drops on {FILTERED}: {packets} packets, {bytes} bytes"
    );
    // The same client reaches another port of the same node, intact, and
    // nothing is counted for it (it is not filtered).
    bench.assert_echoes(gateway(), OTHER, 1);
    assert!(
        !bench.filter().stats().unwrap().contains_key(&OTHER),
        "an unfiltered port has no counters"
    );
    // Even denying everyone on FILTERED leaves OTHER alone.
    bench.set_rules(&[(FILTERED, &[], &["0.0.0.0/0", "::/0"])]);
    bench.assert_dropped(gateway(), FILTERED);
    bench.assert_dropped(NODE_V6.into(), FILTERED);
    bench.assert_echoes(gateway(), OTHER, 2);
    bench.assert_echoes(NODE_V6.into(), OTHER, 3);
    assert!(
        bench.dropped_packets(FILTERED) > packets,
        "the later drops are counted too"
    );
}

#[test]
fn an_allow_list_admits_its_clients_only() {
    let mut bench = Bench::start();
    bench.set_rules(&[(FILTERED, &["198.18.2.0/24"], &[])]);
    bench.assert_dropped(gateway(), FILTERED);
    let dropped = bench.dropped_packets(FILTERED);
    assert!(dropped >= 1);
    bench.set_rules(&[(FILTERED, &["198.18.2.0/24", "198.18.1.0/24"], &[])]);
    bench.assert_echoes(gateway(), FILTERED, 4);
    let stats = bench.filter().stats().unwrap()[&FILTERED];
    assert_eq!(
        stats.dropped_packets, dropped,
        "nothing of the admitted connection was dropped"
    );
    // SYN, ACKs and 256 KiB of data: far more than a handful of packets passed.
    assert!(
        stats.passed_packets >= 10 && stats.passed_bytes >= 256 * 1024,
        "{stats:?}"
    );
    // Deny wins over allow.
    bench.set_rules(&[(FILTERED, &["198.18.1.0/24"], &["198.18.1.1"])]);
    bench.assert_dropped(gateway(), FILTERED);
}

#[test]
fn rule_changes_apply_to_the_next_packet_without_reloading_the_program() {
    let mut bench = Bench::start();
    let program = program_id(&bench.xdp_state()).expect("the program's id in ip -d link show");
    bench.assert_echoes(gateway(), FILTERED, 5);
    bench.set_rules(&[(FILTERED, &[], &["198.18.1.1/32"])]);
    bench.assert_dropped(gateway(), FILTERED);
    bench.set_rules(&[]);
    bench.assert_echoes(gateway(), FILTERED, 6);

    // An established connection stalls while its client is denied, and
    // resumes, losing nothing, once it is admitted again (TCP retransmits).
    let mut held = bench.connect(gateway(), FILTERED).unwrap();
    let first = pattern(7, 4096);
    held.write_all(&first).unwrap();
    let mut echoed = vec![0u8; first.len()];
    held.read_exact(&mut echoed).unwrap();
    assert_eq!(echoed, first);
    bench.set_rules(&[(FILTERED, &[], &["198.18.1.1/32"])]);
    let second = pattern(8, 4096);
    held.write_all(&second).unwrap();
    held.set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let mut byte = [0u8; 1];
    let stalled = held.read(&mut byte);
    assert!(
        matches!(&stalled, Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut),
        "echo arrived while denied: {stalled:?}"
    );
    bench.set_rules(&[]);
    held.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut rest = vec![0u8; second.len()];
    held.read_exact(&mut rest).unwrap();
    assert_eq!(
        rest, second,
        "the stalled bytes arrive intact once admitted"
    );

    assert_eq!(
        program_id(&bench.xdp_state()),
        Some(program),
        "the same program stays attached throughout"
    );
}

#[test]
fn ipv6_clients_are_filtered_by_ipv6_cidrs_and_never_by_ipv4_ones() {
    let mut bench = Bench::start();
    let node_v6: IpAddr = NODE_V6.into();
    bench.set_rules(&[(FILTERED, &[], &["fd00:5:6::1"])]);
    bench.assert_dropped(node_v6, FILTERED);
    bench.assert_echoes(gateway(), FILTERED, 9);
    // ::/0 holds every IPv6 client and no IPv4 one.
    bench.set_rules(&[(FILTERED, &[], &["::/0"])]);
    bench.assert_dropped(node_v6, FILTERED);
    bench.assert_echoes(gateway(), FILTERED, 10);
    // An IPv6 allow list admits its clients and no IPv4 client.
    bench.set_rules(&[(FILTERED, &["fd00:5:6::/64"], &[])]);
    bench.assert_echoes(node_v6, FILTERED, 11);
    bench.assert_dropped(gateway(), FILTERED);
    // 0.0.0.0/0 holds no IPv6 client.
    bench.set_rules(&[(FILTERED, &[], &["0.0.0.0/0"])]);
    bench.assert_echoes(node_v6, FILTERED, 12);
    bench.assert_dropped(gateway(), FILTERED);
    assert!(bench.dropped_packets(FILTERED) >= 4);
}

#[test]
fn only_packets_to_the_node_addresses_it_is_given_are_judged() {
    let mut bench = Bench::start();
    bench.set_rules(&[(FILTERED, &[], &["198.18.1.1", "fd00:5:6::1"])]);
    // Another address: the node's own are not covered, nothing is judged.
    bench
        .filter()
        .set_node_addresses(&["198.18.9.9".parse().unwrap()])
        .unwrap();
    bench.assert_echoes(gateway(), FILTERED, 13);
    bench.assert_echoes(NODE_V6.into(), FILTERED, 14);
    // 0.0.0.0: every IPv4 destination, no IPv6 one.
    bench
        .filter()
        .set_node_addresses(&[Ipv4Addr::UNSPECIFIED.into()])
        .unwrap();
    bench.assert_dropped(gateway(), FILTERED);
    bench.assert_echoes(NODE_V6.into(), FILTERED, 15);
    // ::: every destination, as a dual-stack listener.
    bench
        .filter()
        .set_node_addresses(&[Ipv6Addr::UNSPECIFIED.into()])
        .unwrap();
    bench.assert_dropped(gateway(), FILTERED);
    bench.assert_dropped(NODE_V6.into(), FILTERED);
    // None: nothing is judged.
    bench.filter().set_node_addresses(&[]).unwrap();
    bench.assert_echoes(gateway(), FILTERED, 16);
}

#[test]
fn bpftool_prints_the_pinned_maps_with_field_names_and_another_process_reads_the_counters() {
    let mut bench = Bench::start();
    bench.set_rules(&[(FILTERED, &["198.18.0.0/15"], &["198.18.1.1"])]);
    bench.assert_dropped(gateway(), FILTERED);
    let deny = bpftool_dump(&format!("{}/XDP_DENY", bench.pin_dir));
    let entry = &deny.as_array().unwrap()[0]["formatted"];
    assert_eq!(entry["key"]["data"]["port"], FILTERED, "{deny}");
    assert_eq!(
        entry["key"]["prefix_len"],
        32 + 128,
        "the port's 32 bits and a whole IPv4-mapped address: {deny}"
    );
    assert_eq!(entry["value"]["listed"], 1, "{deny}");
    let allow = bpftool_dump(&format!("{}/XDP_ALLOW", bench.pin_dir));
    assert_eq!(
        allow.as_array().unwrap()[0]["formatted"]["key"]["prefix_len"],
        32 + 96 + 15,
        "{allow}"
    );
    let ports = bpftool_dump(&format!("{}/XDP_PORTS", bench.pin_dir));
    let port = &ports.as_array().unwrap()[0]["formatted"];
    assert_eq!(port["key"], FILTERED, "{ports}");
    assert_eq!(
        (
            port["value"]["allow_cidrs"].as_u64(),
            port["value"]["deny_cidrs"].as_u64()
        ),
        (Some(1), Some(1)),
        "{ports}"
    );
    let stats = bpftool_dump(&format!("{}/XDP_STATS", bench.pin_dir));
    let text = stats.to_string();
    assert!(
        text.contains("dropped_packets") && text.contains(&format!("\"key\":{FILTERED}")),
        "{stats}"
    );
    // Another process reads the same counters from the pin (gateway-agent inspect would).
    let pinned = read_pinned_stats(Path::new(&bench.pin_dir)).unwrap();
    assert_eq!(pinned, bench.filter().stats().unwrap());
    assert!(pinned[&FILTERED].dropped_packets >= 1, "{pinned:?}");
}

#[test]
fn a_sockgate_program_left_attached_by_netlink_and_stale_pins_are_replaced_at_load() {
    let mut bench = Bench::start();
    // Pin the running program, drop the filter (its link goes), and attach the
    // pinned program again the way a crashed loader's netlink attachment
    // would remain: `ip link set ... xdpgeneric pinned`.
    let old = program_id(&bench.xdp_state()).unwrap();
    let prog_pin = RemovedOnDrop(format!("{}-prog", bench.pin_dir));
    let out = Command::new("bpftool")
        .args(["prog", "pin", "id", &old.to_string(), &prog_pin.0])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let filter = bench.filter.take().unwrap();
    bench.hosts.node.enter(move || drop(filter)).unwrap();
    // Not `ip -n`: it remounts /sys, hiding the pin; setns alone keeps bpffs in view.
    let out = bench
        .hosts
        .node
        .command("ip")
        .args([
            "link",
            "set",
            "dev",
            NODE_INTERFACE,
            "xdpgeneric",
            "pinned",
            &prog_pin.0,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip link set xdpgeneric pinned: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(prog_pin);
    let state = bench.xdp_state();
    assert!(
        state.contains(" xdpgeneric ") && program_id(&state) == Some(old),
        "{state}"
    );
    // A stale pin of another kind where XDP_DENY belongs.
    std::fs::create_dir_all(&bench.pin_dir).unwrap();
    let stale_pin = format!("{}/XDP_DENY", bench.pin_dir);
    let out = Command::new("bpftool")
        .args([
            "map", "create", &stale_pin, "type", "hash", "key", "4", "value", "4", "entries", "1",
            "name", "stale",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let filter = load(&bench.hosts.node, &bench.pin_dir).unwrap();
    bench.filter = Some(attach(&bench.hosts.node, filter).unwrap());
    assert_eq!(
        bench.filter().attachments(),
        &[(NODE_INTERFACE.to_string(), AttachMode::Driver)]
    );
    let state = bench.xdp_state();
    let new = program_id(&state).unwrap();
    assert!(
        new != old && state.contains("prog/xdp id") && !state.contains("xdpgeneric"),
        "the stale program must be replaced: {state}"
    );
    let show = Command::new("bpftool")
        .args(["-j", "map", "show", "pinned", &stale_pin])
        .output()
        .unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(
        shown["type"], "lpm_trie",
        "the stale pin must be replaced by the filter's map: {shown}"
    );
    // And the new filter works.
    bench
        .filter()
        .set_node_addresses(&[GATEWAY.into()])
        .unwrap();
    bench.set_rules(&[(FILTERED, &[], &["198.18.1.1"])]);
    bench.assert_dropped(gateway(), FILTERED);
    bench.assert_echoes(gateway(), OTHER, 17);
}

#[test]
fn a_second_agents_filter_takes_over_a_running_one_in_place_with_its_pins_and_counters() {
    let mut bench = Bench::start();
    bench.set_rules(&[(FILTERED, &[], &["198.18.1.1"])]);
    bench.assert_dropped(gateway(), FILTERED);
    let counted = bench.dropped_packets(FILTERED);
    let first = program_id(&bench.xdp_state()).unwrap();
    let link = xdp_link_running(first).expect("the first filter's bpf_link");
    // The next agent's filter, in the same pin directory: rules first, then attach.
    let mut second = load(&bench.hosts.node, &bench.pin_dir).unwrap();
    second.set_node_addresses(&[GATEWAY.into()]).unwrap();
    second
        .set_rules(&BTreeMap::from([(
            FILTERED,
            ClientCidrs {
                allow: vec![],
                deny: vec!["198.18.1.1".parse().unwrap()],
            },
        )]))
        .unwrap();
    let second = attach(&bench.hosts.node, second).unwrap();
    assert_eq!(
        second.attachments(),
        &[(NODE_INTERFACE.to_string(), AttachMode::Driver)],
        "the link keeps its mode"
    );
    let taken = program_id(&bench.xdp_state()).unwrap();
    assert_ne!(taken, first, "the second filter's program runs now");
    assert_eq!(
        xdp_link_running(taken),
        Some(link),
        "in the same bpf_link: swapped in place, never detached"
    );
    assert!(
        second.drops().unwrap()[&FILTERED].0 >= counted,
        "the first filter's drop counts carry over"
    );
    // The first one going away leaves the second attached, pinned and working.
    let filter = bench.filter.replace(second).unwrap();
    bench.hosts.node.enter(move || drop(filter)).unwrap();
    assert_eq!(program_id(&bench.xdp_state()), Some(taken));
    for map in [
        "XDP_ALLOW",
        "XDP_DENY",
        "XDP_PORTS",
        "XDP_NODE_ADDRS",
        "XDP_STATS",
    ] {
        assert!(
            Path::new(&bench.pin_dir).join(map).exists(),
            "the first filter removed the second's pin {map}"
        );
    }
    bench.assert_dropped(gateway(), FILTERED);
    bench.assert_echoes(gateway(), OTHER, 18);
    // The second going away detaches the link it took over, and unpins.
    let filter = bench.filter.take().unwrap();
    bench.hosts.node.enter(move || drop(filter)).unwrap();
    assert_eq!(
        bench.xdp_state(),
        "",
        "the taken-over link must be detached"
    );
    assert!(!Path::new(&bench.pin_dir).exists());
}

#[test]
fn another_programs_xdp_is_never_replaced_and_the_error_says_whose_it_is() {
    let bench = Bench::start();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("pass.c");
    std::fs::write(&source, "__attribute__((section(\"xdp\"), used)) int other_pass(void *ctx) { return 2; }\nchar _license[] __attribute__((section(\"license\"), used)) = \"GPL\";\n").unwrap();
    let object = dir.path().join("pass.o");
    let out = Command::new("clang-22")
        .args(["-O2", "-target", "bpf", "-c"])
        .arg(&source)
        .arg("-o")
        .arg(&object)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "clang-22: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The bench's own filter holds the interface; free it for the other program.
    let mut bench = bench;
    let filter = bench.filter.take().unwrap();
    bench.hosts.node.enter(move || drop(filter)).unwrap();
    bench
        .hosts
        .node
        .ip(&[
            "link",
            "set",
            "dev",
            NODE_INTERFACE,
            "xdpgeneric",
            "obj",
            object.to_str().unwrap(),
            "sec",
            "xdp",
        ])
        .unwrap();
    let before = bench.xdp_state();
    assert!(before.contains("other_pass"), "{before}");

    let filter = load(&bench.hosts.node, &bench.pin_dir).unwrap();
    let error = attach(&bench.hosts.node, filter)
        .err()
        .expect("attaching must fail while another program holds the interface");
    let message = format!("{error:#}");
    assert!(
        message.contains("other_pass")
            && message.contains("not sockgate's")
            && message.contains(NODE_INTERFACE),
        "{message}"
    );
    assert_eq!(
        bench.xdp_state(),
        before,
        "the other program stays attached"
    );
    assert!(
        !Path::new(&bench.pin_dir).exists(),
        "the filter that failed to attach leaves no pins"
    );
    bench
        .hosts
        .node
        .ip(&["link", "set", "dev", NODE_INTERFACE, "xdpgeneric", "off"])
        .unwrap();
}
