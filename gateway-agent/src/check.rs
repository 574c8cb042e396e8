//! `gateway-agent check` and `status`: what a manifests directory would do, without serving it.
use anyhow::{Context, Result};

use crate::cli::CheckArgs;
use crate::model::status::StatusReport;
use crate::model::transitions::carry;
use crate::model::{translate, Settings};
use crate::run::now;
use crate::sources::creation::CreationClock;
use crate::sources::manifests::{load_dir, manifest_files, Loaded};
use crate::status::render::{status_objects, to_yaml};

fn load(args: &CheckArgs) -> Result<(Loaded, Settings)> {
    let dir = args.source.manifests.as_ref().context("--manifests DIR is required")?;
    let files = manifest_files(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    if files.is_empty() {
        anyhow::bail!("{} holds no manifests (no *.yaml or *.yml file directly in it): nothing to check", dir.display());
    }
    let mut loaded = load_dir(dir).map_err(|e| anyhow::anyhow!("{e}\nmanifests rejected ({} problem{})", e.0.len(), if e.0.len() == 1 { "" } else { "s" }))?;
    // The running agent's first-seen times, so that conflicts are settled as it settles them.
    let mut clock = match args.source.first_seen_file() {
        Some(file) => CreationClock::load(&file).unwrap_or_else(|e| {
            eprintln!("warning: {e}; objects count as first seen now");
            CreationClock::default()
        }),
        None => CreationClock::default(),
    };
    clock.stamp(&mut loaded.snapshot, now());
    let settings = Settings { controller_name: args.source.controller_name.clone(), gateway_addresses: args.source.gateway_addresses.clone(), ..Settings::default() };
    Ok((loaded, settings))
}

/// Prints the status objects, as they would be written to the API server.
pub fn status(args: &CheckArgs) -> Result<()> {
    let (loaded, settings) = load(args)?;
    let mut translation = translate(&loaded.snapshot, &settings);
    carry(&StatusReport::default(), &mut translation.status, now());
    print!("{}", to_yaml(&status_objects(&loaded.snapshot, &translation.status, &settings.controller_name)));
    Ok(())
}

/// What `check` found: whether it should exit non-zero (see [`crate::cli::CHECK_EXIT_CODES`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    FalseConditions,
}

pub fn check(args: &CheckArgs) -> Result<Verdict> {
    let (loaded, settings) = load(args)?;
    for line in ignored_lines(&loaded, &settings) {
        println!("ignored: {line}");
    }
    for note in &loaded.notes {
        eprintln!("warning: {note}");
    }
    if translate(&loaded.snapshot, &settings).status.gateway_classes.is_empty() {
        eprintln!("warning: no GatewayClass has controllerName {:?}: sockgate owns nothing here (see --controller-name)", settings.controller_name);
    }
    let translation = translate(&loaded.snapshot, &settings);
    for (port, listener) in &translation.dataplane.listeners {
        println!("port {port}: {listener}");
    }
    for (port, listener) in &translation.dataplane.udp_listeners {
        println!("udp port {port}: {}", crate::model::config::UdpListenerDisplay(listener));
    }
    for line in translation.status.lines() {
        println!("{line}");
    }
    let failing = translation.status.failing_lines();
    if failing.is_empty() {
        return Ok(Verdict::Clean);
    }
    eprintln!("{} of the objects sockgate owns {} a False condition:", failing.len(), if failing.len() == 1 { "has" } else { "have" });
    for line in &failing {
        eprintln!("  {line}");
    }
    if args.allow_false_conditions {
        eprintln!("(--allow-false-conditions: exiting 0 all the same)");
        return Ok(Verdict::Clean);
    }
    Ok(Verdict::FalseConditions)
}

/// Everything sockgate skips in `loaded`, with why: kinds it does not read,
/// and objects that are another controller's or name what does not exist.
pub fn ignored_lines(loaded: &Loaded, settings: &Settings) -> Vec<String> {
    let mut out: Vec<String> = loaded
        .ignored
        .iter()
        .map(|i| format!("{} {} {} ({}: document {}): a kind sockgate does not read", i.api_version, i.kind, i.name, i.file.display(), i.document))
        .collect();
    out.extend(crate::model::ignored::ignored(&loaded.snapshot, &settings.controller_name).iter().map(ToString::to_string));
    out
}
