//! The channel server's integration tests, one module per file, linked into one test binary:
//! one link of the whole library instead of one per file. nextest still runs each test in its
//! own process; select a file's tests with `-E 'test(/^hardening_jwt::/)'`.

mod common;

mod channels_broadcast;
mod channels_limits;
mod channels_presence;
mod channels_private;
mod channels_protocol;
mod hardening_defaults;
mod hardening_fairness;
mod hardening_floods;
mod hardening_frames;
mod hardening_http;
mod hardening_jwt;
mod hardening_roles;

/// A test file that is not declared above is never compiled: catch it here.
#[test]
fn every_test_file_is_a_module_of_this_binary() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let main = std::fs::read_to_string(dir.join("main.rs")).expect("main.rs is readable");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("tests/ is readable").flatten() {
        let path = entry.path();
        let Some(name) = path.file_stem().and_then(|n| n.to_str()) else {
            continue;
        };
        if path.extension().is_some_and(|e| e == "rs")
            && name != "main"
            && !main.contains(&format!("\nmod {name};"))
        {
            missing.push(name.to_owned());
        }
    }
    assert!(missing.is_empty(), "declare these in tests/main.rs: {missing:?}");
}
