//! The last warnings and errors the node logged, for the console's health
//! page ("last errors"): a tracing layer that keeps the newest
//! [`LINES_MAX`] WARN and ERROR events (time, level, where, message and
//! fields, each bounded) in memory.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// Events kept.
pub const LINES_MAX: usize = 50;
/// Characters of one event's text kept.
const TEXT_MAX: usize = 500;

static RECENT: Mutex<VecDeque<serde_json::Value>> = Mutex::new(VecDeque::new());

/// Collects an event's message and fields as one line.
struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.0.len() >= TEXT_MAX {
            return;
        }
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?} ");
        } else {
            let _ = write!(self.0, "{}={value:?} ", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
            self.0.push(' ');
        } else {
            self.record_debug(field, &value);
        }
    }
}

/// The layer; install it with a WARN level filter.
pub struct RecentLayer;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RecentLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut text = Text(String::new());
        event.record(&mut text);
        let mut line: String = text.0.trim_end().chars().take(TEXT_MAX).collect();
        if line.is_empty() {
            line.push('-');
        }
        let meta = event.metadata();
        let entry = serde_json::json!({
            "at_ms": chorus_core::time::now_millis(),
            "level": meta.level().as_str(),
            "target": meta.target(),
            "text": line,
        });
        let mut recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() >= LINES_MAX {
            recent.pop_front();
        }
        recent.push_back(entry);
    }
}

/// The kept events, newest first.
pub fn lines() -> serde_json::Value {
    let recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    serde_json::Value::Array(recent.iter().rev().cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn warnings_and_errors_are_kept_newest_first_and_bounded() {
        let subscriber = tracing_subscriber::registry()
            .with(RecentLayer.with_filter(tracing_subscriber::filter::LevelFilter::WARN));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("not kept");
            for i in 0..(LINES_MAX + 5) {
                tracing::warn!(peer = "b1", "link down {i}");
            }
            tracing::error!(error = "disk full", "cannot write");
        });
        let v = lines();
        let a = v.as_array().expect("array");
        assert_eq!(a.len(), LINES_MAX);
        assert_eq!(a[0]["level"], "ERROR");
        assert!(a[0]["text"].as_str().expect("text").contains("cannot write"));
        assert!(a[0]["text"].as_str().expect("text").contains("disk full"));
        assert!(
            a.iter()
                .all(|l| !l["text"].as_str().unwrap_or("").contains("not kept"))
        );
    }
}
