//! Makes a port of the root namespace's loopback reachable on a test host's
//! loopback: an agent inside a network namespace reaches the test API server
//! (bound to 127.0.0.1 of the root namespace) at the same address, so its
//! kubeconfig and the server certificate stay as they are.
use std::net::{Shutdown, TcpListener, TcpStream};

use anyhow::Result;

use crate::netns::NetNs;

/// Listens on 127.0.0.1:`port` inside `ns` and splices each connection to
/// 127.0.0.1:`port` of the namespace this process runs in. Runs until the
/// process ends (the namespace's deletion closes nothing it needs).
pub fn bridge_port(ns: &NetNs, port: u16) -> Result<()> {
    let listener = ns.enter(move || TcpListener::bind(("127.0.0.1", port)))??;
    std::thread::spawn(move || {
        for inside in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(outside) = TcpStream::connect(("127.0.0.1", port)) else { return };
                let (mut a, mut b) = (inside.try_clone().unwrap(), outside.try_clone().unwrap());
                let forward = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut a, &mut b);
                    let _ = b.shutdown(Shutdown::Write);
                });
                let (mut c, mut d) = (outside, inside);
                let _ = std::io::copy(&mut c, &mut d);
                let _ = d.shutdown(Shutdown::Write);
                let _ = forward.join();
            });
        }
    });
    Ok(())
}
