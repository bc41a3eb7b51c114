//! Policy: the pods of every scope, as a pure function of the plain
//! description.
//!
//! 1. [`normalize`] sorts the CPUs by OS index, rejects an empty list,
//!    duplicates and SMT siblings that disagree, splits an LLC shared by
//!    several NUMA nodes (or packages) at their boundaries, and renumbers every id
//!    densely in the order of its group's first CPU. After it, a group id is
//!    also the group's rank by first CPU.
//! 2. [`compute`] groups the CPUs by id for `cpu`, `smt`, `cache`, `numa` and
//!    `system`, and splits every LLC into `cache_shard` pods by
//!    [`shard_sizes`].

use std::collections::HashMap;

use super::{CpuInfo, Pod, TopologyError, TopologyErrorKind};
use crate::Scope;

/// Sorts, validates and densely renumbers a plain description.
pub(super) fn normalize(mut cpus: Vec<CpuInfo>) -> Result<Vec<CpuInfo>, TopologyError> {
    if cpus.is_empty() {
        return Err(TopologyError::new(
            TopologyErrorKind::EmptyCpuSet,
            "the CPU description holds no CPU: a topology needs at least one CPU; \
             pass at least one CpuInfo (or check the CPUs this process may run on)",
        ));
    }
    cpus.sort_by_key(|c| c.os_index);
    if let Some(pair) = cpus.windows(2).find(|w| w[0].os_index == w[1].os_index) {
        return Err(TopologyError::new(
            TopologyErrorKind::DuplicateCpu,
            format!(
                "CPU {} appears twice in the CPU description ({:?} and {:?}): \
                 give every CpuInfo its own os_index",
                pair[0].os_index, pair[0], pair[1]
            ),
        ));
    }
    renumber(&mut cpus, |c| &mut c.core);
    // An LLC shared by several NUMA nodes (Intel's sub-NUMA clustering:
    // one L3 per package, a node per quarter of it) is split at the nodes'
    // boundaries, as the kernel's LLC masks are: a `cache` or
    // `cache_shard` pod never spans nodes, and every scope nests in the
    // next. So is one that spans packages (no cache does: a description
    // that numbers each package's LLCs from 0 gets them apart, as the
    // steal order, which goes by package, has them). The triples are
    // numbered densely in order of first CPU.
    let mut llcs = HashMap::new();
    for cpu in &mut cpus {
        let next = llcs.len();
        cpu.llc = *llcs.entry((cpu.llc, cpu.numa, cpu.package)).or_insert(next);
    }
    renumber(&mut cpus, |c| &mut c.numa);
    renumber(&mut cpus, |c| &mut c.package);

    // Core ids are dense, so index the first CPU of each core by its id.
    let mut first_of_core: Vec<Option<&CpuInfo>> = vec![None; cpus.len()];
    for cpu in &cpus {
        match first_of_core[cpu.core] {
            None => first_of_core[cpu.core] = Some(cpu),
            Some(first)
                if (first.llc, first.numa, first.package) != (cpu.llc, cpu.numa, cpu.package) =>
            {
                return Err(TopologyError::new(
                    TopologyErrorKind::InconsistentCpu,
                    format!(
                        "CPUs {} and {} share a core but not their LLC, NUMA node or package \
                         (after renumbering: {:?} vs {:?}): SMT siblings must agree; \
                         fix the core ids of the description",
                        first.os_index, cpu.os_index, first, cpu
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(cpus)
}

/// For a machine as a reader found it (sysfs, hwloc, an XML export): SMT
/// siblings that disagree on their LLC, NUMA node or package (a VM whose
/// virtual NUMA layout splits a core, which QEMU boots with a warning) are
/// not siblings to wq. Each CPU that disagrees with its core's first CPU
/// gets a core of its own, as the kernel ignores such a sibling link
/// ("smt-sibling ... not on the same node"), where [`normalize`] would
/// refuse the machine and no runtime could be built on it. Returns the
/// CPUs moved, for a warning. `Topology::from_cpus` keeps the strict error.
pub(super) fn separate_disagreeing_siblings(cpus: &mut [CpuInfo]) -> Vec<usize> {
    let place = |c: &CpuInfo| (c.llc, c.numa, c.package);
    let mut first: HashMap<usize, (usize, (usize, usize, usize))> = HashMap::new();
    for c in cpus.iter() {
        let e = first.entry(c.core).or_insert((c.os_index, place(c)));
        if c.os_index < e.0 {
            *e = (c.os_index, place(c));
        }
    }
    let mut moved = Vec::new();
    for c in cpus.iter_mut() {
        if first[&c.core].1 != place(c) {
            // A key no reader uses (they key cores by a CPU number).
            c.core = usize::MAX - c.os_index;
            moved.push(c.os_index);
        }
    }
    moved.sort_unstable();
    moved
}

/// Replaces the ids of one field by 0, 1, 2 ... in order of first appearance.
fn renumber(cpus: &mut [CpuInfo], field: fn(&mut CpuInfo) -> &mut usize) {
    let mut ids = HashMap::new();
    for cpu in cpus {
        let next = ids.len();
        let id = field(cpu);
        *id = *ids.entry(*id).or_insert(next);
    }
}

/// The pods of every scope, indexed by [`Scope::index`]. `cpus` must come
/// from [`normalize`].
pub(super) fn compute(cpus: &[CpuInfo], shard_size: usize) -> [Vec<Pod>; Scope::ALL.len()] {
    let cpu = group(cpus, |c| c.os_index, Scope::Cpu);
    let smt = group(cpus, |c| c.core, Scope::Smt);
    let cache = group(cpus, |c| c.llc, Scope::Cache);
    let numa = group(cpus, |c| c.numa, Scope::Numa);
    let system = group(cpus, |_| 0, Scope::System);
    let shard = cache_shards(cpus, &cache, shard_size);
    [cpu, smt, shard, cache, numa, system]
}

/// Groups the CPUs by a key; the pods come out ordered by first CPU because
/// keys were renumbered in that order (`os_index` is sorted already).
fn group(cpus: &[CpuInfo], key: fn(&CpuInfo) -> usize, scope: Scope) -> Vec<Pod> {
    let mut slots: HashMap<usize, usize> = HashMap::new();
    let mut pods: Vec<Pod> = Vec::new();
    for cpu in cpus {
        let index = *slots.entry(key(cpu)).or_insert_with(|| {
            pods.push(Pod {
                scope,
                index: pods.len(),
                cpus: Vec::new(),
            });
            pods.len() - 1
        });
        pods[index].cpus.push(cpu.os_index);
    }
    pods
}

/// Splits every LLC pod into `cache_shard` pods on core boundaries.
fn cache_shards(cpus: &[CpuInfo], llcs: &[Pod], shard_size: usize) -> Vec<Pod> {
    let by_os: HashMap<usize, &CpuInfo> = cpus.iter().map(|c| (c.os_index, c)).collect();
    let mut shards: Vec<Pod> = Vec::new();
    for llc in llcs {
        // Cores of this LLC in order of their first CPU (the LLC's CPUs are
        // sorted, so first appearance is that order).
        let mut core_slot: HashMap<usize, usize> = HashMap::new();
        let mut cores: Vec<Vec<usize>> = Vec::new();
        for os in &llc.cpus {
            let core = by_os[os].core;
            let slot = *core_slot.entry(core).or_insert_with(|| {
                cores.push(Vec::new());
                cores.len() - 1
            });
            cores[slot].push(*os);
        }
        let mut next = cores.into_iter();
        for size in shard_sizes(core_slot.len(), shard_size) {
            let mut pod_cpus: Vec<usize> = next.by_ref().take(size).flatten().collect();
            pod_cpus.sort_unstable();
            shards.push(Pod {
                scope: Scope::CacheShard,
                index: shards.len(),
                cpus: pod_cpus,
            });
        }
    }
    // An LLC's CPUs may interleave with another's (e.g. 0,2,4 / 1,3,5), so
    // order shards by first CPU and reindex.
    shards.sort_by_key(|p| p.cpus[0]);
    for (index, pod) in shards.iter_mut().enumerate() {
        pod.index = index;
    }
    shards
}

/// How many cores each shard of an LLC with `cores` cores gets:
/// `max(1, round(cores / size))` shards (round half up), the first
/// `cores % shards` one core larger.
pub(super) fn shard_sizes(cores: usize, size: usize) -> Vec<usize> {
    debug_assert!(size > 0);
    // round(cores / size) half up = floor((2 * cores + size) / (2 * size)).
    let shards = ((2 * cores + size) / (2 * size)).max(1);
    let (base, extra) = (cores / shards, cores % shards);
    (0..shards).map(|i| base + usize::from(i < extra)).collect()
}

/// The pods' CPU lists as compact strings, for assertions in tests.
#[cfg(test)]
pub(super) fn describe(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .map(|p| super::format_cpu_list(&p.cpus))
        .collect()
}
