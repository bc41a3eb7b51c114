//! Placement: which pod a task goes to, and which pods a non-strict pool's
//! idle workers take work from. Pure functions of the topology (and of the
//! calling thread's CPU), tested on synthetic machines.
//!
//! # The pod of a spawn
//! A task spawned with scope S goes to the S-pod holding the spawning CPU:
//! `sched_getcpu()` on a topology read from this machine (for a worker of
//! a non-strict `cache_shard` pool running on another shard's CPU, which
//! its binding to the whole cache allows, a CPU of its own pod when it
//! spawns at `cache_shard` scope into pools of its own pool's attributes:
//! those spawns stay in its pool, as they do while it runs at home; a
//! spawn into a strict or high-priority queue's pools goes by where it
//! runs, as any thread's); on a synthetic or
//! XML one, a worker's virtual CPU (a CPU of its pod) or, for other threads
//! (a worker of another runtime included), a CPU picked once per thread in
//! turn (by thread ordinal). A worker running on a CPU the topology does
//! not know (moved there by `taskset -a`, or by a library's
//! `sched_setaffinity` in a task; a CPU added since) places by the CPU of
//! its pod it stands for, as on a synthetic topology: its spawns stay in
//! its pool. Any other CPU the topology does not know (outside the
//! allowed set, or named by `spawn_on_cpu`) falls back to round-robin
//! over the pods.
//!
//! # Steal order
//! For each pod, the other pods of its scope ordered by the narrowest wider
//! scope they share with it (same cache, then same NUMA node, then the
//! rest), then by index: an idle worker of a non-strict pool looks at the
//! nearest pools first. A pool that is the pod of several scopes (the
//! same CPUs) looks at their pods merged by distance (the narrowest scope
//! whose pod holds both), each pool once; scopes that split the machine
//! alike (`smt` without SMT) count as one.

use crate::pool::{PoolAttrs, current};
use crate::{Scope, Topology};

/// The pod of `scope` for a task spawned now on the runtime whose scheduler
/// is at `host`: `cpu`'s if given, else the calling thread's;
/// `round_robin` gives a fresh number when the CPU is not in the topology.
pub(crate) fn pod(
    topology: &Topology,
    host: *const (),
    scope: Scope,
    attrs: PoolAttrs,
    cpu: Option<usize>,
    round_robin: impl FnOnce() -> usize,
) -> usize {
    let pods = topology.pods(scope);
    if pods.len() == 1 {
        return 0;
    }
    choose(
        topology,
        scope,
        cpu,
        || current_cpu(topology, host, scope, attrs),
        || current::virtual_cpu_of(host),
    )
    .unwrap_or_else(|| round_robin() % pods.len())
}

/// [`pod`]'s choice from the CPUs it may go by, `None` for round-robin:
/// `cpu` if given, else the calling thread's (`current`), else, if the
/// topology does not know that one, the CPU of its pod a worker of the
/// runtime stands for (`virtual_cpu`; module docs).
fn choose(
    topology: &Topology,
    scope: Scope,
    cpu: Option<usize>,
    current: impl FnOnce() -> Option<usize>,
    virtual_cpu: impl FnOnce() -> Option<usize>,
) -> Option<usize> {
    cpu.or_else(|| known_cpu(topology, scope, current, virtual_cpu))
        .and_then(|cpu| topology.pod_of(scope, cpu))
        .map(|p| p.index())
}

/// The CPU [`choose`] goes by when none is given: the calling thread's,
/// else, if the topology does not know that one, the one a worker stands
/// for; `None` if the topology knows neither.
fn known_cpu(
    topology: &Topology,
    scope: Scope,
    current: impl FnOnce() -> Option<usize>,
    virtual_cpu: impl FnOnce() -> Option<usize>,
) -> Option<usize> {
    let known = |cpu: &usize| topology.pod_of(scope, *cpu).is_some();
    current()
        .filter(known)
        .or_else(|| virtual_cpu().filter(known))
}

/// The CPU a spawn made now with no CPU given is placed by, kept for an
/// item placed later, maybe by another thread (a named queue's item that
/// waits for a slot): [`known_cpu`] for the calling thread, so it goes
/// to the pod of the CPU it was submitted on, as at once. (The thread's raw
/// CPU, unknown to the topology, sent it round-robin.) `None` where the
/// thread has no CPU the topology knows: the item is then placed at its
/// release by the releasing thread's CPU (usually that of the worker that
/// ended the item before it), where at once it would have gone
/// round-robin.
pub(crate) fn placing_cpu(
    topology: &Topology,
    host: *const (),
    scope: Scope,
    attrs: PoolAttrs,
) -> Option<usize> {
    known_cpu(
        topology,
        scope,
        || current_cpu(topology, host, scope, attrs),
        || current::virtual_cpu_of(host),
    )
}

/// The CPU placement on `host`'s runtime uses for the calling thread (see
/// the module docs). A worker's virtual CPU is one of its own runtime's
/// topology: a worker of another runtime is placed as any other thread.
pub(crate) fn current_cpu(
    topology: &Topology,
    host: *const (),
    scope: Scope,
    attrs: PoolAttrs,
) -> Option<usize> {
    if topology.is_live() {
        // SAFETY: sched_getcpu has no preconditions; it returns -1 on
        // error, handled below.
        let cpu = unsafe { libc::sched_getcpu() };
        return usize::try_from(cpu).ok().map(|cpu| {
            // Only a split cache has pools whose workers run outside their
            // pod: elsewhere, not even the thread-local is read. And only
            // the shard is the worker's own: a `cpu` or `smt` spawn goes to
            // the CPU it runs on, a wider one to a pod holding both.
            if scope == Scope::CacheShard && topology.splits_caches() {
                current::placement_cpu(host, cpu, attrs)
            } else {
                cpu
            }
        });
    }
    current::virtual_cpu_of(host).or_else(|| {
        let cpus = topology.cpus();
        Some(cpus[current::thread_ordinal() % cpus.len()].os_index)
    })
}

/// The most pods a pool's idle workers look at in other pods (the nearest
/// ones): the lists would otherwise take pods² entries per scope (8 bytes
/// each: 512 MiB for the `cpu` scope of 8,192 CPUs), and a steal from the
/// far side of a big machine is worth little anyway.
pub(crate) const MAX_STEAL_PODS: usize = 64;

/// For each pod of `scope`, the other pods, nearest first, at most
/// [`MAX_STEAL_PODS`] (module docs): those sharing its pod of the next
/// wider scope, then of the one after, and so on -- its package counts as
/// a level between `numa` and `system` (a socket's other NUMA nodes, with
/// sub-NUMA clustering or EPYC's NPS2/NPS4, before the other socket's) --
/// and within one distance in pod order starting after its own, wrapping
/// (so that the idle pools of a cache do not all try its first pod first).
///
/// Walks each pod's groups outward instead of measuring every pair: a
/// runtime on 8,192 CPUs would otherwise compare 67 million pairs per scope
/// when it is built. A pod's work is at most one pass over each of its
/// groups' first `MAX_STEAL_PODS` pods beyond those already taken.
pub(crate) fn steal_order(topology: &Topology, scope: Scope) -> Box<[Box<[usize]>]> {
    let pods = topology.pods(scope);
    // For each wider level: each pod's group, and each group's pods in
    // order. A CPU a level does not know (none does, on a checked
    // topology) makes a group of its own, as the pairwise rule had it.
    let levels: Vec<(Vec<usize>, Vec<Vec<usize>>)> = wider_levels(topology, scope)
        .iter()
        .map(|(group_of, groups)| {
            let unknown = *groups;
            let of: Vec<usize> = pods
                .iter()
                .map(|pod| group_of.get(&pod.cpus()[0]).copied().unwrap_or(unknown))
                .collect();
            let mut members = vec![Vec::new(); unknown + 1];
            for (pod, &group) in of.iter().enumerate() {
                members[group].push(pod);
            }
            (of, members)
        })
        .collect();
    // `taken[p] == me + 1`: pod `p` is already in `me`'s list.
    let mut taken = vec![0usize; pods.len()];
    (0..pods.len())
        .map(|me| {
            let want = MAX_STEAL_PODS.min(pods.len() - 1);
            let mut order = Vec::with_capacity(want);
            taken[me] = me + 1;
            let mut take = |candidates: &mut dyn Iterator<Item = usize>, order: &mut Vec<usize>| {
                for p in candidates {
                    if order.len() == want {
                        return;
                    }
                    if taken[p] != me + 1 {
                        taken[p] = me + 1;
                        order.push(p);
                    }
                }
            };
            for (of, members) in &levels {
                let group = &members[of[me]];
                let after = group.partition_point(|&p| p <= me);
                take(
                    &mut group[after..].iter().chain(&group[..after]).copied(),
                    &mut order,
                );
            }
            // Pods sharing no wider group (none, while `system` holds every
            // CPU).
            take(&mut (me + 1..pods.len()).chain(0..me), &mut order);
            order.into_boxed_slice()
        })
        .collect()
}

/// Per scope (by [`Scope::index`]): whether its pods are those of a
/// narrower scope (`smt` without SMT is `cpu`; `cache` is `cache_shard`
/// where no cache is split): a pool that is a pod of both has the same
/// neighbours in each, looked at once.
pub(crate) fn repeats_a_narrower(topology: &Topology) -> [bool; 6] {
    let same = |a: Scope, b: Scope| {
        let (a, b) = (topology.pods(a), topology.pods(b));
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.cpus() == y.cpus())
    };
    Scope::ALL.map(|s| {
        Scope::ALL
            .iter()
            .take_while(|&&n| n != s)
            .any(|&n| same(n, s))
    })
}

/// The steal orders of a pool of `cpus` that is a pod of each of
/// `served`'s scopes (splitting the machine differently), merged: every
/// other pod by distance -- the narrowest scope whose pod holds both its
/// first CPU and the pool's within their package, else the package, else
/// the machine, the levels [`steal_order`] walks -- and within one distance in the order the
/// scopes' own orders give, narrowest scope first; a pod of the same CPUs
/// as one already taken (the same pool), or as the pool's own, left out;
/// at most [`MAX_STEAL_PODS`]. Walking the scopes one after another took a
/// narrow scope's pods on another NUMA node before a wider scope's on the
/// pool's own.
pub(crate) fn merged_steal_order(
    topology: &Topology,
    orders: &[Box<[Box<[usize]>]>; 6],
    cpus: &[usize],
    served: &[(Scope, usize)],
) -> Box<[(Scope, usize)]> {
    let me = cpus[0];
    // The levels `steal_order` walks: each scope below `system` within
    // the package (a NUMA node that spans packages is split by them),
    // then the package, then the rest.
    let package: std::collections::HashMap<usize, usize> = topology
        .cpus()
        .iter()
        .map(|c| (c.os_index, c.package))
        .collect();
    let distance = |cpu: usize| {
        let same_package = package.get(&me) == package.get(&cpu);
        let within = Scope::ALL[..Scope::ALL.len() - 1].iter().position(|&w| {
            same_package
                && topology
                    .pod_index_of(w, me)
                    .is_some_and(|p| topology.pod_index_of(w, cpu) == Some(p))
        });
        within.unwrap_or(if same_package {
            Scope::ALL.len() - 1
        } else {
            Scope::ALL.len()
        })
    };
    let mut all: Vec<(usize, usize, Scope, usize)> = Vec::new();
    for &(scope, pod) in served {
        for &other in orders[scope.index()][pod].iter() {
            let first = topology.pods(scope)[other].cpus()[0];
            all.push((distance(first), all.len(), scope, other));
        }
    }
    all.sort_unstable_by_key(|&(d, seq, ..)| (d, seq));
    let mut taken: Vec<&[usize]> = vec![cpus];
    all.into_iter()
        .filter(|&(_, _, scope, pod)| {
            let c = topology.pods(scope)[pod].cpus();
            let new = !taken.contains(&c);
            if new {
                taken.push(c);
            }
            new
        })
        .map(|(_, _, scope, pod)| (scope, pod))
        .take(MAX_STEAL_PODS)
        .collect()
}

/// The levels wider than `scope`, nearest first: each CPU's group at that
/// level, and how many groups it has -- the wider scopes' pods, each split
/// by package (a NUMA node that spans packages: no NUMA information,
/// EPYC's NPS0, a VM with sockets and no nodes), with the packages a level
/// of their own before `system`.
fn wider_levels(
    topology: &Topology,
    scope: Scope,
) -> Vec<(std::collections::HashMap<usize, usize>, usize)> {
    use std::collections::HashMap;
    let package: HashMap<usize, usize> = topology
        .cpus()
        .iter()
        .map(|c| (c.os_index, c.package))
        .collect();
    // Dense ids for `key(cpu)` over every CPU.
    let level = |key: &dyn Fn(usize) -> (Option<usize>, usize)| {
        let mut ids = HashMap::new();
        let group_of: HashMap<usize, usize> = topology
            .cpus()
            .iter()
            .map(|c| {
                let n = ids.len();
                (c.os_index, *ids.entry(key(c.os_index)).or_insert(n))
            })
            .collect();
        (group_of, ids.len())
    };
    let mut levels = Vec::new();
    for s in Scope::ALL.into_iter().filter(|s| *s > scope) {
        if s == Scope::System {
            levels.push(level(&|cpu| (package.get(&cpu).copied(), 0)));
        }
        let pod = |cpu: usize| topology.pod_of(s, cpu).map_or(usize::MAX, |p| p.index());
        if s == Scope::System {
            levels.push(level(&|cpu| (None, pod(cpu))));
        } else {
            levels.push(level(&|cpu| (package.get(&cpu).copied(), pod(cpu))));
        }
    }
    levels
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A worker away from its pod places its spawns from the CPU it
    /// stands for; at home, from the CPU it runs on.
    #[test]
    fn a_worker_away_from_its_pod_places_from_home() {
        let pod = [8, 9, 10, 11];
        assert_eq!(current::home_cpu(&pod, 10, 8), 10);
        assert_eq!(current::home_cpu(&pod, 3, 9), 9);
        assert_eq!(current::home_cpu(&pod, 12, 11), 11);
    }

    /// A worker on a CPU the topology does not know (moved there by
    /// `taskset -a`, say) places by the CPU it stands for: its spawns
    /// went round-robin over every pod (at `cpu` scope, a pool and its
    /// workers each); other threads on such a CPU, and a `spawn_on_cpu`
    /// naming one, still go round-robin.
    #[test]
    fn a_worker_on_an_unknown_cpu_places_from_the_cpu_it_stands_for() {
        let t = Topology::synthetic("core:4").unwrap();
        let unknown = || Some(99);
        assert_eq!(choose(&t, Scope::Cpu, None, unknown, || Some(2)), Some(2));
        assert_eq!(choose(&t, Scope::Cpu, None, unknown, || None), None);
        assert_eq!(
            choose(&t, Scope::Cpu, None, || Some(1), || Some(2)),
            Some(1)
        );
        assert_eq!(
            choose(&t, Scope::Cpu, Some(99), || Some(1), || Some(2)),
            None
        );
        assert_eq!(
            choose(&t, Scope::Cpu, Some(3), || Some(1), || Some(2)),
            Some(3)
        );
        // Kept for a later placement (an item waiting for a slot): the CPU
        // it stands for, not the unknown one.
        assert_eq!(known_cpu(&t, Scope::Cpu, unknown, || Some(2)), Some(2));
        assert_eq!(known_cpu(&t, Scope::Cpu, || Some(1), || Some(2)), Some(1));
        assert_eq!(known_cpu(&t, Scope::Cpu, unknown, || Some(77)), None);
    }

    /// Every pair measured, sorted: the rule `steal_order` walks groups
    /// to follow (the nearest shared level, then the distance after `me`
    /// in pod order, wrapping).
    fn steal_order_pairwise(topology: &Topology, scope: Scope) -> Vec<Vec<usize>> {
        let pods = topology.pods(scope);
        let levels = wider_levels(topology, scope);
        let group = |pod: usize, level: usize| levels[level].0.get(&pods[pod].cpus()[0]).copied();
        let n = pods.len();
        (0..n)
            .map(|me| {
                let mut others: Vec<(usize, usize, usize)> = (0..n)
                    .filter(|&p| p != me)
                    .map(|p| {
                        let distance = (0..levels.len())
                            .position(|l| group(p, l) == group(me, l))
                            .unwrap_or(levels.len());
                        (distance, (p + n - me) % n, p)
                    })
                    .collect();
                others.sort_unstable();
                others
                    .into_iter()
                    .take(MAX_STEAL_PODS)
                    .map(|(_, _, p)| p)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn steal_order_walking_groups_is_the_pairwise_order() {
        for description in [
            "core:1",
            "core:3 pu:2",
            "pack:2 l3:2 core:2 pu:1",
            "pack:2 numa:2 l3:2 core:4 pu:2",
            "pack:1 l3:4 core:64 pu:1",
            "pack:3 numa:2 l3:3 core:12 pu:2",
            "pack:2 numa:4 l3:1 core:3 pu:1",
            "pack:2 l3:2 core:2 pu:1",
            "pack:4 l3:3 core:1 pu:2",
        ] {
            let t = Topology::synthetic(description).unwrap();
            for scope in Scope::ALL {
                let walked: Vec<Vec<usize>> =
                    steal_order(&t, scope).iter().map(|o| o.to_vec()).collect();
                assert_eq!(
                    walked,
                    steal_order_pairwise(&t, scope),
                    "{description}, {scope}"
                );
            }
        }
    }

    #[test]
    fn steal_order_prefers_the_same_cache_then_numa() {
        let t = Topology::synthetic("pack:2 l3:2 core:2 pu:1").unwrap();
        // 8 cpus, smt pods 0..8; cache pods {0,1},{2,3},{4,5},{6,7};
        // numa: one node (no NUMA in the description) -> system groups all.
        let order = steal_order(&t, Scope::Smt);
        assert_eq!(&*order[0], &[1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(order[5][0], 4, "same-cache sibling first");
        let order = steal_order(&t, Scope::Cache);
        assert_eq!(order.len(), 4);
        // Its package's other cache first (one NUMA node spans both).
        assert_eq!(&*order[3], &[2, 0, 1]);
    }

    #[test]
    fn steal_order_on_two_numa_nodes_stays_in_the_node_first() {
        // 2 packages x 2 NUMA nodes x 2 L3 x 2 cores, no SMT: 16 CPUs.
        let t = Topology::synthetic("pack:2 numa:2 l3:2 core:2 pu:1").unwrap();
        let order = steal_order(&t, Scope::Cache);
        // Cache pod 0 shares NUMA node 0 with cache pod 1 only.
        assert_eq!(order[0][0], 1);
        assert_eq!(order[0].len(), 7);
    }

    /// A socket's other NUMA nodes come before the other socket's (sub-NUMA
    /// clustering, EPYC's NPS2/NPS4): past its node, the order went by
    /// pod index, so cache pod 2 tried pods 0 and 1 (the other socket)
    /// before pod 3 (its own).
    #[test]
    fn steal_order_stays_in_the_socket_before_the_other_one() {
        let t = Topology::synthetic("pack:2 numa:2 l3:1 core:4 pu:1").unwrap();
        let order = steal_order(&t, Scope::Cache);
        assert_eq!(&*order[2], &[3, 0, 1]);
        assert_eq!(&*order[1], &[0, 2, 3]);
        let order = steal_order(&t, Scope::Numa);
        assert_eq!(&*order[0], &[1, 2, 3]);
        assert_eq!(&*order[2], &[3, 0, 1]);
        // Without NUMA information one node spans both sockets: split by
        // package, it still orders a socket's own pods first (it took
        // them all in index order, the other socket's first for pod 1).
        let t = Topology::synthetic("pack:2 l3:2 core:1 pu:1").unwrap();
        let order = steal_order(&t, Scope::Cache);
        assert_eq!(&*order[1], &[0, 2, 3]);
        assert_eq!(&*order[3], &[2, 0, 1]);
    }

    /// Pods at one distance are tried from the one after, wrapping: every
    /// idle pool of a cache tried its first pod first.
    #[test]
    fn steal_order_starts_after_its_own_pod_at_one_distance() {
        let t = Topology::synthetic("core:4").unwrap();
        let order = steal_order(&t, Scope::Cpu);
        assert_eq!(&*order[0], &[1, 2, 3]);
        assert_eq!(&*order[1], &[2, 3, 0]);
        assert_eq!(&*order[3], &[0, 1, 2]);
        let firsts: std::collections::BTreeSet<usize> = order.iter().map(|o| o[0]).collect();
        assert_eq!(firsts.len(), 4, "every pod is someone's first");
    }

    #[test]
    fn steal_order_keeps_the_nearest_pods_only() {
        // 256 CPUs in 4 caches of 64: each cpu pod's list is its 63 cache
        // siblings, then one pod of the next cache.
        let t = Topology::synthetic("pack:1 l3:4 core:64 pu:1").unwrap();
        let order = steal_order(&t, Scope::Cpu);
        assert_eq!(order.len(), 256);
        assert!(order.iter().all(|o| o.len() == MAX_STEAL_PODS));
        assert!(
            order[0][..63].iter().all(|&p| p < 64),
            "its own cache first"
        );
        assert!(order[0][63] >= 64);
    }

    #[test]
    fn a_spawn_goes_to_the_pod_of_its_cpu_or_round_robin() {
        let t = Topology::synthetic("pack:2 l3:1 core:2 pu:1").unwrap();
        let attrs = PoolAttrs::default();
        assert_eq!(
            pod(
                &t,
                std::ptr::null(),
                Scope::Cache,
                attrs,
                Some(3),
                || unreachable!()
            ),
            1
        );
        assert_eq!(
            pod(
                &t,
                std::ptr::null(),
                Scope::Cache,
                attrs,
                Some(0),
                || unreachable!()
            ),
            0
        );
        assert_eq!(
            pod(&t, std::ptr::null(), Scope::Cpu, attrs, Some(99), || 5),
            5 % 4,
            "unknown CPU"
        );
        assert_eq!(
            pod(
                &t,
                std::ptr::null(),
                Scope::System,
                attrs,
                None,
                || unreachable!()
            ),
            0
        );
    }
}
