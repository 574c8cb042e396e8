//! Active health checks of backend endpoints (BackendPolicy `healthCheck`).
//!
//! One task per (endpoint, check) connects every `interval`, optionally
//! writes `send` and waits for `receive` in the answer, within `timeout`.
//! The verdict follows the thresholds: the first check of a new endpoint
//! decides alone (so a dead endpoint is out within one timeout, and a live
//! one is in at once); after that it takes `unhealthyThreshold` failures in a
//! row to take it out and `healthyThreshold` passes in a row to bring it back.
//! Until its first check ends an endpoint counts as healthy: EndpointSlice
//! readiness already vouched for it, and holding it back would reset traffic
//! at every start. Each agent checks on its own (no shared verdict between
//! nodes), from the node's network namespace, as its connections will go.
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::model::config::{DataplaneConfig, HealthCheckConfig};

/// The most of an answer searched for `receive`.
const ANSWER_LIMIT: usize = 64 * 1024;

type CheckKey = (SocketAddr, HealthCheckConfig);

/// What one check of one endpoint has seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckState {
    pub endpoint: SocketAddr,
    /// The backendRefs ("namespace/service:port") the endpoint serves through this check.
    pub backends: Vec<String>,
    /// None until the first check ends.
    pub healthy: Option<bool>,
    pub passes_in_a_row: u32,
    pub failures_in_a_row: u32,
    pub checks_passed: u64,
    pub checks_failed: u64,
    /// Why the last failed check failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    /// When `healthy` last changed (seconds since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_at: Option<u64>,
}

impl CheckState {
    pub fn new(endpoint: SocketAddr) -> Self {
        CheckState { endpoint, backends: Vec::new(), healthy: None, passes_in_a_row: 0, failures_in_a_row: 0, checks_passed: 0, checks_failed: 0, last_failure: None, changed_at: None }
    }

    /// Records one check's result; the new verdict when it changed.
    pub fn record(&mut self, result: &Result<(), String>, check: &HealthCheckConfig) -> Option<bool> {
        match result {
            Ok(()) => {
                self.checks_passed += 1;
                self.passes_in_a_row += 1;
                self.failures_in_a_row = 0;
            }
            Err(e) => {
                self.checks_failed += 1;
                self.failures_in_a_row += 1;
                self.passes_in_a_row = 0;
                self.last_failure = Some(e.clone());
            }
        }
        let next = match self.healthy {
            None => result.is_ok(),
            Some(true) => self.failures_in_a_row < check.unhealthy_threshold,
            Some(false) => self.passes_in_a_row >= check.healthy_threshold,
        };
        if self.healthy == Some(next) {
            return None;
        }
        self.healthy = Some(next);
        self.changed_at = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).ok().map(|d| d.as_secs());
        Some(next)
    }
}

/// The checks' verdicts, read by every new connection.
#[derive(Debug, Default)]
pub struct HealthState {
    checks: Mutex<BTreeMap<CheckKey, CheckState>>,
    /// Endpoints one of whose checks says unhealthy, rebuilt on every change.
    unhealthy: Mutex<Arc<BTreeSet<SocketAddr>>>,
    /// Whether `unhealthy` is not empty: the common case costs one load.
    any_unhealthy: AtomicBool,
}

impl HealthState {
    /// The endpoints to leave out now, or None when every checked endpoint passes.
    pub fn unhealthy(&self) -> Option<Arc<BTreeSet<SocketAddr>>> {
        self.any_unhealthy.load(Ordering::Relaxed).then(|| self.unhealthy.lock().unwrap().clone())
    }

    /// Every check's state, by endpoint.
    pub fn snapshot(&self) -> Vec<CheckState> {
        self.checks.lock().unwrap().values().cloned().collect()
    }

    fn record(&self, key: &CheckKey, result: Result<(), String>) {
        let mut checks = self.checks.lock().unwrap();
        let Some(state) = checks.get_mut(key) else { return };
        match state.record(&result, &key.1) {
            Some(false) => tracing::warn!(endpoint = %key.0, backends = %state.backends.join(", "), "endpoint failed its health check ({}): no new connections until it passes {} in a row", result.unwrap_err(), key.1.healthy_threshold),
            Some(true) if state.checks_failed > 0 => tracing::info!(endpoint = %key.0, backends = %state.backends.join(", "), "endpoint passes its health check again: back in the pick"),
            _ => return,
        }
        self.rebuild(&checks);
    }

    fn rebuild(&self, checks: &BTreeMap<CheckKey, CheckState>) {
        let unhealthy: BTreeSet<SocketAddr> = checks.values().filter(|s| s.healthy == Some(false)).map(|s| s.endpoint).collect();
        self.any_unhealthy.store(!unhealthy.is_empty(), Ordering::Relaxed);
        *self.unhealthy.lock().unwrap() = Arc::new(unhealthy);
    }
}

/// The running checks, kept equal to what the configuration asks for.
#[derive(Default)]
pub struct HealthChecks {
    state: Arc<HealthState>,
    running: BTreeMap<CheckKey, JoinHandle<()>>,
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        for task in self.running.values() {
            task.abort();
        }
    }
}

impl HealthChecks {
    pub fn state(&self) -> Arc<HealthState> {
        self.state.clone()
    }

    /// Starts the checks `config` asks for that are not running and stops the
    /// rest; a check that stays keeps its state and its rhythm.
    pub fn apply(&mut self, config: &DataplaneConfig) {
        let mut wanted: BTreeMap<CheckKey, BTreeSet<String>> = BTreeMap::new();
        for listener in config.listeners.values() {
            for group in &listener.backends {
                let Some(check) = &group.policy.health_check else { continue };
                for endpoint in &group.endpoints {
                    wanted.entry((*endpoint, check.clone())).or_default().insert(group.name.clone());
                }
            }
        }
        let mut checks = self.state.checks.lock().unwrap();
        self.running.retain(|key, task| {
            let keep = wanted.contains_key(key);
            if !keep {
                task.abort();
                checks.remove(key);
            }
            keep
        });
        for (key, backends) in wanted {
            let state = checks.entry(key.clone()).or_insert_with(|| CheckState::new(key.0));
            state.backends = backends.into_iter().collect();
            if !self.running.contains_key(&key) {
                let task = tokio::spawn(check_loop(key.clone(), self.state.clone()));
                self.running.insert(key, task);
            }
        }
        self.state.rebuild(&checks);
    }
}

async fn check_loop(key: CheckKey, state: Arc<HealthState>) {
    // Checks of many endpoints started together would stay in step: each
    // waits a random part of a tenth of its interval before the first.
    let spread = key.1.interval.as_millis() as u64 / 10;
    tokio::time::sleep(Duration::from_millis(if spread == 0 { 0 } else { rand::random::<u64>() % spread })).await;
    loop {
        let result = check(key.0, &key.1).await;
        state.record(&key, result);
        tokio::time::sleep(key.1.interval).await;
    }
}

/// One check: connect, write `send`, find `receive` in the answer, all within the timeout.
pub async fn check(endpoint: SocketAddr, check: &HealthCheckConfig) -> Result<(), String> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(endpoint).await.map_err(|e| format!("connect: {e}"))?;
        if !check.send.is_empty() {
            stream.write_all(&check.send).await.map_err(|e| format!("send: {e}"))?;
        }
        if check.receive.is_empty() {
            return Ok(());
        }
        let mut answer = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            let n = stream.read(&mut buffer).await.map_err(|e| format!("reading the answer: {e}"))?;
            if n == 0 {
                return Err(format!("the endpoint closed after {} bytes without answering {}", answer.len(), shown(&check.receive)));
            }
            answer.extend_from_slice(&buffer[..n]);
            if answer.windows(check.receive.len()).any(|w| w == check.receive.as_slice()) {
                return Ok(());
            }
            if answer.len() >= ANSWER_LIMIT {
                return Err(format!("the first {ANSWER_LIMIT} bytes of the answer do not hold {}", shown(&check.receive)));
            }
        }
    };
    match tokio::time::timeout(check.timeout, attempt).await {
        Ok(result) => result,
        Err(_) if check.receive.is_empty() => Err(format!("no connection within {:?}", check.timeout)),
        Err(_) => Err(format!("no connection and answer {} within {:?}", shown(&check.receive), check.timeout)),
    }
}

/// Expected bytes in a log line: as text when they are, else in hex.
fn shown(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => format!("{text:?}"),
        Err(_) => bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    }
}

/// The checks' states in a file, for `gateway-agent inspect` (another process).
pub fn write_state(state: &HealthState, path: &std::path::Path) -> std::io::Result<()> {
    let checks = state.snapshot();
    if checks.is_empty() {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    crate::state_file::write_json(path, &checks)
}

pub fn read_state(path: &std::path::Path) -> std::io::Result<Vec<CheckState>> {
    crate::state_file::read_json(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(unhealthy: u32, healthy: u32) -> HealthCheckConfig {
        HealthCheckConfig { unhealthy_threshold: unhealthy, healthy_threshold: healthy, ..HealthCheckConfig::default() }
    }

    #[test]
    fn the_first_check_decides_then_thresholds_of_failures_and_passes_in_a_row_flip_the_verdict() {
        let check = config(3, 2);
        let (pass, fail) = (Ok(()), Err("connect: refused".to_string()));
        let mut s = CheckState::new("198.18.2.2:3000".parse().unwrap());
        assert_eq!(s.record(&pass, &check), Some(true), "a new endpoint's first pass puts it in");
        assert_eq!(s.record(&fail, &check), None);
        assert_eq!(s.record(&fail, &check), None);
        assert_eq!(s.record(&pass, &check), None, "a pass in between starts the failure count again");
        assert_eq!(s.record(&fail, &check), None);
        assert_eq!(s.record(&fail, &check), None);
        assert_eq!(s.record(&fail, &check), Some(false), "three failures in a row take it out");
        assert_eq!(s.last_failure.as_deref(), Some("connect: refused"));
        assert_eq!(s.record(&pass, &check), None);
        assert_eq!(s.record(&fail, &check), None);
        assert_eq!(s.record(&pass, &check), None);
        assert_eq!(s.record(&pass, &check), Some(true), "two passes in a row bring it back");
        assert_eq!((s.checks_passed, s.checks_failed), (5, 6));
        let mut new = CheckState::new("198.18.2.2:3000".parse().unwrap());
        assert_eq!(new.record(&fail, &check), Some(false), "a new endpoint's first failure keeps it out at once");
    }

    #[tokio::test]
    async fn a_check_passes_on_the_expected_answer_and_fails_naming_what_was_wrong() {
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = server.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let answer: &[u8] = if &buf[..n] == b"PING\r\n" { b"+PO" } else { b"-ERR\r\n" };
                    let _ = s.write_all(answer).await;
                    if answer == b"+PO" {
                        // The expected bytes arrive in two pieces.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        let _ = s.write_all(b"NG\r\n").await;
                    }
                });
            }
        });
        let ping = HealthCheckConfig { send: b"PING\r\n".to_vec(), receive: b"+PONG".to_vec(), ..HealthCheckConfig::default() };
        assert_eq!(check(addr, &ping).await, Ok(()));
        let wrong = HealthCheckConfig { send: b"HELLO\r\n".to_vec(), ..ping.clone() };
        let error = check(addr, &wrong).await.unwrap_err();
        assert!(error.contains("closed after 6 bytes without answering \"+PONG\""), "{error}");
        let connect_only = HealthCheckConfig::default();
        assert_eq!(check(addr, &connect_only).await, Ok(()));
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let error = check(closed, &connect_only).await.unwrap_err();
        assert!(error.starts_with("connect: "), "{error}");
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let quiet = HealthCheckConfig { timeout: Duration::from_millis(200), receive: b"x".to_vec(), ..HealthCheckConfig::default() };
        let error = check(silent.local_addr().unwrap(), &quiet).await.unwrap_err();
        assert!(error.contains("within 200ms"), "{error}");
    }
}
