//! `[telemetry]` and `[muc]`: the OpenTelemetry exporter and the group
//! room service, each a small section with its defaults.

use serde::{Deserialize, Serialize};

/// `[telemetry]`: OpenTelemetry traces over OTLP/gRPC (off by default).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/gRPC collector endpoint, e.g. `http://otel-collector:4317`;
    /// empty turns tracing off.
    pub otlp_endpoint: String,
    /// Fraction of traces sampled (0.0 to 1.0).
    pub sample_ratio: f64,
    /// `service.name` of the spans.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: String::new(),
            sample_ratio: 1.0,
            service_name: "chorus".into(),
        }
    }
}

/// `[muc]`: group rooms (XEP-0045), served by every node of the cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MucConfig {
    /// Serve rooms at all.
    pub enabled: bool,
    /// The service's domain; empty means `conference.<server.domain>`.
    pub domain: String,
    /// Whether any user may create rooms (otherwise only existing rooms work).
    pub create: bool,
    /// Occupants per room.
    pub occupants_max: usize,
    /// Messages of discussion history a joining occupant may ask for.
    pub history_max: usize,
    /// Rooms a node keeps.
    pub rooms_max: usize,
}

impl Default for MucConfig {
    fn default() -> Self {
        MucConfig {
            enabled: true,
            domain: String::new(),
            create: true,
            occupants_max: 500,
            history_max: 50,
            rooms_max: 10_000,
        }
    }
}
