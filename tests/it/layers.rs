//! The library's folders are layers, and nothing imports upward (docs/DESIGN.md). This
//! reads every `crate::…` path in `src/` (outside the binary's `cli/`) and holds the code
//! to the picture: a folder imports only the folders below it, an operation never imports
//! another, and no two files import each other, directly or around a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Which folders (or root modules) each folder may import, besides itself.
fn allowed() -> BTreeMap<&'static str, Vec<&'static str>> {
    let foundation = ["error", "progress", "blocking", "command", "clock"];
    let mut m: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    m.insert("error", vec![]);
    m.insert("progress", vec![]);
    m.insert("blocking", vec!["error"]);
    m.insert("command", vec!["error"]);
    m.insert("clock", vec![]);
    let below = |extra: &[&'static str]| {
        let mut v: Vec<&str> = foundation.to_vec();
        v.extend_from_slice(extra);
        v
    };
    m.insert("model", below(&[]));
    m.insert("store", below(&["model"]));
    m.insert("sqlite", below(&["model"]));
    m.insert("catalog", below(&["model", "store", "sqlite"]));
    m.insert("ops", below(&["model", "store", "sqlite", "catalog"]));
    m.insert(
        "agent",
        below(&["model", "store", "sqlite", "catalog", "ops"]),
    );
    // The web page sits beside the agent: it reads what the operations read.
    m.insert(
        "serve",
        below(&["model", "store", "sqlite", "catalog", "ops"]),
    );
    m
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every library file as its module path: `model/ids.rs` is `["model", "ids"]`,
/// `agent/mod.rs` is `["agent"]`.
fn library_files() -> BTreeMap<Vec<String>, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let root = src();
    let mut files = Vec::new();
    walk(&root, &mut files);
    let mut out = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&root).unwrap();
        let mut parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
            .collect();
        if parts[0] == "cli" || parts == ["main"] || parts == ["lib"] {
            continue;
        }
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        out.insert(parts, f);
    }
    out
}

/// The `crate::` paths a file names, with `use crate::a::{b, c::d}` expanded one level.
fn crate_paths(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let code: String = text
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !t.starts_with("//")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let mut segs = Vec::new();
        let mut s = rest;
        loop {
            let end = s
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(s.len());
            if end == 0 {
                break;
            }
            segs.push(s[..end].to_string());
            s = &s[end..];
            if let Some(after) = s.strip_prefix("::") {
                s = after;
                if let Some(group) = s.strip_prefix('{') {
                    let close = group.find('}').unwrap_or(group.len());
                    for item in group[..close].split(',') {
                        let first = item.trim().split("::").next().unwrap_or("").trim();
                        let first = first.split_whitespace().next().unwrap_or("");
                        if !first.is_empty() && first != "self" {
                            let mut p = segs.clone();
                            p.push(first.to_string());
                            out.push(p);
                        }
                    }
                    break;
                }
            } else {
                break;
            }
        }
        if !segs.is_empty() {
            out.push(segs);
        }
    }
    out
}

/// The longest module path among `files` that `path` starts with.
fn resolve(path: &[String], files: &BTreeMap<Vec<String>, PathBuf>) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| files.contains_key(p))
}

/// The module graph: which library file imports which.
fn graph() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let files = library_files();
    let mut g = BTreeMap::new();
    for (module, file) in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let mut deps = BTreeSet::new();
        for p in crate_paths(&text) {
            if let Some(target) = resolve(&p, &files)
                && &target != module
            {
                deps.insert(target);
            }
        }
        g.insert(module.clone(), deps);
    }
    g
}

fn show(m: &[String]) -> String {
    m.join("::")
}

#[test]
fn every_folder_imports_only_the_layers_below_it() {
    let allowed = allowed();
    let mut wrong = Vec::new();
    for (module, deps) in graph() {
        let from = module[0].as_str();
        let may = allowed
            .get(from)
            .unwrap_or_else(|| panic!("src/{from} is a folder the layer picture does not know: add it to docs/DESIGN.md and to this test"));
        for d in deps {
            let to = d[0].as_str();
            if to != from && !may.contains(&to) {
                wrong.push(format!("{} imports {}", show(&module), show(&d)));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_operation_imports_another() {
    let mut wrong = Vec::new();
    for (module, deps) in graph() {
        if module[0] != "ops" || module.len() < 2 {
            continue;
        }
        for d in deps.iter().filter(|d| d[0] == "ops" && d.len() >= 2) {
            wrong.push(format!("{} imports {}", show(&module), show(d)));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_import_circle_between_files() {
    let g = graph();
    // Depth-first search with colours; a grey node met again closes a circle.
    fn visit(
        n: &Vec<String>,
        g: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        colour: &mut BTreeMap<Vec<String>, u8>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        colour.insert(n.clone(), 1);
        stack.push(n.clone());
        for d in g.get(n).into_iter().flatten() {
            match colour.get(d).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|s| s == d).unwrap();
                    let mut circle = stack[at..].to_vec();
                    circle.push(d.clone());
                    return Some(circle);
                }
                0 => {
                    if let Some(c) = visit(d, g, colour, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        colour.insert(n.clone(), 2);
        None
    }
    let mut colour = BTreeMap::new();
    for n in g.keys() {
        if colour.get(n).copied().unwrap_or(0) == 0
            && let Some(c) = visit(n, &g, &mut colour, &mut Vec::new())
        {
            let text: Vec<String> = c.iter().map(|m| show(m)).collect();
            panic!("import circle: {}", text.join(" -> "));
        }
    }
}

#[test]
fn the_checker_sees_paths_in_every_form_it_must() {
    // The checks above are only as good as this reader: it must see plain paths, grouped
    // imports and paths inside expressions, and skip comments.
    let text = "use crate::model::{ids::Ids, layout};\n// crate::ops::backup in a comment\nlet x = crate::store::bucket::redact_url(u);\nuse crate::error::{Error, Result};\n";
    let paths = crate_paths(text);
    let has = |p: &[&str]| paths.iter().any(|x| x == p);
    assert!(has(&["model", "ids"]), "{paths:?}");
    assert!(has(&["model", "layout"]), "{paths:?}");
    assert!(has(&["store", "bucket", "redact_url"]), "{paths:?}");
    assert!(has(&["error", "Error"]), "{paths:?}");
    assert!(!paths.iter().any(|p| p[0] == "ops"), "{paths:?}");
    // And a circle or an upward import planted in a graph is caught.
    let files: BTreeMap<Vec<String>, PathBuf> = [
        (
            vec!["ops".to_string(), "backup".to_string()],
            PathBuf::new(),
        ),
        (vec!["ops".to_string()], PathBuf::new()),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        resolve(&["ops".into(), "backup".into(), "run".into()], &files),
        Some(vec!["ops".to_string(), "backup".to_string()])
    );
}
