//! `gateway-agent run`: the reconcile loop of standalone mode.
//!
//! source (manifests dir) → snapshot → translate → data plane, again whenever
//! the directory changes. A load that fails leaves the last good configuration
//! serving.
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Result};
use k8s_openapi::jiff::Timestamp;
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::RunArgs;
use crate::dataplane::listeners::ListenerSet;
use crate::dataplane::{kernel::KernelListeners, select};
use crate::model::status::StatusReport;
use crate::model::transitions::carry;
use crate::model::{translate, Settings};
use crate::sources::creation::CreationClock;
use crate::sources::manifests::load_dir;
use crate::sources::watch::fingerprint;

pub async fn run(args: RunArgs) -> Result<()> {
    let Some(dir) = args.source.manifests.clone() else {
        bail!("Kubernetes mode is not available yet: run with --manifests DIR (standalone mode)");
    };
    let selection = select(args.dataplane, &args.bpf_pin_dir, args.cgroup.as_deref()).await?;
    tracing::info!(path = selection.path.name(), "data path: {}", selection.reason);
    let mut kernel = selection.kernel;
    let mut listeners = ListenerSet::new(args.listen_address, Arc::clone(&selection.path), args.connect_timeout);

    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(args.reload_interval);
    let mut memory = Memory { clock: CreationClock::default(), status: StatusReport::default() };
    let settings = Settings { controller_name: args.source.controller_name.clone(), gateway_addresses: args.source.gateway_addresses.clone() };
    let mut last_seen: Option<u64> = None;
    loop {
        let forced = tokio::select! {
            _ = tick.tick() => false,
            _ = hangup.recv() => true,
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        };
        listeners.retry_unbound();
        let current = match fingerprint(&dir) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot read the manifests directory; still serving the last good configuration");
                continue;
            }
        };
        if !forced && last_seen == Some(current) {
            continue;
        }
        last_seen = Some(current);
        reconcile(&dir, &settings, &mut memory, &mut listeners, kernel.as_mut());
    }
    tracing::info!("shutting down: closing listeners and connections");
    drop(listeners);
    if let Some(kernel) = kernel {
        kernel.unpin();
    }
    Ok(())
}

/// What one reconcile needs to remember until the next.
struct Memory {
    clock: CreationClock,
    /// The last status, so a condition's lastTransitionTime survives reloads that do not flip it.
    status: StatusReport,
}

fn reconcile(dir: &Path, settings: &Settings, memory: &mut Memory, listeners: &mut ListenerSet, kernel: Option<&mut KernelListeners>) {
    let mut loaded = match load_dir(dir) {
        Ok(loaded) => loaded,
        Err(errors) => {
            for e in &errors.0 {
                tracing::error!("{e}");
            }
            tracing::error!("manifests rejected ({} problems); still serving the last good configuration", errors.0.len());
            return;
        }
    };
    let now = now();
    memory.clock.stamp(&mut loaded.snapshot, now);
    let mut translation = translate(&loaded.snapshot, settings);
    carry(&memory.status, &mut translation.status, now);
    listeners.apply(&translation.dataplane);
    if let Some(kernel) = kernel {
        if let Err(e) = kernel.sync(&translation.dataplane) {
            tracing::error!(error = %format!("{e:#}"), "updating the eBPF listener map failed");
        }
    }
    tracing::info!(
        objects = loaded.snapshot.object_count(),
        ignored = loaded.ignored.len(),
        listeners = translation.dataplane.listeners.len(),
        "configuration applied"
    );
    for line in translation.status.lines() {
        tracing::info!("status: {line}");
    }
    for (port, why) in listeners.unbound() {
        tracing::error!(port, "status: listener not programmed: {why}");
    }
    memory.status = translation.status;
}

pub fn now() -> Timestamp {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp::new(since_epoch.as_secs() as i64, since_epoch.subsec_nanos() as i32).unwrap_or(Timestamp::UNIX_EPOCH)
}
