//! sockgate's node agent, as a library so tests can drive its parts.
pub mod check;
pub mod cli;
pub mod dataplane;
pub mod duration;
pub mod health;
pub mod inspect;
pub mod limits;
pub mod memory;
pub mod model;
pub mod proxy_protocol;
pub mod requirements;
pub mod resources;
pub mod run;
pub mod sources;
pub mod state_file;
pub mod status;
pub mod takeover;
