//! The standard `OTEL_*` variables that decide whether and how traces are exported, read into
//! [`Settings`] by a pure function so that every accepted and refused value is tested.
//!
//! The OpenTelemetry SDK reads some variables itself (the endpoint's path, headers, timeout,
//! compression, `OTEL_BSP_*`, `OTEL_RESOURCE_ATTRIBUTES`); what it does not implement
//! (`OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER`) or would accept silently when wrong (the
//! protocol, the sampler) is decided here, so a typo stops the start with its name instead of
//! sending nothing.

use std::fmt;

/// The wire format spoken to the collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `http/protobuf`, the default (port 4318, `POST /v1/traces`).
    HttpProtobuf,
    /// `http/json`.
    HttpJson,
}

/// `OTEL_TRACES_SAMPLER` (and `_ARG` for the ratio ones).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedTraceIdRatio(f64),
}

/// What the variables ask for when tracing is on.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// The collector, as logged at start: scheme, host, port and path only (a user name,
    /// password or query in the URL is left out: it may hold a key).
    pub endpoint: String,
    pub protocol: Protocol,
    pub sampler: Sampler,
    /// `service.name` when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names it
    /// (the SDK's default would be `unknown_service`).
    pub default_service_name: Option<&'static str>,
}

/// A variable with a value we cannot honour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingsError {
    pub variable: &'static str,
    pub message: String,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.message)
    }
}

impl std::error::Error for SettingsError {}

/// The collector's default address when `OTEL_TRACES_EXPORTER=otlp` names no endpoint.
const DEFAULT_ENDPOINT: &str = "http://localhost:4318";

/// Reads the variables through `env`. `Ok(None)`: tracing is off (no endpoint and no
/// `OTEL_TRACES_EXPORTER=otlp`, or `OTEL_SDK_DISABLED=true`, or `OTEL_TRACES_EXPORTER=none`).
pub fn read(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Settings>, SettingsError> {
    let get = |name: &str| env(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    if let Some(disabled) = get("OTEL_SDK_DISABLED") {
        match disabled.to_ascii_lowercase().as_str() {
            "true" => return Ok(None),
            "false" => {}
            _ => return Err(error("OTEL_SDK_DISABLED", "must be true or false")),
        }
    }
    let exporter = match get("OTEL_TRACES_EXPORTER").map(|e| e.to_ascii_lowercase()) {
        None => None,
        Some(e) if e == "none" => return Ok(None),
        Some(e) if e == "otlp" => Some(()),
        Some(other) => {
            return Err(error(
                "OTEL_TRACES_EXPORTER",
                &format!("{other:?} is not supported (otlp or none)"),
            ));
        }
    };
    let endpoint = match get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        Some(url) => shown_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &url)?,
        None => match get("OTEL_EXPORTER_OTLP_ENDPOINT") {
            Some(url) => format!(
                "{}/v1/traces",
                shown_url("OTEL_EXPORTER_OTLP_ENDPOINT", &url)?.trim_end_matches('/')
            ),
            None if exporter.is_some() => format!("{DEFAULT_ENDPOINT}/v1/traces"),
            None => return Ok(None),
        },
    };
    let protocol_variable = if get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").is_some() {
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
    } else {
        "OTEL_EXPORTER_OTLP_PROTOCOL"
    };
    let protocol = match get(protocol_variable).as_deref() {
        None | Some("http/protobuf") => Protocol::HttpProtobuf,
        Some("http/json") => Protocol::HttpJson,
        Some("grpc") => {
            return Err(error(
                protocol_variable,
                "grpc is not supported: use http/protobuf (the collector's port 4318)",
            ));
        }
        Some(other) => {
            return Err(error(
                protocol_variable,
                &format!("{other:?} is not a protocol (http/protobuf or http/json)"),
            ));
        }
    };
    let sampler = sampler(get("OTEL_TRACES_SAMPLER"), get("OTEL_TRACES_SAMPLER_ARG"))?;
    let named = get("OTEL_SERVICE_NAME").is_some()
        || get("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|attributes| {
            attributes.split(',').any(|pair| {
                pair.split('=')
                    .next()
                    .is_some_and(|key| key.trim() == "service.name")
            })
        });
    Ok(Some(Settings {
        endpoint,
        protocol,
        sampler,
        default_service_name: (!named).then_some("realtime"),
    }))
}

fn error(variable: &'static str, message: &str) -> SettingsError {
    SettingsError {
        variable,
        message: message.to_owned(),
    }
}

/// `url` without user information and query, checked to be an `http` or `https` URL.
fn shown_url(variable: &'static str, url: &str) -> Result<String, SettingsError> {
    let invalid = || error(variable, "must be an http:// or https:// URL");
    let (scheme, rest) = url.split_once("://").ok_or_else(invalid)?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(invalid());
    }
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let host = authority.rsplit('@').next().unwrap_or("");
    if host.is_empty() {
        return Err(invalid());
    }
    Ok(format!("{}://{host}{path}", scheme.to_ascii_lowercase()))
}

fn sampler(name: Option<String>, arg: Option<String>) -> Result<Sampler, SettingsError> {
    let ratio = || -> Result<f64, SettingsError> {
        match &arg {
            None => Ok(1.0),
            Some(arg) => arg
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| error("OTEL_TRACES_SAMPLER_ARG", "must be a number from 0 to 1")),
        }
    };
    let name = name.map(|n| n.to_ascii_lowercase());
    Ok(match name.as_deref() {
        None | Some("parentbased_always_on") => Sampler::ParentBasedAlwaysOn,
        Some("always_on") => Sampler::AlwaysOn,
        Some("always_off") => Sampler::AlwaysOff,
        Some("traceidratio") => Sampler::TraceIdRatio(ratio()?),
        Some("parentbased_always_off") => Sampler::ParentBasedAlwaysOff,
        Some("parentbased_traceidratio") => Sampler::ParentBasedTraceIdRatio(ratio()?),
        Some(other) => {
            return Err(error(
                "OTEL_TRACES_SAMPLER",
                &format!(
                    "{other:?} is not supported (always_on, always_off, traceidratio, \
                     parentbased_always_on, parentbased_always_off, parentbased_traceidratio)"
                ),
            ));
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn read_with(vars: &[(&str, &str)]) -> Result<Option<Settings>, SettingsError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        read(&move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn off_unless_an_endpoint_or_the_otlp_exporter_is_named() {
        assert_eq!(read_with(&[]), Ok(None));
        assert_eq!(read_with(&[("OTEL_SERVICE_NAME", "x")]), Ok(None));
        assert_eq!(read_with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")]), Ok(None));
        let on = read_with(&[("OTEL_TRACES_EXPORTER", "otlp")]).unwrap().unwrap();
        assert_eq!(on.endpoint, "http://localhost:4318/v1/traces");
        for off in [
            [
                ("OTEL_SDK_DISABLED", "TRUE"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ],
            [
                ("OTEL_TRACES_EXPORTER", "none"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ],
        ] {
            assert_eq!(read_with(&off), Ok(None));
        }
    }

    #[test]
    fn the_traces_endpoint_is_used_as_given_and_the_general_one_gets_the_path() {
        let s = read_with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")])
            .unwrap()
            .unwrap();
        assert_eq!(s.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(s.protocol, Protocol::HttpProtobuf);
        assert_eq!(s.sampler, Sampler::ParentBasedAlwaysOn);
        assert_eq!(s.default_service_name, Some("realtime"));
        let s = read_with(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://traces.example/otlp/traces",
            ),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint, "https://traces.example/otlp/traces");
    }

    #[test]
    fn the_shown_endpoint_never_carries_credentials() {
        let s = read_with(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "https://user:s3cret@collector:4318/v1/traces?api_key=s3cret#x",
        )])
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint, "https://collector:4318/v1/traces");
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn bad_values_name_their_variable() {
        let cases = [
            (("OTEL_SDK_DISABLED", "yes"), "OTEL_SDK_DISABLED"),
            (("OTEL_TRACES_EXPORTER", "zipkin"), "OTEL_TRACES_EXPORTER"),
            (
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http"),
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            ),
            (("OTEL_TRACES_SAMPLER", "xray"), "OTEL_TRACES_SAMPLER"),
            (
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4318"),
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            ),
        ];
        for ((name, value), variable) in cases {
            let error =
                read_with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), (name, value)]).unwrap_err();
            assert_eq!(error.variable, variable, "{name}={value}");
        }
        let error = read_with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://c")]).unwrap_err();
        assert_eq!(error.variable, "OTEL_EXPORTER_OTLP_ENDPOINT");
    }

    #[test]
    fn samplers_and_their_ratio() {
        let with = |name: &str, arg: Option<&str>| {
            let mut vars = vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_TRACES_SAMPLER", name),
            ];
            if let Some(arg) = arg {
                vars.push(("OTEL_TRACES_SAMPLER_ARG", arg));
            }
            read_with(&vars).map(|s| s.unwrap().sampler)
        };
        assert_eq!(with("always_on", None), Ok(Sampler::AlwaysOn));
        assert_eq!(with("ALWAYS_OFF", None), Ok(Sampler::AlwaysOff));
        assert_eq!(
            with("traceidratio", Some("0.25")),
            Ok(Sampler::TraceIdRatio(0.25))
        );
        assert_eq!(with("traceidratio", None), Ok(Sampler::TraceIdRatio(1.0)));
        assert_eq!(
            with("parentbased_traceidratio", Some("0")),
            Ok(Sampler::ParentBasedTraceIdRatio(0.0))
        );
        assert_eq!(
            with("parentbased_always_off", None),
            Ok(Sampler::ParentBasedAlwaysOff)
        );
        for bad in ["1.5", "-0.1", "half", "NaN"] {
            assert_eq!(
                with("traceidratio", Some(bad)).unwrap_err().variable,
                "OTEL_TRACES_SAMPLER_ARG"
            );
        }
    }

    #[test]
    fn a_service_name_given_anywhere_is_kept() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        let name = |vars: &[(&str, &str)]| read_with(vars).unwrap().unwrap().default_service_name;
        assert_eq!(name(&[base, ("OTEL_SERVICE_NAME", "rt-eu")]), None);
        assert_eq!(
            name(&[base, ("OTEL_RESOURCE_ATTRIBUTES", "team=a, service.name=rt")]),
            None
        );
        assert_eq!(
            name(&[base, ("OTEL_RESOURCE_ATTRIBUTES", "service.namespace=x")]),
            Some("realtime")
        );
    }
}
