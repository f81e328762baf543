//! What a scenario measured: printed for people, appended as a JSON line
//! for machines, and gathered into one comparison table across servers.

use crate::ServerArgs;
use crate::stats::{LatencySummary, ServerUsage};
use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;

/// One scenario's result against one server.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Outcome {
    /// The server's label.
    #[serde(default)]
    pub server: String,
    /// The scenario's name.
    pub scenario: String,
    /// Named numbers, e.g. `logins_per_sec` or `latency_p99_ms`.
    pub metrics: BTreeMap<String, f64>,
    /// Operations that failed.
    pub errors: u64,
    /// Free-form remarks (what limited the run, e.g.).
    #[serde(default)]
    pub notes: Vec<String>,
}

impl Outcome {
    /// An empty outcome for `scenario`.
    pub fn new(scenario: &str) -> Outcome {
        Outcome {
            scenario: scenario.to_owned(),
            ..Outcome::default()
        }
    }

    /// Sets one metric.
    pub fn set(&mut self, name: &str, value: f64) {
        self.metrics.insert(name.to_owned(), value);
    }

    /// Sets `<prefix>_p50_ms` and the other quantiles.
    pub fn latency(&mut self, prefix: &str, s: &LatencySummary) {
        self.set(&format!("{prefix}_p50_ms"), s.p50_ms);
        self.set(&format!("{prefix}_p99_ms"), s.p99_ms);
        self.set(&format!("{prefix}_p999_ms"), s.p999_ms);
    }

    /// Records the server's memory and CPU.
    pub fn usage(&mut self, u: &ServerUsage) {
        if u.rss_peak_kib > 0 {
            self.set("server_rss_peak_mib", u.rss_peak_kib as f64 / 1024.0);
            self.set("server_cpu_cores", u.cpu_cores);
        }
    }
}

/// Prints the outcome and appends it to `--out`.
pub fn emit(server: &ServerArgs, mut o: Outcome) -> anyhow::Result<()> {
    o.server = server.label.clone();
    let metrics: Vec<String> = o
        .metrics
        .iter()
        .map(|(k, v)| format!("{k}={}", fmt(*v)))
        .collect();
    println!(
        "[{}] {}: {} errors={}{}",
        o.server,
        o.scenario,
        metrics.join(" "),
        o.errors,
        if o.notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", o.notes.join("; "))
        }
    );
    if let Some(path) = &server.out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("open {}", path.display()))?;
        writeln!(f, "{}", serde_json::to_string(&o)?)?;
    }
    Ok(())
}

fn fmt(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Whether more of a metric is better (throughputs) or worse (latencies,
/// memory, CPU, errors).
fn higher_is_better(metric: &str) -> bool {
    metric.ends_with("per_sec")
        || metric.contains("sustained")
        || ["_alive", "_held", "_completed", "_timed"]
            .iter()
            .any(|end| metric.ends_with(end))
}

/// A Markdown table: one row per (scenario, metric), one column per server,
/// then how many times better `ours` is than each other server (above 1:
/// ours is better, whichever direction the metric runs).
pub fn table(files: &[PathBuf], ours: &str) -> anyhow::Result<String> {
    let mut all: Vec<Outcome> = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| format!("read {}", f.display()))?;
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            all.push(serde_json::from_str(line).with_context(|| format!("{}:{}", f.display(), i + 1))?);
        }
    }
    let mut servers: Vec<String> = Vec::new();
    for o in &all {
        if !servers.contains(&o.server) {
            servers.push(o.server.clone());
        }
    }
    // Our column first.
    servers.sort_by_key(|s| s != ours);
    // (scenario, metric) -> server -> value; the last run of a scenario wins.
    let mut rows: BTreeMap<(String, String), BTreeMap<String, f64>> = BTreeMap::new();
    let mut order: Vec<(String, String)> = Vec::new();
    for o in &all {
        let mut metrics: Vec<(String, f64)> = o.metrics.iter().map(|(k, v)| (k.clone(), *v)).collect();
        metrics.push(("errors".into(), o.errors as f64));
        for (m, v) in metrics {
            let key = (o.scenario.clone(), m);
            if !order.contains(&key) {
                order.push(key.clone());
            }
            rows.entry(key).or_default().insert(o.server.clone(), v);
        }
    }
    let others: Vec<&String> = servers.iter().filter(|s| *s != ours).collect();
    let mut out = String::new();
    out.push_str("| scenario | metric |");
    for s in &servers {
        out.push_str(&format!(" {s} |"));
    }
    for o in &others {
        out.push_str(&format!(" {ours} vs {o} |"));
    }
    out.push('\n');
    out.push_str(&"|---".repeat(2 + servers.len() + others.len()));
    out.push_str("|\n");
    for key in order {
        let vals = &rows[&key];
        out.push_str(&format!("| {} | {} |", key.0, key.1));
        for s in &servers {
            out.push_str(&format!(
                " {} |",
                vals.get(s).map(|v| fmt(*v)).unwrap_or_else(|| "–".into())
            ));
        }
        for o in &others {
            let ratio = match (vals.get(ours), vals.get(*o)) {
                (Some(a), Some(b)) if *a > 0.0 && *b > 0.0 => {
                    let r = if higher_is_better(&key.1) { a / b } else { b / a };
                    format!("{r:.1}x")
                }
                _ => "–".into(),
            };
            out.push_str(&format!(" {ratio} |"));
        }
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_say_how_many_times_better_ours_is() {
        let dir = tempfile_dir();
        let f = dir.join("r.jsonl");
        let mk = |server: &str, tput: f64, p99: f64| {
            let mut o = Outcome::new("one2one");
            o.server = server.into();
            o.set("sustained_msgs_per_sec", tput);
            o.set("latency_p99_ms", p99);
            serde_json::to_string(&o).expect("serializes")
        };
        std::fs::write(
            &f,
            format!("{}\n{}\n", mk("chorus", 10000.0, 2.0), mk("prosody", 200.0, 8.0)),
        )
        .expect("write");
        let t = table(&[f], "chorus").expect("table");
        let row = |m: &str| t.lines().find(|l| l.contains(m)).expect("row").to_owned();
        assert!(row("sustained_msgs_per_sec").ends_with("| 50.0x |"), "{t}");
        assert!(row("latency_p99_ms").ends_with("| 4.0x |"), "{t}");
        assert!(
            t.lines()
                .next()
                .expect("header")
                .contains("| chorus | prosody | chorus vs prosody |")
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("chorus-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }
}
