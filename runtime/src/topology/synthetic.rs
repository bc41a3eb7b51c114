//! A parser of a subset of hwloc's synthetic topology grammar, so that
//! [`Topology::synthetic`] works without the `hwloc` feature (and so tests
//! can check it against hwloc when the feature is on).
//!
//! Grammar: whitespace-separated levels, outermost first, each `type:count`
//! with `count >= 1`. Types (case-insensitive): `pack|package|socket`,
//! `die`, `group` (any number of times), `numa|node|numanode` (once),
//! `l1`..`l5` (also `l3cache`, `l2dcache` ...), `core`, `pu`. Packages, dies,
//! caches (outer level first), core and pu must nest in that order; `pu`, if
//! given, comes last (else `pu:1` is implied). PUs are numbered 0.. in order,
//! as hwloc numbers a synthetic topology's PUs.

use super::{CpuInfo, DEFAULT_CACHE_SHARD_SIZE, Topology, TopologyError, TopologyErrorKind};

/// A valid description, shown in error messages.
const EXAMPLE: &str = "pack:2 numa:2 l3:2 core:4 pu:2";

/// The most PUs a synthetic description may produce.
const MAX_PUS: usize = super::MAX_CPUS;

/// The product of the counts of a synthetic description's `type:count`
/// levels (an hwloc attribute list, `pu:2(indexes=...)`, is skipped), with
/// `pu:1` implied; `None` if a level does not read so, or the product
/// overflows. A size check made before hwloc builds the objects.
pub(super) fn pus_named(desc: &str) -> Option<usize> {
    desc.split_whitespace().try_fold(1usize, |acc, level| {
        let (_, count) = level.split_once(':')?;
        let digits = count.split('(').next()?;
        acc.checked_mul(digits.parse().ok()?)
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Package,
    Die,
    Group,
    Numa,
    /// A CPU cache of this level (1..=5).
    Cache(u8),
    Core,
    Pu,
}

impl Level {
    fn parse(name: &str) -> Option<Level> {
        let name = name.to_ascii_lowercase();
        Some(match name.as_str() {
            "pack" | "package" | "socket" => Level::Package,
            "die" => Level::Die,
            "group" => Level::Group,
            "numa" | "node" | "numanode" => Level::Numa,
            "core" => Level::Core,
            "pu" => Level::Pu,
            _ => {
                let rest = name.strip_prefix('l')?;
                let level = rest.chars().next()?.to_digit(10)?;
                let suffix = &rest[1..];
                if !(1..=5).contains(&level)
                    || !["", "d", "u", "cache", "dcache", "ucache"].contains(&suffix)
                {
                    return None;
                }
                Level::Cache(level as u8)
            }
        })
    }

    /// Nesting rank: a level's rank must exceed the ranks before it. Groups
    /// and NUMA nodes may sit anywhere above the core.
    fn rank(self) -> Option<u8> {
        match self {
            Level::Package => Some(0),
            Level::Die => Some(1),
            Level::Cache(level) => Some(2 + (5 - level)),
            Level::Core => Some(8),
            Level::Pu => Some(9),
            Level::Group | Level::Numa => None,
        }
    }
}

/// Parses `desc` into the plain description and builds the topology.
#[cfg_attr(feature = "hwloc", allow(dead_code))]
pub(super) fn parse(desc: &str) -> Result<Topology, TopologyError> {
    Topology::build(
        describe(desc)?,
        DEFAULT_CACHE_SHARD_SIZE,
        format!("synthetic {desc:?}"),
        false,
    )
}

fn invalid(desc: &str, what: &str) -> TopologyError {
    TopologyError::new(
        TopologyErrorKind::InvalidSynthetic,
        format!(
            "invalid synthetic topology {desc:?}: {what}; give levels outermost first as \
             type:count, e.g. {EXAMPLE:?}"
        ),
    )
}

/// The plain description of a synthetic machine (ids are group indices).
pub(super) fn describe(desc: &str) -> Result<Vec<CpuInfo>, TopologyError> {
    let mut levels: Vec<(Level, usize)> = Vec::new();
    let mut last_rank: Option<u8> = None;
    for token in desc.split_whitespace() {
        let Some((name, count)) = token.split_once(':') else {
            return Err(invalid(desc, &format!("level {token:?} lacks a :count")));
        };
        let level = Level::parse(name)
            .ok_or_else(|| invalid(desc, &format!("unknown level type {name:?}")))?;
        let count: usize =
            count.parse().ok().filter(|&n| n >= 1).ok_or_else(|| {
                invalid(desc, &format!("count {count:?} is not a positive number"))
            })?;
        if levels.last().is_some_and(|(l, _)| *l == Level::Pu) {
            return Err(invalid(desc, "pu must be the last level"));
        }
        if level == Level::Numa && levels.iter().any(|(l, _)| *l == Level::Numa) {
            return Err(invalid(desc, "numa appears twice"));
        }
        match level.rank() {
            Some(rank) if last_rank.is_some_and(|last| rank <= last) => {
                return Err(invalid(
                    desc,
                    &format!("{name:?} cannot sit inside the level before it"),
                ));
            }
            Some(rank) => last_rank = Some(rank),
            None if last_rank.is_some_and(|last| last >= 8) => {
                return Err(invalid(desc, &format!("{name:?} cannot sit inside a core")));
            }
            None => {}
        }
        levels.push((level, count));
    }
    if levels.is_empty() {
        return Err(invalid(desc, "it names no level"));
    }
    if levels.last().is_some_and(|(l, _)| *l != Level::Pu) {
        levels.push((Level::Pu, 1));
    }
    let total = levels
        .iter()
        .try_fold(1usize, |acc, (_, n)| {
            acc.checked_mul(*n).filter(|&t| t <= MAX_PUS)
        })
        .ok_or_else(|| {
            super::too_many_cpus(
                &format!("synthetic topology {desc:?}"),
                pus_named(desc).unwrap_or(usize::MAX),
            )
        })?;

    // PUs below each level: the object index of level i for PU p is
    // p / below[i].
    let mut below = vec![1usize; levels.len()];
    for i in (0..levels.len() - 1).rev() {
        below[i] = below[i + 1] * levels[i + 1].1;
    }
    let index_of = |pred: &dyn Fn(Level) -> bool, pu: usize| {
        levels
            .iter()
            .zip(&below)
            .filter(|((l, _), _)| pred(*l))
            .map(|(_, b)| pu / b)
            .next()
    };
    let llc_level = levels
        .iter()
        .filter_map(|(l, _)| match l {
            Level::Cache(n) => Some(*n),
            _ => None,
        })
        .max();
    Ok((0..total)
        .map(|pu| {
            let core = index_of(&|l| l == Level::Core, pu).unwrap_or(pu);
            let llc = llc_level
                .and_then(|n| index_of(&|l| l == Level::Cache(n), pu))
                .unwrap_or(core);
            CpuInfo {
                os_index: pu,
                core,
                llc,
                numa: index_of(&|l| l == Level::Numa, pu).unwrap_or(0),
                package: index_of(&|l| l == Level::Package, pu).unwrap_or(0),
            }
        })
        .collect())
}
