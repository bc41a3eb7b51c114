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

impl SchedStat {
    /// Summed over this process's threads whose name starts with one of
    /// `prefixes` (threads that exited are not counted).
    pub fn of_threads(prefixes: &[&str]) -> SchedStat {
        let mut total = SchedStat::default();
        let Ok(dir) = fs::read_dir("/proc/self/task") else {
            return total;
        };
        for entry in dir.flatten() {
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
            total.on_cpu_ns += fields.next().unwrap_or(0);
            total.run_queue_ns += fields.next().unwrap_or(0);
        }
        total
    }

    /// `self - earlier`, per field (saturating: threads may have exited).
    pub fn since(self, earlier: SchedStat) -> SchedStat {
        SchedStat {
            on_cpu_ns: self.on_cpu_ns.saturating_sub(earlier.on_cpu_ns),
            run_queue_ns: self.run_queue_ns.saturating_sub(earlier.run_queue_ns),
        }
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
                SchedStat::of_threads(&["schedstat-probe"])
            })
            .unwrap();
        let s = t.join().unwrap();
        assert!(s.on_cpu_ns > 0, "{s:?}");
        assert_eq!(
            SchedStat::of_threads(&["no-such-thread"]),
            SchedStat::default()
        );
    }
}
