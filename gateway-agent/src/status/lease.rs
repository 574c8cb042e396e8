//! Leases: one elects the agent that writes status; one per node tells the
//! leader where that node's agent serves (for Gateway `status.addresses`) and
//! which listener ports it could not bind (for listeners' `Programmed`).
//!
//! Plain coordination.k8s.io/v1 Leases with optimistic concurrency: a write
//! that loses a race gets 409 and simply tries again next round.
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, PostParams};
use kube::Client;

use crate::model::node_reports::{Protocol, UnboundPort};

pub const LEADER_LEASE: &str = "sockgate-status-writer";
const NODE_LEASE_PREFIX: &str = "sockgate-node-";
const NODE_LABEL: &str = "sockgate.io/node-lease";
const ADDRESSES_ANNOTATION: &str = "sockgate.io/addresses";
/// JSON: `[{"protocol":"TCP","port":9000,"error":"Address in use (os error 98)"}]`.
const UNBOUND_ANNOTATION: &str = "sockgate.io/unbound-ports";

/// A listener port this node's agent wants and could not bind.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Unbound {
    pub protocol: Protocol,
    pub port: u16,
    pub error: String,
}

/// What the live node leases say, together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeReports {
    /// Every serving node's addresses, sorted.
    pub addresses: Vec<IpAddr>,
    /// How many nodes renewed their lease in time.
    pub nodes: usize,
    pub unbound: Vec<UnboundPort>,
}

pub struct Leases {
    api: Api<Lease>,
    identity: String,
    duration: Duration,
}

fn now() -> Timestamp {
    crate::run::now()
}

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let duration_ms = i64::from(spec.lease_duration_seconds.unwrap_or(15)) * 1000;
    match &spec.renew_time {
        Some(MicroTime(renewed)) => renewed.as_millisecond() + duration_ms < now.as_millisecond(),
        None => true,
    }
}

impl Leases {
    pub fn new(client: Client, namespace: &str, identity: &str, duration: Duration) -> Self {
        Leases { api: Api::namespaced(client, namespace), identity: identity.to_string(), duration }
    }

    fn spec(&self, transitions: i32, acquired: Option<MicroTime>) -> LeaseSpec {
        let now = MicroTime(now());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs() as i32),
            acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Takes or renews the leader lease; true while this agent is the leader.
    pub async fn lead(&self) -> kube::Result<bool> {
        let Some(mut lease) = self.api.get_opt(LEADER_LEASE).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(LEADER_LEASE.into()), ..Default::default() },
                spec: Some(self.spec(0, None)),
            };
            return Ok(self.api.create(&PostParams::default(), &lease).await.is_ok());
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        if !ours && !expired(&spec, now()) {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        lease.spec = Some(self.spec(transitions, if ours { spec.acquire_time } else { None }));
        // resourceVersion from the read: a concurrent taker makes this fail with 409.
        match self.api.replace(LEADER_LEASE, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Lets the leader lease go (on shutdown), so another agent takes over at once.
    pub async fn resign(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(LEADER_LEASE).await {
            if lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(self.identity.as_str()) {
                if let Some(spec) = lease.spec.as_mut() {
                    spec.holder_identity = None;
                    spec.renew_time = None;
                }
                let _ = self.api.replace(LEADER_LEASE, &PostParams::default(), &lease).await;
            }
        }
    }

    /// Renews this node's lease, announcing the addresses its agent serves on
    /// and the listener ports it could not bind.
    pub async fn announce(&self, node: &str, addresses: &[IpAddr], unbound: &[Unbound]) -> kube::Result<()> {
        let name = format!("{NODE_LEASE_PREFIX}{node}");
        let annotation = addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        let unbound = serde_json::to_string(unbound).unwrap_or_else(|_| "[]".into());
        let metadata = ObjectMeta {
            name: Some(name.clone()),
            labels: Some([(NODE_LABEL.to_string(), "true".to_string())].into()),
            annotations: Some([(ADDRESSES_ANNOTATION.to_string(), annotation), (UNBOUND_ANNOTATION.to_string(), unbound)].into()),
            ..Default::default()
        };
        match self.api.get_opt(&name).await? {
            None => {
                self.api.create(&PostParams::default(), &Lease { metadata, spec: Some(self.spec(0, None)) }).await?;
            }
            Some(existing) => {
                let lease = Lease {
                    metadata: ObjectMeta { resource_version: existing.metadata.resource_version, ..metadata },
                    spec: Some(self.spec(0, existing.spec.and_then(|s| s.acquire_time))),
                };
                self.api.replace(&name, &PostParams::default(), &lease).await?;
            }
        }
        Ok(())
    }

    /// What every node whose agent renewed its lease in time reports.
    pub async fn reports(&self) -> kube::Result<NodeReports> {
        let leases = self.api.list(&ListParams::default().labels(&format!("{NODE_LABEL}=true"))).await?;
        let now = now();
        let mut addresses = BTreeSet::new();
        let mut reports = NodeReports::default();
        for lease in leases {
            if lease.spec.as_ref().is_none_or(|s| expired(s, now)) {
                continue;
            }
            reports.nodes += 1;
            let node = lease.metadata.name.as_deref().unwrap_or_default().trim_start_matches(NODE_LEASE_PREFIX).to_string();
            let annotation = |key: &str| lease.metadata.annotations.as_ref().and_then(|a| a.get(key)).cloned().unwrap_or_default();
            addresses.extend(annotation(ADDRESSES_ANNOTATION).split(',').filter_map(|a| a.parse::<IpAddr>().ok()));
            // An agent of an older version writes no such annotation: nothing unbound that we know of.
            let unbound: Vec<Unbound> = serde_json::from_str(&annotation(UNBOUND_ANNOTATION)).unwrap_or_default();
            reports.unbound.extend(unbound.into_iter().map(|u| UnboundPort { node: node.clone(), protocol: u.protocol, port: u.port, error: u.error }));
        }
        reports.addresses = addresses.into_iter().collect();
        reports.unbound.sort();
        Ok(reports)
    }
}
