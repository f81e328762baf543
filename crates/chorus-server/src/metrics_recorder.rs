//! The Prometheus recorder behind `/metrics`, and its upkeep.
//!
//! The exporter keeps every histogram sample in a bucket until something
//! drains it into the histogram's summary (a bounded sketch over a
//! rolling window). `install_recorder` leaves the draining to the caller;
//! the node used to drain only when `/metrics` was scraped, so a node that
//! nobody scraped kept every sample it ever recorded (2.4 per message,
//! about 17 bytes each with their blocks: 0.7 GiB an hour at 5,000 msg/s)
//! until it ran out of memory, and a scrape after a long gap drained
//! millions of samples on a runtime worker. A task now drains them every
//! second, on a blocking thread.

use anyhow::Context as _;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use std::time::Duration;
use tokio::sync::watch;

/// How often histogram samples are drained into their summaries.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// Builds the node's recorder with its upkeep running and installs it as
/// the process's recorder; returns the handle that renders `/metrics`.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let (recorder, handle, _rounds) = start(PrometheusBuilder::new(), UPKEEP_EVERY);
    metrics::set_global_recorder(recorder).context("install metrics recorder")?;
    Ok(handle)
}

/// Builds a recorder and starts its upkeep (every `every`, on the current
/// runtime, until the runtime stops); the receiver counts the rounds done.
fn start(
    builder: PrometheusBuilder,
    every: Duration,
) -> (PrometheusRecorder, PrometheusHandle, watch::Receiver<u64>) {
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    let upkeep = handle.clone();
    let (rounds, rounds_rx) = watch::channel(0u64);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let h = upkeep.clone();
            // Draining is work proportional to the samples since the last
            // round: not on a worker that sessions wait for.
            if tokio::task::spawn_blocking(move || h.run_upkeep()).await.is_err() {
                return;
            }
            rounds.send_modify(|n| *n += 1);
        }
    });
    (recorder, handle, rounds_rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's resident memory, in KiB.
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn histogram_samples_do_not_pile_up_without_a_scrape() {
        let (recorder, handle, mut rounds) = start(PrometheusBuilder::new(), Duration::from_millis(10));
        // A name only this test records (not one of the node's metrics).
        let name = "test_wait_seconds";
        let before = rss_kib();
        // Two million samples (about 33 MiB as they wait undrained), in
        // chunks with an upkeep round after each, as a busy node records
        // them between two rounds; nothing scrapes.
        for chunk in 0..40u32 {
            metrics::with_local_recorder(&recorder, || {
                let h = metrics::histogram!(name);
                for i in 0..50_000u32 {
                    h.record(f64::from(chunk * 50_000 + i));
                }
            });
            let seen = *rounds.borrow_and_update();
            while *rounds.borrow_and_update() < seen + 2 {
                rounds.changed().await.expect("upkeep runs");
            }
        }
        let grown_kib = rss_kib().saturating_sub(before);
        assert!(
            grown_kib < 6 * 1024,
            "{grown_kib} KiB more after two million samples: they piled up undrained"
        );
        // The samples reached the summary (which leaves out the odd one
        // recorded just before its rolling bucket began).
        let text = handle.render();
        let count: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}_count ")))
            .and_then(|v| v.trim().parse().ok())
            .expect("a count");
        assert!(count > 1_000_000.0, "{text}");
    }
}
