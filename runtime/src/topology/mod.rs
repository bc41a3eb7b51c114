//! The machine's CPUs and the pods each affinity scope splits them into.
//!
//! Reading the machine is kept apart from policy (see `docs/architecture.md`,
//! "Topology layer"):
//!
//! 1. A **reader** produces the *plain description*: one [`CpuInfo`] per
//!    logical CPU, naming its core, last-level cache (LLC), NUMA node and
//!    package. Readers: hwloc (`hwloc.rs`, feature `hwloc`, also for synthetic
//!    and XML topologies), Linux sysfs (`sysfs.rs`), a small parser of hwloc's
//!    synthetic grammar (`synthetic.rs`, used without the `hwloc` feature), and
//!    [`Topology::from_cpus`] for a description built by hand.
//! 2. [`Topology::from_cpus`] validates the description, renumbers its ids
//!    densely (in the order of each group's first CPU) and computes the pods of
//!    every [`Scope`] as a pure function of it (`pods.rs`).
//!
//! Pod rules (the kernel's, `kernel/workqueue.c` `wq_pod_types`):
//!
//! | scope | one pod per |
//! |---|---|
//! | `cpu` | logical CPU |
//! | `smt` | core (its SMT siblings) |
//! | `cache_shard` | slice of an LLC of about [`Topology::cache_shard_size`] cores |
//! | `cache` | LLC (without an L3: the highest data cache level; without caches: the core) |
//! | `numa` | NUMA node (no NUMA information: one node) |
//! | `system` | every CPU |
//!
//! An LLC with `n` cores and shard size `s` is split on core boundaries into
//! `max(1, round(n / s))` shards (round half up); the first `n % shards`
//! shards get one core more. SMT siblings are never split; cores are taken in
//! the order of their first CPU.
//!
//! Invariants of a [`Topology`]: at least one CPU; CPUs sorted by OS index
//! with no duplicate; every scope's pods partition the CPUs, are ordered by
//! their first CPU, and [`Pod::index`] is the pod's position in that order.

mod bind;
#[cfg(feature = "hwloc")]
mod hwloc;
mod pods;
mod synthetic;
mod sysfs;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use crate::Scope;

pub(crate) use bind::{bind_current_thread, cpu_budget, process_cpus};

/// The default number of cores in one `cache_shard` pod (the kernel's
/// `wq_cache_shard_size`).
pub const DEFAULT_CACHE_SHARD_SIZE: usize = 8;

/// One logical CPU of the plain description.
///
/// Ids are dense logical ids: `core` is unique machine-wide (not per package,
/// unlike sysfs `core_id`), and so are `llc`, `numa` and `package`. A
/// [`Topology`] renumbers them in the order of each group's first CPU.
///
/// ```
/// use wq::CpuInfo;
/// let cpu = CpuInfo { os_index: 3, core: 1, llc: 0, numa: 0, package: 0 };
/// assert_eq!(cpu.os_index, 3);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CpuInfo {
    /// The CPU number the OS uses (`sched_setaffinity`, `/proc/cpuinfo`).
    pub os_index: usize,
    /// The physical core: CPUs with the same `core` are SMT siblings.
    pub core: usize,
    /// The last-level cache (or the largest shared cache level there is).
    /// One shared by several NUMA nodes is split at their boundaries (the
    /// `cache` scope never spans nodes), as the kernel's LLC masks are
    /// under sub-NUMA clustering; so is one id given in two packages
    /// (each package's caches numbered from 0).
    pub llc: usize,
    /// The NUMA node.
    pub numa: usize,
    /// The package (socket).
    pub package: usize,
}

/// One pod: the CPUs of one scope's partition that share a worker pool.
///
/// ```
/// use wq::{Scope, Topology};
/// let topo = Topology::synthetic("core:2 pu:2")?;
/// let pod = topo.pod_of(Scope::Smt, 3).unwrap();
/// assert_eq!((pod.scope(), pod.index(), pod.cpus()), (Scope::Smt, 1, &[2, 3][..]));
/// assert_eq!(pod.to_string(), "smt pod 1: 2-3");
/// # Ok::<(), wq::TopologyError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pod {
    scope: Scope,
    index: usize,
    cpus: Vec<usize>,
}

impl Pod {
    /// The pod's position in [`Topology::pods`] of its scope.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The OS indices of the pod's CPUs, sorted ascending, never empty.
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// The scope this pod belongs to.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The pod's CPUs as a compact list of ranges, like `0-7,16-23`.
    pub fn cpu_list(&self) -> String {
        format_cpu_list(&self.cpus)
    }
}

impl fmt::Display for Pod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} pod {}: {}",
            self.scope,
            self.index,
            format_cpu_list(&self.cpus)
        )
    }
}

/// What kind of problem a [`TopologyError`] reports.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TopologyErrorKind {
    /// No CPU is left (empty description, or a restriction that keeps none).
    EmptyCpuSet,
    /// The same OS index appears twice in a description.
    DuplicateCpu,
    /// SMT siblings (same core) disagree on their LLC, NUMA node or package.
    InconsistentCpu,
    /// A `cache_shard` size of 0 cores, or of more than [`MAX_CPUS`].
    InvalidShardSize,
    /// A synthetic description that does not parse.
    InvalidSynthetic,
    /// An XML export that hwloc rejects.
    InvalidXml,
    /// The operation needs a cargo feature this build lacks.
    Unsupported,
    /// Reading the machine failed (sysfs, `sched_getaffinity`, hwloc).
    Io,
    /// [`Topology::detect`] was pointed at another machine's description
    /// by hwloc's environment (`HWLOC_XMLFILE`, `HWLOC_SYNTHETIC`,
    /// `HWLOC_FSROOT`) without `HWLOC_THISSYSTEM=1` saying it is this one.
    NotThisMachine,
    /// More CPUs than [`MAX_CPUS`], or a CPU index of [`MAX_CPUS`] * 8 or
    /// more.
    TooManyCpus,
}

/// The most CPUs a topology may have (Linux distributions build their
/// kernels for at most 8,192, `CONFIG_NR_CPUS`). Bigger descriptions are
/// refused with [`TopologyErrorKind::TooManyCpus`] rather than built: the
/// runtime's tables grow with the CPU count, and a typo in a synthetic
/// description (`core:100000 pu:100000`) must not exhaust memory.
pub const MAX_CPUS: usize = 8192;

/// Why a [`Topology`] could not be built; `Display` says what was wrong and
/// what to do about it.
///
/// ```
/// use wq::Topology;
/// let err = Topology::from_cpus(vec![]).unwrap_err();
/// assert!(err.to_string().contains("no CPU"));
/// ```
#[derive(Debug)]
pub struct TopologyError {
    kind: TopologyErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl TopologyError {
    pub(crate) fn new(kind: TopologyErrorKind, message: impl Into<String>) -> Self {
        TopologyError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The kind of problem.
    pub fn kind(&self) -> TopologyErrorKind {
        self.kind
    }
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            write!(f, " (cause: {source})")?;
        }
        Ok(())
    }
}

impl std::error::Error for TopologyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The CPUs this runtime may use and the pods every [`Scope`] splits them
/// into. Cheap to clone (shared, immutable).
///
/// ```
/// use wq::{Scope, Topology};
/// let topo = Topology::synthetic("pack:2 numa:2 l3:2 core:4 pu:2")?;
/// assert_eq!(topo.num_cpus(), 64);
/// assert_eq!(topo.pods(Scope::Smt).len(), 32);
/// assert_eq!(topo.pods(Scope::Cache).len(), 8);
/// assert_eq!(topo.pods(Scope::Numa).len(), 4);
/// assert_eq!(topo.pod_of(Scope::Numa, 17).unwrap().cpus(), &(16..32).collect::<Vec<_>>()[..]);
/// println!("{topo}");
/// # Ok::<(), wq::TopologyError>(())
/// ```
#[derive(Clone)]
pub struct Topology {
    inner: Arc<Inner>,
}

struct Inner {
    cpus: Vec<CpuInfo>,
    pods: [Vec<Pod>; Scope::ALL.len()],
    /// `pod_of[os_index][scope.index()]`, `NO_POD` for an absent CPU.
    pod_of: Vec<[u32; Scope::ALL.len()]>,
    shard_size: usize,
    /// Some cache is split into several `cache_shard` pods.
    split_caches: bool,
    source: String,
    live: bool,
}

const NO_POD: u32 = u32::MAX;

impl Topology {
    /// Reads this machine, restricted to the CPUs the calling thread may run
    /// on (`sched_getaffinity`): with hwloc when the `hwloc` feature is on
    /// (the default), from Linux sysfs otherwise. On a thread wq bound
    /// itself (a worker, a blocking thread, the rescuer), whose mask is
    /// wq's choice rather than the user's, the process's main thread's
    /// mask is read instead (`taskset -p` without `-a` sets only that
    /// one). A thread started from inside a task is not one of those: it
    /// inherits its worker's binding (its pod's CPUs, a single CPU at
    /// `cpu` scope, a shard's whole cache for a non-strict `cache_shard`
    /// pool), and reads only those -- so does
    /// `std::thread::available_parallelism`, and a thread pool started
    /// there sizes itself by them. Detect (and build runtimes) from the
    /// main thread, or pass its `Topology` along.
    ///
    /// ```
    /// let topo = wq::Topology::detect()?;
    /// assert!(topo.is_live() && topo.num_cpus() >= 1);
    /// # Ok::<(), wq::TopologyError>(())
    /// ```
    pub fn detect() -> Result<Topology, TopologyError> {
        #[cfg(feature = "hwloc")]
        {
            hwloc::detect()
        }
        #[cfg(not(feature = "hwloc"))]
        {
            sysfs::detect()
        }
    }

    /// Reads this machine from Linux sysfs (`/sys/devices/system/cpu`,
    /// `/sys/devices/system/node`), restricted like [`Topology::detect`].
    /// Available with or without the `hwloc` feature.
    ///
    /// ```
    /// let topo = wq::Topology::detect_sysfs()?;
    /// assert_eq!(topo.source(), "sysfs (this machine)");
    /// # Ok::<(), wq::TopologyError>(())
    /// ```
    pub fn detect_sysfs() -> Result<Topology, TopologyError> {
        sysfs::detect()
    }

    /// Builds a made-up machine from an hwloc synthetic description, such as
    /// `"pack:2 numa:2 l3:2 core:4 pu:2"` (levels outermost first, each
    /// `type:count`; `package`, `core` and `pu` may be spelled out). With the
    /// `hwloc` feature hwloc itself parses it; without, a parser of the subset
    /// `pack|package|socket`, `die`, `numa|node|numanode`, `l1`..`l5` (or
    /// `l3cache` ...), `group`, `core`, `pu`. CPUs are numbered 0.. in order,
    /// unless hwloc is given other numbers (`pu:2(indexes=0,8,...)`,
    /// honoured with the `hwloc` feature).
    ///
    /// ```
    /// use wq::{Scope, Topology};
    /// let topo = Topology::synthetic("l3:1 core:12 pu:1")?;
    /// assert_eq!(topo.pods(Scope::CacheShard).len(), 2);
    /// assert!(Topology::synthetic("core:x").is_err());
    /// # Ok::<(), wq::TopologyError>(())
    /// ```
    pub fn synthetic(desc: &str) -> Result<Topology, TopologyError> {
        #[cfg(feature = "hwloc")]
        {
            hwloc::synthetic(desc)
        }
        #[cfg(not(feature = "hwloc"))]
        {
            synthetic::parse(desc)
        }
    }

    /// Builds the topology of an hwloc XML export (`hwloc-ls --of xml`), e.g.
    /// of a production machine. Needs the `hwloc` feature.
    ///
    /// ```
    /// assert!(wq::Topology::from_xml("<not a topology>").is_err());
    /// ```
    pub fn from_xml(xml: &str) -> Result<Topology, TopologyError> {
        #[cfg(feature = "hwloc")]
        {
            hwloc::from_xml(xml)
        }
        #[cfg(not(feature = "hwloc"))]
        {
            let _ = xml;
            Err(TopologyError::new(
                TopologyErrorKind::Unsupported,
                "reading an hwloc XML topology needs the `hwloc` cargo feature of wq: \
                 build with default features (and libhwloc-dev installed), or describe the \
                 machine with Topology::synthetic or Topology::from_cpus",
            ))
        }
    }

    /// Builds a topology from a plain description (pure: reads nothing).
    /// The ids may be any numbers; they are renumbered densely in the order of
    /// each group's first CPU. Errors on an empty list, a duplicate
    /// `os_index`, SMT siblings that disagree on LLC, NUMA node or package,
    /// and more than [`MAX_CPUS`] CPUs or an `os_index` of `MAX_CPUS * 8`
    /// or more ([`TopologyErrorKind::TooManyCpus`]).
    ///
    /// ```
    /// use wq::{CpuInfo, Scope, Topology};
    /// let cpus = (0..4)
    ///     .map(|i| CpuInfo { os_index: i, core: i / 2, llc: 0, numa: 0, package: 0 })
    ///     .collect();
    /// let topo = Topology::from_cpus(cpus)?;
    /// assert_eq!(topo.pods(Scope::Smt)[1].cpus(), &[2, 3]);
    /// # Ok::<(), wq::TopologyError>(())
    /// ```
    pub fn from_cpus(cpus: Vec<CpuInfo>) -> Result<Topology, TopologyError> {
        Self::build(
            cpus,
            DEFAULT_CACHE_SHARD_SIZE,
            "plain description".to_owned(),
            false,
        )
    }

    pub(crate) fn build(
        cpus: Vec<CpuInfo>,
        shard_size: usize,
        source: String,
        live: bool,
    ) -> Result<Topology, TopologyError> {
        check_shard_size(shard_size)?;
        // A live machine's CPUs are those the process may run on: fewer
        // is the remedy there, not a shorter description.
        const NARROW: &str = "run wq on fewer of the machine's CPUs (taskset, or a cgroup \
                              cpuset: wq maps only those the process may run on)";
        if cpus.len() > MAX_CPUS {
            if live {
                return Err(TopologyError::new(
                    TopologyErrorKind::TooManyCpus,
                    format!(
                        "{source}: {} CPUs is more than wq supports ({MAX_CPUS}): {NARROW}",
                        cpus.len()
                    ),
                ));
            }
            return Err(too_many_cpus(&source, Some(cpus.len())));
        }
        if let Some(c) = cpus.iter().find(|c| c.os_index >= MAX_CPUS * 8) {
            let remedy = if live {
                NARROW
            } else {
                "number CPUs from 0, as the OS does"
            };
            return Err(TopologyError::new(
                TopologyErrorKind::TooManyCpus,
                format!(
                    "{source}: CPU index {} is beyond what wq supports (below {}): {remedy}",
                    c.os_index,
                    MAX_CPUS * 8
                ),
            ));
        }
        let cpus = pods::normalize(cpus)?;
        let pods = pods::compute(&cpus, shard_size);
        let table_len = cpus.last().map_or(0, |c| c.os_index + 1);
        let mut pod_of = vec![[NO_POD; Scope::ALL.len()]; table_len];
        for (scope, scope_pods) in Scope::ALL.iter().zip(&pods) {
            for pod in scope_pods {
                let index = u32::try_from(pod.index).unwrap_or(NO_POD);
                for &cpu in &pod.cpus {
                    pod_of[cpu][scope.index()] = index;
                }
            }
        }
        let split_caches = pods[Scope::CacheShard.index()].len() > pods[Scope::Cache.index()].len();
        Ok(Topology {
            inner: Arc::new(Inner {
                cpus,
                pods,
                pod_of,
                shard_size,
                split_caches,
                source,
                live,
            }),
        })
    }

    /// Keeps only the CPUs in `allowed` (OS indices; unknown ones are
    /// ignored) and recomputes the pods. Errors if none is left.
    ///
    /// ```
    /// use wq::{Scope, Topology};
    /// let topo = Topology::synthetic("core:4 pu:2")?.restrict(&[0, 1, 2, 5])?;
    /// assert_eq!(topo.pods(Scope::Smt).len(), 3);
    /// assert!(topo.restrict(&[]).is_err());
    /// # Ok::<(), wq::TopologyError>(())
    /// ```
    pub fn restrict(&self, allowed: &[usize]) -> Result<Topology, TopologyError> {
        // A set: both lists may hold thousands of CPUs.
        let allowed_set: std::collections::HashSet<usize> = allowed.iter().copied().collect();
        let kept: Vec<CpuInfo> = self
            .inner
            .cpus
            .iter()
            .filter(|c| allowed_set.contains(&c.os_index))
            .cloned()
            .collect();
        if kept.is_empty() {
            return Err(TopologyError::new(
                TopologyErrorKind::EmptyCpuSet,
                format!(
                    "restricting the topology to CPUs {} leaves no CPU: the topology has CPUs {}; \
                     pass at least one of them",
                    // As a list of ranges (`5000-9095`), cut if long.
                    if allowed.is_empty() {
                        "(none)".to_owned()
                    } else {
                        let mut a = allowed.to_vec();
                        a.sort_unstable();
                        a.dedup();
                        Shown(&format_cpu_list(&a)).cut()
                    },
                    format_cpu_list(&self.os_indices())
                ),
            ));
        }
        let source = format!(
            "{}, restricted to {}",
            self.inner.source,
            format_cpu_list(&kept.iter().map(|c| c.os_index).collect::<Vec<_>>())
        );
        Self::build(kept, self.inner.shard_size, source, self.inner.live)
    }

    /// Sets the number of cores in one `cache_shard` pod (default 8) and
    /// recomputes the pods. Errors on 0, and on more than [`MAX_CPUS`].
    ///
    /// ```
    /// use wq::{Scope, Topology};
    /// let topo = Topology::synthetic("l3:1 core:16")?.with_cache_shard_size(4)?;
    /// assert_eq!(topo.pods(Scope::CacheShard).len(), 4);
    /// # Ok::<(), wq::TopologyError>(())
    /// ```
    pub fn with_cache_shard_size(self, cores: usize) -> Result<Topology, TopologyError> {
        check_shard_size(cores)?;
        if cores == self.inner.shard_size {
            return Ok(self);
        }
        let inner = &self.inner;
        Self::build(inner.cpus.clone(), cores, inner.source.clone(), inner.live)
    }

    /// Whether some cache is split into several `cache_shard` pods (whose
    /// non-strict pools' workers may then run outside their pod).
    pub(crate) fn splits_caches(&self) -> bool {
        self.inner.split_caches
    }

    /// The number of cores in one `cache_shard` pod.
    pub fn cache_shard_size(&self) -> usize {
        self.inner.shard_size
    }

    /// The number of CPUs.
    pub fn num_cpus(&self) -> usize {
        self.inner.cpus.len()
    }

    /// The CPUs, sorted by OS index.
    pub fn cpus(&self) -> &[CpuInfo] {
        &self.inner.cpus
    }

    /// The pods of `scope`, ordered by their first CPU.
    pub fn pods(&self, scope: Scope) -> &[Pod] {
        &self.inner.pods[scope.index()]
    }

    /// The pod of `scope` that holds CPU `cpu` (an OS index), or `None` if the
    /// topology lacks that CPU. O(1).
    pub fn pod_of(&self, scope: Scope, cpu: usize) -> Option<&Pod> {
        self.pods(scope).get(self.pod_index_of(scope, cpu)?)
    }

    /// The index among `pods(scope)` of the pod that holds CPU `cpu`.
    /// O(1).
    pub(crate) fn pod_index_of(&self, scope: Scope, cpu: usize) -> Option<usize> {
        let index = *self.inner.pod_of.get(cpu)?.get(scope.index())?;
        (index != NO_POD).then_some(index as usize)
    }

    /// Whether this topology was read from the running machine, so that
    /// workers may be bound to its CPUs. False for synthetic, XML and
    /// hand-built topologies.
    pub fn is_live(&self) -> bool {
        self.inner.live
    }

    /// Where the topology came from, e.g. `hwloc (this machine)` or
    /// `synthetic "core:4"`.
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    fn os_indices(&self) -> Vec<usize> {
        self.inner.cpus.iter().map(|c| c.os_index).collect()
    }

    fn count_distinct(&self, field: fn(&CpuInfo) -> usize) -> usize {
        // Ids are dense from 0, so the largest id + 1 is the count.
        self.inner.cpus.iter().map(field).max().map_or(0, |m| m + 1)
    }
}

/// A machine's description as a reader found it, made buildable where the
/// machine itself is odd: SMT siblings that disagree on their cache, node
/// or package are separated ([`pods::separate_disagreeing_siblings`]),
/// with one warning.
pub(crate) fn as_found(mut cpus: Vec<CpuInfo>, source: &str) -> Vec<CpuInfo> {
    let moved = pods::separate_disagreeing_siblings(&mut cpus);
    if !moved.is_empty() {
        warn_caught!(
            "wq topology ({source}): CPUs {} share a core with CPUs in another LLC, NUMA node \
             or package; each is treated as a core of its own (as the kernel ignores such \
             sibling links)",
            format_cpu_list(&moved)
        );
    }
    cpus
}

/// The error for a description of `n` CPUs, over [`MAX_CPUS`].
/// `n` CPUs, or `None` for more than a `usize` counts (a synthetic
/// description's count, or product of counts, that overflows).
pub(crate) fn too_many_cpus(source: &str, n: Option<usize>) -> TopologyError {
    let n = match n {
        Some(n) => format!("{n} CPUs is"),
        None => "more CPUs than a 64-bit number counts is".to_string(),
    };
    TopologyError::new(
        TopologyErrorKind::TooManyCpus,
        format!(
            "{source}: {n} more than wq supports ({MAX_CPUS}, the largest \
             CONFIG_NR_CPUS Linux distributions build): describe fewer (a synthetic \
             description multiplies its counts: pack:2 core:64 pu:2 is 256 CPUs)"
        ),
    )
}

fn check_shard_size(cores: usize) -> Result<(), TopologyError> {
    if cores > MAX_CPUS {
        return Err(TopologyError::new(
            TopologyErrorKind::InvalidShardSize,
            format!(
                "cache shard size {cores} is more cores than a machine wq supports has \
                 ({MAX_CPUS}): give at most that (a shard bigger than its cache is the \
                 whole cache)"
            ),
        ));
    }
    if cores == 0 {
        return Err(TopologyError::new(
            TopologyErrorKind::InvalidShardSize,
            format!(
                "cache shard size 0 is invalid: a cache_shard pod needs at least 1 core; \
                 use the default {DEFAULT_CACHE_SHARD_SIZE} or another positive number"
            ),
        ));
    }
    Ok(())
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// Debug-prints `{cpu: 4, smt: 2, ...}`: the pod count of each scope.
        struct PodCounts<'a>(&'a Topology);
        impl fmt::Debug for PodCounts<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map()
                    .entries(Scope::ALL.iter().map(|s| (s.name(), self.0.pods(*s).len())))
                    .finish()
            }
        }
        f.debug_struct("Topology")
            .field("source", &self.inner.source)
            .field("live", &self.inner.live)
            .field("cpus", &format_cpu_list(&self.os_indices()))
            .field("cache_shard_size", &self.inner.shard_size)
            .field("pods", &PodCounts(self))
            .finish()
    }
}

impl fmt::Display for Topology {
    /// Several lines: the source, the counts, and every scope's pods.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "topology from {}", self.inner.source)?;
        writeln!(
            f,
            "  {} CPUs ({}) in {} cores, {} LLCs, {} NUMA nodes, {} packages; cache_shard size {} cores",
            self.num_cpus(),
            format_cpu_list(&self.os_indices()),
            self.count_distinct(|c| c.core),
            self.count_distinct(|c| c.llc),
            self.count_distinct(|c| c.numa),
            self.count_distinct(|c| c.package),
            self.inner.shard_size,
        )?;
        for scope in Scope::ALL {
            let pods = self.pods(scope);
            write!(f, "  {:<11} {:>4} pods:", scope.name(), pods.len())?;
            for pod in pods {
                write!(f, " [{}]", format_cpu_list(&pod.cpus))?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// Formats sorted CPU numbers as compact ranges: `[0,1,2,3,8]` -> `0-3,8`.
/// Unsorted input is formatted in the order given. Empty input gives `""`.
pub(crate) fn format_cpu_list(cpus: &[usize]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            end += 1;
            i += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{end}"));
        }
        i += 1;
    }
    out
}

/// Parses a Linux CPU list (`0-3,8,10-11`, as in sysfs `cpulist` files).
pub(crate) fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if a > b {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.trim().parse().ok()?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

/// An input quoted in an error message (`{:?}`), cut after
/// [`SHOWN_MAX`] characters with its length said: a mistaken
/// multi-kilobyte input (a file's content given for a description) does
/// not bury the message.
pub(super) struct Shown<'a>(pub(super) &'a str);

/// The most characters of an input an error message quotes.
pub(super) const SHOWN_MAX: usize = 160;

impl Shown<'_> {
    /// The input unquoted, cut as its `{:?}` is (for a list, a group).
    pub(super) fn cut(&self) -> String {
        match self.0.char_indices().nth(SHOWN_MAX) {
            None => self.0.to_owned(),
            Some((cut, _)) => format!("{}... ({} bytes in all)", &self.0[..cut], self.0.len()),
        }
    }
}

impl std::fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.char_indices().nth(SHOWN_MAX) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}... ({} bytes in all)", &self.0[..cut], self.0.len()),
        }
    }
}
