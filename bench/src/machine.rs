//! What the bench ran on, for the header of every table.

use std::fs;
use std::time::{SystemTime, UNIX_EPOCH};

/// CPU model (from `/proc/cpuinfo`), the machine's online CPUs and, if
/// fewer, those this process may use (its affinity, a cgroup quota: a
/// `taskset` run said "1 online CPUs" of a 2-CPU machine).
pub fn description() -> String {
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    describe(&model, machine_cpus(), online_cpus())
}

/// The description's text for `model`, `online` CPUs and `usable` of them.
fn describe(model: &str, online: usize, usable: usize) -> String {
    if usable < online {
        format!("{model}, {online} online CPUs, {usable} usable by this process")
    } else {
        format!("{model}, {online} online CPUs")
    }
}

/// The machine's online CPUs (`_SC_NPROCESSORS_ONLN`), whatever this
/// process may use.
pub fn machine_cpus() -> usize {
    // SAFETY: sysconf takes a constant and reads no memory of ours.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n)
        .ok()
        .filter(|&n| n > 0)
        .unwrap_or_else(online_cpus)
}

/// CPUs this process may run on (its affinity and cgroup quota; the
/// benchmarks' defaults).
pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Today's date (UTC), `YYYY-MM-DD`.
pub fn date() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    civil_date(secs / 86_400)
}

/// Days since 1970-01-01 to a `YYYY-MM-DD` (Howard Hinnant's algorithm).
fn civil_date(days: u64) -> String {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}")
}

/// The header printed above every result: machine, command, date.
pub fn header(command: &str) -> String {
    format!(
        "# machine: {}\n# command: {command}\n# date: {}\n# build: {}\n",
        description(),
        date(),
        build()
    )
}

/// The build profile: a debug build's figures are not the project's.
pub fn build() -> &'static str {
    if cfg!(debug_assertions) {
        "debug (figures not comparable: use cargo build --release -p wq-bench)"
    } else {
        "release"
    }
}

/// Threads of this process now (`/proc/self/task`).
pub fn thread_count() -> usize {
    fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// CPU time this process has used so far, user and system, in seconds
/// (`getrusage`: every thread's, the exited ones' included).
pub fn process_cpu_secs() -> f64 {
    let u = process_usage();
    u.user_secs + u.sys_secs
}

/// This process's resource usage so far (`getrusage`), every thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// CPU time in user space, seconds.
    pub user_secs: f64,
    /// CPU time in the kernel, seconds.
    pub sys_secs: f64,
    /// Context switches: a thread blocked (voluntary) or was preempted.
    pub switches: f64,
    /// Of those, preemptions (involuntary).
    pub preempted: f64,
}

impl Usage {
    /// What was used from `earlier` to this.
    pub fn since(self, earlier: Usage) -> Usage {
        Usage {
            user_secs: self.user_secs - earlier.user_secs,
            sys_secs: self.sys_secs - earlier.sys_secs,
            switches: self.switches - earlier.switches,
            preempted: self.preempted - earlier.preempted,
        }
    }
}

/// [`Usage`] now (zeros if `getrusage` fails).
pub fn process_usage() -> Usage {
    // SAFETY: an all-zero `rusage` is a valid value to be overwritten.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable `rusage`.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Usage::default();
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Usage {
        user_secs: secs(ru.ru_utime),
        sys_secs: secs(ru.ru_stime),
        switches: (ru.ru_nvcsw + ru.ru_nivcsw) as f64,
        preempted: ru.ru_nivcsw as f64,
    }
}

/// Resident set size of this process, bytes (`/proc/self/statm`).
pub fn rss_bytes() -> u64 {
    // SAFETY: sysconf has no preconditions; a failure (-1) falls back below.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as u64,
        _ => 4096,
    };
    fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * page)
}

/// Anonymous resident memory of this process, bytes (`RssAnon` in
/// `/proc/self/status`): heap, stacks and other private pages, without the
/// file-backed pages of mapped libraries that [`rss_bytes`] also counts.
pub fn rss_anon_bytes() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_process_limited_to_fewer_cpus_says_both() {
        assert_eq!(super::describe("X", 2, 2), "X, 2 online CPUs");
        assert_eq!(
            super::describe("X", 2, 1),
            "X, 2 online CPUs, 1 usable by this process"
        );
    }

    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(19_723), "2024-01-01");
        assert_eq!(civil_date(20_513), "2026-03-01");
    }

    #[test]
    fn proc_readings_are_plausible() {
        assert!(thread_count() >= 1);
        assert!(rss_bytes() > 0);
    }
}
