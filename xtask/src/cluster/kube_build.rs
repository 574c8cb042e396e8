//! The Kubernetes 1.20.2 binaries, built once per machine from Debian's
//! `kubernetes` source package (no registry these machines reach ships them),
//! and cached outside `target/` so `cargo clean` keeps them. The recipe is the
//! one in ENVIRONMENT.md, "A real Kubernetes API server".
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{cluster_dir, last_line, remove_dir_if_present};
use crate::run_quiet;
use anyhow::{bail, Context, Result};

/// Bookworm's source package: the full upstream 1.20.2 tree with `vendor/`.
const KUBERNETES_SOURCE: &str = "kubernetes=1.20.5+really1.20.2-1.1+deb12u1";
/// reflect2 1.0.1 (vendored in 1.20.2) crashes the apiserver on the first
/// custom-resource create under Go >= 1.18; Debian's 1.0.2 does not.
const REFLECT2_PACKAGE: &str = "golang-github-modern-go-reflect2-dev=1.0.2-2";
/// Where the built binaries live.
pub const CACHE_DIR: &str = "/var/cache/sockgate/kubernetes-1.20.2";
/// The control plane and the node agent; one `make` builds them together,
/// sharing the compiled dependencies (about 6 minutes cold on 2 cores).
const COMMANDS: &[&str] = &["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet"];
/// The sandbox ("pause") container's program, compiled from the tree's C source:
/// the CRI needs an image for it and no registry can serve one.
pub const PAUSE: &str = "pause";
/// A private apt source list: the system's apt configuration stays untouched.
const BOOKWORM_SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
";
/// What `--version` reports; without it the build asks git, which would
/// describe whatever repository the build directory sits in.
const KUBE_VERSION_VARS: &str = "\
KUBE_GIT_COMMIT='faecb196815e248d3ecfb03c680a4507229c2a56'
KUBE_GIT_TREE_STATE='clean'
KUBE_GIT_VERSION='v1.20.2'
KUBE_GIT_MAJOR='1'
KUBE_GIT_MINOR='20'
";

/// The cached binary `name` (one of COMMANDS, or PAUSE).
pub fn binary(name: &str) -> PathBuf {
    Path::new(CACHE_DIR).join(name)
}

/// Builds what is not cached yet; instant when everything is.
pub fn ensure_binaries() -> Result<()> {
    if COMMANDS.iter().chain([&PAUSE]).all(|name| binary(name).is_file()) {
        return Ok(());
    }
    let work = cluster_dir().join("kubernetes-build");
    // A failed earlier attempt is left for inspection; start it over from scratch.
    remove_dir_if_present(&work)?;
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    fetch_sources(&work)?;
    let tree = unpack_kubernetes(&work)?;
    replace_reflect2(&work, &tree)?;
    make(&work, &tree)?;
    let pause = compile_pause(&work, &tree)?;
    for name in COMMANDS {
        install_cached(&tree.join("_output/bin").join(name), name)?;
    }
    install_cached(&pause, PAUSE)?;
    // 2 GB of tree and Go cache that nothing needs once the binaries are cached.
    remove_dir_if_present(&work)
}

/// Downloads the kubernetes source package and Debian's reflect2 through a
/// private apt configuration (own source list and lists directory).
fn fetch_sources(work: &Path) -> Result<()> {
    let apt_dir = work.join("apt");
    fs::create_dir_all(apt_dir.join("lists/partial"))?;
    fs::create_dir_all(apt_dir.join("sources.list.d"))?;
    fs::write(apt_dir.join("sources.list"), BOOKWORM_SOURCES)?;
    eprintln!("xtask: fetching Debian's kubernetes source package (34 MB)");
    run_quiet(private_apt(&apt_dir).args(["update", "-q"]), "apt-get update (private bookworm source list)")?;
    run_quiet(
        private_apt(&apt_dir).current_dir(work).args(["source", "--download-only", "-q", KUBERNETES_SOURCE]),
        &format!("apt-get source {KUBERNETES_SOURCE}"),
    )?;
    run_quiet(
        private_apt(&apt_dir).current_dir(work).args(["download", "-q", REFLECT2_PACKAGE]),
        &format!("apt-get download {REFLECT2_PACKAGE}"),
    )
}

/// apt-get reading only our source list and lists directory, with no shared
/// package caches, so the system's apt state is neither used nor changed.
fn private_apt(apt_dir: &Path) -> Command {
    let mut apt = Command::new("apt-get");
    apt.arg("-o").arg(format!("Dir::Etc::SourceList={}", apt_dir.join("sources.list").display()));
    apt.arg("-o").arg(format!("Dir::Etc::SourceParts={}", apt_dir.join("sources.list.d").display()));
    apt.arg("-o").arg(format!("Dir::State::Lists={}", apt_dir.join("lists").display()));
    apt.args(["-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache="]);
    apt
}

/// Unpacks the upstream (orig) tarball only: Debian's patches are for its own packaging.
fn unpack_kubernetes(work: &Path) -> Result<PathBuf> {
    let orig = find_file(work, |n| n.starts_with("kubernetes_") && n.contains(".orig.tar."))?;
    let unpacked = work.join("tree");
    fs::create_dir_all(&unpacked)?;
    run_quiet(Command::new("tar").arg("-xf").arg(&orig).arg("-C").arg(&unpacked), "unpacking the kubernetes tarball")?;
    let mut entries: Vec<PathBuf> = fs::read_dir(&unpacked)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    match entries.as_slice() {
        [top] if top.join("vendor").is_dir() => Ok(entries.remove(0)),
        _ => bail!("{} did not unpack to one tree with vendor/", orig.display()),
    }
}

fn replace_reflect2(work: &Path, tree: &Path) -> Result<()> {
    let deb = find_file(work, |n| n.starts_with("golang-github-modern-go-reflect2-dev_") && n.ends_with(".deb"))?;
    let extracted = work.join("reflect2-deb");
    run_quiet(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&extracted), "extracting reflect2")?;
    let source = extracted.join("usr/share/gocode/src/github.com/modern-go/reflect2");
    if !source.join("reflect2.go").is_file() {
        bail!("{} has no reflect2 Go source where expected", deb.display());
    }
    let vendored = tree.join("vendor/github.com/modern-go/reflect2");
    remove_dir_if_present(&vendored)?;
    run_quiet(Command::new("cp").arg("-r").arg(&source).arg(&vendored), "copying reflect2 1.0.2 into vendor/")
}

fn make(work: &Path, tree: &Path) -> Result<()> {
    let version_file = work.join("kube-version-vars");
    fs::write(&version_file, KUBE_VERSION_VARS)?;
    let log_path = work.join("make.log");
    let log = fs::File::create(&log_path)?;
    eprintln!("xtask: building Kubernetes 1.20.2 {} (once per machine, about 6 minutes; log: {})", COMMANDS.join(" "), log_path.display());
    let what: Vec<String> = COMMANDS.iter().map(|c| format!("cmd/{c}")).collect();
    // Niced: another build or a benchmark may share the two cores.
    let status = Command::new("nice")
        .args(["-n", "10", "make"])
        .current_dir(tree)
        .arg(format!("WHAT={}", what.join(" ")))
        // Static binaries: the kubelet runs on the host, the others need no libc either.
        .arg("CGO_ENABLED=0")
        .env("KUBE_GIT_VERSION_FILE", &version_file)
        .env("GOCACHE", work.join("go-cache"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("starting make")?;
    if !status.success() {
        bail!("building Kubernetes failed ({status}): {} (see {})", last_line(&log_path), log_path.display());
    }
    Ok(())
}

/// The pause program, static so its image needs nothing else.
fn compile_pause(work: &Path, tree: &Path) -> Result<PathBuf> {
    let source = ["build/pause/linux/pause.c", "build/pause/pause.c"].iter().map(|p| tree.join(p)).find(|p| p.is_file());
    let source = source.context("the kubernetes tree has no build/pause/linux/pause.c")?;
    let out = work.join(PAUSE);
    run_quiet(
        Command::new("gcc").args(["-Os", "-static", "-DVERSION=v3.4.1-sockgate", "-o"]).arg(&out).arg(&source),
        "compiling pause.c (gcc, static)",
    )?;
    Ok(out)
}

/// Copies through a temporary name so a half-written file never looks cached.
fn install_cached(built: &Path, name: &str) -> Result<()> {
    if !built.is_file() {
        bail!("the build succeeded but left no {}", built.display());
    }
    let cached = binary(name);
    fs::create_dir_all(CACHE_DIR).with_context(|| format!("creating {CACHE_DIR}"))?;
    let partial = cached.with_extension("partial");
    fs::copy(built, &partial).with_context(|| format!("copying {name} to {}", partial.display()))?;
    fs::set_permissions(&partial, fs::Permissions::from_mode(0o755))?;
    fs::rename(&partial, &cached)?;
    eprintln!("xtask: cached {}", cached.display());
    Ok(())
}

fn find_file(dir: &Path, matches: impl Fn(&str) -> bool) -> Result<PathBuf> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.file_name().and_then(|n| n.to_str()).is_some_and(&matches) {
            return Ok(path);
        }
    }
    bail!("an expected download is missing from {}", dir.display())
}