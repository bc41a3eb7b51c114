//! Affinity scopes: how wide a pod is.
//!
//! A [`Scope`] partitions the CPUs of a [`Topology`](crate::Topology) into
//! pods; every pod gets one worker pool. The names and their order follow the
//! kernel's unbound workqueue `affinity_scope` (narrowest first).

use std::fmt;
use std::str::FromStr;

/// An affinity scope: the width of the pods a topology is split into.
///
/// ```
/// use wq::Scope;
/// let s: Scope = "cache_shard".parse().unwrap();
/// assert_eq!(s, Scope::CacheShard);
/// assert_eq!(s.to_string(), "cache_shard");
/// assert!("l3".parse::<Scope>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// One pod per logical CPU.
    Cpu,
    /// One pod per physical core (its SMT siblings).
    Smt,
    /// One pod per slice of a last-level cache of about
    /// [`Topology::cache_shard_size`](crate::Topology::cache_shard_size) cores
    /// (8 by default), never splitting SMT siblings. The default scope.
    CacheShard,
    /// One pod per last-level cache (split where one cache spans several
    /// NUMA nodes or packages: a pod never crosses them).
    Cache,
    /// One pod per NUMA node.
    Numa,
    /// One pod holding every CPU.
    System,
}

impl Scope {
    /// Every scope, narrowest to widest.
    pub const ALL: [Scope; 6] = [
        Scope::Cpu,
        Scope::Smt,
        Scope::CacheShard,
        Scope::Cache,
        Scope::Numa,
        Scope::System,
    ];

    /// The scope's name as accepted by [`FromStr`] and printed by `Display`.
    pub const fn name(self) -> &'static str {
        match self {
            Scope::Cpu => "cpu",
            Scope::Smt => "smt",
            Scope::CacheShard => "cache_shard",
            Scope::Cache => "cache",
            Scope::Numa => "numa",
            Scope::System => "system",
        }
    }

    /// Position in [`Scope::ALL`] (0 for `cpu`, 5 for `system`).
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing a [`Scope`] from a string that names none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseScopeError {
    input: String,
}

impl fmt::Display for ParseScopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown affinity scope {:?}: expected one of cpu, smt, cache_shard, cache, numa, system",
            self.input
        )
    }
}

impl std::error::Error for ParseScopeError {}

impl FromStr for Scope {
    type Err = ParseScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.name() == s)
            .ok_or_else(|| ParseScopeError {
                input: s.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_in_order() {
        let names: Vec<String> = Scope::ALL.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            names,
            ["cpu", "smt", "cache_shard", "cache", "numa", "system"]
        );
        for scope in Scope::ALL {
            assert_eq!(scope.name().parse::<Scope>().unwrap(), scope);
            assert_eq!(Scope::ALL[scope.index()], scope);
        }
    }

    #[test]
    fn unknown_name_lists_the_valid_ones() {
        let err = "Cache".parse::<Scope>().unwrap_err().to_string();
        assert!(err.contains("\"Cache\""), "{err}");
        assert!(
            err.contains("cpu, smt, cache_shard, cache, numa, system"),
            "{err}"
        );
        assert!("".parse::<Scope>().is_err());
        assert!("cache-shard".parse::<Scope>().is_err());
    }
}
