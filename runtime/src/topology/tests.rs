//! Unit tests of the topology layer: pod rules on synthetic and hand-built
//! machines, the readers, and bad input. All deterministic; none binds or
//! depends on the machine except the `live_*` and `bind` tests.

use super::pods::{describe, shard_sizes};
use super::*;

/// The CPU lists of a scope's pods, as compact strings.
fn lists(topo: &Topology, scope: Scope) -> Vec<String> {
    describe(topo.pods(scope))
}

/// The pod counts of every scope, narrowest first.
fn counts(topo: &Topology) -> Vec<usize> {
    Scope::ALL.iter().map(|&s| topo.pods(s).len()).collect()
}

fn synthetic(desc: &str) -> Topology {
    Topology::synthetic(desc).unwrap_or_else(|e| panic!("{desc:?}: {e}"))
}

/// Checks the invariants every topology keeps, whatever its source.
fn check_invariants(topo: &Topology) {
    let os: Vec<usize> = topo.cpus().iter().map(|c| c.os_index).collect();
    assert!(os.windows(2).all(|w| w[0] < w[1]), "cpus sorted: {os:?}");
    for scope in Scope::ALL {
        let pods = topo.pods(scope);
        let mut seen: Vec<usize> = pods.iter().flat_map(|p| p.cpus().to_vec()).collect();
        seen.sort_unstable();
        assert_eq!(seen, os, "{scope} pods partition the CPUs");
        for (i, pod) in pods.iter().enumerate() {
            assert_eq!((pod.index(), pod.scope()), (i, scope));
            assert!(pod.cpus().windows(2).all(|w| w[0] < w[1]));
            for &cpu in pod.cpus() {
                assert_eq!(topo.pod_of(scope, cpu), Some(pod), "{scope} cpu {cpu}");
            }
        }
        assert!(pods.windows(2).all(|w| w[0].cpus()[0] < w[1].cpus()[0]));
        assert_eq!(topo.pod_of(scope, os[os.len() - 1] + 1), None);
        assert_eq!(topo.pod_of(scope, usize::MAX), None);
    }
    assert_eq!(topo.pods(Scope::Cpu).len(), topo.num_cpus());
    assert_eq!(topo.pods(Scope::System).len(), 1);
}

/// `inner` pods each lie inside one `outer` pod.
fn assert_nested(topo: &Topology, inner: Scope, outer: Scope) {
    for pod in topo.pods(inner) {
        let parent = topo.pod_of(outer, pod.cpus()[0]).unwrap();
        assert!(
            pod.cpus().iter().all(|c| parent.cpus().contains(c)),
            "{pod} not inside {parent}"
        );
    }
}

// ---- the shard formula -------------------------------------------------

#[test]
fn shard_sizes_round_half_up_and_front_load_the_remainder() {
    let cases: &[(usize, usize, &[usize])] = &[
        (1, 8, &[1]),
        (3, 8, &[3]),
        (4, 8, &[4]),        // round(0.5) = 1
        (11, 8, &[11]),      // round(1.375) = 1
        (12, 8, &[6, 6]),    // round(1.5) = 2
        (13, 8, &[7, 6]),    // 13 % 2 = 1 larger shard first
        (20, 8, &[7, 7, 6]), // round(2.5) = 3
        (32, 8, &[8, 8, 8, 8]),
        (16, 4, &[4, 4, 4, 4]),
        (5, 1, &[1, 1, 1, 1, 1]),
        (32, 64, &[32]),
    ];
    for &(cores, size, want) in cases {
        assert_eq!(shard_sizes(cores, size), want, "{cores} cores, size {size}");
    }
}

// ---- synthetic machines ------------------------------------------------

#[test]
fn two_sockets_numa_llcs_smt() {
    let topo = synthetic("pack:2 numa:2 l3:2 core:4 pu:2");
    check_invariants(&topo);
    assert_eq!(topo.num_cpus(), 64);
    assert_eq!(counts(&topo), [64, 32, 8, 8, 4, 1]);
    assert_eq!(lists(&topo, Scope::Smt)[..3], ["0-1", "2-3", "4-5"]);
    // 4 cores per L3: round(4 / 8) = round(0.5) = 1 shard, the whole L3.
    let l3s = [
        "0-7", "8-15", "16-23", "24-31", "32-39", "40-47", "48-55", "56-63",
    ];
    assert_eq!(lists(&topo, Scope::CacheShard), l3s);
    assert_eq!(lists(&topo, Scope::Cache), l3s);
    assert_eq!(
        lists(&topo, Scope::Numa),
        ["0-15", "16-31", "32-47", "48-63"]
    );
    assert_eq!(lists(&topo, Scope::System), ["0-63"]);
    let cpu = &topo.cpus()[37];
    assert_eq!(
        *cpu,
        CpuInfo {
            os_index: 37,
            core: 18,
            llc: 4,
            numa: 2,
            package: 1
        }
    );
    assert_eq!(topo.pod_of(Scope::Numa, 37).unwrap().index(), 2);
    assert!(!topo.is_live());
    assert_eq!(
        topo.source(),
        "synthetic \"pack:2 numa:2 l3:2 core:4 pu:2\""
    );
    assert_nested(&topo, Scope::Smt, Scope::CacheShard);
    assert_nested(&topo, Scope::Cache, Scope::Numa);
}

#[test]
fn one_big_llc_is_sharded_on_core_boundaries() {
    // (Without the l3 level each core would be its own LLC: see
    // `without_l3_the_largest_cache_then_the_core_is_the_llc`.)
    let topo = synthetic("l3:1 core:32 pu:2");
    check_invariants(&topo);
    assert_eq!(counts(&topo), [64, 32, 4, 1, 1, 1]);
    assert_eq!(
        lists(&topo, Scope::CacheShard),
        ["0-15", "16-31", "32-47", "48-63"]
    );

    let topo = synthetic("l3:1 core:12 pu:1");
    assert_eq!(lists(&topo, Scope::CacheShard), ["0-5", "6-11"]);

    let topo = synthetic("l3:1 core:4");
    assert_eq!(counts(&topo), [4, 4, 1, 1, 1, 1]);
    assert_eq!(lists(&topo, Scope::CacheShard), ["0-3"]);

    let topo = synthetic("l3:1 core:13 pu:2");
    assert_eq!(lists(&topo, Scope::CacheShard), ["0-13", "14-25"]);
    let topo = synthetic("l3:1 core:20 pu:1");
    assert_eq!(lists(&topo, Scope::CacheShard), ["0-6", "7-13", "14-19"]);
}

#[test]
fn shard_size_is_configurable() {
    let topo = synthetic("l3:1 core:32 pu:2");
    assert_eq!(topo.cache_shard_size(), DEFAULT_CACHE_SHARD_SIZE);
    for (size, shards) in [(1, 32), (4, 8), (8, 4), (16, 2), (64, 1)] {
        let sized = topo.clone().with_cache_shard_size(size).unwrap();
        assert_eq!(sized.cache_shard_size(), size);
        assert_eq!(sized.pods(Scope::CacheShard).len(), shards, "size {size}");
        check_invariants(&sized);
        // Only cache_shard depends on the size.
        assert_eq!(sized.pods(Scope::Smt), topo.pods(Scope::Smt));
    }
    let one = topo.clone().with_cache_shard_size(1).unwrap();
    assert_eq!(
        one.pods(Scope::CacheShard)[1].cpus(),
        &[2, 3],
        "SMT siblings stay together"
    );
    // The size survives a restriction.
    assert_eq!(
        one.restrict(&[0, 1, 2, 3])
            .unwrap()
            .pods(Scope::CacheShard)
            .len(),
        2
    );
}

#[test]
fn without_l3_the_largest_cache_then_the_core_is_the_llc() {
    let topo = synthetic("pack:1 l2:4 core:2 pu:1");
    check_invariants(&topo);
    assert_eq!(lists(&topo, Scope::Cache), ["0-1", "2-3", "4-5", "6-7"]);
    assert_eq!(counts(&topo), [8, 8, 4, 4, 1, 1]);

    let topo = synthetic("core:4 pu:2");
    check_invariants(&topo);
    assert_eq!(lists(&topo, Scope::Cache), ["0-1", "2-3", "4-5", "6-7"]);
    assert_eq!(lists(&topo, Scope::CacheShard), lists(&topo, Scope::Smt));

    // An L3 wins over the L2s below it.
    let topo = synthetic("l3:2 l2:2 core:2 pu:1");
    assert_eq!(lists(&topo, Scope::Cache), ["0-3", "4-7"]);
}

#[test]
fn long_level_names_are_accepted() {
    let short = synthetic("pack:2 core:3 pu:2");
    let long = synthetic("package:2 core:3 pu:2");
    for scope in Scope::ALL {
        assert_eq!(short.pods(scope), long.pods(scope));
    }
    assert_eq!(short.cpus()[11].package, 1);
}

#[test]
fn no_numa_information_is_one_node() {
    let topo = synthetic("pack:2 l3:1 core:2 pu:2");
    assert_eq!(lists(&topo, Scope::Numa), ["0-7"]);
    assert_eq!(lists(&topo, Scope::Cache), ["0-3", "4-7"]);
}

// ---- plain descriptions ------------------------------------------------

/// Intel-style numbering: core `c` holds CPUs `c` and `c + 16`.
fn two_uneven_llcs() -> Vec<CpuInfo> {
    (0..32)
        .map(|os| {
            let core = os % 16;
            let llc = usize::from(core >= 10);
            CpuInfo {
                os_index: os,
                core,
                llc,
                numa: llc,
                package: 0,
            }
        })
        .collect()
}

#[test]
fn uneven_cores_per_llc_with_interleaved_siblings() {
    let topo = Topology::from_cpus(two_uneven_llcs()).unwrap();
    check_invariants(&topo);
    assert_eq!(lists(&topo, Scope::Smt)[..2], ["0,16", "1,17"]);
    assert_eq!(lists(&topo, Scope::Cache), ["0-9,16-25", "10-15,26-31"]);
    // 10 cores and 6 cores: round(1.25) = round(0.75) = 1 shard each.
    assert_eq!(lists(&topo, Scope::CacheShard), lists(&topo, Scope::Cache));

    let topo = topo.with_cache_shard_size(4).unwrap();
    // 10 cores: round(2.5) = 3 shards of 4, 3, 3; 6 cores: round(1.5) = 2 of 3.
    assert_eq!(
        lists(&topo, Scope::CacheShard),
        [
            "0-3,16-19",
            "4-6,20-22",
            "7-9,23-25",
            "10-12,26-28",
            "13-15,29-31"
        ]
    );
    check_invariants(&topo);
    assert_nested(&topo, Scope::CacheShard, Scope::Cache);
    assert_eq!(topo.source(), "plain description");
}

/// Sub-NUMA clustering (Sapphire Rapids SNC4): one L3 per package, four
/// NUMA nodes under it. The cache is split at the nodes' boundaries, as
/// the kernel's LLC masks are: a `cache` or `cache_shard` pod never spans
/// nodes (one cache pod for the package put shards across nodes, and the
/// steal order saw every node's pods as "same cache").
#[test]
fn an_llc_shared_by_numa_nodes_is_split_at_their_boundaries() {
    // 4 nodes of 4 cores (2 threads: siblings c and c + 16), one L3.
    let cpus: Vec<CpuInfo> = (0..32)
        .map(|os| {
            let core = os % 16;
            CpuInfo {
                os_index: os,
                core,
                llc: 7,
                numa: core / 4,
                package: 0,
            }
        })
        .collect();
    let topo = Topology::from_cpus(cpus).unwrap();
    check_invariants(&topo);
    assert_eq!(lists(&topo, Scope::Cache), lists(&topo, Scope::Numa));
    assert_eq!(
        lists(&topo, Scope::Cache),
        ["0-3,16-19", "4-7,20-23", "8-11,24-27", "12-15,28-31"]
    );
    for (inner, outer) in [
        (Scope::Smt, Scope::CacheShard),
        (Scope::CacheShard, Scope::Cache),
        (Scope::Cache, Scope::Numa),
    ] {
        assert_nested(&topo, inner, outer);
    }
    // An LLC per node already (EPYC NPS4, several LLCs per node) is kept.
    let epyc = synthetic("pack:1 numa:2 l3:4 core:8 pu:2");
    assert_eq!(epyc.pods(Scope::Cache).len(), 8);
    assert_nested(&epyc, Scope::Cache, Scope::Numa);
}

/// A description that numbers each package's LLC from 0 (ids are
/// machine-wide: an easy slip) gets a cache per package, not one cache,
/// and one set of shards, across both: no cache spans packages.
#[test]
fn an_llc_id_given_in_two_packages_is_two_caches() {
    let cpus: Vec<CpuInfo> = (0..8)
        .map(|os| CpuInfo {
            os_index: os,
            core: os,
            llc: 0,
            numa: 0,
            package: os / 4,
        })
        .collect();
    let topo = Topology::from_cpus(cpus).unwrap();
    check_invariants(&topo);
    assert_eq!(lists(&topo, Scope::Cache), ["0-3", "4-7"]);
    assert_eq!(lists(&topo, Scope::CacheShard), ["0-3", "4-7"]);
    assert_eq!(lists(&topo, Scope::Numa), ["0-7"]);
}

/// A live machine over wq's CPU limit is told to run on fewer of its
/// CPUs (what the readers map is the process's affinity), not to
/// describe fewer as a synthetic description would be.
#[test]
fn a_live_machine_over_the_limit_is_told_to_narrow_its_cpus() {
    let cpu = |os_index| CpuInfo {
        os_index,
        core: os_index,
        llc: 0,
        numa: 0,
        package: 0,
    };
    let many: Vec<CpuInfo> = (0..=MAX_CPUS).map(cpu).collect();
    let far = vec![cpu(0), cpu(MAX_CPUS * 8)];
    for cpus in [many, far] {
        let live = Topology::build(cpus.clone(), DEFAULT_CACHE_SHARD_SIZE, "live".into(), true)
            .unwrap_err();
        assert_eq!(live.kind(), TopologyErrorKind::TooManyCpus);
        let msg = live.to_string();
        assert!(
            msg.contains("taskset") && !msg.contains("synthetic"),
            "{msg}"
        );
        let described = Topology::build(cpus, DEFAULT_CACHE_SHARD_SIZE, "xml".into(), false)
            .unwrap_err()
            .to_string();
        assert!(!described.contains("taskset"), "{described}");
    }
}

#[test]
fn from_cpus_sorts_and_renumbers_ids_densely() {
    let cpus = vec![
        CpuInfo {
            os_index: 9,
            core: 70,
            llc: 5,
            numa: 3,
            package: 8,
        },
        CpuInfo {
            os_index: 2,
            core: 40,
            llc: 5,
            numa: 3,
            package: 8,
        },
        CpuInfo {
            os_index: 4,
            core: 70,
            llc: 5,
            numa: 3,
            package: 8,
        },
        CpuInfo {
            os_index: 3,
            core: 40,
            llc: 5,
            numa: 3,
            package: 8,
        },
    ];
    let topo = Topology::from_cpus(cpus).unwrap();
    check_invariants(&topo);
    let got: Vec<(usize, usize)> = topo.cpus().iter().map(|c| (c.os_index, c.core)).collect();
    assert_eq!(got, [(2, 0), (3, 0), (4, 1), (9, 1)]);
    assert!(
        topo.cpus()
            .iter()
            .all(|c| (c.llc, c.numa, c.package) == (0, 0, 0))
    );
    assert_eq!(lists(&topo, Scope::Smt), ["2-3", "4,9"]);
    assert_eq!(
        topo.pod_of(Scope::Cpu, 5),
        None,
        "a hole in the OS numbering"
    );
}

#[test]
fn restrict_keeps_a_cpuset_and_recomputes_pods() {
    let full = synthetic("pack:2 numa:2 l3:2 core:4 pu:2");
    let allowed: Vec<usize> = (0..12).collect();
    let topo = full.restrict(&allowed).unwrap();
    check_invariants(&topo);
    assert_eq!(counts(&topo), [12, 6, 2, 2, 1, 1]);
    assert_eq!(lists(&topo, Scope::Cache), ["0-7", "8-11"]);
    assert_eq!(lists(&topo, Scope::Numa), ["0-11"]);
    assert_eq!(topo.pod_of(Scope::Smt, 12), None);
    assert!(
        topo.source().ends_with("restricted to 0-11"),
        "{}",
        topo.source()
    );

    // Splitting SMT siblings leaves single-CPU cores; unknown CPUs are ignored.
    let topo = full.restrict(&[1, 2, 3, 40, 1000]).unwrap();
    assert_eq!(lists(&topo, Scope::Smt), ["1", "2-3", "40"]);
    assert_eq!(lists(&topo, Scope::Numa), ["1-3", "40"]);
    assert_eq!(
        topo.cpus()[3],
        CpuInfo {
            os_index: 40,
            core: 2,
            llc: 1,
            numa: 1,
            package: 1
        }
    );
    check_invariants(&topo);
}

// ---- bad input ---------------------------------------------------------

#[test]
fn empty_cpu_sets_are_errors() {
    let err = Topology::from_cpus(vec![]).unwrap_err();
    assert_eq!(err.kind(), TopologyErrorKind::EmptyCpuSet);
    assert!(err.to_string().contains("at least one CPU"), "{err}");

    let topo = synthetic("core:2 pu:2");
    for allowed in [&[][..], &[4, 5]] {
        let err = topo.restrict(allowed).unwrap_err();
        assert_eq!(err.kind(), TopologyErrorKind::EmptyCpuSet);
        assert!(
            err.to_string().contains("0-3"),
            "names the CPUs there are: {err}"
        );
    }
    // Thousands of CPUs given are said as ranges (they were listed one by
    // one: a message of kilobytes), cut if those are many.
    let many: Vec<usize> = (5000..9096).rev().collect();
    let err = topo.restrict(&many).unwrap_err().to_string();
    assert!(err.contains("CPUs 5000-9095 leaves no CPU"), "{err}");
    assert!(err.len() < 300, "{} bytes: {err}", err.len());
    let sparse: Vec<usize> = (0..20_000).map(|i| 100_000 + 2 * i).collect();
    let err = topo.restrict(&sparse).unwrap_err().to_string();
    assert!(
        err.contains("bytes in all)"),
        "{}",
        &err[..err.len().min(400)]
    );
    assert!(err.len() < 1000, "{} bytes", err.len());
}

/// A description of more levels than wq reads is refused, with and
/// without the hwloc feature alike: hwloc 2.9 wrote past its level array
/// for 125 levels with no NUMA one (it adds one), and came back `Ok`.
#[test]
fn a_synthetic_description_of_too_many_levels_is_refused() {
    for levels in [65, 125, 126, 200] {
        let desc = format!("{}pu:1", "group:1 ".repeat(levels - 1));
        let err = Topology::synthetic(&desc).unwrap_err();
        assert_eq!(err.kind(), TopologyErrorKind::InvalidSynthetic, "{levels}");
        assert!(
            err.to_string().contains("levels, more than the 64"),
            "{err}"
        );
    }
    let desc = format!("{}pu:2", "group:1 ".repeat(63));
    assert_eq!(synthetic(&desc).num_cpus(), 2);
}

/// A mistaken huge description (a file's content given for one) is
/// quoted cut short, with its length: it was echoed whole.
#[test]
fn a_huge_bad_synthetic_description_is_quoted_cut_short() {
    // A count that is no number, and an index list in a memory child
    // (read with hwloc's grammar), quote what they name cut too.
    for desc in [
        format!("core:{}", "x".repeat(100_000)),
        format!("pack:2[numa(indexes=0,0 {})] pu:2", "x".repeat(100_000)),
    ] {
        let msg = Topology::synthetic(&desc).unwrap_err().to_string();
        assert!(msg.len() < 1000, "{} bytes", msg.len());
    }
    let desc = format!("core:2 {}", "x".repeat(100_000));
    let err = Topology::synthetic(&desc).unwrap_err();
    assert_eq!(err.kind(), TopologyErrorKind::InvalidSynthetic);
    let msg = err.to_string();
    assert!(
        msg.contains("... (100007 bytes in all)"),
        "{}",
        &msg[..msg.len().min(400)]
    );
    assert!(
        msg.len() < 1000,
        "{} bytes: {}",
        msg.len(),
        msg.replace(&"x".repeat(200), "<x200>")
            .chars()
            .take(2000)
            .collect::<String>()
    );
}

#[test]
fn duplicate_and_inconsistent_cpus_are_errors() {
    let cpu = |os_index, core, package| CpuInfo {
        os_index,
        core,
        llc: 0,
        numa: 0,
        package,
    };
    let err = Topology::from_cpus(vec![cpu(0, 0, 0), cpu(1, 1, 0), cpu(0, 2, 0)]).unwrap_err();
    assert_eq!(err.kind(), TopologyErrorKind::DuplicateCpu);
    assert!(err.to_string().contains("CPU 0 appears twice"), "{err}");

    // sysfs-style per-package core ids are not machine-wide ids.
    let err = Topology::from_cpus(vec![cpu(0, 0, 0), cpu(1, 0, 1)]).unwrap_err();
    assert_eq!(err.kind(), TopologyErrorKind::InconsistentCpu);
    assert!(
        err.to_string().contains("CPUs 0 and 1 share a core"),
        "{err}"
    );
}

#[test]
fn shard_size_zero_is_an_error() {
    let err = synthetic("core:4").with_cache_shard_size(0).unwrap_err();
    assert_eq!(err.kind(), TopologyErrorKind::InvalidShardSize);
    assert!(err.to_string().contains("at least 1 core"), "{err}");
}

#[test]
fn malformed_synthetic_strings_quote_the_input_and_an_example() {
    for desc in [
        "",
        "core:x",
        "pack:0 pu:1",
        "pu:2 core:2",
        "wibble:2 pu:1",
        "core",
    ] {
        let err = Topology::synthetic(desc).unwrap_err();
        assert_eq!(err.kind(), TopologyErrorKind::InvalidSynthetic, "{desc:?}");
        let msg = err.to_string();
        assert!(msg.contains(&format!("{desc:?}")), "{msg}");
        assert!(msg.contains("\"pack:2 numa:2 l3:2 core:4 pu:2\""), "{msg}");
    }
}

/// hwloc reads a level's type from any start of its name of two letters
/// or more ("pa", "co", "no"); so does the parser here (the same machine
/// with or without the feature), and a die may sit inside an L3 in both.
#[test]
fn fallback_parser_reads_types_as_hwloc_does() {
    let cpus = |desc: &str| synthetic::describe(desc).unwrap_or_else(|e| panic!("{desc}: {e}"));
    assert_eq!(cpus("pa:2 co:2 pu:1"), cpus("pack:2 core:2 pu:1"));
    assert_eq!(cpus("SO:2 no:2 CORE:2"), cpus("package:2 numa:2 core:2"));
    assert_eq!(
        cpus("pac:2 gr:1 di:1 cor:2 pu:2"),
        cpus("pack:2 core:2 pu:2")
    );
    assert_eq!(cpus("pack:1 l3:1 die:2 core:2 pu:1").len(), 4);
}

/// A count too big for a number, or counts whose product is, is too many
/// CPUs (it said "not a positive number", and "18446744073709551615
/// CPUs").
#[test]
fn counts_past_a_number_are_too_many_cpus() {
    for desc in [
        "core:99999999999999999999",
        "core:0x100000000000000000",
        "pack:4294967296 core:4294967296 pu:2",
    ] {
        for err in [
            synthetic::describe(desc).unwrap_err(),
            Topology::synthetic(desc).unwrap_err(),
        ] {
            assert_eq!(err.kind(), TopologyErrorKind::TooManyCpus, "{desc}: {err}");
            let msg = err.to_string();
            assert!(!msg.contains("18446744073709551615"), "{msg}");
            assert!(msg.contains("more than wq supports"), "{msg}");
        }
    }
}

#[test]
fn fallback_parser_rejects_what_it_cannot_read() {
    let cases = [
        ("core:x", "count \"x\" is not a positive number"),
        ("core:0", "count \"0\" is not a positive number"),
        (
            "core:08",
            "count \"08\" is not a positive number as hwloc reads it (C's strtoul: a leading 0 means octal, 0x hex); write 8",
        ),
        ("core", "lacks a :count"),
        ("l7:2 pu:1", "unknown level type \"l7\""),
        ("pu:2 core:2", "pu must be the last level"),
        ("core:2 pack:2", "\"pack\" cannot sit inside"),
        ("co:2 pa:2 pu:1", "\"pa\" cannot sit inside"),
        ("l3:2 pa:2 co:2 pu:1", "\"pa\" cannot sit inside"),
        ("p:2 pu:1", "unknown level type \"p\""),
        ("l2:2 l3:2 pu:1", "\"l3\" cannot sit inside"),
        ("core:2 numa:2 pu:1", "cannot sit inside a core"),
        ("numa:2 numa:2 pu:1", "numa appears twice"),
        // hwloc refuses these two as well: read alike without it.
        ("die:2 die:2 core:2", "die appears twice"),
        ("core:4 +2", "level \"+2\" lacks a :count"),
        ("pack:1024 core:1024 pu:2", "more than wq supports"),
        ("   ", "names no level"),
        ("core:2 pu:2(indexes=0,2,1,3)", "only hwloc reads"),
        ("pack:2[numa] core:2", "only hwloc reads"),
    ];
    for (desc, what) in cases {
        let err = synthetic::describe(desc).unwrap_err().to_string();
        assert!(
            err.contains(what) && err.contains(&format!("{desc:?}")),
            "{desc:?}: {err}"
        );
    }
}

/// A NUMA node, group or die inside a core is refused the same way with
/// and without hwloc (hwloc builds them: "core:4 numa:2" was refused for
/// CPUs of one core on different nodes, saying to fix core ids a
/// synthetic description does not have, and the others were taken).
#[test]
fn a_level_inside_a_core_is_refused_by_both_readers() {
    for desc in ["core:4 numa:2", "core:2 group:2", "pack:2 core:2 die:2"] {
        let err = Topology::synthetic(desc).unwrap_err();
        assert_eq!(
            err.kind(),
            TopologyErrorKind::InvalidSynthetic,
            "{desc}: {err}"
        );
        assert!(
            err.to_string().contains("cannot sit inside a core"),
            "{desc}: {err}"
        );
    }
}

/// Through `Topology::synthetic` (hwloc's backend when the feature is on):
/// sizes beyond `MAX_CPUS` are refused before anything is built, and a
/// level hwloc rejects is named.
#[test]
fn too_big_or_wrong_descriptions_are_refused_with_what_to_do() {
    let t = std::time::Instant::now();
    assert!(Topology::synthetic("core:99999999999999999999").is_err());
    // Nothing to read: said so (hwloc never saw it).
    let err = Topology::synthetic(" \t").unwrap_err().to_string();
    assert!(err.contains("names no level"), "{err}");
    // Also where the size hides from a `type:count` reading, in hwloc's
    // grammar: bare counts (hwloc picks the types), attribute lists with
    // spaces. Without hwloc, the parser here refuses them as forms it does
    // not read; with it, they are sized before hwloc builds anything
    // (before, hwloc tried to build 10^10 PUs). Hex counts both read.
    let err = Topology::synthetic("core:0x100000 pu:0x100000").unwrap_err();
    assert_eq!(err.kind(), TopologyErrorKind::TooManyCpus, "{err}");
    for desc in [
        "100000 100000",
        "(memory=1GB) core:100000 pu:100000",
        "l3:100000(size=1MB indexes=0) pu:100000",
    ] {
        let err = Topology::synthetic(desc).unwrap_err();
        #[cfg(feature = "hwloc")]
        assert_eq!(err.kind(), TopologyErrorKind::TooManyCpus, "{desc}: {err}");
        #[cfg(not(feature = "hwloc"))]
        assert_eq!(
            err.kind(),
            TopologyErrorKind::InvalidSynthetic,
            "{desc}: {err}"
        );
    }
    #[cfg(feature = "hwloc")]
    {
        // Unbalanced, or no number: refused with what to do.
        // In hwloc's own grammar too, where the error must not send the
        // user to the feature this build has.
        for desc in [
            "core:4(size=1 pu:2",
            "core:four pu:2",
            "core:2(frobnicate=1) pu:2",
            "pack:2[numa(frob=1)] core:2 pu:1",
        ] {
            let err = Topology::synthetic(desc).unwrap_err();
            assert_eq!(
                err.kind(),
                TopologyErrorKind::InvalidSynthetic,
                "{desc}: {err}"
            );
            let msg = err.to_string();
            assert!(msg.contains("type:count"), "{msg}");
            assert!(!msg.contains("`hwloc` feature"), "{msg}");
        }
        // hwloc's attribute lists still pass.
        assert_eq!(
            Topology::synthetic("(memory=1GB) pack:2(memory=512MB) core:2 pu:2")
                .unwrap()
                .cpus()
                .len(),
            8
        );
    }
    for desc in ["core:100000 pu:100000", "pack:16 core:2048 pu:2"] {
        let err = Topology::synthetic(desc).unwrap_err();
        assert_eq!(err.kind(), TopologyErrorKind::TooManyCpus, "{desc}: {err}");
        assert!(err.to_string().contains("more than wq supports"), "{err}");
    }
    // Levels glued together ("1000core:1000"), which hwloc reads as two:
    // the size read from the word's last count (8,000) passed the limit,
    // and hwloc built 8,000,000 PUs. A word is one level here.
    for desc in ["pack:1000core:1000 pu:8", "pack:2core:3 pu:2"] {
        let err = Topology::synthetic(desc).unwrap_err();
        assert_eq!(
            err.kind(),
            TopologyErrorKind::InvalidSynthetic,
            "{desc}: {err}"
        );
    }
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "refused only after building"
    );
    let err = Topology::synthetic("wibble:2").unwrap_err().to_string();
    assert!(err.contains("wibble"), "{err}");
    let err = Topology::synthetic("core:0").unwrap_err().to_string();
    assert!(err.contains("\"0\" is not a positive number"), "{err}");
    // Just inside the limit is fine (the parser here: hwloc builds 8,192
    // PUs slowly in a debug build).
    assert_eq!(
        synthetic::parse("pack:2 core:2048 pu:2")
            .unwrap()
            .cpus()
            .len(),
        MAX_CPUS
    );
}

#[test]
fn huge_cpu_indices_and_shard_sizes_are_errors_not_panics() {
    let cpu = |os_index| CpuInfo {
        os_index,
        ..two_uneven_llcs()[0].clone()
    };
    for os_index in [usize::MAX, 1 << 40, MAX_CPUS * 8] {
        let err = Topology::from_cpus(vec![cpu(os_index)]).unwrap_err();
        assert_eq!(err.kind(), TopologyErrorKind::TooManyCpus, "{err}");
    }
    assert!(Topology::from_cpus(vec![cpu(MAX_CPUS * 8 - 1)]).is_ok());
    let t = synthetic("core:4 pu:1");
    for size in [1 << 63, usize::MAX] {
        let err = t.clone().with_cache_shard_size(size).unwrap_err();
        assert_eq!(err.kind(), TopologyErrorKind::InvalidShardSize, "{err}");
    }
}

#[test]
fn fallback_parser_reads_the_subset() {
    let topo = synthetic::parse("Socket:2 NUMANode:2 L3Cache:2 Core:4 PU:2").unwrap();
    assert_eq!(counts(&topo), [64, 32, 8, 8, 4, 1]);
    let topo = synthetic::parse("pack:2 group:2 die:1 l2:2 core:2").unwrap();
    assert_eq!(counts(&topo), [16, 16, 8, 8, 1, 1]);
    check_invariants(&topo);
}

#[test]
fn format_and_parse_cpu_lists() {
    assert_eq!(format_cpu_list(&[]), "");
    assert_eq!(format_cpu_list(&[5]), "5");
    assert_eq!(format_cpu_list(&[0, 1]), "0-1");
    assert_eq!(
        format_cpu_list(&[0, 1, 2, 3, 8, 16, 17, 18, 30]),
        "0-3,8,16-18,30"
    );
    let cpus: Vec<usize> = (0..8).chain(16..24).collect();
    assert_eq!(format_cpu_list(&cpus), "0-7,16-23");
    assert_eq!(parse_cpu_list("0-7,16-23\n"), Some(cpus));
    assert_eq!(parse_cpu_list("3,1,1"), Some(vec![1, 3]));
    assert_eq!(parse_cpu_list("\n"), Some(vec![]));
    assert_eq!(parse_cpu_list("3-1"), None);
    assert_eq!(parse_cpu_list("a"), None);
}

#[test]
fn display_and_debug_are_readable() {
    let topo = synthetic("pack:2 numa:2 l3:2 core:4 pu:2");
    let text = topo.to_string();
    assert!(
        text.contains("64 CPUs (0-63) in 32 cores, 8 LLCs, 4 NUMA nodes, 2 packages"),
        "{text}"
    );
    assert!(
        text.contains("numa           4 pods: [0-15] [16-31] [32-47] [48-63]"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 2 + Scope::ALL.len());
    let debug = format!("{topo:?}");
    assert!(
        debug.contains("cpus: \"0-63\"") && debug.contains("\"cache\": 8"),
        "{debug}"
    );
    assert_eq!(topo.pods(Scope::Numa)[1].to_string(), "numa pod 1: 16-31");
    assert_eq!(topo.pods(Scope::Numa)[1].cpu_list(), "16-31");
}

#[test]
fn topology_is_send_sync_and_cheap_to_clone() {
    fn send_sync<T: Send + Sync + Clone>() {}
    send_sync::<Topology>();
    send_sync::<Pod>();
    fn error<T: std::error::Error + Send + Sync + 'static>() {}
    error::<TopologyError>();
    let topo = synthetic("core:2");
    assert!(std::ptr::eq(topo.cpus(), topo.clone().cpus()));
}

// ---- the sysfs reader on a fake tree -----------------------------------

/// A fake `/sys/devices/system`: 2 packages x 2 cores x 2 threads, Intel
/// numbering (core siblings `c` and `c + 4`), per-core L1/L2, an L3 and a
/// NUMA node per package, CPU 7 offline.
fn fake_sysfs() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    static N: AtomicUsize = AtomicUsize::new(0);
    let root = std::env::temp_dir().join(format!(
        "wq-fake-sysfs-{}-{}",
        std::process::id(),
        N.fetch_add(1, Relaxed)
    ));
    let write = |path: &str, text: &str| {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, format!("{text}\n")).unwrap();
    };
    write("cpu/online", "0-6");
    for cpu in 0..8 {
        let core = cpu % 4;
        let package = core / 2;
        let dir = format!("cpu/cpu{cpu}");
        write(
            &format!("{dir}/topology/thread_siblings_list"),
            &format!("{core},{}", core + 4),
        );
        write(
            &format!("{dir}/topology/physical_package_id"),
            &package.to_string(),
        );
        write(&format!("{dir}/topology/core_id"), &(core % 2).to_string());
        let l3 = if package == 0 { "0-1,4-5" } else { "2-3,6-7" };
        let sibs = format!("{core},{}", core + 4);
        for (index, level, kind, shared) in [
            (0, 1, "Data", sibs.as_str()),
            (1, 1, "Instruction", sibs.as_str()),
            (2, 2, "Unified", sibs.as_str()),
            (3, 3, "Unified", l3),
        ] {
            let cache = format!("{dir}/cache/index{index}");
            write(&format!("{cache}/level"), &level.to_string());
            write(&format!("{cache}/type"), kind);
            write(&format!("{cache}/shared_cpu_list"), shared);
        }
    }
    write("node/node0/cpulist", "0-1,4-5");
    write("node/node1/cpulist", "2-3,6");
    write("node/possible", "0-1");
    root
}

/// A VM whose virtual NUMA layout splits a core (QEMU boots it with a
/// warning): CPU 5, the sibling of CPU 1, sits in node 1. A description
/// built by hand is refused; the machine as a reader found it builds, CPU
/// 5 a core of its own (the runtime could not be built on such a VM).
#[test]
fn siblings_split_across_nodes_by_a_vm_become_cores_of_their_own() {
    let root = fake_sysfs();
    std::fs::write(root.join("node/node0/cpulist"), "0-1,4\n").unwrap();
    std::fs::write(root.join("node/node1/cpulist"), "2-3,5-6\n").unwrap();
    let cpus = sysfs::read(&root, &(0..64).collect::<Vec<_>>()).unwrap();
    let err = Topology::from_cpus(cpus.clone()).unwrap_err();
    assert_eq!(err.kind(), TopologyErrorKind::InconsistentCpu);
    let topo = Topology::from_cpus(as_found(cpus, "test")).unwrap();
    check_invariants(&topo);
    assert_eq!(lists(&topo, Scope::Smt), ["0,4", "1", "2,6", "3", "5"]);
    assert_eq!(lists(&topo, Scope::Numa), ["0-1,4", "2-3,5-6"]);
    assert_nested(&topo, Scope::Cache, Scope::Numa);
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn sysfs_reader_on_a_fake_tree() {
    let root = fake_sysfs();
    let cpus = sysfs::read(&root, &(0..64).collect::<Vec<_>>()).unwrap();
    let topo = Topology::from_cpus(cpus).unwrap();
    check_invariants(&topo);
    assert_eq!(lists(&topo, Scope::Cpu).len(), 7, "CPU 7 is offline");
    assert_eq!(lists(&topo, Scope::Smt), ["0,4", "1,5", "2,6", "3"]);
    assert_eq!(lists(&topo, Scope::Cache), ["0-1,4-5", "2-3,6"]);
    assert_eq!(lists(&topo, Scope::Numa), ["0-1,4-5", "2-3,6"]);
    assert_eq!(
        topo.cpus()[6],
        CpuInfo {
            os_index: 6,
            core: 2,
            llc: 1,
            numa: 1,
            package: 1
        }
    );
    let sharded = topo.with_cache_shard_size(1).unwrap();
    assert_eq!(
        lists(&sharded, Scope::CacheShard),
        ["0,4", "1,5", "2,6", "3"]
    );

    // The affinity mask restricts the CPUs read.
    let cpus = sysfs::read(&root, &[1, 2, 5]).unwrap();
    let topo = Topology::from_cpus(cpus).unwrap();
    assert_eq!(lists(&topo, Scope::Smt), ["1,5", "2"]);
    let err = sysfs::read(&root, &[7, 9]).unwrap_err();
    assert_eq!(err.kind(), TopologyErrorKind::EmptyCpuSet);
    assert!(err.to_string().contains("online CPUs (0-6)"), "{err}");

    let err = sysfs::read(&root.join("missing"), &[0]).unwrap_err();
    assert_eq!(err.kind(), TopologyErrorKind::Io);
    // A tree that lists no CPU is no sysfs: not an affinity matter.
    std::fs::create_dir_all(root.join("empty/cpu")).unwrap();
    let err = sysfs::read(&root.join("empty"), &[0]).unwrap_err();
    assert_eq!(err.kind(), TopologyErrorKind::Io, "{err}");
    assert!(err.to_string().contains("lists no CPU"), "{err}");
    assert!(!err.to_string().contains("  "), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}

// ---- the live machine --------------------------------------------------

#[test]
fn live_detect_is_restricted_to_the_affinity_mask() {
    let allowed = sysfs::allowed_cpus().unwrap();
    for topo in [
        Topology::detect().unwrap(),
        Topology::detect_sysfs().unwrap(),
    ] {
        check_invariants(&topo);
        assert!(topo.is_live());
        assert!(
            topo.cpus().iter().all(|c| allowed.contains(&c.os_index)),
            "{topo}"
        );
    }
    assert_eq!(
        Topology::detect_sysfs().unwrap().source(),
        "sysfs (this machine)"
    );
}

#[cfg(not(feature = "hwloc"))]
#[test]
fn xml_needs_the_hwloc_feature() {
    let err = Topology::from_xml("<topology/>").unwrap_err();
    assert_eq!(err.kind(), TopologyErrorKind::Unsupported);
    assert!(err.to_string().contains("`hwloc` cargo feature"), "{err}");
}

#[cfg(feature = "hwloc")]
use crate::child_process;

#[cfg(feature = "hwloc")]
mod with_hwloc {
    use super::*;

    #[test]
    fn hwloc_and_sysfs_readers_agree_on_this_machine() {
        let hw = Topology::detect().unwrap();
        let fs = Topology::detect_sysfs().unwrap();
        assert_eq!(hw.source(), "hwloc (this machine)");
        assert_eq!(hw.cpus(), fs.cpus());
        for scope in Scope::ALL {
            assert_eq!(lists(&hw, scope), lists(&fs, scope), "{scope}");
        }
    }

    /// hwloc's environment pointing `detect` at another machine's
    /// description is refused, naming the variable (the child below, run
    /// with each set: a synthetic machine of 10^10 CPUs is refused before
    /// hwloc builds it).
    #[test]
    fn detect_refuses_a_description_hwlocs_environment_points_at() {
        for (var, value) in [
            ("HWLOC_SYNTHETIC", "core:100000 pu:100000"),
            ("HWLOC_SYNTHETIC", "core:2 pu:1"),
            ("HWLOC_XMLFILE", "/nonexistent/box.xml"),
        ] {
            env_child(var, &[(var, value)], &["HWLOC_THISSYSTEM"]);
        }
        // A root hwloc cannot open falls through to the next variable:
        // that one is refused, named, before hwloc builds it (the search
        // stopped at HWLOC_FSROOT, and hwloc built 10^10 PUs).
        for value in ["core:2 pu:1", "core:100000 pu:100000"] {
            env_child(
                "HWLOC_SYNTHETIC",
                &[("HWLOC_FSROOT", "/nonexistent"), ("HWLOC_SYNTHETIC", value)],
                &["HWLOC_THISSYSTEM"],
            );
        }
        // One it opens (`/`) is read, and nothing past it.
        env_child(
            "fsroot-live",
            &[("HWLOC_FSROOT", "/"), ("HWLOC_SYNTHETIC", "core:2 pu:1")],
            &["HWLOC_THISSYSTEM"],
        );
        // Vouched for, a huge synthetic description is still refused
        // before hwloc builds it; and hwloc told "not this system" by
        // HWLOC_THISSYSTEM=0 alone is named in the error.
        for (mode, envs) in [
            (
                "vouched-huge",
                [
                    ("HWLOC_THISSYSTEM", "1"),
                    ("HWLOC_SYNTHETIC", "core:100000 pu:100000"),
                ],
            ),
            (
                "not-this-system",
                [("HWLOC_THISSYSTEM", "0"), ("WQ_UNUSED", "")],
            ),
            // Vouched for, a synthetic description gets the checks
            // `Topology::synthetic` makes (repeated indexes merged CPUs of
            // a live topology).
            (
                "vouched-repeated",
                [
                    ("HWLOC_THISSYSTEM", "1"),
                    ("HWLOC_SYNTHETIC", "core:2 pu:2(indexes=0,0,1,1)"),
                ],
            ),
            // Vouched for, one hwloc cannot parse (no pu level last) is
            // refused: hwloc dropped it and read this machine instead.
            (
                "vouched-unparsed",
                [
                    ("HWLOC_THISSYSTEM", "1"),
                    ("HWLOC_SYNTHETIC", "pack:2 core:8"),
                ],
            ),
        ] {
            env_child(mode, &envs, &["HWLOC_THISSYSTEM", "HWLOC_SYNTHETIC"]);
        }
        // Vouched for, an export gets the checks `Topology::from_xml`
        // makes (hwloc took a PU without os_index, and a debug build
        // aborted on it), and a file hwloc cannot open is refused (hwloc
        // read this machine instead, under the export's name).
        let xml = export("pack:1 core:2 pu:2");
        let first_pu = xml.lines().find(|l| l.contains("type=\"PU\"")).unwrap();
        let at = first_pu.find(" os_index=\"").unwrap();
        let end = at + 1 + first_pu[at + 1..].find(' ').unwrap();
        let no_os_index = xml.replacen(
            first_pu,
            &format!("{}{}", &first_pu[..at], &first_pu[end..]),
            1,
        );
        let dir = std::env::temp_dir().join(format!("wq-xmlfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("no-os-index.xml");
        std::fs::write(&file, no_os_index).unwrap();
        let file = file.to_str().unwrap();
        for (mode, path) in [
            ("vouched-xml-unreadable", "/nonexistent/box.xml"),
            ("vouched-xml-no-os-index", file),
        ] {
            env_child(
                mode,
                &[("HWLOC_THISSYSTEM", "1"), ("HWLOC_XMLFILE", path)],
                &["HWLOC_SYNTHETIC", "HWLOC_FSROOT"],
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            hwloc::env_override(|v| (v == "HWLOC_XMLFILE").then(|| "x.xml".to_owned())),
            Some(("HWLOC_XMLFILE", "x.xml".to_owned()))
        );
        assert_eq!(hwloc::env_override(|_| Some(String::new())), None);
    }

    /// Runs `detect_env_child` in a child process in `mode`, with `set`
    /// and without `unset` in its environment; fails unless it passed.
    fn env_child(mode: &str, set: &[(&str, &str)], unset: &[&str]) {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child
            .args([
                "--exact",
                "topology::tests::with_hwloc::detect_env_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("WQ_HWLOC_ENV_CHILD", mode);
        for var in unset {
            child.env_remove(var);
        }
        let out = child_process::output(child.envs(set.iter().copied()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{mode} {set:?}: {}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn detect_env_child() {
        let Ok(var) = std::env::var("WQ_HWLOC_ENV_CHILD") else {
            return;
        };
        if var == "vouched-huge" {
            let err = Topology::detect().unwrap_err();
            assert_eq!(err.kind(), TopologyErrorKind::TooManyCpus, "{err}");
            assert!(err.to_string().contains("HWLOC_SYNTHETIC="), "{err}");
            return;
        }
        if var == "fsroot-live" {
            // A root hwloc opens is what it reads: the live machine, the
            // synthetic description beside it unread.
            let t = Topology::detect().unwrap();
            assert!(t.is_live());
            assert_eq!(t.num_cpus(), Topology::detect_sysfs().unwrap().num_cpus());
            return;
        }
        if var == "vouched-repeated" {
            let err = Topology::detect().unwrap_err();
            assert_eq!(err.kind(), TopologyErrorKind::InvalidSynthetic, "{err}");
            assert!(err.to_string().contains("indexes"), "{err}");
            return;
        }
        if var == "vouched-unparsed" {
            let err = Topology::detect().unwrap_err();
            assert_eq!(err.kind(), TopologyErrorKind::InvalidSynthetic, "{err}");
            assert!(err.to_string().contains("HWLOC_SYNTHETIC="), "{err}");
            assert!(err.to_string().contains("hwloc cannot parse it"), "{err}");
            return;
        }
        if var == "vouched-xml-unreadable" {
            let err = Topology::detect().unwrap_err();
            assert_eq!(err.kind(), TopologyErrorKind::InvalidXml, "{err}");
            assert!(
                err.to_string()
                    .contains("HWLOC_XMLFILE=\"/nonexistent/box.xml\": cannot read it"),
                "{err}"
            );
            return;
        }
        if var == "vouched-xml-no-os-index" {
            let err = Topology::detect().unwrap_err();
            assert_eq!(err.kind(), TopologyErrorKind::InvalidXml, "{err}");
            assert!(err.to_string().contains("HWLOC_XMLFILE="), "{err}");
            assert!(
                err.to_string().contains("has no os_index attribute"),
                "{err}"
            );
            return;
        }
        if var == "not-this-system" {
            let err = Topology::detect().unwrap_err();
            assert_eq!(err.kind(), TopologyErrorKind::NotThisMachine, "{err}");
            assert!(
                err.to_string()
                    .contains("HWLOC_THISSYSTEM=\"0\" is set: unset it"),
                "{err}"
            );
            return;
        }
        let err = Topology::detect().unwrap_err();
        assert_eq!(err.kind(), TopologyErrorKind::NotThisMachine, "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&format!("{var}=")), "{msg}");
        assert!(msg.contains("HWLOC_THISSYSTEM=1"), "{msg}");
        // The live reader without hwloc is not misled.
        assert!(Topology::detect_sysfs().unwrap().is_live());
    }

    #[test]
    fn fallback_parser_matches_hwloc() {
        for desc in [
            "pack:2 numa:2 l3:2 core:4 pu:2",
            "core:32 pu:2",
            "core:13 pu:1",
            "core:4",
            "pack:1 l2:4 core:2 pu:1",
            "core:4 pu:2",
            "package:2 core:3 pu:2",
            "pack:2 l3:1 numa:2 core:3 pu:2",
            "numa:4 l3:3 l2:2 core:2 pu:4",
            "pu:3",
        ] {
            let ours = synthetic::parse(desc).unwrap();
            let theirs = synthetic(desc);
            assert_eq!(ours.cpus(), theirs.cpus(), "{desc}");
            for scope in Scope::ALL {
                assert_eq!(ours.pods(scope), theirs.pods(scope), "{desc} {scope}");
            }
        }
    }

    #[test]
    fn interleaved_os_indices_follow_the_pus() {
        // Intel-style numbering, as hwloc's 16em64t-4s2c2t test machine:
        // package p holds CPUs p, p + 4, p + 8, p + 12; SMT siblings c, c + 8.
        let desc = "pack:4 l3:1 l2:2 core:1 pu:2(indexes=0,8,4,12,1,9,5,13,2,10,6,14,3,11,7,15)";
        let topo = synthetic(desc).with_cache_shard_size(1).unwrap();
        check_invariants(&topo);
        assert_eq!(lists(&topo, Scope::Smt)[..3], ["0,8", "1,9", "2,10"]);
        assert_eq!(
            lists(&topo, Scope::Cache),
            ["0,4,8,12", "1,5,9,13", "2,6,10,14", "3,7,11,15"]
        );
        assert_eq!(lists(&topo, Scope::CacheShard), lists(&topo, Scope::Smt));
        assert_eq!(
            topo.cpus()[4],
            CpuInfo {
                os_index: 4,
                core: 4,
                llc: 0,
                numa: 0,
                package: 0
            }
        );
    }

    /// The XML export of a synthetic topology, made by hwloc.
    fn export(desc: &str) -> String {
        use hwlocality::topology::export::xml::XMLExportFlags;
        let hw = hwlocality::Topology::builder()
            .from_synthetic(desc)
            .unwrap()
            .build()
            .unwrap();
        hw.export_xml(XMLExportFlags::empty())
            .unwrap()
            .as_str()
            .to_owned()
    }

    #[test]
    fn xml_export_round_trips() {
        let desc = "pack:2 numa:2 l3:2 core:4 pu:2";
        let topo = Topology::from_xml(&export(desc)).unwrap();
        check_invariants(&topo);
        assert_eq!((topo.source(), topo.is_live()), ("xml", false));
        let want = synthetic(desc);
        for scope in Scope::ALL {
            assert_eq!(topo.pods(scope), want.pods(scope), "{scope}");
        }
    }

    /// NUMA nodes outside the process's allowed memory (a cgroup's
    /// `cpuset.mems`, or memoryless nodes, which hwloc never counts as
    /// allowed) are dropped by hwloc with their CPUs kept: those CPUs are
    /// still their node's (its `complete_nodeset`), as the sysfs reader
    /// says, not node 0's (they were filed under it: one `numa` pod
    /// spanned nodes 0, 3 and 4 here).
    #[test]
    fn cpus_of_nodes_hwloc_dropped_keep_their_own_numa_pods() {
        let desc = "pack:1 numa:4 core:2 pu:1";
        let xml = export(desc);
        let all = "allowed_nodeset=\"0x0000000f\"";
        assert!(xml.contains(all), "{xml}");
        let xml = xml.replace(all, "allowed_nodeset=\"0x00000006\"");
        let topo = Topology::from_xml(&xml).unwrap();
        check_invariants(&topo);
        assert_eq!(lists(&topo, Scope::Numa), ["0-1", "2-3", "4-5", "6-7"]);
        assert_eq!(topo.pods(Scope::Numa), synthetic(desc).pods(Scope::Numa));
    }

    /// An export whose PUs have no `os_index` (hwloc's importer takes it,
    /// then numbers the PUs by logical index, or, in a debug build, aborts
    /// the process on its own assertion) is refused with what to do.
    #[test]
    fn xml_pus_without_os_index_are_refused() {
        let xml = export("core:2 pu:2(indexes=0,2,1,3)");
        assert!(xml.contains("os_index=\"2\""), "{xml}");
        let mut stripped = String::new();
        for line in xml.lines() {
            if line.contains("type=\"PU\"") {
                let start = line.find(" os_index=\"").unwrap();
                let end = start + 12 + line[start + 12..].find('"').unwrap() + 1;
                stripped.push_str(&line[..start]);
                stripped.push_str(&line[end..]);
            } else {
                stripped.push_str(line);
            }
            stripped.push('\n');
        }
        assert!(!stripped.contains("type=\"PU\" os_index"), "{stripped}");
        let err = Topology::from_xml(&stripped).unwrap_err();
        assert_eq!(err.kind(), TopologyErrorKind::InvalidXml);
        assert!(
            err.to_string().contains("has no os_index attribute"),
            "{err}"
        );
        // The export as hwloc wrote it keeps its numbering.
        let topo = Topology::from_xml(&xml).unwrap();
        assert_eq!(lists(&topo, Scope::Smt), ["0,2", "1,3"]);
    }

    /// The `os_index` check reads attributes as XML allows them: any
    /// whitespace between them, either quote, spaces around `=`.
    #[test]
    fn the_os_index_check_reads_attributes_as_xml_writes_them() {
        use super::super::hwloc::pu_without_os_index as missing;
        for with in [
            "<object type=\"PU\" os_index=\"3\" cpuset=\"0x8\"/>",
            "<object\ttype='PU'\n  os_index='3'/>",
            "<object type = \"PU\" os_index = \"3\">",
            "<object type=\"Core\"/>",
        ] {
            assert_eq!(missing(with), None, "{with:?}");
        }
        for without in [
            "<object type=\"PU\" cpuset=\"0x8\"/>",
            "<object\ttype='PU'\n cpuset='0x8'/>",
        ] {
            assert!(missing(without).is_some(), "{without:?}");
        }
    }

    /// A PU's os_index hand-edited to repeat another's, to disagree with
    /// its cpuset, or to be no number: refused, naming the PU (a debug
    /// build aborted in hwloc's own check; release merged or misplaced
    /// CPUs).
    #[test]
    fn xml_with_edited_pu_numbers_is_refused() {
        let xml = export("core:2 pu:2");
        assert!(Topology::from_xml(&xml).is_ok());
        // The last attribute of a tag is read without its `/>`.
        assert_eq!(
            super::super::hwloc::pu_os_index_problem(
                "<object type=\"PU\" cpuset=\"0x8\" os_index=\"3\"/>"
            ),
            None
        );
        for (from, to, says) in [
            ("os_index=\"1\"", "os_index=\"0\"", "repeats os_index 0"),
            ("os_index=\"1\"", "os_index=\"7\"", "its cpuset holds CPU 1"),
            ("os_index=\"1\"", "os_index=\"x\"", "not a number"),
        ] {
            assert!(xml.contains(from), "{xml}");
            let edited = xml.replacen(from, to, 1);
            let err = Topology::from_xml(&edited).unwrap_err();
            assert_eq!(err.kind(), TopologyErrorKind::InvalidXml);
            assert!(err.to_string().contains(says), "{err}");
        }
    }

    /// Hand-edited exports hwloc's importer takes and its consistency check
    /// then aborts on (the process, in a debug build: no error to catch)
    /// are refused first, saying what is wrong: no PU at all (in release
    /// it was refused as "no CPU" with advice for `from_cpus`), a PU with
    /// an empty cpuset (in release that CPU vanished), a gp_index two
    /// objects share (in release it passed).
    #[test]
    fn xml_without_pus_with_an_empty_pu_or_a_repeated_gp_index_is_refused() {
        let xml = export("pack:1 l3:1 core:2 pu:2");
        assert!(Topology::from_xml(&xml).is_ok());
        let no_pu: String = xml
            .lines()
            .filter(|l| !l.contains("type=\"PU\""))
            .collect::<Vec<_>>()
            .join("\n");
        let first_pu = xml
            .lines()
            .find(|l| l.contains("type=\"PU\""))
            .unwrap()
            .to_owned();
        let mut empty_pu = first_pu.clone();
        for attr in ["cpuset", "complete_cpuset"] {
            let at = empty_pu.find(&format!(" {attr}=\"")).unwrap() + attr.len() + 3;
            let end = at + empty_pu[at..].find('"').unwrap();
            empty_pu.replace_range(at..end, "0x0");
        }
        let gp = xml
            .lines()
            .filter_map(|l| {
                let at = l.find("gp_index=\"")? + "gp_index=\"".len();
                Some(l[at..at + l[at..].find('"')?].to_owned())
            })
            .collect::<Vec<_>>();
        assert!(gp.len() >= 2, "{xml}");
        for (edited, says) in [
            (no_pu, "has no PU object"),
            (xml.replacen(&first_pu, &empty_pu, 1), "has an empty cpuset"),
            (
                xml.replacen(
                    &format!("gp_index=\"{}\"", gp[1]),
                    &format!("gp_index=\"{}\"", gp[0]),
                    1,
                ),
                "repeats gp_index",
            ),
        ] {
            let err = Topology::from_xml(&edited).unwrap_err();
            assert_eq!(err.kind(), TopologyErrorKind::InvalidXml, "{err}");
            assert!(err.to_string().contains(says), "{says}: {err}");
            // Each line continued with its `\` (two lost theirs, and the
            // message carried a run of the next line's indentation).
            assert!(!err.to_string().contains("  "), "{err}");
        }
    }

    /// A PU numbered beyond what wq supports is refused before hwloc reads
    /// the file, saying so: hwloc rejected one with no CPU set, and the
    /// error said only that hwloc rejected the file (`InvalidXml`).
    #[test]
    fn xml_with_a_pu_numbered_beyond_the_limit_is_refused_before_hwloc_reads_it() {
        let xml = export("core:2 pu:1");
        let at = xml.find("type=\"PU\" os_index=\"1\"").expect("PU 1");
        let end = at + xml[at..].find('>').unwrap();
        // Its CPU sets taken out, as hwloc mends a PU's from its os_index.
        let tag: Vec<&str> = xml[at..end]
            .trim_end_matches('/')
            .split_whitespace()
            .filter(|a| !a.contains("cpuset="))
            .map(|a| {
                if a.starts_with("os_index=") {
                    "os_index=\"4000000000\""
                } else {
                    a
                }
            })
            .collect();
        let edited = format!("{}{}/{}", &xml[..at], tag.join(" "), &xml[end..]);
        let err = Topology::from_xml(&edited).unwrap_err();
        assert_eq!(err.kind(), TopologyErrorKind::TooManyCpus, "{err}");
        assert!(err.to_string().contains("CPU index 4000000000"), "{err}");
    }

    /// So is a NUMA node numbered beyond it: hwloc grew every node set to
    /// the number (490 MiB for this one) and the topology was taken.
    #[test]
    fn xml_with_a_numa_node_numbered_beyond_the_limit_is_refused() {
        let xml = export("pack:2 numa:1 core:2 pu:1");
        let node = "type=\"NUMANode\" os_index=\"1\"";
        assert!(xml.contains(node), "{xml}");
        let edited = xml.replacen(node, "type=\"NUMANode\" os_index=\"4000000000\"", 1);
        let err = Topology::from_xml(&edited).unwrap_err();
        assert_eq!(err.kind(), TopologyErrorKind::TooManyCpus, "{err}");
        assert!(
            err.to_string().contains("NUMA node index 4000000000"),
            "{err}"
        );
        // One within the limit that is not its node set's (it aborted a
        // debug build in hwloc's own check), or repeats another node's.
        for (index, why) in [
            ("3", "its nodeset holds node 1"),
            ("0", "repeats os_index 0"),
        ] {
            let edited = xml.replacen(node, &format!("type=\"NUMANode\" os_index=\"{index}\""), 1);
            let err = Topology::from_xml(&edited).unwrap_err();
            assert_eq!(err.kind(), TopologyErrorKind::InvalidXml, "{err}");
            assert!(err.to_string().contains(why), "{err}");
        }
    }

    /// The os_index check reads cpusets as hwloc writes them: a 32-bit
    /// word of zeros is an empty field (CPU 70: `0x00000040,,0x0`), and
    /// the check let every PU from 64 up through unchecked (an edited one
    /// aborted a debug build in hwloc's own check).
    #[test]
    fn the_os_index_check_reads_cpusets_with_empty_words() {
        let xml = export("core:48 pu:2");
        let pu70 = "type=\"PU\" os_index=\"70\"";
        assert!(
            xml.contains(pu70) && xml.contains("0x00000040,,0x0"),
            "{xml}"
        );
        let err =
            Topology::from_xml(&xml.replacen(pu70, "type=\"PU\" os_index=\"200\"", 1)).unwrap_err();
        assert_eq!(err.kind(), TopologyErrorKind::InvalidXml);
        assert!(err.to_string().contains("its cpuset holds CPU 70"), "{err}");
        assert!(Topology::from_xml(&xml).is_ok());
    }

    /// CPU sets edited so that they no longer nest as hwloc's consistency
    /// check asserts are refused, naming the object (a debug build aborted
    /// in that check: hwlocality runs it; release read CPUs into the wrong
    /// caches): a core without one of its PUs, siblings that overlap, a
    /// set beyond its complete set. Every export hwloc writes passes, and
    /// what its import mends is left to it.
    #[test]
    fn xml_whose_cpusets_do_not_nest_is_refused() {
        use super::super::hwloc::cpuset_problem;
        for desc in [
            "pack:2 numa:2 l3:2 core:4 pu:2",
            "core:48 pu:2",
            "pack:1 numa:4 core:2 pu:1",
            "pack:2 l3:1 numa:2 core:3 pu:2",
            "numa:4 l3:3 l2:2 core:2 pu:4",
            "core:2 pu:2(indexes=0,2,1,3)",
        ] {
            let xml = export(desc);
            assert_eq!(cpuset_problem(&xml), None, "{desc}");
        }
        let xml = export("pack:1 numa:1 core:2 pu:2");
        // Core 0 holds PUs 0-1 (0x3), core 1 PUs 2-3 (0xc).
        let core0 = "type=\"Core\" os_index=\"0\" cpuset=\"0x00000003\"";
        let numa = "type=\"NUMANode\" os_index=\"0\" cpuset=\"0x0000000f\"";
        let pu1 = "type=\"PU\" os_index=\"1\" cpuset=\"0x00000002\"";
        let core1 = "type=\"Core\" os_index=\"1\" cpuset=\"0x0000000c\"";
        let core0_complete = format!("{core0} complete_cpuset=\"0x00000003\"");
        let core1_complete = format!("{core1} complete_cpuset=\"0x0000000c\"");
        for needle in [core0, numa, pu1, &core0_complete, &core1_complete] {
            assert!(xml.contains(needle), "{needle}\n{xml}");
        }
        for (from, to, says) in [
            (
                core0.to_owned(),
                core0.replace("0x00000003", "0x00000001"),
                "not the union",
            ),
            (
                core1_complete.clone(),
                core1_complete.replace("0x0000000c", "0x0000000e"),
                "another child",
            ),
            (
                core0_complete.clone(),
                core0_complete.replace(
                    "complete_cpuset=\"0x00000003\"",
                    "complete_cpuset=\"0x00000001\"",
                ),
                "not within its complete_cpuset",
            ),
        ] {
            let edited = xml.replacen(&from, &to, 1);
            let err = Topology::from_xml(&edited).unwrap_err();
            assert_eq!(err.kind(), TopologyErrorKind::InvalidXml, "{to}");
            assert!(err.to_string().contains(says), "{says}: {err}");
        }
        // What hwloc's import mends is left to it (its check passes): a
        // NUMA node's set, a PU's.
        for (from, to) in [
            (numa, numa.replace("0x0000000f", "0x00000007")),
            (pu1, pu1.replace("0x00000002", "0x00000006")),
        ] {
            assert!(
                Topology::from_xml(&xml.replacen(from, &to, 1)).is_ok(),
                "{to}"
            );
        }
    }

    /// A file hwloc refuses is described: empty, cut short (no
    /// `</topology>`), or written by another hwloc version; and every
    /// refusal says how to have hwloc say why (the message quoted the
    /// file's first 40 characters: always its `<?xml` prolog).
    #[test]
    fn xml_hwloc_refuses_is_described() {
        let xml = export("core:2 pu:2");
        let cut = &xml[..xml.find("os_index").unwrap() + 3];
        let newer = xml.replacen("version=\"2.0\"", "version=\"3.0\"", 1);
        assert_ne!(newer, xml, "{xml}");
        for (input, says) in [
            ("", "is empty"),
            ("   \n", "is empty"),
            (cut, "cut short"),
            (&newer[..], "version \"3.0\""),
        ] {
            let err = Topology::from_xml(input).unwrap_err();
            assert_eq!(err.kind(), TopologyErrorKind::InvalidXml, "{input:?}");
            let msg = err.to_string();
            assert!(msg.contains(says), "{says}: {msg}");
            assert!(!msg.contains("<?xml"), "{msg}");
        }
        // No NUMA node at all (hwloc needs one).
        let numa_at = xml.find("<object type=\"NUMANode\"").unwrap();
        let numa_end = numa_at + xml[numa_at..].find("</object>").unwrap() + "</object>".len();
        let no_numa = format!("{}{}", &xml[..numa_at], &xml[numa_end..]);
        let err = Topology::from_xml(&no_numa).unwrap_err();
        assert!(err.to_string().contains("HWLOC_XML_VERBOSE=1"), "{err}");
    }

    /// Synthetic indexes reach the OS index every other reader takes
    /// (below 65,536), and over it the error is the same kind.
    #[test]
    fn synthetic_indexes_reach_every_readers_os_index_limit() {
        let t = Topology::synthetic("core:2 pu:2(indexes=0,1,2,9000)").unwrap();
        assert_eq!(t.cpus()[3].os_index, 9000);
        let err = Topology::synthetic(&format!("core:2 pu:2(indexes=0,1,2,{})", MAX_CPUS * 8))
            .unwrap_err();
        assert_eq!(err.kind(), TopologyErrorKind::TooManyCpus, "{err}");
    }

    /// What hwloc reads unchecked is checked before it: explicit OS
    /// indexes (a repeated one merged CPUs: "core:2 pu:2(indexes=0,0,1,1)"
    /// made 2; a huge one grew every CPU set to gigabytes) are refused,
    /// levels out of order are named (hwloc built packages inside cores
    /// and blamed the core ids), and a tab separates levels as a space
    /// (hwloc refused it without saying why).
    #[test]
    fn hwloc_is_given_no_string_it_would_misread() {
        for (desc, kind) in [
            (
                "core:2 pu:2(indexes=0,0,1,1)",
                TopologyErrorKind::InvalidSynthetic,
            ),
            (
                "core:2 pu:2(indexes=0,1,2,4000000000)",
                TopologyErrorKind::TooManyCpus,
            ),
            (
                "core:2 pu:2(indexes=0,1)",
                TopologyErrorKind::InvalidSynthetic,
            ),
            // A memory child's own indexes: a repeated one made two nodes
            // of one number (the numa scope one pod of both); a huge one
            // grew every node set to it.
            (
                "pack:2[numa(indexes=0,0)] core:2 pu:1",
                TopologyErrorKind::InvalidSynthetic,
            ),
            (
                "pack:2[numa(indexes=0,4000000000)] core:2 pu:1",
                TopologyErrorKind::TooManyCpus,
            ),
        ] {
            let err = Topology::synthetic(desc).unwrap_err();
            assert_eq!(err.kind(), kind, "{desc}");
            assert!(err.to_string().contains("the indexes of"), "{err}");
        }
        for desc in [
            "core:2 pack:2 pu:1",
            "l3:2 l3:2 pu:1",
            "l2:2 l3:2 pu:1",
            "co:2 pa:2 pu:1",
            "l3:2 pa:2 co:2 pu:1",
        ] {
            let err = Topology::synthetic(desc).unwrap_err();
            assert_eq!(err.kind(), TopologyErrorKind::InvalidSynthetic, "{desc}");
            assert!(err.to_string().contains("cannot sit inside"), "{err}");
        }
        // What hwloc accepts stays accepted: indexes in base 10 with a
        // trailing comma, an interleaving, memory children, a die inside
        // a package-wide L3.
        assert_eq!(
            synthetic("core:4 pu:2(indexes=0,1,2,3,4,5,6,08,)").num_cpus(),
            8
        );
        assert_eq!(synthetic("core:2 pu:2(indexes=2*2)").num_cpus(), 4);
        assert_eq!(
            synthetic("pack:2[numa] core:2 pu:2(indexes=0,2,4,6,1,3,5,7)").num_cpus(),
            8
        );
        let t = synthetic("pack:2[numa(indexes=1,0)] core:2 pu:1");
        assert_eq!(t.pods(Scope::Numa).len(), 2);
        assert_eq!(synthetic("pack:1 l3:1 die:2 core:2 pu:1").num_cpus(), 4);
        // Base 10 as hwloc reads them: "010" and "10" are one index.
        assert!(Topology::synthetic("core:1 pu:2(indexes=010,10)").is_err());
        assert!(
            Topology::synthetic("pack:2[numa] core:2 pu:2(indexes=0,1,2,3)").is_err(),
            "a list short of the 8 PUs behind a memory child"
        );
        assert_eq!(synthetic("core:4\tpu:2").num_cpus(), 8);
        assert_eq!(synthetic("core:4 pu:2\r\n").num_cpus(), 8);
        // Attributes, still read.
        assert_eq!(
            synthetic("(memory=1GB) pack:2(memory=512MB) core:2 pu:2").num_cpus(),
            8
        );
        // A last level whose attributes hold a space still gets its
        // implied `pu:1` (the last word was "indexes=0,1)", taken for a
        // bare PU count: hwloc then refused a description ending in a
        // package).
        assert_eq!(synthetic("pack:2(memory=1GB indexes=0,1)").num_cpus(), 2);
    }

    /// hwloc's interleaving forms of `indexes=` are computed by its reader
    /// with asserts for checks: a product of loop counts that wrapped to
    /// zero, or a level type below the level indexed, aborted the process
    /// (a divide by zero without asserts). Refused before hwloc sees
    /// them, with what to write instead; the forms hwloc computes stay.
    #[test]
    fn interleaved_indexes_that_would_abort_hwloc_are_refused() {
        for (desc, says) in [
            (
                "pack:2(indexes=1*65536:1*65536:1*65536:1*65536) pu:1",
                "whose product",
            ),
            ("core:2 pu:2(indexes=0*2:1*2)", "from 1 to"),
            ("core:2 pu:2(indexes=2*x)", "step*count"),
            (
                "pack:2(indexes=Core:Package) core:2 pu:1",
                "not a level above the PUs",
            ),
            ("core:2 pu:2(indexes=Group:PU)", "not a level above the PUs"),
            ("core:2 pu:2(indexes=Core:PU)", "not a level above the PUs"),
            ("core:2 pu:2(indexes=Bogus)", "not a level above the PUs"),
            // hwloc takes the last of several lists: each is checked.
            (
                "pack:2(indexes=0,1 indexes=1*65536:1*65536:1*65536:1*65536) pu:1",
                "whose product",
            ),
            (
                "pack:2(indexes=0,1 indexes=Core) core:2 pu:1",
                "not a level above the PUs",
            ),
            ("pack:2[numa(indexes=Core)] core:2 pu:1", "memory child"),
        ] {
            let err = Topology::synthetic(desc).unwrap_err();
            assert_eq!(err.kind(), TopologyErrorKind::InvalidSynthetic, "{desc}");
            assert!(err.to_string().contains(says), "{desc}: {err}");
        }
        // By level type: the PUs of core 0 are 0 and 2 (hwloc adds the
        // innermost loop), so the list took effect.
        assert_eq!(
            lists(&synthetic("core:2 pu:2(indexes=Core)"), Scope::Smt),
            ["0,2", "1,3"]
        );
        assert_eq!(
            synthetic("pack:2 core:2 pu:2(indexes=Pack:Core)").num_cpus(),
            8
        );
        assert_eq!(synthetic("core:2 pu:2(indexes=1*2:2*2)").num_cpus(), 4);
        assert_eq!(
            synthetic("pack:2[numa(indexes=1*2)] core:2 pu:1")
                .pods(Scope::Numa)
                .len(),
            2
        );
    }

    /// A last level with no type is hwloc's PU level ("core:4 2" is
    /// "core:4 pu:2"); counts are read as hwloc reads them (C's strtoul),
    /// by hwloc and by the parser used without the feature alike.
    #[test]
    fn synthetic_bare_last_level_and_counts_read_as_hwloc_reads_them() {
        assert_eq!(
            synthetic("core:4 2").pods(Scope::Smt),
            synthetic("core:4 pu:2").pods(Scope::Smt)
        );
        assert_eq!(synthetic("core:010").num_cpus(), 8);
        assert_eq!(synthetic("core:0x10").num_cpus(), 16);
        // strtoul's leading `+` (the macro's check takes it too), before
        // the radix's prefix, read alike with and without hwloc.
        assert_eq!(synthetic("core:+4").num_cpus(), 4);
        assert_eq!(synthetic("core:+0x10").num_cpus(), 16);
        assert_eq!(synthetic("core:+010").num_cpus(), 8);
        assert_eq!(synthetic::parse("core:+010").unwrap().num_cpus(), 8);
        assert_eq!(synthetic::parse("core:+0x10").unwrap().num_cpus(), 16);
        assert!(synthetic::parse("core:0x+10").is_err());
        assert_eq!(synthetic::parse("core:010").unwrap().num_cpus(), 8);
        assert_eq!(
            synthetic::parse("core:4 2").unwrap().pods(Scope::Smt),
            synthetic("core:4 pu:2").pods(Scope::Smt)
        );
        assert_eq!(synthetic::parse("core:0x10").unwrap().num_cpus(), 16);
    }

    /// A complete XML document of another kind is no hwloc export, not a
    /// cut-short one.
    #[test]
    fn xml_of_another_kind_is_said_to_be_no_hwloc_export() {
        let err = Topology::from_xml("<?xml version=\"1.0\"?><svg></svg>").unwrap_err();
        assert_eq!(err.kind(), TopologyErrorKind::InvalidXml);
        let msg = err.to_string();
        assert!(msg.contains("not an hwloc export"), "{msg}");
        assert!(!msg.contains("cut short"), "{msg}");
    }

    #[test]
    fn malformed_xml_is_an_error() {
        for xml in [
            "",
            "<not a topology>",
            "<?xml version=\"1.0\"?><topology></topology>",
        ] {
            let err = Topology::from_xml(xml).unwrap_err();
            assert_eq!(err.kind(), TopologyErrorKind::InvalidXml, "{xml:?}");
            assert!(err.to_string().contains("hwloc-ls --of xml"), "{err}");
        }
    }
}
