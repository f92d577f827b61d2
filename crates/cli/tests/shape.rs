//! The shape rules of the source tree (docs/architecture.md, "Rules of shape"), checked on every crate
//! under `crates/`, including the ones added later:
//!
//! - no function longer than 80 lines in a shell crate (server, client, cli, relay, web and any crate not
//!   named as a core), 100 in a core crate (proto, store, queue, auth); test code does not count;
//! - no import circle between the modules of a crate (a parent using its own submodules is containment,
//!   not an import; re-exports are followed to the module that defines the name);
//! - each EHLO keyword is spelled once in the non-test source of the workspace.
//!
//! The checker is a small Rust lexer (strings, raw strings, chars, lifetimes, comments) and brace matcher;
//! its own unit tests below show it catches what it is meant to catch.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Crates whose functions may be up to [`CORE_LIMIT`] lines: sans-I/O and storage cores, where a long
/// state-machine function can be the clearest form.
const CORE_CRATES: &[&str] = &["proto", "store", "queue", "auth"];
const CORE_LIMIT: usize = 100;
/// Shells (I/O around the cores) stay readable: every other crate.
const SHELL_LIMIT: usize = 80;
/// The keywords a server puts in its EHLO reply (RFC 5321 §4.1.1.1 and the extensions' RFCs) that name
/// nothing else. SIZE, AUTH, STARTTLS and HELP are also verbs, parameters or plain words (a `SIZE` column,
/// `tls = "starttls"`), so a spelling count would flag honest uses; they are defined in `extension.rs`
/// beside the others all the same.
const EHLO_KEYWORDS: &[&str] =
    &["PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING", "BINARYMIME", "DSN", "REQUIRETLS"];

// ---------------------------------------------------------------------------------------------------
// Lexing: the source with strings, chars and comments blanked out (same length, same lines), plus the
// string literals found.

struct Lexed {
    /// The code with every comment, string and char literal replaced by spaces (newlines kept).
    code: Vec<u8>,
    /// (byte offset, content) of every string literal.
    strings: Vec<(usize, String)>,
}

fn lex(src: &str) -> Lexed {
    let b = src.as_bytes();
    let mut code = b.to_vec();
    let mut strings = Vec::new();
    let blank = |code: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut code[from..to.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            let end = b[i..].iter().position(|&x| x == b'\n').map_or(b.len(), |p| i + p);
            blank(&mut code, i, end);
            i = end;
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let (mut depth, mut j) = (1, i + 2);
            while j < b.len() && depth > 0 {
                if b[j] == b'/' && b.get(j + 1) == Some(&b'*') {
                    depth += 1;
                    j += 2;
                } else if b[j] == b'*' && b.get(j + 1) == Some(&b'/') {
                    depth -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            blank(&mut code, i, j);
            i = j;
        } else if let Some((start, hashes)) = raw_string_start(b, i) {
            let close: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
            let end = find(b, start, &close).unwrap_or(b.len());
            strings.push((i, String::from_utf8_lossy(&b[start..end]).into_owned()));
            blank(&mut code, i, end + close.len());
            i = end + close.len();
        } else if c == b'"' && !is_ident_byte(b, i.wrapping_sub(1), b'b') {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            strings.push((i, String::from_utf8_lossy(&b[i + 1..j.min(b.len())]).into_owned()));
            blank(&mut code, i, j + 1);
            i = j + 1;
        } else if c == b'"' {
            // b"..." byte string: blank it, do not record it.
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            blank(&mut code, i, j + 1);
            i = j + 1;
        } else if c == b'\'' {
            i = skip_char_or_lifetime(b, &mut code, i);
        } else {
            i += 1;
        }
    }
    Lexed { code, strings }
}

/// `r"`, `r#"`, `br"`... at `i` (not inside an identifier): the content's start and the number of `#`.
fn raw_string_start(b: &[u8], i: usize) -> Option<(usize, usize)> {
    let mut j = i;
    if b.get(j) == Some(&b'b') {
        j += 1;
    }
    if b.get(j) != Some(&b'r') || (i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) {
        return None;
    }
    j += 1;
    let mut hashes = 0;
    while b.get(j) == Some(&b'#') {
        hashes += 1;
        j += 1;
    }
    (b.get(j) == Some(&b'"')).then_some((j + 1, hashes))
}

/// True when `b[i]` is `want` and is a one-letter prefix (not the end of a longer identifier).
fn is_ident_byte(b: &[u8], i: usize, want: u8) -> bool {
    i < b.len() && b[i] == want && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
}

fn skip_char_or_lifetime(b: &[u8], code: &mut [u8], i: usize) -> usize {
    // A char literal: 'x', '\n', '\'', '\u{1F600}'; otherwise a lifetime or label ('a).
    let end = if b.get(i + 1) == Some(&b'\\') {
        b[i + 2..].iter().position(|&x| x == b'\'').map(|p| i + 2 + p)
    } else {
        let ch_len = std::str::from_utf8(&b[i + 1..(i + 5).min(b.len())])
            .ok()
            .or_else(|| std::str::from_utf8(&b[i + 1..(i + 4).min(b.len())]).ok())
            .or_else(|| std::str::from_utf8(&b[i + 1..(i + 3).min(b.len())]).ok())
            .or_else(|| std::str::from_utf8(&b[i + 1..(i + 2).min(b.len())]).ok())
            .and_then(|s| s.chars().next())
            .map_or(1, char::len_utf8);
        (b.get(i + 1 + ch_len) == Some(&b'\'')).then_some(i + 1 + ch_len)
    };
    match end {
        Some(e) => {
            for c in &mut code[i..=e] {
                *c = b' ';
            }
            e + 1
        }
        None => i + 1,
    }
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|p| from + p)
}

// ---------------------------------------------------------------------------------------------------
// Test code: `#[cfg(test)]` items (usually `mod tests { .. }`) are left out of every rule.

/// Byte ranges of items under `#[cfg(test)]`.
fn test_ranges(code: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = find(code, from, b"#[cfg(test)]") {
        from = at + 1;
        // The item ends at its matching `}` (a block item) or at `;` (e.g. `mod tests;`, `use ..;`).
        let mut j = at + 12;
        while j < code.len() && code[j] != b'{' && code[j] != b';' {
            j += 1;
        }
        if j < code.len() && code[j] == b'{' {
            let end = matching_brace(code, j).unwrap_or(code.len());
            out.push((at, end));
        } else {
            out.push((at, j));
        }
    }
    out
}

fn matching_brace(code: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (k, &c) in code.iter().enumerate().skip(open) {
        match c {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(k);
                }
            }
            _ => {}
        }
    }
    None
}

fn in_ranges(ranges: &[(usize, usize)], at: usize) -> bool {
    ranges.iter().any(|&(a, b)| at >= a && at <= b)
}

// ---------------------------------------------------------------------------------------------------
// Rule 1: function length.

/// (name, first line, number of lines) of every function with a body, outside test code.
fn functions(src: &str) -> Vec<(String, usize, usize)> {
    let lexed = lex(src);
    let code = &lexed.code;
    let tests = test_ranges(code);
    let line_of = |at: usize| code[..at].iter().filter(|&&c| c == b'\n').count() + 1;
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(at) = find(code, i, b"fn ") {
        i = at + 3;
        let before_ok = at == 0 || !(code[at - 1].is_ascii_alphanumeric() || code[at - 1] == b'_');
        if !before_ok || in_ranges(&tests, at) {
            continue;
        }
        let name: String = code[at + 3..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
            .map(|&c| c as char)
            .collect();
        if name.is_empty() {
            continue; // `fn(u8) -> u8`: a function pointer type
        }
        // The body is the first `{` at bracket depth 0 before any `;` (a declaration without a body).
        let (mut j, mut depth) = (at, 0i32);
        let open = loop {
            match code.get(j) {
                None => break None,
                Some(b'(' | b'[' | b'<') => depth += 1,
                Some(b')' | b']') => depth -= 1,
                Some(b'>')
                    if code.get(j.wrapping_sub(1)) != Some(&b'-') && code.get(j.wrapping_sub(1)) != Some(&b'=') =>
                {
                    depth -= 1
                }
                Some(b';') if depth <= 0 => break None,
                Some(b'{') if depth <= 0 => break Some(j),
                _ => {}
            }
            j += 1;
        };
        if let Some(open) = open {
            if let Some(close) = matching_brace(code, open) {
                out.push((name, line_of(at), line_of(close) - line_of(at) + 1));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// Rule 2: import circles.

/// The module path of a source file under `src/`: `lib.rs`/`main.rs` -> [], `a.rs` -> [a],
/// `a/mod.rs` -> [a], `a/b.rs` -> [a, b]. Binary targets under `src/bin/` are their own roots.
fn module_path(src_dir: &Path, file: &Path) -> Option<Vec<String>> {
    let rel = file.strip_prefix(src_dir).ok()?;
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.first().is_some_and(|p| p == "bin") {
        return None;
    }
    let last = parts.pop()?;
    match last.as_str() {
        "lib.rs" | "main.rs" if parts.is_empty() => {}
        "mod.rs" => {}
        other => parts.push(other.strip_suffix(".rs")?.to_string()),
    }
    Some(parts)
}

/// Every path written in `code` that starts with `crate::`, `super::` or `self::` (and, in the crate
/// root, `<module>::`), as absolute segment lists.
fn referenced_paths(code: &[u8], here: &[String], root_modules: &BTreeSet<String>) -> Vec<Vec<String>> {
    let text = String::from_utf8_lossy(code);
    let mut out = Vec::new();
    // Expand `use a::{b, c::d}` groups into separate paths first.
    for stmt in use_statements(&text) {
        for p in expand_use(&stmt) {
            if let Some(abs) = absolute(&p, here, root_modules) {
                out.push(abs);
            }
        }
    }
    // Paths in expressions and types: `crate::x::y`, `super::x`.
    let tokens: Vec<&str> = text.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).collect();
    for t in tokens {
        if t.starts_with("crate::") || t.starts_with("super::") || t.starts_with("self::") {
            let segs: Vec<String> = t.split("::").filter(|s| !s.is_empty()).map(str::to_string).collect();
            if let Some(abs) = absolute(&segs, here, root_modules) {
                out.push(abs);
            }
        }
    }
    out
}

/// The text of every `use ...;` statement (also `pub use`, `pub(crate) use`).
fn use_statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(at) = find(bytes, from, b"use ") {
        from = at + 4;
        if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
            continue;
        }
        if let Some(end) = text[at..].find(';') {
            out.push(text[at + 4..at + end].split_whitespace().collect::<Vec<_>>().join(""));
        }
    }
    out
}

/// `a::{b,c::{d,e}}` -> [[a,b],[a,c,d],[a,c,e]]; `a::b as c` -> [[a,b]].
fn expand_use(s: &str) -> Vec<Vec<String>> {
    fn go(prefix: &[String], s: &str, out: &mut Vec<Vec<String>>) {
        let s = s.trim();
        if let Some(open) = s.find('{') {
            let head: Vec<String> = s[..open].split("::").filter(|x| !x.is_empty()).map(str::to_string).collect();
            let inner = &s[open + 1..s.rfind('}').unwrap_or(s.len())];
            let mut p = prefix.to_vec();
            p.extend(head);
            let (mut depth, mut start) = (0, 0);
            for (k, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        go(&p, &inner[start..k], out);
                        start = k + 1;
                    }
                    _ => {}
                }
            }
            go(&p, &inner[start..], out);
        } else if !s.is_empty() {
            let s = s.split("as").next().unwrap_or(s);
            let mut p = prefix.to_vec();
            p.extend(s.split("::").filter(|x| !x.is_empty() && *x != "*" && *x != "self").map(str::to_string));
            out.push(p);
        }
    }
    let mut out = Vec::new();
    go(&[], s, &mut out);
    out
}

/// Resolves `crate::`, `super::`, `self::` (and root-relative module names in the crate root).
fn absolute(segs: &[String], here: &[String], root_modules: &BTreeSet<String>) -> Option<Vec<String>> {
    let first = segs.first()?;
    match first.as_str() {
        "crate" => Some(segs[1..].to_vec()),
        "self" => Some(here.iter().chain(&segs[1..]).cloned().collect()),
        "super" => {
            let mut base = here.to_vec();
            let mut rest = segs;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop()?;
                rest = &rest[1..];
            }
            Some(base.into_iter().chain(rest.iter().cloned()).collect())
        }
        name if here.is_empty() && root_modules.contains(name) => Some(segs.to_vec()),
        _ => None,
    }
}

struct CrateModules {
    /// module path -> lexed code (test code blanked).
    code: BTreeMap<Vec<String>, Vec<u8>>,
}

impl CrateModules {
    fn load(src_dir: &Path) -> CrateModules {
        let mut code = BTreeMap::new();
        for file in rust_files(src_dir) {
            let Some(path) = module_path(src_dir, &file) else { continue };
            let src = std::fs::read_to_string(&file).unwrap();
            let mut lexed = lex(&src).code;
            let last = lexed.len().saturating_sub(1);
            for (a, b) in test_ranges(&lexed) {
                for c in &mut lexed[a..=b.min(last)] {
                    if *c != b'\n' {
                        *c = b' ';
                    }
                }
            }
            code.insert(path, lexed);
        }
        CrateModules { code }
    }

    /// The file module that defines what `path` names: the longest module prefix, following `pub use`
    /// re-exports of that module one level at a time.
    fn resolve(&self, path: &[String], reexports: &BTreeMap<(Vec<String>, String), Vec<String>>) -> Vec<String> {
        self.resolve_within(path, reexports, 8)
    }

    /// `hops` bounds the re-exports followed (a `use` of a name that is itself re-exported back).
    fn resolve_within(
        &self,
        path: &[String],
        reexports: &BTreeMap<(Vec<String>, String), Vec<String>>,
        hops: usize,
    ) -> Vec<String> {
        let mut n = path.len();
        while n > 0 && !self.code.contains_key(&path[..n]) {
            n -= 1;
        }
        let module = path[..n].to_vec();
        match path.get(n).and_then(|name| reexports.get(&(module.clone(), name.clone()))) {
            Some(target) if target.as_slice() != path && hops > 0 => {
                let mut next = target.clone();
                next.extend(path[n + 1..].iter().cloned());
                self.resolve_within(&next, reexports, hops - 1)
            }
            _ => module,
        }
    }

    /// Edges between modules that are not ancestor and descendant of each other.
    fn edges(&self) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
        let root_modules: BTreeSet<String> = self.code.keys().filter_map(|k| k.first().cloned()).collect();
        let mut reexports = BTreeMap::new();
        for (module, code) in &self.code {
            let text = String::from_utf8_lossy(code);
            for stmt in use_statements(&text) {
                for p in expand_use(&stmt) {
                    if let (Some(abs), Some(last)) = (absolute(&p, module, &root_modules), p.last()) {
                        reexports.insert((module.clone(), last.clone()), abs);
                    }
                }
            }
        }
        let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
        for (module, code) in &self.code {
            for p in referenced_paths(code, module, &root_modules) {
                let target = self.resolve(&p, &reexports);
                let related = target.starts_with(module) || module.starts_with(&target);
                if !related {
                    edges.entry(module.clone()).or_default().insert(target);
                }
            }
        }
        edges
    }
}

/// Strongly connected components with more than one module: the import circles.
fn circles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<Vec<String>>> {
    let nodes: BTreeSet<&Vec<String>> = edges.keys().chain(edges.values().flatten()).collect();
    let reach = |from: &Vec<String>| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(n) = todo.pop() {
            for m in edges.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    todo.push(m.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&Vec<String>, BTreeSet<Vec<String>>> = nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for n in &nodes {
        if done.contains(*n) || !reachable[n].contains(*n) {
            continue;
        }
        let scc: Vec<Vec<String>> = nodes
            .iter()
            .filter(|m| reachable[n].contains(**m) && reachable[**m].contains(*n))
            .map(|m| (*m).clone())
            .collect();
        done.extend(scc.iter().cloned());
        if scc.len() > 1 {
            out.push(scc);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// The tree.

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
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

/// (crate directory name, its src/ directory) for every crate under crates/.
fn crates() -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(workspace().join("crates"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path().join("src")))
        .collect();
    out.sort();
    out
}

#[test]
fn no_function_is_longer_than_its_crates_limit() {
    let mut over = Vec::new();
    for (name, src) in crates() {
        let limit = if CORE_CRATES.contains(&name.as_str()) { CORE_LIMIT } else { SHELL_LIMIT };
        for file in rust_files(&src) {
            let text = std::fs::read_to_string(&file).unwrap();
            for (f, line, len) in functions(&text) {
                if len > limit {
                    over.push(format!("{}:{line}: fn {f} is {len} lines (limit {limit})", file.display()));
                }
            }
        }
    }
    assert!(over.is_empty(), "functions over the limit:\n{}", over.join("\n"));
}

#[test]
fn no_import_circle_between_modules_of_a_crate() {
    let mut found = Vec::new();
    for (name, src) in crates() {
        for scc in circles(&CrateModules::load(&src).edges()) {
            let names: Vec<String> = scc.iter().map(|m| format!("{name}::{}", m.join("::"))).collect();
            found.push(names.join(" <-> "));
        }
    }
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

/// A literal that defines the keyword on the wire: the keyword alone, or followed by a value that is only
/// a number or a format placeholder (`"SIZE {}"`, `"SIZE=0"`). Prose that merely names it ("SMTPUTF8 takes
/// no value") is not a definition.
fn spells_keyword(literal: &str, keyword: &str) -> bool {
    // Keywords are case-insensitive on the wire (RFC 5321 §2.4) but written upper case by every server.
    let Some(head) = literal.get(..keyword.len()).filter(|h| *h == keyword) else {
        return false;
    };
    let rest = &literal[head.len()..];
    rest.is_empty()
        || (rest.starts_with([' ', '='])
            && rest[1..].chars().all(|c| c.is_ascii_digit() || matches!(c, '{' | '}' | ':' | '?')))
}

#[test]
fn each_ehlo_keyword_is_spelled_once() {
    let mut seen: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (_, src) in crates() {
        for file in rust_files(&src) {
            let text = std::fs::read_to_string(&file).unwrap();
            let lexed = lex(&text);
            let tests = test_ranges(&lexed.code);
            for (at, s) in &lexed.strings {
                if in_ranges(&tests, *at) {
                    continue;
                }
                if let Some(k) = EHLO_KEYWORDS.iter().find(|k| spells_keyword(s, k)) {
                    let line = text[..*at].lines().count();
                    seen.entry(k).or_default().push(format!("{}:{line}", file.display()));
                }
            }
        }
    }
    let twice: Vec<String> =
        seen.iter().filter(|(_, v)| v.len() > 1).map(|(k, v)| format!("{k}: {}", v.join(", "))).collect();
    assert!(twice.is_empty(), "EHLO keywords spelled more than once:\n{}", twice.join("\n"));
    for k in ["PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING"] {
        assert!(seen.contains_key(k), "{k} is advertised, so it must be spelled somewhere");
    }
}

// ---------------------------------------------------------------------------------------------------
// The checker's own tests: it must see what it is meant to see.

#[test]
fn checker_measures_functions_and_skips_strings_comments_and_tests() {
    let src = "fn a() {\n    let s = \"}\"; // }\n    let c = '}';\n}\n\
               /* fn hidden() { } */\n\
               trait T { fn decl(&self); fn with_body(&self) -> Vec<u8> {\n vec![]\n } }\n\
               fn generic<'a, T: Fn(u8) -> u8>(x: &'a T) where T: Clone {\n x(1);\n}\n\
               #[cfg(test)]\nmod tests {\n fn in_test() {\n }\n}\n";
    let fns = functions(src);
    let names: Vec<(&str, usize)> = fns.iter().map(|(n, _, l)| (n.as_str(), *l)).collect();
    assert_eq!(names, vec![("a", 4), ("with_body", 3), ("generic", 3)]);
}

#[test]
fn checker_finds_a_circle_through_a_reexport_and_ignores_parent_child() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("server")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod a; mod b; mod server; pub use a::Thing;\n").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::b::helper;\npub struct Thing;\n").unwrap();
    std::fs::write(src.join("b.rs"), "pub fn helper() -> crate::Thing { crate::Thing }\n").unwrap();
    std::fs::write(src.join("server/mod.rs"), "mod rcpt;\npub struct S;\nfn f() { rcpt::go() }\n").unwrap();
    std::fs::write(src.join("server/rcpt.rs"), "use super::S;\npub fn go() {}\n").unwrap();
    let found = circles(&CrateModules::load(src).edges());
    assert_eq!(found, vec![vec![vec!["a".to_string()], vec!["b".to_string()]]]);
}

#[test]
fn checker_tells_a_keyword_definition_from_prose() {
    assert!(spells_keyword("SIZE", "SIZE"));
    assert!(spells_keyword("SIZE {}", "SIZE"));
    assert!(!spells_keyword("size", "SIZE"));
    assert!(spells_keyword("SIZE=0", "SIZE"));
    assert!(!spells_keyword("SMTPUTF8 takes no value", "SMTPUTF8"));
    assert!(!spells_keyword("SIZEX", "SIZE"));
}

#[test]
fn checker_sees_a_keyword_spelled_in_a_string() {
    let lexed = lex("const X: &str = \"PIPELINING\"; // \"CHUNKING\"\nlet r = r#\"SIZE \"x\"\"#; let c = '\"';");
    let strings: Vec<&str> = lexed.strings.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(strings, vec!["PIPELINING", "SIZE \"x\""]);
}
