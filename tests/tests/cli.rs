//! The command line as scripts use it: `check`'s exit codes and what it says,
//! and flags refused at parse time with a message (never a panic).
use std::path::Path;
use std::process::{Command, Output};

use sockgate_tests::manifests::{documents, gateway, route, service};
use sockgate_tests::workspace_bin;

fn agent(args: &[&str], dir: &Path) -> Output {
    Command::new(workspace_bin("gateway-agent").unwrap()).args(args).arg("--manifests").arg(dir).output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn dir_with(files: &[(&str, String)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, yaml) in files {
        std::fs::write(dir.path().join(name), yaml).unwrap();
    }
    dir
}

#[test]
fn check_exits_0_for_a_directory_whose_every_object_is_accepted_and_programmed() {
    let dir = dir_with(&[("all.yaml", documents(&[gateway(&[("a", 9000)]), route("ra", "a", "sink", 7001), service("sink", 7001, 7000, &["198.18.2.2"])]))]);
    let out = agent(&["check"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn check_exits_3_naming_each_false_condition_and_the_flag_relaxes_it() {
    let dir = dir_with(&[("all.yaml", documents(&[gateway(&[("a", 9000)]), route("ra", "a", "ghost", 7001)]))]);
    let out = agent(&["check"], dir.path());
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 of the objects sockgate owns has a False condition:"), "{stderr}");
    assert!(stderr.contains("TCPRoute default/ra -> gw/a: Accepted=True/Accepted, ResolvedRefs=False/BackendNotFound (Service default/ghost not found)"), "{stderr}");
    let out = agent(&["check", "--allow-false-conditions"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn check_exits_1_on_an_empty_directory_and_says_so() {
    let dir = dir_with(&[("notes.txt", "not a manifest".into())]);
    let out = agent(&["check"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("holds no manifests (no *.yaml or *.yml file directly in it): nothing to check"), "{}", text(&out));
}

#[test]
fn check_exits_1_on_a_rejected_directory_naming_the_field_meant() {
    let typo = route("ra", "a", "sink", 7001).replace("sectionName", "sectionNme");
    let dir = dir_with(&[("all.yaml", documents(&[gateway(&[("a", 9000)]), typo]))]);
    let out = agent(&["check"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("(did you mean \"sectionName\"?)"), "{}", text(&out));
    assert!(text(&out).contains("manifests rejected (1 problem)"), "{}", text(&out));
}

#[test]
fn run_with_a_zero_reload_interval_is_refused_before_it_serves_not_a_panic() {
    let dir = dir_with(&[("gw.yaml", gateway(&[("a", 9000)]))]);
    let out = agent(&["run", "--reload-interval", "0s"], dir.path());
    assert_eq!(out.status.code(), Some(2), "a command-line error: {}", text(&out));
    let said = text(&out);
    assert!(said.contains("invalid value '0s' for '--reload-interval <RELOAD_INTERVAL>': \"0s\" is zero; give a duration of more than zero"), "{said}");
    assert!(!said.contains("panicked") && !said.contains("serving"), "{said}");
}

#[test]
fn check_lists_what_it_skips_and_why() {
    let theirs = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: envoy}\nspec: {controllerName: gateway.envoyproxy.io/gatewayclass-controller}\n---\n\
        apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: eg}\nspec:\n  gatewayClassName: envoy\n  listeners: [{name: x, port: 9100, protocol: TCP}]\n---\n\
        apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: backend}\nspec: {}\n".to_string();
    let lost = route("lost", "a", "sink", 7001).replace("  - name: gw\n", "  - name: nowhere\n");
    let dir = dir_with(&[("all.yaml", documents(&[gateway(&[("a", 9000)]), route("ra", "a", "sink", 7001), service("sink", 7001, 7000, &["198.18.2.2"]), theirs, lost]))]);
    let out = agent(&["check"], dir.path());
    let said = text(&out);
    for line in [
        "ignored: apps/v1 Deployment backend (",
        "): a kind sockgate does not read",
        "ignored: GatewayClass envoy: controllerName \"gateway.envoyproxy.io/gatewayclass-controller\" is another controller's",
        "ignored: Gateway default/eg: its GatewayClass \"envoy\" belongs to controller \"gateway.envoyproxy.io/gatewayclass-controller\"",
        "ignored: TCPRoute default/lost: parentRefs[0] names Gateway default/nowhere, which does not exist",
    ] {
        assert!(said.contains(line), "missing {line:?} in:\n{said}");
    }
}

/// `check | head -1`: the reader goes after one line; check ends as Unix
/// tools do (SIGPIPE), with no panic message and no exit code 101.
#[test]
fn check_piped_into_a_reader_that_stops_early_ends_quietly_without_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    // Enough routes that check prints far more than a pipe buffer holds.
    let mut objects: Vec<String> = (0..600).map(|i| route(&format!("route-{i}"), "a", "sink", 7001)).collect();
    objects.extend([gateway(&[("a", 9000)]), service("sink", 7001, 7000, &["198.18.2.2"])]);
    let dir = dir_with(&[("all.yaml", documents(&objects))]);
    let mut child = Command::new(workspace_bin("gateway-agent").unwrap())
        .args(["check", "--allow-false-conditions", "--manifests"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.code() != Some(101), "{:?} {stderr}", out.status);
    assert!(out.status.signal() == Some(libc::SIGPIPE) || out.status.success(), "{:?} {stderr}", out.status);
}
