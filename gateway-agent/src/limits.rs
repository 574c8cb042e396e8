//! The agent's open-file limit (RLIMIT_NOFILE), raised once at start-up.
//!
//! Every forwarded connection holds six descriptors on the splice path (client
//! and backend sockets, two pipes of two ends each), so 10,000 connections
//! need 60,000: far above the usual soft limit of 1,024, and above many hard
//! limits too (20,000 on this project's machines). With CAP_SYS_RESOURCE the
//! agent lifts both limits to a ceiling; without it, the soft limit to the
//! hard one. Failing to raise it only costs capacity, never start-up: when
//! descriptors run out, accept backs off and new connections wait (see
//! `dataplane/listeners.rs`).
use std::io;

/// Never ask for more: room for about 170,000 spliced connections, and the
/// kernel's default `fs.nr_open` (a hard limit above `nr_open` is refused).
pub const CEILING: u64 = 1 << 20;

/// Descriptors one connection holds on the splice path, for the log line's estimate.
pub const DESCRIPTORS_PER_CONNECTION: u64 = 6;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFiles {
    pub soft: u64,
    pub hard: u64,
}

/// What `raise` found and what it left.
#[derive(Debug)]
pub struct Raised {
    pub before: OpenFiles,
    pub after: OpenFiles,
    /// Why the hard limit stayed below the ceiling (typically EPERM: no CAP_SYS_RESOURCE).
    pub hard_refused: Option<io::Error>,
}

/// This process's limit now.
pub fn current() -> io::Result<OpenFiles> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OpenFiles { soft: limit.rlim_cur, hard: limit.rlim_max })
}

fn set(limit: OpenFiles) -> io::Result<()> {
    let limit = libc::rlimit { rlim_cur: limit.soft, rlim_max: limit.hard };
    // SAFETY: setrlimit only reads the struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The highest hard limit worth asking for: `fs.nr_open`, at most [`CEILING`].
pub fn ceiling() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|s| s.trim().parse::<u64>().ok()).map_or(CEILING, |nr_open| nr_open.min(CEILING))
}

/// The limits to try, best first. Neither limit is ever lowered.
/// 1. Both at `ceiling` when the hard limit is below it (needs CAP_SYS_RESOURCE).
/// 2. The soft limit at the hard one (at most `ceiling`): allowed to anyone.
///
/// Empty when there is nothing to gain.
pub fn plans(now: OpenFiles, ceiling: u64) -> Vec<OpenFiles> {
    let mut plans = Vec::new();
    if now.hard < ceiling {
        plans.push(OpenFiles { soft: ceiling.max(now.soft), hard: ceiling });
    }
    let unprivileged = OpenFiles { soft: now.soft.max(now.hard.min(ceiling)), hard: now.hard };
    if unprivileged != now {
        plans.push(unprivileged);
    }
    plans
}

/// Raises this process's limit as far as [`plans`] allows. An error only
/// when the limit cannot even be read, or nothing at all could be raised.
pub fn raise() -> io::Result<Raised> {
    let before = current()?;
    let mut hard_refused = None;
    for plan in plans(before, ceiling()) {
        match set(plan) {
            Ok(()) => return Ok(Raised { before, after: current()?, hard_refused }),
            // EPERM when raising the hard limit without CAP_SYS_RESOURCE: the next plan asks for less.
            Err(e) if plan.hard > before.hard => hard_refused = Some(e),
            Err(e) => return Err(e),
        }
    }
    Ok(Raised { before, after: before, hard_refused })
}

/// [`raise`], logged once; a failure is a warning, never a reason not to start.
pub fn raise_and_log() {
    match raise() {
        Ok(Raised { before, after, hard_refused }) => {
            let room = after.soft / DESCRIPTORS_PER_CONNECTION;
            tracing::info!(
                soft = after.soft,
                hard = after.hard,
                "open files limit: {} (was {} soft, {} hard): room for about {room} connections on the splice path",
                after.soft,
                before.soft,
                before.hard
            );
            if let Some(e) = hard_refused {
                tracing::warn!(
                    error = %e,
                    "the hard open files limit stays at {} (raising it needs CAP_SYS_RESOURCE): about {room} connections at most",
                    after.hard
                );
            }
        }
        Err(e) => {
            let now = current().map(|l| l.soft).unwrap_or(0);
            tracing::warn!(
                error = %e,
                "could not raise the open files limit; it stays at {now}: room for about {} connections on the splice path",
                now / DESCRIPTORS_PER_CONNECTION
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: u64 = 1 << 20;

    /// Whether this process holds CAP_SYS_RESOURCE (bit 24 of CapEff).
    fn has_cap_sys_resource() -> bool {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim();
        const CAP_SYS_RESOURCE: u32 = 24; // linux/capability.h
        u64::from_str_radix(eff, 16).unwrap() & (1 << CAP_SYS_RESOURCE) != 0
    }

    #[test]
    fn below_the_ceiling_both_limits_are_asked_for_first_then_the_soft_limit_alone() {
        let now = OpenFiles { soft: 1024, hard: 20_000 };
        assert_eq!(plans(now, C), vec![OpenFiles { soft: C, hard: C }, OpenFiles { soft: 20_000, hard: 20_000 }]);
    }

    #[test]
    fn no_limit_is_ever_lowered_and_nothing_is_asked_when_nothing_is_gained() {
        // Hard limit already above the ceiling (or infinite): only the soft limit rises, to the ceiling.
        assert_eq!(plans(OpenFiles { soft: 1024, hard: libc::RLIM_INFINITY }, C), vec![OpenFiles { soft: C, hard: libc::RLIM_INFINITY }]);
        // Soft limit above the ceiling already: left alone.
        assert_eq!(plans(OpenFiles { soft: 2 * C, hard: 4 * C }, C), vec![]);
        // Already at the ceiling.
        assert_eq!(plans(OpenFiles { soft: C, hard: C }, C), vec![]);
        // Limits already above a low ceiling: left alone.
        assert_eq!(plans(OpenFiles { soft: 5000, hard: 5000 }, 4096), vec![]);
    }

    #[test]
    fn the_ceiling_is_nr_open_capped_at_one_mebi() {
        let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open").unwrap().trim().parse().unwrap();
        assert_eq!(ceiling(), nr_open.min(C));
    }

    #[test]
    fn raising_leaves_the_soft_limit_at_the_hard_one_lowers_neither_and_says_why_the_hard_one_stayed() {
        let Raised { before, after, hard_refused } = raise().unwrap();
        assert_eq!(after, current().unwrap(), "raise reports what the kernel holds");
        assert!(after.soft >= before.soft && after.hard >= before.hard, "{before:?} -> {after:?}");
        assert!(after.soft >= after.hard.min(ceiling()), "the soft limit reaches the hard one (or the ceiling): {after:?}");
        if has_cap_sys_resource() {
            assert!(after.hard >= ceiling() && after.soft >= ceiling(), "privileged, yet {after:?}");
            assert!(hard_refused.is_none());
        } else if before.hard < ceiling() {
            // Without CAP_SYS_RESOURCE (some sandboxed roots) the kernel refuses a higher hard limit, and raise says so.
            assert_eq!(hard_refused.map(|e| e.raw_os_error()), Some(Some(libc::EPERM)));
            assert_eq!(after.hard, before.hard);
        }
        // A second call finds nothing left to gain.
        let again = raise().unwrap();
        assert_eq!((again.before, again.after), (after, after));
    }
}
