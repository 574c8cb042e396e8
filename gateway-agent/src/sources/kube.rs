//! Kubernetes mode's source: reflectors over every kind the translator reads,
//! turned into one [`Snapshot`] whenever any of them changes.
//!
//! Objects go through the same checks as manifests on disk
//! ([`load_objects`]), so both modes see identical snapshots; a bad object is
//! dropped with a warning rather than failing the rest. While the API server is
//! unreachable the reflectors keep their last state and no new snapshot is
//! made, so the data plane keeps serving what it has.
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::discovery::{ApiResource, Discovery};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use serde_json::Value;
use tokio::sync::{watch, Notify};

use super::manifests::{load_objects, Loaded};
use crate::model::supported_version::{Crds, InstalledCrd};
use crate::resources::gateway_api::{BUNDLE_VERSION_ANNOTATION, GROUP, X_GROUP};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// The kinds sockgate reads: (group, kind).
const KINDS: &[(&str, &str)] = &[
    ("gateway.networking.k8s.io", "GatewayClass"),
    ("gateway.networking.k8s.io", "Gateway"),
    ("gateway.networking.k8s.io", "TCPRoute"),
    ("gateway.networking.k8s.io", "ReferenceGrant"),
    ("", "Service"),
    ("", "Namespace"),
    ("discovery.k8s.io", "EndpointSlice"),
];

/// Kinds read when their CRDs are installed, and without which the agent
/// serves the rest: UDPRoute (a cluster may have the Gateway API CRDs from
/// before UDPRoute was there) and the policy kinds (the chart installs them).
/// With why a missing one matters, for the log.
const OPTIONAL_KINDS: &[(&str, &str, &str)] = &[
    ("gateway.networking.k8s.io", "UDPRoute", "UDP listeners get no routes (install the Gateway API v1.6 CRDs: UDPRoute v1 is in the standard channel)"),
    ("sockgate.io", "ListenerPolicy", "policies of this kind are not read (install sockgate's CRDs: gateway-agent crds)"),
    ("sockgate.io", "BackendPolicy", "policies of this kind are not read (install sockgate's CRDs: gateway-agent crds)"),
];

/// Waits after a change before building, so a burst of events makes one snapshot.
const SETTLE: Duration = Duration::from_millis(100);

/// The API resource of each kind at the version the server prefers (TCPRoute
/// and UDPRoute v1 or v1alpha2, EndpointSlice v1 or, on old servers, v1beta1).
pub async fn discover(client: &Client) -> Result<Vec<ApiResource>> {
    let discovery = Discovery::new(client.clone())
        .filter(&["", "gateway.networking.k8s.io", "gateway.networking.x-k8s.io", "discovery.k8s.io", "sockgate.io"])
        .run()
        .await
        .context("API discovery")?;
    let mut found = Vec::new();
    for (group, kind) in KINDS {
        let api_group = discovery
            .groups()
            .find(|g| g.name() == *group)
            .with_context(|| format!("the API server serves no {group:?} group (are the Gateway API CRDs installed?)"))?;
        let (resource, _) = api_group
            .recommended_kind(kind)
            .with_context(|| format!("the API server does not serve {kind} in group {group:?}"))?;
        found.push(resource);
    }
    for (group, kind, without) in OPTIONAL_KINDS {
        match discovery.groups().find(|g| g.name() == *group).and_then(|g| g.recommended_kind(kind)) {
            Some((resource, _)) => found.push(resource),
            None => tracing::warn!(kind, group, "the API server does not serve {kind}: {without}"),
        }
    }
    match listener_set_kind(&discovery) {
        Some(resource) => found.push(resource),
        None => tracing::warn!("the API server serves neither ListenerSet (gateway.networking.k8s.io) nor XListenerSet (gateway.networking.x-k8s.io): Gateways get no listeners from ListenerSets (install the Gateway API v1.6 CRDs)"),
    }
    Ok(found)
}

/// The bundle version of the CRD behind each Gateway API kind being read
/// (for GatewayClass `SupportedVersion`); metadata only.
pub async fn installed_crds(client: &Client, resources: &[ApiResource]) -> Crds {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut installed = Vec::new();
    for r in resources.iter().filter(|r| r.group == GROUP || r.group == X_GROUP) {
        let name = format!("{}.{}", r.plural, r.group);
        match api.get_metadata(&name).await {
            Ok(crd) => {
                let bundle_version = crd.metadata.annotations.and_then(|a| a.get(BUNDLE_VERSION_ANNOTATION).cloned());
                installed.push(InstalledCrd { name, bundle_version });
            }
            Err(e) => return Crds::Unreadable(format!("getting CustomResourceDefinition {name}: {e}")),
        }
    }
    installed.sort();
    Crds::Installed(installed)
}

/// ListenerSet where the server has it (standard since v1.6), else the
/// experimental XListenerSet. One of the two, never both: the same set is not
/// to be read twice where a cluster still has the old CRD beside the new one.
fn listener_set_kind(discovery: &Discovery) -> Option<ApiResource> {
    [(GROUP, "ListenerSet"), (X_GROUP, "XListenerSet")]
        .into_iter()
        .find_map(|(group, kind)| discovery.groups().find(|g| g.name() == group).and_then(|g| g.recommended_kind(kind)).map(|(r, _)| r))
}

/// Starts a reflector per kind (`resources`, from [`discover`]); the receiver
/// gets a new snapshot after every change, once all reflectors have listed.
pub fn start(client: Client, resources: Vec<ApiResource>) -> watch::Receiver<Option<Arc<Loaded>>> {
    for r in &resources {
        tracing::info!(group = %r.group, version = %r.version, kind = %r.kind, "watching");
    }
    let changed = Arc::new(Notify::new());
    let mut stores = Vec::new();
    for resource in resources {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let writer = reflector::store::Writer::new(resource.clone());
        let store: Store<DynamicObject> = writer.as_reader();
        let changed = changed.clone();
        let kind = resource.kind.clone();
        tokio::spawn(async move {
            let events = reflector::reflector(writer, watcher(api, watcher::Config::default())).backoff(Reconnect::default());
            futures::pin_mut!(events);
            while let Some(event) = events.next().await {
                match event {
                    Ok(_) => changed.notify_one(),
                    Err(e) => tracing::warn!(%kind, error = %e, "watch failed; retrying, still serving the last known configuration"),
                }
            }
        });
        stores.push((resource, store));
    }
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        for (resource, store) in &stores {
            if store.wait_until_ready().await.is_err() {
                tracing::error!(kind = %resource.kind, "reflector stopped before listing");
                return;
            }
        }
        loop {
            let snapshot = build(&stores);
            if tx.send(Some(Arc::new(snapshot))).is_err() {
                return;
            }
            changed.notified().await;
            tokio::time::sleep(SETTLE).await;
        }
    });
    rx
}

/// Retry delays after a watch error: from 250 ms doubling to at most 3 s. A
/// node agent wants its view back soon after the API server returns (the
/// library default grows to 30 s); reset once a watch succeeds again.
struct Reconnect {
    next: Duration,
}

const RECONNECT_FIRST: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(3);

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect { next: RECONNECT_FIRST }
    }
}

impl Iterator for Reconnect {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = (self.next * 2).min(RECONNECT_MAX);
        Some(delay)
    }
}

impl kube::runtime::utils::Backoff for Reconnect {
    fn reset(&mut self) {
        self.next = RECONNECT_FIRST;
    }
}

fn build(stores: &[(ApiResource, Store<DynamicObject>)]) -> Loaded {
    let objects = stores.iter().flat_map(|(resource, store)| {
        store.state().into_iter().filter_map(move |object| {
            let mut value = serde_json::to_value(&*object).ok()?;
            // List and watch items may omit their type; the resource knows it.
            value["apiVersion"] = Value::from(resource.api_version.clone());
            value["kind"] = Value::from(resource.kind.clone());
            Some((format!("cluster {}", resource.kind), value))
        })
    });
    let (mut loaded, problems) = load_objects(objects);
    // Said once by the reconcile loop (each snapshot would repeat them).
    loaded.notes.extend(problems.iter().map(|p| format!("ignoring an invalid object: {}", p.reason)));
    loaded
}
