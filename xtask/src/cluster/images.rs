//! Container images without a registry: each is one layer holding a program
//! of this project's own build (or the pause program) and the shared libraries
//! it loads, copied from this machine's Debian. Written as an OCI image layout
//! with `tar` and `sha256sum`, imported into the node's containerd with
//! `ctr images import`, under the exact reference the pod specs name, so
//! `imagePullPolicy: IfNotPresent` finds it and never pulls.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{output, run_quiet};
use anyhow::{bail, Context, Result};

/// One image: a reference, the files of its root filesystem, and how it starts.
pub struct Image {
    pub reference: String,
    /// (path on this machine, path in the image); shared libraries are added.
    pub programs: Vec<(PathBuf, &'static str)>,
    pub entrypoint: Vec<&'static str>,
    pub cmd: Vec<&'static str>,
}

/// Builds `image` under `work` and imports it, unless containerd already has
/// exactly this content under that reference (the layout is reproducible:
/// same files, same digest).
pub fn build_and_import(image: &Image, work: &Path, ctr: &dyn Fn() -> Command) -> Result<()> {
    let dir = work.join(image.reference.replace(['/', ':'], "_"));
    let _ = fs::remove_dir_all(&dir);
    let rootfs = dir.join("rootfs");
    fs::create_dir_all(rootfs.join("tmp"))?;
    for (source, target) in &image.programs {
        copy_into(&rootfs, source, target)?;
        for library in shared_libraries(source)? {
            let target = library.display().to_string();
            copy_into(&rootfs, &library, target.trim_start_matches('/'))?;
        }
    }
    let layout = dir.join("layout");
    let manifest_digest = write_layout(image, &rootfs, &layout)?;
    if imported_digest(ctr, &image.reference).as_deref() == Some(manifest_digest.as_str()) {
        let _ = fs::remove_dir_all(&dir);
        return Ok(());
    }
    let archive = dir.join("image.tar");
    run_quiet(Command::new("tar").arg("-cf").arg(&archive).arg("-C").arg(&layout).arg("."), "archiving an image layout")?;
    eprintln!("xtask: importing image {}", image.reference);
    run_quiet(ctr().args(["images", "import"]).arg(&archive), &format!("ctr images import {}", image.reference))?;
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}

fn copy_into(rootfs: &Path, source: &Path, target: &str) -> Result<()> {
    let destination = rootfs.join(target.trim_start_matches('/'));
    fs::create_dir_all(destination.parent().unwrap())?;
    // Dereferences symbolic links: the image holds the files themselves.
    fs::copy(source, &destination).with_context(|| format!("copying {} into an image", source.display()))?;
    Ok(())
}

/// The libraries `ldd` resolves for `program`, the dynamic loader included;
/// none for a static program.
fn shared_libraries(program: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(program).output().context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not a dynamic executable") || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    let mut libraries = Vec::new();
    for line in text.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, resolved)) => resolved.split_whitespace().next(),
            None => line.split_whitespace().next().filter(|p| p.starts_with('/')),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libraries.push(PathBuf::from(path));
        } else if line.contains("not found") {
            bail!("{}: a shared library is missing: {}", program.display(), line.trim());
        }
    }
    Ok(libraries)
}

/// Writes an OCI image layout (one uncompressed layer) and returns the
/// manifest's digest. File times, owners and order are fixed, so the same
/// files give the same digests.
fn write_layout(image: &Image, rootfs: &Path, layout: &Path) -> Result<String> {
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    let layer = layout.join("layer.tar");
    run_quiet(
        Command::new("tar")
            .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner", "-cf"])
            .arg(&layer)
            .arg("-C")
            .arg(rootfs)
            .arg("."),
        "archiving an image's root filesystem",
    )?;
    let layer_digest = sha256(&layer)?;
    let layer_size = fs::metadata(&layer)?.len();
    fs::rename(&layer, blobs.join(&layer_digest))?;
    let strings = |v: &[&str]| format!("[{}]", v.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(","));
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Entrypoint":{},"Cmd":{},"Env":["PATH=/usr/local/bin:/usr/bin:/bin"],"WorkingDir":"/"}},"rootfs":{{"type":"layers","diff_ids":["sha256:{layer_digest}"]}}}}"#,
        strings(&image.entrypoint),
        strings(&image.cmd)
    );
    let config_digest = write_blob(&blobs, &config)?;
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{layer_digest}","size":{layer_size}}}]}}"#,
        config.len()
    );
    let manifest_digest = write_blob(&blobs, &manifest)?;
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{manifest_digest}","size":{},"platform":{{"architecture":"amd64","os":"linux"}},"annotations":{{"io.containerd.image.name":"{}"}}}}]}}"#,
        manifest.len(),
        image.reference
    );
    fs::write(layout.join("index.json"), index)?;
    fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(format!("sha256:{manifest_digest}"))
}

fn write_blob(blobs: &Path, content: &str) -> Result<String> {
    let partial = blobs.join("partial");
    fs::write(&partial, content)?;
    let digest = sha256(&partial)?;
    fs::rename(&partial, blobs.join(&digest))?;
    Ok(digest)
}

fn sha256(file: &Path) -> Result<String> {
    let out = output("sha256sum", &[&file.display().to_string()])?;
    Ok(out.split_whitespace().next().unwrap_or_default().to_string())
}

/// The manifest digest containerd holds under `reference`, if any.
fn imported_digest(ctr: &dyn Fn() -> Command, reference: &str) -> Option<String> {
    let out = ctr().args(["images", "ls"]).output().ok()?;
    // REF TYPE DIGEST SIZE PLATFORMS LABELS
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let mut fields = l.split_whitespace();
        (fields.next() == Some(reference)).then(|| fields.nth(1).map(String::from)).flatten()
    })
}
