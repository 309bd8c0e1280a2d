//! The `realtime` binary as an operator runs it: crash and restart, startup checks and their
//! errors, slot release on shutdown, keepalives, authentication methods and TLS.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use realtime::embedded::Options;
use realtime::lsn::Lsn;
use realtime_tests::{Process, Stream, database, exec, pool, replication_config, start_postgres};

const SECRET: &str = "postgres";

fn tail_env(url: &str, slot: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", url.to_owned()),
        ("SLOT_NAME", slot.to_owned()),
        ("PUBLICATIONS", "pub".to_owned()),
    ]
}

/// Reads one JSON event line, or `None` after `timeout` without one.
fn next_event(process: &Process, timeout: Duration) -> Option<serde_json::Value> {
    let line = process.stdout.recv_timeout(timeout).ok()?;
    Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
}

/// `<epoch>-<commit LSN>-<index>` → (commit LSN, index).
fn position(event: &serde_json::Value) -> (Lsn, u32) {
    let text = event["position"].as_str().expect("a position");
    let mut parts = text.split('-');
    let _epoch = parts.next();
    let lsn = u64::from_str_radix(parts.next().expect("lsn"), 16).expect("hex lsn");
    let index = u32::from_str_radix(parts.next().expect("index"), 16).expect("hex index");
    (Lsn(lsn), index)
}

fn slot_state(pg: &realtime::embedded::EmbeddedPostgres, slot: &str) -> (String, Lsn) {
    let out = pg
        .psql(
            "postgres",
            &format!(
                "SELECT active, confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"
            ),
        )
        .expect("query the slot");
    let (active, lsn) = out
        .split_once('|')
        .unwrap_or_else(|| panic!("slot {slot} missing: {out:?}"));
    (active.to_owned(), lsn.parse().expect("an LSN"))
}

#[test]
fn killed_mid_stream_the_service_resumes_without_loss_or_repeating_confirmed_changes() {
    let pg = start_postgres(Options::default());
    pg.psql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION pub FOR TABLE t;",
    )
    .expect("setup");
    let env = tail_env(&pg.url("postgres"), "s_kill");
    let mut first = Process::spawn(&["tail"], &env);
    first.wait_stderr("streaming changes", Duration::from_secs(30));

    // A writer commits 400 transactions of 25 rows in the background.
    let url = pg.url("postgres");
    let writer = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let db = sqlx::PgPool::connect(&url).await.expect("connect");
            for batch in 0..400 {
                let sql = format!(
                    "INSERT INTO t SELECT g FROM generate_series({}, {}) g",
                    batch * 25,
                    batch * 25 + 24
                );
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&db)
                    .await
                    .expect("insert");
            }
        });
    });
    let mut before = Vec::new();
    while before.len() < 3000 {
        before.push(next_event(&first, Duration::from_secs(30)).expect("events before the kill"));
    }
    first.kill();
    // What the slot says was confirmed at the moment of the crash.
    let (_, confirmed_at_kill) = slot_state(&pg, "s_kill");
    writer.join().expect("writer");

    let second = Process::spawn(&["tail"], &env);
    let mut after = Vec::new();
    let mut ids: BTreeSet<i64> = before
        .iter()
        .map(|e| e["record"]["id"].as_i64().expect("id"))
        .collect();
    while ids.len() < 10_000 {
        let event = next_event(&second, Duration::from_secs(30)).unwrap_or_else(|| {
            panic!(
                "stalled at {} of 10000 rows; stderr:\n{}",
                ids.len(),
                second.stderr()
            )
        });
        ids.insert(event["record"]["id"].as_i64().expect("id"));
        after.push(event);
    }
    assert_eq!(ids, (0..10_000).collect::<BTreeSet<_>>(), "nothing lost");
    for event in &after {
        assert!(
            position(event).0 >= confirmed_at_kill,
            "a change at or below the confirmed position {confirmed_at_kill} was delivered again: {event}"
        );
    }
    for run in [&before, &after] {
        assert!(
            run.windows(2).all(|w| position(&w[0]) < position(&w[1])),
            "commit order within a run"
        );
    }
    assert!(
        next_event(&second, Duration::from_millis(500)).is_none(),
        "nothing more than the 10,000 rows"
    );
}

#[test]
fn shutdown_keeps_the_resume_window_and_releases_the_slot_and_a_temporary_slot_disappears() {
    let pg = start_postgres(Options::default());
    pg.psql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION pub FOR TABLE t;",
    )
    .expect("setup");
    let env = tail_env(&pg.url("postgres"), "s_release");
    let mut tail = Process::spawn(&["tail"], &env);
    tail.wait_stderr("streaming changes", Duration::from_secs(30));
    pg.psql("postgres", "INSERT INTO t VALUES (1)").expect("insert");
    let insert = next_event(&tail, Duration::from_secs(30)).expect("the insert");
    assert!(
        tail.terminate(Duration::from_secs(15)).success(),
        "clean exit; stderr:\n{}",
        tail.stderr()
    );
    let (active, confirmed) = slot_state(&pg, "s_release");
    assert_eq!(active, "f", "the slot is released");
    assert!(
        confirmed <= position(&insert).0,
        "the insert is still in the resume window, so not confirmed: {confirmed}"
    );
    // The next run re-reads the window from the slot: the insert comes again, with the same
    // position, so resuming clients lose nothing to the restart.
    let mut again = Process::spawn(&["tail"], &env);
    let reread = next_event(&again, Duration::from_secs(30)).expect("the window, re-read");
    assert_eq!(reread["position"], insert["position"]);
    assert!(again.terminate(Duration::from_secs(15)).success());

    // With no window, what was handed on is confirmed.
    let mut none = env.clone();
    none[1].1 = "s_no_window".into();
    none.push(("REPLICATION_WINDOW_SECONDS", "0".into()));
    let mut tail = Process::spawn(&["tail"], &none);
    tail.wait_stderr("streaming changes", Duration::from_secs(30));
    pg.psql("postgres", "INSERT INTO t VALUES (2)").expect("insert");
    let insert = next_event(&tail, Duration::from_secs(30)).expect("the insert");
    assert!(tail.terminate(Duration::from_secs(15)).success());
    let (_, confirmed) = slot_state(&pg, "s_no_window");
    assert!(
        confirmed >= position(&insert).0,
        "confirmed up to the evicted transaction: {confirmed}"
    );
    let mut again = Process::spawn(&["tail"], &none);
    again.wait_stderr("streaming changes", Duration::from_secs(30));
    if let Some(event) = next_event(&again, Duration::from_millis(500)) {
        // Only the transaction at the confirmed position itself may come again.
        assert_eq!(event["position"], insert["position"], "{event}");
    }
    assert!(again.terminate(Duration::from_secs(15)).success());

    let mut temp = env.clone();
    temp[1].1 = "s_temporary".into();
    temp.push(("TEMPORARY_SLOT", "true".into()));
    let mut tail = Process::spawn(&["tail"], &temp);
    tail.wait_stderr("streaming changes", Duration::from_secs(30));
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT temporary FROM pg_replication_slots WHERE slot_name = 's_temporary'"
        )
        .expect("q"),
        "t"
    );
    assert!(tail.terminate(Duration::from_secs(15)).success());
    let gone = pg.psql(
        "postgres",
        "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 's_temporary'",
    );
    assert_eq!(
        gone.expect("q"),
        "0",
        "a temporary slot is dropped with its session"
    );
}

#[test]
fn wal_level_below_logical_is_refused_with_what_to_change() {
    let pg = start_postgres(Options::default().setting("wal_level", "replica"));
    let mut tail = Process::spawn(&["tail"], &tail_env(&pg.url("postgres"), "s_wal"));
    assert!(!tail.wait_exit(Duration::from_secs(30)).success());
    let stderr = tail.stderr();
    assert!(stderr.contains("wal_level=replica"), "{stderr}");
    assert!(
        stderr.contains("wal_level = logical") && stderr.contains("restart Postgres"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(SECRET_IN_URL),
        "the password never appears: {stderr}"
    );
}

/// The password as it appears in a URL; embedded clusters use `postgres`, too common a word to
/// search for, so the tests that check logs use a role with a distinctive password.
const SECRET_IN_URL: &str = "s3cr3t-Pa55";

#[test]
fn a_role_without_replication_is_refused_and_its_password_never_printed() {
    let pg = start_postgres(Options::default());
    pg.psql(
        "postgres",
        &format!("CREATE ROLE app LOGIN PASSWORD '{SECRET_IN_URL}'"),
    )
    .expect("role");
    let url = format!("postgres://app:{SECRET_IN_URL}@127.0.0.1:{}/postgres", pg.port());
    let mut tail = Process::spawn(&["tail"], &tail_env(&url, "s_role"));
    assert!(!tail.wait_exit(Duration::from_secs(30)).success());
    let stderr = tail.stderr();
    assert!(stderr.contains("ALTER ROLE app WITH REPLICATION"), "{stderr}");
    assert!(!stderr.contains(SECRET_IN_URL), "{stderr}");
}

#[test]
fn a_missing_publication_is_created_only_when_managed() {
    let pg = start_postgres(Options::default());
    let mut env = tail_env(&pg.url("postgres"), "s_pub");
    env.push(("MANAGE_PUBLICATION", "false".into()));
    let mut tail = Process::spawn(&["tail"], &env);
    assert!(!tail.wait_exit(Duration::from_secs(30)).success());
    let stderr = tail.stderr();
    assert!(
        stderr.contains("publication \"pub\" does not exist") && stderr.contains("CREATE PUBLICATION"),
        "{stderr}"
    );
    assert_eq!(
        pg.psql("postgres", "SELECT count(*) FROM pg_publication")
            .expect("q"),
        "0",
        "nothing was created"
    );

    env.pop();
    let mut tail = Process::spawn(&["tail"], &env);
    tail.wait_stderr("streaming changes", Duration::from_secs(30));
    assert!(tail.terminate(Duration::from_secs(15)).success());
    // Idempotent: a second start finds the publication and the slot and creates nothing.
    let mut tail = Process::spawn(&["tail"], &env);
    let stderr = tail.wait_stderr("streaming changes", Duration::from_secs(30));
    assert!(!stderr.contains("created the"), "{stderr}");
    assert!(tail.terminate(Duration::from_secs(15)).success());
}

#[test]
fn a_slot_held_by_another_process_is_waited_for_naming_the_holder() {
    let pg = start_postgres(Options::default());
    pg.psql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION pub FOR TABLE t;",
    )
    .expect("setup");
    let env = tail_env(&pg.url("postgres"), "s_busy");
    let mut holder = Process::spawn(&["tail"], &env);
    holder.wait_stderr("streaming changes", Duration::from_secs(30));
    let waiter = Process::spawn(&["tail"], &env);
    let stderr = waiter.wait_stderr("is in use by PID", Duration::from_secs(30));
    assert!(
        stderr.contains("application \"realtime\""),
        "the holder is named: {stderr}"
    );
    assert!(holder.terminate(Duration::from_secs(15)).success());
    // Once released, the waiter takes over and streams.
    waiter.wait_stderr("streaming changes", Duration::from_secs(60));
    pg.psql("postgres", "INSERT INTO t VALUES (7)").expect("insert");
    let event = next_event(&waiter, Duration::from_secs(30)).expect("the waiter streams");
    assert_eq!(event["record"]["id"], 7);
}

#[test]
fn an_unreachable_database_is_retried_with_backoff_until_it_appears() {
    let mut pg = start_postgres(Options::default());
    pg.psql(
        "postgres",
        &format!("CREATE ROLE app LOGIN REPLICATION SUPERUSER PASSWORD '{SECRET_IN_URL}'"),
    )
    .expect("role");
    pg.stop(realtime::embedded::StopMode::Fast).expect("stop");
    let url = format!("postgres://app:{SECRET_IN_URL}@127.0.0.1:{}/postgres", pg.port());
    let tail = Process::spawn(&["tail"], &tail_env(&url, "s_down"));
    let stderr = tail.wait_stderr("replication interrupted", Duration::from_secs(30));
    assert!(
        stderr.contains("cannot connect to 127.0.0.1"),
        "says why: {stderr}"
    );
    assert!(stderr.contains("retry_in_ms"), "{stderr}");
    pg.start_again().expect("start");
    tail.wait_stderr("streaming changes", Duration::from_secs(60));
    assert!(!tail.stderr().contains(SECRET_IN_URL), "{}", tail.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_are_answered_so_a_quiet_stream_outlives_wal_sender_timeout() {
    let pg = start_postgres(Options::default().setting("wal_sender_timeout", "2s"));
    let db = pool(&pg).await;
    exec(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION pub FOR TABLE t;",
    )
    .await;
    let mut stream = Stream::start(database(&pg), replication_config("s_keepalive", "pub"));
    stream.wait_streaming().await;
    let pid = || async {
        sqlx::query_scalar::<_, i32>(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 's_keepalive'",
        )
        .fetch_one(&db)
        .await
        .expect("slot")
    };
    let walsender = pid().await;
    // Three timeouts' worth of silence.
    let quiet_until = Instant::now() + Duration::from_secs(7);
    stream.assert_quiet(quiet_until - Instant::now()).await;
    assert_eq!(
        pid().await,
        walsender,
        "the same walsender: the connection was never dropped"
    );
    assert!(matches!(
        *stream.state.borrow(),
        realtime::replication::State::Streaming { .. }
    ));
    exec(&db, "INSERT INTO t VALUES (1)").await;
    assert_eq!(stream.changes(1).await.len(), 1);
    let log = std::fs::read_to_string(pg.log_file()).unwrap_or_default();
    assert!(
        !log.contains("terminating walsender process due to replication timeout"),
        "{log}"
    );
    stream.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_with_scram_md5_and_cleartext_passwords_and_over_tls() {
    let pg = start_postgres(Options::default().setting("password_encryption", "md5"));
    let dir = pg.data_dir().to_path_buf();
    make_certificates(&dir);
    pg.psql(
        "postgres",
        "CREATE ROLE md5user LOGIN REPLICATION SUPERUSER PASSWORD 'md5pw';
         SET password_encryption = 'scram-sha-256';
         CREATE ROLE plainuser LOGIN REPLICATION SUPERUSER PASSWORD 'plainpw';
         CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION pub FOR TABLE t;",
    )
    .expect("setup");
    pg.psql("postgres", "ALTER SYSTEM SET ssl = on").expect("ssl on");
    let hba = dir.join("pg_hba.conf");
    let rules = "hostssl all all 127.0.0.1/32 scram-sha-256\nhost all md5user 127.0.0.1/32 md5\n\
                 host all plainuser 127.0.0.1/32 password\n";
    let existing = std::fs::read_to_string(&hba).expect("pg_hba.conf");
    std::fs::write(&hba, format!("{rules}{existing}")).expect("write pg_hba.conf");
    pg.psql("postgres", "SELECT pg_reload_conf()").expect("reload");
    std::thread::sleep(Duration::from_millis(300));

    let port = pg.port();
    let ca = dir.join("ca.crt").display().to_string();
    let cases = [
        (
            "md5",
            format!("postgres://md5user:md5pw@127.0.0.1:{port}/postgres?sslmode=disable"),
        ),
        (
            // No sslmode: `prefer`, so TLS because the server offers it.
            "cleartext over TLS by default",
            format!("postgres://plainuser:plainpw@127.0.0.1:{port}/postgres"),
        ),
        (
            "scram over TLS",
            format!("postgres://postgres:{SECRET}@127.0.0.1:{port}/postgres?sslmode=require"),
        ),
        (
            "verify-full",
            format!(
                "postgres://postgres:{SECRET}@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={ca}"
            ),
        ),
    ];
    for (i, (name, url)) in cases.iter().enumerate() {
        let config = realtime::config::DatabaseConfig::from_url(url).expect("url");
        let mut stream = Stream::start(config, replication_config(&format!("s_auth{i}"), "pub"));
        stream.wait_streaming().await;
        let db = pool(&pg).await;
        exec(&db, &format!("INSERT INTO t VALUES ({i})")).await;
        assert_eq!(stream.changes(1).await.len(), 1, "{name}");
        let encrypted = pg
            .psql(
                "postgres",
                &format!(
                    "SELECT s.ssl FROM pg_replication_slots r JOIN pg_stat_ssl s ON s.pid = r.active_pid \
                     WHERE r.slot_name = 's_auth{i}'"
                ),
            )
            .expect("q");
        assert_eq!(
            encrypted,
            if url.contains("sslmode=disable") { "f" } else { "t" },
            "{name}"
        );
        stream.stop().await.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // verify-full refuses a certificate that does not name the host.
    let url = format!(
        "postgres://postgres:{SECRET}@127.0.0.1:{port}/postgres?sslmode=verify-full&sslrootcert={ca}"
    );
    let config = realtime::config::DatabaseConfig::from_url(&url).expect("url");
    let mut stream = Stream::start(config, replication_config("s_badname", "pub"));
    let reason = tokio::time::timeout(
        Duration::from_secs(30),
        stream
            .state
            .wait_for(|s| matches!(s, realtime::replication::State::Retrying { .. })),
    )
    .await
    .expect("refused")
    .expect("state")
    .clone();
    assert!(format!("{reason:?}").contains("TLS"), "{reason:?}");
}

/// A CA and a server certificate for `localhost`, installed as the cluster's TLS files.
fn make_certificates(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl");
        assert!(status.success(), "openssl {args:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost\n").expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    let _ = std::process::Command::new("chown")
        .args(["postgres:postgres", "server.key", "server.crt"])
        .current_dir(dir)
        .status();
    let _ = std::process::Command::new("chmod")
        .args(["600", "server.key"])
        .current_dir(dir)
        .status();
}
