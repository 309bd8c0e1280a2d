//! The workspace's integration tests, one module per file, linked into one test binary: one link
//! of the whole library instead of one per file (the `realtime` crate has none of its own; its
//! unit tests stay beside its code). nextest still runs each test in its own process; select a
//! file's tests with `-E 'test(/^cluster_changes::/)'` or `-E 'test(/^hardening_jwt::/)'`.

mod access_changes;
mod admin;
mod changes_faults;
mod changes_wait;
mod channel_rls;
mod channel_rls_batch;
mod channels_broadcast;
mod channels_limits;
mod channels_presence;
mod channels_private;
mod channels_protocol;
mod cluster_changes;
mod cluster_channels;
mod container;
mod db_broadcast;
mod filters_vs_postgres;
mod hardening_defaults;
mod hardening_fairness;
mod hardening_floods;
mod hardening_frames;
mod hardening_http;
mod hardening_jwt;
mod hardening_roles;
mod health;
mod metrics;
mod peers_bench;
mod pgoutput_capture;
mod replication_faults;
mod replication_service;
mod replication_stream;
mod resume_crash;
mod row_access;
mod snapshot;
mod sslmode_default;
mod tracing;
mod values_to_jsonb;
mod wal_safety;

/// A test file that is not declared in `main.rs` is never compiled, and a test file in
/// `realtime/tests/` would link the library once more as a binary of its own: catch both here.
#[test]
fn every_test_file_is_a_module_of_its_binary() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests");
    let main = std::fs::read_to_string(dir.join("main.rs")).expect("main.rs is readable");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir)
        .expect("the tests folder is readable")
        .flatten()
    {
        let path = entry.path();
        let Some(name) = path.file_stem().and_then(|n| n.to_str()) else {
            continue;
        };
        if path.extension().is_some_and(|e| e == "rs")
            && name != "main"
            && !main.contains(&format!("\nmod {name};"))
        {
            missing.push(path.display().to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "declare these in tests/tests/main.rs: {missing:?}"
    );
    // `realtime/tests/` keeps only the key fixtures its unit tests and `hardening_jwt` share.
    let elsewhere: Vec<String> = std::fs::read_dir(root.join("../realtime/tests"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "rs"))
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        elsewhere.is_empty(),
        "integration tests belong in tests/tests/ (one binary for the workspace): {elsewhere:?}"
    );
}
