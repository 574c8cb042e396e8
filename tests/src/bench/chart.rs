//! benchmarks.png: throughput and p99 latency per contender (medians), drawn
//! by gnuplot (Debian's gnuplot-nox, installed by `cargo xtask setup`).
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::metrics::{Metric, Results};
use super::Config;

/// An empty panel.
const NOT_MEASURED: &str =
    "unset logscale y\nset xrange [0:1]\nset yrange [0:1]\nset label 1 \"not measured in this run\" at graph 0.5,0.5 center\nplot NaN notitle\nunset label 1";

/// GiB/s to Gbit/s, so that both throughput figures share one axis.
const GBIT_PER_GIB: f64 = 8.0 * 1.073_741_824;

pub fn draw(config: &Config, results: &Results, title: &str, png: &Path) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let value = |m: Metric, c| results.median(m, c);
    let cell = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "?".into());
    let (mut throughput, mut latency) = (String::new(), String::new());
    for c in &config.contenders {
        let label = c.label().replace('`', "").replace('"', "");
        let _ = writeln!(
            throughput,
            "\"{label}\" {} {} {}",
            cell(value(Metric::Bulk, *c).map(|v| v * GBIT_PER_GIB)),
            cell(value(Metric::Iperf1Up, *c)),
            cell(value(Metric::Iperf8Up, *c))
        );
        let _ = writeln!(
            latency,
            "\"{label}\" {} {}",
            cell(value(Metric::PingPongP99, *c)),
            cell(value(Metric::RedisP99, *c).map(|ms| ms * 1e3))
        );
    }
    // gnuplot refuses a plot without a single point: such a panel (a run without those workloads) says so instead.
    let none_of = |metrics: &[Metric]| !config.contenders.iter().any(|c| metrics.iter().any(|m| value(*m, *c).is_some()));
    let no_throughput = none_of(&[Metric::Bulk, Metric::Iperf1Up, Metric::Iperf8Up]);
    let no_latency = none_of(&[Metric::PingPongP99, Metric::RedisP99]);
    std::fs::write(dir.path().join("throughput.dat"), throughput)?;
    std::fs::write(dir.path().join("latency.dat"), latency)?;
    let script = format!(
        r#"set terminal pngcairo size 1500,620 font "sans,10"
set output "{png}"
set datafile missing "?"
set multiplot layout 1,2 title "{title}"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set xtics rotate by -25 scale 0
set key outside bottom center horizontal
set title "Throughput (higher is better)"
set ylabel "Gbit/s"
set yrange [0:*]
{throughput_plot}
set title "p99 latency (lower is better; logarithmic)"
set ylabel "microseconds"
set logscale y
set yrange [10:*]
{latency_plot}
unset multiplot
"#,
        png = png.display(),
        throughput_plot = if no_throughput {
            NOT_MEASURED.to_string()
        } else {
            format!(
                r#"plot "{}/throughput.dat" using 2:xtic(1) title "checksummed (per direction)", "" using 3 title "iperf3 -P 1", "" using 4 title "iperf3 -P 8""#,
                dir.path().display()
            )
        },
        latency_plot = if no_latency {
            NOT_MEASURED.to_string()
        } else {
            format!(
                r#"plot "{}/latency.dat" using 2:xtic(1) title "64-byte ping-pong", "" using 3 title "redis-benchmark GET""#,
                dir.path().display()
            )
        },
    );
    let mut gnuplot = Command::new("gnuplot")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting gnuplot (cargo xtask setup installs gnuplot-nox)")?;
    gnuplot.stdin.take().context("gnuplot's stdin")?.write_all(script.as_bytes())?;
    let out = gnuplot.wait_with_output()?;
    if !out.status.success() {
        bail!("gnuplot failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let head = std::fs::read(png).with_context(|| format!("gnuplot wrote no {}", png.display()))?;
    if !head.starts_with(b"\x89PNG") {
        bail!("{} is not a PNG", png.display());
    }
    Ok(())
}
