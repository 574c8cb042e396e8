//! `gateway-agent check`: what a manifests directory would do, without serving it.
use anyhow::{bail, Context, Result};

use crate::cli::CheckArgs;
use crate::model::translate;
use crate::sources::manifests::load_dir;

pub fn check(args: &CheckArgs) -> Result<()> {
    let dir = args.source.manifests.as_ref().context("check needs --manifests DIR")?;
    let loaded = match load_dir(dir) {
        Ok(loaded) => loaded,
        Err(e) => bail!("{e}"),
    };
    for ignored in &loaded.ignored {
        println!("ignored: {} {} {} ({}: document {})", ignored.api_version, ignored.kind, ignored.name, ignored.file.display(), ignored.document);
    }
    let translation = translate(&loaded.snapshot, &args.source.controller_name);
    for (port, listener) in &translation.dataplane.listeners {
        println!("port {port}: {listener}");
    }
    for line in translation.status.lines() {
        println!("{line}");
    }
    Ok(())
}
