//! `gateway-agent inspect`: the pinned eBPF maps, in words.
use anyhow::Result;

use crate::cli::InspectArgs;
use crate::dataplane::kernel::read_pinned;

pub fn inspect(args: &InspectArgs) -> Result<()> {
    let view = read_pinned(&args.bpf_pin_dir)?;
    println!("listeners in {} ({} entries):", args.bpf_pin_dir.display(), view.listeners.len());
    for (port, info) in &view.listeners {
        let routed = if info.routed == 1 { "routed" } else { "no route (connections reset)" };
        let accepted = view.accepted.get(port).copied().unwrap_or(0);
        println!("  port {port}: {routed}, {} ready backend endpoints, {accepted} connections accepted", info.backends);
    }
    Ok(())
}
