//! A parser of a subset of hwloc's synthetic topology grammar, so that
//! [`Topology::synthetic`] works without the `hwloc` feature (and so tests
//! can check it against hwloc when the feature is on).
//!
//! Grammar: whitespace-separated levels, outermost first, each `type:count`
//! with `count >= 1`. Types (case-insensitive): `pack|package|socket`,
//! `die` (once), `group` (any number of times), `numa|node|numanode` (once),
//! `l1`..`l5` (also `l3cache`, `l2dcache` ...), `core`, `pu`. Packages, dies,
//! caches (outer level first), core and pu must nest in that order; `pu`, if
//! given, comes last (else `pu:1` is implied). PUs are numbered 0.. in order,
//! as hwloc numbers a synthetic topology's PUs.

use super::{CpuInfo, DEFAULT_CACHE_SHARD_SIZE, Topology, TopologyError, TopologyErrorKind};

/// A valid description, shown in error messages.
const EXAMPLE: &str = "pack:2 numa:2 l3:2 core:4 pu:2";

/// The most PUs a synthetic description may produce.
const MAX_PUS: usize = super::MAX_CPUS;

/// The PUs a synthetic description asks for, read by hwloc's grammar:
/// levels `[type:]count` (a bare count is a level whose type hwloc picks),
/// each count read as `strtoul(count, 0)` reads it (`0x` hex, a leading 0
/// octal), attribute lists in parentheses (the root's first, a level's
/// after its count; they may hold spaces) and memory children in brackets
/// skipped, `pu:1` implied. `None` if a level's count does not read so
/// (a word is one level: hwloc also reads levels glued together,
/// "pack:1000core:1000", whose count this would misread), the brackets do
/// not balance, or the product overflows: the caller
/// refuses a description it cannot size, since hwloc checks each count and
/// not their product, and would try to build every object of
/// "100000 100000" (10^10 PUs).
pub(super) fn pus_named(desc: &str) -> Option<usize> {
    plain_levels(desc)?
        .split_whitespace()
        .try_fold(1usize, |acc, level| {
            // After the first colon, all of the rest: "1000core:1000" is
            // no count (its last part read alone undercounted 1000-fold).
            let count = level.split_once(':').map_or(level, |(_, count)| count);
            acc.checked_mul(strtoul(count)?)
        })
}

/// What `chars` holds up to the `close` that matches an `open` just read
/// (nested pairs included), that `close` consumed.
#[cfg(feature = "hwloc")]
fn group(chars: &mut std::str::Chars<'_>, open: char, close: char) -> String {
    let mut inside = String::new();
    let mut depth = 1;
    for c in chars.by_ref() {
        if c == open {
            depth += 1;
        } else if c == close {
            depth -= 1;
            if depth == 0 {
                break;
            }
        }
        inside.push(c);
    }
    inside
}

/// `desc` with its attribute lists and memory children blanked out (as
/// spaces): its levels only. `None` if the brackets do not balance.
pub(super) fn plain_levels(desc: &str) -> Option<String> {
    let mut plain = String::with_capacity(desc.len());
    let (mut parens, mut brackets) = (0usize, 0usize);
    for c in desc.chars() {
        match c {
            '(' => parens += 1,
            ')' => parens = parens.checked_sub(1)?,
            '[' if parens == 0 => brackets += 1,
            ']' if parens == 0 => brackets = brackets.checked_sub(1)?,
            // Attributes and memory children separate levels as a space.
            _ if parens > 0 || brackets > 0 => {}
            c => plain.push(c),
        }
        if parens > 0 || brackets > 0 {
            plain.push(' ');
        }
    }
    if parens != 0 || brackets != 0 {
        return None;
    }
    Some(plain)
}

/// [`check_for_hwloc`]'s `indexes=` lists: the numbered form, which hwloc
/// tells by its characters (digits and commas only) and reads in base 10,
/// and its interleaving forms (`indexes=Pack:Core`, `indexes=2*4`:
/// [`check_interleaving`]). A level's list numbers each of its objects once; a memory
/// child's (`pack:2[numa(indexes=0,1)]`) has its numbers checked, not
/// their count.
#[cfg(feature = "hwloc")]
fn check_indexes(desc: &str) -> Result<(), TopologyError> {
    // The objects of the level being read: the product of the counts so
    // far (each level's attribute list follows its count).
    let mut objects = 1usize;
    // The levels read so far (the one being read included): those an
    // interleaving by level type may name.
    let mut seen: Vec<Level> = Vec::new();
    let level_of = |token: &str| {
        let token = token.trim();
        token
            .split_once(':')
            .and_then(|(name, _)| Level::parse(name))
    };
    let mut token = String::new();
    let level_objects = |token: &str, objects: usize| {
        let token = token.trim();
        if token.is_empty() {
            return None; // the root's attributes
        }
        let count = token.split_once(':').map_or(token, |(_, n)| n);
        strtoul(count).and_then(|n| objects.checked_mul(n))
    };
    let mut chars = desc.chars();
    while let Some(c) = chars.next() {
        match c {
            '[' => {
                // A memory child after the count ("pack:2[numa]"): the
                // count before it is the level's. Its own indexes are
                // read unchecked by hwloc too: a huge one grew every node
                // set to it (gigabytes), a repeated one made two nodes of
                // one number (and wq's `numa` scope one pod of both).
                let inside = group(&mut chars, '[', ']');
                let mut rest = inside.as_str();
                while let Some(at) = rest.find("indexes=") {
                    rest = &rest[at + "indexes=".len()..];
                    let end = rest
                        .find(|c: char| c.is_whitespace() || c == ')' || c == '(')
                        .unwrap_or(rest.len());
                    let what = format!(
                        "memory child [{}] of {:?}",
                        super::Shown(inside.trim()).cut(),
                        super::Shown(token.trim())
                    );
                    check_index_list(desc, &what, &rest[..end], None, None)?;
                }
            }
            '(' => {
                let attrs = group(&mut chars, '(', ')');
                let here = level_objects(&token, objects);
                seen.extend(level_of(&token));
                // Every one: hwloc takes the last of several.
                for list in attrs
                    .split_whitespace()
                    .filter_map(|a| a.strip_prefix("indexes="))
                {
                    check_index_list(
                        desc,
                        &format!("{:?}", super::Shown(token.trim())),
                        list,
                        here,
                        Some(&seen),
                    )?;
                }
                if let Some(n) = here {
                    objects = n;
                }
                token.clear();
            }
            c if c.is_whitespace() => {
                if let Some(n) = level_objects(&token, objects) {
                    objects = n;
                }
                seen.extend(level_of(&token));
                token.clear();
            }
            c => token.push(c),
        }
    }
    Ok(())
}

/// One numbered `indexes=` list (of `what`, in `desc`): each a number
/// below the CPU limit (the OS index every reader takes:
/// `Topology::build`), none repeated, and, given `objects`, one per
/// object. Lists of hwloc's interleaving forms are checked by
/// [`check_interleaving`] (`seen`: the levels down to the one indexed;
/// `None` for a memory child).
#[cfg(feature = "hwloc")]
fn check_index_list(
    desc: &str,
    what: &str,
    list: &str,
    objects: Option<usize>,
    seen: Option<&[Level]>,
) -> Result<(), TopologyError> {
    if !list.chars().all(|c| c.is_ascii_digit() || c == ',') {
        return check_interleaving(desc, what, list, seen);
    }
    let bad = |why: String| {
        invalid(
            desc,
            &format!("the indexes of {what} ({:?}) {why}", super::Shown(list)),
        )
    };
    let limit = super::MAX_CPUS * 8;
    let mut indexes = Vec::new();
    // Base 10, as hwloc reads them; a trailing comma is hwloc's to
    // tolerate.
    for i in list.split(',').filter(|i| !i.is_empty()) {
        match i.parse::<usize>() {
            Ok(i) if i < limit => indexes.push(i),
            Ok(i) => {
                return Err(TopologyError::new(
                    TopologyErrorKind::TooManyCpus,
                    format!(
                        "synthetic topology {:?}: the indexes of {what} hold {i}, beyond the \
                         indexes wq supports (below {limit}): number CPUs and nodes from 0, as \
                         the OS does",
                        super::Shown(desc)
                    ),
                ));
            }
            Err(_) => return Err(bad(format!("must be numbers below {limit}"))),
        }
    }
    if let Some(n) = objects
        && n != indexes.len()
    {
        return Err(bad(format!("must number each of its {n} objects once")));
    }
    indexes.sort_unstable();
    if indexes.windows(2).any(|w| w[0] == w[1]) {
        return Err(bad("repeat an index: each must be distinct".into()));
    }
    Ok(())
}

/// An `indexes=` list in one of hwloc's interleaving forms, which its
/// reader computes with asserts for checks (hwloc 2.9 aborts the process,
/// or divides by zero where asserts are compiled out): loops `step*count`
/// separated by colons (numbers as C's `strtoul` reads them), each at
/// least 1 and at most the CPU limit, the counts' product too (one that
/// wrapped to zero aborted); or level types (`Pack:Core`), each one of the
/// levels read down to the one indexed (one below it aborted), not a group
/// (hwloc tells groups by a depth wq does not follow), not the PUs (hwloc
/// looks among the levels with children: the list was dropped), and not
/// in a memory child's list. Every `indexes=` of a list is checked (hwloc
/// takes the last).
#[cfg(feature = "hwloc")]
fn check_interleaving(
    desc: &str,
    what: &str,
    list: &str,
    seen: Option<&[Level]>,
) -> Result<(), TopologyError> {
    let bad = |why: String| {
        invalid(
            desc,
            &format!("the indexes of {what} ({:?}) {why}", super::Shown(list)),
        )
    };
    let limit = super::MAX_CPUS * 8;
    if list.starts_with(|c: char| c.is_ascii_digit()) {
        let mut product = 1usize;
        for step_count in list.split(':') {
            let numbers = step_count
                .split_once('*')
                .and_then(|(step, count)| Some((strtoul(step)?, strtoul(count)?)));
            let Some((step, count)) = numbers else {
                return Err(bad(format!(
                    "hold {:?}, not an interleaving loop step*count (e.g. 2*4:1*2); or list \
                         the indexes, comma-separated",
                    super::Shown(step_count)
                )));
            };
            product = product.saturating_mul(count);
            if !(1..=limit).contains(&step) || !(1..=limit).contains(&count) || product > limit {
                return Err(bad(format!(
                    "interleave with steps and counts from 1 to {limit}, and counts whose \
                         product is at most that"
                )));
            }
        }
        return Ok(());
    }
    let Some(seen) = seen else {
        return Err(bad(
            "interleave by level type in a memory child, which wq does not read: list the \
                 indexes, or give them as step*count loops"
                .into(),
        ));
    };
    for name in list.split(':') {
        match Level::parse(name) {
            // Not the PU level: hwloc looks for the type among the levels
            // with children, and drops a list naming one it does not find.
            Some(level) if level != Level::Group && level != Level::Pu && seen.contains(&level) => {
            }
            _ => {
                return Err(bad(format!(
                    "name {:?}, not a level above the PUs and at or above the one indexed \
                         (hwloc aborts on a level below it, and drops a list naming the PUs; \
                         groups are not taken): name those levels, list the indexes, or give them \
                         as step*count loops",
                    super::Shown(name)
                )));
            }
        }
    }
    Ok(())
}

/// The most levels a description may have: hwloc 2.9 keeps 128, and
/// overflows its level array at 126 when it adds a NUMA level itself.
const MAX_LEVELS: usize = 64;

/// `levels` levels (of `desc`) are no more than [`MAX_LEVELS`].
fn check_depth(desc: &str, levels: usize) -> Result<(), TopologyError> {
    if levels > MAX_LEVELS {
        return Err(invalid(
            desc,
            &format!("it has {levels} levels, more than the {MAX_LEVELS} wq reads"),
        ));
    }
    Ok(())
}

/// The checks hwloc does not make, for its reader (on a description whose
/// size was checked): the levels this module knows nest outermost first
/// (hwloc 2.9 builds "core:2 pack:2" as packages inside cores, and takes
/// "l3:2 l3:2" or "l2:2 l3:2" as given), and a level's explicit OS
/// indexes (`indexes=a,b,...`) are one per object of the level, distinct,
/// each below the CPU limit: hwloc reads them unchecked (a repeated index
/// merges CPUs silently; a huge one grows every CPU set to it,
/// gigabytes; a short list is ignored).
#[cfg(feature = "hwloc")]
pub(super) fn check_for_hwloc(desc: &str) -> Result<(), TopologyError> {
    let Some(plain) = plain_levels(desc) else {
        return Ok(()); // hwloc and the caller report it
    };
    check_depth(desc, plain.split_whitespace().count())?;
    check_indexes(desc)?;
    let mut last_rank: Option<u8> = None;
    for token in plain.split_whitespace() {
        let Some((name, _)) = token.split_once(':') else {
            continue;
        };
        let Some(level) = Level::parse(name) else {
            continue; // a type only hwloc names
        };
        let Some(rank) = level.rank() else {
            // Unranked (a NUMA node, group or die) may sit anywhere but
            // inside a core: hwloc builds that (CPUs of one core on
            // different nodes), as the reader without it refuses.
            if last_rank.is_some_and(|last| last >= 8) {
                return Err(invalid(
                    desc,
                    &format!("{:?} cannot sit inside a core", super::Shown(name)),
                ));
            }
            continue;
        };
        if last_rank.is_some_and(|last| rank <= last) {
            return Err(invalid(
                desc,
                &format!("{name:?} cannot sit inside the level before it"),
            ));
        }
        last_rank = Some(rank);
    }
    Ok(())
}

/// A word's digits and their radix as C's `strtoul(s, NULL, 0)` reads
/// them: an optional `+`, then `0x` hex, octal after a leading 0, or
/// decimal; `None` unless every digit is one of the radix (the macro's
/// check reads counts the same way).
fn digits_of(s: &str) -> Option<(&str, u32)> {
    let s = s.strip_prefix('+').unwrap_or(s);
    let (digits, radix) = if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (hex, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    (!digits.is_empty() && digits.chars().all(|c| c.is_digit(radix))).then_some((digits, radix))
}

/// For a count that C's `strtoul` reads as octal and refuses ("08", "09"):
/// what hwloc's reading is, and the count meant.
fn octal_hint(count: &str) -> String {
    let digits =
        count.len() > 1 && count.starts_with('0') && count.bytes().all(|b| b.is_ascii_digit());
    match count.trim_start_matches('0').parse::<u64>() {
        Ok(n) if digits => {
            format!(" as hwloc reads it (C's strtoul: a leading 0 means octal, 0x hex); write {n}")
        }
        _ => String::new(),
    }
}
/// A count as C's `strtoul(s, NULL, 0)` reads a whole word.
fn strtoul(s: &str) -> Option<usize> {
    let (digits, radix) = digits_of(s)?;
    usize::from_str_radix(digits, radix).ok()
}

/// Whether `s` is a number as [`strtoul`] reads one, too big for it.
fn overflows(s: &str) -> bool {
    digits_of(s).is_some() && strtoul(s).is_none()
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
    /// A level's type as hwloc reads it (`hwloc_type_sscanf`): its name
    /// or any start of it of two letters or more, in any case ("pa",
    /// "co", "nu"), so a description means the same machine with or
    /// without the feature, and is checked the same.
    fn parse(name: &str) -> Option<Level> {
        let name = name.to_ascii_lowercase();
        let names = |full: &str| name.len() >= 2 && full.starts_with(name.as_str());
        Some(match name.as_str() {
            _ if names("package") || names("socket") => Level::Package,
            _ if names("die") => Level::Die,
            _ if names("group") => Level::Group,
            _ if names("numanode") || names("node") => Level::Numa,
            _ if names("core") => Level::Core,
            _ if names("pu") => Level::Pu,
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

    /// Nesting rank: a level's rank must exceed the ranks before it.
    /// Groups, NUMA nodes and dies may sit anywhere above the core (a
    /// package-wide L3 may span dies: "pack:1 l3:1 die:2").
    fn rank(self) -> Option<u8> {
        match self {
            Level::Package => Some(0),
            Level::Cache(level) => Some(2 + (5 - level)),
            Level::Core => Some(8),
            Level::Pu => Some(9),
            Level::Group | Level::Numa | Level::Die => None,
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
    let shown = super::Shown(desc);
    TopologyError::new(
        TopologyErrorKind::InvalidSynthetic,
        format!(
            "invalid synthetic topology {shown:?}: {what}; give levels outermost first as \
             type:count, e.g. {EXAMPLE:?}"
        ),
    )
}

/// The plain description of a synthetic machine (ids are group indices).
pub(super) fn describe(desc: &str) -> Result<Vec<CpuInfo>, TopologyError> {
    let mut levels: Vec<(Level, usize)> = Vec::new();
    let mut last_rank: Option<u8> = None;
    let tokens: Vec<&str> = desc.split_whitespace().collect();
    check_depth(desc, tokens.len())?;
    for (i, &token) in tokens.iter().enumerate() {
        // A last level with no type is the PU level, as hwloc reads it
        // ("core:4 2" is "core:4 pu:2"; only a count that starts with a
        // digit: hwloc takes "+2" for a type).
        let (name, count) = match token.split_once(':') {
            Some(split) => split,
            None if i + 1 == tokens.len()
                && i > 0
                && token.starts_with(|c: char| c.is_ascii_digit())
                && strtoul(token).is_some() =>
            {
                ("pu", token)
            }
            None => {
                return Err(invalid(
                    desc,
                    &format!("level {:?} lacks a :count", super::Shown(token)),
                ));
            }
        };
        let level = Level::parse(name).ok_or_else(|| {
            invalid(
                desc,
                &format!("unknown level type {:?}", super::Shown(name)),
            )
        })?;
        // As hwloc reads it (C's strtoul: "010" is 8, "0x10" 16), so a
        // description means the same machine with or without the feature.
        let count: usize = strtoul(count).filter(|&n| n >= 1).ok_or_else(|| {
            if count.contains('(') || desc.contains('[') {
                // hwloc's attributes and memory children: its grammar.
                invalid(
                    desc,
                    &format!(
                        "level {:?} has attributes in parentheses or memory children in brackets, which only hwloc reads (build wq with its `hwloc` feature, on by default)",
                        super::Shown(token)
                    ),
                )
            } else if overflows(count) {
                super::too_many_cpus(&format!("synthetic topology {:?}", super::Shown(desc)), None)
            } else {
                invalid(
                    desc,
                    &format!(
                        "count {:?} is not a positive number{}",
                        super::Shown(count),
                        octal_hint(count)
                    ),
                )
            }
        })?;
        if levels.last().is_some_and(|(l, _)| *l == Level::Pu) {
            return Err(invalid(desc, "pu must be the last level"));
        }
        if level == Level::Numa && levels.iter().any(|(l, _)| *l == Level::Numa) {
            return Err(invalid(desc, "numa appears twice"));
        }
        // hwloc refuses a second die level too.
        if level == Level::Die && levels.iter().any(|(l, _)| *l == Level::Die) {
            return Err(invalid(desc, "die appears twice"));
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
                return Err(invalid(
                    desc,
                    &format!("{:?} cannot sit inside a core", super::Shown(name)),
                ));
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
                &format!("synthetic topology {:?}", super::Shown(desc)),
                pus_named(desc),
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
