//! The database connection's TLS default is libpq's `sslmode=prefer`: TLS when the server offers
//! it (shown in `replication_service`), plain TCP when it does not. `sslmode=require` against a
//! server without TLS stops the service with an error that says what to change.

use std::time::Duration;

use realtime::config::{DatabaseConfig, SslMode};
use realtime::embedded::Options;
use realtime_tests::{Process, Stream, database, exec, pool, replication_config, start_postgres};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_connects_to_a_server_without_tls() {
    let pg = start_postgres(Options::default());
    pg.psql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION pub FOR TABLE t;",
    )
    .expect("setup");
    assert_eq!(pg.psql("postgres", "SHOW ssl").expect("ssl"), "off");
    let config = database(&pg);
    assert_eq!(config.ssl_mode, SslMode::Prefer, "the default sslmode");

    // Both connections: replication (our wire client) and SQL (the pool).
    let mut stream = Stream::start(config.clone(), replication_config("s_prefer", "pub"));
    tokio::time::timeout(Duration::from_secs(30), stream.wait_streaming())
        .await
        .expect("streaming with sslmode=prefer against a server without TLS");
    let sql = realtime::db::connect(&config)
        .await
        .expect("the SQL pool connects");
    sqlx::query("SELECT 1").execute(&sql).await.expect("a query");
    exec(&pool(&pg).await, "INSERT INTO t VALUES (1)").await;
    assert_eq!(stream.changes(1).await.len(), 1);
    stream.stop().await.expect("clean stop");
}

#[test]
fn require_against_a_server_without_tls_stops_with_a_clear_error() {
    let pg = start_postgres(Options::default());
    let url = format!("{}?sslmode=require", pg.url("postgres"));
    assert_eq!(
        DatabaseConfig::from_url(&url).expect("url").ssl_mode,
        SslMode::Require
    );
    let mut process = Process::spawn(
        &["serve"],
        &[
            ("DATABASE_URL", url),
            ("PORT", "0".to_owned()),
            ("API_JWT_SECRET", "x".repeat(40)),
            ("SLOT_NAME", "s_require".to_owned()),
        ],
    );
    let status = process.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "realtime kept running: {}", process.stderr());
    let stderr = process.stderr();
    assert!(
        stderr.contains("the server does not offer TLS, but sslmode=require requires it"),
        "{stderr}"
    );
}
