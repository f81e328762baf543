//! Measurements: HDR latency histograms and the server process's memory and
//! CPU, read from `/proc` while a scenario runs.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Kernel clock ticks per second for `/proc/<pid>/stat` times (USER_HZ is
/// 100 on every Linux architecture we run on).
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// Latencies in microseconds, 1 µs to 10 min at 3 significant digits.
#[derive(Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Latency(Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"))
    }
}

impl Latency {
    /// Records one latency.
    pub fn record(&mut self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 600_000_000);
        let _ = self.0.record(us);
    }

    /// p50/p99/p99.9/max in milliseconds.
    pub fn summary(&self) -> LatencySummary {
        let ms = |q: f64| self.0.value_at_quantile(q) as f64 / 1000.0;
        LatencySummary {
            samples: self.0.len(),
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: self.0.max() as f64 / 1000.0,
        }
    }
}

/// Quantiles of a latency histogram.
#[derive(Clone, Debug, Serialize)]
pub struct LatencySummary {
    /// Samples recorded.
    pub samples: u64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
}

/// Microseconds since the Unix epoch: a timestamp a receiver in another
/// task (or process on the same machine) can subtract from its own clock.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// User plus system CPU time a process has used, in seconds.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name (which may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, that is 11
    // and 12 after the state field.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLOCK_TICKS_PER_SEC)
}

/// Waits until the process uses less than `cores` of CPU over half a
/// second (it has worked off a backlog), or `max` has passed; returns
/// whether it went quiet.
pub async fn wait_quiet(pid: u32, cores: f64, max: Duration) -> bool {
    let deadline = Instant::now() + max;
    while Instant::now() < deadline {
        let Some(before) = cpu_secs(pid) else { return false };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(after) = cpu_secs(pid) else { return false };
        if (after - before) / 0.5 < cores {
            return true;
        }
    }
    false
}

/// What the sampler saw of the server during a scenario.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServerUsage {
    /// Resident memory at the start, KiB.
    pub rss_start_kib: u64,
    /// Highest resident memory seen, KiB.
    pub rss_peak_kib: u64,
    /// Resident memory at the end, KiB.
    pub rss_end_kib: u64,
    /// CPU seconds the server used during the scenario.
    pub cpu_secs: f64,
    /// Average cores busy (CPU seconds per wall second).
    pub cpu_cores: f64,
}

/// Samples a process's RSS every 100 ms until stopped.
pub struct Sampler {
    pid: Option<u32>,
    started: Instant,
    cpu_start: f64,
    usage: Arc<Mutex<ServerUsage>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Sampler {
    /// Starts sampling `pid` (no-op without one).
    pub fn start(pid: Option<u32>) -> Sampler {
        let usage = Arc::new(Mutex::new(ServerUsage::default()));
        let mut cpu_start = 0.0;
        let task = pid.map(|pid| {
            let rss = rss_kib(pid).unwrap_or(0);
            cpu_start = cpu_secs(pid).unwrap_or(0.0);
            {
                let mut u = usage.lock().unwrap_or_else(|e| e.into_inner());
                u.rss_start_kib = rss;
                u.rss_peak_kib = rss;
            }
            let usage = usage.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tick.tick().await;
                    let Some(rss) = rss_kib(pid) else { return };
                    let mut u = usage.lock().unwrap_or_else(|e| e.into_inner());
                    u.rss_peak_kib = u.rss_peak_kib.max(rss);
                }
            })
        });
        Sampler {
            pid,
            started: Instant::now(),
            cpu_start,
            usage,
            task,
        }
    }

    /// Stops sampling and returns what was seen.
    pub fn stop(mut self) -> ServerUsage {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        let mut u = self.usage.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(pid) = self.pid {
            u.rss_end_kib = rss_kib(pid).unwrap_or(0);
            u.rss_peak_kib = u.rss_peak_kib.max(u.rss_end_kib);
            u.cpu_secs = cpu_secs(pid).unwrap_or(self.cpu_start) - self.cpu_start;
            u.cpu_cores = u.cpu_secs / self.started.elapsed().as_secs_f64().max(1e-9);
        }
        u
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_samples() {
        let mut l = Latency::default();
        for ms in 1..=100u64 {
            l.record(Duration::from_millis(ms));
        }
        let s = l.summary();
        assert_eq!(s.samples, 100);
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p99_ms - 99.0).abs() < 0.1, "{s:?}");
        assert!((s.max_ms - 100.0).abs() < 0.1, "{s:?}");
    }

    #[test]
    fn this_process_has_memory_and_cpu() {
        let me = std::process::id();
        assert!(rss_kib(me).is_some_and(|k| k > 0));
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(cpu_secs(me).is_some_and(|s| s > 0.0));
    }
}
