//! `realtime-bench peers` at a tiny size: every peer server starts, speaks its protocol with the
//! load generator, delivers every message of the fan-out round, and the benchmark prints a
//! parsable `result peers` line with a ratio for each peer and writes its CSV and charts.
//!
//! Needs Node.js with npm (the Node peers are installed from `tests/bench-peers/package-lock.json`
//! on first use) and `nats-server` on the PATH.

use std::collections::HashMap;
use std::process::Command;

#[test]
fn peers_benchmark_runs_every_peer_to_completion_at_a_tiny_size() {
    let out = std::env::temp_dir().join(format!("realtime-peers-bench-{}", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_realtime-bench"))
        .args([
            "peers",
            "subscribers=50",
            "messages=20",
            "rounds=1",
            "idle=200",
            "concurrency=20",
            "topics=10",
            // Memory read at once: the figures are not what this test checks.
            "settle=0",
        ])
        .arg(format!("out={}", out.display()))
        .output()
        .expect("run realtime-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "benchmark failed: {}\n{stdout}\n{stderr}",
        output.status
    );
    let line = stdout
        .lines()
        .last()
        .filter(|l| l.starts_with("result peers "))
        .unwrap_or_else(|| panic!("no result line:\n{stdout}\n{stderr}"));
    let fields: HashMap<&str, &str> = line
        .split_whitespace()
        .skip(2)
        .filter_map(|f| f.split_once('='))
        .collect();
    // A peer whose round came up short (or that never started) reports `failed`.
    assert_eq!(fields.get("failed"), Some(&"none"), "{line}\n{stderr}");
    for peer in ["uws", "ws", "socketio", "nats"] {
        for figure in ["ratio", "mem_ratio", "cpu_ratio", "connect_ratio"] {
            let key = format!("{figure}_vs_{peer}");
            let value = fields
                .get(key.as_str())
                .unwrap_or_else(|| panic!("{key} missing: {line}"));
            assert!(
                value.parse::<f64>().is_ok(),
                "{key}={value} is not a number: {line}"
            );
        }
    }
    // Every server delivered all 50 x 20 messages of its round.
    let rounds = stdout
        .lines()
        .filter(|l| l.contains("1000/1000 deliveries"))
        .count();
    assert_eq!(rounds, 5, "one complete round per server expected:\n{stdout}");
    let csv = std::fs::read_to_string(out.join("peers.csv")).expect("peers.csv");
    assert_eq!(csv.lines().count(), 6, "{csv}");
    for chart in ["deliveries", "cpu", "memory", "connects"] {
        let png = std::fs::read(out.join(format!("peers-{chart}.png"))).expect("chart");
        assert_eq!(&png[..4], b"\x89PNG", "peers-{chart}.png");
    }
    let _ = std::fs::remove_dir_all(&out);
}
