//! The house rules of docs/ARCHITECTURE.md that a reader can check without running
//! anything: which crate may depend on which, where SQL lives, that no two modules of a
//! crate import each other in a loop, and that no source file passes 600 lines. Each test
//! names the file and the rule it breaks.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The longest a source file may be, its in-file tests included: a long test module goes
/// to a file of its own (`#[path = "x_tests.rs"] mod tests;`), which is not counted.
const MAX_LINES: usize = 600;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn crates() -> Vec<(String, PathBuf)> {
    let dir = workspace().join("crates");
    let mut out: Vec<_> = fs::read_dir(&dir)
        .expect("crates/")
        .map(|e| e.expect("crates/ entry").path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .map(|p| {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            (name, p)
        })
        .collect();
    out.sort();
    out
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.expect("entry").path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A file that is tests as a whole: `*_tests.rs`, `tests.rs`, `testing.rs`, or under `tests/`.
fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().expect("name").to_string_lossy();
    name.ends_with("_tests.rs")
        || name == "tests.rs"
        || name == "testing.rs"
        || path.components().any(|c| c.as_os_str() == "tests")
}

/// A file's code without its tests: everything before the first `#[cfg(test)]` at the
/// start of a line. Files that are tests as a whole (`*_tests.rs`, `testing.rs`,
/// `tests.rs`, a crate's `tests/` or the testkit) give nothing.
fn code_part(path: &Path) -> String {
    if is_test_file(path) {
        return String::new();
    }
    let text = fs::read_to_string(path).expect("readable source");
    match text.find("\n#[cfg(test)]") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

#[test]
fn no_source_file_has_more_than_600_lines() {
    let mut long = Vec::new();
    for (name, dir) in crates() {
        if name == "testkit" {
            continue; // fakes and the benchmark driver: test code as a whole
        }
        for file in rust_files(&dir.join("src")) {
            if is_test_file(&file) {
                continue;
            }
            let lines = fs::read_to_string(&file).expect("source").lines().count();
            if lines > MAX_LINES {
                long.push(format!("{} ({lines} lines)", file.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines (split along a seam, or move the tests to x_tests.rs):\n{}",
        long.join("\n")
    );
}

/// The longest a function may be, signature to closing brace, tests aside: a longer one
/// is cut into named phases.
const MAX_FUNCTION_LINES: usize = 100;

/// `(name, first line, lines)` of each function with a body in `code` (rustfmt's layout:
/// the body ends at the first `}` line at the signature's indentation).
fn functions(code: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let mut words = trimmed.split_whitespace().peekable();
        let mut is_fn = false;
        for w in words.by_ref() {
            if w == "fn" {
                is_fn = true;
                break;
            }
            if !(w.starts_with("pub") || matches!(w, "async" | "const" | "unsafe" | "extern")) {
                break;
            }
        }
        if !is_fn {
            continue;
        }
        let name: String = words
            .next()
            .unwrap_or_default()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        // The signature ends at `{` (a body) or `;` (a declaration).
        let Some(open) = (i..lines.len()).find(|&j| {
            let l = lines[j].trim_end();
            l.ends_with('{') || l.ends_with(';')
        }) else {
            continue;
        };
        if lines[open].trim_end().ends_with(';') {
            continue;
        }
        let close = format!("{indent}}}");
        if let Some(end) = (open..lines.len()).find(|&j| lines[j].trim_end() == close) {
            out.push((name, i + 1, end - i + 1));
        }
    }
    out
}

#[test]
fn no_function_is_longer_than_100_lines() {
    let mut long = Vec::new();
    for (name, dir) in crates() {
        if name == "testkit" {
            continue;
        }
        for file in rust_files(&dir.join("src")) {
            for (f, line, n) in functions(&code_part(&file)) {
                if n > MAX_FUNCTION_LINES {
                    long.push(format!("{}:{line} {f} ({n} lines)", file.display()));
                }
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines (cut them into named phases):\n{}",
        long.join("\n")
    );
}

/// The crate's top-level module a file belongs to (`run/transfer.rs` -> `run`).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    let top = first.trim_end_matches(".rs").to_string();
    (!matches!(top.as_str(), "lib" | "main" | "bin")).then_some(top)
}

/// The top-level modules `code` names through `crate::` (`crate::x::..`, `crate::{x, y::..}`).
fn named_modules(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let words: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            group[..end]
                .split(',')
                .map(|part| part.trim().split("::").next().unwrap_or(""))
                .collect()
        } else {
            vec![
                rest.split(|c: char| !c.is_alphanumeric() && c != '_')
                    .next()
                    .unwrap_or(""),
            ]
        };
        out.extend(
            words
                .into_iter()
                .filter(|w| modules.contains(*w))
                .map(str::to_string),
        );
    }
    out
}

#[test]
fn no_two_modules_of_a_crate_import_each_other_in_a_loop() {
    let mut loops = Vec::new();
    for (name, dir) in crates() {
        let src = dir.join("src");
        let files = rust_files(&src);
        let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(&src, f)).collect();
        let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in &files {
            let Some(top) = top_module(&src, file) else {
                continue;
            };
            let named = named_modules(&code_part(file), &modules);
            uses.entry(top.clone())
                .or_default()
                .extend(named.into_iter().filter(|m| *m != top));
        }
        // A loop is a module that reaches itself.
        for start in uses.keys() {
            let mut path = vec![start.clone()];
            if let Some(found) = reach(start, &uses, &mut path, &mut BTreeSet::new()) {
                loops.push(format!("{name}: {}", found.join(" -> ")));
            }
        }
    }
    loops.sort();
    loops.dedup();
    assert!(loops.is_empty(), "modules in a loop:\n{}", loops.join("\n"));
}

fn reach(
    start: &str,
    uses: &BTreeMap<String, BTreeSet<String>>,
    path: &mut Vec<String>,
    seen: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    let here = path.last().expect("path").clone();
    for next in uses.get(&here).into_iter().flatten() {
        if next == start {
            let mut found = path.clone();
            found.push(next.clone());
            return Some(found);
        }
        if seen.insert(next.clone()) {
            path.push(next.clone());
            if let Some(found) = reach(start, uses, path, seen) {
                return Some(found);
            }
            path.pop();
        }
    }
    None
}

/// The names of the `mailferry-*` crates in a manifest's `[dependencies]` (not dev).
fn internal_dependencies(manifest: &Path) -> BTreeSet<String> {
    let text = fs::read_to_string(manifest).expect("Cargo.toml");
    let mut out = BTreeSet::new();
    let mut in_deps = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
        } else if in_deps && let Some(rest) = line.strip_prefix("mailferry-") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '-')
                .collect();
            out.insert(name);
        }
    }
    out
}

/// Who may depend on whom, said of the few crates that are special, so that a new adapter
/// crate falls under the rule without being listed: the configuration and the sign-ins
/// (`config`, `oauth`) are seen by the engine and the binary only; the engine by the binary
/// only; the test kit by no crate's `[dependencies]`; `core` depends on nothing of ours.
const ONLY: &[(&str, &[&str])] = &[
    ("config", &["engine", "mailferry"]),
    ("oauth", &["engine", "mailferry"]),
    ("engine", &["mailferry"]),
    ("testkit", &[]),
];

#[test]
fn only_the_engine_and_the_binary_see_the_configuration_and_the_sign_ins() {
    let mut wrong = Vec::new();
    for (name, dir) in crates() {
        let deps = internal_dependencies(&dir.join("Cargo.toml"));
        if name == "core" && !deps.is_empty() {
            wrong.push(format!(
                "crates/core depends on {deps:?}: it depends on nothing of ours"
            ));
        }
        for (dep, allowed) in ONLY {
            if deps.contains(*dep) && !allowed.contains(&name.as_str()) {
                wrong.push(format!(
                    "crates/{name} depends on mailferry-{dep}; only {allowed:?} may: take plain values (host, port, an access token) instead"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn only_the_store_runs_sql() {
    let mut wrong = Vec::new();
    for (name, dir) in crates() {
        if name == "store" {
            continue;
        }
        for file in rust_files(&dir.join("src")) {
            let code = code_part(&file);
            if code.contains("sqlx::") || code.contains("rusqlite") {
                wrong.push(file.display().to_string());
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "SQL outside crates/store (add a Store method instead):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn only_crates_sys_may_hold_unsafe_code() {
    // The workspace's lints forbid unsafe code; a crate that does not take them could
    // hold some unseen. crates/sys (mallopt, and one socket option) is the exception.
    let mut checked = 0;
    for (name, dir) in crates() {
        let manifest = fs::read_to_string(dir.join("Cargo.toml")).expect("manifest");
        if name == "sys" {
            assert!(manifest.contains("unsafe_code = \"deny\""), "crates/sys");
            continue;
        }
        assert!(
            manifest.contains("[lints]\nworkspace = true"),
            "crates/{name} does not take the workspace's lints (which forbid unsafe code)"
        );
        checked += 1;
    }
    assert!(checked > 5);
}

#[test]
fn the_checks_see_what_they_guard() {
    // A check that finds no files passes for the wrong reason.
    let names: Vec<String> = crates().into_iter().map(|(n, _)| n).collect();
    for expected in ["core", "engine", "imap", "store", "mailferry"] {
        assert!(
            names.contains(&expected.to_string()),
            "no crates/{expected}"
        );
    }
    let engine = workspace().join("crates/engine");
    assert!(internal_dependencies(&engine.join("Cargo.toml")).contains("config"));
    let src = engine.join("src");
    let modules: BTreeSet<String> = rust_files(&src)
        .iter()
        .filter_map(|f| top_module(&src, f))
        .collect();
    assert!(modules.contains("run") && modules.contains("build"));
    let named = named_modules(
        "use crate::{build::connect, run::{A, B}};\nlet x = crate::deliver::go();",
        &modules,
    );
    assert!(named.contains("build") && named.contains("run") && named.contains("deliver"));
    let measured = functions(
        "fn a() {\n    x\n}\n    pub(crate) async fn b(\n        y: u8,\n    ) -> u8 {\n        y\n    }\n    fn c();\n",
    );
    assert_eq!(
        measured,
        [("a".to_owned(), 1, 3), ("b".to_owned(), 4, 5)],
        "the function measure"
    );
    let with_tests = code_part(&workspace().join("crates/imap/src/uid_set.rs"));
    assert!(!with_tests.contains("fn sequence_sets_merge_runs"));
}

#[test]
fn the_guides_for_adding_a_source_and_a_destination_name_files_that_exist() {
    let text = fs::read_to_string(workspace().join("docs/ARCHITECTURE.md")).expect("ARCHITECTURE");
    let start = text
        .find("## Adding a source")
        .expect("an \"Adding a source\" section");
    let end = text
        .find("## Adding a destination")
        .expect("an \"Adding a destination\" section");
    assert!(start < end);
    let guides = &text[start..];
    let mut named = Vec::new();
    let mut missing = Vec::new();
    for (i, part) in guides.split('`').enumerate() {
        // Odd parts are inside backticks; a path has a slash and no spaces.
        let path = part.trim_end_matches('/');
        if i % 2 == 0 || !part.contains('/') || part.contains(' ') {
            continue;
        }
        // The example of a new crate does not exist yet.
        if path.starts_with("crates/jmap") {
            continue;
        }
        named.push(path.to_owned());
        if !workspace().join(path).exists() {
            missing.push(path.to_owned());
        }
    }
    assert!(named.len() >= 10, "the guides name few files: {named:?}");
    assert!(
        missing.is_empty(),
        "the guides name files that do not exist: {missing:?}"
    );
}
