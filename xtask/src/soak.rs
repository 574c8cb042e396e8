//! `cargo xtask soak [--seconds N] [--connections C]`: the long form of the
//! soak test (tests/src/soak.rs), bounded in time, built as the tests are.
use std::process::Command;

use anyhow::Result;

use super::{cargo, root, run};

pub fn soak(extra: &[String]) -> Result<()> {
    run(Command::new(cargo()).current_dir(root()).args(["build", "-p", "gateway-agent", "-p", "sockgate-tests", "--bins"]), "cargo build")?;
    run(Command::new(root().join("target/debug/sockgate-soak")).current_dir(root()).args(extra), "the soak")
}
