//! GatewayClass `SupportedVersion`: whether the Gateway API CRDs installed are
//! of the release sockgate is built against.
//!
//! Each Gateway API CRD names its release in the `bundle-version` annotation.
//! CRDs of sockgate's minor version (v1.6.x) are supported. Any other, or one
//! without the annotation, makes the condition False with reason
//! `UnsupportedVersion`, naming each such CRD; the class stays `Accepted`: the
//! agent reads whatever versions the server serves (discovery picks TCPRoute
//! v1 or v1alpha2, ListenerSet or XListenerSet), so older or newer CRDs are
//! served on a best-effort basis, which is what the spec's False-but-Accepted
//! combination says. Standalone, there are no CRDs: manifests are checked
//! against the schemas built in, so the condition is True and says that.
use crate::resources::gateway_api::BUNDLE_VERSION;

use super::status::{reasons, types, Condition};

/// A Gateway API CRD on the API server, with its `bundle-version` annotation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct InstalledCrd {
    /// The CRD's name, e.g. `tcproutes.gateway.networking.k8s.io`.
    pub name: String,
    pub bundle_version: Option<String>,
}

/// What the agent knows of the installed CRDs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Crds {
    /// Standalone mode: manifests on disk, no CRDs.
    #[default]
    Standalone,
    Installed(Vec<InstalledCrd>),
    /// They could not be read (the error), e.g. no RBAC to get CRDs.
    Unreadable(String),
}

/// "v1.6" of "v1.6.1".
fn minor(version: &str) -> Option<&str> {
    let mut dots = version.match_indices('.');
    let (_, second) = (dots.next()?, dots.next());
    Some(match second {
        Some((i, _)) => &version[..i],
        None => version,
    })
}

pub fn condition(crds: &Crds) -> Condition {
    let ours = minor(BUNDLE_VERSION).unwrap_or(BUNDLE_VERSION);
    let unsupported = |message: String| Condition::new(types::SUPPORTED_VERSION, false, reasons::UNSUPPORTED_VERSION, message);
    match crds {
        Crds::Standalone => Condition::new(
            types::SUPPORTED_VERSION,
            true,
            reasons::SUPPORTED_VERSION,
            format!("standalone: manifests are checked against the Gateway API {BUNDLE_VERSION} schemas built into sockgate"),
        ),
        Crds::Unreadable(error) => unsupported(format!("the Gateway API CRDs' bundle versions could not be read ({error}): give the agent get on customresourcedefinitions")),
        Crds::Installed(installed) => {
            let mut wrong: Vec<String> = installed
                .iter()
                .filter(|c| c.bundle_version.as_deref().and_then(minor) != Some(ours))
                .map(|c| format!("{} {}", c.name, c.bundle_version.as_deref().unwrap_or("(no bundle-version annotation)")))
                .collect();
            wrong.sort();
            if wrong.is_empty() {
                let mut versions: Vec<&str> = installed.iter().filter_map(|c| c.bundle_version.as_deref()).collect();
                versions.sort();
                versions.dedup();
                Condition::new(types::SUPPORTED_VERSION, true, reasons::SUPPORTED_VERSION, format!("Gateway API CRDs {} installed; sockgate supports {ours}.x", versions.join(", ")))
            } else {
                unsupported(format!("sockgate supports the Gateway API {ours}.x CRDs; these are not: {}. They are served on a best-effort basis: install the {BUNDLE_VERSION} CRDs", wrong.join(", ")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn installed(versions: &[(&str, Option<&str>)]) -> Crds {
        Crds::Installed(versions.iter().map(|(n, v)| InstalledCrd { name: n.to_string(), bundle_version: v.map(String::from) }).collect())
    }

    fn short(c: &Condition) -> String {
        format!("{}={}/{}", c.type_, if c.status { "True" } else { "False" }, c.reason)
    }

    #[test]
    fn crds_of_sockgates_minor_version_are_supported_whatever_their_patch() {
        let c = condition(&installed(&[("gateways.gateway.networking.k8s.io", Some("v1.6.1")), ("tcproutes.gateway.networking.k8s.io", Some("v1.6.0"))]));
        assert_eq!(short(&c), "SupportedVersion=True/SupportedVersion");
        assert_eq!(c.message, "Gateway API CRDs v1.6.0, v1.6.1 installed; sockgate supports v1.6.x");
    }

    #[test]
    fn an_older_a_newer_or_an_unannotated_crd_is_unsupported_and_named() {
        let c = condition(&installed(&[
            ("gateways.gateway.networking.k8s.io", Some("v1.6.1")),
            ("tcproutes.gateway.networking.k8s.io", Some("v1.4.0")),
            ("udproutes.gateway.networking.k8s.io", Some("v1.7.0")),
            ("listenersets.gateway.networking.k8s.io", None),
            ("referencegrants.gateway.networking.k8s.io", Some("v1.60.0")),
        ]));
        assert_eq!(short(&c), "SupportedVersion=False/UnsupportedVersion");
        assert_eq!(
            c.message,
            "sockgate supports the Gateway API v1.6.x CRDs; these are not: listenersets.gateway.networking.k8s.io (no bundle-version annotation), referencegrants.gateway.networking.k8s.io v1.60.0, tcproutes.gateway.networking.k8s.io v1.4.0, udproutes.gateway.networking.k8s.io v1.7.0. They are served on a best-effort basis: install the v1.6.1 CRDs"
        );
    }

    #[test]
    fn unreadable_crds_are_not_claimed_supported_and_standalone_says_what_it_checks_against() {
        let c = condition(&Crds::Unreadable("403 forbidden".into()));
        assert_eq!(short(&c), "SupportedVersion=False/UnsupportedVersion");
        assert!(c.message.contains("403 forbidden") && c.message.contains("customresourcedefinitions"), "{}", c.message);
        let c = condition(&Crds::Standalone);
        assert_eq!(short(&c), "SupportedVersion=True/SupportedVersion");
        assert!(c.message.contains("v1.6.1"), "{}", c.message);
    }
}
