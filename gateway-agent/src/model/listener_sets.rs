//! ListenerSets: which of them join which of sockgate's Gateways, and in what order.
//!
//! A ListenerSet names its parent Gateway; the Gateway says with
//! `allowedListeners.namespaces` which namespaces may add listeners to it
//! (`None`, the default, allows no ListenerSet; `Same`, `All`, `Selector`).
//! The merged listener list is the Gateway's own listeners, then its
//! ListenerSets oldest first, then by namespace/name: that order settles
//! which listener keeps a contested port ([`super::listeners::judge`]).
use std::collections::BTreeMap;

use super::age_order;
use super::attach::selector_matches;
use crate::resources::gateway_api::{ListenerSet, GROUP};
use crate::resources::{Gateway, ListenerSetApi, ObjectKey, Snapshot};

/// A ListenerSet whose parent is one of sockgate's Gateways.
#[derive(Clone, Debug)]
pub struct Child<'a> {
    pub key: &'a ObjectKey,
    pub api: ListenerSetApi,
    pub set: &'a ListenerSet,
    pub gateway: ObjectKey,
    /// Why the Gateway does not take it; None when it does.
    pub not_allowed: Option<String>,
}

/// The Gateway a ListenerSet's parentRef names, if it names a Gateway.
pub fn parent_of(key: &ObjectKey, set: &ListenerSet) -> Option<ObjectKey> {
    let parent = &set.spec.parent_ref;
    let group = parent.group.as_deref().filter(|g| !g.is_empty()).unwrap_or(GROUP);
    if group != GROUP || parent.kind.as_deref().unwrap_or("Gateway") != "Gateway" {
        return None;
    }
    Some(ObjectKey::new(parent.namespace.clone().unwrap_or_else(|| key.namespace.clone()), parent.name.clone()))
}

/// Whether `gateway` (in `gateway_namespace`) takes ListenerSets from `set_namespace`; Err says why not.
pub fn allowed(gateway: &Gateway, gateway_namespace: &str, set_namespace: &str, namespace_labels: &dyn Fn(&str) -> BTreeMap<String, String>) -> Result<(), String> {
    let namespaces = gateway.spec.allowed_listeners.as_ref().and_then(|a| a.namespaces.as_ref());
    match namespaces.and_then(|n| n.from.as_deref()).unwrap_or("None") {
        "All" => Ok(()),
        "Same" if set_namespace == gateway_namespace => Ok(()),
        "Same" => Err(format!("the Gateway's allowedListeners.namespaces.from is Same: only ListenerSets in namespace {gateway_namespace:?} may attach")),
        "Selector" => {
            let selected = namespaces.and_then(|n| n.selector.as_ref()).is_some_and(|s| selector_matches(s, &namespace_labels(set_namespace)));
            if selected {
                Ok(())
            } else {
                Err(format!("namespace {set_namespace:?} does not match the Gateway's allowedListeners.namespaces.selector"))
            }
        }
        "None" => Err("the Gateway does not allow ListenerSets (set spec.allowedListeners.namespaces.from to Same, All or Selector)".into()),
        other => Err(format!("the Gateway's allowedListeners.namespaces.from {other:?} is not one sockgate knows")),
    }
}

/// Every ListenerSet whose parent is one of `gateways`, by Gateway, in the
/// spec's precedence (creation time, then namespace/name).
pub fn children<'a>(
    snapshot: &'a Snapshot,
    gateways: &BTreeMap<&ObjectKey, &Gateway>,
    namespace_labels: &dyn Fn(&str) -> BTreeMap<String, String>,
) -> BTreeMap<ObjectKey, Vec<Child<'a>>> {
    let mut sets: Vec<_> = snapshot.listener_sets.iter().collect();
    sets.sort_by_key(|(k, s)| age_order(&s.set.metadata, k));
    let mut out: BTreeMap<ObjectKey, Vec<Child>> = BTreeMap::new();
    for (key, versioned) in sets {
        let Some(gateway_key) = parent_of(key, &versioned.set) else { continue };
        let Some(gateway) = gateways.get(&gateway_key) else { continue };
        let not_allowed = allowed(gateway, &gateway_key.namespace, &key.namespace, namespace_labels).err();
        out.entry(gateway_key.clone()).or_default().push(Child { key, api: versioned.api, set: &versioned.set, gateway: gateway_key, not_allowed });
    }
    out
}
