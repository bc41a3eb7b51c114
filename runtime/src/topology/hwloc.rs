//! The hwloc reader (feature `hwloc`): the live machine, hwloc synthetic
//! descriptions and hwloc XML exports, all turned into the plain description.
//!
//! Per PU (CPU number = the PU's OS index):
//! 1. core: its `Core` ancestor (none: the PU is its own core);
//! 2. LLC: its outermost CPU data cache ancestor (L3, else L2 ...; none: the
//!    core). Keys are the first CPU of the object's cpuset, because a
//!    synthetic topology's caches have no OS index;
//! 3. NUMA node: the smallest NUMA node whose cpuset holds the PU, read by
//!    cpuset, not by depth (hwloc attaches NUMA nodes as memory children,
//!    and a synthetic `numa:N` level may become a Group);
//! 4. package: its `Package` ancestor (none: package 0).

use hwlocality::Topology as HwTopology;
use hwlocality::object::TopologyObject;
use hwlocality::object::types::ObjectType;

use super::{CpuInfo, DEFAULT_CACHE_SHARD_SIZE, Topology, TopologyError, TopologyErrorKind};

/// A synthetic description hwloc accepts, quoted in error messages.
const SYNTHETIC_EXAMPLE: &str = "pack:2 numa:2 l3:2 core:4 pu:2";

/// The variables that make hwloc describe something other than the
/// machine it runs on, in the order hwloc looks at them.
const OVERRIDES: [&str; 3] = ["HWLOC_FSROOT", "HWLOC_SYNTHETIC", "HWLOC_XMLFILE"];

/// The first of [`OVERRIDES`] set in `env`, with its value.
pub(super) fn env_override(env: impl Fn(&str) -> Option<String>) -> Option<(&'static str, String)> {
    OVERRIDES
        .iter()
        .find_map(|&var| env(var).filter(|v| !v.is_empty()).map(|v| (var, v)))
}

/// Other variables that make hwloc say its topology is not this system's
/// (read after [`OVERRIDES`]).
const NOT_THIS_SYSTEM: [&str; 3] = ["HWLOC_THISSYSTEM", "HWLOC_CPUID_PATH", "HWLOC_COMPONENTS"];

/// The error of a live read that hwloc's environment pointed elsewhere.
fn not_this_machine(over: Option<(&str, String)>) -> TopologyError {
    let env = |var: &str| std::env::var(var).ok().filter(|v| !v.is_empty());
    let over = over.or_else(|| {
        NOT_THIS_SYSTEM
            .iter()
            .find_map(|&var| env(var).map(|v| (var, v)))
    });
    let what = match over {
        Some((var, value)) => format!("{var}={value:?} is set: unset it"),
        None => "hwloc says its topology is not of this machine".to_owned(),
    };
    TopologyError::new(
        TopologyErrorKind::NotThisMachine,
        format!(
            "Topology::detect reads this machine, but {what}; set HWLOC_THISSYSTEM=1 if the \
             description hwloc is given is of this machine; or build the made-up machine \
             with Topology::from_xml or Topology::synthetic"
        ),
    )
}

/// Reads the live machine, restricted to the calling thread's affinity.
///
/// hwloc reads `HWLOC_XMLFILE`, `HWLOC_SYNTHETIC` and `HWLOC_FSROOT` and
/// then describes that instead: a pod built from it would bind workers
/// by another machine's caches, so unless `HWLOC_THISSYSTEM=1` says the
/// description is of this machine (an administrator's cached export, as
/// hwloc's docs advise), the read is refused before hwloc loads anything
/// (a huge synthetic description is never built), and a topology hwloc
/// still says is not this system's is refused after.
pub(super) fn detect() -> Result<Topology, TopologyError> {
    let env = |var: &str| std::env::var(var).ok();
    let vouched = env("HWLOC_THISSYSTEM").is_some_and(|v| v.trim() == "1");
    // HWLOC_FSROOT=/ is this machine: a root hwloc opens (a directory) is
    // left to the check after, and hwloc reads nothing past it. One it
    // cannot open falls through to the next variable: that one is looked
    // for (a synthetic description was built unsized).
    let root_opens = env("HWLOC_FSROOT")
        .filter(|root| !root.is_empty())
        .is_some_and(|root| std::fs::metadata(root).is_ok_and(|m| m.is_dir()));
    let description = if root_opens {
        None
    } else {
        env_override(|var| env(var).filter(|_| var != "HWLOC_FSROOT"))
    };
    if !vouched && let Some(over) = description {
        return Err(not_this_machine(Some(over)));
    }
    // Vouched for, a synthetic description is still sized before hwloc
    // builds it (hwloc checks each count, not their product).
    if let Some(("HWLOC_SYNTHETIC", desc)) = &description {
        let shown = super::Shown(desc);
        // And read as `Topology::synthetic` reads it: repeated or huge
        // indexes, levels out of order (hwloc builds what it is given,
        // here a live topology whose workers bind to this machine's CPUs).
        super::synthetic::check_for_hwloc(desc)
            .map_err(|e| TopologyError::new(e.kind(), format!("HWLOC_SYNTHETIC={shown:?}: {e}")))?;
        match super::synthetic::pus_named(desc) {
            Some(n) if n <= super::MAX_CPUS => {}
            Some(n) => {
                return Err(super::too_many_cpus(
                    &format!("HWLOC_SYNTHETIC={shown:?}"),
                    Some(n),
                ));
            }
            None => {
                return Err(TopologyError::new(
                    TopologyErrorKind::InvalidSynthetic,
                    format!(
                        "HWLOC_SYNTHETIC={shown:?}: cannot tell how many CPUs it makes (a count \
                         that is not a number, unbalanced parentheses or brackets, or counts \
                         whose product overflows); give levels outermost first as type:count, \
                         e.g. {SYNTHETIC_EXAMPLE:?}, or unset it"
                    ),
                ));
            }
        }
        // And parsed by hwloc as it stands: hwloc drops a description it
        // cannot parse (its backend fails to enable, which its load
        // ignores) and reads the real machine, so this returned the real
        // machine under a description its user vouched for ("pack:2
        // core:8": hwloc wants a PU level last, which `Topology::synthetic`
        // appends and the environment's string lacks).
        if let Err(e) = HwTopology::builder().from_synthetic(desc) {
            return Err(TopologyError::new(
                TopologyErrorKind::InvalidSynthetic,
                format!(
                    "HWLOC_SYNTHETIC={shown:?}: hwloc cannot parse it ({e}), and would read this \
                     machine instead; end it with a pu level (e.g. {SYNTHETIC_EXAMPLE:?}), or \
                     unset it"
                ),
            ));
        }
    }
    // Vouched for, an export is read as `Topology::from_xml` reads one
    // (hwloc took a PU without os_index, a repeated gp_index or an empty
    // PU and aborted a debug build on them; a node numbered in the
    // billions grew every node set to it), and a file hwloc cannot open
    // is refused: hwloc read this machine instead, under the export's
    // name.
    if let Some(("HWLOC_XMLFILE", path)) = &description {
        let xml = std::fs::read_to_string(path).map_err(|e| {
            TopologyError::new(
                TopologyErrorKind::InvalidXml,
                format!(
                    "HWLOC_XMLFILE={path:?}: cannot read it ({e}), and hwloc would read this \
                     machine instead; point it at an export (`hwloc-ls --of xml > box.xml`), \
                     or unset it"
                ),
            )
            .with_source(e)
        })?;
        check_xml(&xml)
            .map_err(|e| TopologyError::new(e.kind(), format!("HWLOC_XMLFILE={path:?}: {e}")))?;
    }
    let hw = HwTopology::new().map_err(|e| {
        TopologyError::new(
            TopologyErrorKind::Io,
            "hwloc could not read this machine's topology: check that /sys and /proc are \
             mounted, or use Topology::detect_sysfs()",
        )
        .with_source(e)
    })?;
    if !hw.is_this_system() {
        return Err(not_this_machine(env_override(env)));
    }
    let allowed = super::sysfs::allowed_cpus()?;
    let cpus = describe(&hw, Some(&allowed));
    if cpus.is_empty() {
        // The mask is never empty: hwloc left those CPUs out (as it does
        // where sysfs lacks a CPU's topology directory), and the sysfs
        // reader may find them.
        let found: Vec<usize> = describe(&hw, None).iter().map(|c| c.os_index).collect();
        return Err(TopologyError::new(
            TopologyErrorKind::EmptyCpuSet,
            format!(
                "none of the CPUs hwloc found ({}) is in the process's affinity mask ({}): \
                 use Topology::detect_sysfs(), which reads the CPUs from /sys itself, or \
                 run the process on CPUs hwloc found",
                super::format_cpu_list(&found),
                super::format_cpu_list(&allowed)
            ),
        ));
    }
    Topology::build(
        super::as_found(cpus, "hwloc"),
        DEFAULT_CACHE_SHARD_SIZE,
        "hwloc (this machine)".to_owned(),
        true,
    )
}

/// Whether `desc` uses the part of hwloc's grammar the parser here does not
/// read (attributes in parentheses, memory children in brackets): its
/// errors would only say to build wq with hwloc.
fn hwloc_grammar(desc: &str) -> bool {
    desc.contains(['(', ')', '[', ']'])
}

/// Builds a made-up machine with hwloc's synthetic backend.
pub(super) fn synthetic(desc: &str) -> Result<Topology, TopologyError> {
    let shown = super::Shown(desc);
    let invalid = |source: Option<String>| {
        let mut message = format!(
            "invalid synthetic topology {shown:?}: hwloc rejected it; give levels outermost \
             first as type:count, e.g. {SYNTHETIC_EXAMPLE:?}"
        );
        if let Some(source) = source {
            message.push_str(&format!(" (hwloc: {source})"));
        }
        TopologyError::new(TopologyErrorKind::InvalidSynthetic, message)
    };
    if desc.trim().is_empty() {
        return Err(TopologyError::new(
            TopologyErrorKind::InvalidSynthetic,
            format!(
                "invalid synthetic topology {shown:?}: it names no level; give levels outermost \
                 first as type:count, e.g. {SYNTHETIC_EXAMPLE:?}"
            ),
        ));
    }
    // hwloc checks each count, not their product: it would try to build
    // every object of "core:100000 pu:100000". A description whose size
    // cannot be read is refused before hwloc sees it.
    match super::synthetic::pus_named(desc) {
        Some(n) if n > super::MAX_CPUS => {
            return Err(super::too_many_cpus(
                &format!("synthetic topology {shown:?}"),
                Some(n),
            ));
        }
        Some(_) => super::synthetic::check_for_hwloc(desc)?,
        None => {
            // Counts too big to multiply, or one that is no number: the
            // parser here says which where it can (it refuses before
            // building anything big) -- not in hwloc's own grammar, which
            // it would only send to the feature this build has.
            if !hwloc_grammar(desc) {
                super::synthetic::parse(desc)?;
            }
            return Err(TopologyError::new(
                TopologyErrorKind::InvalidSynthetic,
                format!(
                    "invalid synthetic topology {shown:?}: cannot tell how many CPUs it makes \
                     (a count that is not a number, unbalanced parentheses or brackets, or \
                     counts whose product overflows); give levels outermost first as \
                     type:count, e.g. {SYNTHETIC_EXAMPLE:?}"
                ),
            ));
        }
    }
    // hwloc wants the last level to be `pu`; accept "core:4" as "core:4
    // pu:1". A last level with no type ("core:4 2") is hwloc's PU level
    // already: appending would make it a level of its own. Read with the
    // attributes blanked: "pack:2(memory=1GB indexes=0,1)" ends with a
    // package, not with "indexes=0,1)".
    let plain = super::synthetic::plain_levels(desc).unwrap_or_else(|| desc.to_owned());
    let ends_with_pu = plain.split_whitespace().last().is_some_and(|last| {
        let last = last.to_ascii_lowercase();
        last.starts_with("pu:") || !last.contains(':')
    });
    // hwloc separates levels by spaces and newlines only: a tab or a
    // carriage return (accepted by the parser here and the macro) made it
    // refuse the string without saying why.
    let spaced = desc.split_whitespace().collect::<Vec<_>>().join(" ");
    let full = if ends_with_pu {
        spaced
    } else {
        format!("{spaced} pu:1")
    };
    // hwloc's own message says only that it rejected the string: where the
    // parser here (a subset of hwloc's grammar) finds the fault, say that.
    let explain = |e: String| match super::synthetic::parse(desc) {
        Err(ours) if !hwloc_grammar(desc) => ours,
        _ => invalid(Some(e)),
    };
    let hw = HwTopology::builder()
        .from_synthetic(&full)
        .map_err(|e| explain(e.to_string()))?
        .build()
        .map_err(|e| explain(e.to_string()))?;
    Topology::build(
        describe(&hw, None),
        DEFAULT_CACHE_SHARD_SIZE,
        format!("synthetic {desc:?}"),
        false,
    )
}

/// Builds the topology of an hwloc XML export.
pub(super) fn from_xml(xml: &str) -> Result<Topology, TopologyError> {
    check_xml(xml)?;
    let invalid = |source: String| {
        TopologyError::new(
            TopologyErrorKind::InvalidXml,
            format!(
                "invalid hwloc XML topology ({} bytes{}): hwloc rejected it (run with \
                 HWLOC_XML_VERBOSE=1 for hwloc's reason on stderr; a machine without a NUMA \
                 node, say, or objects that do not nest); export one with `hwloc-ls --of xml \
                 > box.xml` (or lstopo) and pass the file's whole contents",
                xml.len(),
                xml_version(xml).map_or(String::new(), |v| format!(", version {v:?}"))
            ),
        )
        .with_source(std::io::Error::other(source))
    };
    let hw = HwTopology::builder()
        .from_xml(xml)
        .map_err(|e| invalid(e.to_string()))?
        .build()
        .map_err(|e| invalid(e.to_string()))?;
    Topology::build(
        super::as_found(describe(&hw, None), "xml"),
        DEFAULT_CACHE_SHARD_SIZE,
        "xml".to_owned(),
        false,
    )
}

/// What `from_xml` refuses before hwloc reads `xml` (also a vouched
/// `HWLOC_XMLFILE`'s contents, which `detect` hands hwloc): what hwloc would
/// refuse without saying why, and what it would take and then abort a debug
/// build on, or read wrongly.
fn check_xml(xml: &str) -> Result<(), TopologyError> {
    let refused = |why: String| TopologyError::new(TopologyErrorKind::InvalidXml, why);
    // What hwloc would refuse without saying why, said here.
    if let Some(why) = xml_shape_problem(xml) {
        return Err(refused(format!(
            "invalid hwloc XML topology ({} bytes): {why}",
            xml.len()
        )));
    }
    // hwloc's importer takes a PU without `os_index` (a hand-edited or
    // generated file), then numbers it by its logical index, or, in a
    // debug build (hwlocality checks the topology there), aborts the
    // process on its own consistency assertion.
    if let Some(tag) = pu_without_os_index(xml) {
        return Err(TopologyError::new(
            TopologyErrorKind::InvalidXml,
            format!(
                "invalid hwloc XML topology: the PU object {tag:?} has no os_index attribute \
                 (the CPU number the OS uses): export the machine with `hwloc-ls --of xml`, \
                 which writes one for every PU"
            ),
        ));
    }
    // Nor a file with no PU at all, or with a gp_index two objects share:
    // hwloc's importer takes both, and its consistency check aborts a
    // debug build (in release, a file without PUs was refused as "no
    // CPU", with advice for `from_cpus`; a repeated gp_index passed).
    if !object_tags(xml).any(|tag| attr_value(&tag_attrs(tag), "type") == Some("PU")) {
        return Err(refused(
            "invalid hwloc XML topology: it has no PU object (no CPU): export the machine with \
             `hwloc-ls --of xml`, which writes one for every CPU"
                .to_owned(),
        ));
    }
    if let Some((tag, n)) = repeated_gp_index(xml) {
        return Err(refused(format!(
            "invalid hwloc XML topology: the object {tag:?} repeats gp_index {n} of another \
             object (each object's gp_index is its own): export the machine with `hwloc-ls \
             --of xml` rather than editing it"
        )));
    }
    // An os_index wq would refuse after the import is refused before it,
    // saying why: hwloc rejected a PU of 4,000,000,000 with no CPU set
    // (EINVAL: "hwloc rejected it"), and one with a set was refused for
    // the set's disagreeing, not for the number.
    if let Some(n) = pu_os_indexes(xml).find(|&n| n >= super::MAX_CPUS * 8) {
        return Err(TopologyError::new(
            TopologyErrorKind::TooManyCpus,
            format!(
                "hwloc XML topology: CPU index {n} is beyond what wq supports (below {}): \
                 number CPUs from 0, as the OS does",
                super::MAX_CPUS * 8
            ),
        ));
    }
    // So is a NUMA node's (hwloc grew every node set to it: 490 MiB for
    // 4,000,000,000), and more CPUs than wq takes (hwloc built them all
    // first, 65,536 at most by their indexes, before wq refused).
    if let Some(n) = os_indexes_of(xml, "NUMANode").find(|&n| n >= super::MAX_CPUS * 8) {
        return Err(TopologyError::new(
            TopologyErrorKind::TooManyCpus,
            format!(
                "hwloc XML topology: NUMA node index {n} is beyond what wq supports (below {}): \
                 number nodes from 0, as the OS does",
                super::MAX_CPUS * 8
            ),
        ));
    }
    let pus = pu_os_indexes(xml).count();
    if pus > super::MAX_CPUS {
        return Err(super::too_many_cpus("hwloc XML topology", Some(pus)));
    }
    // Nor does it check an os_index against the PU's cpuset or the other
    // PUs' (the same abort in a debug build; in release, CPUs merged or
    // misplaced).
    if let Some((tag, why)) = pu_os_index_problem(xml) {
        return Err(TopologyError::new(
            TopologyErrorKind::InvalidXml,
            format!(
                "invalid hwloc XML topology: the PU object {tag:?} {why}: export the machine \
                 with `hwloc-ls --of xml` rather than editing its CPU numbers"
            ),
        ));
    }
    // Nor CPU sets that do not nest (the same abort; in release, CPUs read
    // into the wrong caches or nodes).
    if let Some((tag, why)) = cpuset_problem(xml) {
        return Err(TopologyError::new(
            TopologyErrorKind::InvalidXml,
            format!(
                "invalid hwloc XML topology: the object {tag:?} {why}: export the machine with \
                 `hwloc-ls --of xml` rather than editing its CPU sets"
            ),
        ));
    }
    Ok(())
}

/// Why `xml` is no whole hwloc export, if it plainly is not: empty, a
/// path passed for the contents, cut short (no `</topology>`), or written
/// by an hwloc whose XML version this one does not read.
fn xml_shape_problem(xml: &str) -> Option<String> {
    let body = xml.trim();
    if body.is_empty() {
        return Some(
            "it is empty: pass the whole contents of an export (`hwloc-ls --of xml > box.xml`)"
                .to_owned(),
        );
    }
    if !body.starts_with('<') {
        let start: String = body.chars().take(60).collect();
        return Some(format!(
            "it does not start with an XML tag ({start:?}): from_xml takes the export's \
             contents, not its path (read the file with std::fs::read_to_string)"
        ));
    }
    if !body.contains("<topology") {
        return Some(
            "it has no <topology> element: it is not an hwloc export (an SVG or another \
             tool's XML?); export the machine with `hwloc-ls --of xml`"
                .to_owned(),
        );
    }
    if !body.contains("</topology>") && !body.ends_with("/>") {
        return Some(
            "it is cut short (no closing </topology>): pass the whole file, as `hwloc-ls --of \
             xml` wrote it"
                .to_owned(),
        );
    }
    if let Some(v) = xml_version(xml)
        && !matches!(v, "1.0" | "2.0")
    {
        return Some(format!(
            "its <topology> has version {v:?}, which the hwloc wq uses cannot read (it reads \
             versions 1.0 and 2.0): export the machine with hwloc 2 (`hwloc-ls --of xml`)"
        ));
    }
    None
}

/// The `version` attribute of the `<topology>` tag, if any.
fn xml_version(xml: &str) -> Option<&str> {
    let at = xml.find("<topology")?;
    let tag = &xml[at..at + xml[at..].find('>')?];
    let v = &tag[tag.find("version=")? + "version=".len()..];
    let quote = v.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let v = &v[1..];
    Some(&v[..v.find(quote)?])
}

/// The os_index of every PU of an hwloc XML export that has a number for
/// one.
fn pu_os_indexes(xml: &str) -> impl Iterator<Item = usize> + '_ {
    os_indexes_of(xml, "PU")
}

/// The `os_index` numbers of `xml`'s objects of type `kind`.
fn os_indexes_of<'a>(xml: &'a str, kind: &'a str) -> impl Iterator<Item = usize> + 'a {
    object_tags(xml).filter_map(move |tag| {
        let attrs = tag_attrs(tag);
        (attr_value(&attrs, "type") == Some(kind))
            .then(|| attr_value(&attrs, "os_index")?.parse().ok())
            .flatten()
    })
}

/// The first PU tag whose `os_index` is no number, repeats another PU's,
/// or is not the first CPU of its own `cpuset` (as hwloc's consistency
/// check requires), with what is wrong; PUs without one are
/// [`pu_without_os_index`]'s. Then the same of NUMA nodes and their
/// `nodeset` (an edited node number aborted a debug build in hwloc's
/// check, and misnumbered the node in a release one).
pub(super) fn pu_os_index_problem(xml: &str) -> Option<(&str, String)> {
    os_index_problem(xml, "PU", "cpuset", "CPU")
        .or_else(|| os_index_problem(xml, "NUMANode", "nodeset", "node"))
}

/// [`pu_os_index_problem`] for objects of type `kind`, whose own set is
/// attribute `set`, numbering `what`s.
fn os_index_problem<'a>(
    xml: &'a str,
    kind: &str,
    set: &str,
    what: &str,
) -> Option<(&'a str, String)> {
    let mut seen = std::collections::HashSet::new();
    for tag in object_tags(xml) {
        let attrs = tag_attrs(tag);
        let value = |name: &str| attr_value(&attrs, name);
        if value("type") != Some(kind) {
            continue;
        }
        let Some(os_index) = value("os_index") else {
            continue;
        };
        let Ok(n) = os_index.parse::<usize>() else {
            return Some((tag, format!("has os_index {os_index:?}, not a number")));
        };
        if !seen.insert(n) {
            return Some((tag, format!("repeats os_index {n} of another {kind}")));
        }
        // An empty set: hwloc drops the object (a CPU gone without a
        // word in a release build; its check aborts a debug one).
        if value(set)
            .and_then(cpuset_words)
            .is_some_and(|words| words.iter().all(|w| *w == 0))
        {
            return Some((tag, format!("has an empty {set}")));
        }
        if let Some(first) = value(set).and_then(first_cpu_of)
            && first != n
        {
            return Some((
                tag,
                format!("has os_index {n} but its {set} holds {what} {first}"),
            ));
        }
    }
    None
}

/// The first object of an hwloc XML export whose CPU sets break what
/// hwloc's own consistency check asserts after the import, with what is
/// wrong (a hand-edited file: a debug build aborted there, hwlocality
/// running the check; a release build read CPUs into the wrong caches or
/// nodes): a normal object's set is the union of its normal children's,
/// which do not overlap, and within its complete set. (What the import
/// mends, it is left to: a NUMA node's set, a PU's (its os_index's CPU
/// then), the children's order.) A set this cannot read (an infinite one) is not checked, nor
/// what depends on it.
pub(super) fn cpuset_problem(xml: &str) -> Option<(&str, String)> {
    struct Open<'a> {
        tag: &'a str,
        kind: String,
        cpuset: Option<Vec<u32>>,
        /// The union of its normal children's sets, if each could be read.
        union: Option<Vec<u32>>,
        /// Whether it has a normal child.
        parent: bool,
    }
    let mut stack: Vec<Open> = Vec::new();
    let mut rest = xml;
    loop {
        let open = rest.find("<object");
        let close = rest.find("</object>");
        let (at, closing) = match (open, close) {
            (Some(o), Some(c)) if c < o => (c, true),
            (Some(o), _) => (o, false),
            (None, Some(c)) => (c, true),
            (None, None) => return None,
        };
        if closing {
            rest = &rest[at + "</object>".len()..];
            let done = stack.pop()?;
            if let Some(why) =
                normal_union_problem(&done.kind, &done.cpuset, &done.union, done.parent)
            {
                return Some((done.tag, why));
            }
            continue;
        }
        let end = rest[at..].find('>').map_or(rest.len(), |e| at + e + 1);
        let tag = &rest[at..end];
        rest = &rest[end..];
        let attrs = tag_attrs(tag);
        let value = |name: &str| attr_value(&attrs, name).map(str::to_owned);
        let kind = value("type").unwrap_or_default();
        // A PU's sets are its os_index's CPU after the import, whatever
        // the file says.
        let pu = kind == "PU";
        let cpuset = if pu {
            value("os_index")
                .and_then(|i| i.parse::<usize>().ok())
                .filter(|&i| i < super::MAX_CPUS * 8)
                .map(|i| {
                    let mut w = vec![0u32; i / 32 + 1];
                    w[i / 32] = 1 << (i % 32);
                    w
                })
        } else {
            value("cpuset").and_then(|v| cpuset_words(&v))
        };
        if let (false, Some(set), Some(complete)) = (
            pu,
            &cpuset,
            value("complete_cpuset").and_then(|v| cpuset_words(&v)),
        ) {
            let mut both = complete.clone();
            or_into(&mut both, set);
            if !same_set(&both, &complete) {
                return Some((
                    tag,
                    "has a cpuset not within its complete_cpuset".to_owned(),
                ));
            }
        }
        if let Some(up) = stack.last_mut()
            && !matches!(
                kind.as_str(),
                "NUMANode" | "MemCache" | "Bridge" | "PCIDev" | "OSDev" | "Misc"
            )
        {
            up.parent = true;
            match (&cpuset, &mut up.union) {
                (Some(mine), Some(union)) => {
                    if intersects(mine, union) {
                        return Some((
                            tag,
                            format!("has CPUs another child of {:?} has too", up.tag),
                        ));
                    }
                    or_into(union, mine);
                }
                _ => up.union = None,
            }
        }
        let open = Open {
            tag,
            kind,
            cpuset,
            union: Some(Vec::new()),
            parent: false,
        };
        if tag.trim_end().ends_with("/>") {
            if let Some(why) = normal_union_problem(&open.kind, &open.cpuset, &open.union, false) {
                return Some((open.tag, why));
            }
        } else {
            stack.push(open);
        }
    }
}

/// Why a closed object's set is not its normal children's union, if it is
/// not (only for normal objects that have normal children: a leaf's own
/// set stands, and a PU's is checked as one).
fn normal_union_problem(
    kind: &str,
    cpuset: &Option<Vec<u32>>,
    union: &Option<Vec<u32>>,
    parent: bool,
) -> Option<String> {
    if !parent
        || kind == "PU"
        || matches!(
            kind,
            "NUMANode" | "MemCache" | "Bridge" | "PCIDev" | "OSDev" | "Misc"
        )
    {
        return None;
    }
    let (Some(set), Some(union)) = (cpuset, union) else {
        return None;
    };
    (!same_set(set, union))
        .then(|| "has a cpuset that is not the union of its children's".to_owned())
}

/// A cpuset as hwloc writes it (`0x...` words of 32 bits, the most
/// significant first, an empty field a word of zeros), least significant
/// word first; `None` if unreadable or infinite (`0xf...f,` leading).
fn cpuset_words(set: &str) -> Option<Vec<u32>> {
    let set = set.trim();
    if set.starts_with("0xf...f") || set.is_empty() {
        return None;
    }
    set.split(',')
        .rev()
        .map(|word| {
            let hex = word
                .trim()
                .trim_start_matches("0x")
                .trim_start_matches("0X");
            if hex.is_empty() {
                Some(0)
            } else {
                u32::from_str_radix(hex, 16).ok()
            }
        })
        .collect()
}

/// The lowest CPU of a set of [`cpuset_words`], `None` if empty.
fn first_of(words: &[u32]) -> Option<usize> {
    words
        .iter()
        .enumerate()
        .find(|(_, w)| **w != 0)
        .map(|(i, w)| i * 32 + w.trailing_zeros() as usize)
}

fn same_set(a: &[u32], b: &[u32]) -> bool {
    let n = a.len().max(b.len());
    (0..n).all(|i| a.get(i).copied().unwrap_or(0) == b.get(i).copied().unwrap_or(0))
}

fn intersects(a: &[u32], b: &[u32]) -> bool {
    a.iter().zip(b).any(|(x, y)| x & y != 0)
}

fn or_into(into: &mut Vec<u32>, from: &[u32]) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (i, w) in from.iter().enumerate() {
        into[i] |= w;
    }
}

/// The lowest CPU of an hwloc cpuset string; `None` if empty or
/// unreadable ([`cpuset_words`]).
fn first_cpu_of(set: &str) -> Option<usize> {
    first_of(&cpuset_words(set)?)
}

/// The value of attribute `name` among a tag's [`tag_attrs`], unquoted.
fn attr_value<'a>(attrs: &'a [String], name: &str) -> Option<&'a str> {
    attrs.iter().find_map(|a| {
        a.strip_prefix(name)
            .and_then(|v| v.strip_prefix('='))
            // The tag's last attribute carries its `>` or `/>`.
            .map(|v| {
                v.trim_end_matches(['>', '/'])
                    .trim_matches(|c| c == '"' || c == '\'')
            })
    })
}

/// An XML tag's attributes as `name=value` words (whitespace and spaces
/// around `=` as XML allows them).
fn tag_attrs(tag: &str) -> Vec<String> {
    tag.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace(" =", "=")
        .replace("= ", "=")
        .split(' ')
        .map(str::to_owned)
        .collect()
}

/// The first `<object type="PU" ...>` tag of an hwloc XML export that has
/// no `os_index` attribute, if any.
pub(super) fn pu_without_os_index(xml: &str) -> Option<&str> {
    object_tags(xml).find(|tag| {
        // Attributes as XML allows them: after any whitespace, either
        // quote, spaces around `=`.
        let attrs = tag_attrs(tag);
        let is_pu = attrs
            .iter()
            .any(|a| a.starts_with("type=\"PU\"") || a.starts_with("type='PU'"));
        is_pu && !attrs.iter().any(|a| a.starts_with("os_index="))
    })
}

/// The first object tag whose `gp_index` another object's repeats, with
/// that number.
fn repeated_gp_index(xml: &str) -> Option<(&str, String)> {
    let mut seen = std::collections::HashSet::new();
    object_tags(xml).find_map(|tag| {
        let n = attr_value(&tag_attrs(tag), "gp_index")?.to_owned();
        (!seen.insert(n.clone())).then_some((tag, n))
    })
}

/// The `<object ...>` tags of an hwloc XML export, in order.
fn object_tags(xml: &str) -> impl Iterator<Item = &str> {
    let mut rest = xml;
    std::iter::from_fn(move || {
        let start = rest.find("<object")?;
        let tag_end = rest[start..]
            .find('>')
            .map_or(rest.len(), |e| start + e + 1);
        let tag = &rest[start..tag_end];
        rest = &rest[tag_end..];
        Some(tag)
    })
}

/// The plain description of an hwloc topology, keeping only the PUs in
/// `allowed` when given. Ids are keys, renumbered by `Topology::build`.
fn describe(hw: &HwTopology, allowed: Option<&[usize]>) -> Vec<CpuInfo> {
    // A set, not a scan of the list per PU (8,192 CPUs made 67 million
    // comparisons).
    let allowed: Option<std::collections::HashSet<usize>> =
        allowed.map(|a| a.iter().copied().collect());
    let numa_nodes: Vec<&TopologyObject> = hw.objects_with_type(ObjectType::NUMANode).collect();
    let first_cpu = |obj: &TopologyObject| {
        obj.cpuset()
            .and_then(|set| set.first_set())
            .map(usize::from)
    };
    let mut cpus = Vec::new();
    for pu in hw.objects_with_type(ObjectType::PU) {
        // Every PU has one: `from_xml` refuses an export without.
        let os_index = pu.os_index().unwrap_or_else(|| pu.logical_index());
        if allowed
            .as_ref()
            .is_some_and(|allowed| !allowed.contains(&os_index))
        {
            continue;
        }
        let core = pu
            .first_ancestor_with_type(ObjectType::Core)
            .and_then(first_cpu)
            .unwrap_or(os_index);
        let llc = pu
            .ancestors()
            .filter(|obj| obj.object_type().is_cpu_data_cache())
            .last()
            .and_then(first_cpu)
            .unwrap_or(core);
        let numa = numa_nodes
            .iter()
            .filter_map(|node| {
                let set = node.cpuset()?;
                set.is_set(os_index).then(|| {
                    let weight = set.weight().unwrap_or(usize::MAX);
                    (
                        weight,
                        node.os_index().unwrap_or_else(|| node.logical_index()),
                    )
                })
            })
            .min()
            .map(|(_, id)| id)
            // A node hwloc dropped (outside the process's allowed memory:
            // a cgroup's `cpuset.mems`, or memoryless, which hwloc never
            // counts as allowed) keeps its CPUs, in no kept node's
            // cpuset; their `complete_nodeset` still names it (node 0
            // took them all: one `numa` pod over several nodes, unlike
            // the sysfs reader's).
            .or_else(|| {
                pu.complete_nodeset()
                    .and_then(|set| set.first_set())
                    .map(usize::from)
            })
            .unwrap_or(0);
        let package = pu
            .first_ancestor_with_type(ObjectType::Package)
            .map_or(0, |p| p.logical_index());
        cpus.push(CpuInfo {
            os_index,
            core,
            llc,
            numa,
            package,
        });
    }
    cpus
}
