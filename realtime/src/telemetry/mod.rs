//! Logs and OpenTelemetry traces: the process's one `tracing` subscriber.
//!
//! Logs go to stderr, as text or one JSON object per line (`LOG_FORMAT=json`), filtered by
//! `RUST_LOG` or `LOG_LEVEL`. Traces are exported over OTLP/HTTP when the standard `OTEL_*`
//! variables ask for it ([`settings`]); otherwise nothing is built: no exporter, no thread, and
//! the spans below are disabled at their call sites.
//!
//! The traced spans all use the target [`TARGET`]. They are kept out of the logs (which stay
//! as they were) and are the only thing the OpenTelemetry layer sees, so events in them never
//! become span events (an event may name a topic or a table; attributes are chosen one by one):
//!
//! | span | where | attributes |
//! |---|---|---|
//! | `connection` | one WebSocket, from upgrade to close | `protocol.version`, `role`, `close.reason`, `close.code` |
//! | `join` | a `phx_join`, child of `connection` | `channel.topic`, `outcome`, `reason` |
//! | `authorize` | a private channel's check, child of `join` (or of `rest_broadcast`) | `authorization.mode`, `outcome` |
//! | `replication.transaction` | one decoded transaction handed on | `changes`, `database_broadcasts`, `commit_lsn`, `backlog`, `overflowed` |
//! | `changes.dispatch` | one transaction's delivery to Postgres Changes subscribers | `changes`, `commit_lsn`, `frames` |
//! | `authorize` | a table's row check for one delivery, child of `changes.dispatch` | `authorization.mode`, `claim_groups`, `changes`, `visible` |
//! | `rest_broadcast` | `POST …/api/broadcast…` | `http.route`, `messages`, `http.response.status_code` |

mod chain;
mod log_ids;
pub mod settings;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Registry, fmt};

pub use chain::{Chain, chain};
pub use settings::{Settings, SettingsError};

/// The target of every span that is exported (see the module comment).
pub const TARGET: &str = "realtime::telemetry::span";

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    /// One JSON object per line; inside a traced span it carries `trace_id` and `span_id`.
    Json,
}

/// Why tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("cannot set up the OTLP exporter")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
}

/// The installed subscriber's exporter, if any: [`Telemetry::shutdown`] sends what is left.
#[must_use = "call shutdown() before the process exits, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still queued and stops the exporter thread (bounded by
    /// `OTEL_BSP_EXPORT_TIMEOUT`). Call it outside the async runtime: it blocks.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!(
                "warning: the last traces may not have been exported: {}",
                chain(&error)
            );
        }
    }
}

/// Installs the process's subscriber: logs by `filter` in `format`, and traces when `env`
/// (the `OTEL_*` variables) asks for them.
pub fn install(
    filter: EnvFilter,
    format: LogFormat,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Telemetry, TelemetryError> {
    let settings = settings::read(env)?;
    // The traced spans are for the exporter only: off in the logs, whatever RUST_LOG says.
    let filter = match format!("{TARGET}=off").parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let exporting = settings.is_some();
    let logs = match format {
        LogFormat::Text => fmt::layer().with_writer(std::io::stderr).boxed(),
        LogFormat::Json if exporting => fmt::layer()
            .json()
            .event_format(log_ids::JsonWithIds(fmt::format().json()))
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => fmt::layer().json().with_writer(std::io::stderr).boxed(),
    };
    let logs: Box<dyn Layer<Registry> + Send + Sync> = logs.with_filter(filter).boxed();
    // Layered one by one: a `Vec` of layers would not pass the dispatch on to `TraceIds`.
    let subscriber = tracing_subscriber::registry().with(logs);
    let provider = match &settings {
        None => {
            subscriber.init();
            None
        }
        Some(settings) => {
            let provider = provider(settings)?;
            let tracer = provider.tracer("realtime");
            let traced = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                // Code locations and thread names say nothing an operator needs.
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .and_then(log_ids::TraceIds::default())
                .with_filter(Targets::new().with_target(TARGET, tracing::Level::INFO));
            subscriber.with(traced).init();
            Some(provider)
        }
    };
    if let Some(settings) = &settings {
        tracing::info!(
            endpoint = %settings.endpoint,
            protocol = ?settings.protocol,
            sampler = ?settings.sampler,
            "exporting traces over OTLP"
        );
    }
    Ok(Telemetry { provider })
}

fn provider(settings: &Settings) -> Result<SdkTracerProvider, TelemetryError> {
    // HTTPS to the collector uses the ring provider, as every other TLS client of the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let protocol = match settings.protocol {
        settings::Protocol::HttpProtobuf => opentelemetry_otlp::Protocol::HttpBinary,
        settings::Protocol::HttpJson => opentelemetry_otlp::Protocol::HttpJson,
    };
    // The endpoint, headers, timeout and compression come from the OTEL_EXPORTER_OTLP_*
    // variables, read by the exporter itself.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .build()
        .map_err(TelemetryError::Exporter)?;
    let mut resource = Resource::builder().with_attributes([
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("process.runtime.name", "rust"),
    ]);
    if let Some(name) = settings.default_service_name {
        resource = resource.with_service_name(name);
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler(settings.sampler))
        .with_resource(resource.build())
        .build())
}

fn sampler(setting: settings::Sampler) -> Sampler {
    use settings::Sampler as S;
    match setting {
        S::AlwaysOn => Sampler::AlwaysOn,
        S::AlwaysOff => Sampler::AlwaysOff,
        S::TraceIdRatio(ratio) => Sampler::TraceIdRatioBased(ratio),
        S::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        S::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        S::ParentBasedTraceIdRatio(ratio) => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
        }
    }
}
