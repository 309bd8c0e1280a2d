//! The end-to-end tests, one module per file, linked into one test binary: one link of the
//! whole library instead of one per file. nextest still runs each test in its own process;
//! select a file's tests with `-E 'test(/^cluster_changes::/)'`.

mod access_changes;
mod admin;
mod changes_faults;
mod changes_wait;
mod channel_rls;
mod channel_rls_batch;
mod cluster_changes;
mod cluster_channels;
mod container;
mod db_broadcast;
mod filters_vs_postgres;
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

/// A test file that is not declared in its folder's `main.rs` is never compiled: catch it here,
/// for this crate's tests and for the `realtime` crate's (`realtime/tests/main.rs`).
#[test]
fn every_test_file_is_a_module_of_its_binary() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut missing = Vec::new();
    for dir in [root.join("tests"), root.join("../realtime/tests")] {
        let main = std::fs::read_to_string(dir.join("main.rs")).expect("main.rs is readable");
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
    }
    assert!(
        missing.is_empty(),
        "declare these in their folder's main.rs: {missing:?}"
    );
}
