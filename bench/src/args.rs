//! A small `--name value` parser: the bench takes a handful of options and
//! needs no more than this.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::str::FromStr;

/// The most threads an option may ask for (producers, workers of either
/// runtime).
pub const MAX_THREADS: usize = 4096;

/// The largest value of the numeric options whose size the bench builds
/// things of (threads, processes, buffers), and why: beyond, the run
/// panicked ("capacity overflow"), aborted on a failed allocation, or forked
/// busy loops until the OS refused, after setting up what came before.
const LIMITS: &[(&str, u128, &str)] = &[
    ("producers", MAX_THREADS as u128, "a thread each"),
    ("tokio-workers", MAX_THREADS as u128, "a thread each"),
    // Given to tokio too (shapes, timers, http, echo, memory), which
    // panics when the OS refuses a thread.
    (
        "workers",
        MAX_THREADS as u128,
        "a thread each, on wq and on tokio",
    ),
    ("burst-workers", MAX_THREADS as u128, "a thread each"),
    ("busy-neighbours", 1024, "a process each"),
    ("layouts", 1000, "a process each"),
    ("pad", 1 << 20, "48 bytes each, allocated first"),
    ("tasks", 1 << 26, "one task each, alive at once"),
    ("concurrent", 1 << 22, "two tasks each, alive at once"),
    ("conns", 65_536, "a connection each"),
    ("threads", 1024, "a thread each"),
    // 2^28 needed 4 GiB for the handles alone.
    ("timers", 1 << 24, "a timer each, armed at once"),
    ("iters", 1 << 24, "a timing each, kept"),
    (
        "working-set-kib",
        1 << 24,
        "the buffer each task walks: 16 GiB",
    ),
];

/// Refuses `v` for `--name` beyond its [`LIMITS`] entry, if any.
fn within_limit(name: &str, v: &str) -> Result<(), String> {
    if let Some((_, max, why)) = LIMITS.iter().find(|(l, _, _)| *l == name)
        && v.parse::<u128>().is_ok_and(|v| v > *max)
    {
        return Err(format!("--{name} {v}: at most {max} ({why})"));
    }
    Ok(())
}

/// Parsed `--name value`, `--name=value` and bare `--flag` options.
#[derive(Debug, Default)]
pub struct Args {
    values: BTreeMap<String, String>,
    flags: Vec<String>,
}

impl Args {
    /// Parses `argv` (without the program and subcommand). `flags` are the
    /// options that take no value; every other option takes one.
    pub fn parse<I, S>(argv: I, flags: &[&str]) -> Result<Args, String>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut args = Args::default();
        let mut it = argv.into_iter().map(Into::into);
        while let Some(arg) = it.next() {
            let Some(name) = arg.strip_prefix("--") else {
                return Err(format!(
                    "unexpected argument {arg:?}: options look like --name value"
                ));
            };
            if let Some((name, value)) = name.split_once('=') {
                if flags.contains(&name) {
                    // Stored as a value, it was never read as the flag:
                    // the run went on without what was asked for.
                    return Err(format!("option --{name} takes no value (give --{name})"));
                }
                args.insert(name, value.to_owned())?;
            } else if flags.contains(&name) {
                if args.flag(name) {
                    return Err(format!("option --{name} is given twice"));
                }
                args.flags.push(name.to_owned());
            } else {
                // Not a flag here: a flag of another subcommand would
                // take the next option as its value.
                let value = it.next().filter(|v| !v.starts_with("--")).ok_or_else(|| {
                    format!(
                        "option --{name} needs a value, or is not a flag of this subcommand (`--help` lists its options)"
                    )
                })?;
                args.insert(name, value)?;
            }
        }
        Ok(args)
    }

    /// Keeps `--name value`, refusing a second `--name`: which of the two
    /// was meant is not for the bench to guess.
    fn insert(&mut self, name: &str, value: String) -> Result<(), String> {
        match self.values.entry(name.to_owned()) {
            std::collections::btree_map::Entry::Occupied(e) => Err(format!(
                "option --{name} is given twice ({:?} and {value:?}): give it once",
                e.get()
            )),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(value);
                Ok(())
            }
        }
    }

    /// Fails on an option not in `known` (flags and valued options).
    pub fn check_known(&self, known: &[&str]) -> Result<(), String> {
        for name in self.values.keys().chain(&self.flags) {
            if !known.contains(&name.as_str()) {
                return Err(format!(
                    "unknown option --{name}; known: {}",
                    known
                        .iter()
                        .map(|k| format!("--{k}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ));
            }
        }
        Ok(())
    }

    /// Whether bare `--name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }

    /// The raw value of `--name`, if given.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// `--name` as a count of interleaved rounds: at least 1, rounded up
    /// to a multiple of `runtimes`, so each runtime goes first equally
    /// often (an odd count gave one runtime's median from the first slot
    /// and the other's from the second, and the slot moves a run 5-25% on
    /// a shared VM).
    pub fn rounds(&self, name: &str, default: usize, runtimes: usize) -> Result<usize, String> {
        let n: usize = self.count(name, default)?;
        let runtimes = runtimes.max(1);
        n.div_ceil(runtimes)
            .checked_mul(runtimes)
            .ok_or_else(|| format!("--{name} {n} is too many rounds"))
    }

    /// `--name` as a count that must be at least 1 (items, workers,
    /// rounds, seconds...), or `default`: 0 would measure nothing, or
    /// fail later with a message that does not name the option.
    pub fn count<T>(&self, name: &str, default: T) -> Result<T, String>
    where
        T: FromStr + PartialOrd + From<u8> + Display,
        T::Err: Display,
    {
        let n = self.get(name, default)?;
        if n < T::from(1) {
            return Err(format!("--{name} {n}: must be at least 1"));
        }
        Ok(n)
    }

    /// `--name` parsed as `T`, or `default`.
    pub fn get<T>(&self, name: &str, default: T) -> Result<T, String>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.values.get(name) {
            None => Ok(default),
            Some(v) => {
                let n = v.parse().map_err(|e| format!("--{name} {v:?}: {e}"))?;
                within_limit(name, v)?;
                Ok(n)
            }
        }
    }

    /// `--name a,b,c` parsed element-wise, or `default`. An element given
    /// twice is refused, as an option given twice is: it measured its row
    /// twice, and a row compared with itself gave a noise floor of 0.
    pub fn list<T>(&self, name: &str, default: Vec<T>) -> Result<Vec<T>, String>
    where
        T: FromStr + PartialEq,
        T::Err: Display,
    {
        let Some(v) = self.values.get(name) else {
            return Ok(default);
        };
        let mut out: Vec<T> = Vec::new();
        for s in v.split(',') {
            let n = match s.trim() {
                "" => {
                    return Err(format!(
                        "--{name} {v:?}: an empty element; give a comma-separated list, like a,b"
                    ));
                }
                s => {
                    let n = s.parse().map_err(|e| format!("--{name} {s:?}: {e}"))?;
                    within_limit(name, s)?;
                    n
                }
            };
            if out.contains(&n) {
                return Err(format!(
                    "--{name} {v:?}: {:?} is given twice; give each once",
                    s.trim()
                ));
            }
            out.push(n);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values_flags_and_lists() {
        let a = Args::parse(
            [
                "--items",
                "100",
                "--json",
                "--scopes=cpu,system",
                "--topology",
                "pack:2 pu:2",
            ],
            &["json"],
        )
        .unwrap();
        assert_eq!(a.get("items", 5usize).unwrap(), 100);
        assert_eq!(a.get("repeat", 5usize).unwrap(), 5);
        assert!(a.flag("json"));
        assert!(!a.flag("plot"));
        assert_eq!(
            a.list("scopes", vec![wq::Scope::Cpu]).unwrap(),
            vec![wq::Scope::Cpu, wq::Scope::System]
        );
        assert_eq!(a.raw("topology"), Some("pack:2 pu:2"));
        a.check_known(&["items", "json", "scopes", "topology"])
            .unwrap();
        let err = a.check_known(&["items", "json", "topology"]).unwrap_err();
        assert!(err.starts_with("unknown option --scopes"), "{err}");
    }

    #[test]
    fn reports_bad_input() {
        assert!(
            Args::parse(["--items"], &[])
                .unwrap_err()
                .contains("needs a value")
        );
        assert!(Args::parse(["items"], &[]).is_err());
        // A flag this subcommand does not have does not swallow the next
        // option.
        let err = Args::parse(["--no-such-flag", "--timers", "10"], &[]).unwrap_err();
        assert!(
            err.contains("--no-such-flag needs a value, or is not a flag"),
            "{err}"
        );
        let a = Args::parse(["--items", "x"], &[]).unwrap();
        assert!(a.get("items", 1usize).unwrap_err().contains("--items"));
        let a = Args::parse(["--scopes", "cpu,l3"], &[]).unwrap();
        assert!(a.list::<wq::Scope>("scopes", vec![]).is_err());
        // A flag given a value was stored as a value and never read.
        let err = Args::parse(["--json=1"], &["json"]).unwrap_err();
        assert!(err.contains("--json takes no value"), "{err}");
    }

    #[test]
    fn rounds_give_each_runtime_the_first_slot_equally_often() {
        let rounds = |argv: &[&str], runtimes| {
            Args::parse(argv.iter().copied(), &[])
                .unwrap()
                .rounds("repeat", 5, runtimes)
                .unwrap()
        };
        assert_eq!(rounds(&[], 2), 6);
        assert_eq!(rounds(&["--repeat", "3"], 2), 4);
        assert_eq!(rounds(&["--repeat", "4"], 2), 4);
        assert_eq!(rounds(&["--repeat", "21"], 3), 21);
        assert_eq!(rounds(&["--repeat", "1"], 1), 1);
        let a = Args::parse(["--repeat", "0"], &[]).unwrap();
        let err = a.rounds("repeat", 5, 2).unwrap_err();
        assert!(err.contains("--repeat 0: must be at least 1"), "{err}");
        let a = Args::parse(["--repeat", &usize::MAX.to_string()], &[]).unwrap();
        let err = a.rounds("repeat", 5, 2).unwrap_err();
        assert!(err.contains("too many rounds"), "{err}");
    }

    #[test]
    fn refuses_what_it_would_otherwise_guess_or_drop() {
        // Given twice: neither is silently kept.
        let err = Args::parse(["--items", "10", "--items=20"], &[]).unwrap_err();
        assert!(err.contains("--items is given twice"), "{err}");
        let err = Args::parse(["--json", "--json"], &["json"]).unwrap_err();
        assert!(err.contains("--json is given twice"), "{err}");
        // An empty list, or an empty element, runs nothing.
        for v in ["", ",", "cpu,,system"] {
            let a = Args::parse(["--scopes", v], &[]).unwrap();
            let err = a.list::<wq::Scope>("scopes", vec![]).unwrap_err();
            assert!(err.contains("an empty element"), "{v:?}: {err}");
        }
        // Counts of 0 measure nothing.
        let a = Args::parse(["--workers", "0", "--secs", "0"], &[]).unwrap();
        let err = a.count("workers", 2usize).unwrap_err();
        assert_eq!(err, "--workers 0: must be at least 1");
        assert!(a.count("secs", 5u64).is_err());
        assert_eq!(a.count("conns", 8usize), Ok(8));
        // Sizes beyond what a run can build are refused, named (they
        // panicked on a capacity overflow, or aborted on an allocation).
        let a = Args::parse(
            [
                "--producers",
                "18446744073709551615",
                "--busy-neighbours",
                "50000",
                "--pad",
                "10",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            a.count("producers", 2usize).unwrap_err(),
            "--producers 18446744073709551615: at most 4096 (a thread each)"
        );
        assert!(
            a.get("busy-neighbours", 0usize)
                .unwrap_err()
                .contains("at most 1024")
        );
        assert_eq!(a.get("pad", 0usize), Ok(10));
        // In a list too (`sweep --producers 1,2,4`).
        let a = Args::parse(["--producers", "1,18446744073709551615"], &[]).unwrap();
        assert!(
            a.list::<usize>("producers", vec![])
                .unwrap_err()
                .contains("at most 4096")
        );
        // tokio's workers are threads too: a million was measured for
        // minutes, then tokio's start panicked.
        let a = Args::parse(["--tokio-workers", "100000000"], &[]).unwrap();
        assert!(
            a.count("tokio-workers", 2usize)
                .unwrap_err()
                .contains("at most 4096 (a thread each)")
        );
        // So are `--workers` (tokio gets as many in most subcommands) and
        // the memory probe's burst.
        for name in ["workers", "burst-workers"] {
            let a = Args::parse([format!("--{name}"), "5000".to_owned()], &[]).unwrap();
            let err = a.count(name, 2usize).unwrap_err();
            assert!(err.contains("at most 4096 (a thread each"), "{err}");
        }
    }

    #[test]
    fn a_list_element_given_twice_is_refused() {
        let a = Args::parse(["--scopes", "cache,numa, numa"], &[]).unwrap();
        assert_eq!(
            a.list::<String>("scopes", vec![]).unwrap_err(),
            "--scopes \"cache,numa, numa\": \"numa\" is given twice; give each once"
        );
        // The same value spelled twice (`8,08`) is the same element.
        let a = Args::parse(["--producers", "8,08"], &[]).unwrap();
        assert!(a.list::<usize>("producers", vec![]).is_err());
        let a = Args::parse(["--producers", "8,1,2"], &[]).unwrap();
        assert_eq!(a.list::<usize>("producers", vec![]), Ok(vec![8, 1, 2]));
    }
}
