//! The crate's modules import one way: each only from modules of a lower
//! layer, the task <-> pool link (async-task's schedule function needs the
//! pool, the pool queues tasks) aside. Run it alone with
//! `cargo test -p wq --test layers`.
//!
//! It reads the sources: every `crate::name` path outside comments, and the
//! names inside `crate::{...}` groups, are mapped to the module they live in
//! (a name re-exported at the crate root is mapped through `lib.rs`'s
//! `pub use` lines).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each module's layer, lowest first.
const LAYERS: &[(&str, u32)] = &[
    ("coop", 0),
    ("clock", 0),
    ("loom", 0),
    ("scope", 0),
    ("wake", 1),
    ("metrics", 1),
    ("topology", 1),
    ("driver", 1),
    ("pool", 2),
    ("task", 2),
    ("scheduler", 3),
    ("time", 4),
    // A signal listener is a driver socket, found through the scheduler's
    // services.
    ("signal", 4),
    // Above the timers: a Unix connect to a full listener backs off on
    // them.
    ("net", 5),
    ("io", 5),
    ("runtime", 5),
    ("hyper", 6),
    // Pipes and pidfds are `AsyncFd`s.
    ("process", 6),
    ("dashboard", 7),
];

/// Imports allowed although they do not go down a layer.
const ALLOWED: &[(&str, &str)] = &[("task", "pool"), ("pool", "task")];

fn layer(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|&(_, l)| l)
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top module a source file belongs to (`None` for `lib.rs`).
fn module_of(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    match first.strip_suffix(".rs") {
        Some("lib") => None,
        Some(m) => Some(m.to_owned()),
        None => Some(first),
    }
}

/// Library code: without comments (line and doc comments), and without
/// the test modules, which may use the public API (they sit at the end of
/// a file, or in files named `tests.rs` / `loom_tests.rs`).
fn code(text: &str) -> String {
    // The first test-only attribute that opens a module (one on a single
    // function or field inside library code is not the end of it).
    let end = text
        .match_indices("#[cfg(")
        .map(|(i, _)| i)
        .find(|&i| {
            let mut lines = text[i..].lines();
            let attr = lines.next().unwrap_or_default();
            let next = lines.next().unwrap_or_default().trim_start();
            attr.contains("test")
                && (next.starts_with("mod ") || next.starts_with("pub(crate) mod "))
        })
        .unwrap_or(text.len());
    text[..end]
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Names re-exported at the crate root, and the module they come from.
fn root_reexports() -> BTreeMap<String, String> {
    let lib = code(&std::fs::read_to_string(src().join("lib.rs")).unwrap());
    let mut map = BTreeMap::new();
    for stmt in lib.split(';') {
        let stmt = stmt.trim();
        let Some(rest) = stmt.strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, names)) = rest.split_once("::") else {
            continue;
        };
        let names = names.trim().trim_start_matches('{').trim_end_matches('}');
        for name in names.split(',') {
            let name = name.split_whitespace().last().unwrap_or("");
            if !name.is_empty() {
                map.insert(name.to_owned(), module.trim().to_owned());
            }
        }
    }
    map
}

/// The modules a file's code refers to through `crate::`.
fn references(code: &str, reexports: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut resolve = |name: &str| {
        let name = name.trim();
        let head = name.split("::").next().unwrap_or("").trim();
        if head.is_empty() || head == "self" {
            return;
        }
        if layer(head).is_some() {
            found.insert(head.to_owned());
        } else if let Some(m) = reexports.get(head) {
            found.insert(m.clone());
        } else if head
            .chars()
            .next()
            .is_some_and(|c| c.is_lowercase() || c == '_')
        {
            // A function or macro defined in lib.rs itself, or a
            // `#[macro_export]` one (at the root wherever it is written).
        } else {
            panic!("crate::{name}: not a module or a root re-export");
        }
    };
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').expect("closed group");
            for name in group[..end].split(',') {
                resolve(name);
            }
        } else {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            resolve(&rest[..end]);
        }
    }
    found
}

#[test]
fn modules_import_only_from_lower_layers() {
    let reexports = root_reexports();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut wrong = Vec::new();
    let mut seen = BTreeSet::new();
    for file in &files {
        let Some(module) = module_of(file) else {
            continue;
        };
        if file
            .file_name()
            .is_some_and(|n| n == "tests.rs" || n == "loom_tests.rs")
        {
            continue;
        }
        let from = layer(&module).unwrap_or_else(|| {
            panic!(
                "module `{module}` ({}) has no layer in LAYERS",
                file.display()
            )
        });
        seen.insert(module.clone());
        let text = std::fs::read_to_string(file).unwrap();
        for target in references(&code(&text), &reexports) {
            if target == module {
                continue;
            }
            let to = layer(&target).unwrap();
            if to >= from && !ALLOWED.contains(&(module.as_str(), target.as_str())) {
                wrong.push(format!(
                    "{} (layer {from}) imports crate::{target} (layer {to})",
                    file.strip_prefix(src()).unwrap().display()
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that go up or sideways:\n{}",
        wrong.join("\n")
    );
    // Every layer's module exists: the table is not stale.
    for (m, _) in LAYERS {
        assert!(seen.contains(*m), "LAYERS names `{m}`, which has no source");
    }
}

#[test]
fn the_checker_sees_an_upward_import() {
    let reexports = root_reexports();
    let refs = references(
        "use crate::runtime::Handle;\nuse crate::{Scope, pool::Pool};\nlet x = crate::loom::lock(m);",
        &reexports,
    );
    let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
    assert_eq!(refs, ["loom", "pool", "runtime", "scope"]);
    assert!(
        !code("// use crate::runtime;\nlet a = 1; // crate::pool").contains("crate::"),
        "comments are not imports"
    );
    assert!(
        !code("use crate::pool;\n#[cfg(all(test, loom))]\nmod t { use crate::runtime; }")
            .contains("crate::runtime"),
        "test modules may use the public API"
    );
}
