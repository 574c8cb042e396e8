//! Control plane at scale: translating 1,000 Gateways, 10,000 TCPRoutes and
//! 100,000 endpoints with the pure `model::translate`, and applying a one-route
//! change to the kernel maps (`KernelListeners::sync`, the diff the agent
//! writes into LISTENERS and BACKENDS after every change).
//!
//! `cargo bench --bench control_plane` (run by `cargo xtask bench`): first one
//! measured pass in a fresh process — heap and peak RSS of building the
//! snapshot and translating it, and of the first full sync — written as JSON
//! beside criterion's results, then criterion's timed runs.
//! `cargo test --bench control_plane` (run by `cargo xtask test`): the same
//! steps once at a hundredth of the scale, checking what they produce and
//! measuring nothing, so the benchmark cannot rot.
mod cluster;
mod maps;
mod peak;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use criterion::{BatchSize, Criterion, SamplingMode};
use gateway_agent::model::config::DataplaneConfig;
use gateway_agent::model::{translate, Settings, Translation};

use cluster::Scale;

#[global_allocator]
static ALLOCATOR: peak::Counting = peak::Counting;

fn main() -> Result<()> {
    // cargo bench passes --bench; cargo test --benches does not (criterion's test mode).
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let scale = if benchmarking { Scale::FULL } else { Scale::SMALL };
    let (memory, state) = measured_pass(&scale)?;
    eprintln!("control plane, {}: {memory}", scale.describe());
    if benchmarking {
        let out = output_directory().join("sockgate-control-plane");
        std::fs::create_dir_all(&out)?;
        std::fs::write(out.join("memory.json"), memory.to_string())?;
    }
    let mut criterion = Criterion::default().configure_from_args();
    timed(&mut criterion, state);
    criterion.final_summary();
    Ok(())
}

/// Where criterion writes (its own rule: CRITERION_HOME, else the target directory's criterion/).
fn output_directory() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("criterion")
}

/// Checks that every route of the synthetic cluster is programmed with all its endpoints.
fn check(translation: &Translation, scale: &Scale) -> Result<()> {
    let listeners = &translation.dataplane.listeners;
    ensure!(
        listeners.len() == scale.routes(),
        "{} listeners programmed, {} expected",
        listeners.len(),
        scale.routes()
    );
    for (port, listener) in listeners {
        ensure!(listener.route.is_some(), "listener {port} has no route");
        let endpoints: usize = listener.backends.iter().map(|b| b.endpoints.len()).sum();
        ensure!(endpoints == scale.endpoints_per_service, "listener {port} has {endpoints} endpoints");
    }
    Ok(())
}

/// What the measured pass built, reused by the timed runs (a full sync of
/// 100,000 endpoints takes seconds; no need to pay it twice).
struct State {
    snapshot: gateway_agent::resources::Snapshot,
    before: DataplaneConfig,
    after: DataplaneConfig,
    /// Holding `after`.
    maps: maps::Maps,
}

/// One pass of each step with its memory (heap counted by the allocator,
/// resident set by the kernel), in a process that has done nothing else yet.
fn measured_pass(scale: &Scale) -> Result<(serde_json::Value, State)> {
    let settings = Settings::default();
    let rss_at_start = peak::rss();
    let heap_at_start = peak::live();
    let snapshot = cluster::snapshot(scale);
    let snapshot_heap = peak::live() - heap_at_start;

    peak::reset_peak();
    let before = peak::live();
    let started = Instant::now();
    let translation = translate(&snapshot, &settings);
    let translate_seconds = started.elapsed().as_secs_f64();
    let translate_peak_heap = peak::peak() - before;
    let rss_after_translate = peak::max_rss();
    check(&translation, scale)?;

    // The maps: the first full sync, then a one-route change, read back from the pins.
    let changed = cluster::one_route_changed(scale, &snapshot);
    let after = translate(&changed, &settings);
    ensure!(after.dataplane != translation.dataplane, "the one-route change changed nothing");
    let mut maps = maps::Maps::load("measure")?;
    let started = Instant::now();
    maps.sync(&translation.dataplane)?;
    let first_sync_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    maps.sync(&after.dataplane)?;
    let change_sync_seconds = started.elapsed().as_secs_f64();
    check_pinned(&maps, &after.dataplane, scale)?;
    // And back: the in-memory diff must leave the maps exactly as a fresh sync would.
    maps.sync(&translation.dataplane)?;
    check_pinned(&maps, &translation.dataplane, scale)?;
    maps.sync(&after.dataplane)?;

    let memory = serde_json::json!({
        "scale": scale.describe(),
        "rss_at_start_bytes": rss_at_start,
        "snapshot_heap_bytes": snapshot_heap,
        "translate_seconds_once": translate_seconds,
        "translate_peak_heap_bytes": translate_peak_heap,
        "peak_rss_after_translate_bytes": rss_after_translate,
        "first_sync_seconds": first_sync_seconds,
        "change_sync_seconds_once": change_sync_seconds,
        "peak_rss_bytes": peak::max_rss(),
    });
    Ok((
        memory,
        State {
            snapshot,
            before: translation.dataplane,
            after: after.dataplane,
            maps,
        },
    ))
}

/// The pinned maps hold exactly `config`: every BACKENDS entry, and each
/// listener's entry counting its own backends.
fn check_pinned(maps: &maps::Maps, config: &DataplaneConfig, scale: &Scale) -> Result<()> {
    let pinned = gateway_agent::dataplane::kernel::read_pinned(maps.pin_dir())?;
    let expected = gateway_agent::dataplane::kernel::backend_entries(config);
    ensure!(pinned.listeners.len() == scale.routes(), "LISTENERS holds {} entries", pinned.listeners.len());
    ensure!(pinned.backends == expected, "BACKENDS differs from the configuration synced");
    let mut counts = std::collections::BTreeMap::new();
    for key in expected.keys() {
        *counts.entry(key.port).or_insert(0u32) += 1;
    }
    for (port, info) in &pinned.listeners {
        let count = counts.get(port).copied().unwrap_or(0);
        ensure!(info.backends == count, "LISTENERS says port {port} has {} backends, BACKENDS holds {count}", info.backends);
    }
    Ok(())
}

fn timed(criterion: &mut Criterion, state: State) {
    let State {
        snapshot,
        before,
        after,
        mut maps,
    } = state;
    let settings = Settings::default();
    let mut group = criterion.benchmark_group("control_plane");
    // Each iteration takes long: ten flat samples (criterion's least), as it advises for slow routines.
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group.bench_function("translate", |b| b.iter(|| translate(std::hint::black_box(&snapshot), &settings)));
    // The maps hold `after`; every iteration applies one change: to `before`, back to `after`, and so on.
    let mut to_before = false;
    group.bench_function("sync_one_route_change", |b| {
        b.iter_batched(
            || {
                to_before = !to_before;
                if to_before {
                    &before
                } else {
                    &after
                }
            },
            |config| maps.sync(config).expect("map sync"),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}
