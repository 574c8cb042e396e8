//! `cargo xtask fuzz [--seconds N] [TARGET...]`: the cargo-fuzz targets in
//! `fuzz/`, each run for N seconds; and the bounded run `cargo xtask test` does.
//!
//! cargo-fuzz needs nightly compiler flags (`-Zsanitizer=address`, sancov
//! passes); the toolchain here is stable, so its unstable features are
//! unlocked with `RUSTC_BOOTSTRAP=1`. The stable toolchain ships the ASan
//! runtime (`librustc-stable_rt.asan.a`), so AddressSanitizer stays on.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::{cargo, cargo_bin_dir, root, run, run_quiet};

pub const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Every target under fuzz/fuzz_targets, in the order they run.
pub const TARGETS: &[&str] = &["manifests", "translate", "proxy_protocol"];
/// Seconds per target when `cargo xtask test` runs them.
pub const TEST_SECONDS: u64 = 20;
const DEFAULT_SECONDS: u64 = 60;
/// One input taking longer than this is a hang, reported like a crash.
const INPUT_TIMEOUT_SECONDS: u64 = 10;

/// Installs cargo-fuzz unless this version is already there.
pub fn install_cargo_fuzz() -> Result<()> {
    let installed = Command::new(cargo_bin_dir().join("cargo-fuzz"))
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if installed.is_ok_and(|v| v.split_whitespace().any(|w| w == CARGO_FUZZ_VERSION)) {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    run_quiet(
        Command::new(cargo()).args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
        ]),
        "cargo install cargo-fuzz",
    )
}

/// `cargo xtask fuzz` with its arguments.
pub fn run_from_args(args: &[String]) -> Result<()> {
    let (seconds, rest) = take_seconds(args, "--seconds", DEFAULT_SECONDS)?;
    let targets: Vec<&str> = if rest.is_empty() {
        TARGETS.to_vec()
    } else {
        rest.iter().map(String::as_str).collect()
    };
    if let Some(unknown) = targets.iter().find(|t| !TARGETS.contains(t)) {
        bail!(
            "no fuzz target {unknown:?} (targets: {})",
            TARGETS.join(", ")
        );
    }
    fuzz(&targets, seconds)
}

/// Takes `flag N` out of `args`: (N or `default`, the other arguments).
pub fn take_seconds(args: &[String], flag: &str, default: u64) -> Result<(u64, Vec<String>)> {
    let mut seconds = default;
    let mut rest = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == flag {
            let value = args
                .next()
                .with_context(|| format!("{flag} needs a number of seconds"))?;
            seconds = value
                .parse()
                .with_context(|| format!("{flag} {value:?}: not a number of seconds"))?;
        } else {
            rest.push(arg.clone());
        }
    }
    Ok((seconds, rest))
}

/// Builds every target, then runs each for `seconds`; fails on any crash,
/// hang or out-of-memory, naming the reproducer. 0 seconds skips fuzzing.
pub fn fuzz(targets: &[&str], seconds: u64) -> Result<()> {
    if seconds == 0 {
        eprintln!("xtask: fuzzing skipped (0 seconds)");
        return Ok(());
    }
    let started = Instant::now();
    run(cargo_fuzz().args(["build"]), "cargo fuzz build")?;
    eprintln!(
        "xtask: fuzz targets built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let mut failures = Vec::new();
    for target in targets {
        if let Err(e) = fuzz_one(target, seconds) {
            eprintln!("xtask: {e:#}");
            failures.push(target.to_string());
        }
    }
    eprintln!(
        "xtask: fuzzing took {:.0} s in all",
        started.elapsed().as_secs_f64()
    );
    if !failures.is_empty() {
        bail!("fuzz targets failed: {}", failures.join(", "));
    }
    Ok(())
}

/// `cargo fuzz` with what it needs on a stable toolchain.
fn cargo_fuzz() -> Command {
    let mut command = Command::new(cargo());
    command
        .current_dir(root())
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz"]);
    command
}

fn fuzz_one(target: &str, seconds: u64) -> Result<()> {
    let fuzz_dir = root().join("fuzz");
    // New inputs go to a working corpus outside the repository; the committed
    // seeds are read from fuzz/corpus and never written to.
    let work_corpus = root().join("target/fuzz-corpus").join(target);
    let seeds = fuzz_dir.join("corpus").join(target);
    let artifacts = fuzz_dir.join("artifacts").join(target);
    let log_path = root()
        .join("target/fuzz-logs")
        .join(format!("{target}.log"));
    for dir in [&work_corpus, &artifacts, &root().join("target/fuzz-logs")] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let before = findings(&artifacts)?;
    let mut command = cargo_fuzz();
    command.args(["run", target]).arg(&work_corpus);
    if seeds.is_dir() {
        command.arg(&seeds);
    }
    command.arg("--");
    command.arg(format!("-max_total_time={seconds}"));
    command.arg(format!("-timeout={INPUT_TIMEOUT_SECONDS}"));
    command.arg("-print_final_stats=1");
    let dict = fuzz_dir.join("dicts").join(format!("{target}.dict"));
    if dict.exists() {
        command.arg(format!("-dict={}", dict.display()));
    }
    let log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    eprintln!(
        "xtask: fuzzing {target} for {seconds} s (log: {})",
        log_path.display()
    );
    let status = command
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("starting cargo fuzz run")?;
    let output = fs::read_to_string(&log_path).unwrap_or_default();
    let new: Vec<PathBuf> = findings(&artifacts)?
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    if status.success() && new.is_empty() {
        eprintln!("xtask: fuzz {target}: {}", summary(&output, &work_corpus));
        return Ok(());
    }
    let tail: Vec<&str> = output.lines().rev().take(40).collect();
    for line in tail.into_iter().rev() {
        eprintln!("  | {line}");
    }
    for finding in &new {
        eprintln!("xtask: fuzz {target}: reproducer {}", finding.display());
        eprintln!(
            "        replay: RUSTC_BOOTSTRAP=1 cargo fuzz run {target} {}",
            finding.display()
        );
    }
    bail!(
        "fuzz target {target} failed ({status}); its output is in {}",
        log_path.display()
    )
}

/// Crash, hang and out-of-memory inputs libFuzzer saved (not slow-unit reports).
fn findings(artifacts: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in
        fs::read_dir(artifacts).with_context(|| format!("listing {}", artifacts.display()))?
    {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if ["crash-", "leak-", "timeout-", "oom-"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// "N runs (M/s), corpus K inputs" from libFuzzer's final statistics.
fn summary(output: &str, corpus: &Path) -> String {
    let stat = |name: &str| {
        output
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| "?".into())
    };
    let corpus_size = fs::read_dir(corpus).map(|d| d.count()).unwrap_or(0);
    format!(
        "no crash; {} runs ({}/s), peak RSS {} MB, working corpus {corpus_size} inputs",
        stat("stat::number_of_executed_units:"),
        stat("stat::average_exec_per_sec:"),
        stat("stat::peak_rss_mb:"),
    )
}
