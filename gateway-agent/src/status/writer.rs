//! Writes status to the API server with server-side apply, under sockgate's
//! field manager, and only for objects whose status changed since it last wrote.
use std::collections::BTreeMap;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;
use kube::Client;
use serde_json::Value;

pub const FIELD_MANAGER: &str = "sockgate.io/gateway-controller";

pub struct StatusWriter {
    client: Client,
    resources: Vec<ApiResource>,
    /// What was last written successfully, by (kind, namespace, name).
    written: BTreeMap<(String, String, String), Value>,
}

impl StatusWriter {
    pub fn new(client: Client, resources: Vec<ApiResource>) -> Self {
        StatusWriter { client, resources, written: BTreeMap::new() }
    }

    /// Forgets what was written, so the next `write` applies everything (a new leader
    /// cannot know what its predecessor wrote).
    pub fn forget(&mut self) {
        self.written.clear();
    }

    /// Applies the status of each object in `objects` (from `render::status_objects`)
    /// that differs from what was last written. Returns how many were applied.
    pub async fn write(&mut self, objects: &[Value]) -> usize {
        let mut applied = 0;
        for object in objects {
            let kind = object["kind"].as_str().unwrap_or_default().to_string();
            let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
            let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let key = (kind.clone(), namespace.clone(), name.clone());
            if self.written.get(&key) == Some(object) {
                continue;
            }
            let Some(resource) = self.resources.iter().find(|r| r.kind == kind) else { continue };
            // Apply in the version the server prefers; the status shape is the same.
            let mut body = object.clone();
            body["apiVersion"] = Value::from(resource.api_version.clone());
            let api: Api<DynamicObject> = if namespace.is_empty() {
                Api::all_with(self.client.clone(), resource)
            } else {
                Api::namespaced_with(self.client.clone(), &namespace, resource)
            };
            match api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await {
                Ok(_) => {
                    applied += 1;
                    self.written.insert(key, object.clone());
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    tracing::debug!(%kind, %namespace, %name, "object gone before its status was written");
                }
                Err(e) => tracing::warn!(%kind, %namespace, %name, error = %e, "writing status failed; will retry"),
            }
        }
        // Objects that no longer have a status from us are forgotten.
        let live: std::collections::BTreeSet<_> = objects
            .iter()
            .map(|o| {
                (
                    o["kind"].as_str().unwrap_or_default().to_string(),
                    o["metadata"]["namespace"].as_str().unwrap_or_default().to_string(),
                    o["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        self.written.retain(|k, _| live.contains(k));
        applied
    }
}
