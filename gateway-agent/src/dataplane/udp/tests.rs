//! The relay over loopback: real sockets, real datagrams, one process.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;

use super::UdpRelay;
use crate::model::config::{BackendGroup, ListenerConfig, ListenerPolicyConfig};
use crate::resources::ObjectKey;

/// A backend answering each datagram with `name|datagram`.
async fn echo(name: &'static str) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let mut reply = format!("{name}|").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = socket.send_to(&reply, peer).await;
        }
    });
    addr
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn listener(groups: &[(u32, &[SocketAddr])], policy: ListenerPolicyConfig) -> ListenerConfig {
    ListenerConfig {
        gateway: ObjectKey::new("default", "gw"),
        listener_set: None,
        listener: "udp".into(),
        route: Some(ObjectKey::new("default", "r")),
        backends: groups.iter().map(|(weight, eps)| BackendGroup { weight: *weight, endpoints: eps.to_vec(), ..Default::default() }).collect(),
        policy,
        load_balancer: Default::default(),
    }
}

/// Sends `payload` from `client` and returns who answered, checking the answer is the payload.
async fn ask(client: &UdpSocket, port: u16, payload: &[u8]) -> Option<String> {
    client.send_to(payload, ("127.0.0.1", port)).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let n = tokio::time::timeout(Duration::from_millis(500), client.recv(&mut buf)).await.ok()?.unwrap();
    let (name, rest) = buf[..n].split_at(buf[..n].iter().position(|b| *b == b'|').unwrap());
    assert_eq!(&rest[1..], payload, "the datagram came back changed");
    Some(String::from_utf8(name.to_vec()).unwrap())
}

fn counters(relay: &UdpRelay) -> super::counters::CounterValues {
    relay.state().listeners[0].routes.iter().find(|r| r.route == "default/r").unwrap().counters.clone()
}

fn count(list: &[(String, u64)], label: &str) -> u64 {
    list.iter().find(|(l, _)| l == label).unwrap().1
}

#[tokio::test]
async fn flows_split_by_weight_keep_their_endpoint_and_carry_64k_datagrams() {
    let (a, b, zero) = (echo("a").await, echo("b").await, echo("zero").await);
    let port = free_port();
    let mut relay = UdpRelay::new("127.0.0.1".parse().unwrap());
    relay.apply(&BTreeMap::from([(port, listener(&[(70, &[a]), (30, &[b]), (0, &[zero])], Default::default()))]));
    let mut seen = BTreeMap::new();
    // Kept open: a closed client's port could come back as a "new" client on its old flow.
    let mut clients = Vec::new();
    for i in 0..200u32 {
        clients.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let client = clients.last().unwrap();
        let first = ask(client, port, &i.to_be_bytes()).await.expect("answered");
        // Every datagram of the flow goes where its first went.
        for j in 0..3u8 {
            assert_eq!(ask(client, port, &[j; 100]).await.as_deref(), Some(first.as_str()));
        }
        *seen.entry(first).or_insert(0) += 1;
    }
    assert_eq!(seen, BTreeMap::from([("a".to_string(), 140), ("b".to_string(), 60)]), "smooth WRR over flows is exact");
    let big: Vec<u8> = (0..65_000u32).map(|i| (i * 7) as u8).collect();
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert!(ask(&client, port, &big).await.is_some(), "a 65,000-byte datagram each way");
    let c = counters(&relay);
    assert_eq!((c.flows_created, c.datagrams_from_clients, c.datagrams_to_clients), (201, 801, 801));
}

#[tokio::test]
async fn idle_flows_expire_and_removed_endpoints_move_their_flows() {
    let (a, b) = (echo("a").await, echo("b").await);
    let port = free_port();
    let mut relay = UdpRelay::new("127.0.0.1".parse().unwrap());
    let policy = ListenerPolicyConfig { idle_timeout: Some(Duration::from_millis(300)), ..Default::default() };
    relay.apply(&BTreeMap::from([(port, listener(&[(1, &[a, b])], policy.clone()))]));
    let (one, two) = (UdpSocket::bind("127.0.0.1:0").await.unwrap(), UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let on_one = ask(&one, port, b"x").await.unwrap();
    let on_two = ask(&two, port, b"y").await.unwrap();
    assert_ne!(on_one, on_two, "endpoints take turns");
    assert_eq!(relay.state().listeners[0].flows.len(), 2);
    // Endpoint a goes: its flow ends at once and the client's next datagram goes to b; b's flow stays.
    relay.apply(&BTreeMap::from([(port, listener(&[(1, &[b])], policy.clone()))]));
    assert_eq!(count(&counters(&relay).flows_ended, "endpoint_removed"), 1);
    assert_eq!(ask(&one, port, b"x").await.as_deref(), Some("b"));
    assert_eq!(ask(&two, port, b"y").await.as_deref(), Some("b"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(relay.state().listeners[0].flows.is_empty(), "idle flows expired");
    assert_eq!(count(&counters(&relay).flows_ended, "idle"), 2);
}

#[tokio::test]
async fn denied_clients_flow_limits_and_invalid_backends_drop_and_are_counted() {
    let a = echo("a").await;
    let port = free_port();
    let mut relay = UdpRelay::new("127.0.0.1".parse().unwrap());
    let deny = ListenerPolicyConfig { deny: vec!["127.0.0.0/8".parse().unwrap()], ..Default::default() };
    relay.apply(&BTreeMap::from([(port, listener(&[(1, &[a])], deny))]));
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(ask(&client, port, b"x").await, None);
    assert_eq!(count(&counters(&relay).dropped, "client_denied"), 1);

    let capped = ListenerPolicyConfig { max_connections: Some(2), ..Default::default() };
    relay.apply(&BTreeMap::from([(port, listener(&[(1, &[a])], capped))]));
    let clients = [UdpSocket::bind("127.0.0.1:0").await.unwrap(), UdpSocket::bind("127.0.0.1:0").await.unwrap(), UdpSocket::bind("127.0.0.1:0").await.unwrap()];
    let answered: Vec<bool> = futures::future::join_all(clients.iter().map(|c| async { ask(c, port, b"x").await.is_some() })).await;
    assert_eq!(answered.iter().filter(|a| **a).count(), 2, "two flows at most");
    assert_eq!(count(&counters(&relay).dropped, "flow_limit"), 1);

    // Half the weight on a backendRef without endpoints: half the flows drop all their datagrams.
    relay.apply(&BTreeMap::from([(port, listener(&[(1, &[a]), (1, &[])], Default::default()))]));
    let mut served = 0;
    let mut kept = Vec::new();
    for _ in 0..10 {
        kept.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let c = kept.last().unwrap();
        let first = ask(c, port, b"x").await.is_some();
        assert_eq!(ask(c, port, b"y").await.is_some(), first, "a dropping flow keeps dropping");
        served += usize::from(first);
    }
    assert_eq!(served, 5);
    assert_eq!(count(&counters(&relay).dropped, "invalid_backend"), 10);

    relay.apply(&BTreeMap::new());
    assert!(relay.state().listeners.is_empty());
    // The socket closes when its aborted tasks are dropped, the runtime's next turn.
    let mut free = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if UdpSocket::bind(("127.0.0.1", port)).await.is_ok() {
            free = true;
            break;
        }
    }
    assert!(free, "the port is free again");
}

#[tokio::test]
async fn a_full_flow_table_drops_new_flows_and_keeps_serving_old_ones() {
    let a = echo("a").await;
    let (port, other) = (free_port(), free_port());
    let mut relay = UdpRelay::with_budget("127.0.0.1".parse().unwrap(), 3);
    relay.apply(&BTreeMap::from([(port, listener(&[(1, &[a])], Default::default())), (other, listener(&[(1, &[a])], Default::default()))]));
    let old: Vec<UdpSocket> = futures::future::join_all((0..3).map(|_| UdpSocket::bind("127.0.0.1:0"))).await.into_iter().map(Result::unwrap).collect();
    for (i, c) in old.iter().enumerate() {
        // Two listeners, one budget.
        assert!(ask(c, if i == 0 { other } else { port }, b"x").await.is_some());
    }
    let flood: Vec<UdpSocket> = futures::future::join_all((0..20).map(|_| UdpSocket::bind("127.0.0.1:0"))).await.into_iter().map(Result::unwrap).collect();
    for c in &flood {
        c.send_to(b"new", ("127.0.0.1", port)).await.unwrap();
    }
    for c in &old[1..] {
        assert_eq!(ask(c, port, b"still here").await.as_deref(), Some("a"), "old flows keep going");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let state = relay.state();
    let flooded = state.listeners.iter().find(|l| l.port == port).unwrap();
    assert_eq!(count(&flooded.routes[0].counters.dropped, "table_full"), 20);
    assert_eq!(relay.state().listeners.iter().map(|l| l.flows.len()).sum::<usize>(), 3);
}
