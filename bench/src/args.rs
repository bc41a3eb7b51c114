//! A small `--name value` parser: the bench takes a handful of options and
//! needs no more than this.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::str::FromStr;

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
                args.values.insert(name.to_owned(), value.to_owned());
            } else if flags.contains(&name) {
                args.flags.push(name.to_owned());
            } else {
                // Not a flag here: a flag of another subcommand would
                // take the next option as its value.
                let value = it.next().filter(|v| !v.starts_with("--")).ok_or_else(|| {
                    format!(
                        "option --{name} needs a value, or is not a flag of this subcommand (`--help` lists its options)"
                    )
                })?;
                args.values.insert(name.to_owned(), value);
            }
        }
        Ok(args)
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
        let n: usize = self.get(name, default)?;
        Ok(n.max(1).div_ceil(runtimes.max(1)) * runtimes.max(1))
    }

    /// `--name` parsed as `T`, or `default`.
    pub fn get<T>(&self, name: &str, default: T) -> Result<T, String>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.values.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| format!("--{name} {v:?}: {e}")),
        }
    }

    /// `--name a,b,c` parsed element-wise, or `default`.
    pub fn list<T>(&self, name: &str, default: Vec<T>) -> Result<Vec<T>, String>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.values.get(name) {
            None => Ok(default),
            Some(v) => v
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.trim().parse().map_err(|e| format!("--{name} {s:?}: {e}")))
                .collect(),
        }
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
        assert_eq!(rounds(&["--repeat", "0"], 2), 2);
        assert_eq!(rounds(&["--repeat", "21"], 3), 21);
        assert_eq!(rounds(&["--repeat", "1"], 1), 1);
    }
}
