//! Pinning the calling thread to a set of CPUs: `sched_setaffinity` with a
//! mask sized to the highest CPU (`core_affinity`'s single-CPU call uses a
//! fixed 1,024-bit set and panics beyond it).
//!
//! hwloc's `bind_cpu(THREAD)` does the same system call on Linux, but needs
//! a loaded hwloc topology kept for the process's life: about 1.6 MiB of RSS
//! (measured by `wq-bench memory`), for nothing the system call does not do.

use std::io;

thread_local! {
    /// This thread was bound by wq (a worker, to its pool's `run_cpus`; a blocking thread
    /// or the rescuer, to every CPU, or to a rescued pool's).
    static BOUND: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether wq bound the calling thread to a pod's CPUs: its affinity is
/// then wq's choice, not the process's.
pub(crate) fn bound_by_wq() -> bool {
    BOUND.with(std::cell::Cell::get)
}

/// Pins the calling thread to `cpus` (OS indices). Errors on an empty set,
/// a set with no CPU of the cgroup's cpuset online, or a failed system
/// call. The kernel cuts the set to the cpuset, not to the affinity the
/// thread or the process had: CPUs a `taskset` narrowing left out are
/// bound all the same (`docs/architecture.md`, "Topology layer").
pub(crate) fn bind_current_thread(cpus: &[usize]) -> io::Result<()> {
    if cpus.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot bind a thread to an empty CPU set",
        ));
    }
    // One CPU or many, the same mask sized to the highest CPU:
    // `core_affinity::set_for_current` fills a fixed 1,024-bit `cpu_set_t`
    // and panics for a CPU numbered 1,024 or more.
    set_affinity(cpus)
        .inspect(|()| BOUND.with(|b| b.set(true)))
        .map_err(|e| match cpus {
            [cpu] => io::Error::new(
                e.kind(),
                format!("could not bind the thread to CPU {cpu} (is it online and allowed?): {e}"),
            ),
            _ => e,
        })
}

/// The CPUs the process's main thread may run on (its own mask, not the
/// calling thread's), `None` if unknown: where threads of a runtime on a
/// topology that is not this machine's run (they are bound to no pod).
pub(crate) fn process_cpus() -> Option<Vec<usize>> {
    // SAFETY: getpid has no preconditions.
    super::sysfs::affinity(unsafe { libc::getpid() }).ok()
}

/// The CPUs this process may use at once: `std::thread::available_parallelism`
/// (the affinity mask and, on Linux, the cgroup's CPU quota), read with
/// the process's mask (its main thread's) on a thread whose own mask is a
/// part of it: one wq bound to a pod (a runtime built inside a task), or
/// one that inherited such a binding (a thread started from a task, where
/// the docs say to pass the main thread's `Topology` along). There it is
/// read on a short-lived thread given the process's mask. A thread
/// allowed as much or more (the main thread narrowed itself after
/// starting it) reads its own. `usize::MAX` if unknown.
pub(crate) fn cpu_budget() -> usize {
    let read = || std::thread::available_parallelism().map_or(usize::MAX, usize::from);
    let Some(process) = process_cpus() else {
        return read();
    };
    let narrower = |mine: Vec<usize>| {
        mine.len() < process.len() && mine.iter().all(|c| process.binary_search(c).is_ok())
    };
    if !bound_by_wq() && !super::sysfs::affinity(0).is_ok_and(narrower) {
        return read();
    }
    let n = process.len();
    // A new thread inherits this one's mask: it widens its own first.
    std::thread::Builder::new()
        .name("wq-cpu-budget".into())
        .spawn(move || match set_affinity(&process) {
            Ok(()) => read(),
            Err(_) => process.len(),
        })
        .ok()
        .and_then(|t| t.join().ok())
        // No thread to spare: the process's mask, without the quota.
        .unwrap_or(n)
}

/// `sched_setaffinity` on the calling thread with a mask sized to `cpus`.
fn set_affinity(cpus: &[usize]) -> io::Result<()> {
    const WORD_BITS: usize = libc::c_ulong::BITS as usize;
    let max = cpus.iter().copied().max().unwrap_or(0);
    // At least glibc's CPU_SETSIZE, so the kernel never reads past the end.
    let words = (max / WORD_BITS + 1).max(1024 / WORD_BITS);
    let mut mask: Vec<libc::c_ulong> = vec![0; words];
    for &cpu in cpus {
        mask[cpu / WORD_BITS] |= 1 << (cpu % WORD_BITS);
    }
    let bytes = words * std::mem::size_of::<libc::c_ulong>();
    // SAFETY: (1) `mask` is a live buffer of exactly `bytes` bytes, which the
    // kernel only reads; (2) `cpu_set_t` is an array of `c_ulong`, so the
    // buffer has its alignment; (3) pid 0 means the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, bytes, mask.as_ptr().cast::<libc::cpu_set_t>()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_set_is_rejected() {
        assert_eq!(
            bind_current_thread(&[]).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn binds_a_spawned_thread_to_an_allowed_cpu() {
        let allowed = super::super::sysfs::allowed_cpus().unwrap();
        let last = *allowed.last().unwrap();
        std::thread::spawn(move || {
            let mine = || super::super::sysfs::affinity(0).unwrap();
            assert!(!bound_by_wq());
            bind_current_thread(&[last]).unwrap();
            assert_eq!(mine(), vec![last]);
            assert!(bound_by_wq());
            // Bound by wq, the thread reads the process's CPUs for a
            // topology, not its own.
            assert_eq!(super::super::sysfs::allowed_cpus().unwrap(), allowed);
            bind_current_thread(&allowed).unwrap();
            assert_eq!(mine(), allowed);
            set_affinity(&[last]).unwrap();
            assert_eq!(mine(), vec![last]);
        })
        .join()
        .unwrap();
    }

    /// A thread started from a task inherits its worker's one-CPU mask
    /// without being bound by wq: a runtime built there (on the main
    /// thread's topology, as the docs advise) still gets the process's
    /// budget, not one CPU's.
    #[test]
    fn the_budget_is_the_processs_on_a_thread_that_inherited_a_narrow_mask() {
        let process = cpu_budget();
        let allowed = super::super::sysfs::allowed_cpus().unwrap();
        if allowed.len() < 2 || process < 2 {
            return;
        }
        let last = *allowed.last().unwrap();
        let inherited = std::thread::spawn(move || {
            set_affinity(&[last]).unwrap();
            std::thread::spawn(move || {
                assert!(!bound_by_wq());
                assert_eq!(super::super::sysfs::affinity(0).unwrap(), vec![last]);
                cpu_budget()
            })
            .join()
            .unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(inherited, process);
    }
}
