//! Notices when a manifests directory changed.
//!
//! A content hash of the manifest files, compared on a short poll: it works on
//! every filesystem (ConfigMap volumes swap symlinks, editors write temp files
//! and rename), and a directory of manifests is small.
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;

use super::manifests::manifest_files;

/// A hash over the names and contents of the directory's manifest files.
pub fn fingerprint(dir: &Path) -> std::io::Result<u64> {
    let mut hasher = DefaultHasher::new();
    for file in manifest_files(dir)? {
        file.hash(&mut hasher);
        // A file that vanished between listing and reading is a change too.
        std::fs::read(&file).ok().hash(&mut hasher);
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_changes_with_content_and_ignores_other_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "x: 1").unwrap();
        let first = fingerprint(dir.path()).unwrap();
        assert_eq!(first, fingerprint(dir.path()).unwrap());
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
        assert_eq!(first, fingerprint(dir.path()).unwrap());
        std::fs::write(dir.path().join("a.yaml"), "x: 2").unwrap();
        assert_ne!(first, fingerprint(dir.path()).unwrap());
    }
}
