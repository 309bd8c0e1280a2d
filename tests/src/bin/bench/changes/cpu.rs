//! Where the CPU went during a phase: this process (server, replication and the writers), the
//! subscriber child process, and the whole machine (every tenant of a shared host), read from
//! `/proc` (Linux only; zeros elsewhere) at the kernel's 100 Hz tick.

use std::time::Duration;

use realtime_tests::proc_stats;

/// A reading of the counters; subtract two with [`Sample::since`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    server: Duration,
    subscribers: Duration,
    machine_busy: Duration,
    machine_total: Duration,
}

/// CPU spent between two samples.
#[derive(Clone, Copy, Debug)]
pub struct Spent {
    pub server: Duration,
    pub subscribers: Duration,
    /// Every process of the machine, ours and others'.
    pub machine_busy: Duration,
    /// Busy plus idle time summed over the cores.
    pub machine_total: Duration,
}

impl Sample {
    pub fn now(subscribers: Option<u32>) -> Sample {
        let (machine_busy, machine_total) = machine();
        Sample {
            server: proc_stats::cpu_time_of("self"),
            subscribers: subscribers.map_or(Duration::ZERO, |pid| proc_stats::cpu_time_of(&pid.to_string())),
            machine_busy,
            machine_total,
        }
    }

    pub fn since(&self, before: &Sample) -> Spent {
        Spent {
            server: self.server.saturating_sub(before.server),
            subscribers: self.subscribers.saturating_sub(before.subscribers),
            machine_busy: self.machine_busy.saturating_sub(before.machine_busy),
            machine_total: self.machine_total.saturating_sub(before.machine_total),
        }
    }
}

impl Spent {
    /// How busy the whole machine was, in percent of all its cores.
    pub fn busy_percent(&self) -> f64 {
        if self.machine_total.is_zero() {
            return 0.0;
        }
        self.machine_busy.as_secs_f64() / self.machine_total.as_secs_f64() * 100.0
    }

    /// `server process CPU 1.23 s, subscribers 2.34 s; machine 87% busy (all tenants)`.
    pub fn describe(&self) -> String {
        let busy = self.busy_percent();
        format!(
            "server process CPU {:.2} s, subscribers {:.2} s; machine {busy:.0}% busy (all tenants)",
            self.server.as_secs_f64(),
            self.subscribers.as_secs_f64(),
        )
    }
}

/// (busy, total) over all cores from the `cpu` line of `/proc/stat`: user nice system idle
/// iowait irq softirq steal ...; idle and iowait are not busy.
fn machine() -> (Duration, Duration) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (Duration::ZERO, Duration::ZERO);
    };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (Duration::ZERO, Duration::ZERO);
    };
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|t| t.parse().ok())
        .collect();
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    let ms = |t: u64| Duration::from_millis(t * 10);
    (ms(total.saturating_sub(idle)), ms(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_and_the_machine_are_read() {
        let before = Sample::now(Some(std::process::id()));
        let start = std::time::Instant::now();
        let mut x = 0u64;
        // Spin until both this process's and the machine's tick counters move, within a generous
        // bound (a loaded machine may give this thread little of the wall time, and the
        // machine-wide counters of a VM may be updated later than the process's).
        let moved = || {
            let spent = Sample::now(Some(std::process::id())).since(&before);
            !spent.server.is_zero() && !spent.machine_busy.is_zero()
        };
        while !moved() && start.elapsed() < Duration::from_secs(20) {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
        }
        std::hint::black_box(x);
        let spent = Sample::now(Some(std::process::id())).since(&before);
        assert!(!spent.server.is_zero() && !spent.subscribers.is_zero());
        assert!(spent.machine_total >= spent.machine_busy && !spent.machine_busy.is_zero());
        assert!(spent.describe().contains("busy"));
    }
}
