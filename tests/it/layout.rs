//! The architecture, checked: imports point one way (`wire <- agent`,
//! `wire <- workstation`, `cli -> both`; agent and workstation never import
//! each other; the leaves import nothing of the crate), and `lib.rs`'s map
//! names every module of each side.

use std::path::{Path, PathBuf};

/// Which top-level modules the files under each top-level module may name.
const ALLOWED: &[(&str, &[&str])] = &[
    ("wire", &["wire", "durable"]),
    ("agent", &["agent", "wire", "durable", "logging"]),
    ("workstation", &["workstation", "wire", "durable"]),
    (
        "cli",
        &["cli", "agent", "workstation", "wire", "durable", "logging"],
    ),
    ("durable", &["durable"]),
    ("logging", &["logging"]),
];

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

/// The module path of a file under `src/`: `agent/forward/mod.rs` is
/// `["agent", "forward"]`, `agent/forward/queue.rs` `["agent", "forward", "queue"]`.
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let file = parts.pop().unwrap();
    let stem = file.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_owned());
    }
    parts
}

/// The top-level modules a file's paths name: `crate::X`, and `super::`
/// chains that climb to the crate root and go down into `X` (counting the
/// inline modules, such as `mod tests {`, opened before them).
fn named_tops(text: &str, module: &[String]) -> Vec<String> {
    let mut named = Vec::new();
    let bytes = text.as_bytes();
    for (at, _) in text.match_indices("crate::") {
        if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
            continue;
        }
        named.push(first_segment(&text[at + "crate::".len()..]));
    }
    for (at, _) in text.match_indices("super::") {
        if at > 0 && (bytes[at - 1] == b':' || bytes[at - 1].is_ascii_alphanumeric()) {
            continue;
        }
        let mut rest = &text[at..];
        let mut climbs = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            climbs += 1;
            rest = r;
        }
        if climbs >= module.len() + inline_modules_before(&text[..at]) {
            named.push(first_segment(rest));
        }
    }
    named
}

/// Inline modules opened before a point: `mod tests {` and the like, which
/// sit at the bottom of a file and stay open to its end.
fn inline_modules_before(text: &str) -> usize {
    text.lines()
        .map(str::trim_start)
        .filter(|l| {
            let l = l.strip_prefix("pub(crate) ").unwrap_or(l);
            l.strip_prefix("mod ")
                .is_some_and(|rest| rest.trim_end().ends_with('{'))
        })
        .count()
}

fn first_segment(path: &str) -> String {
    path.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn imports_point_one_way() {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&root).unwrap();
        let module = module_path(relative);
        let Some(top) = module.first() else {
            continue; // lib.rs, the map itself
        };
        if top == "main" {
            continue; // the binary uses the library by its name
        }
        let allowed = ALLOWED
            .iter()
            .find(|(t, _)| t == top)
            .unwrap_or_else(|| {
                panic!(
                    "{} is in no known part; add it to ALLOWED",
                    relative.display()
                )
            })
            .1;
        let text = std::fs::read_to_string(file).unwrap();
        for named in named_tops(&text, &module) {
            if !named.is_empty() && !allowed.contains(&named.as_str()) {
                wrong.push(format!("{} names crate::{named}", relative.display()));
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "imports against the layout:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_check_sees_what_it_must() {
    let agent = ["agent".to_owned(), "forward".to_owned(), "queue".to_owned()];
    assert_eq!(
        named_tops("use crate::workstation::Client;", &agent),
        ["workstation"]
    );
    assert_eq!(named_tops("super::super::super::cli::x()", &agent), ["cli"]);
    assert!(named_tops("super::super::spool::Spool", &agent) == [] as [String; 0]);
    assert!(named_tops("fn a() { my_crate::x(); }", &agent).is_empty());
    let in_tests = "mod tests {\n    use super::super::super::spool::Spool;";
    assert!(named_tops(in_tests, &agent).is_empty());
    let out_of_tests = "mod tests {\n    use super::super::super::super::cli::X;";
    assert_eq!(named_tops(out_of_tests, &agent), ["cli"]);
    assert_eq!(
        module_path(Path::new("agent/forward/mod.rs")),
        ["agent", "forward"]
    );
}

#[test]
fn the_map_in_lib_rs_names_every_module() {
    let root = src();
    let lib = std::fs::read_to_string(root.join("lib.rs")).unwrap();
    let map: String = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "lib" || name == "main" {
            continue;
        }
        if !map.contains(&format!("`{name}`")) {
            missing.push(name.clone());
        }
        if !path.is_dir() {
            continue;
        }
        for inner in std::fs::read_dir(&path).unwrap() {
            let inner = inner.unwrap().path();
            let stem = inner.file_stem().unwrap().to_string_lossy().into_owned();
            if stem != "mod" && !map.contains(&format!("`{name}::{stem}`")) {
                missing.push(format!("{name}::{stem}"));
            }
        }
    }
    missing.sort();
    assert!(
        missing.is_empty(),
        "lib.rs's map does not name: {missing:?}"
    );
}
