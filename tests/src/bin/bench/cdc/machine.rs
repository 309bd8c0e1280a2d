//! What the numbers were measured on, and CPU time of this process and its children (from
//! `/proc/self/stat`), so that each drain can report what it cost besides wall time.

use std::time::Duration;

use realtime::embedded::EmbeddedPostgres;

/// Linux's `USER_HZ`: `/proc` reports CPU time in these ticks (100 on every mainstream arch).
const TICKS_PER_SECOND: f64 = 100.0;

/// Prints one line about the CPU, memory, Postgres version and current load: the box is shared,
/// so the load average says how much of it the benchmark had.
pub fn describe(pg: &EmbeddedPostgres) -> anyhow::Result<()> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let version = pg.psql("postgres", "SHOW server_version")?;
    println!(
        "machine: {model}, {cores} cores, {mem_gib:.0} GiB; PostgreSQL {version}; load average {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    Ok(())
}

/// CPU time used so far: (this process, its waited-for children).
pub fn cpu_time() -> (Duration, Duration) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3 (`state`).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<f64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    let field = |n: usize| fields.get(n - 3).copied().unwrap_or(0.0) / TICKS_PER_SECOND;
    (
        Duration::from_secs_f64(field(14) + field(15)),
        Duration::from_secs_f64(field(16) + field(17)),
    )
}

/// CPU time the calling thread has run so far, in nanoseconds (`/proc/thread-self/schedstat`),
/// or `None` where the kernel does not report it.
pub fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace()
        .next()?
        .parse()
        .ok()
        .map(Duration::from_nanos)
}

/// Whether we run as root (then Postgres client tools run as the postgres user, as the server
/// binaries do).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
