//! Logging and tracing set-up: the `fmt` layer (text or JSON, filtered by
//! `log.level`) and, when `telemetry.otlp_endpoint` is set, an
//! OpenTelemetry layer exporting Chorus's spans over OTLP/gRPC in batches,
//! tagged with the node's id and site. Trace context crosses nodes with
//! routed stanzas (`chorus_cluster::trace_ctx`).

use anyhow::Context as _;
use chorus_core::config::Config;
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Crates whose spans are exported.
const TRACED: [&str; 5] = [
    "chorus_xmpp",
    "chorus_cluster",
    "chorus_archive",
    "chorus_server",
    "chorus_admin",
];

/// Keeps the tracer provider alive; flushes spans on drop.
pub struct Telemetry(Option<SdkTracerProvider>);

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.0.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("warning: flushing traces failed: {e}");
        }
    }
}

/// The layer keeping the last warnings and errors for the console.
fn recent<S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>>()
-> impl tracing_subscriber::Layer<S> {
    crate::recent_log::RecentLayer.with_filter(tracing_subscriber::filter::LevelFilter::WARN)
}

/// Installs the global subscriber. Must run inside the Tokio runtime (the
/// exporter's batches run on it).
pub fn init(config: &Config) -> anyhow::Result<Telemetry> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let fmt = if config.log.format == "json" {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    let t = &config.telemetry;
    if t.otlp_endpoint.is_empty() {
        tracing_subscriber::registry()
            .with(fmt.with_filter(filter))
            .with(recent())
            .init();
        return Ok(Telemetry(None));
    }
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(t.otlp_endpoint.clone())
        .build()
        .context("telemetry.otlp_endpoint: cannot build the OTLP exporter")?;
    let processor = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
        exporter,
        opentelemetry_sdk::runtime::Tokio,
    )
    .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(t.service_name.clone())
        .with_attributes([
            KeyValue::new("service.instance.id", config.cluster.node_id.clone()),
            KeyValue::new("chorus.site", config.cluster.site.clone()),
        ])
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            t.sample_ratio,
        ))))
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("chorus");
    let targets = TRACED
        .iter()
        .fold(tracing_subscriber::filter::Targets::new(), |f, t| {
            f.with_target(*t, tracing::Level::INFO)
        });
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(targets);
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(recent())
        .with(otel)
        .init();
    tracing::info!(endpoint = %t.otlp_endpoint, ratio = t.sample_ratio, "exporting traces over OTLP");
    Ok(Telemetry(Some(provider)))
}
