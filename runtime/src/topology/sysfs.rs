//! The Linux sysfs reader, and the calling thread's affinity mask.
//!
//! For each online CPU the calling thread may run on (`sched_getaffinity`):
//! 1. core: the first CPU of `cpuN/topology/thread_siblings_list` (missing:
//!    the CPU is its own core);
//! 2. package: `cpuN/topology/physical_package_id` (missing or -1: 0);
//! 3. LLC: the first CPU of `shared_cpu_list` of the highest-`level`
//!    non-instruction cache in `cpuN/cache/index*` (none: the core);
//! 4. NUMA node: the `node/nodeM/cpulist` that lists the CPU (none: node 0).
//!
//! The keys are renumbered by `Topology::build`, so the result is the
//! hwloc reader's on the same machine (hwloc reads the same files) but
//! where hwloc reads differently: `docs/architecture.md` lists the cases
//! known (x86 CPUs without a `topology` directory, which hwloc fills in
//! from CPUID; AMD family 15h/16h compute units, whose two threads hwloc
//! makes two cores where their `thread_siblings_list` pairs them; NUMA
//! nodes that hwloc widens by HMAT initiators).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{
    CpuInfo, DEFAULT_CACHE_SHARD_SIZE, Topology, TopologyError, TopologyErrorKind, format_cpu_list,
    parse_cpu_list,
};

/// Where Linux publishes the CPU and NUMA topology.
const SYSFS_ROOT: &str = "/sys/devices/system";

/// Reads the live machine from sysfs.
pub(super) fn detect() -> Result<Topology, TopologyError> {
    let allowed = allowed_cpus()?;
    let cpus = read(Path::new(SYSFS_ROOT), &allowed)?;
    Topology::build(
        super::as_found(cpus, "sysfs"),
        DEFAULT_CACHE_SHARD_SIZE,
        "sysfs (this machine)".to_owned(),
        true,
    )
}

/// The plain description of the CPUs under `root` (a copy of
/// `/sys/devices/system`) that are online and in `allowed`.
pub(super) fn read(root: &Path, allowed: &[usize]) -> Result<Vec<CpuInfo>, TopologyError> {
    let cpu_dir = root.join("cpu");
    let online = match fs::read_to_string(cpu_dir.join("online")) {
        Ok(text) => parse_cpu_list(&text).ok_or_else(|| {
            TopologyError::new(
                TopologyErrorKind::Io,
                format!(
                    "cannot parse {} ({text:?}) as a CPU list: is this a Linux sysfs? \
                     use Topology::synthetic or Topology::from_cpus instead",
                    cpu_dir.join("online").display()
                ),
            )
        })?,
        Err(e) => listed_cpus(&cpu_dir).map_err(|_| {
            TopologyError::new(
                TopologyErrorKind::Io,
                format!(
                    "cannot read the CPUs from {}: wq reads Linux sysfs; mount /sys, or \
                     build with the `hwloc` feature, or describe the machine with \
                     Topology::synthetic or Topology::from_cpus",
                    cpu_dir.display()
                ),
            )
            .with_source(e)
        })?,
    };
    if online.is_empty() {
        return Err(TopologyError::new(
            TopologyErrorKind::Io,
            format!(
                "{} lists no CPU (an empty online list, or none and no cpuN directory): \
                 is this a Linux sysfs? mount /sys, or build with the `hwloc` feature, \
                 or describe the machine with Topology::synthetic or Topology::from_cpus",
                cpu_dir.display()
            ),
        ));
    }
    // A set, not a scan of the list per CPU (8,192 CPUs made 67 million
    // comparisons).
    let allowed_set: std::collections::HashSet<usize> = allowed.iter().copied().collect();
    let usable: Vec<usize> = online
        .iter()
        .copied()
        .filter(|c| allowed_set.contains(c))
        .collect();
    if usable.is_empty() {
        return Err(TopologyError::new(
            TopologyErrorKind::EmptyCpuSet,
            format!(
                "none of the online CPUs ({}) is in this thread's affinity mask ({}): \
                 run the process with at least one online CPU allowed (taskset, cgroup cpuset)",
                format_cpu_list(&online),
                format_cpu_list(allowed)
            ),
        ));
    }
    let numa_of = numa_nodes(&root.join("node"));
    Ok(usable
        .into_iter()
        .map(|os_index| {
            let dir = cpu_dir.join(format!("cpu{os_index}"));
            let topo = dir.join("topology");
            let core = read_list(&topo.join("thread_siblings_list"))
                .and_then(|l| l.first().copied())
                .unwrap_or(os_index);
            let package = read_trimmed(&topo.join("physical_package_id"))
                .and_then(|t| t.parse::<i64>().ok())
                .and_then(|id| usize::try_from(id).ok())
                .unwrap_or(0);
            let llc = last_level_cache(&dir.join("cache")).unwrap_or(core);
            let numa = numa_of
                .iter()
                .find(|(_, cpus)| cpus.contains(&os_index))
                .map_or(0, |(node, _)| *node);
            CpuInfo {
                os_index,
                core,
                llc,
                numa,
                package,
            }
        })
        .collect())
}

/// The `cpuN` directories, when `online` is missing.
fn listed_cpus(cpu_dir: &Path) -> io::Result<Vec<usize>> {
    let mut cpus: Vec<usize> = fs::read_dir(cpu_dir)?
        .filter_map(|entry| {
            entry
                .ok()?
                .file_name()
                .to_str()?
                .strip_prefix("cpu")?
                .parse()
                .ok()
        })
        .collect();
    cpus.sort_unstable();
    Ok(cpus)
}

/// The first CPU sharing the highest-level data or unified cache.
fn last_level_cache(cache_dir: &Path) -> Option<usize> {
    let mut best: Option<(u32, usize)> = None;
    for entry in fs::read_dir(cache_dir).ok()?.flatten() {
        let index: PathBuf = entry.path();
        let is_index = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("index"));
        if !is_index || read_trimmed(&index.join("type")).as_deref() == Some("Instruction") {
            continue;
        }
        let Some(level) = read_trimmed(&index.join("level")).and_then(|l| l.parse().ok()) else {
            continue;
        };
        let Some(first) =
            read_list(&index.join("shared_cpu_list")).and_then(|l| l.first().copied())
        else {
            continue;
        };
        if best.is_none_or(|(best_level, _)| level > best_level) {
            best = Some((level, first));
        }
    }
    best.map(|(_, first)| first)
}

/// `(node number, its CPUs)` for every `nodeM` directory (empty when the
/// kernel has no NUMA support).
fn numa_nodes(node_dir: &Path) -> Vec<(usize, Vec<usize>)> {
    let Ok(entries) = fs::read_dir(node_dir) else {
        return Vec::new();
    };
    let mut nodes: Vec<(usize, Vec<usize>)> = entries
        .flatten()
        .filter_map(|entry| {
            let node = entry
                .file_name()
                .to_str()?
                .strip_prefix("node")?
                .parse()
                .ok()?;
            Some((node, read_list(&entry.path().join("cpulist"))?))
        })
        .collect();
    nodes.sort();
    nodes
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|t| t.trim().to_owned())
}

fn read_list(path: &Path) -> Option<Vec<usize>> {
    parse_cpu_list(&fs::read_to_string(path).ok()?)
}

/// The CPUs the calling thread may run on (`sched_getaffinity`), sorted;
/// on a thread of a wq runtime (a worker or a rescuer, bound by wq to its
/// pod), those of the process's main thread instead: a runtime built inside
/// another's task must not see only that task's pod.
pub(super) fn allowed_cpus() -> Result<Vec<usize>, TopologyError> {
    let pid = if super::bind::bound_by_wq() {
        // SAFETY: getpid has no preconditions.
        unsafe { libc::getpid() }
    } else {
        0
    };
    affinity(pid)
}

/// The CPUs thread `pid` may run on (0: the calling thread), sorted.
pub(super) fn affinity(pid: libc::pid_t) -> Result<Vec<usize>, TopologyError> {
    const WORD_BITS: usize = libc::c_ulong::BITS as usize;
    // Start at glibc's CPU_SETSIZE (1024 CPUs); grow while the kernel says
    // the mask is larger (EINVAL).
    let mut words = 1024 / WORD_BITS;
    loop {
        let mut mask: Vec<libc::c_ulong> = vec![0; words];
        let bytes = words * std::mem::size_of::<libc::c_ulong>();
        // SAFETY: (1) `mask` is a live, writable buffer of exactly `bytes`
        // bytes, and the kernel writes at most `bytes` bytes into it;
        // (2) `cpu_set_t` is an array of `c_ulong`, so the buffer has its
        // alignment; (3) pid 0 means the calling thread, the process's id
        // its main thread.
        let rc = unsafe {
            libc::sched_getaffinity(pid, bytes, mask.as_mut_ptr().cast::<libc::cpu_set_t>())
        };
        if rc == 0 {
            return Ok(mask
                .iter()
                .enumerate()
                .flat_map(|(w, &bits)| {
                    (0..WORD_BITS)
                        .filter(move |b| bits & (1 << b) != 0)
                        .map(move |b| w * WORD_BITS + b)
                })
                .collect());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINVAL) && words < (1 << 20) {
            words *= 2;
            continue;
        }
        return Err(TopologyError::new(
            TopologyErrorKind::Io,
            "sched_getaffinity failed, so the CPUs this thread may run on are unknown: \
             run on Linux, or describe the machine with Topology::synthetic or Topology::from_cpus",
        )
        .with_source(err));
    }
}
