//! `cargo xtask cluster up | down`: a real Kubernetes API server on 127.0.0.1.
//!
//! No kube-apiserver package exists in the registries these machines reach, so
//! `up` builds 1.20.2 once from Debian's `kubernetes` source package and caches
//! the binary; etcd 3.4 comes from Debian. Certificates, data, logs, PIDs and the
//! admin kubeconfig live under `target/cluster/`. The recipe is the one in
//! ENVIRONMENT.md, "A real Kubernetes API server".
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::{install_missing, output, root, run_quiet};
use anyhow::{bail, Context, Result};

/// What `up` needs besides kubectl: the source-package tools, Go and rsync for
/// the build, etcd, and openssl for the certificates.
const APT_PACKAGES: &[&str] = &["dpkg-dev", "golang-go", "rsync", "etcd-server", "etcd-client", "openssl"];
/// Debian's kubectl; only installed where no kubectl exists, because it
/// conflicts with the one some machine images ship on /usr/bin/kubectl.
const KUBECTL_PACKAGE: &str = "kubernetes-client";
/// Bookworm's source package: the full upstream 1.20.2 tree with `vendor/`.
const KUBERNETES_SOURCE: &str = "kubernetes=1.20.5+really1.20.2-1.1+deb12u1";
/// reflect2 1.0.1 (vendored in 1.20.2) crashes the apiserver on the first
/// custom-resource create under Go >= 1.18; Debian's 1.0.2 does not.
const REFLECT2_PACKAGE: &str = "golang-github-modern-go-reflect2-dev=1.0.2-2";
/// Where the built binary lives; outside `target/` so `cargo clean` keeps it.
const APISERVER_CACHE: &str = "/var/cache/sockgate/kube-apiserver-1.20.2";
/// A private apt source list: the system's apt configuration stays untouched.
const BOOKWORM_SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
";
/// What `kube-apiserver --version` reports; without it the build asks git,
/// which would describe whatever repository the build directory sits in.
const KUBE_VERSION_VARS: &str = "\
KUBE_GIT_COMMIT='faecb196815e248d3ecfb03c680a4507229c2a56'
KUBE_GIT_TREE_STATE='clean'
KUBE_GIT_VERSION='v1.20.2'
KUBE_GIT_MAJOR='1'
KUBE_GIT_MINOR='20'
";

/// Fixed but uncommon ports, so a cluster never collides with a real one.
const ETCD_CLIENT_PORT: u16 = 23790;
const ETCD_PEER_PORT: u16 = 23800;
const APISERVER_PORT: u16 = 26443;
/// The 1.20 server needs this variant of the Gateway API CRDs (see its README).
const GATEWAY_API_CRDS: &str = "gateway-api/v1.6.1/experimental-k8s1.20";
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A process `up` starts and `down` stops, known by its saved PID.
struct Daemon {
    name: &'static str,
    program: &'static str,
}

const ETCD: Daemon = Daemon { name: "etcd", program: "etcd" };
const APISERVER: Daemon = Daemon { name: "kube-apiserver", program: APISERVER_CACHE };

pub fn run(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("up") => up(),
        Some("down") => down(),
        _ => bail!("usage: cargo xtask cluster <up|down>"),
    }
}

/// The admin kubeconfig `up` writes; tests point their clients at it.
pub fn kubeconfig_path() -> PathBuf {
    cluster_dir().join("kubeconfig")
}


fn cluster_dir() -> PathBuf {
    root().join("target/cluster")
}

fn pki_dir() -> PathBuf {
    cluster_dir().join("pki")
}

fn etcd_data_dir() -> PathBuf {
    cluster_dir().join("etcd-data")
}

/// Starts the cluster, or re-checks the one already running: quick the second time.
fn up() -> Result<()> {
    let kubectl = install_packages()?;
    ensure_apiserver_binary()?;
    fs::create_dir_all(cluster_dir()).context("creating target/cluster")?;
    let token = ensure_pki()?;
    write_kubeconfig(&token)?;
    if running(&ETCD).is_some() && running(&APISERVER).is_some() {
        eprintln!("xtask: reusing the running cluster");
    } else if running(&ETCD).is_some() {
        // The store survived: bring the apiserver back over it, as a restarted
        // control plane would (clients resync; nothing is lost).
        eprintln!("xtask: restarting kube-apiserver over the running etcd");
        start_apiserver()?;
    } else {
        // Whatever half of a previous cluster survived starts over with a fresh store.
        down()?;
        eprintln!("xtask: starting etcd and kube-apiserver on 127.0.0.1:{APISERVER_PORT}");
        start_etcd()?;
        start_apiserver()?;
    }
    wait_until(&APISERVER, "/readyz to answer", || kubectl_ok(&kubectl, &["get", "--raw", "/readyz"]))?;
    install_gateway_api_crds(&kubectl)?;
    install_sockgate_crds(&kubectl)?;
    eprintln!(
        "xtask: cluster ready at https://127.0.0.1:{APISERVER_PORT}; use it with: export KUBECONFIG={}",
        kubeconfig_path().display()
    );
    Ok(())
}

/// Stops the apiserver, then etcd, and drops the store; fine when nothing runs.
fn down() -> Result<()> {
    stop(&APISERVER)?;
    stop(&ETCD)?;
    remove_dir_if_present(&etcd_data_dir())
}

/// Installs what is missing and returns the kubectl to use.
fn install_packages() -> Result<PathBuf> {
    let existing_kubectl = find_on_path("kubectl");
    let mut wanted = APT_PACKAGES.to_vec();
    // Debian's kubectl conflicts with one the machine image may ship: use that one if present.
    if existing_kubectl.is_none() {
        wanted.push(KUBECTL_PACKAGE);
    }
    if output("id", &["-u"])?.trim() != "0" {
        bail!("cluster up must run as root: it installs packages and starts daemons");
    }
    install_missing(&wanted)?;
    existing_kubectl.or_else(|| find_on_path("kubectl")).context("no kubectl on PATH even after installing kubernetes-client")
}


fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file())
}

/// Builds kube-apiserver once per machine; the cached binary makes later runs instant.
fn ensure_apiserver_binary() -> Result<()> {
    if Path::new(APISERVER_CACHE).is_file() {
        return Ok(());
    }
    let work = cluster_dir().join("kubernetes-build");
    // A failed earlier attempt is left for inspection; start it over from scratch.
    remove_dir_if_present(&work)?;
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    fetch_sources(&work)?;
    let tree = unpack_kubernetes(&work)?;
    replace_reflect2(&work, &tree)?;
    let binary = make_apiserver(&work, &tree)?;
    install_cached_binary(&binary)?;
    // 1.8 GB of tree and Go cache that nothing needs once the binary is cached.
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

fn make_apiserver(work: &Path, tree: &Path) -> Result<PathBuf> {
    let version_file = work.join("kube-version-vars");
    fs::write(&version_file, KUBE_VERSION_VARS)?;
    let log_path = work.join("make.log");
    let log = fs::File::create(&log_path)?;
    eprintln!("xtask: building kube-apiserver 1.20.2 (once per machine, about 3 minutes; log: {})", log_path.display());
    let status = Command::new("make")
        .current_dir(tree)
        .args(["WHAT=cmd/kube-apiserver", "CGO_ENABLED=0"])
        .env("KUBE_GIT_VERSION_FILE", &version_file)
        .env("GOCACHE", work.join("go-cache"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("starting make")?;
    if !status.success() {
        bail!("building kube-apiserver failed ({status}): {} (see {})", last_line(&log_path), log_path.display());
    }
    let binary = tree.join("_output/bin/kube-apiserver");
    if !binary.is_file() {
        bail!("make succeeded but left no {}", binary.display());
    }
    Ok(binary)
}

/// Copies through a temporary name so a half-written file never looks cached.
fn install_cached_binary(binary: &Path) -> Result<()> {
    let cached = Path::new(APISERVER_CACHE);
    fs::create_dir_all(cached.parent().unwrap()).context("creating /var/cache/sockgate")?;
    let partial = cached.with_extension("partial");
    fs::copy(binary, &partial).with_context(|| format!("copying kube-apiserver to {}", partial.display()))?;
    fs::set_permissions(&partial, fs::Permissions::from_mode(0o755))?;
    fs::rename(&partial, cached)?;
    eprintln!("xtask: cached {APISERVER_CACHE}");
    Ok(())
}

/// Generates the CA, serving certificate, service-account keys and admin token
/// once, into a scratch directory renamed into place so a half set never counts.
/// Returns the admin token.
fn ensure_pki() -> Result<String> {
    let pki = pki_dir();
    if !pki.join("token.csv").is_file() {
        eprintln!("xtask: generating the cluster's CA, certificates and admin token");
        let scratch = cluster_dir().join("pki.partial");
        remove_dir_if_present(&scratch)?;
        fs::create_dir_all(&scratch)?;
        generate_pki(&scratch)?;
        remove_dir_if_present(&pki)?;
        fs::rename(&scratch, &pki)?;
    }
    let tokens = fs::read_to_string(pki.join("token.csv")).context("reading target/cluster/pki/token.csv")?;
    let token = tokens.split(',').next().unwrap_or_default().trim();
    if token.is_empty() {
        bail!("target/cluster/pki/token.csv has no token; remove target/cluster/pki and run again");
    }
    Ok(token.to_string())
}

fn generate_pki(dir: &Path) -> Result<()> {
    let openssl = |args: &[&str], what: &str| run_quiet(Command::new("openssl").current_dir(dir).args(args), what);
    fs::write(dir.join("ca.cnf"), CA_CONFIG)?;
    fs::write(dir.join("server.ext"), SERVER_EXTENSIONS)?;
    openssl(&["genrsa", "-out", "ca.key", "2048"], "generating the CA key")?;
    openssl(
        &["req", "-x509", "-new", "-key", "ca.key", "-config", "ca.cnf", "-extensions", "v3_ca", "-days", "3650", "-out", "ca.crt"],
        "creating the CA certificate",
    )?;
    openssl(&["genrsa", "-out", "server.key", "2048"], "generating the serving key")?;
    openssl(&["req", "-new", "-key", "server.key", "-subj", "/CN=kube-apiserver", "-out", "server.csr"], "creating the serving CSR")?;
    openssl(
        &[
            "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "3650",
            "-extfile", "server.ext", "-out", "server.crt",
        ],
        "signing the serving certificate",
    )?;
    openssl(&["genrsa", "-out", "sa.key", "2048"], "generating the service-account key")?;
    openssl(&["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"], "deriving the service-account public key")?;
    let token = output("openssl", &["rand", "-hex", "24"])?;
    write_private(&dir.join("token.csv"), &format!("{},admin,admin,system:masters\n", token.trim()))
}

/// Go refuses a CA without basicConstraints, so the CA's extensions are explicit.
const CA_CONFIG: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = sockgate-cluster-ca
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
";
const SERVER_EXTENSIONS: &str = "\
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
";

fn write_kubeconfig(token: &str) -> Result<()> {
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sockgate\n  cluster:\n    server: https://127.0.0.1:{APISERVER_PORT}\n    \
         certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: sockgate\n  context:\n    \
         cluster: sockgate\n    user: admin\ncurrent-context: sockgate\n",
        ca = pki_dir().join("ca.crt").display(),
    );
    // Renamed into place: a test reading it while `up` runs never sees half a file.
    let path = kubeconfig_path();
    let partial = path.with_extension("partial");
    write_private(&partial, &config)?;
    fs::rename(&partial, &path).with_context(|| format!("writing {}", path.display()))
}

/// Writes a file only root can read: it holds a cluster-admin credential or key.
fn write_private(path: &Path, contents: &str) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

fn start_etcd() -> Result<()> {
    let client = format!("http://127.0.0.1:{ETCD_CLIENT_PORT}");
    let peer = format!("http://127.0.0.1:{ETCD_PEER_PORT}");
    let args = [
        "--name=sockgate".to_string(),
        format!("--data-dir={}", etcd_data_dir().display()),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=sockgate={peer}"),
    ];
    spawn_daemon(&ETCD, &args)?;
    let endpoint = format!("--endpoints={client}");
    wait_until(&ETCD, "etcd to be healthy", || {
        Command::new("etcdctl")
            .args([endpoint.as_str(), "--command-timeout=2s", "endpoint", "health"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

fn start_apiserver() -> Result<()> {
    let pki = |file: &str| pki_dir().join(file).display().to_string();
    let args = [
        format!("--etcd-servers=http://127.0.0.1:{ETCD_CLIENT_PORT}"),
        "--bind-address=127.0.0.1".to_string(),
        "--advertise-address=127.0.0.1".to_string(),
        format!("--secure-port={APISERVER_PORT}"),
        "--insecure-port=0".to_string(),
        format!("--tls-cert-file={}", pki("server.crt")),
        format!("--tls-private-key-file={}", pki("server.key")),
        format!("--client-ca-file={}", pki("ca.crt")),
        format!("--token-auth-file={}", pki("token.csv")),
        "--authorization-mode=RBAC".to_string(),
        "--service-account-issuer=https://kubernetes.default.svc".to_string(),
        format!("--service-account-key-file={}", pki("sa.pub")),
        format!("--service-account-signing-key-file={}", pki("sa.key")),
        // Only an allocation range inside the apiserver: nothing sends traffic there.
        "--service-cluster-ip-range=10.96.0.0/16".to_string(),
        "--disable-admission-plugins=ServiceAccount".to_string(),
        "--endpoint-reconciler-type=none".to_string(),
    ];
    spawn_daemon(&APISERVER, &args)
}

/// Starts a daemon in its own session (a daemon left in the caller's process
/// group was seen killed when an unrelated command ended), logging to
/// target/cluster/NAME.log, and saves its PID for `down`.
fn spawn_daemon(daemon: &Daemon, args: &[String]) -> Result<()> {
    let log_path = log_path(daemon);
    let log = fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    // Our child is never a process-group leader, so setsid execs in place and
    // the child's PID is the daemon's.
    let child = Command::new("setsid")
        .arg(daemon.program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", daemon.name))?;
    fs::write(pid_path(daemon), format!("{}\n", child.id())).with_context(|| format!("saving {}'s PID", daemon.name))
}

/// Polls `ready` for up to a minute; fails early, with the daemon's last log
/// line, when the daemon exits instead.
fn wait_until(daemon: &Daemon, what: &str, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if ready() {
            return Ok(());
        }
        if running(daemon).is_none() {
            let log = log_path(daemon);
            bail!("{} exited: {} (see {})", daemon.name, last_line(&log), log.display());
        }
        if Instant::now() > deadline {
            bail!("timed out after {}s waiting for {what} (see {})", READY_TIMEOUT.as_secs(), log_path(daemon).display());
        }
        sleep(Duration::from_millis(300));
    }
}

fn install_gateway_api_crds(kubectl: &Path) -> Result<()> {
    let dir = root().parent().unwrap().join("shared").join(GATEWAY_API_CRDS);
    if !dir.is_dir() {
        bail!("the Gateway API CRDs are missing: no {}", dir.display());
    }
    let dir = dir.display().to_string();
    eprintln!("xtask: applying the Gateway API v1.6.1 CRDs (experimental channel, 1.20 variant)");
    run_quiet(kubectl_command(kubectl).args(["apply", "--validate=false", "-f", &dir]), "kubectl apply of the Gateway API CRDs")?;
    run_quiet(
        kubectl_command(kubectl).args(["wait", "--for=condition=established", "--timeout=60s", "-f", &dir]),
        "waiting for the Gateway API CRDs to be established",
    )
}

/// sockgate's own policy CRDs (generated by `gateway-agent crds`, shipped in the chart).
fn install_sockgate_crds(kubectl: &Path) -> Result<()> {
    let file = root().join("charts/sockgate/crds/sockgate-policies.yaml").display().to_string();
    run_quiet(kubectl_command(kubectl).args(["apply", "-f", &file]), "kubectl apply of sockgate's policy CRDs")?;
    run_quiet(
        kubectl_command(kubectl).args(["wait", "--for=condition=established", "--timeout=60s", "-f", &file]),
        "waiting for sockgate's policy CRDs to be established",
    )
}

fn kubectl_command(kubectl: &Path) -> Command {
    let mut command = Command::new(kubectl);
    command.arg("--kubeconfig").arg(kubeconfig_path()).arg("--request-timeout=10s");
    command
}

fn kubectl_ok(kubectl: &Path, args: &[&str]) -> bool {
    kubectl_command(kubectl)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// SIGTERM, then SIGKILL if it is still there after 15 s; a no-op when it is not running.
fn stop(daemon: &Daemon) -> Result<()> {
    if let Some(pid) = running(daemon) {
        eprintln!("xtask: stopping {} (pid {pid})", daemon.name);
        signal(pid, "TERM")?;
        if !exits_within(daemon, pid, Duration::from_secs(15)) {
            eprintln!("xtask: {} ignored SIGTERM; killing it", daemon.name);
            signal(pid, "KILL")?;
            if !exits_within(daemon, pid, Duration::from_secs(5)) {
                bail!("{} (pid {pid}) survived SIGKILL", daemon.name);
            }
        }
    }
    match fs::remove_file(pid_path(daemon)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).context("removing a PID file"),
        _ => Ok(()),
    }
}

fn signal(pid: u32, signal: &str) -> Result<()> {
    // A process that exits between the check and the signal makes kill fail: fine.
    Command::new("kill").args(["-s", signal, &pid.to_string()]).stderr(Stdio::null()).status().context("running kill")?;
    Ok(())
}

fn exits_within(daemon: &Daemon, pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while alive(pid, daemon) {
        if Instant::now() > deadline {
            return false;
        }
        sleep(Duration::from_millis(100));
    }
    true
}

/// The saved PID, if that process is still this daemon.
fn running(daemon: &Daemon) -> Option<u32> {
    let pid = fs::read_to_string(pid_path(daemon)).ok()?.trim().parse().ok()?;
    alive(pid, daemon).then_some(pid)
}

/// Alive and still the daemon: not a zombie, and not a reused PID running
/// something else (its argv[0] names the daemon's program).
fn alive(pid: u32, daemon: &Daemon) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, None | Some("Z") | Some("X")) {
        return false;
    }
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let argv0 = String::from_utf8_lossy(cmdline.split(|b| *b == 0).next().unwrap_or_default()).into_owned();
    Path::new(&argv0).file_name() == Path::new(daemon.program).file_name()
}

fn pid_path(daemon: &Daemon) -> PathBuf {
    cluster_dir().join(format!("{}.pid", daemon.name))
}

fn log_path(daemon: &Daemon) -> PathBuf {
    cluster_dir().join(format!("{}.log", daemon.name))
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

fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).with_context(|| format!("removing {}", dir.display())),
        _ => Ok(()),
    }
}

/// The last non-empty line of a log, for a one-line error.
fn last_line(path: &Path) -> String {
    let text = fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output").trim().to_string()
}

