//! `wq-dump`: print a topology's CPUs and the pods of every affinity scope,
//! like the kernel's `tools/workqueue/wq_dump.py` (`pod_cpus`, `cpu_pod`).
//!
//! ```text
//! cargo run -p wq-examples --bin wq-dump                      # this machine
//! cargo run -p wq-examples --bin wq-dump -- --topology "pack:2 numa:2 l3:2 core:4 pu:2"
//! cargo run -p wq-examples --bin wq-dump -- --xml box.xml     # hwloc-ls --of xml > box.xml
//! cargo run -p wq-examples --bin wq-dump -- --sysfs --shard-size 4
//! ```
//!
//! Exit status: 0 on success, 1 if the topology cannot be built or read,
//! 2 on bad arguments (with the usage on stderr).

use std::fmt::Write as _;
use std::process::ExitCode;

use wq::{Scope, Topology};

const USAGE: &str = "\
usage: wq-dump [--topology \"<hwloc synthetic>\" | --xml FILE | --sysfs] [--shard-size N]

  (no source)          read this machine (hwloc, or sysfs without the hwloc feature)
  --topology DESC      a made-up machine, e.g. \"pack:2 numa:2 l3:2 core:4 pu:2\"
  --xml FILE           an hwloc XML export, e.g. from `hwloc-ls --of xml > box.xml`
  --sysfs              read this machine from Linux sysfs
  --shard-size N       cores per cache_shard pod (default 8; 1 to 8192)
  -h, --help           print this help";

/// Where the topology comes from.
#[derive(Debug, PartialEq, Eq)]
enum Source {
    Detect,
    Sysfs,
    Synthetic(String),
    Xml(String),
}

/// The parsed command line.
#[derive(Debug, PartialEq, Eq)]
struct Args {
    source: Source,
    shard_size: Option<usize>,
}

/// What the command line asks for: a dump, or the help text.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Dump(Args),
    Help,
}

/// Parses the arguments (without the program name); `Err` says what is wrong.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut source = None;
    let mut shard_size = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        // A value, not the next option (`--xml --sysfs` read a file
        // named "--sysfs"); "-1" is a value, and said wrong as one.
        let mut value = |name: &str| {
            args.next()
                .filter(|v| !v.starts_with("--") && v != "-h")
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let new_source = match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--topology" => Source::Synthetic(value("--topology")?),
            "--xml" => Source::Xml(value("--xml")?),
            "--sysfs" => Source::Sysfs,
            "--shard-size" => {
                let n = value("--shard-size")?;
                // Its bound here, not at the build: a bad argument exits
                // with the usage (status 2), as the others do.
                let n = n
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=wq::MAX_CPUS).contains(n))
                    .ok_or_else(|| {
                        format!(
                            "--shard-size wants a number of cores from 1 to {}, not {n:?}",
                            wq::MAX_CPUS
                        )
                    })?;
                shard_size = Some(n);
                continue;
            }
            other => return Err(format!("unknown argument {other:?}")),
        };
        if source.is_some() {
            return Err("give at most one of --topology, --xml, --sysfs".to_owned());
        }
        source = Some(new_source);
    }
    Ok(Command::Dump(Args {
        source: source.unwrap_or(Source::Detect),
        shard_size,
    }))
}

/// Builds the topology the arguments name.
fn load(args: &Args) -> Result<Topology, String> {
    let topo = match &args.source {
        Source::Detect => Topology::detect(),
        Source::Sysfs => Topology::detect_sysfs(),
        Source::Synthetic(desc) => Topology::synthetic(desc),
        Source::Xml(path) => {
            // Read to a limit: `--xml /dev/zero` grew until the OS killed
            // the process. An export of 8,192 CPUs is a few MiB.
            use std::io::Read as _;
            const MAX_XML: u64 = 64 << 20;
            let mut xml = String::new();
            std::fs::File::open(path)
                .and_then(|f| f.take(MAX_XML + 1).read_to_string(&mut xml))
                .map_err(|e| format!("cannot read {path:?}: {e}"))?;
            if xml.len() as u64 > MAX_XML {
                return Err(format!(
                    "{path:?} is over {} MiB, more than any hwloc export of the machines wq \
                     supports: pass the file `hwloc-ls --of xml` wrote",
                    MAX_XML >> 20
                ));
            }
            Topology::from_xml(&xml)
        }
    }
    .map_err(|e| e.to_string())?;
    match args.shard_size {
        Some(n) => topo.with_cache_shard_size(n).map_err(|e| e.to_string()),
        None => Ok(topo),
    }
}

/// The whole report: source, CPU table, every scope's pods (`pod_cpus`) and
/// every CPU's pod per scope (`cpu_pod`).
fn render(topo: &Topology) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_report(&mut out, topo);
    out
}

fn write_report(out: &mut String, topo: &Topology) -> std::fmt::Result {
    let all = &topo.pods(Scope::System)[0];
    writeln!(out, "source            {}", topo.source())?;
    writeln!(
        out,
        "live              {}",
        if topo.is_live() {
            "yes (workers may be bound)"
        } else {
            "no"
        }
    )?;
    writeln!(
        out,
        "cpus              {} ({})",
        topo.num_cpus(),
        all.cpu_list()
    )?;
    // What a runtime built here would size its pools by (a quota is not
    // a cpuset: the topology still shows every CPU).
    let usable = std::thread::available_parallelism().map_or("unknown".into(), |n| n.to_string());
    writeln!(
        out,
        "usable at once    {usable} (this process: affinity and cgroup CPU quota; no pool has more workers by default)"
    )?;
    writeln!(out, "cache_shard size  {} cores", topo.cache_shard_size())?;

    writeln!(
        out,
        "\nCPUs\n  {:>5} {:>5} {:>5} {:>5} {:>7}",
        "cpu", "core", "llc", "numa", "package"
    )?;
    for cpu in topo.cpus() {
        writeln!(
            out,
            "  {:>5} {:>5} {:>5} {:>5} {:>7}",
            cpu.os_index, cpu.core, cpu.llc, cpu.numa, cpu.package
        )?;
    }

    writeln!(out, "\nAffinity scopes (pod_cpus)")?;
    for scope in Scope::ALL {
        let pods = topo.pods(scope);
        writeln!(out, "  {scope}: {} pods", pods.len())?;
        for pod in pods {
            writeln!(out, "    [{}] {}", pod.index(), pod.cpu_list())?;
        }
    }

    write!(out, "\nPod of each CPU (cpu_pod)\n  {:>5}", "CPU")?;
    for scope in Scope::ALL {
        write!(out, " {:>11}", scope.name())?;
    }
    writeln!(out)?;
    for cpu in topo.cpus() {
        write!(out, "  {:>5}", cpu.os_index)?;
        for scope in Scope::ALL {
            match topo.pod_of(scope, cpu.os_index) {
                Some(pod) => write!(out, " {:>11}", pod.index())?,
                None => write!(out, " {:>11}", "-")?,
            }
        }
        writeln!(out)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args(wq_examples::args()) {
        Ok(Command::Dump(args)) => args,
        Ok(Command::Help) => {
            wq_examples::say!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(why) => {
            eprintln!("wq-dump: {why}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match load(&args) {
        Ok(topo) => {
            use std::io::Write as _;
            // Not `print!`, which panics when the reader has gone
            // (`wq-dump | head`: Rust ignores SIGPIPE): a closed pipe
            // ends the dump quietly, as it ends `cat`'s.
            match std::io::stdout().lock().write_all(render(&topo).as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("wq-dump: could not write the dump: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Err(why) => {
            eprintln!("wq-dump: {why}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wq::CpuInfo;

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn arguments() {
        assert_eq!(
            parse(&[]),
            Ok(Command::Dump(Args {
                source: Source::Detect,
                shard_size: None
            }))
        );
        assert_eq!(
            parse(&["--topology", "core:4", "--shard-size", "2"]),
            Ok(Command::Dump(Args {
                source: Source::Synthetic("core:4".into()),
                shard_size: Some(2)
            }))
        );
        assert_eq!(parse(&["--help"]), Ok(Command::Help));
        for bad in [
            &["--xml"][..],
            &["--shard-size", "0"],
            &["--shard-size", "x"],
            &["--shard-size", "8193"],
            &["--topology", "core:4", "--xml", "f"],
            &["--wat"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        // The next option is no value (it read a file named "--sysfs").
        assert_eq!(
            parse(&["--xml", "--sysfs"]),
            Err("--xml needs a value".into())
        );
        // A negative number is a value, said wrong as one (it read as a
        // missing value).
        assert_eq!(
            parse(&["--shard-size", "-1"]),
            Err("--shard-size wants a number of cores from 1 to 8192, not \"-1\"".into())
        );
        assert!(matches!(
            parse(&["--shard-size", "8192"]),
            Ok(Command::Dump(Args {
                shard_size: Some(8192),
                ..
            }))
        ));
    }

    #[test]
    fn ranges_and_tables() {
        // Intel-style numbering: core c holds CPUs c and c + 8; two LLCs.
        let cpus = (0..16)
            .map(|os| CpuInfo {
                os_index: os,
                core: os % 8,
                llc: os % 8 / 4,
                numa: 0,
                package: 0,
            })
            .collect();
        let topo = Topology::from_cpus(cpus).unwrap();
        let text = render(&topo);
        assert!(text.contains("cpus              16 (0-15)"), "{text}");
        let usable = std::thread::available_parallelism().unwrap().get();
        assert!(
            text.contains(&format!("usable at once    {usable} (this process")),
            "{text}"
        );
        assert!(
            text.contains("  cache: 2 pods\n    [0] 0-3,8-11\n    [1] 4-7,12-15\n"),
            "{text}"
        );
        assert!(text.contains("  smt: 8 pods\n    [0] 0,8\n"), "{text}");
        // CPU 13: cpu pod 13, core 5, shard 1, LLC 1, node 0, system 0.
        assert!(text.contains("\n     13          13           5           1           1           0           0\n"), "{text}");
    }
}
