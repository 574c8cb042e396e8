//! Status as the API server holds it: the `status` of each object sockgate
//! owns, rendered from the translator's [`StatusReport`](crate::model::status::StatusReport).
//! `gateway-agent status` prints it; Kubernetes mode will apply the same objects.
pub mod lease;
pub mod render;
pub mod shared;
pub mod writer;
