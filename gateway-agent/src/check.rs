//! `gateway-agent check` and `status`: what a manifests directory would do, without serving it.
use anyhow::{Context, Result};

use crate::cli::CheckArgs;
use crate::model::status::StatusReport;
use crate::model::transitions::carry;
use crate::model::{translate, Settings};
use crate::run::now;
use crate::sources::creation::CreationClock;
use crate::sources::manifests::{load_dir, Loaded};
use crate::status::render::{status_objects, to_yaml};

fn load(args: &CheckArgs) -> Result<(Loaded, Settings)> {
    let dir = args.source.manifests.as_ref().context("--manifests DIR is required")?;
    let mut loaded = load_dir(dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    CreationClock::default().stamp(&mut loaded.snapshot, now());
    let settings = Settings { controller_name: args.source.controller_name.clone(), gateway_addresses: args.source.gateway_addresses.clone() };
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

pub fn check(args: &CheckArgs) -> Result<()> {
    let (loaded, settings) = load(args)?;
    for ignored in &loaded.ignored {
        println!("ignored: {} {} {} ({}: document {})", ignored.api_version, ignored.kind, ignored.name, ignored.file.display(), ignored.document);
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
    Ok(())
}
