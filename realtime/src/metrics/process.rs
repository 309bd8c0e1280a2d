//! The process's own figures, read from `/proc/self` at scrape time (Linux): resident memory,
//! CPU seconds, open file descriptors and start time, under the names every Prometheus client
//! uses (`process_*`). Elsewhere, or when `/proc` cannot be read, they are left out.

/// What `/proc/self` says now.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct ProcessFigures {
    pub resident_memory_bytes: u64,
    pub virtual_memory_bytes: u64,
    pub cpu_seconds: f64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
    pub start_time_seconds: f64,
}

/// Reads `/proc/self`; `None` when it is not there (not Linux) or not readable.
pub(super) fn read() -> Option<ProcessFigures> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let mut figures = parse_stat(&stat, boot_time(&boot)?)?;
    figures.open_fds = open_fds;
    figures.max_fds = max_open_files(&limits);
    Some(figures)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), which is 100 on every Linux platform
/// Rust supports; and the page size, 4096 on the x86-64 and arm64 this is built for.
const TICKS_PER_SECOND: f64 = 100.0;
const PAGE_SIZE: u64 = 4096;

/// Parses `/proc/self/stat`. The command name (field 2) is in parentheses and may hold spaces,
/// so the fields are counted from the last `)`.
fn parse_stat(stat: &str, boot_time: u64) -> Option<ProcessFigures> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After `)`: field 3 (state) is index 0, so field N is index N - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let utime = field(14)?;
    let stime = field(15)?;
    let start_ticks = field(22)?;
    let vsize = field(23)?;
    let rss_pages = field(24)?;
    Some(ProcessFigures {
        resident_memory_bytes: rss_pages.saturating_mul(PAGE_SIZE),
        virtual_memory_bytes: vsize,
        cpu_seconds: (utime + stime) as f64 / TICKS_PER_SECOND,
        open_fds: 0,
        max_fds: None,
        start_time_seconds: boot_time as f64 + start_ticks as f64 / TICKS_PER_SECOND,
    })
}

/// `btime` of `/proc/stat`: when the machine booted, in Unix seconds.
fn boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with spaces and a `)` of its own must not shift the fields.
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1000 \
                    8192000 300 18446744073709551615";
        let f = parse_stat(stat, 1_700_000_000).expect("parsed");
        assert_eq!(f.cpu_seconds, 3.0);
        assert_eq!(f.resident_memory_bytes, 300 * 4096);
        assert_eq!(f.virtual_memory_bytes, 8_192_000);
        assert_eq!(f.start_time_seconds, 1_700_000_010.0);
        assert_eq!(parse_stat("garbage", 0), None);
        assert_eq!(boot_time("cpu 1 2\nbtime 1700000000\n"), Some(1_700_000_000));
        assert_eq!(
            max_open_files("Max open files            1024                 524288               files\n"),
            Some(1024)
        );
    }

    #[test]
    fn this_process_is_read_from_proc() {
        let f = read().expect("/proc/self is readable on Linux");
        assert!(f.resident_memory_bytes > 0);
        assert!(f.open_fds > 0);
        assert!(f.start_time_seconds > 1_600_000_000.0);
    }
}
