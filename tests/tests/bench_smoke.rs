//! The benchmark harness (`cargo xtask bench`) once, in a tiny configuration,
//! so that it cannot rot: every contender through every workload (UDP's too,
//! where the contender carries UDP), the profile, the report and the chart. No figure is asserted (timed tests on shared
//! machines are flaky); a failed measurement is a failure here, and every
//! checksummed transfer and echo is still checked by the harness itself.
use std::path::Path;
use std::process::Command;

use sockgate_tests::bench::contenders::Contender;
use sockgate_tests::bench::metrics::Metric;

/// The section of the report under `### heading`, up to the next heading.
fn section<'a>(report: &'a str, heading: &str) -> Option<&'a str> {
    let start = report.find(&format!("### {heading}\n"))?;
    let rest = &report[start + 4..];
    Some(rest.find("\n#").map_or(rest, |end| &rest[..end]))
}

fn tiny_run(out: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sockgate-bench"))
        .args([
            "--rounds",
            "1",
            "--bytes",
            "8388608",
            "--iperf-seconds",
            "1",
            "--round-trips",
            "200",
            "--redis-requests",
            "500",
        ])
        .args([
            "--connection-seconds",
            "0.3",
            "--idle-connections",
            "50",
            "--many-idle-connections",
            "100",
            "--stall-connections",
            "20",
            "--trickle-connections",
            "10",
            // Each of the three datagram sizes; iperf3 -u runs --iperf-seconds.
            "--udp-seconds",
            "0.3",
            "--out",
        ])
        .arg(out)
        .output()
        .expect("running sockgate-bench")
}

#[test]
fn the_bench_measures_every_contender_on_every_workload_and_writes_report_and_chart() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("BENCHMARKS.md");
    let run = tiny_run(&out);
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "sockgate-bench failed:\n{log}");
    let report = std::fs::read_to_string(&out).expect("the report");
    // Every measurement of sockgate and of the kernel's own paths must
    // succeed. HAProxy and nginx are the projects' own code: a failure of
    // theirs is reported as such in the table (seen once: HAProxy reset a
    // checksummed transfer), which is the bench doing its job.
    let failed: Vec<&str> = report
        .lines()
        .filter(|l| l.contains("**failed**") && !l.starts_with("| HAProxy") && !l.starts_with("| nginx"))
        .collect();
    assert!(failed.is_empty(), "a measurement failed:\n{}\n\n{report}", failed.join("\n"));
    let config_titles = |m: Metric| m.title().replace("{idle}", "50").replace("{many}", "100");
    for metric in Metric::ALL {
        let title = config_titles(metric);
        let table = section(&report, &title).unwrap_or_else(|| panic!("no table for {title:?} in:\n{report}"));
        for contender in Contender::default_set() {
            let label = if metric.is_udp() { contender.udp_label() } else { contender.label() };
            let row = table.lines().find(|l| l.starts_with(&format!("| {label} |")));
            let row = row.unwrap_or_else(|| panic!("no row for {label} under {title:?}:\n{table}"));
            // HAProxy's or nginx's own failure is reported in its row (see above), not a figure.
            let foreign_failure = row.contains("**failed**") && (row.starts_with("| HAProxy") || row.starts_with("| nginx"));
            // A contender that carries no UDP says why instead of a figure.
            let no_udp = metric.is_udp() && contender.udp().is_err();
            if no_udp {
                assert!(row.contains("n/a: "), "{label} carries no UDP, and its row should say so: {row}");
            }
            if !(metric.needs_forwarder() && matches!(contender, Contender::Direct | Contender::Dnat)) && !foreign_failure && !no_udp {
                let median = row.split('|').nth(2).unwrap().trim();
                assert!(median.parse::<f64>().is_ok(), "{} has no figure under {title:?}: {row}", contender.label());
            }
        }
    }
    assert!(report.contains("## Goals of issue 7"), "{report}");
    assert!(report.contains("## Goals of issue 14"), "{report}");
    assert!(report.contains("## Goals of issue 15"), "{report}");
    // The kernel UDP NAT carried every UDP datagram of `ebpf`: none reached a socket of the node (the relay stays bound beside it).
    let node_udp = report.split("## UDP through the node's own sockets").nth(1).expect("a section on the node's UDP sockets");
    let ebpf_rows: Vec<&str> = node_udp.lines().take_while(|l| !l.starts_with("## ")).filter(|l| l.starts_with(&format!("| {} |", Contender::Ebpf.udp_label()))).collect();
    assert_eq!(ebpf_rows.len(), 4, "one row per UDP workload of ebpf:\n{node_udp}");
    for row in ebpf_rows {
        assert!(row.ends_with("| 0 |"), "the node's own sockets received datagrams that the kernel UDP NAT should have carried: {row}");
    }
    // The kernel splice's counters were read around every workload of `ebpf`.
    let splice = report.split("## Kernel splice per workload").nth(1).expect("a kernel splice section");
    assert!(splice.contains("| sockgate `ebpf` (kernel TCP splice) | handover stall |"), "{splice}");
    let profile = report.split("## Where the time goes").nth(1).expect("a profile section");
    assert!(
        profile.contains("Samples of the whole machine by thread name") && profile.contains("The agent's own samples by symbol"),
        "no perf profile:\n{profile}"
    );
    let png = std::fs::read(dir.path().join("benchmarks.png")).expect("the chart beside the report");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "benchmarks.png is not a drawn PNG");
}
