//! sockgate's test hosts: network namespaces wired with veth pairs, the echo
//! backend, and helpers to run the agent and check bytes. Used by the
//! integration tests in `tests/tests/` and by `cargo xtask demo`.
pub mod agent;
pub mod bench;
pub mod bridge;
pub mod cluster;
pub mod echo;
pub mod integrity;
pub mod manifests;
pub mod cgroup;
pub mod chart;
pub mod harness;
pub mod status;
pub mod netns;
pub mod node_cluster;
pub mod soak;
pub mod topology;
pub mod udp;

use std::path::PathBuf;

/// A binary built from this workspace (`target/<profile>/NAME`), found next to
/// the running executable (or its parent, for test executables under `deps/`).
pub fn workspace_bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    anyhow::bail!("{name} is not built next to {}: run `cargo build --workspace --bins` (cargo xtask test does)", exe.display())
}

/// The workspace's root directory (for examples/).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Turns each case, a `fn(path: &str)`, into one test per data path
/// (`copy::case`, `splice::case`, `ebpf::case`), so every path passes the same suite.
#[macro_export]
macro_rules! for_each_path {
    ($($case:ident),* $(,)?) => {
        mod copy {
            $( #[test] fn $case() { super::$case("copy"); } )*
        }
        mod splice {
            $( #[test] fn $case() { super::$case("splice"); } )*
        }
        mod ebpf {
            $( #[test] fn $case() { super::$case("ebpf"); } )*
        }
    };
}
