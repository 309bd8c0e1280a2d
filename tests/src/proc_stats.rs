//! A process's memory and CPU time, read from `/proc/<pid>` (Linux only): this process's
//! (`"self"`) when a benchmark hosts the server, a child's when the server runs apart (peer
//! servers, `realtime` processes started by tests).

use std::time::Duration;

/// Resident set size (`VmRSS` of `/proc/self/status`) in bytes.
pub fn rss_bytes() -> Option<u64> {
    rss_bytes_of("self")
}

/// Resident set size of process `pid` (a number, or `self`) in bytes.
pub fn rss_bytes_of(pid: &str) -> Option<u64> {
    status_kib(pid, "VmRSS").map(|kib| kib * 1024)
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, ...), in KiB.
pub fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    line.split_whitespace().next()?.parse().ok()
}

/// User plus system CPU time of the whole process, threads included (also exited ones), at
/// the kernel's 100 Hz tick resolution (`USER_HZ` is 100 on Linux).
pub fn cpu_time() -> Duration {
    cpu_time_of("self")
}

/// User plus system CPU time of process `pid` (a number, or `self`); zero if it cannot be read.
pub fn cpu_time_of(pid: &str) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the parenthesised command name (which may contain spaces).
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line; the first field after the name is 3.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_and_cpu_time_grows_with_work() {
        assert!(rss_bytes().is_some_and(|b| b > 0));
        let before = cpu_time();
        // CPU time moves in clock ticks, and a loaded machine may give this thread little of
        // the wall time: spin until it moves, within a generous bound.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while cpu_time() <= before && start.elapsed() < Duration::from_secs(20) {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
        }
        std::hint::black_box(x);
        assert!(
            cpu_time() > before,
            "no CPU time counted after {:?} of work",
            start.elapsed()
        );
    }
}
