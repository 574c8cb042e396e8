//! `cargo xtask setup | build | demo | test`: the project's own commands.
//!
//! std + anyhow only, so it builds on a machine where `setup` has not run yet.
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{bail, Context, Result};

mod chart;
mod cluster;
mod fuzz;
mod soak;

/// What `cargo xtask demo` needs on a fresh machine of this kind, and no more:
/// Debian's rustc with a prebuilt `core` for BPF and LLVM 22 to build
/// bpf-linker against (the set seen working), the kernel and network tools,
/// and the two clients the demo runs (nc, curl).
const DEMO_APT_PACKAGES: &[&str] = &[
    "rustc-web", "cargo-web", "libstd-rust-web-dev-bpf", "rust-web-llvm",
    "llvm-22-dev", "clang-22", "lld-22", "libpolly-22-dev", "libzstd-dev", "zlib1g-dev", "libxml2-dev",
    "libbpf-dev", "bpftool", "iproute2",
    "netcat-openbsd", "curl",
];
/// What `cargo xtask test`, `fuzz`, `bench` and `soak` add to it.
const TEST_APT_PACKAGES: &[&str] = &[
    "ethtool", "socat",
    // UDPRoute tests: a real DNS server and client through the relay
    "dnsmasq-base", "dnsutils",
    // the Kubernetes build (cargo xtask cluster)
    "golang-go",
    "g++", // libFuzzer's C++ runtime, built by cargo fuzz (cargo xtask fuzz)
    // cargo xtask bench: the contenders, the load tools, DNAT, the chart and the profiler
    "iperf3", "haproxy", "nginx", "libnginx-mod-stream", "redis-server", "redis-tools",
    "iptables", "gnuplot-nox", "linux-perf",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Helm v4's Go SDK as a Python library (no helm binary is installable here):
/// the tests render, lint, install and upgrade the chart with it (tests/helm/helm.py).
const HELM_SDK: &str = "helm-python-sdk==0.2.2";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup(),
        Some("build") => build(),
        // Only what the demo needs: a newcomer's first command stays short.
        Some("demo") => setup_demo().and_then(|_| build()).and_then(|_| demo()),
        Some("test") => setup().and_then(|_| build()).and_then(|_| test(&args[1..])),
        // The node's images hold this build's agent and echo backend: built
        // when missing, but not rebuilt here (kube_outage.rs restarts the API
        // server with `cluster up` mid-test, and must find it quick).
        Some("cluster") if args.get(1).map(String::as_str) == Some("up") && !cluster::images_built() => build().and_then(|_| cluster::run(&args[1..])),
        Some("cluster") => cluster::run(&args[1..]),
        Some("chart") => install_helm_sdk().and_then(|_| chart::run_from_args(&args[1..])),
        Some("fuzz") => setup().and_then(|_| fuzz::run_from_args(&args[1..])),
        Some("bench") => setup().and_then(|_| bench(&args[1..])),
        Some("soak") => setup().and_then(|_| soak::soak(&args[1..])),
        Some("sockmap-repro") => sockmap_repro(args.get(1).map(String::as_str).unwrap_or("50")),
        _ => {
            eprintln!("usage: cargo xtask <setup|build|demo|test [--fuzz-seconds N] [cargo test args]|fuzz [--seconds N] [TARGET...]|bench [--rounds N ...]|soak [--seconds N] [--connections C]|cluster <up|down>|chart render [VALUES_JSON]|sockmap-repro [RUNS]>");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Installs what is missing for everything (tests, fuzzing, benchmarks, the
/// chart through Helm); quick when everything is there.
fn setup() -> Result<()> {
    setup_demo()?;
    install_missing(TEST_APT_PACKAGES)?;
    fuzz::install_cargo_fuzz()?;
    install_helm_sdk()?;
    eprintln!("xtask: setup complete");
    Ok(())
}

/// What building the project and running the demo need: the BPF toolchain,
/// bpf-linker, bpffs and cgroup2 mounted.
fn setup_demo() -> Result<()> {
    let uid = output("id", &["-u"])?;
    if uid.trim() != "0" {
        bail!("setup must run as root: it installs packages, mounts bpffs and loads BPF programs");
    }
    install_missing(DEMO_APT_PACKAGES)?;
    install_bpf_linker()?;
    mount_if_missing("bpf", "/sys/fs/bpf", "bpf")?;
    if !mounted_fs_type("cgroup2")? {
        std::fs::create_dir_all("/sys/fs/cgroup/unified")?;
        mount_if_missing("cgroup2", "/sys/fs/cgroup/unified", "cgroup2")?;
    }
    Ok(())
}

/// Installs those of `packages` that are not installed yet (apt-get update only then).
fn install_missing(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !apt_installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    run_quiet(Command::new("apt-get").args(["update", "-q"]), "apt-get update")?;
    let mut install = Command::new("apt-get");
    install.env("DEBIAN_FRONTEND", "noninteractive").args(["install", "-y", "-q"]).args(&missing);
    let _no_daemons = NoServiceStarts::hold()?;
    run_quiet(&mut install, &format!("apt-get install {}", missing.join(" ")))
}

/// While held, Debian's maintainer scripts start no service: haproxy, nginx and
/// redis-server are installed as programs the benchmark runs in its own
/// namespaces, never as daemons listening on this machine (nginx on :80). The
/// policy-rc.d interface (invoke-rc.d and deb-systemd-invoke ask it; 101 means
/// "action forbidden") is a file; one already there (a container image's) is
/// left as it is, ours is removed when dropped.
struct NoServiceStarts {
    ours: bool,
}

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

impl NoServiceStarts {
    fn hold() -> Result<NoServiceStarts> {
        use std::os::unix::fs::PermissionsExt;
        if Path::new(POLICY_RC_D).exists() {
            return Ok(NoServiceStarts { ours: false });
        }
        std::fs::write(POLICY_RC_D, "#!/bin/sh\n# cargo xtask setup: no service starts while it installs packages\nexit 101\n")
            .with_context(|| format!("writing {POLICY_RC_D}"))?;
        std::fs::set_permissions(POLICY_RC_D, std::fs::Permissions::from_mode(0o755))?;
        Ok(NoServiceStarts { ours: true })
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if self.ours {
            let _ = std::fs::remove_file(POLICY_RC_D);
        }
    }
}

fn apt_installed(package: &str) -> bool {
    output("dpkg-query", &["-W", "-f=${db:Status-Abbrev}", package]).is_ok_and(|s| s.starts_with("ii"))
}

fn cargo_bin_dir() -> PathBuf {
    let home = std::env::var("CARGO_HOME").unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_else(|_| "/root".into())));
    PathBuf::from(home).join("bin")
}

fn install_bpf_linker() -> Result<()> {
    let linker = cargo_bin_dir().join("bpf-linker");
    let current = Command::new(&linker).arg("--version").output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if current.is_ok_and(|v| v.contains(BPF_LINKER_VERSION)) {
        return Ok(());
    }
    eprintln!("xtask: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)");
    let mut install = Command::new(cargo());
    install
        .env("LLVM_PREFIX", "/usr/lib/llvm-22")
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION, "--no-default-features", "--features", "llvm-22", "--locked"]);
    run_quiet(&mut install, "cargo install bpf-linker")
}

fn install_helm_sdk() -> Result<()> {
    let present = Command::new("python3").args(["-c", "import helm_python"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    eprintln!("xtask: installing {HELM_SDK} (Helm's Go SDK for Python, ~85 MB)");
    run_quiet(Command::new("python3").args(["-m", "pip", "install", "-q", "--root-user-action=ignore", HELM_SDK]), &format!("pip install {HELM_SDK}"))
}

fn mounted_fs_type(fs_type: &str) -> Result<bool> {
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    Ok(mounts.lines().any(|l| l.split_whitespace().nth(2) == Some(fs_type)))
}

fn mount_if_missing(fs_type: &str, target: &str, source: &str) -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    if mounts.lines().any(|l| l.split_whitespace().nth(1) == Some(target)) {
        return Ok(());
    }
    run_quiet(Command::new("mount").args(["-t", fs_type, source, target]), &format!("mount {target}"))
}

pub(crate) fn build() -> Result<()> {
    run(Command::new(cargo()).current_dir(root()).args(["build", "--workspace", "--bins"]), "cargo build")
}

fn demo() -> Result<()> {
    run(&mut Command::new(root().join("target/debug/sockgate-demo")), "the demo")
}

/// Every test, with the test API server up for the Kubernetes-mode tests, and
/// down again afterwards whatever the outcome; then the fuzz targets, a
/// bounded time each (`--fuzz-seconds N`, 0 skips them).
fn test(extra: &[String]) -> Result<()> {
    let (fuzz_seconds, extra) = fuzz::take_seconds(extra, "--fuzz-seconds", fuzz::TEST_SECONDS)?;
    let extra = extra.as_slice();
    if let Err(e) = cluster::run(&["up".to_string()]) {
        // Leave no half-started daemon behind.
        let _ = cluster::run(&["down".to_string()]);
        return Err(e);
    }
    let tests = run(Command::new(cargo()).current_dir(root()).args(["test", "--workspace"]).args(extra), "cargo test")
        // The control-plane benchmark once, small and unmeasured (criterion's test mode), so it cannot rot.
        .and_then(|_| run(Command::new(cargo()).current_dir(root()).args(["test", "-p", "gateway-agent", "--bench", "control_plane"]), "the control-plane benchmark (test mode)"));
    let down = cluster::run(&["down".to_string()]);
    tests.and(down).and_then(|_| fuzz::fuzz(fuzz::TARGETS, fuzz_seconds))
}

/// Measures the contenders side by side (optimized build) and the control
/// plane (criterion), then writes BENCHMARKS.md and benchmarks.png from both.
/// Extra arguments go to sockgate-bench (`--rounds N`, see its `--help`).
fn bench(extra: &[String]) -> Result<()> {
    run(Command::new(cargo()).current_dir(root()).args(["build", "--release", "-p", "gateway-agent", "-p", "sockgate-tests", "--bins"]), "cargo build --release")?;
    // Criterion writes its samples under target/criterion; the peak-memory run writes beside them.
    run(Command::new(cargo()).current_dir(root()).args(["bench", "-p", "gateway-agent", "--bench", "control_plane"]), "the control-plane benchmark")?;
    run(
        Command::new(root().join("target/release/sockgate-bench")).current_dir(root()).arg("--control-plane").arg(root().join("target/criterion")).args(extra),
        "the benchmark",
    )
}

/// Reproduces the kernel's sockmap corruption (tools/sockmap-repro/README.md):
/// RUNS transfers of 1 GiB each way through a verdict-only sockmap proxy, in a
/// network namespace made for it and deleted after.
fn sockmap_repro(runs: &str) -> Result<()> {
    let runs: u32 = runs.parse().context("RUNS must be a number")?;
    install_missing(&["clang-22", "libbpf-dev", "libssl-dev", "bpftool", "make", "iproute2"])?;
    let out = root().join("target/sockmap-repro");
    std::fs::create_dir_all(&out)?;
    run(
        Command::new("make").arg("-C").arg(root().join("tools/sockmap-repro")).arg(format!("OUT={}", out.display())),
        "building the reproduction",
    )?;
    let ns = format!("sockgate-repro-{}", std::process::id());
    run_quiet(Command::new("ip").args(["netns", "add", &ns]), "ip netns add")?;
    let result = run_quiet(Command::new("ip").args(["-n", &ns, "link", "set", "lo", "up"]), "ip link set lo up").and_then(|_| {
        // 95 s per invocation at most; the probe stops by itself.
        let limit = (runs * 4).clamp(30, 3600).to_string();
        run(
            Command::new("ip")
                .args(["netns", "exec", &ns])
                .arg(out.join("smprobe"))
                .args(["-m", "egress", "-n", "1073741824", "-r", &runs.to_string(), "-L", &limit, "-o"])
                .arg(&out),
            "the reproduction",
        )
    });
    let _ = run_quiet(Command::new("ip").args(["netns", "del", &ns]), "ip netns del");
    result
}

/// The cargo running this xtask (rustup's), not Debian's /usr/bin/cargo.
fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn output(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program).args(args).stderr(Stdio::null()).output().with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!("{program} {} failed", args.join(" "));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs with inherited output; fails with what was run.
fn run(command: &mut Command, what: &str) -> Result<()> {
    let status = command.status().with_context(|| format!("starting {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Runs with output captured; on failure, one clear line with the last words of stderr.
fn run_quiet(command: &mut Command, what: &str) -> Result<()> {
    let out = command.stdin(Stdio::null()).output().with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no error output");
        bail!("{what} failed: {}", last.trim());
    }
    Ok(())
}
