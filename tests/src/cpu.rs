//! How much CPU a process's threads got, and how long they waited for it, from the
//! kernel's scheduler statistics (`/proc/<pid>/task/<tid>/schedstat`: nanoseconds on a CPU,
//! nanoseconds runnable but waiting on a run queue). On a machine shared with other work
//! the second number is the contention itself, measured rather than guessed.

use std::ops::Sub;
use std::time::Duration;

use serde::Serialize;

/// Scheduler time summed over a set of threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedTime {
    /// Time on a CPU.
    pub on_cpu: Duration,
    /// Time runnable, waiting for a CPU.
    pub waiting: Duration,
}

impl Sub for SchedTime {
    type Output = SchedTime;

    fn sub(self, earlier: SchedTime) -> SchedTime {
        SchedTime {
            on_cpu: self.on_cpu.saturating_sub(earlier.on_cpu),
            waiting: self.waiting.saturating_sub(earlier.waiting),
        }
    }
}

/// The same, in milliseconds, for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SchedMillis {
    /// Time on a CPU.
    pub on_cpu_ms: f64,
    /// Time runnable, waiting for a CPU.
    pub waiting_ms: f64,
}

impl From<SchedTime> for SchedMillis {
    fn from(time: SchedTime) -> Self {
        SchedMillis {
            on_cpu_ms: time.on_cpu.as_secs_f64() * 1000.0,
            waiting_ms: time.waiting.as_secs_f64() * 1000.0,
        }
    }
}

/// Every thread of process `pid` whose name (`comm`, at most 15 bytes) passes `wanted`;
/// `None` when the process is gone or the kernel keeps no schedstat. A thread that exits
/// between the listing and the read is skipped.
pub fn threads_of(pid: u32, wanted: impl Fn(&str) -> bool) -> Option<SchedTime> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = SchedTime::default();
    for task in tasks.flatten() {
        let dir = task.path();
        let Ok(name) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if !wanted(name.trim_end()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(dir.join("schedstat")) else {
            continue;
        };
        if let Some(time) = parse_schedstat(&stat) {
            total.on_cpu += time.on_cpu;
            total.waiting += time.waiting;
        }
    }
    Some(total)
}

/// Every thread of process `pid`.
pub fn process(pid: u32) -> Option<SchedTime> {
    threads_of(pid, |_| true)
}

/// `<on-cpu ns> <waiting ns> <timeslices>`.
fn parse_schedstat(text: &str) -> Option<SchedTime> {
    let mut fields = text.split_ascii_whitespace().map(str::parse::<u64>);
    let on_cpu = fields.next()?.ok()?;
    let waiting = fields.next()?.ok()?;
    Some(SchedTime {
        on_cpu: Duration::from_nanos(on_cpu),
        waiting: Duration::from_nanos(waiting),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_lines_parse_and_bad_ones_do_not() {
        assert_eq!(
            parse_schedstat("225778164 274793886 81\n"),
            Some(SchedTime {
                on_cpu: Duration::from_nanos(225_778_164),
                waiting: Duration::from_nanos(274_793_886),
            })
        );
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(parse_schedstat("12 x 3"), None);
    }

    #[test]
    fn a_busy_thread_of_this_process_is_counted_and_others_filtered_out() {
        let before = threads_of(std::process::id(), |name| name == "cpu-probe-busy").unwrap();
        assert_eq!(before, SchedTime::default());
        let spin = std::thread::Builder::new()
            .name("cpu-probe-busy".into())
            .spawn(|| {
                let mine = threads_of(std::process::id(), |name| name == "cpu-probe-busy");
                let started = std::time::Instant::now();
                let mut spins = 0u64;
                // Bounded by its own clock: at least 20 ms on a CPU or 2 s of wall time.
                while started.elapsed() < Duration::from_secs(2) {
                    spins = spins.wrapping_add(1);
                    let now = threads_of(std::process::id(), |name| name == "cpu-probe-busy");
                    if now
                        .zip(mine)
                        .is_some_and(|(now, mine)| (now - mine).on_cpu >= Duration::from_millis(20))
                    {
                        return true;
                    }
                }
                std::hint::black_box(spins);
                false
            })
            .unwrap();
        assert!(spin.join().unwrap(), "20 ms on a CPU not seen within 2 s");
        assert!(process(std::process::id()).unwrap().on_cpu > Duration::ZERO);
    }
}
