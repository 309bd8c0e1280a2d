//! The layering rule, checked: no import cycle among the crate's top-level modules.
//!
//! The graph is read from the sources themselves: an edge `a → b` for every `crate::b` path in
//! the non-test code of module `a` (its file or folder). Test code is left out (`tests.rs`,
//! `tests/` folders, `testing.rs` and inline `#[cfg(test)]` items), since tests may reach across
//! layers. The test fails naming every cycle, so a new upward import is caught where it is made.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Top-level module names: `src/x.rs` and `src/x/`, without the crate roots.
fn modules(src: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for entry in fs::read_dir(src).expect("src is readable").flatten() {
        let path = entry.path();
        let name = match path.extension() {
            Some(ext) if ext == "rs" => path.file_stem(),
            None if path.is_dir() => path.file_name(),
            _ => None,
        };
        if let Some(name) = name.and_then(|n| n.to_str())
            && !matches!(name, "lib" | "main")
        {
            out.insert(name.to_owned());
        }
    }
    out
}

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in fs::read_dir(path).expect("folder is readable").flatten() {
            rust_files(&entry.path(), out);
        }
    } else if path.is_file() && path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_owned());
    }
}

fn is_test_file(path: &Path) -> bool {
    path.components().any(|c| c.as_os_str() == "tests")
        || path.file_stem().is_some_and(|s| s == "tests" || s == "testing")
}

/// The text of `source` without items behind `#[cfg(test)]` (a module with its braces, or a
/// single `mod x;` line). Brace counting ignores strings, which is enough for this crate's style.
fn without_test_items(source: &str) -> String {
    let mut out = String::new();
    let mut lines = source.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "#[cfg(test)]" {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let mut depth = 0i64;
        let mut opened = false;
        for item in lines.by_ref() {
            depth += item.matches('{').count() as i64 - item.matches('}').count() as i64;
            opened |= item.contains('{');
            let ends_without_body = !opened && item.trim_end().ends_with(';');
            if ends_without_body || (opened && depth <= 0) {
                break;
            }
        }
    }
    out
}

/// Every `crate::name` path in the code of `source` (comment lines are prose, not imports),
/// including the names inside `crate::{a, b::c}`.
fn crate_paths(source: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let code: String = source
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inside = group.split('}').next().unwrap_or("");
            out.extend(inside.split(',').map(|p| ident(p.trim())));
        } else {
            out.insert(ident(rest));
        }
    }
    out
}

fn graph(src: &Path) -> Graph {
    let names = modules(src);
    let mut graph = Graph::new();
    for name in &names {
        let mut files = Vec::new();
        rust_files(&src.join(name), &mut files);
        rust_files(&src.join(format!("{name}.rs")), &mut files);
        let edges = graph.entry(name.clone()).or_default();
        for file in files.iter().filter(|f| !is_test_file(f)) {
            let source = fs::read_to_string(file).expect("source is readable");
            edges.extend(
                crate_paths(&without_test_items(&source))
                    .into_iter()
                    .filter(|n| n != name && names.contains(n)),
            );
        }
    }
    graph
}

/// Strongly connected components with more than one module (Tarjan's algorithm).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'g> {
        graph: &'g Graph,
        next: usize,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        next: 0,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

#[test]
fn top_level_modules_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = graph(&src);
    assert!(graph.len() > 10, "read {} modules only", graph.len());
    let found = cycles(&graph);
    let explain: Vec<String> = found
        .iter()
        .map(|c| {
            let edges: Vec<String> = c
                .iter()
                .flat_map(|a| {
                    graph[a]
                        .iter()
                        .filter(|b| c.contains(b))
                        .map(move |b| format!("{a} → {b}"))
                })
                .collect();
            format!("{{{}}}: {}", c.join(", "), edges.join(", "))
        })
        .collect();
    assert!(
        found.is_empty(),
        "import cycles among top-level modules:\n{}",
        explain.join("\n")
    );
}

#[test]
fn the_checker_sees_a_cycle_and_skips_test_code() {
    let mut graph = Graph::new();
    graph.insert("a".into(), ["b".into()].into());
    graph.insert("b".into(), ["c".into()].into());
    graph.insert("c".into(), ["a".into()].into());
    graph.insert("d".into(), ["a".into()].into());
    assert_eq!(cycles(&graph), vec![vec!["a".to_owned(), "b".into(), "c".into()]]);

    let source = "use crate::{x, y::z};\n/// see crate::t\nfn f() { crate::w::g(); }\n#[cfg(test)]\nmod tests {\n    use crate::v;\n}\n#[cfg(test)]\nmod more;\nuse crate::u;\n";
    let paths = crate_paths(&without_test_items(source));
    let expected: BTreeSet<String> = ["u", "w", "x", "y"].into_iter().map(String::from).collect();
    assert_eq!(paths, expected);
}
