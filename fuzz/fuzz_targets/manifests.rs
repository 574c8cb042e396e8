//! The manifest loader over arbitrary bytes taken as one manifest file, then,
//! for what it accepts, the rest of the agent's pipeline (`check_pipeline`).
#![no_main]
use std::path::Path;

use gateway_agent::sources::manifests::load_text;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Files are read as UTF-8 (read_to_string): invalid bytes never reach the
    // loader, so they are replaced rather than wasted.
    let text = String::from_utf8_lossy(data);
    match load_text(Path::new("fuzz.yaml"), &text) {
        Ok(loaded) => sockgate_fuzz::check_pipeline(loaded),
        Err(errors) => {
            assert!(!errors.0.is_empty(), "a failed load says why");
            for e in &errors.0 {
                assert!(e.document >= 1, "an error in text names its document: {e}");
                assert!(!e.to_string().is_empty());
            }
        }
    }
});
