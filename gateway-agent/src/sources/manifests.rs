//! Standalone mode's source: a directory of the YAML a user would `kubectl apply`.
//!
//! Every `*.yaml`/`*.yml` file directly in the directory (like `kubectl apply -f DIR`,
//! not recursive), each possibly holding several `---` documents or a `kind: List`.
//! Kinds sockgate does not use are ignored; any malformed document fails the whole
//! load, so that a half-read directory never replaces a good configuration.
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::resources::gateway_api::GROUP;
use crate::resources::{
    Gateway, GatewayClass, ObjectKey, ReferenceGrant, Snapshot, TcpRoute, TcpRouteVersion,
    VersionedTcpRoute,
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

#[derive(Debug, Default)]
pub struct Loaded {
    pub snapshot: Snapshot,
    pub ignored: Vec<IgnoredObject>,
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

#[derive(Default)]
struct Loader {
    loaded: Loaded,
    errors: Vec<ManifestError>,
    /// Where each object was first defined, to report duplicates with both places.
    origins: BTreeMap<(&'static str, ObjectKey), (PathBuf, usize)>,
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
            // v1beta1 (what a 1.20 server serves) has the same fields sockgate reads.
            ("discovery.k8s.io", "EndpointSlice") => self.add::<EndpointSlice>(version, &["v1", "v1beta1"], true, value, file, document, |s, k, o| {
                s.endpoint_slices.insert(k, o);
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
        let mut object: K = serde_json::from_value(value).map_err(|e| e.to_string())?;
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
    ReferenceGrant => "ReferenceGrant",
    Service => "Service",
    Namespace => "Namespace",
    EndpointSlice => "EndpointSlice",
}
