//! The layering ARCHITECTURE.md promises, read from the source: which module
//! may use which, and no import cycles (between `serin`'s top-level modules,
//! between the command modules in `cli/`, and between serin-proxy's files).
//!
//! A module's uses are the `crate::NAME` (and, inside a directory,
//! `super::NAME`) paths in its files before their `#[cfg(test)]` part,
//! outside comments. The crate-level macros `outln!`, `out!` and `errln!`
//! are `cli::output`'s.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The code of a file as it is built outside tests, without comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .take_while(|l| l.trim() != "#[cfg(test)]")
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The names that follow `prefix` (`crate::`, `super::`) in `code`.
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `foo_crate::`, not a path of ours
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            names.insert(name);
        }
    }
    names
}

fn top_level(name: &str) -> String {
    match name {
        "outln" | "out" | "errln" => "cli".to_string(),
        other => other.to_string(),
    }
}

/// `serin`'s top-level modules and what each uses.
fn serin_modules() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = Graph::new();
    for file in rust_files(&src) {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str();
        let module = first.to_string_lossy().trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" || rel == Path::new("spec/tests.rs") {
            continue;
        }
        let uses = graph.entry(module.clone()).or_default();
        for name in names_after(&code(&file), "crate::") {
            let used = top_level(&name);
            if used != module {
                uses.insert(used);
            }
        }
    }
    graph
}

/// The files of one directory and which of the others each uses.
fn file_graph(dir: &Path, prefixes: &[&str]) -> Graph {
    let files: Vec<PathBuf> = rust_files(dir)
        .into_iter()
        .filter(|f| f.parent() == Some(dir))
        .collect();
    let stems: BTreeSet<String> = files
        .iter()
        .map(|f| f.file_stem().unwrap().to_string_lossy().to_string())
        .collect();
    let mut graph = Graph::new();
    for file in &files {
        let stem = file.file_stem().unwrap().to_string_lossy().to_string();
        let code = code(file);
        let uses = graph.entry(stem.clone()).or_default();
        for prefix in prefixes {
            for name in names_after(&code, prefix) {
                if name != stem && stems.contains(&name) && name != "lib" && name != "mod" {
                    uses.insert(name);
                }
            }
        }
    }
    graph
}

/// A cycle in `graph`, if there is one, as the path that closes it.
fn cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|n| n == node) {
            let mut c = path[i..].to_vec();
            c.push(node.to_string());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_reader_finds_uses_and_cycles() {
    // The reader itself: a use in a comment or a test part is not one.
    let code = "use crate::a::B;\nfn f() { crate::outln!(); my_crate::x(); }";
    assert_eq!(
        names_after(code, "crate::"),
        BTreeSet::from(["a".to_string(), "outln".to_string()])
    );
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert_eq!(cycle(&g), None);
    g.entry("c".into()).or_default().insert("a".into());
    assert!(cycle(&g).is_some_and(|c| c.len() == 4), "{:?}", cycle(&g));
}

#[test]
fn serin_modules_form_no_cycle() {
    let graph = serin_modules();
    assert!(graph.contains_key("controller") && graph.contains_key("spec"));
    assert_eq!(cycle(&graph), None, "{graph:#?}");
}

#[test]
fn lower_layers_use_nothing_above_them() {
    let graph = serin_modules();
    // What each lower layer may use (besides itself).
    let allowed: &[(&str, &[&str])] = &[
        ("time", &[]),
        ("rollout", &["time"]),
        ("error", &[]),
        // A message carries the run's typed outcome (the domain, below it).
        ("notify", &["rollout", "time"]),
        ("statedir", &[]),
        ("store", &["rollout", "time", "statedir", "error"]),
        ("spec", &["rollout", "time", "notify", "error"]),
        // The Rollout resource, and the Kubernetes controller over it: a
        // driver per Rollout with its status as the store (above the
        // providers and the runtime it wires, below the daemon and the CLI).
        (
            "cluster",
            &[
                // What status says is not in force, worded as the API's.
                "wire",
                "runtime",
                "providers",
                "controller",
                "spec",
                "store",
                "rollout",
                "time",
                "notify",
                "error",
            ],
        ),
        (
            "controller",
            &["rollout", "time", "store", "notify", "error"],
        ),
        (
            "providers",
            &[
                "controller",
                "spec",
                "rollout",
                "time",
                "store",
                "notify",
                "error",
            ],
        ),
    ];
    for (module, may) in allowed {
        let uses = graph.get(*module).cloned().unwrap_or_default();
        let above: Vec<&String> = uses.iter().filter(|u| !may.contains(&u.as_str())).collect();
        assert!(
            above.is_empty(),
            "{module} uses {above:?} (may use {may:?})"
        );
    }
    // The runtime wires providers; the daemon holds runtimes; neither knows
    // the API or the command line.
    for module in ["runtime", "daemon", "wire", "report"] {
        let uses = graph.get(module).cloned().unwrap_or_default();
        for above in ["api", "cli"] {
            assert!(!uses.contains(above), "{module} uses {above}");
        }
    }
    assert!(
        !graph["runtime"].contains("daemon"),
        "runtime uses daemon: {:?}",
        graph["runtime"]
    );
}

#[test]
fn cli_commands_form_no_cycle() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cli");
    let graph = file_graph(&dir, &["crate::cli::", "super::"]);
    assert!(graph.contains_key("control") && graph.contains_key("inspect"));
    assert_eq!(cycle(&graph), None, "{graph:#?}");
}

#[test]
fn proxy_files_form_no_cycle() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../serin-proxy/src");
    let graph = file_graph(&dir, &["crate::", "super::"]);
    assert!(graph.contains_key("pool") && graph.contains_key("body"));
    assert_eq!(cycle(&graph), None, "{graph:#?}");
}

#[test]
fn the_judge_does_no_io_reads_no_clock_and_has_no_async() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../serin-analysis");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let deps: Vec<&str> = manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap_or("")
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(deps.is_empty(), "serin-analysis depends on {deps:?}");
    let forbidden = [
        "std::fs",
        "std::net",
        "std::io",
        "std::thread",
        "Instant",
        "SystemTime",
        "async ",
        ".await",
    ];
    for file in rust_files(&root.join("src")) {
        let code = code(&file);
        for word in forbidden {
            assert!(!code.contains(word), "{} uses {word}", file.display());
        }
    }
}
