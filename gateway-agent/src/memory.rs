//! The agent's heap, kept close to what it uses.
//!
//! glibc's malloc gives each thread that allocates an arena of its own (up to
//! eight per CPU) and keeps what is freed there for reuse, so the resident set
//! stays at its high-water mark: in `cargo xtask bench` (`ebpf`, 10,000 idle
//! spliced connections) the agent held 70.7 MiB, of which about 20 MiB was heap
//! freed right after start-up (what parsing the kernel's BTF for the eBPF
//! objects allocates) and more spread over five threads' arenas. With one arena
//! per CPU (as many as the runtime has worker threads) and the free heap handed
//! back after start-up and now and then, the same run held 47.4 MiB.
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the periodic tick hands free heap back at most: a trim walks
/// the arenas under their locks, cheap but not free.
const TRIM_EVERY: Duration = Duration::from_secs(30);

/// Caps the arenas at one per CPU. Call before any thread starts (glibc reads
/// it when a thread first allocates); `MALLOC_ARENA_MAX` in the environment
/// still wins, as glibc documents.
pub fn limit_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(64) as libc::c_int;
    // SAFETY: mallopt only sets a tunable of the allocator.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, cpus) };
}

/// Returns the heap's free pages to the kernel (every arena's).
pub fn release_free() {
    // SAFETY: malloc_trim takes the arenas' locks itself.
    unsafe { libc::malloc_trim(0) };
}

/// [`release_free`], at most once per [`TRIM_EVERY`] (for the periodic tick).
pub fn release_free_now_and_then() {
    static LAST: Mutex<Option<Instant>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap();
    if last.is_some_and(|at| at.elapsed() < TRIM_EVERY) {
        return;
    }
    *last = Some(Instant::now());
    drop(last);
    release_free();
}
