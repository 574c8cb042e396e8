//! `cargo xtask cluster up | down`: a real Kubernetes API server on 127.0.0.1.
//!
//! No kube-apiserver package exists in the registries these machines reach, so
//! `up` builds 1.20.2 once from Debian's `kubernetes` source package and caches
//! the binary; etcd 3.4 comes from Debian. Certificates, data, logs, PIDs and the
//! admin kubeconfig live under `target/cluster/`. The recipe is the one in
//! ENVIRONMENT.md, "A real Kubernetes API server".
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};


mod daemon;
mod images;
mod kube_build;
mod network;
mod node;

use daemon::{running, spawn_daemon, stop, wait_until, Daemon};

use super::{install_missing, output, root, run_quiet};
use anyhow::{bail, Context, Result};

/// What `up` needs besides kubectl: the source-package tools, Go and rsync for
/// the build, etcd, and openssl for the certificates.
const APT_PACKAGES: &[&str] = &[
    "dpkg-dev", "golang-go", "rsync", "etcd-server", "etcd-client", "openssl",
    // the node: container runtime, CNI plugins, the API server relay, a static libc for pause
    "containerd", "runc", "containernetworking-plugins", "socat", "iptables", "gcc", "libc6-dev",
];
/// Debian's kubectl; only installed where no kubectl exists, because it
/// conflicts with the one some machine images ship on /usr/bin/kubectl.
const KUBECTL_PACKAGE: &str = "kubernetes-client";
/// Fixed but uncommon ports, so a cluster never collides with a real one;
/// SOCKGATE_CLUSTER_PORT_OFFSET moves them all, so two work trees on one
/// machine can each run a cluster.
fn port(base: u16) -> u16 {
    let offset: u16 = std::env::var("SOCKGATE_CLUSTER_PORT_OFFSET").ok().and_then(|o| o.parse().ok()).unwrap_or(0);
    base + offset
}
fn etcd_client_port() -> u16 {
    port(23790)
}
fn etcd_peer_port() -> u16 {
    port(23800)
}
pub fn apiserver_port() -> u16 {
    port(26443)
}
/// The 1.20 server needs this variant of the Gateway API CRDs (see its README).
const GATEWAY_API_CRDS: &str = "gateway-api/v1.6.1/experimental-k8s1.20";

const ETCD: Daemon = Daemon { name: "etcd", program: "etcd", netns: None };
const APISERVER: Daemon = Daemon { name: "kube-apiserver", program: "kube-apiserver", netns: None };
const CONTROLLER_MANAGER: Daemon = Daemon { name: "kube-controller-manager", program: "kube-controller-manager", netns: None };
const SCHEDULER: Daemon = Daemon { name: "kube-scheduler", program: "kube-scheduler", netns: None };
const RELAY_ON_HOST: Daemon = Daemon { name: "apiserver-relay-host", program: "socat", netns: None };
const RELAY_ON_NODE: Daemon = Daemon { name: "apiserver-relay-node", program: "socat", netns: Some(network::NODE_NETNS) };

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


pub(crate) fn cluster_dir() -> PathBuf {
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
    kube_build::ensure_binaries()?;
    fs::create_dir_all(cluster_dir()).context("creating target/cluster")?;
    let token = ensure_pki()?;
    write_kubeconfig(&token)?;
    if running(&ETCD).is_some() && running(&APISERVER).is_some() {
        eprintln!("xtask: reusing the running API server");
    } else if running(&ETCD).is_some() {
        // The store survived: bring the apiserver back over it, as a restarted
        // control plane would (clients resync; nothing is lost).
        eprintln!("xtask: restarting kube-apiserver over the running etcd");
        start_apiserver()?;
    } else {
        // Whatever half of a previous cluster survived starts over with a fresh store.
        down()?;
        eprintln!("xtask: starting etcd and kube-apiserver on 127.0.0.1:{}", apiserver_port());
        start_etcd()?;
        start_apiserver()?;
    }
    wait_until(&APISERVER, "/readyz to answer", || kubectl_ok(&kubectl, &["get", "--raw", "/readyz"]))?;
    install_gateway_api_crds(&kubectl)?;
    install_sockgate_crds(&kubectl)?;
    for (daemon, args) in [(&CONTROLLER_MANAGER, controller_manager_args()), (&SCHEDULER, scheduler_args())] {
        if running(daemon).is_none() {
            spawn_daemon(daemon, &args)?;
        }
    }
    if node::running_already() {
        eprintln!("xtask: reusing the running node");
        import_images(false)?;
    } else {
        node::down()?;
        stop(&RELAY_ON_NODE)?;
        stop(&RELAY_ON_HOST)?;
        eprintln!("xtask: starting node {} ({}): containerd, kubelet, CNI bridge {}", node::NODE_NAME, network::NODE_IP, network::POD_SUBNET);
        network::create(apiserver_port())?;
        start_relays()?;
        node::start_containerd()?;
        import_images(true)?;
        node::start_kubelet(&kubeconfig_path())?;
    }
    wait_until(&APISERVER, "the node to be Ready", || {
        kubectl_output(&kubectl, &["get", "node", node::NODE_NAME, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"]).is_some_and(|s| s == "True")
    })?;
    // The controller-manager's service-account controllers work: pods can be admitted.
    wait_until(&CONTROLLER_MANAGER, "the default ServiceAccount's token", || {
        kubectl_output(&kubectl, &["get", "serviceaccount", "default", "-o", "jsonpath={.secrets[0].name}"]).is_some_and(|s| !s.is_empty())
    })?;
    write_env()?;
    eprintln!(
        "xtask: cluster ready (API server https://127.0.0.1:{}, node {} at {}); use it with: source {}",
        apiserver_port(),
        node::NODE_NAME,
        network::NODE_IP,
        env_path().display()
    );
    Ok(())
}

/// Everything `up` started, in reverse, and what it changed on the host; fine when nothing runs.
fn down() -> Result<()> {
    node::down()?;
    stop(&RELAY_ON_NODE)?;
    stop(&RELAY_ON_HOST)?;
    stop(&SCHEDULER)?;
    stop(&CONTROLLER_MANAGER)?;
    stop(&APISERVER)?;
    stop(&ETCD)?;
    let _ = fs::remove_file(env_path());
    remove_dir_if_present(&etcd_data_dir())
}

/// `target/cluster/env`, for `source`: the admin kubeconfig and the network
/// namespace a Gateway's clients connect from (another machine, as it were).
pub fn env_path() -> PathBuf {
    cluster_dir().join("env")
}

fn write_env() -> Result<()> {
    let env = format!(
        "# written by `cargo xtask cluster up`; removed by `cargo xtask cluster down`\nexport KUBECONFIG={}\nexport GATEWAY_CLIENT_NETNS={}\n",
        kubeconfig_path().display(),
        network::CLIENT_NETNS
    );
    fs::write(env_path(), env).context("writing target/cluster/env")
}

/// The API server's port on the node's own loopback, relayed through a Unix
/// socket to the API server on this machine's loopback.
fn start_relays() -> Result<()> {
    fs::create_dir_all(node::RUN_DIR)?;
    let socket = Path::new(node::RUN_DIR).join("apiserver.sock").display().to_string();
    let port = apiserver_port();
    spawn_daemon(&RELAY_ON_HOST, &[format!("UNIX-LISTEN:{socket},fork,unlink-early,mode=600"), format!("TCP:127.0.0.1:{port}")])?;
    wait_until(&RELAY_ON_HOST, "the API server relay's socket", || Path::new(&socket).exists())?;
    spawn_daemon(&RELAY_ON_NODE, &[format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"), format!("UNIX-CONNECT:{socket}")])
}

/// The pause image, and the images of this build: the agent under the chart's
/// default reference, the echo backend under the guide's backend image. A
/// running node whose images are newer than the binaries keeps them (a
/// restart of the API server alone, as kube_outage.rs does, stays quick).
fn import_images(fresh_node: bool) -> Result<()> {
    let work = cluster_dir().join("images");
    let target = root().join("target/debug");
    let stamp = cluster_dir().join("images.stamp");
    let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    let sources = [target.join("gateway-agent"), target.join("sockgate-echo")];
    let newest = sources.iter().filter_map(|p| modified(p)).max();
    if !fresh_node && modified(&stamp).is_some_and(|s| newest.is_some_and(|n| s >= n)) {
        return Ok(());
    }
    let images = [
        images::Image { reference: node::PAUSE_IMAGE.to_string(), programs: vec![(kube_build::binary(kube_build::PAUSE), "pause")], entrypoint: vec!["/pause"], cmd: vec![] },
        images::Image {
            reference: chart_image()?,
            programs: vec![(target.join("gateway-agent"), "usr/local/bin/gateway-agent")],
            entrypoint: vec!["/usr/local/bin/gateway-agent"],
            cmd: vec!["run"],
        },
        images::Image {
            reference: guide_backend_image()?,
            programs: vec![(target.join("sockgate-echo"), "usr/local/bin/sockgate-echo")],
            // echo-basic's port; identity from POD_NAME, NAMESPACE, SERVICE_NAME as echo-basic reads it.
            entrypoint: vec!["/usr/local/bin/sockgate-echo", "--listen", "0.0.0.0:3000"],
            cmd: vec![],
        },
    ];
    for image in &images {
        images::build_and_import(image, &work, &node::ctr)?;
    }
    fs::write(&stamp, "")?;
    remove_dir_if_present(&work)
}

/// Whether the binaries the node's images hold are built.
pub fn images_built() -> bool {
    ["gateway-agent", "sockgate-echo"].iter().all(|b| root().join("target/debug").join(b).is_file())
}

/// `image.repository:appVersion`, the chart's default image.
pub fn chart_image() -> Result<String> {
    let chart = fs::read_to_string(root().join("charts/sockgate/Chart.yaml"))?;
    let values = fs::read_to_string(root().join("charts/sockgate/values.yaml"))?;
    let field = |text: &str, key: &str| text.lines().find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().trim_matches('"').to_string()));
    let version = field(&chart, "appVersion:").context("no appVersion in Chart.yaml")?;
    let repository = field(&values, "repository:").context("no image.repository in values.yaml")?;
    Ok(format!("{repository}:{version}"))
}

/// The backend image the guide's Deployments name (examples/tcp-routing/backends.yaml).
fn guide_backend_image() -> Result<String> {
    let backends = fs::read_to_string(root().join("examples/tcp-routing/backends.yaml"))?;
    let image = backends.lines().find_map(|l| l.trim().trim_start_matches("- ").strip_prefix("image:").map(|v| v.trim().to_string()));
    image.context("no image in examples/tcp-routing/backends.yaml")
}

fn controller_manager_args() -> Vec<String> {
    let pki = |file: &str| pki_dir().join(file).display().to_string();
    vec![
        format!("--kubeconfig={}", kubeconfig_path().display()),
        // What the guide and the chart need: Deployments and DaemonSets, their
        // EndpointSlices, node health (it lifts the not-ready taint), namespaces,
        // garbage collection, and service accounts with their tokens.
        "--controllers=deployment,replicaset,daemonset,endpoint,endpointslice,nodelifecycle,namespace,garbagecollector,podgc,serviceaccount,serviceaccount-token".to_string(),
        "--leader-elect=false".to_string(),
        format!("--service-account-private-key-file={}", pki("sa.key")),
        format!("--root-ca-file={}", pki("ca.crt")),
        // No listening ports: nothing here needs its health or metrics endpoints.
        "--port=0".to_string(),
        "--secure-port=0".to_string(),
    ]
}

fn scheduler_args() -> Vec<String> {
    vec![format!("--kubeconfig={}", kubeconfig_path().display()), "--leader-elect=false".to_string(), "--port=0".to_string(), "--secure-port=0".to_string()]
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
/// Returns the admin token.
fn ensure_pki() -> Result<String> {
    let pki = pki_dir();
    // A serving certificate made for other names (an older `up`) is made anew.
    let current = fs::read_to_string(pki.join("server.ext")).is_ok_and(|e| e == SERVER_EXTENSIONS);
    if !pki.join("token.csv").is_file() || !current {
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
subjectAltName = IP:127.0.0.1,DNS:localhost,IP:198.19.240.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc
";

fn write_kubeconfig(token: &str) -> Result<()> {
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sockgate\n  cluster:\n    server: https://127.0.0.1:{}\n    \
         certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: sockgate\n  context:\n    \
         cluster: sockgate\n    user: admin\ncurrent-context: sockgate\n",
        apiserver_port(),
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
    let client = format!("http://127.0.0.1:{}", etcd_client_port());
    let peer = format!("http://127.0.0.1:{}", etcd_peer_port());
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
        format!("--etcd-servers=http://127.0.0.1:{}", etcd_client_port()),
        "--bind-address=127.0.0.1".to_string(),
        "--advertise-address=127.0.0.1".to_string(),
        format!("--secure-port={}", apiserver_port()),
        "--insecure-port=0".to_string(),
        format!("--tls-cert-file={}", pki("server.crt")),
        format!("--tls-private-key-file={}", pki("server.key")),
        format!("--client-ca-file={}", pki("ca.crt")),
        format!("--token-auth-file={}", pki("token.csv")),
        "--authorization-mode=RBAC".to_string(),
        "--service-account-issuer=https://kubernetes.default.svc".to_string(),
        format!("--service-account-key-file={}", pki("sa.pub")),
        format!("--service-account-signing-key-file={}", pki("sa.key")),
        // Inside 198.18.0.0/15; only the `kubernetes` Service's address is served (network.rs).
        format!("--service-cluster-ip-range={}", network::SERVICE_RANGE),
        "--endpoint-reconciler-type=none".to_string(),
    ];
    spawn_daemon(&APISERVER, &args)
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

/// kubectl's output, trimmed, when it succeeds.
fn kubectl_output(kubectl: &Path, args: &[&str]) -> Option<String> {
    let out = kubectl_command(kubectl).args(args).stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
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

pub(crate) fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).with_context(|| format!("removing {}", dir.display())),
        _ => Ok(()),
    }
}

/// The last non-empty line of a log, for a one-line error.
pub(crate) fn last_line(path: &Path) -> String {
    let text = fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output").trim().to_string()
}

