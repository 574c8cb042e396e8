//! The kernel TCP splice (`--dataplane ebpf`) where it is hardest: packets
//! lost, duplicated and reordered on their way to the node from both sides,
//! with the senders' checksum offload off (so a wrong checksum is caught by
//! the receiver, not hidden by veth), timestamps and SACK on and off,
//! different window scales on the two legs, a smaller MTU on one leg. Every
//! byte is checked, and the node's own TCP stack must see almost none of the
//! spliced segments.
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use sockgate_tests::harness::{serve, serve_on, GatewayNode};
use sockgate_tests::integrity::{exchange, pattern, Received};
use sockgate_tests::manifests::{documents, gateway, route, service};
use sockgate_tests::netns::NetNs;

const PORT: u16 = 9000;
const BACKEND_PORT: u16 = 7000;
const MIB: usize = 1 << 20;

/// A node with the kernel splice and its default handover delay: the
/// transfers here last long enough to be handed over mid-stream.
fn node() -> GatewayNode {
    node_with(&[])
}

fn node_with(extra: &[&str]) -> GatewayNode {
    let yaml = documents(&[gateway(&[("data", PORT)]), route("data", "data", "sink", 7001), service("sink", 7001, BACKEND_PORT, &["198.18.2.2"])]);
    let args: Vec<&str> = ["--dataplane", "ebpf"].iter().copied().chain(extra.iter().copied()).collect();
    let node = GatewayNode::start(&[("all.yaml", yaml)], &args).unwrap();
    node.wait_for_port(PORT).unwrap();
    node
}

fn sh(ns: &NetNs, command: &str) {
    let status = ns.command("sh").arg("-c").arg(command).status().unwrap();
    assert!(status.success(), "{command} failed in {}", ns.name);
}

/// The one veth of a peer namespace (the other interface is `lo`).
fn interface(ns: &NetNs) -> String {
    let out = ns.command("sh").arg("-c").arg("ip -o link | awk -F': ' '$2 != \"lo\" {print $2}' | cut -d@ -f1").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Loss 0.3 %, duplication 0.2 %, 2 % reordering of what `ns` sends to
/// `next_hop`, per segment (no TSO/GSO), checksums computed in software.
fn impair(ns: &NetNs, next_hop: &str) {
    let iptables = if next_hop.contains(':') { "ip6tables" } else { "iptables" };
    let dev = interface(ns);
    sh(ns, &format!("ethtool -K {dev} tx off tso off gso off >/dev/null"));
    sh(ns, &format!("tc qdisc add dev {dev} root handle 1: htb default 10"));
    sh(ns, &format!("tc class add dev {dev} parent 1: classid 1:10 htb rate 40gbit"));
    sh(ns, &format!("tc class add dev {dev} parent 1: classid 1:20 htb rate 50mbit"));
    sh(ns, &format!("{iptables} -A OUTPUT -d {next_hop} -p tcp -m statistic --mode random --probability 0.003 -j DROP"));
    sh(ns, &format!("{iptables} -t mangle -A POSTROUTING -d {next_hop} -p tcp -m statistic --mode random --probability 0.002 -j TEE --gateway {next_hop}"));
    sh(ns, &format!("{iptables} -t mangle -A POSTROUTING -d {next_hop} -p tcp -m statistic --mode random --probability 0.02 -j CLASSIFY --set-class 1:20"));
}

/// Segments `impair`'s loss rule dropped in `ns` (the first OUTPUT rule).
fn dropped_by_impairment(ns: &NetNs, iptables: &str) -> u64 {
    let out = ns.command(iptables).args(["-L", "OUTPUT", "-v", "-x", "-n"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let rule = text.lines().find(|l| l.contains("DROP")).unwrap_or_else(|| panic!("no DROP rule in {}: {text}", ns.name));
    rule.split_whitespace().next().unwrap().parse().unwrap()
}

/// TCP segments the node's own stack received (its sockets' view), from /proc/net/snmp.
fn node_segments_in(node: &GatewayNode) -> u64 {
    let out = node.hosts.node.command("cat").arg("/proc/net/snmp").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
    let at = names.split_whitespace().position(|n| n == "InSegs").unwrap();
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

/// One transfer of `size` each way at once, both sides writing immediately.
fn transfer_both_ways(node: &GatewayNode, seed: u64, size: usize) {
    transfer_both_ways_from(node, seed, size, || node.connect(PORT).unwrap(), || {});
}

/// As `transfer_both_ways`, the client's connection made by `connect`, and
/// `connected` run once it is up.
fn transfer_both_ways_from(node: &GatewayNode, seed: u64, size: usize, connect: impl FnOnce() -> TcpStream, connected: impl FnOnce()) {
    transfer_both_ways_over(node, seed, size, SocketAddr::from(([0, 0, 0, 0], BACKEND_PORT)), connect, connected);
}

/// As `transfer_both_ways_from`, the backend listening on `backend_listen`.
fn transfer_both_ways_over(node: &GatewayNode, seed: u64, size: usize, backend_listen: SocketAddr, connect: impl FnOnce() -> TcpStream, connected: impl FnOnce()) {
    let (up, down) = (pattern(seed, size), pattern(seed + 1, size));
    let down_for_backend = down.clone();
    let backend = serve_on(&node.hosts.backend1, backend_listen, move |s: TcpStream| exchange(s, down_for_backend.clone()).unwrap()).unwrap();
    let client = connect();
    client.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    connected();
    let client_got = exchange(client, up.clone()).unwrap();
    let backend_got = backend.recv_timeout(Duration::from_secs(120)).unwrap();
    assert_eq!(backend_got, Received::of(&up), "client → backend corrupted");
    assert_eq!(client_got, Received::of(&down), "backend → client corrupted");
}

fn spliced_and_refused(node: &GatewayNode) -> (usize, Vec<String>) {
    let logs = node.agent.logs();
    let spliced = logs.matches("connection spliced in the kernel").count();
    let refused = logs.lines().filter(|l| l.contains("kept on splice(2)")).map(str::to_string).collect();
    (spliced, refused)
}

#[test]
fn under_loss_duplication_and_reordering_from_both_sides_every_byte_arrives_and_the_node_stack_sees_almost_nothing() {
    let node = node();
    impair(&node.hosts.client, "198.18.1.2");
    impair(&node.hosts.backend1, "198.18.2.1");
    let before = node_segments_in(&node);
    transfer_both_ways(&node, 11, 1024 * MIB);
    let seen = node_segments_in(&node) - before;
    let (spliced, refused) = spliced_and_refused(&node);
    assert_eq!(spliced, 1, "the transfer must have been spliced: {refused:?}");
    // 2 GiB in segments of at most ~1.4 KiB: over 1.5 million segments passed.
    // The node's stack takes the handshakes and the handover's few.
    assert!(seen < 200, "the node's TCP stack received {seen} segments of a spliced transfer");
}

/// IPv6 beside the test hosts' IPv4 (unique local addresses, inside the
/// test's own namespaces): client fd00:198:18:1::1, the node ::2 on that link
/// and fd00:198:18:2::1 toward backend1, which is fd00:198:18:2::2.
const NODE6: &str = "fd00:198:18:1::2";
const BACKEND6: &str = "fd00:198:18:2::2";

/// A node listening on `::` (dual stack) whose one backend is IPv6.
fn node_ipv6(extra: &[&str]) -> GatewayNode {
    let backend = service("sink", 7001, BACKEND_PORT, &[BACKEND6]).replace("addressType: IPv4", "addressType: IPv6");
    let yaml = documents(&[gateway(&[("data", PORT)]), route("data", "data", "sink", 7001), backend]);
    let args: Vec<&str> = ["--dataplane", "ebpf", "--listen-address", "::"].iter().copied().chain(extra.iter().copied()).collect();
    let node = GatewayNode::start(&[("all.yaml", yaml)], &args).unwrap();
    // nodad: usable at once, not after duplicate address detection.
    let (client_if, backend_if) = (interface(&node.hosts.client), interface(&node.hosts.backend1));
    sh(&node.hosts.client, &format!("ip -6 addr add fd00:198:18:1::1/64 dev {client_if} nodad"));
    sh(&node.hosts.node, "ip -6 addr add fd00:198:18:1::2/64 dev to-client nodad && ip -6 addr add fd00:198:18:2::1/64 dev to-backend1 nodad");
    sh(&node.hosts.backend1, &format!("ip -6 addr add {BACKEND6}/64 dev {backend_if} nodad"));
    node.wait_for_port(PORT).unwrap();
    node
}

fn connect_ipv6(node: &GatewayNode) -> TcpStream {
    let addr = SocketAddr::new(NODE6.parse().unwrap(), PORT);
    node.hosts.client.enter(move || TcpStream::connect_timeout(&addr, Duration::from_secs(5))).unwrap().unwrap()
}

#[test]
fn over_ipv6_under_loss_duplication_and_reordering_from_both_sides_every_byte_arrives_and_the_node_stack_sees_almost_nothing() {
    let node = node_ipv6(&[]);
    impair(&node.hosts.client, NODE6);
    impair(&node.hosts.backend1, "fd00:198:18:2::1");
    let before = node_segments_in(&node);
    let mut peer = None;
    transfer_both_ways_over(&node, 61, 256 * MIB, SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, BACKEND_PORT)), || {
        let stream = connect_ipv6(&node);
        peer = Some(stream.peer_addr().unwrap());
        stream
    }, || {});
    assert!(peer.unwrap().is_ipv6(), "the client did not connect over IPv6");
    for ns in [&node.hosts.client, &node.hosts.backend1] {
        assert!(dropped_by_impairment(ns, "ip6tables") > 0, "no IPv6 segment from {} was dropped: the impairment did not apply", ns.name);
    }
    // The node's TCP counters count IPv6 segments too.
    let seen = node_segments_in(&node) - before;
    let (spliced, refused) = spliced_and_refused(&node);
    assert_eq!(spliced, 1, "the IPv6 transfer must have been spliced: {refused:?}");
    assert!(node.agent.logs().contains(&format!("backend=[{BACKEND6}]:{BACKEND_PORT}")), "the spliced flow's backend was not the IPv6 endpoint");
    // 512 MiB in segments of at most ~1.4 KiB: about 400,000 passed.
    assert!(seen < 200, "the node's TCP stack received {seen} segments of a spliced IPv6 transfer");
}

/// An IPv4 client routed to an IPv6 backend: the headers differ in size, so
/// the kernel cannot rewrite one into the other; the pair stays on splice(2).
#[test]
fn an_ipv4_client_of_an_ipv6_backend_stays_on_splice_as_mixed_families_with_every_byte_intact() {
    // At once: the refusal's reason is judged before the transfer can end.
    let node = node_ipv6(&["--kernel-splice-after", "0s"]);
    transfer_both_ways_over(&node, 71, 16 * MIB, SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, BACKEND_PORT)), || node.connect(PORT).unwrap(), || {});
    let (spliced, refused) = spliced_and_refused(&node);
    assert_eq!(spliced, 0);
    assert!(refused.iter().any(|l| l.contains("reason=\"mixed_families\"")), "{refused:?}");
}

#[test]
fn without_timestamps_and_sack_on_either_leg_the_splice_still_carries_every_byte() {
    let node = node();
    for ns in [&node.hosts.client, &node.hosts.backend1] {
        sh(ns, "sysctl -qw net.ipv4.tcp_timestamps=0 net.ipv4.tcp_sack=0");
    }
    impair(&node.hosts.client, "198.18.1.2");
    transfer_both_ways(&node, 21, 64 * MIB);
    assert_eq!(spliced_and_refused(&node).0, 1, "{:?}", spliced_and_refused(&node).1);
}

#[test]
fn different_window_scales_on_the_two_legs_are_translated_both_ways() {
    let node = node();
    // The client's receive buffer is locked small (window scale 0 to 2), the
    // backend's may grow to 1 GiB (scale 14). net.core.rmem_max cannot be
    // changed inside a namespace, so the client's scale comes from SO_RCVBUF.
    sh(&node.hosts.backend1, "sysctl -qw net.ipv4.tcp_rmem='4096 131072 1073741824'");
    let mut scales = (0, 0);
    let connect = || node.connect_with_receive_buffer(PORT, 64 * 1024).unwrap();
    transfer_both_ways_from(&node, 31, 64 * MIB, connect, || {
        scales = (receive_window_scale(&node.hosts.client), receive_window_scale(&node.hosts.backend1));
    });
    assert!(scales.1 >= scales.0 + 8, "the legs' window scales must differ widely: client {}, backend {}", scales.0, scales.1);
    assert_eq!(spliced_and_refused(&node).0, 1, "{:?}", spliced_and_refused(&node).1);
}

/// The window scale the one established TCP connection in `ns` advertises for
/// its own receive window (`ss` prints `wscale:<send>,<receive>`).
fn receive_window_scale(ns: &NetNs) -> u8 {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let out = ns.command("ss").args(["-tniH", "state", "established"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if let Some(at) = text.find("wscale:") {
            let pair = text[at + 7..].split_whitespace().next().unwrap_or("");
            return pair.split(',').nth(1).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("unreadable wscale in {text}"));
        }
        assert!(std::time::Instant::now() < deadline, "no established connection in {}: {text}", ns.name);
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn timestamps_on_one_leg_only_keep_the_pair_on_splice_with_every_byte_intact() {
    // At once: the refusal's reason is judged before the transfer can end.
    let node = node_with(&["--kernel-splice-after", "0s"]);
    sh(&node.hosts.client, "sysctl -qw net.ipv4.tcp_timestamps=0");
    transfer_both_ways(&node, 41, 16 * MIB);
    let (spliced, refused) = spliced_and_refused(&node);
    assert_eq!(spliced, 0);
    assert!(refused.iter().any(|l| l.contains("reason=\"options_differ\"")), "{refused:?}");
}

#[test]
fn a_smaller_mtu_on_the_backend_leg_keeps_the_pair_on_splice_with_every_byte_intact() {
    // At once: the refusal's reason is judged before the transfer can end.
    let node = node_with(&["--kernel-splice-after", "0s"]);
    let dev = interface(&node.hosts.backend1);
    sh(&node.hosts.backend1, &format!("ip link set {dev} mtu 1280"));
    transfer_both_ways(&node, 51, 16 * MIB);
    let (spliced, refused) = spliced_and_refused(&node);
    assert_eq!(spliced, 0, "segments from the client would not fit the backend leg");
    assert!(refused.iter().any(|l| l.contains("reason=\"mss_mismatch\"")), "{refused:?}");
}

/// Many connections handed over at once, each with both peers speaking
/// first (the backend greets, the client sends before reading the greeting):
/// every handover must finish without a peer waiting on a timer, and every
/// byte must arrive. A read timeout of 20 s turns a stalled pair into a failure.
#[test]
fn three_hundred_concurrent_pairs_where_both_sides_speak_first_all_arrive_intact() {
    // Handed over at once, while both greetings are in flight.
    let (spliced, refused) = three_hundred_pairs_both_speaking_first("0s");
    assert!(spliced > 0, "none of the pairs was spliced: {refused:?}");
}

/// The same pairs handed over a few milliseconds in, mid-stream, each one
/// paused on splice(2) wherever it is: some with one direction already
/// ended (its FIN passed on), which must stay passed on, not be sent twice.
#[test]
fn three_hundred_concurrent_pairs_paused_on_splice_mid_stream_for_their_handover_all_arrive_intact() {
    let (spliced, refused) = three_hundred_pairs_both_speaking_first("5ms");
    eprintln!("{spliced} spliced mid-stream; kept on splice(2): {}", refused.len());
}

/// Runs the pairs through a node with `--kernel-splice-after after`, checks
/// every byte both ways; (spliced, refusals).
fn three_hundred_pairs_both_speaking_first(after: &str) -> (usize, Vec<String>) {
    use std::io::{Read, Write};
    const PAIRS: u64 = 300;
    const GREETING: &[u8] = b"hello from the backend\n";
    let node = node_with(&["--kernel-splice-after", after]);
    let backend = serve(&node.hosts.backend1, BACKEND_PORT, |mut s: TcpStream| {
        s.write_all(GREETING).unwrap();
        let mut seed = [0u8; 8];
        s.read_exact(&mut seed).unwrap();
        let seed = u64::from_le_bytes(seed);
        (seed, exchange(s, pattern(seed + 1000, 64 * 1024)).unwrap())
    })
    .unwrap();
    let started = std::time::Instant::now();
    let clients: Vec<_> = (0..PAIRS)
        .map(|seed| {
            let mut stream = node.connect(PORT).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            std::thread::spawn(move || {
                stream.write_all(&seed.to_le_bytes()).unwrap();
                let mut greeting = vec![0u8; GREETING.len()];
                let local = stream.local_addr().unwrap();
                stream.read_exact(&mut greeting).unwrap_or_else(|e| panic!("pair {seed} from {local}: no greeting: {e}"));
                assert_eq!(greeting, GREETING);
                let got = exchange(stream, pattern(seed, 96 * 1024)).unwrap_or_else(|e| panic!("pair {seed}: {e}"));
                assert_eq!(got, Received::of(&pattern(seed + 1000, 64 * 1024)), "pair {seed}: backend → client corrupted");
                started.elapsed()
            })
        })
        .collect();
    let slowest = clients.into_iter().map(|c| c.join().unwrap()).max().unwrap();
    for _ in 0..PAIRS {
        let (seed, got) = backend.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(got, Received::of(&pattern(seed, 96 * 1024)), "pair {seed}: client → backend corrupted");
    }
    let (spliced, refused) = spliced_and_refused(&node);
    eprintln!("{PAIRS} pairs in {slowest:?}: {spliced} spliced, {} kept on splice(2)", refused.len());
    (spliced, refused)
}

/// The bench's handover-stall pattern, where a request, its answer and the
/// client's FIN all cross the handover: one connection after another sends
/// a few bytes, reads the backend's one-byte answer and closes. The backend
/// must see every request intact and then the FIN (end of stream).
#[test]
fn request_answer_and_close_on_fresh_connections_all_reach_the_backend_with_their_fin() {
    use std::io::{Read, Write};
    const CONNECTIONS: u64 = 300;
    // Handed over at once: the request, its answer and the FIN cross the handover.
    let node = node_with(&["--kernel-splice-after", "0s"]);
    let backend = serve(&node.hosts.backend1, BACKEND_PORT, |mut s: TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut request = [0u8; 8];
        s.read_exact(&mut request).map_err(|e| format!("request: {e}"))?;
        s.write_all(b"k").unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).map_err(|e| format!("connection {}: no FIN: {e}", u64::from_le_bytes(request)))?;
        Ok::<_, String>((u64::from_le_bytes(request), rest.len()))
    })
    .unwrap();
    for id in 0..CONNECTIONS {
        let mut stream = node.connect(PORT).unwrap();
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream.write_all(&id.to_le_bytes()).unwrap();
        let mut answer = [0u8; 1];
        stream.read_exact(&mut answer).unwrap_or_else(|e| panic!("connection {id}: no answer: {e}"));
        assert_eq!(&answer, b"k");
    }
    let mut ended = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    while ended.len() + failures.len() < CONNECTIONS as usize {
        match backend.recv_timeout(Duration::from_secs(10)).expect("the backend stopped reporting") {
            Ok((id, 0)) => {
                ended.insert(id);
            }
            Ok((id, extra)) => failures.push(format!("connection {id}: {extra} bytes after the request")),
            Err(e) if e.starts_with("request") => {} // the harness's port probe
            Err(e) => failures.push(e),
        }
    }
    let (spliced, refused) = spliced_and_refused(&node);
    assert!(failures.is_empty(), "{} of {CONNECTIONS} failed ({spliced} spliced, kept on splice(2): {refused:?}): {failures:?}", failures.len());
}

/// What the README shows: a spliced connection's two entries, read back with
/// bpftool from the pinned map (BTF gives the field names).
#[test]
fn bpftool_shows_both_entries_of_a_spliced_connection_by_field_name() {
    use std::io::{Read, Write};
    let pin_dir = format!("/sys/fs/bpf/{}", sockgate_tests::netns::unique_name("sockgate-test"));
    let yaml = documents(&[gateway(&[("data", PORT)]), route("data", "data", "sink", 7001), service("sink", 7001, BACKEND_PORT, &["198.18.2.2"])]);
    let node = GatewayNode::start(&[("all.yaml", yaml)], &["--dataplane", "ebpf", "--bpf-pin-dir", &pin_dir, "--kernel-splice-after", "0s"]).unwrap();
    let _echo = serve(&node.hosts.backend1, BACKEND_PORT, |mut s: TcpStream| {
        let mut buf = [0u8; 1024];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    })
    .unwrap();
    node.wait_for_port(PORT).unwrap();
    let mut client = node.connect(PORT).unwrap();
    let local = client.local_addr().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while node.agent.logs().matches(&format!("connection spliced in the kernel client={local}")).count() == 0 {
        client.write_all(b"ping").unwrap();
        let mut back = [0u8; 4];
        client.read_exact(&mut back).unwrap();
        assert!(std::time::Instant::now() < deadline, "never spliced:\n{}", node.agent.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..10 {
        client.write_all(b"ping").unwrap();
        let mut back = [0u8; 4];
        client.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"ping");
    }
    let out = std::process::Command::new("bpftool").args(["-j", "map", "dump", "pinned", &format!("{pin_dir}/FLOWS")]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dump: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = dump.as_array().unwrap();
    let spliced: Vec<_> = entries.iter().filter(|e| e["formatted"]["value"]["state"] == 3).collect();
    let client_leg = spliced.iter().find(|e| e["formatted"]["key"]["src_port"] == local.port()).unwrap_or_else(|| panic!("no entry keyed by the client's port {}: {dump:#}", local.port()));
    assert_eq!(client_leg["formatted"]["value"]["out_dst_port"], BACKEND_PORT, "{client_leg:#}");
    assert!(client_leg["formatted"]["value"]["bytes"].as_u64().unwrap() >= 40, "the kernel counted the pings: {client_leg:#}");
    assert!(spliced.iter().any(|e| e["formatted"]["key"]["src_port"] == BACKEND_PORT), "no entry for the backend leg: {dump:#}");
    eprintln!("{}", String::from_utf8_lossy(&std::process::Command::new("bpftool").args(["map", "dump", "pinned", &format!("{pin_dir}/FLOWS")]).output().unwrap().stdout));
}

/// `--kernel-splice-after`: connections that end sooner never leave
/// splice(2) (each request and answer still checked), and one that lasts
/// longer is paused there and handed over mid-stream, every byte intact.
#[test]
fn short_connections_end_on_splice_before_their_handover_and_a_lasting_one_is_handed_over_mid_stream() {
    use std::io::{Read, Write};
    const SHORT: u64 = 40;
    let node = node_with(&["--kernel-splice-after", "300ms"]);
    // The harness's port probe reaches the backend too, with no bytes.
    let next_nonempty = |results: &std::sync::mpsc::Receiver<(u64, u32)>| loop {
        let result = results.recv_timeout(Duration::from_secs(10)).expect("the backend stopped reporting");
        if result.0 != 0 {
            break result;
        }
    };
    let echo = serve(&node.hosts.backend1, BACKEND_PORT, |mut s: TcpStream| {
        let mut buf = vec![0u8; 64 * 1024];
        let mut seen = 0u64;
        let mut crc = crc32fast::Hasher::new();
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
            crc.update(&buf[..n]);
            seen += n as u64;
        }
        (seen, crc.finalize())
    })
    .unwrap();
    for id in 0..SHORT {
        let mut stream = node.connect(PORT).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream.write_all(&id.to_le_bytes()).unwrap();
        let mut back = [0u8; 8];
        stream.read_exact(&mut back).unwrap();
        assert_eq!(u64::from_le_bytes(back), id, "connection {id}: the echo differs");
        drop(stream);
        assert_eq!(next_nonempty(&echo).0, 8, "connection {id}: the backend saw another length");
    }
    let ended_first = |node: &GatewayNode| node.agent.logs().matches("connection ended on splice(2) before its handover was due").count();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while ended_first(&node) < SHORT as usize && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // The harness's port probe may add one short connection of its own.
    assert!(ended_first(&node) >= SHORT as usize, "only {} of {SHORT} short connections ended on splice(2)", ended_first(&node));
    assert_eq!(spliced_and_refused(&node).0, 0, "a short connection was handed over");

    // A paced echo for about a second: the handover falls in the middle.
    let mut stream = node.connect(PORT).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let data = pattern(7, 4 * MIB);
    let (mut sent_crc, mut back_crc) = (crc32fast::Hasher::new(), crc32fast::Hasher::new());
    let mut back = vec![0u8; 64 * 1024];
    for chunk in data.chunks(64 * 1024) {
        stream.write_all(chunk).unwrap();
        sent_crc.update(chunk);
        stream.read_exact(&mut back[..chunk.len()]).unwrap();
        back_crc.update(&back[..chunk.len()]);
        std::thread::sleep(Duration::from_millis(15));
    }
    let (sent_crc, back_crc) = (sent_crc.finalize(), back_crc.finalize());
    assert_eq!(back_crc, sent_crc, "the echo through the handover differs");
    drop(stream);
    let (seen, crc) = next_nonempty(&echo);
    assert_eq!((seen, crc), (data.len() as u64, sent_crc), "the backend did not receive every byte intact");
    let (spliced, refused) = spliced_and_refused(&node);
    assert_eq!(spliced, 1, "the lasting connection was not handed over: {refused:?}");
}
