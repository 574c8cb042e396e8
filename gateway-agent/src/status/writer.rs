//! Writes status to the API server, only for objects whose status changed since
//! it last wrote.
//!
//! GatewayClasses and Gateways of sockgate's classes are sockgate's alone: their
//! status is written with server-side apply. TCPRoutes and policies can also be
//! another controller's business, so their shared lists are read, merged (ours
//! replaced, the others' kept: see [`shared`](super::shared)) and written back
//! with the resourceVersion read, so a concurrent writer is never overwritten.
use std::collections::{BTreeMap, BTreeSet};

use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::discovery::ApiResource;
use kube::Client;
use serde_json::{json, Value};

use super::shared;

pub const FIELD_MANAGER: &str = "sockgate.io/gateway-controller";

/// Attempts at a read-merge-write before giving up until the next round.
const MERGE_ATTEMPTS: usize = 3;

type Key = (String, String, String);

pub struct StatusWriter {
    client: Client,
    resources: Vec<ApiResource>,
    /// The controllerName this agent writes as.
    controller: String,
    /// What was last written successfully, by (kind, namespace, name).
    written: BTreeMap<Key, Value>,
    /// Set when this agent (re)gains leadership: entries of ours that a
    /// predecessor left on objects that are no longer ours must be swept.
    sweep: bool,
}

impl StatusWriter {
    pub fn new(client: Client, resources: Vec<ApiResource>, controller: &str) -> Self {
        StatusWriter { client, resources, controller: controller.to_string(), written: BTreeMap::new(), sweep: true }
    }

    /// Forgets what was written, so the next `write` applies everything (a new leader
    /// cannot know what its predecessor wrote) and sweeps stale entries of ours.
    pub fn forget(&mut self) {
        self.written.clear();
        self.sweep = true;
    }

    /// Writes the status of each object in `objects` (from `render::status_objects`)
    /// that differs from what was last written, and takes this controller's
    /// entries off routes and policies that no longer have a status from it.
    /// Returns how many objects were written.
    pub async fn write(&mut self, objects: &[Value]) -> usize {
        let mut applied = 0;
        let mut live = BTreeSet::new();
        for object in objects {
            let key = key_of(object);
            live.insert(key.clone());
            if self.written.get(&key) == Some(object) {
                continue;
            }
            match self.write_one(&key, object).await {
                Ok(changed) => {
                    applied += usize::from(changed);
                    self.written.insert(key, object.clone());
                }
                Err(e) => warn(&key, &e),
            }
        }
        // Objects that had a status from us and no longer do: our entries go.
        let gone: Vec<Key> = self.written.keys().filter(|k| !live.contains(*k)).cloned().collect();
        for key in gone {
            match self.remove_ours(&key).await {
                Ok(changed) => {
                    applied += usize::from(changed);
                    self.written.remove(&key);
                }
                Err(e) => warn(&key, &e),
            }
        }
        if self.sweep {
            match self.sweep_stale(&live).await {
                Ok(swept) => {
                    applied += swept;
                    self.sweep = false;
                }
                Err(e) => tracing::warn!(error = %e, "sweeping stale status entries failed; will retry"),
            }
        }
        applied
    }

    /// Writes one object's status; `Ok(false)` if there was nothing to change
    /// (or the object is gone).
    async fn write_one(&self, key: &Key, object: &Value) -> kube::Result<bool> {
        let Some((api, resource)) = self.api(key) else { return Ok(false) };
        if let Some(field) = shared::shared_list(&key.0) {
            let ours = object["status"][field].as_array().cloned().unwrap_or_default();
            return self.merge_into(&api, &key.2, field, &ours).await;
        }
        // Apply in the version the server prefers; the status shape is the same.
        let mut body = object.clone();
        body["apiVersion"] = Value::from(resource.api_version.clone());
        match api.patch_status(&key.2, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Takes this controller's entries off an object that no longer has a status from it.
    async fn remove_ours(&self, key: &Key) -> kube::Result<bool> {
        let (Some((api, _)), Some(field)) = (self.api(key), shared::shared_list(&key.0)) else { return Ok(false) };
        self.merge_into(&api, &key.2, field, &[]).await
    }

    /// Read the live list, replace our entries with `ours`, write it back under
    /// the resourceVersion read (a conflict means someone wrote meanwhile: read again).
    async fn merge_into(&self, api: &Api<DynamicObject>, name: &str, field: &str, ours: &[Value]) -> kube::Result<bool> {
        let mut conflict = None;
        for _ in 0..MERGE_ATTEMPTS {
            let current = match api.get_status(name).await {
                Ok(o) => o,
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(false),
                Err(e) => return Err(e),
            };
            let live = current.data["status"][field].as_array().cloned().unwrap_or_default();
            let merged = shared::merge(&live, ours, &self.controller);
            if merged == live {
                return Ok(false);
            }
            let body = json!({ "metadata": { "resourceVersion": current.metadata.resource_version }, "status": { field: merged } });
            let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
            match api.patch_status(name, &params, &Patch::Merge(&body)).await {
                Ok(_) => return Ok(true),
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(false),
                Err(kube::Error::Api(e)) if e.code == 409 => conflict = Some(kube::Error::Api(e)),
                Err(e) => return Err(e),
            }
        }
        Err(conflict.expect("only conflicts repeat"))
    }

    /// Lists every route and policy and takes our entries off those that have
    /// no status from us now. Returns how many were changed.
    async fn sweep_stale(&self, live: &BTreeSet<Key>) -> kube::Result<usize> {
        let mut swept = 0;
        for resource in self.resources.iter().filter(|r| shared::shared_list(&r.kind).is_some()) {
            let field = shared::shared_list(&resource.kind).expect("filtered");
            let all: Api<DynamicObject> = Api::all_with(self.client.clone(), resource);
            for object in all.list(&ListParams::default()).await?.items {
                let namespace = object.metadata.namespace.clone().unwrap_or_default();
                let name = object.metadata.name.clone().unwrap_or_default();
                let key = (resource.kind.clone(), namespace, name);
                let has_ours = object.data["status"][field].as_array().is_some_and(|l| l.iter().any(|e| shared::is_ours(e, &self.controller)));
                if has_ours && !live.contains(&key) {
                    swept += usize::from(self.remove_ours(&key).await?);
                }
            }
        }
        Ok(swept)
    }

    fn api(&self, key: &Key) -> Option<(Api<DynamicObject>, &ApiResource)> {
        let resource = self.resources.iter().find(|r| r.kind == key.0)?;
        let api = if key.1.is_empty() {
            Api::all_with(self.client.clone(), resource)
        } else {
            Api::namespaced_with(self.client.clone(), &key.1, resource)
        };
        Some((api, resource))
    }
}

fn key_of(object: &Value) -> Key {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (text(&object["kind"]), text(&object["metadata"]["namespace"]), text(&object["metadata"]["name"]))
}

fn warn(key: &Key, error: &kube::Error) {
    let (kind, namespace, name) = key;
    tracing::warn!(%kind, %namespace, %name, %error, "writing status failed; will retry");
}
