//! Sources turn the outside world into a [`Snapshot`](crate::resources::Snapshot).
pub mod creation;
pub mod decode;
pub mod kube;
pub mod manifests;
pub mod schema;
pub mod watch;
