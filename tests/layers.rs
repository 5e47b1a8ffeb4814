//! The shape of the house (docs/development.md, "Layout"): the library's top-level modules depend on each other
//! without cycles, only `model/` talks to ONNX Runtime, and only `http/` (and the binary's `serve`) to actix-web.

use std::collections::{BTreeMap, BTreeSet};
mod common;

use std::path::{Path, PathBuf};

use common::rust_files;

fn source() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The code of a file without its comments (doc links to other modules are not dependencies).
fn code_of(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines().map(|line| line.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

/// The library's top-level modules (`pub mod x;` in lib.rs) and their files.
fn modules() -> BTreeMap<String, Vec<PathBuf>> {
    let lib = std::fs::read_to_string(source().join("lib.rs")).unwrap();
    lib.lines()
        .filter_map(|line| line.strip_prefix("pub mod ")?.strip_suffix(';'))
        .map(|name| {
            let folder = source().join(name);
            let path = if folder.is_dir() { folder } else { source().join(format!("{name}.rs")) };
            (name.to_string(), rust_files(&path))
        })
        .collect()
}

/// The other top-level modules that `code` names as `crate::name`.
fn uses(code: &str, modules: &BTreeSet<&str>) -> BTreeSet<String> {
    code.split("crate::")
        .skip(1)
        .map(|after| after.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next().unwrap_or_default())
        .filter(|name| modules.contains(name))
        .map(str::to_string)
        .collect()
}

/// A cycle in `graph` as the path that closes it, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn top_level_modules_have_no_dependency_cycle() {
    let modules = modules();
    let names: BTreeSet<&str> = modules.keys().map(String::as_str).collect();
    assert!(names.contains("model") && names.contains("http"), "modules found: {names:?}");
    let graph: BTreeMap<String, BTreeSet<String>> = modules
        .iter()
        .map(|(name, files)| {
            let mut used: BTreeSet<String> = files.iter().flat_map(|file| uses(&code_of(file), &names)).collect();
            used.remove(name);
            (name.clone(), used)
        })
        .collect();
    assert!(graph["http"].contains("engine"), "the scan finds no dependencies: {graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!("the modules depend on each other in a cycle: {}", cycle.join(" -> "));
    }
}

/// Whether `code` names a path of the crate `root` (`root::...`, not `support::...`).
fn names_crate(code: &str, root: &str) -> bool {
    let needle = format!("{root}::");
    code.match_indices(&needle).any(|(at, _)| {
        code[..at].chars().next_back().is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
    })
}

/// The files under `src/` whose code names a path of the crate `root`, relative to `src/`.
fn files_using(root: &str) -> Vec<String> {
    rust_files(&source())
        .into_iter()
        .filter(|file| names_crate(&code_of(file), root))
        .map(|file| file.strip_prefix(source()).unwrap().display().to_string())
        .collect()
}

#[test]
fn only_the_model_layer_talks_to_onnx_runtime() {
    let users = files_using("ort");
    assert!(users.iter().any(|file| file.starts_with("model/")), "the scan finds no use of ort: {users:?}");
    let outside: Vec<_> = users.iter().filter(|file| !file.starts_with("model/")).collect();
    assert!(outside.is_empty(), "ONNX Runtime used outside src/model/: {outside:?}");
}

#[test]
fn only_the_http_layer_talks_to_actix() {
    let users = files_using("actix_web");
    let outside: Vec<_> = users.iter().filter(|f| !f.starts_with("http/") && *f != "cli/serve.rs").collect();
    assert!(outside.is_empty(), "actix-web used outside src/http/: {outside:?}");
}

#[test]
fn a_cycle_is_found() {
    let graph: BTreeMap<String, BTreeSet<String>> = [("a", &["b"][..]), ("b", &["c"]), ("c", &["a"]), ("d", &[])]
        .iter()
        .map(|(node, next)| (node.to_string(), next.iter().map(|n| n.to_string()).collect()))
        .collect();
    assert_eq!(find_cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
    let names: BTreeSet<&str> = ["mask", "model"].into_iter().collect();
    assert_eq!(uses("use crate::mask::rle; crate::model::X; crate::masks", &names).len(), 2);
    assert!(names_crate("use ort::session::Session;", "ort") && names_crate("(ort::Error)", "ort"));
    assert!(!names_crate("support::x; crate::ort::y", "ort"));
}
