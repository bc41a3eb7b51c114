//! Busy neighbours: processes that want every cycle of a CPU, started
//! beside a benchmark (`--busy-neighbours N`), as a build or another
//! service would be on a shared machine; and the scheduler statistics
//! that show what they cost a runtime's threads.
//!
//! Each neighbour is this binary re-run with the hidden `busy-loop`
//! subcommand: a separate process (as `sh -c 'while :; do :; done'` would
//! be), not a thread, so the kernel's fair scheduler treats it as another
//! task group member would. It asks the kernel to kill it when its parent
//! dies (`PR_SET_PDEATHSIG`), and [`Neighbours`] kills and reaps them when
//! dropped: a benchmark that fails leaves no spinning process behind. The
//! `k`th neighbour is pinned to the `k mod CPUs`th allowed CPU.

use std::fs;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};

/// Makes the child of `cmd` die (SIGKILL) when this process does, set in
/// the child before it runs its program: a benchmark killed by a timeout
/// (a CI step, `kill` of this pid alone) leaves no `wrk`, probe or busy
/// loop running. A child whose parent died before the `prctl` exits at
/// once (its parent pid is no longer this one).
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec: it only
    // makes two async-signal-safe system calls (prctl, getppid) and
    // `_exit`, and touches no lock or allocation.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );
            if libc::getppid() as u32 != parent {
                libc::_exit(0);
            }
            Ok(())
        })
    }
}

/// Pins the child of `cmd` to CPU `cpu` before it runs its program.
fn pin_child(cmd: &mut Command, cpu: usize) -> &mut Command {
    // SAFETY: as in `die_with_parent`: `cpu_set_t` is plain data built on
    // the stack, and sched_setaffinity is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            // Best effort: a CPU the child may not use leaves it unpinned.
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            Ok(())
        })
    }
}

/// The busy-loop processes of one run; killed when dropped.
#[derive(Debug)]
pub struct Neighbours {
    children: Vec<Child>,
}

impl Neighbours {
    /// Starts `n` busy-loop processes (none for 0), the `k`th pinned to
    /// the `k mod CPUs`th CPU this process may use: one per CPU, as a
    /// neighbour on each (unpinned, the scheduler could stack two on one
    /// CPU and leave another quiet, a spread of its own run to run).
    pub fn start(n: usize) -> Result<Neighbours, String> {
        let exe = std::env::current_exe().map_err(|e| format!("--busy-neighbours: {e}"))?;
        // Collected as they start: if one fails, dropping `started` kills
        // the ones already running.
        let mut started = Neighbours {
            children: Vec::with_capacity(n),
        };
        let cpus: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        for k in 0..n {
            let mut cmd = Command::new(&exe);
            cmd.arg("busy-loop")
                .arg(std::process::id().to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if !cpus.is_empty() {
                pin_child(&mut cmd, cpus[k % cpus.len()]);
            }
            let child = cmd
                .spawn()
                .map_err(|e| format!("--busy-neighbours: could not start a busy loop: {e}"))?;
            started.children.push(child);
        }
        if n > 0 {
            // `spawn` returns before the children run: let them reach their
            // loops, so the first measured iteration is not a quiet one.
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Ok(started)
    }

    /// How many run.
    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// Whether none runs.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }
}

impl Drop for Neighbours {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}

/// The body of `wq-bench busy-loop PARENT_PID`: spins until killed.
pub fn busy_loop(parent: u32) -> ! {
    // SAFETY: prctl(PR_SET_PDEATHSIG, SIGKILL) takes plain integers and
    // changes only this process's death signal.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
    }
    // The parent may have died before the prctl: then nobody would kill
    // us. Compared with the pid it gave, not with 1: an orphan is adopted
    // by the nearest subreaper (`systemd --user`, a container's init),
    // which need not be pid 1.
    // SAFETY: getppid has no preconditions.
    let ppid = unsafe { libc::getppid() };
    if i64::from(ppid) != i64::from(parent) {
        std::process::exit(0);
    }
    let mut x = 0u64;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

/// Scheduler statistics of a set of threads: time on a CPU, time waiting
/// on a run queue (`/proc/self/task/<tid>/schedstat`), in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedStat {
    /// Time spent running.
    pub on_cpu_ns: u64,
    /// Time spent runnable but waiting for a CPU.
    pub run_queue_ns: u64,
}

/// One reading of [`SchedStat`] per thread, by thread id: two readings
/// subtract thread by thread ([`Threads::since`]), so a thread that
/// exits between them takes nothing off the others' figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Threads(std::collections::HashMap<u64, SchedStat>);

impl Threads {
    /// This process's threads whose name starts with one of `prefixes`.
    pub fn named(prefixes: &[&str]) -> Threads {
        let mut threads = Threads::default();
        let Ok(dir) = fs::read_dir("/proc/self/task") else {
            return threads;
        };
        for entry in dir.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            let path = entry.path();
            let Ok(name) = fs::read_to_string(path.join("comm")) else {
                continue;
            };
            if !prefixes.iter().any(|p| name.trim_end().starts_with(p)) {
                continue;
            }
            let Ok(stat) = fs::read_to_string(path.join("schedstat")) else {
                continue;
            };
            let mut fields = stat
                .split_whitespace()
                .map(|f| f.parse::<u64>().unwrap_or(0));
            let on_cpu_ns = fields.next().unwrap_or(0);
            let run_queue_ns = fields.next().unwrap_or(0);
            threads.0.insert(
                tid,
                SchedStat {
                    on_cpu_ns,
                    run_queue_ns,
                },
            );
        }
        threads
    }

    /// Summed over the threads read.
    pub fn total(&self) -> SchedStat {
        self.0
            .values()
            .fold(SchedStat::default(), |t, s| SchedStat {
                on_cpu_ns: t.on_cpu_ns + s.on_cpu_ns,
                run_queue_ns: t.run_queue_ns + s.run_queue_ns,
            })
    }

    /// What the threads read now did since `earlier`, summed: a thread
    /// read only now counts whole (it was born between the readings), one
    /// read only `earlier` not at all (what it did after that reading,
    /// before it exited, is not known).
    pub fn since(&self, earlier: &Threads) -> SchedStat {
        self.0.iter().fold(SchedStat::default(), |t, (tid, now)| {
            let before = earlier.0.get(tid).copied().unwrap_or_default();
            SchedStat {
                on_cpu_ns: t.on_cpu_ns + now.on_cpu_ns.saturating_sub(before.on_cpu_ns),
                run_queue_ns: t.run_queue_ns + now.run_queue_ns.saturating_sub(before.run_queue_ns),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_reads_the_named_threads() {
        let t = std::thread::Builder::new()
            .name("schedstat-probe".into())
            .spawn(|| {
                let start = std::time::Instant::now();
                while start.elapsed() < std::time::Duration::from_millis(20) {
                    std::hint::spin_loop();
                }
                Threads::named(&["schedstat-probe"]).total()
            })
            .unwrap();
        let s = t.join().unwrap();
        assert!(s.on_cpu_ns > 0, "{s:?}");
        assert_eq!(
            Threads::named(&["no-such-thread"]).total(),
            SchedStat::default()
        );
    }

    /// Spins until the calling thread has run `ms` milliseconds on a CPU
    /// (its own clock: time waiting for a CPU does not count).
    fn spin(ms: u64) {
        let on_cpu = || {
            let mut t = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `t` is a valid timespec to write.
            let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
            assert_eq!(r, 0, "clock_gettime");
            t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
        };
        let start = on_cpu();
        while on_cpu() - start < ms * 1_000_000 {
            std::hint::spin_loop();
        }
    }

    /// A thread that exits between two readings takes nothing off what
    /// the others did (its lifetime total came off the sum before).
    #[test]
    fn a_thread_that_exits_between_readings_takes_nothing_off_the_others() {
        let (a_read, read_a) = std::sync::mpsc::channel::<Threads>();
        let a = std::thread::Builder::new()
            .name("sst-a".into())
            .spawn(move || {
                spin(60);
                // The first reading, taken while this thread lives.
                a_read.send(Threads::named(&["sst-"])).unwrap();
            })
            .unwrap();
        let before = read_a.recv().unwrap();
        a.join().unwrap();
        let b = std::thread::Builder::new()
            .name("sst-b".into())
            .spawn(move || {
                spin(10);
                Threads::named(&["sst-"])
            })
            .unwrap();
        let after = b.join().unwrap();
        assert_eq!(before.0.len(), 1, "{before:?}");
        let done = after.since(&before);
        assert!(done.on_cpu_ns >= 9_000_000, "sst-b ran 10 ms: {done:?}");
    }
}
