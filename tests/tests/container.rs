//! The container files, checked without a container engine: `docker/compose.yaml` parses,
//! references only files that exist and describes the deployment (Postgres with logical
//! replication and a health check, the service with its health check, a `cluster` profile);
//! `docker/Dockerfile` builds in stages and runs unprivileged; and the image's command,
//! environment and health check, taken from those files, work when run as local processes
//! against a local Postgres.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use realtime::config::DatabaseConfig;
use realtime::embedded::{Options, StopMode};
use realtime_tests::auth::{SECRET, token};
use realtime_tests::free_port;
use realtime_tests::{Process, run_realtime, start_postgres};
use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository root")
        .to_owned()
}

fn docker_dir() -> PathBuf {
    repo().join("docker")
}

fn compose() -> Yaml {
    let path = docker_dir().join("compose.yaml");
    let text = std::fs::read_to_string(&path).expect("read docker/compose.yaml");
    let mut docs = YamlLoader::load_from_str(&text).expect("docker/compose.yaml is YAML");
    assert_eq!(docs.len(), 1, "one document");
    docs.remove(0)
}

fn service<'a>(compose: &'a Yaml, name: &str) -> &'a Yaml {
    let service = &compose["services"][name];
    assert!(!service.is_badvalue(), "no service {name:?}");
    service
}

fn strings(list: &Yaml) -> Vec<String> {
    list.as_vec()
        .unwrap_or_else(|| panic!("expected a list, got {list:?}"))
        .iter()
        .map(scalar)
        .collect()
}

/// A scalar as compose reads it (numbers and booleans become their text).
fn scalar(value: &Yaml) -> String {
    match value {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

fn profiles(service: &Yaml) -> Vec<String> {
    if service["profiles"].is_badvalue() {
        Vec::new()
    } else {
        strings(&service["profiles"])
    }
}

/// Compose's variable interpolation: `${NAME}`, `${NAME:-default}`, `${NAME-default}`,
/// `${NAME:?error}`, `${NAME?error}` and `$$`.
fn interpolate(text: &str, vars: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        let Some(inner) = rest.strip_prefix('{') else {
            return Err(format!("unbraced variable in {text:?}"));
        };
        let end = inner
            .find('}')
            .ok_or_else(|| format!("unclosed ${{ in {text:?}"))?;
        let expression = &inner[..end];
        rest = &inner[end + 1..];
        let name_end = expression
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(expression.len());
        let (name, modifier) = expression.split_at(name_end);
        let value = vars(name);
        let value = match modifier {
            "" => value.unwrap_or_default(),
            m if m.starts_with(":-") => value
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| m[2..].to_owned()),
            m if m.starts_with('-') => value.unwrap_or_else(|| m[1..].to_owned()),
            m if m.starts_with(":?") => value
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("{name}: {}", &m[2..]))?,
            m if m.starts_with('?') => value.ok_or_else(|| format!("{name}: {}", &m[1..]))?,
            m => return Err(format!("unknown modifier {m:?} in {text:?}")),
        };
        out.push_str(&value);
    }
    out.push_str(rest);
    Ok(out)
}

/// The bind-mount sources of a service (`source:target[:mode]` with a relative or absolute
/// source), resolved against the compose file's folder, with their targets.
fn bind_mounts(service: &Yaml) -> Vec<(PathBuf, String)> {
    if service["volumes"].is_badvalue() {
        return Vec::new();
    }
    strings(&service["volumes"])
        .into_iter()
        .filter(|v| v.starts_with('.') || v.starts_with('/'))
        .map(|v| {
            let mut parts = v.split(':');
            let source = docker_dir().join(parts.next().unwrap_or_default());
            let target = parts.next().expect("a mount target").to_owned();
            (source, target)
        })
        .collect()
}

#[test]
fn compose_file_describes_the_deployment() {
    let compose = compose();

    // Postgres: logical replication, a bounded slot, a health check the service waits for.
    let db = service(&compose, "db");
    let command = strings(&db["command"]);
    let settings: Vec<&str> = command
        .windows(2)
        .filter(|w| w[0] == "-c")
        .map(|w| w[1].as_str())
        .collect();
    assert!(settings.contains(&"wal_level=logical"), "{command:?}");
    assert!(
        settings.iter().any(|s| s.starts_with("max_slot_wal_keep_size=")),
        "{command:?}"
    );
    let db_check = strings(&db["healthcheck"]["test"]);
    assert!(db_check.iter().any(|a| a == "pg_isready"), "{db_check:?}");

    // The service: built from the Dockerfile, started once Postgres is healthy, checked with
    // the health check subcommand.
    let realtime = service(&compose, "realtime");
    assert_eq!(
        scalar(&realtime["depends_on"]["db"]["condition"]),
        "service_healthy"
    );
    assert_eq!(
        strings(&realtime["healthcheck"]["test"]),
        ["CMD", "realtime", "healthcheck"]
    );
    assert!(profiles(db).is_empty() && profiles(realtime).is_empty());
    assert!(!realtime["environment"]["API_JWT_SECRET"].is_badvalue());

    // The cluster profile: NATS and a second replica of the same image.
    let services = compose["services"].as_hash().expect("services");
    let in_cluster: Vec<(&str, &Yaml)> = services
        .iter()
        .map(|(name, s)| (name.as_str().expect("a service name"), s))
        .filter(|(_, s)| profiles(s).iter().any(|p| p == "cluster"))
        .collect();
    assert!(
        in_cluster
            .iter()
            .any(|(_, s)| s["image"].as_str().is_some_and(|i| i.starts_with("nats:"))),
        "no NATS in the cluster profile"
    );
    let replicas: Vec<&str> = in_cluster
        .iter()
        .filter(|(_, s)| s["extends"]["service"].as_str() == Some("realtime"))
        .map(|(name, _)| *name)
        .collect();
    assert_eq!(replicas.len(), 1, "one more replica in the cluster profile");
    let replica = service(&compose, replicas[0]);
    assert!(!replica["environment"]["NATS_URL"].is_badvalue());

    // Every file it names exists.
    for (name, s) in services {
        let name = name.as_str().unwrap_or_default();
        if !s["build"].is_badvalue() {
            let context = docker_dir().join(scalar(&s["build"]["context"]));
            assert!(context.is_dir(), "{name}: build context {}", context.display());
            let dockerfile = context.join(scalar(&s["build"]["dockerfile"]));
            assert!(dockerfile.is_file(), "{name}: {}", dockerfile.display());
        }
        for (source, _) in bind_mounts(s) {
            assert!(source.exists(), "{name}: mount source {}", source.display());
        }
        if !s["env_file"].is_badvalue() {
            for file in strings(&s["env_file"]) {
                assert!(docker_dir().join(&file).is_file(), "{name}: env_file {file}");
            }
        }
        if let Some(base) = s["extends"]["service"].as_str() {
            assert!(s["extends"]["file"].is_badvalue(), "{name}: extends another file");
            service(&compose, base);
        }
    }

    // A secret with no default must be given: interpolation refuses to go on without it.
    let env = realtime["environment"].as_hash().expect("a mapping of variables");
    let secret = scalar(
        env.get(&Yaml::String("API_JWT_SECRET".into()))
            .expect("API_JWT_SECRET"),
    );
    assert!(interpolate(&secret, &|_| None).is_err(), "{secret}");
}

/// Dockerfile instructions: continuation lines joined, comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(docker_dir().join("Dockerfile")).expect("read docker/Dockerfile");
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                let (keyword, args) = current.trim().split_once(' ').unwrap_or((current.trim(), ""));
                instructions.push((keyword.to_ascii_uppercase(), args.trim().to_owned()));
                current.clear();
            }
        }
    }
    instructions
}

/// A JSON-form argument list (`["a", "b"]`).
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("not the exec form ({e}): {args}"))
}

#[test]
fn dockerfile_builds_in_stages_and_runs_unprivileged() {
    let instructions = dockerfile();
    let stages: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, (k, _))| k == "FROM")
        .map(|(i, _)| i)
        .collect();
    assert!(stages.len() >= 2, "a build stage and a runtime stage");
    let runtime_start = *stages.last().unwrap_or(&0);
    let (build, runtime) = instructions.split_at(runtime_start);

    // The builder compiles with cargo, from the lock file, on the project's minimum Rust.
    assert!(
        build
            .iter()
            .any(|(k, a)| k == "RUN" && a.contains("cargo build --release --locked")),
        "{build:?}"
    );
    // jemalloc's build script runs make, which the slim Rust image lacks.
    let lock = std::fs::read_to_string(repo().join("Cargo.lock")).expect("read Cargo.lock");
    if lock.contains("name = \"tikv-jemalloc-sys\"") {
        assert!(
            build
                .iter()
                .any(|(k, a)| k == "RUN" && a.contains("apt-get install") && a.contains(" make")),
            "the build stage installs make for jemalloc: {build:?}"
        );
    }
    let manifest: toml::Table = std::fs::read_to_string(repo().join("Cargo.toml"))
        .expect("read Cargo.toml")
        .parse()
        .expect("Cargo.toml is TOML");
    let msrv = manifest["workspace"]["package"]["rust-version"]
        .as_str()
        .expect("a rust-version");
    assert!(
        instructions
            .iter()
            .any(|(k, a)| k == "ARG" && *a == format!("RUST_VERSION={msrv}")),
        "the builder's Rust is the workspace's rust-version {msrv}"
    );
    for (keyword, args) in build.iter().filter(|(k, _)| k == "COPY") {
        let parts: Vec<&str> = args.split_whitespace().filter(|p| !p.starts_with("--")).collect();
        for source in &parts[..parts.len() - 1] {
            assert!(
                repo().join(source).exists(),
                "{keyword} {args}: {source} is missing"
            );
        }
    }

    // The runtime: slim, with curl for Supabase's health check, as an unprivileged user.
    let base = &runtime[0].1;
    assert!(base.contains("slim") && !base.starts_with("rust"), "{base}");
    let runs: String = runtime
        .iter()
        .filter(|(k, _)| k == "RUN")
        .map(|(_, a)| a.as_str())
        .collect();
    assert!(
        runs.contains("curl") && runs.contains("ca-certificates"),
        "{runs}"
    );
    let users: Vec<&str> = runtime
        .iter()
        .filter(|(k, _)| k == "USER")
        .map(|(_, a)| a.as_str())
        .collect();
    let user = users.last().expect("a USER in the runtime stage");
    assert!(
        !["root", "0"].contains(&user.split(':').next().unwrap_or_default()),
        "runs as {user}"
    );
    assert!(
        runtime
            .iter()
            .any(|(k, a)| k == "COPY" && a.starts_with("--from=build ")),
        "the binary comes from the build stage"
    );
}

/// What Docker would run: ENTRYPOINT + CMD, ENV, and the HEALTHCHECK command.
struct Image {
    command: Vec<String>,
    env: BTreeMap<String, String>,
    healthcheck: Vec<String>,
}

fn image() -> Image {
    let instructions = dockerfile();
    let last = |keyword: &str| {
        instructions
            .iter()
            .rev()
            .find(|(k, _)| k == keyword)
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| panic!("no {keyword}"))
    };
    let mut command = exec_form(&last("ENTRYPOINT"));
    command.extend(exec_form(&last("CMD")));
    let mut env = BTreeMap::new();
    for (_, args) in instructions.iter().filter(|(k, _)| k == "ENV") {
        for pair in args.split_whitespace() {
            let (name, value) = pair.split_once('=').expect("ENV name=value");
            env.insert(name.to_owned(), value.to_owned());
        }
    }
    let check = last("HEALTHCHECK");
    let (_, cmd) = check.split_once("CMD ").expect("HEALTHCHECK ... CMD [...]");
    // Compose writes the exec form as `["CMD", ...]`.
    let mut healthcheck = vec!["CMD".to_owned()];
    healthcheck.extend(exec_form(cmd));
    Image {
        command,
        env,
        healthcheck,
    }
}

/// Runs a health check command (`["CMD", "realtime", ...]`) with `env`: its exit code.
fn run_check(test: &[String], env: &[(&str, String)]) -> (i32, String) {
    assert_eq!(test[0], "CMD");
    assert_eq!(test[1], "realtime", "the check runs the image's binary");
    let args: Vec<&str> = test[2..].iter().map(String::as_str).collect();
    let output = run_realtime(&args, env);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), said)
}

fn wait_check(test: &[String], env: &[(&str, String)], code: i32, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (got, said) = run_check(test, env);
        if got == code {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the health check never exited {code}; last {got}: {said}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn the_image_runs_as_local_processes_against_a_local_postgres() {
    let compose = compose();
    let image = image();
    let db = service(&compose, "db");
    let realtime = service(&compose, "realtime");
    assert_eq!(
        image.healthcheck,
        strings(&realtime["healthcheck"]["test"]),
        "the image and compose check health alike"
    );

    // Postgres with the compose file's settings.
    let command = strings(&db["command"]);
    let mut options = Options::default();
    for setting in command.windows(2).filter(|w| w[0] == "-c").map(|w| &w[1]) {
        let (name, value) = setting.split_once('=').expect("-c name=value");
        options = options.setting(name, value);
    }
    let mut pg = start_postgres(options);
    let database = DatabaseConfig::from_url(&pg.url("postgres")).expect("a URL");

    // The environment Docker would give the process: the image's ENV, then compose's
    // (interpolated as compose does), then what differs outside a container network: the
    // database is on loopback at its own port, the service on a free port, and mounted folders
    // are where their sources are.
    let password = database.password.expose().to_owned();
    let vars = |name: &str| match name {
        "JWT_SECRET" => Some(SECRET.to_owned()),
        "POSTGRES_PASSWORD" => Some(password.clone()),
        _ => None,
    };
    let mut env = image.env.clone();
    for (name, value) in realtime["environment"].as_hash().expect("a mapping") {
        let value = interpolate(&scalar(value), &vars).expect("interpolate the environment");
        env.insert(scalar(name), value);
    }
    assert_eq!(
        env.get("DB_HOST").map(String::as_str),
        Some("db"),
        "compose reaches db by name"
    );
    env.insert("DB_HOST".into(), "127.0.0.1".into());
    env.insert("DB_PORT".into(), pg.port().to_string());
    let port = free_port();
    env.insert("PORT".into(), port.to_string());
    for (source, target) in bind_mounts(realtime) {
        for value in env.values_mut() {
            if let Some(rest) = value.strip_prefix(&target) {
                *value = format!("{}{rest}", source.display());
            }
        }
    }
    // Supabase's settings that mean nothing here are accepted and named in the debug log.
    let supabase_secret = "UpNVntn3cDxHJpq99YMc1T1AQgQpc8kfYTuRgBiYa15BLrx8etQoXz3gZv1";
    env.insert("SECRET_KEY_BASE".into(), supabase_secret.into());
    env.insert("SEED_SELF_HOST".into(), "true".into());
    env.insert("RUST_LOG".into(), "info,realtime=debug".into());
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();

    assert_eq!(image.command[0], "realtime");
    let args: Vec<&str> = image.command[1..].iter().map(String::as_str).collect();
    let mut server = Process::spawn(&args, &env);
    wait_check(&image.healthcheck, &env, 0, Duration::from_secs(60));

    // Supabase's stock health check against this service, when curl is here (the image has it).
    let curl = |key: &str| {
        std::process::Command::new("curl")
            .args(["-sSfL", "--head", "-o", "/dev/null", "-H"])
            .arg(format!("Authorization: Bearer {key}"))
            .arg(format!("http://localhost:{port}/api/tenants/realtime-dev/health"))
            .status()
    };
    match curl(&token("anon")) {
        Ok(status) => {
            assert!(status.success(), "curl health check: {status}");
            let refused = curl("not-the-anon-key").expect("run curl");
            assert_eq!(refused.code(), Some(22), "curl -f fails on 403");
        }
        Err(error) => eprintln!("curl is not installed here ({error}); skipped Supabase's check"),
    }

    // JSON logs, one object per line, naming the ignored setting and never its value.
    let logs = server.stderr();
    for line in logs.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    assert!(
        logs.lines()
            .any(|l| l.contains("accepted and ignored") && l.contains("SECRET_KEY_BASE")),
        "{logs}"
    );
    assert!(!logs.contains(supabase_secret) && !logs.contains(SECRET));

    // The database goes away: the container turns unhealthy.
    pg.stop(StopMode::Fast).expect("stop Postgres");
    wait_check(&image.healthcheck, &env, 1, Duration::from_secs(30));
    server.terminate(Duration::from_secs(30));
}
