//! What sockgate's kernel TCP splice did during a workload, from the agent's
//! `/metrics` read before and after it: connections spliced in the kernel,
//! kept on splice(2) by reason, how the handovers went, and the payload
//! bytes the TC program itself forwarded. Tells whether a workload's `ebpf`
//! figures measure the kernel path or the splice(2) fallback.
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpliceCounters {
    pub spliced: u64,
    pub quiet_handovers: u64,
    pub held_handovers: u64,
    /// Kept on splice(2), by reason (only reasons that occurred).
    pub fallbacks: BTreeMap<String, u64>,
    /// Payload bytes the kernel forwarded, both directions, all listeners.
    pub kernel_bytes: u64,
}

impl SpliceCounters {
    /// From the agent's /metrics text; None if it has no kernel splice counters.
    pub fn parse(metrics: &str) -> Option<SpliceCounters> {
        let mut c = SpliceCounters::default();
        let mut found = false;
        for line in metrics.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else { continue };
            let Ok(value) = value.trim().parse::<f64>() else { continue };
            let value = value as u64;
            let label = |key: &str| name.split_once(&format!("{key}=\"")).and_then(|(_, rest)| rest.split_once('"')).map(|(v, _)| v.to_string());
            match name.split('{').next().unwrap_or("") {
                "sockgate_kernel_splice_connections_total" => {
                    c.spliced = value;
                    found = true;
                }
                "sockgate_kernel_splice_handovers_total" => match label("kind").as_deref() {
                    Some("quiet") => c.quiet_handovers = value,
                    Some("held") => c.held_handovers = value,
                    _ => {}
                },
                "sockgate_kernel_splice_fallbacks_total" => {
                    if let Some(reason) = label("reason") {
                        c.fallbacks.insert(reason, value);
                    }
                }
                "sockgate_kernel_splice_bytes_from_clients_total" | "sockgate_kernel_splice_bytes_to_clients_total" => c.kernel_bytes += value,
                _ => {}
            }
        }
        found.then_some(c)
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &SpliceCounters) -> SpliceCounters {
        SpliceCounters {
            spliced: self.spliced.saturating_sub(earlier.spliced),
            quiet_handovers: self.quiet_handovers.saturating_sub(earlier.quiet_handovers),
            held_handovers: self.held_handovers.saturating_sub(earlier.held_handovers),
            fallbacks: self
                .fallbacks
                .iter()
                .map(|(r, n)| (r.clone(), n.saturating_sub(earlier.fallbacks.get(r).copied().unwrap_or(0))))
                .filter(|(_, n)| *n > 0)
                .collect(),
            kernel_bytes: self.kernel_bytes.saturating_sub(earlier.kernel_bytes),
        }
    }

    pub fn add(&mut self, other: &SpliceCounters) {
        self.spliced += other.spliced;
        self.quiet_handovers += other.quiet_handovers;
        self.held_handovers += other.held_handovers;
        for (r, n) in &other.fallbacks {
            *self.fallbacks.entry(r.clone()).or_default() += n;
        }
        self.kernel_bytes += other.kernel_bytes;
    }

    pub fn kept(&self) -> u64 {
        self.fallbacks.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "# HELP sockgate_kernel_splice_connections_total x\n\
        sockgate_kernel_splice_connections_total 7\n\
        sockgate_kernel_splice_handovers_total{kind=\"quiet\"} 5\n\
        sockgate_kernel_splice_handovers_total{kind=\"held\"} 2\n\
        sockgate_kernel_splice_fallbacks_total{reason=\"busy\"} 3\n\
        sockgate_kernel_splice_fallbacks_total{reason=\"closing\"} 0\n\
        sockgate_kernel_splice_bytes_from_clients_total{port=\"9000\"} 100\n\
        sockgate_kernel_splice_bytes_to_clients_total{port=\"9000\"} 50\n\
        sockgate_connections_total 9\n";

    #[test]
    fn parses_the_agents_counters_and_differences_them() {
        let now = SpliceCounters::parse(METRICS).unwrap();
        assert_eq!((now.spliced, now.quiet_handovers, now.held_handovers, now.kernel_bytes), (7, 5, 2, 150));
        assert_eq!(now.fallbacks["busy"], 3);
        let d = now.since(&SpliceCounters { spliced: 2, fallbacks: [("busy".to_string(), 1)].into(), ..Default::default() });
        assert_eq!(d.spliced, 5);
        assert_eq!(d.fallbacks, [("busy".to_string(), 2)].into());
        assert_eq!(d.kept(), 2);
        assert!(SpliceCounters::parse("sockgate_connections_total 9\n").is_none());
    }
}
