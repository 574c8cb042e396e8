//! Builds the eBPF object (gateway-ebpf) so the agent can embed it.
//!
//! The eBPF crate needs Debian's rustc (it ships a prebuilt `core` for
//! bpfel-unknown-none; rustup's toolchains here have no `rust-src`), so it is
//! built by Debian's cargo in a clean environment, in its own target directory
//! (`target/ebpf`) to avoid contending for this build's lock.
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap();
    let ebpf_dir = root.join("gateway-ebpf");
    let target_dir = root.join("target").join("ebpf");
    for watched in [
        "gateway-ebpf/src",
        "gateway-ebpf/Cargo.toml",
        "gateway-ebpf/Cargo.lock",
        "gateway-ebpf/.cargo/config.toml",
        "gateway-common/src",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    for tool in [DEBIAN_CARGO, DEBIAN_RUSTC] {
        if !Path::new(tool).exists() {
            panic!("{tool} is missing (Debian's rust toolchain builds the eBPF object): run `cargo xtask setup`");
        }
    }
    let path = search_path();
    if !path.split(':').any(|dir| Path::new(dir).join("bpf-linker").exists()) {
        panic!("bpf-linker is not on PATH: run `cargo xtask setup`");
    }

    let status = Command::new(DEBIAN_CARGO)
        .current_dir(&ebpf_dir)
        .env_clear()
        .env("PATH", &path)
        .env("HOME", env::var("HOME").unwrap_or_else(|_| "/root".into()))
        .env("CARGO_HOME", cargo_home())
        .env("RUSTC", DEBIAN_RUSTC)
        // aya-ebpf 0.3 uses #![feature(asm_experimental_arch)].
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["build", "--release", "--ignore-rust-version", "--target-dir"])
        .arg(&target_dir)
        .status()
        .expect("running Debian's cargo for the eBPF crate");
    if !status.success() {
        panic!("building gateway-ebpf failed ({status}); see the output above");
    }
    let object = target_dir.join("bpfel-unknown-none/release/gateway-ebpf");
    println!("cargo:rustc-env=SOCKGATE_EBPF_OBJECT={}", object.display());
}

fn cargo_home() -> String {
    env::var("CARGO_HOME").unwrap_or_else(|_| format!("{}/.cargo", env::var("HOME").unwrap_or_else(|_| "/root".into())))
}

/// The caller's PATH plus cargo's bin directory, where `cargo install` put bpf-linker.
fn search_path() -> String {
    let inherited = env::var("PATH").unwrap_or_default();
    format!("{}/bin:{inherited}", cargo_home())
}
