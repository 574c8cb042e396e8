//! Standalone mode's source: a directory of the YAML a user would `kubectl apply`.
//!
//! Every `*.yaml`/`*.yml` file directly in the directory (like `kubectl apply -f DIR`,
//! not recursive), each possibly holding several `---` documents or a `kind: List`.
//! Kinds sockgate does not use are ignored (and listed); any malformed document
//! fails the whole load, so that a half-read directory never replaces a good
//! configuration.
//!
//! Strict decoding, one rule for every kind sockgate reads: each object is
//! checked against its kind's schema (the Gateway API v1.6.1 CRDs, sockgate's
//! own CRDs, Kubernetes 1.32's core types) before it is decoded. On disk
//! ([`Strictness::Manifests`]) an unknown or misspelt field, a value of the
//! wrong type or out of the schema's range rejects the **directory**: the last
//! good configuration keeps serving, and the error names the file, document,
//! object, the field's path and, where one is close, the field meant. From a
//! cluster ([`Strictness::Cluster`]) the API server has already applied its
//! schema (pruning or rejecting unknown fields), so a field unknown to
//! sockgate's copy of a Gateway API or core schema comes from a newer API and
//! is a note, not an error; any other problem rejects that **object** alone.
//! Mistakes the schema cannot see (a Service that does not exist, a policy
//! conflict) are not decoding errors: they reject the one object through its
//! status conditions, in both modes.
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::decode::decode;
use super::schema::{self, Problem};
use serde_json::Value;

use crate::resources::gateway_api::{GROUP, X_GROUP};
use crate::resources::policies::{self, BackendPolicy, ListenerPolicy};
use crate::resources::{
    Gateway, GatewayClass, ListenerSet, ListenerSetApi, ObjectKey, ReferenceGrant, Snapshot, TcpRoute,
    TcpRouteVersion, UdpRoute, VersionedListenerSet, VersionedTcpRoute, VersionedUdpRoute,
};

/// One problem in one document of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestError {
    pub file: PathBuf,
    /// 1-based position of the `---` document in the file.
    pub document: usize,
    pub reason: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}: {}", self.file.display(), self.document, self.reason)
    }
}

/// All the problems of one load attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError(pub Vec<ManifestError>);

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

/// An object of a kind sockgate does not use (a Deployment, say).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IgnoredObject {
    pub file: PathBuf,
    pub document: usize,
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

#[derive(Clone, Debug, Default)]
pub struct Loaded {
    pub snapshot: Snapshot,
    pub ignored: Vec<IgnoredObject>,
    /// Things worth saying that do not stop the load (fields from a newer API, deprecated spellings).
    pub notes: Vec<String>,
}

/// How strictly objects are checked against their schema (see the module's doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strictness {
    /// Manifests on disk: every problem is an error.
    #[default]
    Manifests,
    /// Objects read from an API server, which applied its own schema first.
    Cluster,
}

/// The manifest files of `dir`, sorted by name.
pub fn manifest_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_yaml = matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
        if is_yaml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads every manifest file of `dir` into one snapshot.
pub fn load_dir(dir: &Path) -> Result<Loaded, LoadError> {
    let files = manifest_files(dir).map_err(|e| {
        LoadError(vec![ManifestError { file: dir.to_path_buf(), document: 0, reason: format!("cannot list directory: {e}") }])
    })?;
    let mut loader = Loader::default();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => loader.add_file(&file, &text),
            Err(e) => loader.fail(&file, 0, format!("cannot read file: {e}")),
        }
    }
    loader.finish()
}

/// Reads one file's text (tests and callers that already hold the text).
pub fn load_text(file: &Path, text: &str) -> Result<Loaded, LoadError> {
    let mut loader = Loader::default();
    loader.add_file(file, text);
    loader.finish()
}

/// Reads objects from a cluster: each is checked as a manifest would be, but a
/// bad object is dropped (and returned as a problem) instead of failing the
/// rest: one user's broken route must not take other routes down.
pub fn load_objects(objects: impl IntoIterator<Item = (String, Value)>) -> (Loaded, Vec<ManifestError>) {
    let mut loader = Loader { strictness: Strictness::Cluster, ..Loader::default() };
    for (origin, value) in objects {
        loader.add_value(Path::new(&origin), 1, value);
    }
    (loader.loaded, loader.errors)
}

#[derive(Default)]
struct Loader {
    loaded: Loaded,
    errors: Vec<ManifestError>,
    /// Where each object was first defined, to report duplicates with both places.
    origins: BTreeMap<(&'static str, ObjectKey), (PathBuf, usize)>,
    strictness: Strictness,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

impl Loader {
    fn fail(&mut self, file: &Path, document: usize, reason: String) {
        self.errors.push(ManifestError { file: file.to_path_buf(), document, reason });
    }

    fn add_file(&mut self, file: &Path, text: &str) {
        for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let index = i + 1;
            match Value::deserialize(document) {
                Ok(value) => self.add_value(file, index, value),
                Err(e) => {
                    // A YAML syntax error leaves the rest of the file unreadable.
                    self.fail(file, index, format!("invalid YAML: {e}"));
                    return;
                }
            }
        }
    }

    fn add_value(&mut self, file: &Path, document: usize, value: Value) {
        if value.is_null() {
            return; // an empty document, e.g. a trailing `---`
        }
        if !value.is_object() {
            return self.fail(file, document, "a document must be a mapping with apiVersion and kind".into());
        }
        let type_meta: TypeMeta = match serde_json::from_value(value.clone()) {
            Ok(t) => t,
            Err(e) => return self.fail(file, document, format!("invalid apiVersion/kind: {e}")),
        };
        if type_meta.api_version.is_empty() || type_meta.kind.is_empty() {
            return self.fail(file, document, "apiVersion and kind are required".into());
        }
        if type_meta.api_version == "v1" && type_meta.kind == "List" {
            let items = value.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
            for item in items {
                self.add_value(file, document, item);
            }
            return;
        }
        let (group, version) = match type_meta.api_version.rsplit_once('/') {
            Some((g, v)) => (g, v),
            None => ("", type_meta.api_version.as_str()),
        };
        let described = describe(&value, !matches!(type_meta.kind.as_str(), "GatewayClass" | "Namespace"));
        let value = if (group, type_meta.kind.as_str()) == ("discovery.k8s.io", "EndpointSlice") && version == "v1beta1" { as_v1_endpoint_slice(value) } else { value };
        let schema_version = if group == "discovery.k8s.io" { "v1" } else { version };
        if group == policies::GROUP {
            self.loaded.notes.extend(policies::deprecated_spellings(&value).into_iter().map(|d| format!("{} {described}: {d}", type_meta.kind)));
        }
        if let Some(problems) = schema::check(group, &type_meta.kind, schema_version, &value) {
            if let Err(reason) = self.judge(group, &type_meta.kind, &described, problems) {
                return self.fail(file, document, format!("{} {described}: {reason}", type_meta.kind));
            }
        }
        let pruned = if self.strictness == Strictness::Cluster { pruned_fields(group, &type_meta.kind, schema_version, &value) } else { Vec::new() };
        if !pruned.is_empty() {
            if group == policies::GROUP {
                // Said in the policy's own status (Accepted=False) by the translator.
                let namespace = value.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default");
                let name = value.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
                self.loaded.snapshot.pruned_fields.insert((type_meta.kind.clone(), ObjectKey::new(namespace, name)), pruned);
            } else {
                for field in &pruned {
                    self.loaded.notes.push(format!("{} {described}: {field} in the manifest last applied with kubectl: the API server dropped it (its schema has no such field), so it has no effect; fix the manifest", type_meta.kind));
                }
            }
        }
        let result = match (group, type_meta.kind.as_str()) {
            (GROUP, "GatewayClass") => self.add::<GatewayClass>(version, &["v1", "v1beta1"], false, value, file, document, |s, k, o| {
                s.gateway_classes.insert(k, o);
                Ok(())
            }),
            (GROUP, "Gateway") => self.add::<Gateway>(version, &["v1", "v1beta1"], true, value, file, document, |s, k, o| {
                o.validate()?;
                s.gateways.insert(k, o);
                Ok(())
            }),
            (GROUP, "TCPRoute") => {
                let route_version = if version == "v1" { TcpRouteVersion::V1 } else { TcpRouteVersion::V1Alpha2 };
                self.add::<TcpRoute>(version, &["v1", "v1alpha2"], true, value, file, document, move |s, k, o| {
                    o.validate(route_version)?;
                    s.tcp_routes.insert(k, VersionedTcpRoute { version: route_version, route: o });
                    Ok(())
                })
            }
            (GROUP, "UDPRoute") => {
                let route_version = if version == "v1" { TcpRouteVersion::V1 } else { TcpRouteVersion::V1Alpha2 };
                self.add::<UdpRoute>(version, &["v1", "v1alpha2"], true, value, file, document, move |s, k, o| {
                    o.validate(route_version)?;
                    s.udp_routes.insert(k, VersionedUdpRoute { version: route_version, route: o });
                    Ok(())
                })
            }
            (GROUP, "ListenerSet") => self.add::<ListenerSet>(version, &["v1"], true, value, file, document, |s, k, o| {
                o.validate()?;
                s.listener_sets.insert(k, VersionedListenerSet { api: ListenerSetApi::V1, set: o });
                Ok(())
            }),
            // What a server before v1.6 serves (experimental channel): the same spec.
            (X_GROUP, "XListenerSet") => self.add::<ListenerSet>(version, &["v1alpha1"], true, value, file, document, |s, k, o| {
                o.validate()?;
                s.listener_sets.insert(k, VersionedListenerSet { api: ListenerSetApi::XV1Alpha1, set: o });
                Ok(())
            }),
            (GROUP, "ReferenceGrant") => self.add::<ReferenceGrant>(version, &["v1", "v1beta1", "v1alpha2"], true, value, file, document, |s, k, o| {
                s.reference_grants.insert(k, o);
                Ok(())
            }),
            ("", "Service") => self.add::<Service>(version, &["v1"], true, value, file, document, |s, k, o| {
                s.services.insert(k, o);
                Ok(())
            }),
            ("", "Namespace") => self.add::<Namespace>(version, &["v1"], false, value, file, document, |s, k, o| {
                s.namespaces.insert(k, o);
                Ok(())
            }),
            // v1beta1 (what a 1.20 server serves) has the same fields sockgate reads;
            // the v1 type insists on its own apiVersion, so it is read as v1.
            ("discovery.k8s.io", "EndpointSlice") => self.add::<EndpointSlice>(version, &["v1", "v1beta1"], true, value, file, document, |s, k, o| {
                s.endpoint_slices.insert(k, o);
                Ok(())
            }),
            (policies::GROUP, "ListenerPolicy") => self.add::<ListenerPolicy>(version, &[policies::VERSION], true, value, file, document, |s, k, o| {
                s.listener_policies.insert(k, o);
                Ok(())
            }),
            (policies::GROUP, "BackendPolicy") => self.add::<BackendPolicy>(version, &[policies::VERSION], true, value, file, document, |s, k, o| {
                s.backend_policies.insert(k, o);
                Ok(())
            }),
            _ => {
                let name = value.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
                tracing::debug!(file = %file.display(), document, api_version = %type_meta.api_version, kind = %type_meta.kind, %name,
                    "ignoring an object of a kind sockgate does not use");
                self.loaded.ignored.push(IgnoredObject {
                    file: file.to_path_buf(),
                    document,
                    api_version: type_meta.api_version.clone(),
                    kind: type_meta.kind.clone(),
                    name,
                });
                Ok(())
            }
        };
        if let Err(reason) = result {
            self.fail(file, document, format!("{} {described}: {reason}", type_meta.kind));
        }
    }

    /// The schema's problems of one object: an error naming them all, or Ok
    /// (with a note) for fields only a newer API has, read from a cluster.
    fn judge(&mut self, group: &str, kind: &str, described: &str, problems: Vec<Problem>) -> Result<(), String> {
        let owned_schema = group == policies::GROUP;
        let (newer, errors): (Vec<Problem>, Vec<Problem>) = problems
            .into_iter()
            .partition(|p| self.strictness == Strictness::Cluster && !owned_schema && matches!(p, Problem::UnknownField { .. }));
        let hint = |p: &Problem| match p {
            Problem::Invalid { path, .. } if path == "spec.rules" && matches!(kind, "TCPRoute" | "UDPRoute") => format!(" ({kind} v1 has exactly one rule; v1alpha2 allows up to 16)"),
            _ => String::new(),
        };
        for p in &newer {
            self.loaded.notes.push(format!("{kind} {described}: {p}: not in the schema sockgate was built with (a newer API?); ignored"));
        }
        if errors.is_empty() {
            return Ok(());
        }
        Err(errors.iter().map(|p| format!("{p}{}", hint(p))).collect::<Vec<_>>().join("; "))
    }

    /// Parses one object of kind `K`, defaults its namespace, rejects duplicates
    /// and hands it to `insert` (which may validate it further).
    #[allow(clippy::too_many_arguments)]
    fn add<K: DeserializeOwned + HasMeta + KindName>(
        &mut self,
        version: &str,
        served: &[&str],
        namespaced: bool,
        value: Value,
        file: &Path,
        document: usize,
        insert: impl FnOnce(&mut Snapshot, ObjectKey, K) -> Result<(), String>,
    ) -> Result<(), String> {
        if !served.contains(&version) {
            return Err(format!("API version {version:?} is not one sockgate reads (it reads {})", served.join(", ")));
        }
        let mut object: K = decode(value)?;
        let meta = object.meta_mut();
        let name = meta.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err("metadata.name is required".into());
        }
        if namespaced {
            meta.namespace.get_or_insert_with(|| "default".to_string());
        } else {
            meta.namespace = None;
        }
        let key = ObjectKey::new(meta.namespace.clone().unwrap_or_default(), name);
        let origin = (K::KIND, key.clone());
        if let Some((first_file, first_doc)) = self.origins.get(&origin) {
            return Err(format!("duplicate object: already defined in {} document {first_doc}", first_file.display()));
        }
        insert(&mut self.loaded.snapshot, key, object)?;
        self.origins.insert(origin, (file.to_path_buf(), document));
        Ok(())
    }

    fn finish(self) -> Result<Loaded, LoadError> {
        if self.errors.is_empty() {
            Ok(self.loaded)
        } else {
            Err(LoadError(self.errors))
        }
    }
}

/// A v1beta1 EndpointSlice in v1's shape: the fields sockgate reads are the
/// same; `topology` became `deprecatedTopology`.
fn as_v1_endpoint_slice(mut value: Value) -> Value {
    value["apiVersion"] = Value::from("discovery.k8s.io/v1");
    if let Some(endpoints) = value.get_mut("endpoints").and_then(Value::as_array_mut) {
        for endpoint in endpoints.iter_mut().filter_map(Value::as_object_mut) {
            if let Some(topology) = endpoint.remove("topology") {
                endpoint.insert("deprecatedTopology".into(), topology);
            }
        }
    }
    value
}

/// "namespace/name" (or "name" when cluster-scoped) of a raw object, for error messages.
fn describe(value: &Value, namespaced: bool) -> String {
    let name = value.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("<no name>");
    if !namespaced {
        return name.to_string();
    }
    let namespace = value.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default");
    format!("{namespace}/{name}")
}

pub trait HasMeta {
    fn meta_mut(&mut self) -> &mut ObjectMeta;
}

/// The kind's name, which scopes duplicate detection.
pub trait KindName {
    const KIND: &'static str;
}

macro_rules! kind {
    ($($ty:ty => $kind:literal),* $(,)?) => {$(
        impl HasMeta for $ty {
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
        impl KindName for $ty {
            const KIND: &'static str = $kind;
        }
    )*};
}

kind! {
    GatewayClass => "GatewayClass",
    Gateway => "Gateway",
    TcpRoute => "TCPRoute",
    UdpRoute => "UDPRoute",
    ReferenceGrant => "ReferenceGrant",
    // XListenerSet too: one name in both kinds would be one ListenerSet twice.
    ListenerSet => "ListenerSet",
    Service => "Service",
    Namespace => "Namespace",
    EndpointSlice => "EndpointSlice",
    ListenerPolicy => "ListenerPolicy",
    BackendPolicy => "BackendPolicy",
}

/// Unknown fields of the manifest last applied with `kubectl apply` (its
/// `last-applied-configuration` annotation) that the live object does not
/// have: a server that prunes unknown fields (every server without strict
/// field validation, such as 1.20) drops a misspelt field without a word, and
/// this annotation is the only place it survives.
fn pruned_fields(group: &str, kind: &str, version: &str, live: &Value) -> Vec<String> {
    const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
    let Some(applied) = live.pointer("/metadata/annotations").and_then(|a| a.get(LAST_APPLIED)).and_then(Value::as_str) else { return Vec::new() };
    let Ok(applied) = serde_json::from_str::<Value>(applied) else { return Vec::new() };
    // A manifest applied as another version is not comparable field by field.
    if applied.get("apiVersion") != live.get("apiVersion") {
        return Vec::new();
    }
    let unknown = |value: &Value| -> Vec<String> {
        schema::check(group, kind, version, value)
            .unwrap_or_default()
            .into_iter()
            .filter(|p| matches!(p, Problem::UnknownField { .. }))
            .map(|p| p.to_string())
            .collect()
    };
    let live_unknown = unknown(live);
    unknown(&applied).into_iter().filter(|p| !live_unknown.contains(p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Loaded, LoadError> {
        load_text(Path::new("m.yaml"), text)
    }

    fn errors(text: &str) -> Vec<String> {
        load(text).expect_err("must be rejected").0.iter().map(ToString::to_string).collect()
    }

    const EVERY_KIND: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {team: a}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sockgate}
spec: {controllerName: sockgate.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: sockgate
  listeners: [{name: foo, port: 8088, protocol: TCP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: standard, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: default}]
  rules: [{backendRefs: [{name: foo, namespace: default, port: 3001}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: experimental}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs: [{name: foo, port: 3001, weight: 3}]
  - backendRefs: [{name: bar, port: 3002}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: from-apps}
spec:
  from: [{group: gateway.networking.k8s.io, kind: TCPRoute, namespace: apps}]
  to: [{group: "", kind: Service}]
---
apiVersion: v1
kind: Service
metadata: {name: foo}
spec: {ports: [{name: http, port: 3001, targetPort: 3000}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: foo-abc, labels: {kubernetes.io/service-name: foo}}
addressType: IPv4
endpoints: [{addresses: ["198.18.2.2"]}]
---
apiVersion: discovery.k8s.io/v1beta1
kind: EndpointSlice
metadata: {name: foo-old}
addressType: IPv4
endpoints: [{addresses: ["198.18.2.3"], topology: {zone: a}}]
"#;

    #[test]
    fn every_kind_loads_with_namespaces_defaulted() {
        let s = load(EVERY_KIND).unwrap().snapshot;
        assert!(s.namespaces.contains_key(&ObjectKey::cluster("apps")));
        assert!(s.gateway_classes.contains_key(&ObjectKey::cluster("sockgate")));
        assert_eq!(s.gateways[&ObjectKey::new("default", "gw")].spec.listeners[0].port, 8088);
        assert!(s.reference_grants.contains_key(&ObjectKey::new("default", "from-apps")));
        assert!(s.services.contains_key(&ObjectKey::new("default", "foo")));
        assert_eq!(s.endpoint_slices.len(), 2, "v1 and v1beta1 EndpointSlices both load");
        assert_eq!(s.object_count(), 9);
    }

    #[test]
    fn both_tcproute_versions_load_and_keep_their_version() {
        let s = load(EVERY_KIND).unwrap().snapshot;
        let standard = &s.tcp_routes[&ObjectKey::new("apps", "standard")];
        assert_eq!(standard.version, TcpRouteVersion::V1);
        let experimental = &s.tcp_routes[&ObjectKey::new("default", "experimental")];
        assert_eq!(experimental.version, TcpRouteVersion::V1Alpha2);
        assert_eq!(experimental.route.spec.rules.len(), 2);
        assert_eq!(experimental.route.spec.rules[0].backend_refs[0].weight, Some(3));
    }

    #[test]
    fn a_v1_tcproute_with_two_rules_is_rejected_as_the_schema_would() {
        let e = errors("apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata: {name: r}\nspec:\n  rules: [{backendRefs: [{name: s, port: 1}]}, {backendRefs: [{name: s, port: 1}]}]\n");
        assert_eq!(e, ["m.yaml: document 1: TCPRoute default/r: spec.rules: may have at most 1 item, has 2 (TCPRoute v1 has exactly one rule; v1alpha2 allows up to 16)"]);
    }

    #[test]
    fn schema_rules_a_1_20_server_cannot_check_are_checked_here() {
        let route = |backend: &str| format!("apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {{name: r}}\nspec:\n  rules: [{{backendRefs: [{backend}]}}]\n");
        assert!(errors(&route("{name: s}"))[0].contains("backendRefs[0].port is required when referring to a Service"));
        assert!(errors(&route("{name: s, port: 1, weight: 1000001}"))[0].contains("spec.rules[0].backendRefs[0].weight: must be at most 1000000, got 1000001"));
        let gw = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  gatewayClassName: c\n  listeners: [{name: a, port: 1, protocol: TCP}, {name: a, port: 2, protocol: TCP}]\n";
        assert!(errors(gw)[0].contains("spec.listeners[1].name \"a\" is not unique"));
    }

    #[test]
    fn the_crds_cel_rules_on_parent_refs_listeners_and_rule_names_are_enforced() {
        let route = |parents: &str, rules: &str| format!("apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {{name: r}}\nspec:\n  parentRefs: {parents}\n  rules: {rules}\n");
        let one_rule = "[{backendRefs: [{name: s, port: 1}]}]";
        assert!(errors(&route("[{name: gw, sectionName: a}, {name: gw}]", one_rule))[0].contains("sectionName or port must be specified when parentRefs includes 2 or more references to the same parent"));
        assert!(errors(&route("[{name: gw, port: 1}, {name: gw, port: 1}]", one_rule))[0].contains("sectionName or port must be unique"));
        assert!(load(&route("[{name: gw, sectionName: a}, {name: gw, sectionName: b}, {name: other}]", one_rule)).is_ok());
        assert!(load(&route("[{name: gw}, {name: gw, namespace: elsewhere}]", one_rule)).is_ok(), "different parents");
        assert!(errors(&route("[{name: gw}]", "[{name: x, backendRefs: [{name: s, port: 1}]}, {name: x, backendRefs: [{name: s, port: 1}]}]"))[0].contains("rule name must be unique within the route"));
        let gw = |l2: &str| format!("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: g}}\nspec:\n  gatewayClassName: c\n  listeners: [{{name: a, port: 1, protocol: TCP}}, {l2}]\n");
        assert!(errors(&gw("{name: b, port: 1, protocol: TCP}"))[0].contains("the combination of port, protocol and hostname must be unique"));
        assert!(errors(&gw("{name: b, port: 2, protocol: TCP, hostname: b.example}"))[0].contains("spec.listeners[1]: hostname must not be specified for protocols ['TCP', 'UDP'] (listener \"b\" is TCP)"));
        assert!(errors(&gw("{name: b, port: 2, protocol: UDP, tls: {mode: Terminate}}"))[0].contains("spec.listeners[1]: tls must not be specified for protocols ['HTTP', 'TCP', 'UDP'] (listener \"b\" is UDP)"));
        assert!(errors(&gw("{name: b, port: 2, protocol: TLS, hostname: b.example}"))[0].contains("tls mode must be set for protocol TLS"));
        assert!(errors(&gw("{name: b, port: 2, protocol: HTTPS, tls: {mode: Passthrough}}"))[0].contains("tls mode must be Terminate for protocol HTTPS"));
        assert!(load(&gw("{name: b, port: 1, protocol: TLS, hostname: b.example, tls: {mode: Passthrough}}")).is_ok(), "TLS may share the port in the schema (and then conflicts with TCP)");
    }

    #[test]
    fn unknown_kinds_are_ignored_and_listed_not_errors() {
        let loaded = load("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: backend-1}\nspec: {}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n").unwrap();
        assert_eq!(loaded.snapshot.object_count(), 0);
        let kinds: Vec<_> = loaded.ignored.iter().map(|i| (i.kind.as_str(), i.name.as_str(), i.document)).collect();
        assert_eq!(kinds, [("Deployment", "backend-1", 1), ("ConfigMap", "c", 2)]);
    }

    #[test]
    fn a_misspelt_field_rejects_the_directory_naming_the_object_the_path_and_the_field_meant() {
        let e = errors("apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {name: redis}\nspec:\n  parentRefs: [{name: gw, sectionNme: redis}]\n  rules: [{backendRefs: [{name: redis, port: 6379}]}]\n");
        assert_eq!(e, ["m.yaml: document 1: TCPRoute default/redis: unknown field \"spec.parentRefs[0].sectionNme\" (did you mean \"sectionName\"?)"]);
    }

    #[test]
    fn every_kind_sockgate_reads_is_decoded_strictly() {
        let cases = [
            ("apiVersion: v1\nkind: Namespace\nmetadata: {name: a, lables: {x: y}}\n", "Namespace a: unknown field \"metadata.lables\" (did you mean \"labels\"?)"),
            ("apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: c}\nspec: {controllerNme: x}\n", "unknown field \"spec.controllerNme\" (did you mean \"controllerName\"?)"),
            ("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {gatewayClassName: c, listeners: [{name: a, port: 1, protocol: TCP, allowedRoute: {}}]}\n", "unknown field \"spec.listeners[0].allowedRoute\" (did you mean \"allowedRoutes\"?)"),
            ("apiVersion: gateway.networking.k8s.io/v1\nkind: UDPRoute\nmetadata: {name: u}\nspec: {rules: [{backendRef: []}]}\n", "unknown field \"spec.rules[0].backendRef\" (did you mean \"backendRefs\"?)"),
            ("apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: r}\nspec: {from: [{group: '', kind: TCPRoute, namespce: a}], to: [{group: '', kind: Service}]}\n", "unknown field \"spec.from[0].namespce\" (did you mean \"namespace\"?)"),
            ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: \"3001\"}]}\n", "Service default/s: spec.ports[0].port: must be an integer (int32), got the string \"3001\""),
            ("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: e}\naddressType: IPv4\nendpoints: [{adresses: [198.18.2.2]}]\n", "unknown field \"endpoints[0].adresses\" (did you mean \"addresses\"?)"),
            ("apiVersion: sockgate.io/v1alpha1\nkind: ListenerPolicy\nmetadata: {name: p}\nspec: {targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: g}], maxConnections: -1}\n", "ListenerPolicy default/p: spec.maxConnections: must be at least 1, got -1"),
            ("apiVersion: sockgate.io/v1alpha1\nkind: BackendPolicy\nmetadata: {name: p}\nspec: {targetRefs: [{kind: Service, name: s}], retries: {attempts: \"3\"}}\n", "spec.retries.attempts: must be an integer (int32), got the string \"3\""),
        ];
        for (text, expected) in cases {
            let e = errors(text);
            assert_eq!(e.len(), 1, "{e:?}");
            assert!(e[0].contains(expected), "{}\n  does not contain\n{expected}", e[0]);
            assert!(!e[0].contains("u32") && !e[0].contains("i32") && !e[0].contains("struct"), "a Rust type name in: {}", e[0]);
        }
    }

    /// A live object as a pruning API server returns it after `kubectl apply`
    /// of `applied`: the misspelt field gone, the manifest kept in the annotation.
    fn pruned_by_the_server(live: &str, applied: &str) -> Value {
        let mut live: Value = serde_yaml::from_str(live).unwrap();
        let applied: Value = serde_yaml::from_str(applied).unwrap();
        live["metadata"]["annotations"] = serde_json::json!({ "kubectl.kubernetes.io/last-applied-configuration": applied.to_string() });
        live
    }

    #[test]
    fn from_a_cluster_a_field_the_server_pruned_from_the_applied_manifest_is_named_for_policies_and_noted_for_gateway_api_objects() {
        let policy = pruned_by_the_server(
            "apiVersion: sockgate.io/v1alpha1\nkind: ListenerPolicy\nmetadata: {name: p, namespace: apps}\nspec: {targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: g}], maxConnections: 5}\n",
            "apiVersion: sockgate.io/v1alpha1\nkind: ListenerPolicy\nmetadata: {name: p, namespace: apps}\nspec: {targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: g}], maxConnections: 5, clientCIDR: {deny: [198.18.0.0/15]}}\n",
        );
        let gateway = pruned_by_the_server(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: apps}\nspec: {gatewayClassName: c, listeners: [{name: a, port: 1, protocol: TCP}]}\n",
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: apps}\nspec: {gatewayClassName: c, listeners: [{name: a, port: 1, protocol: TCP, allowedRoute: {namespaces: {from: All}}}]}\n",
        );
        // Applied as it is now: nothing was pruned.
        let clean = pruned_by_the_server(
            "apiVersion: sockgate.io/v1alpha1\nkind: BackendPolicy\nmetadata: {name: b, namespace: apps}\nspec: {targetRefs: [{kind: Service, name: s}]}\n",
            "apiVersion: sockgate.io/v1alpha1\nkind: BackendPolicy\nmetadata: {name: b, namespace: apps}\nspec: {targetRefs: [{kind: Service, name: s}]}\n",
        );
        let (loaded, problems) = load_objects([("cluster ListenerPolicy".to_string(), policy), ("cluster Gateway".to_string(), gateway), ("cluster BackendPolicy".to_string(), clean)]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(loaded.snapshot.listener_policies.len(), 1, "the policy is read: its status will say what is wrong");
        assert_eq!(
            loaded.snapshot.pruned_fields,
            BTreeMap::from([(("ListenerPolicy".to_string(), ObjectKey::new("apps", "p")), vec!["unknown field \"spec.clientCIDR\" (did you mean \"clientCIDRs\"?)".to_string()])])
        );
        assert_eq!(loaded.snapshot.gateways.len(), 1, "the Gateway keeps serving");
        assert_eq!(loaded.notes.len(), 1, "{:?}", loaded.notes);
        assert!(loaded.notes[0].starts_with("Gateway apps/g: unknown field \"spec.listeners[0].allowedRoute\" (did you mean \"allowedRoutes\"?) in the manifest last applied with kubectl: the API server dropped it"), "{}", loaded.notes[0]);
    }

    #[test]
    fn from_a_cluster_a_field_of_a_newer_api_is_a_note_but_a_policy_field_sockgate_does_not_know_rejects_the_policy() {
        let gateway: Value = serde_yaml::from_str("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: default}\nspec: {gatewayClassName: c, listeners: [{name: a, port: 1, protocol: TCP}], futureField: 1}\n").unwrap();
        let policy: Value = serde_yaml::from_str("apiVersion: sockgate.io/v1alpha1\nkind: ListenerPolicy\nmetadata: {name: p, namespace: default}\nspec: {targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: g}], clientCIDR: {deny: [198.18.0.0/15]}}\n").unwrap();
        let (loaded, problems) = load_objects([("cluster Gateway".to_string(), gateway), ("cluster ListenerPolicy".to_string(), policy)]);
        assert_eq!(loaded.snapshot.gateways.len(), 1, "the Gateway is served");
        assert!(loaded.notes[0].contains("spec.futureField"), "{:?}", loaded.notes);
        assert!(loaded.snapshot.listener_policies.is_empty());
        assert_eq!(problems.len(), 1);
        assert!(problems[0].reason.contains("unknown field \"spec.clientCIDR\" (did you mean \"clientCIDRs\"?)"), "{}", problems[0].reason);
    }

    #[test]
    fn malformed_yaml_is_reported_with_file_document_and_reason() {
        let e = errors("apiVersion: v1\nkind: Namespace\nmetadata: {name: ok}\n---\nkind: [unclosed\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("m.yaml: document 2: invalid YAML:"), "{}", e[0]);
    }

    #[test]
    fn documents_without_kind_name_or_with_wrong_shapes_are_errors() {
        assert_eq!(errors("metadata: {name: x}\n"), ["m.yaml: document 1: apiVersion and kind are required"]);
        assert_eq!(errors("- a list\n"), ["m.yaml: document 1: a document must be a mapping with apiVersion and kind"]);
        assert_eq!(errors("apiVersion: v1\nkind: Service\nmetadata: {}\n"), ["m.yaml: document 1: Service default/<no name>: metadata.name is required"]);
        let e = errors("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {listeners: 3}\n");
        assert_eq!(e, ["m.yaml: document 1: Gateway default/g: spec.gatewayClassName: is required; spec.listeners: must be a list, got 3"]);
    }

    #[test]
    fn an_api_version_that_is_not_served_is_an_error() {
        let e = errors("apiVersion: gateway.networking.k8s.io/v9\nkind: Gateway\nmetadata: {name: g}\nspec: {gatewayClassName: c, listeners: []}\n");
        assert!(e[0].contains("API version \"v9\" is not one sockgate reads"), "{}", e[0]);
    }

    #[test]
    fn duplicate_objects_are_errors_naming_both_places_even_across_tcproute_versions() {
        let route = |v: &str| format!("apiVersion: gateway.networking.k8s.io/{v}\nkind: TCPRoute\nmetadata: {{name: r}}\nspec:\n  rules: [{{backendRefs: [{{name: s, port: 1}}]}}]\n");
        let e = errors(&format!("{}---\n{}", route("v1"), route("v1alpha2")));
        assert_eq!(e, ["m.yaml: document 2: TCPRoute default/r: duplicate object: already defined in m.yaml document 1"]);
        // The same name in another namespace, or of another kind, is a different object.
        let ok = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: other}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n";
        assert_eq!(load(ok).unwrap().snapshot.object_count(), 3);
    }

    #[test]
    fn a_kind_list_is_unpacked_and_empty_documents_are_skipped() {
        let text = "---\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: a}\n- apiVersion: v1\n  kind: Service\n  metadata: {name: b}\n---\n";
        assert_eq!(load(text).unwrap().snapshot.services.len(), 2);
    }

    #[test]
    fn a_directory_loads_yaml_and_yml_files_only_and_all_errors_are_collected() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n").unwrap();
        std::fs::write(dir.path().join("b.yml"), "apiVersion: v1\nkind: Service\nmetadata: {name: b}\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not: [yaml").unwrap();
        assert_eq!(load_dir(dir.path()).unwrap().snapshot.services.len(), 2);
        std::fs::write(dir.path().join("c.yaml"), "kind: [").unwrap();
        std::fs::write(dir.path().join("d.yaml"), "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n").unwrap();
        let e = load_dir(dir.path()).unwrap_err();
        assert_eq!(e.0.len(), 2, "{e}");
        assert!(e.0[0].file.ends_with("c.yaml") && e.0[1].file.ends_with("d.yaml"));
        assert!(e.0[1].reason.contains("duplicate object: already defined in"));
    }

    #[test]
    fn listener_sets_are_decoded_strictly_and_their_listeners_validated_as_a_gateways() {
        let set = |api: &str, kind: &str, listeners: &str| format!("apiVersion: {api}\nkind: {kind}\nmetadata: {{name: ls}}\nspec:\n  parentRef: {{name: gw}}\n  listeners: {listeners}\n");
        let loaded = load(&set("gateway.networking.k8s.io/v1", "ListenerSet", "[{name: a, port: 1, protocol: TCP}]")).unwrap();
        assert_eq!(loaded.snapshot.listener_sets[&ObjectKey::new("default", "ls")].api, ListenerSetApi::V1);
        let loaded = load(&set("gateway.networking.x-k8s.io/v1alpha1", "XListenerSet", "[{name: a, port: 1, protocol: TCP}]")).unwrap();
        assert_eq!(loaded.snapshot.listener_sets[&ObjectKey::new("default", "ls")].api, ListenerSetApi::XV1Alpha1);
        assert_eq!(errors(&set("gateway.networking.k8s.io/v1", "ListenerSet", "[{name: a, port: 1, protocl: TCP}]")),
            ["m.yaml: document 1: ListenerSet default/ls: spec.listeners[0].protocol: is required; unknown field \"spec.listeners[0].protocl\" (did you mean \"protocol\"?)"]);
        assert_eq!(errors(&set("gateway.networking.k8s.io/v1", "ListenerSet", "[{name: a, port: 1, protocol: TCP}, {name: b, port: 1, protocol: TCP}]")),
            ["m.yaml: document 1: ListenerSet default/ls: spec.listeners[1] and [0]: the combination of port, protocol and hostname must be unique for each listener"]);
        let both = [set("gateway.networking.k8s.io/v1", "ListenerSet", "[{name: a, port: 1, protocol: TCP}]"), set("gateway.networking.x-k8s.io/v1alpha1", "XListenerSet", "[{name: a, port: 1, protocol: TCP}]")].join("---\n");
        assert_eq!(errors(&both), ["m.yaml: document 2: XListenerSet default/ls: duplicate object: already defined in m.yaml document 1"]);
    }
}
