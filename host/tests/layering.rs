//! Keeps the claim of `host/src/lib.rs` true: data flows one way, so a module imports only the
//! modules listed after it in the crate doc's "Layout" list, and the files of one module never
//! import each other in a circle.
//!
//! The check reads the sources: every `crate::…`, `super::…` and `self::…` path (in `use`
//! trees or inline), resolved to the module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path below the crate root, e.g. `["backplane", "redis", "broker"]`.
type ModulePath = Vec<String>;

/// One source file: its module and its text.
struct Source {
    module: ModulePath,
    /// Whether it is a `mod.rs` (its module is its directory).
    is_mod_file: bool,
    text: String,
}

fn sources(root: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    collect(root, root, &mut out);
    out
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<Source>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            collect(root, &path, out);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let relative = path.strip_prefix(root).expect("under the root");
        let mut module: ModulePath = relative
            .with_extension("")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let is_mod_file = module.last().is_some_and(|m| m == "mod");
        if is_mod_file || module == ["lib"] || module == ["main"] {
            module.pop();
        }
        let text = std::fs::read_to_string(&path).expect("readable source");
        out.push(Source {
            module,
            is_mod_file,
            text,
        });
    }
}

/// The text without comments, string and character literals (so doc links and messages are
/// not read as imports).
fn code_only(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            i += rest.find("*/").map_or(rest.len(), |e| e + 2);
        } else if rest.starts_with("r#\"") || rest.starts_with("r\"") {
            let hashes = rest[1..].chars().take_while(|c| *c == '#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            let start = 2 + hashes;
            i += rest[start..]
                .find(&close)
                .map_or(rest.len(), |e| start + e + close.len());
            out.push_str("\"\"");
        } else if rest.starts_with('"') {
            let mut j = 1;
            while j < rest.len() {
                match rest.as_bytes()[j] {
                    b'\\' => j += 2,
                    b'"' => break,
                    _ => j += 1,
                }
            }
            i += (j + 1).min(rest.len());
            out.push_str("\"\"");
        } else if rest.starts_with('\'') && char_literal_len(rest).is_some() {
            i += char_literal_len(rest).unwrap_or(1);
        } else {
            let c = rest.chars().next().expect("not empty");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The length of a character literal at the start of `text` (not a lifetime).
fn char_literal_len(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    if bytes.get(1) == Some(&b'\\') {
        return text[2..].find('\'').map(|e| e + 3);
    }
    let c = text[1..].chars().next()?;
    let end = 1 + c.len_utf8();
    (bytes.get(end) == Some(&b'\'')).then_some(end + 1)
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Other,
}

fn tokens(code: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
            continue;
        }
        if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push(Token::PathSep);
            i += 2;
            continue;
        }
        match c {
            '{' => out.push(Token::Open),
            '}' => out.push(Token::Close),
            ',' => out.push(Token::Comma),
            c if c.is_whitespace() => {}
            _ => out.push(Token::Other),
        }
        i += 1;
    }
    out
}

/// Parses the path (or `use` tree) starting after `anchor::` at `tokens[i]`; pushes every
/// full path it names onto `out`, each prefixed by `prefix`.
fn parse_tree(
    tokens: &[Token],
    mut i: usize,
    prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    let mut path = prefix;
    loop {
        match tokens.get(i) {
            Some(Token::Ident(name)) => {
                path.push(name.clone());
                i += 1;
                if tokens.get(i) == Some(&Token::PathSep) {
                    i += 1;
                    continue;
                }
                out.push(path);
                return i;
            }
            Some(Token::Open) => {
                i += 1;
                loop {
                    match tokens.get(i) {
                        Some(Token::Close) => return i + 1,
                        Some(Token::Comma) => i += 1,
                        None => return i,
                        _ => {
                            let before = i;
                            i = parse_tree(tokens, i, path.clone(), out);
                            if i == before {
                                i += 1;
                            }
                        }
                    }
                }
            }
            _ => {
                // `*` or the end: the path so far.
                out.push(path);
                return i + 1;
            }
        }
    }
}

/// Every module path a source refers to (resolved, still possibly ending in items).
fn references(source: &Source) -> Vec<ModulePath> {
    let tokens = tokens(&code_only(&source.text));
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        // A path starting at `crate`, `super` or `self` (not preceded by `::`).
        let Token::Ident(anchor) = &tokens[i] else {
            i += 1;
            continue;
        };
        let preceded = i > 0 && tokens[i - 1] == Token::PathSep;
        if preceded || !matches!(anchor.as_str(), "crate" | "super" | "self") {
            i += 1;
            continue;
        }
        let mut base: ModulePath = match anchor.as_str() {
            "crate" => Vec::new(),
            _ => source.module.clone(),
        };
        let mut j = i;
        let mut ok = true;
        if anchor == "super" {
            base.pop();
        }
        j += 1;
        // More `super::` segments.
        while tokens.get(j) == Some(&Token::PathSep) {
            if tokens.get(j + 1) == Some(&Token::Ident("super".into())) {
                if base.pop().is_none() {
                    ok = false;
                }
                j += 2;
            } else {
                break;
            }
        }
        if tokens.get(j) != Some(&Token::PathSep) {
            i += 1;
            continue;
        }
        let mut paths = Vec::new();
        let next = parse_tree(&tokens, j + 1, base, &mut paths);
        if ok {
            out.extend(paths);
        }
        i = next.max(i + 1);
    }
    out
}

/// The longest prefix of `path` that is a known module.
fn module_of(path: &[String], modules: &BTreeSet<ModulePath>) -> ModulePath {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|prefix| modules.contains(prefix))
        .unwrap_or_default()
}

/// The "Layout" list of the crate doc: top-level modules, top first.
fn documented_order(lib: &str) -> Vec<String> {
    let mut order = Vec::new();
    let mut in_layout = false;
    for line in lib.lines() {
        let Some(doc) = line.strip_prefix("//!") else {
            continue;
        };
        let doc = doc.trim();
        if doc.starts_with("## ") {
            in_layout = doc == "## Layout";
            continue;
        }
        if !in_layout {
            continue;
        }
        // `1. [`config`]: ...`
        let Some((number, rest)) = doc.split_once(". [`") else {
            continue;
        };
        if number.chars().all(|c| c.is_ascii_digit())
            && let Some((name, _)) = rest.split_once("`]")
        {
            order.push(name.to_owned());
        }
    }
    order
}

/// The top-level modules `lib.rs` declares.
fn declared_modules(lib: &str) -> BTreeSet<String> {
    lib.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            l.strip_prefix("mod ")?.strip_suffix(';').map(str::to_owned)
        })
        .collect()
}

/// The violations of the layering in `sources`, given the documented order (top first).
fn violations(sources: &[Source], order: &[String]) -> Vec<String> {
    let rank = |module: &str| order.iter().position(|m| m == module);
    let modules: BTreeSet<ModulePath> = sources.iter().map(|s| s.module.clone()).collect();
    let mut problems = BTreeSet::new();
    // Edges between the children of one module, per module.
    let mut sibling_edges: BTreeMap<ModulePath, BTreeSet<(String, String)>> = BTreeMap::new();
    for source in sources {
        if source.module.is_empty() {
            continue; // the crate root (lib.rs, main.rs) wires everything
        }
        for reference in references(source) {
            let target = module_of(&reference, &modules);
            if target.is_empty() || target == source.module {
                continue;
            }
            let (from, to) = (&source.module[0], &target[0]);
            if from != to {
                match (rank(from), rank(to)) {
                    (Some(a), Some(b)) if a > b => {
                        problems.insert(format!(
                            "{}: imports {} (`{}`), which is above it",
                            source.module.join("::"),
                            target.join("::"),
                            reference.join("::")
                        ));
                    }
                    (None, _) | (_, None) => {
                        problems.insert(format!(
                            "{} or {} is missing from the Layout list of lib.rs",
                            from, to
                        ));
                    }
                    _ => {}
                }
                continue;
            }
            // Same top module: an edge between two children of their deepest common module,
            // unless one contains the other (a module and its own parts).
            let common = source
                .module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if common < source.module.len() && common < target.len() {
                sibling_edges
                    .entry(source.module[..common].to_vec())
                    .or_default()
                    .insert((source.module[common].clone(), target[common].clone()));
            }
        }
        let _ = source.is_mod_file;
    }
    for (parent, edges) in sibling_edges {
        if let Some(cycle) = find_cycle(&edges) {
            problems.insert(format!(
                "the parts of {} import each other in a circle: {}",
                parent.join("::"),
                cycle.join(" -> ")
            ));
        }
    }
    problems.into_iter().collect()
}

/// A cycle in a directed graph, as the nodes along it (first repeated at the end).
fn find_cycle(edges: &BTreeSet<(String, String)>) -> Option<Vec<String>> {
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges {
        graph.entry(a).or_default().push(b);
    }
    fn visit<'a>(
        node: &'a str,
        graph: &BTreeMap<&'a str, Vec<&'a str>>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| *n == node) {
            let mut cycle: Vec<String> = stack[at..].iter().map(|s| (*s).to_owned()).collect();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node);
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, &graph, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn modules_import_only_modules_below_them() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
    let order = documented_order(&lib);
    assert!(
        order.len() >= 10,
        "the Layout list of lib.rs was not found: {order:?}"
    );
    let declared = declared_modules(&lib);
    let listed: BTreeSet<String> = order.iter().cloned().collect();
    assert_eq!(
        declared, listed,
        "every module lib.rs declares is in its Layout list, and only those"
    );
    let problems = violations(&sources(&src()), &order);
    assert!(
        problems.is_empty(),
        "layering violations:\n{}",
        problems.join("\n")
    );
}

// The checker itself, on made-up sources: it must see what it is there to see.

fn source(module: &str, text: &str) -> Source {
    Source {
        module: module.split("::").map(str::to_owned).collect(),
        is_mod_file: false,
        text: text.to_owned(),
    }
}

fn order() -> Vec<String> {
    ["server", "session", "registry", "types"]
        .map(String::from)
        .to_vec()
}

#[test]
fn the_checker_sees_upward_imports_in_every_form() {
    let ok = [
        source("server", "use crate::session::serve;"),
        source(
            "session",
            "use crate::{registry::Registry, types::{Id, Name}};",
        ),
        source("registry", "fn f() { crate::types::Id::new(); }"),
        source(
            "types",
            "// crate::server::x in a comment\nconst S: &str = \"crate::server\";",
        ),
    ];
    assert!(violations(&ok, &order()).is_empty());
    for bad in [
        "use crate::server::AppState;",
        "use crate::{types::Id, server::AppState};",
        "fn f() { let _ = crate::session::serve; }",
    ] {
        let sources = [
            source("registry", bad),
            source("server", ""),
            source("session", ""),
        ];
        let problems = violations(&sources, &order());
        assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
        assert!(problems[0].starts_with("registry: imports"), "{problems:?}");
    }
}

#[test]
fn the_checker_sees_circles_between_the_parts_of_a_module() {
    let circle = [
        source("session", ""),
        source("session::a", "use super::b::B;"),
        source("session::b", "use crate::session::c::C;"),
        source("session::c", "use super::{a::A};"),
    ];
    let problems = violations(&circle, &order());
    assert_eq!(
        problems,
        ["the parts of session import each other in a circle: a -> b -> c -> a"]
    );
    let tree = [
        source("session", "use self::a::A;"),
        source("session::a", "use super::b::B; use super::Shared;"),
        source("session::b", ""),
    ];
    assert!(
        violations(&tree, &order()).is_empty(),
        "parents and children may use each other"
    );
}

#[test]
fn the_checker_reads_the_documented_order() {
    let lib = "//! # x\n//! ## Layout\n//! text\n//! 1. [`config`]: flags.\n//! 2. [`types`]: words.\n//! ## Other\n//! 3. [`not`]: this.\npub mod config;\nmod types;\n";
    assert_eq!(documented_order(lib), ["config", "types"]);
    assert_eq!(
        declared_modules(lib),
        BTreeSet::from(["config".to_owned(), "types".to_owned()])
    );
}
