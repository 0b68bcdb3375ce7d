//! The layering check (design invariant 10): scans `server/src` for `crate::` paths and fails on
//! an import cycle between top-level modules and on an import that points up the declared layer
//! order, naming each import (file:line). It also fails when the hub names a socket or a
//! WebSocket frame header (the socket writer lives below it, in the outbox), and on any `.rs` file
//! in `server/src`, `server/tests` or `dashboard/src` over 1,000 lines. A small scanner rather
//! than cargo-modules, which would build rust-analyzer.
//!
//! What counts as an import: every `crate::<module>` path outside comments and string literals
//! (in `use` declarations and inline, `use crate::{a, b::c}` groups included), `herald::<module>`
//! in the binary's `main.rs`, and `super::` paths that climb out to the crate root. A `super::`
//! or `self::` path that stays inside the same top-level module is not an edge. Code under
//! `#[cfg(test)]` (the unit-test modules, and test-only items) is left out: the layers describe
//! what the shipped code depends on, and a unit test may import from above to build its fixture.
//!
//! Modules in the table below must import only their own level or lower. A module missing from the
//! table is accepted only as a leaf, one with no `crate::` imports (`shutdown`, `telemetry`, ...),
//! which any module may import.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Design invariant 10, bottom (0) to top. Modules on one level may import each other (but not in
/// a cycle).
const LEVELS: &[(&str, u32)] = &[
    ("protocol", 0),
    ("auth", 0),
    ("clock", 0),
    ("config", 0),
    ("tenants", 1),
    ("outbox", 2),
    ("hub", 3),
    ("webhooks", 4),
    // Cluster mode (Redis): sees the hub, usage and config; the node holds it.
    ("cluster", 5),
    ("node", 6),
    ("transport", 7),
    ("api", 7),
    ("admin", 7),
    // `/metrics`: reads the node at scrape time.
    ("metrics", 7),
    ("serve", 8),
    ("startup", 8),
    // Entry points for the fuzz targets (fuzz/), forwarding to internal functions.
    ("fuzzing", 8),
    ("cli", 9),
    // The binary's crate root (`herald::...` paths).
    ("main", 10),
];

/// The largest a `.rs` file may grow.
const MAX_LINES: usize = 1_000;

/// One import of another top-level module.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: String,
    to: String,
    /// Path relative to the repository root.
    file: String,
    line: usize,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("server/ has a parent")
        .to_path_buf()
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn relative(path: &Path) -> String {
    path.strip_prefix(repo_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// Scanning

/// `source` with comments and the contents of string and char literals blanked out (newlines
/// kept, so line numbers stay right).
fn strip(source: &str) -> String {
    let c: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let blank = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
        } else if c[i] == 'r'
            && (i == 0 || !ident(c[i - 1]) || (c[i - 1] == 'b' && (i < 2 || !ident(c[i - 2]))))
            && matches!(next, Some('"') | Some('#'))
        {
            // Maybe a raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            while c.get(j) == Some(&'#') {
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            let hashes = j - i - 1;
            for _ in i..=j {
                out.push(' ');
            }
            i = j + 1;
            while i < c.len() {
                if c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#')) {
                    for _ in 0..=hashes {
                        out.push(' ');
                    }
                    i += hashes + 1;
                    break;
                }
                out.push(blank(c[i]));
                i += 1;
            }
        } else if c[i] == '"' {
            out.push(' ');
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < c.len() {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c[i] == '\'' && next == Some('\\') {
            // An escaped char literal: '\n', '\'', '\u{..}'.
            out.push_str("  ");
            i += 2;
            while i < c.len() && c[i] != '\'' {
                out.push(' ');
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else if c[i] == '\'' && c.get(i + 2) == Some(&'\'') {
            out.push_str("   ");
            i += 3;
        } else {
            // Anything else, lifetimes and labels included.
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
struct Token {
    text: String,
    line: usize,
}

fn tokens(stripped: &str) -> Vec<Token> {
    let c: Vec<char> = stripped.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < c.len() {
        if c[i] == '\n' {
            line += 1;
            i += 1;
        } else if c[i].is_whitespace() {
            i += 1;
        } else if c[i].is_alphanumeric() || c[i] == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Token {
                text: c[start..i].iter().collect(),
                line,
            });
        } else if c[i] == ':' && c.get(i + 1) == Some(&':') {
            out.push(Token {
                text: "::".into(),
                line,
            });
            i += 2;
        } else {
            out.push(Token {
                text: c[i].to_string(),
                line,
            });
            i += 1;
        }
    }
    out
}

/// A path's first segment after `crate::` (or a climb to the root) at `tokens[at]`: the module
/// named, or each first segment of a `{...}` group, with their lines.
fn targets(tokens: &[Token], at: usize) -> Vec<(String, usize)> {
    let is_name = |t: &Token| {
        t.text
            .chars()
            .next()
            .is_some_and(|ch| ch.is_alphabetic() || ch == '_')
            && t.text != "self"
    };
    match tokens.get(at) {
        Some(t) if t.text == "{" => {
            let mut out = Vec::new();
            let mut depth = 0;
            let mut item_start = true;
            for t in &tokens[at..] {
                match t.text.as_str() {
                    "{" => {
                        depth += 1;
                        if depth > 1 {
                            item_start = false;
                        }
                    }
                    "}" => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    "," if depth == 1 => item_start = true,
                    _ => {
                        if depth == 1 && item_start && is_name(t) {
                            out.push((t.text.clone(), t.line));
                        }
                        item_start = false;
                    }
                }
            }
            out
        }
        Some(t) if is_name(t) => vec![(t.text.clone(), t.line)],
        _ => Vec::new(),
    }
}

/// Index just past the item starting at `at`: up to its `;`, or its closing brace; a struct
/// field, enum variant or expression also ends at a `,` (or before the brace that closes what
/// holds it).
fn skip_item(tokens: &[Token], at: usize) -> usize {
    const ITEMS: &[&str] = &[
        "fn",
        "mod",
        "use",
        "impl",
        "struct",
        "enum",
        "trait",
        "type",
        "const",
        "static",
        "async",
        "unsafe",
        "extern",
        "macro_rules",
    ];
    let first = tokens[at..]
        .iter()
        .map(|t| t.text.as_str())
        .find(|t| !matches!(*t, "pub" | "(" | ")" | "crate" | "super" | "in" | "self"))
        .unwrap_or("");
    let item = ITEMS.contains(&first);
    let mut depth = 0;
    let mut i = at;
    while i < tokens.len() {
        match tokens[i].text.as_str() {
            "{" | "(" | "[" => depth += 1,
            "}" | ")" | "]" if depth == 0 => return i,
            close @ ("}" | ")" | "]") => {
                depth -= 1;
                if depth == 0 && close == "}" {
                    return i + 1;
                }
            }
            ";" if depth == 0 => return i + 1,
            "," if depth == 0 && !item => return i + 1,
            _ => {}
        }
        i += 1;
    }
    i
}

/// `tokens` without the code under `#[cfg(test)]`, and the names of the `#[cfg(test)] mod name;`
/// files they declare.
fn without_test_code(tokens: Vec<Token>) -> (Vec<Token>, Vec<String>) {
    let text = |i: usize| tokens.get(i).map_or("", |t: &Token| t.text.as_str());
    let mut kept = Vec::with_capacity(tokens.len());
    let mut test_files = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if text(i) == "#" && text(i + 1) == "[" {
            let end = skip_group(&tokens, i + 1);
            let attribute: Vec<&str> = tokens[i + 2..end - 1]
                .iter()
                .map(|t| t.text.as_str())
                .collect();
            if attribute == ["cfg", "(", "test", ")"] {
                // Skip any further attributes, then the item.
                let mut j = end;
                while text(j) == "#" && text(j + 1) == "[" {
                    j = skip_group(&tokens, j + 1);
                }
                let mut k = j;
                if text(k) == "pub" {
                    k += 1;
                    if text(k) == "(" {
                        k = skip_group(&tokens, k);
                    }
                }
                if text(k) == "mod" && text(k + 2) == ";" {
                    test_files.push(text(k + 1).to_owned());
                }
                i = skip_item(&tokens, j);
                continue;
            }
            kept.extend_from_slice(&tokens[i..end]);
            i = end;
            continue;
        }
        kept.push(tokens[i].clone());
        i += 1;
    }
    (kept, test_files)
}

/// What one file imports from other top-level modules, given its module path (`["hub",
/// "connection"]`; empty for a crate root) and whether it is the binary's root (where the library
/// is `herald::`). Also returns the names of `#[cfg(test)] mod name;` files it declares.
fn scan(source: &str, module: &[String], binary_root: bool) -> (Vec<(String, usize)>, Vec<String>) {
    let (tokens, test_files) = without_test_code(tokens(&strip(source)));
    let mut found = Vec::new();
    // Inline modules: (name, brace depth inside them).
    let mut inline: Vec<(String, i64)> = Vec::new();
    let mut depth: i64 = 0;
    let mut i = 0;
    let text = |i: usize| tokens.get(i).map_or("", |t: &Token| t.text.as_str());
    while i < tokens.len() {
        match text(i) {
            "{" => depth += 1,
            "}" => {
                depth -= 1;
                while inline.last().is_some_and(|(_, d)| *d > depth) {
                    inline.pop();
                }
            }
            "mod" if text(i + 2) == "{" => {
                inline.push((text(i + 1).to_owned(), depth + 1));
            }
            "crate" | "herald" | "super"
                if text(i + 1) == "::" && (i == 0 || text(i - 1) != "::") =>
            {
                let head = text(i);
                if head == "herald" && !binary_root {
                    i += 1;
                    continue;
                }
                let mut at = i;
                let mut climb = 0;
                if head == "super" {
                    while text(at) == "super" && text(at + 1) == "::" {
                        climb += 1;
                        at += 2;
                    }
                } else {
                    at += 2;
                }
                let depth_here = module.len() + inline.len();
                let at_root = if head == "super" {
                    climb >= depth_here
                } else {
                    (head == "crate" && !binary_root) || head == "herald"
                };
                if at_root {
                    found.extend(targets(&tokens, at));
                }
                i = at;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    (found, test_files)
}

/// Index just past the bracketed group opening at `at` (`[...]` or `(...)`).
fn skip_group(tokens: &[Token], at: usize) -> usize {
    let open = tokens[at].text.clone();
    let close = if open == "[" { "]" } else { ")" };
    let mut depth = 0;
    let mut i = at;
    while i < tokens.len() {
        if tokens[i].text == open {
            depth += 1;
        } else if tokens[i].text == close {
            depth -= 1;
            if depth == 0 {
                return i + 1;
            }
        }
        i += 1;
    }
    i
}

/// Every cross-module import in `server/src`, sorted by file and line.
fn edges() -> Vec<Edge> {
    let src = repo_root().join("server/src");
    let files = rust_files(&src);
    let modules: BTreeSet<String> = files
        .iter()
        .map(|f| top_module(f.strip_prefix(&src).expect("under server/src")))
        .collect();
    let mut excluded: BTreeSet<PathBuf> = BTreeSet::new();
    let mut out = Vec::new();
    for file in &files {
        if excluded.contains(file) {
            continue;
        }
        let rel = file.strip_prefix(&src).expect("under server/src");
        let module = module_path(rel);
        let from = top_module(rel);
        let source = std::fs::read_to_string(file).expect("readable source");
        let (found, test_files) = scan(&source, &module, from == "main");
        // `#[cfg(test)] mod name;` in this file: name.rs (or name/mod.rs) next to its children.
        let children = if rel
            .file_name()
            .is_some_and(|n| n == "mod.rs" || n == "lib.rs")
        {
            file.parent().expect("parent").to_path_buf()
        } else {
            file.with_extension("")
        };
        for name in test_files {
            excluded.insert(children.join(format!("{name}.rs")));
            excluded.insert(children.join(&name).join("mod.rs"));
        }
        for (to, line) in found {
            if to != from && modules.contains(&to) {
                out.push(Edge {
                    from: from.clone(),
                    to,
                    file: relative(file),
                    line,
                });
            }
        }
    }
    out.retain(|e| !excluded.contains(&repo_root().join(&e.file)));
    out.sort_by(|a, b| (&a.file, a.line, &a.to).cmp(&(&b.file, b.line, &b.to)));
    out
}

/// `hub/connection.rs` -> `["hub", "connection"]`; `hub/mod.rs` -> `["hub"]`; `lib.rs` -> `[]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        return Vec::new();
    }
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

fn top_module(rel: &Path) -> String {
    rel.iter()
        .next()
        .expect("non-empty path")
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_owned()
}

/// The source line an edge points at, trimmed.
fn source_line(edge: &Edge) -> String {
    std::fs::read_to_string(repo_root().join(&edge.file))
        .ok()
        .and_then(|s| s.lines().nth(edge.line - 1).map(|l| l.trim().to_owned()))
        .unwrap_or_default()
}

fn site(edge: &Edge) -> String {
    format!("{}:{}: {}", edge.file, edge.line, source_line(edge))
}

// ---------------------------------------------------------------------------------------------
// Cycles

type Graph = BTreeMap<String, BTreeSet<String>>;

fn graph(edges: &[Edge]) -> Graph {
    let mut graph = Graph::new();
    for e in edges {
        graph
            .entry(e.from.clone())
            .or_default()
            .insert(e.to.clone());
        graph.entry(e.to.clone()).or_default();
    }
    graph
}

fn reachable(graph: &Graph, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_owned()];
    while let Some(node) = stack.pop() {
        for next in graph.get(&node).into_iter().flatten() {
            if seen.insert(next.clone()) {
                stack.push(next.clone());
            }
        }
    }
    seen
}

/// The strongly connected components with more than one module (every module in one can reach
/// every other: they are tangled in at least one cycle), each sorted, in name order.
fn tangles(graph: &Graph) -> Vec<Vec<String>> {
    let reach: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|n| (n, reachable(graph, n))).collect();
    let mut placed = BTreeSet::new();
    let mut out = Vec::new();
    for node in graph.keys() {
        if placed.contains(node) {
            continue;
        }
        let component: Vec<String> = graph
            .keys()
            .filter(|other| {
                *other == node || (reach[node].contains(*other) && reach[*other].contains(node))
            })
            .cloned()
            .collect();
        placed.extend(component.iter().cloned());
        if component.len() > 1 {
            out.push(component);
        }
    }
    out
}

/// The shortest cycle through `start` (`[start, ..., start]`), if there is one.
fn shortest_cycle(graph: &Graph, start: &str) -> Option<Vec<String>> {
    let mut previous: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = VecDeque::from([start.to_owned()]);
    while let Some(node) = queue.pop_front() {
        for next in graph.get(&node).into_iter().flatten() {
            if next == start {
                // Back to the start: walk the parents from `node` up to it.
                let mut path = vec![start.to_owned(), node.clone()];
                let mut at = node.clone();
                while let Some(p) = previous.get(&at) {
                    path.push(p.clone());
                    at = p.clone();
                }
                if at != start {
                    path.push(start.to_owned());
                }
                path.reverse();
                return Some(path);
            }
            if next != start && !previous.contains_key(next) {
                previous.insert(next.clone(), node.clone());
                queue.push_back(next.clone());
            }
        }
    }
    None
}

/// One cycle per tangle member (the shortest through it), without repeats of the same cycle.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    let mut seen: BTreeSet<Vec<String>> = BTreeSet::new();
    let mut out = Vec::new();
    for component in tangles(graph) {
        for node in &component {
            if let Some(cycle) = shortest_cycle(graph, node) {
                // The same cycle from another start: compare its set of edges, rotated.
                let mut key: Vec<String> = cycle[..cycle.len() - 1].to_vec();
                let min = key
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, n)| *n)
                    .map_or(0, |m| m.0);
                key.rotate_left(min);
                if seen.insert(key) {
                    out.push(cycle);
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The checks

#[test]
fn server_modules_import_each_other_without_a_cycle() {
    let edges = edges();
    let graph = graph(&edges);
    let tangles = tangles(&graph);
    if tangles.is_empty() {
        return;
    }
    let mut report =
        String::from("import cycles between server/src modules (design invariant 10):\n");
    for component in &tangles {
        let _ = writeln!(
            report,
            "\nmodules tangled together: {}",
            component.join(", ")
        );
        for cycle in cycles(&graph).iter().filter(|c| component.contains(&c[0])) {
            let _ = writeln!(report, "  cycle: {}", cycle.join(" -> "));
        }
        let _ = writeln!(report, "  imports inside the tangle:");
        for edge in edges
            .iter()
            .filter(|e| component.contains(&e.from) && component.contains(&e.to))
        {
            let _ = writeln!(report, "    {} -> {}  {}", edge.from, edge.to, site(edge));
        }
    }
    panic!("{report}");
}

#[test]
fn server_modules_import_only_their_level_or_below() {
    let levels: BTreeMap<&str, u32> = LEVELS.iter().copied().collect();
    let edges = edges();
    let importers: BTreeSet<&str> = edges.iter().map(|e| e.from.as_str()).collect();
    let mut report = Vec::new();
    for edge in &edges {
        let level = |m: &str| levels.get(m).copied();
        let problem = match (level(&edge.from), level(&edge.to)) {
            (None, _) => Some(format!("{} is not in the layer table", edge.from)),
            (Some(_), None) if !importers.contains(edge.to.as_str()) => None,
            (Some(_), None) => Some(format!(
                "{} is not in the layer table (it imports other modules, so it is no leaf)",
                edge.to
            )),
            (Some(from), Some(to)) if to > from => Some(format!(
                "{} (level {from}) imports {} (level {to}), above it",
                edge.from, edge.to
            )),
            _ => None,
        };
        if let Some(problem) = problem {
            report.push(format!("  {problem}\n    {}", site(edge)));
        }
    }
    assert!(
        report.is_empty(),
        "imports against the layer order (design invariant 10: protocol, auth, clock, config -> \
         tenants -> outbox -> hub -> webhooks -> cluster -> node -> transport, api, admin -> serve, \
         startup -> cli), {} of them:\n{}",
        report.len(),
        report.join("\n")
    );
}

/// What only the socket writer below the hub may touch: sockets, vectored writes and WebSocket
/// frame headers.
const SOCKET_WORDS: &[&str] = &[
    "TcpStream",
    "socket2",
    "SockRef",
    "IoSlice",
    "send_vectored",
    "sendmsg",
    "server_header",
    "server_header_len",
    "MAX_SERVER_HEADER",
];

#[test]
fn the_hub_holds_no_socket_and_writes_no_frame_headers() {
    let mut report = Vec::new();
    for file in rust_files(&repo_root().join("server/src/hub")) {
        let source = std::fs::read_to_string(&file).expect("readable source");
        let (tokens, _) = without_test_code(tokens(&strip(&source)));
        for token in tokens {
            if SOCKET_WORDS.contains(&token.text.as_str()) {
                report.push(format!(
                    "  {}:{}: {}",
                    relative(&file),
                    token.line,
                    token.text
                ));
            }
        }
    }
    report.dedup();
    assert!(
        report.is_empty(),
        "the hub names sockets or frame headers outside its tests (the socket writer belongs \
         below it, in the outbox):\n{}",
        report.join("\n")
    );
}

#[test]
fn no_source_file_is_over_a_thousand_lines() {
    let root = repo_root();
    let mut report = Vec::new();
    for dir in ["server/src", "server/tests", "dashboard/src"] {
        for file in rust_files(&root.join(dir)) {
            let lines = std::fs::read_to_string(&file)
                .expect("readable source")
                .lines()
                .count();
            if lines > MAX_LINES {
                report.push(format!("  {}: {lines} lines", relative(&file)));
            }
        }
    }
    assert!(
        report.is_empty(),
        "source files over {MAX_LINES} lines (split them by what they do):\n{}",
        report.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The checker's own tests

fn tiny_graph(edges: &[(&str, &str)]) -> Graph {
    let edges: Vec<Edge> = edges
        .iter()
        .map(|(from, to)| Edge {
            from: (*from).into(),
            to: (*to).into(),
            file: String::new(),
            line: 1,
        })
        .collect();
    graph(&edges)
}

#[test]
fn the_cycle_detector_finds_each_tangle_and_its_cycles() {
    let graph = tiny_graph(&[
        ("a", "b"),
        ("b", "c"),
        ("c", "a"),
        ("c", "d"),
        ("d", "e"),
        ("e", "d"),
        ("e", "f"),
        ("g", "a"),
    ]);
    assert_eq!(tangles(&graph), vec![vec!["a", "b", "c"], vec!["d", "e"]]);
    assert_eq!(
        cycles(&graph),
        vec![vec!["a", "b", "c", "a"], vec!["d", "e", "d"]]
    );
    assert_eq!(shortest_cycle(&graph, "g"), None);
}

#[test]
fn the_cycle_detector_accepts_a_layered_graph() {
    let graph = tiny_graph(&[
        ("cli", "startup"),
        ("startup", "node"),
        ("startup", "api"),
        ("api", "node"),
        ("node", "hub"),
        ("hub", "protocol"),
        ("api", "protocol"),
    ]);
    assert!(tangles(&graph).is_empty());
    assert!(cycles(&graph).is_empty());
}

#[test]
fn the_scanner_sees_imports_and_skips_comments_strings_and_test_code() {
    let source = r##"
//! Docs naming [`crate::node::Node`] are no import.
use crate::hub::Hub;
use crate::{api, transport::{ws, session}, self};
use super::super::cli;
/* crate::admin in a block comment */
fn f() {
    let s = "crate::startup::x";
    let r = r#"crate::serve"#;
    let c = '{';
    crate::clock::Clock::system();
    super::sibling();
}
#[cfg(test)]
mod tests {
    use crate::node::Node;
}
#[cfg(test)]
mod more;
"##;
    let module = vec!["webhooks".to_owned(), "worker".to_owned()];
    let (found, test_files) = scan(source, &module, false);
    let names: Vec<(&str, usize)> = found.iter().map(|(n, l)| (n.as_str(), *l)).collect();
    assert_eq!(
        names,
        [
            ("hub", 3),
            ("api", 4),
            ("transport", 4),
            ("cli", 5),
            ("clock", 11)
        ]
    );
    assert_eq!(test_files, ["more"]);
    // In the binary's root the library is `herald::`.
    let (found, _) = scan(
        "use herald::cli::Cli;\nfn main() { herald::telemetry::init(); }",
        &[],
        true,
    );
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["cli", "telemetry"]);
}
