//! The schemas manifests are checked against before they are decoded: the
//! Gateway API v1.6.1 CRDs' (vendored, without descriptions, by
//! `tools/schemas/vendor-gateway-api.py`) and sockgate's own policy CRDs
//! (generated from the Rust types, exactly what `gateway-agent crds` prints).
mod walk;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::CustomResourceExt;
use regex::Regex;
use serde_json::Value;

pub use walk::{closest, describe, Problem};

use crate::resources::gateway_api::{GROUP, X_GROUP};
use crate::resources::policies::{self, BackendPolicy, ListenerPolicy};

const GATEWAY_API: &str = include_str!("gateway-api.json");

/// (group, kind) → version → openAPIV3Schema.
type Schemas = BTreeMap<(String, String), BTreeMap<String, Value>>;

fn schemas() -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let mut out = Schemas::new();
        let vendored: Value = serde_json::from_str(GATEWAY_API).expect("the vendored Gateway API schemas are JSON");
        for (kind, versions) in vendored["kinds"].as_object().expect("kinds") {
            let versions = versions.as_object().expect("versions").iter().map(|(v, s)| (v.clone(), s.clone())).collect();
            out.insert((GROUP.to_string(), kind.clone()), versions);
        }
        // Core kinds: from k8s-openapi's types (Kubernetes 1.32's API, every field).
        out.insert((String::new(), "Service".into()), BTreeMap::from([("v1".to_string(), core_schema::<Service>())]));
        out.insert((String::new(), "Namespace".into()), BTreeMap::from([("v1".to_string(), core_schema::<Namespace>())]));
        out.insert(("discovery.k8s.io".into(), "EndpointSlice".into()), BTreeMap::from([("v1".to_string(), core_schema::<EndpointSlice>())]));
        for crd in [ListenerPolicy::crd(), BackendPolicy::crd()] {
            let versions = crd
                .spec
                .versions
                .iter()
                .filter_map(|v| Some((v.name.clone(), serde_json::to_value(v.schema.as_ref()?.open_api_v3_schema.as_ref()?).ok()?)))
                .collect();
            out.insert((policies::GROUP.to_string(), crd.spec.names.kind.clone()), versions);
        }
        out
    })
}

/// The schema of a core type with every sub-schema inlined, as a CRD's is.
fn core_schema<T: schemars::JsonSchema>() -> Value {
    let generator = schemars::generate::SchemaSettings::openapi3().with(|s| s.inline_subschemas = true).into_generator();
    serde_json::to_value(generator.into_root_schema_for::<T>()).expect("a schema is JSON")
}

/// Every problem of `value` against the schema of `group`/`kind` at `version`
/// (ReferenceGrant v1alpha2, gone from the v1.6 bundle, is read as v1beta1;
/// XListenerSet v1alpha1, the experimental ListenerSet before v1.6, as ListenerSet v1,
/// whose spec is the one sockgate reads).
/// None when sockgate has no schema for the kind or version (the loader then
/// says the version is not one it reads).
pub fn check(group: &str, kind: &str, version: &str, value: &Value) -> Option<Vec<Problem>> {
    let (group, kind, version) = match (group, kind, version) {
        (X_GROUP, "XListenerSet", "v1alpha1") => (GROUP, "ListenerSet", "v1"),
        (_, "ReferenceGrant", "v1alpha2") => (group, kind, "v1beta1"),
        other => other,
    };
    let versions = schemas().get(&(group.to_string(), kind.to_string()))?;
    let schema = versions.get(version)?;
    Some(walk::check(schema, value))
}

/// A pattern of the schemas, compiled once (None if the regex engine cannot
/// express it: then it is not checked).
fn pattern(source: &str) -> Option<&'static Regex> {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<&'static Regex>>>> = OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    *cache.entry(source.to_string()).or_insert_with(|| Regex::new(source).ok().map(|r| &*Box::leak(Box::new(r))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_vendored_schemas_are_of_the_bundle_sockgate_says_it_supports() {
        let vendored: Value = serde_json::from_str(GATEWAY_API).unwrap();
        assert_eq!(vendored["bundleVersion"], crate::resources::gateway_api::BUNDLE_VERSION);
    }

    #[test]
    fn every_gateway_api_kind_sockgate_reads_has_a_schema_for_each_version_it_reads() {
        for (kind, versions) in [("GatewayClass", &["v1", "v1beta1"][..]), ("Gateway", &["v1", "v1beta1"]), ("TCPRoute", &["v1", "v1alpha2"]), ("UDPRoute", &["v1", "v1alpha2"]), ("ReferenceGrant", &["v1", "v1beta1"]), ("ListenerSet", &["v1"])] {
            for version in versions {
                assert!(schemas()[&(GROUP.to_string(), kind.to_string())].contains_key(*version), "{kind} {version}");
            }
        }
        assert!(check(policies::GROUP, "ListenerPolicy", "v1alpha1", &json!({})).is_some());
        assert!(check("apps", "Deployment", "v1", &json!({})).is_none());
        let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"port": "3001", "targetPort": 3000, "protocl": "TCP"}]}});
        let problems: Vec<String> = check("", "Service", "v1", &service).unwrap().iter().map(ToString::to_string).collect();
        assert_eq!(problems, ["spec.ports[0].port: must be an integer (int32), got the string \"3001\"", "unknown field \"spec.ports[0].protocl\" (did you mean \"protocol\"?)"]);
    }

    #[test]
    fn the_misspelt_section_name_of_a_tcproute_is_caught() {
        let route = json!({"apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": "TCPRoute", "metadata": {"name": "redis"},
            "spec": {"parentRefs": [{"name": "gw", "sectionNme": "redis"}], "rules": [{"backendRefs": [{"name": "redis", "port": 6379}]}]}});
        let problems: Vec<String> = check(GROUP, "TCPRoute", "v1alpha2", &route).unwrap().iter().map(ToString::to_string).collect();
        assert_eq!(problems, ["unknown field \"spec.parentRefs[0].sectionNme\" (did you mean \"sectionName\"?)"]);
    }

    #[test]
    fn a_gateway_listener_port_given_as_a_string_is_named_in_api_terms() {
        let gateway = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": "g"},
            "spec": {"gatewayClassName": "c", "listeners": [{"name": "a", "port": "3", "protocol": "TCP"}]}});
        let problems: Vec<String> = check(GROUP, "Gateway", "v1", &gateway).unwrap().iter().map(ToString::to_string).collect();
        assert_eq!(problems, ["spec.listeners[0].port: must be an integer (int32), got the string \"3\""]);
    }
}
