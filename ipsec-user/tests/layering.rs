//! The layering of `ipsec-user` (issue 9), checked by parsing, not by text search.
//!
//! Every `.rs` file under `src/` is parsed with `syn`; each path that reaches into the crate is
//! resolved to the top-level module it names: `use crate::…` trees (groups, renames, `self`,
//! globs), `super::…` that climbs out of a top-level module, `self::…`, paths in expressions,
//! types and patterns (`crate::daemon::death()`), paths inside macro arguments, and aliases made
//! by `use … as x`, `use crate as c`, `extern crate self as me` or a glob of the crate root, in
//! the same file. Binaries (`main.rs`, `bin/`) reach the library as `ipsec_user::…`.
//!
//! The rules (a row of [`RULES`] each):
//! 1. `engine`, `datapath`, `crypto`, `wire`, `model`, `classifier` never reach `daemon` or `cli`.
//! 2. `model` is the bottom layer: it reaches only itself and `wire`.
//! 3. `engine` and `datapath` never reach each other.
//! 4. `crypto` and `wire` never reach `engine` or `datapath` (they sit below both).
//!
//! A rule also fails when the forbidden module is reached indirectly, through another top-level
//! module (a re-export façade such as `lib.rs`'s `fuzzing`, or a layer that itself breaks the
//! rule), and when a `#[path]` attribute would make a file's place in the tree lie about its
//! module.

use proc_macro2::{Span, TokenStream, TokenTree};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::path::Path;
use syn::visit::Visit;

/// One rule: modules in `from` must not reach the modules `to` selects.
struct Rule {
    name: &'static str,
    from: &'static [&'static str],
    to: Forbidden,
}

enum Forbidden {
    /// These modules.
    These(&'static [&'static str]),
    /// Every module except these.
    AllBut(&'static [&'static str]),
}

const BELOW_DAEMON: &[&str] = &[
    "engine",
    "datapath",
    "crypto",
    "wire",
    "model",
    "classifier",
    "ike",
];

const RULES: &[Rule] = &[
    Rule {
        name: "nothing below the daemon reaches daemon or cli",
        from: BELOW_DAEMON,
        to: Forbidden::These(&["daemon", "cli"]),
    },
    Rule {
        name: "model is the bottom layer: it reaches only wire",
        from: &["model"],
        to: Forbidden::AllBut(&["model", "wire"]),
    },
    Rule {
        name: "engine and datapath do not reach each other",
        from: &["engine"],
        to: Forbidden::These(&["datapath"]),
    },
    Rule {
        name: "engine and datapath do not reach each other",
        from: &["datapath"],
        to: Forbidden::These(&["engine"]),
    },
    Rule {
        name: "crypto and wire sit below engine and datapath",
        from: &["crypto", "wire"],
        to: Forbidden::These(&["engine", "datapath"]),
    },
];

/// The rule `from` reaching `to` breaks, if any.
fn broken_rule(from: &str, to: &str) -> Option<&'static str> {
    RULES.iter().find_map(|rule| {
        let forbidden = match rule.to {
            Forbidden::These(these) => these.contains(&to),
            Forbidden::AllBut(allowed) => !allowed.contains(&to),
        };
        (rule.from.contains(&from) && forbidden).then_some(rule.name)
    })
}

/// Top-level modules known even when `lib.rs` is not among the sources (the unit tests).
const KNOWN_TOP: &[&str] = &[
    "classifier",
    "cli",
    "crypto",
    "daemon",
    "datapath",
    "engine",
    "model",
    "paths",
    "wire",
];

/// A path from one top-level module into another.
#[derive(Debug, Clone)]
struct Reach {
    file: String,
    line: usize,
    from: String,
    to: String,
    path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Violation {
    file: String,
    line: usize,
    path: String,
    rule: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: `{}` breaks: {}",
            self.file, self.line, self.path, self.rule
        )
    }
}

/// Which crate a file belongs to and its module path inside it.
struct Place {
    /// `None` for the library, the binary's name otherwise.
    bin: Option<String>,
    module: Vec<String>,
}

/// `engine/tables.rs` -> library, `[engine, tables]`; `engine/mod.rs` -> `[engine]`;
/// `lib.rs` -> `[]`; `main.rs`, `bin/x.rs`, `bin/x/...` -> binaries.
fn place(relative: &str) -> Place {
    let parts: Vec<&str> = relative.trim_end_matches(".rs").split('/').collect();
    match parts.as_slice() {
        ["main"] => Place {
            bin: Some("xipsec".into()),
            module: Vec::new(),
        },
        ["bin", name, ..] => Place {
            bin: Some((*name).into()),
            module: Vec::new(),
        },
        ["lib"] => Place {
            bin: None,
            module: Vec::new(),
        },
        _ => Place {
            bin: None,
            module: parts
                .iter()
                .filter(|p| **p != "mod")
                .map(|p| (*p).to_owned())
                .collect(),
        },
    }
}

/// A path as written, before resolution.
struct RawPath {
    /// `::a::b` (an external crate).
    leading_colon: bool,
    segments: Vec<String>,
    /// The inline-module path where it stands.
    module: Vec<String>,
    line: usize,
}

/// A `use` leaf: what it names, and the name it binds (`None` for a glob).
struct UseLeaf {
    path: RawPath,
    binds: Option<String>,
}

/// Collects every path of one file.
struct Collector {
    module: Vec<String>,
    uses: Vec<UseLeaf>,
    paths: Vec<RawPath>,
    path_attributes: Vec<usize>,
}

fn line(span: Span) -> usize {
    span.start().line
}

impl Collector {
    fn use_tree(&mut self, tree: &syn::UseTree, prefix: &mut Vec<String>, leading_colon: bool) {
        let leaf =
            |segments: Vec<String>, binds: Option<String>, at: Span, module: &[String]| UseLeaf {
                path: RawPath {
                    leading_colon,
                    segments,
                    module: module.to_vec(),
                    line: line(at),
                },
                binds,
            };
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(&p.tree, prefix, leading_colon);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let (segments, binds) = named(prefix, &n.ident);
                let l = leaf(segments, Some(binds), n.ident.span(), &self.module);
                self.uses.push(l);
            }
            syn::UseTree::Rename(r) => {
                let (segments, _) = named(prefix, &r.ident);
                let l = leaf(
                    segments,
                    Some(r.rename.to_string()),
                    r.ident.span(),
                    &self.module,
                );
                self.uses.push(l);
            }
            syn::UseTree::Glob(g) => {
                let l = leaf(prefix.clone(), None, g.star_token.spans[0], &self.module);
                self.uses.push(l);
            }
            syn::UseTree::Group(g) => {
                for tree in &g.items {
                    self.use_tree(tree, prefix, leading_colon);
                }
            }
        }
    }

    /// Paths inside macro arguments are plain tokens to `syn`: find `a::b::c` runs there.
    fn tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                TokenTree::Group(g) => {
                    self.tokens(g.stream());
                    i += 1;
                }
                TokenTree::Ident(first) => {
                    let leading_colon = i >= 2 && is_path_sep(&tokens[i - 2], &tokens[i - 1]);
                    let mut segments = vec![first.to_string()];
                    let mut j = i + 1;
                    while j + 2 < tokens.len() && is_path_sep(&tokens[j], &tokens[j + 1]) {
                        match &tokens[j + 2] {
                            TokenTree::Ident(next) => segments.push(next.to_string()),
                            _ => break,
                        }
                        j += 3;
                    }
                    if segments.len() > 1 {
                        self.paths.push(RawPath {
                            leading_colon,
                            segments,
                            module: self.module.clone(),
                            line: line(first.span()),
                        });
                    }
                    i = j.max(i + 1);
                }
                TokenTree::Punct(_) | TokenTree::Literal(_) => i += 1,
            }
        }
    }
}

/// `use a::b::self` names `a::b` and binds `b`; `use a::b` names `a::b` and binds `b`.
fn named(prefix: &[String], ident: &syn::Ident) -> (Vec<String>, String) {
    if ident == "self" {
        let binds = prefix.last().cloned().unwrap_or_default();
        (prefix.to_vec(), binds)
    } else {
        let mut segments = prefix.to_vec();
        segments.push(ident.to_string());
        (segments, ident.to_string())
    }
}

fn is_path_sep(a: &TokenTree, b: &TokenTree) -> bool {
    matches!((a, b), (TokenTree::Punct(a), TokenTree::Punct(b))
        if a.as_char() == ':' && b.as_char() == ':' && a.spacing() == proc_macro2::Spacing::Joint)
}

impl<'ast> Visit<'ast> for Collector {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        if item.attrs.iter().any(|a| a.path().is_ident("path")) {
            self.path_attributes.push(line(item.ident.span()));
        }
        self.module.push(item.ident.to_string());
        syn::visit::visit_item_mod(self, item);
        self.module.pop();
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&item.tree, &mut Vec::new(), item.leading_colon.is_some());
    }

    fn visit_item_extern_crate(&mut self, item: &'ast syn::ItemExternCrate) {
        let binds = item
            .rename
            .as_ref()
            .map_or_else(|| item.ident.to_string(), |(_, r)| r.to_string());
        // `extern crate self as me;` makes `me` the crate root.
        let segments = vec![if item.ident == "self" {
            "crate".to_owned()
        } else {
            item.ident.to_string()
        }];
        self.uses.push(UseLeaf {
            path: RawPath {
                leading_colon: item.ident != "self",
                segments,
                module: self.module.clone(),
                line: line(item.ident.span()),
            },
            binds: Some(binds),
        });
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if let Some(first) = path.segments.first() {
            self.paths.push(RawPath {
                leading_colon: path.leading_colon.is_some(),
                segments: path.segments.iter().map(|s| s.ident.to_string()).collect(),
                module: self.module.clone(),
                line: line(first.ident.span()),
            });
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.tokens(mac.tokens.clone());
        syn::visit::visit_macro(self, mac);
    }
}

/// Resolves paths of one file to absolute library module paths (`[]` is the crate root).
struct Resolver<'a> {
    place: &'a Place,
    top: &'a BTreeSet<String>,
    /// Every name a `use` binds in the file, with what it may stand for (`None`: outside the
    /// library). File-wide, so a name bound in one inline module counts in all: stricter, never
    /// laxer.
    aliases: BTreeMap<String, Vec<Option<Vec<String>>>>,
}

impl Resolver<'_> {
    /// All library module paths `raw` may name.
    fn resolve(&self, raw: &RawPath) -> Vec<Vec<String>> {
        let Some((first, rest)) = raw.segments.split_first() else {
            return Vec::new();
        };
        let rest = rest.to_vec();
        let join = |mut base: Vec<String>| {
            base.extend(rest.iter().cloned());
            vec![base]
        };
        if raw.leading_colon {
            return if first == "ipsec_user" {
                join(Vec::new())
            } else {
                Vec::new()
            };
        }
        match first.as_str() {
            "crate" if self.place.bin.is_none() => join(Vec::new()),
            "ipsec_user" => join(Vec::new()),
            "crate" => Vec::new(),
            "self" | "super" if self.place.bin.is_some() => Vec::new(),
            "self" => join(self.here(raw)),
            "super" => {
                let mut base = self.here(raw);
                base.pop();
                let climbs = rest.iter().take_while(|s| *s == "super").count();
                for _ in 0..climbs {
                    base.pop();
                }
                base.extend(rest.iter().skip(climbs).cloned());
                vec![base]
            }
            _ => {
                let mut found: Vec<Vec<String>> = self
                    .aliases
                    .get(first)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .flat_map(|base| join(base.clone()))
                    .collect();
                // At the library root, `daemon::x` names the top-level module (Rust 2018).
                if self.place.bin.is_none() && self.here(raw).is_empty() && self.top.contains(first)
                {
                    found.extend(join(vec![first.clone()]));
                }
                found
            }
        }
    }

    /// The module where `raw` stands: the file's module and the inline modules around it.
    fn here(&self, raw: &RawPath) -> Vec<String> {
        let mut here = self.place.module.clone();
        here.extend(raw.module.iter().cloned());
        here
    }

    /// Binds every `use` name, following aliases of aliases until nothing changes.
    fn bind(&mut self, uses: &[UseLeaf]) {
        for _ in 0..=uses.len() {
            let mut next: BTreeMap<String, Vec<Option<Vec<String>>>> = BTreeMap::new();
            for leaf in uses {
                let targets = self.resolve(&leaf.path);
                match &leaf.binds {
                    Some(name) => {
                        let entry = next.entry(name.clone()).or_default();
                        if targets.is_empty() {
                            entry.push(None);
                        }
                        entry.extend(targets.into_iter().map(Some));
                    }
                    // A glob of the crate root brings every top-level module into scope.
                    None if targets.iter().any(Vec::is_empty) => {
                        for top in self.top {
                            next.entry(top.clone())
                                .or_default()
                                .push(Some(vec![top.clone()]));
                        }
                    }
                    None => {}
                }
            }
            for targets in next.values_mut() {
                targets.sort();
                targets.dedup();
            }
            if next == self.aliases {
                return;
            }
            self.aliases = next;
        }
    }
}

/// The top-level module (or binary) a reach starts from.
fn origin(place: &Place, raw: &RawPath) -> String {
    match &place.bin {
        Some(bin) => format!("bin/{bin}"),
        None => place
            .module
            .first()
            .or(raw.module.first())
            .cloned()
            .unwrap_or_else(|| "root".into()),
    }
}

/// Every reach from one top-level module into another in one file, and the lines of its
/// `#[path]` attributes.
fn reaches(
    relative: &str,
    source: &str,
    top: &BTreeSet<String>,
) -> Result<(Vec<Reach>, Vec<usize>), syn::Error> {
    let file = syn::parse_file(source)?;
    let mut collector = Collector {
        module: Vec::new(),
        uses: Vec::new(),
        paths: Vec::new(),
        path_attributes: Vec::new(),
    };
    collector.visit_file(&file);
    let place = place(relative);
    let mut resolver = Resolver {
        place: &place,
        top,
        aliases: BTreeMap::new(),
    };
    resolver.bind(&collector.uses);
    let raws = collector
        .uses
        .iter()
        .map(|u| &u.path)
        .chain(&collector.paths);
    let mut found = Vec::new();
    for raw in raws {
        let from = origin(&place, raw);
        for target in resolver.resolve(raw) {
            let Some(to) = target.first() else { continue };
            if *to != from {
                found.push(Reach {
                    file: relative.to_owned(),
                    line: raw.line,
                    from: from.clone(),
                    to: to.clone(),
                    path: raw.segments.join("::"),
                });
            }
        }
    }
    Ok((found, collector.path_attributes))
}

/// What [`check`] found: the violations, and every edge between top-level modules.
struct Report {
    violations: Vec<Violation>,
    edges: BTreeMap<(String, String), usize>,
}

/// Checks a set of `(path relative to src/, source)` files.
fn check(files: &[(String, String)]) -> Report {
    let mut top: BTreeSet<String> = KNOWN_TOP.iter().map(|s| (*s).to_owned()).collect();
    if let Some((_, lib)) = files.iter().find(|(name, _)| name == "lib.rs") {
        let lib = syn::parse_file(lib).expect("parsing lib.rs");
        top.extend(lib.items.iter().filter_map(|item| match item {
            syn::Item::Mod(m) => Some(m.ident.to_string()),
            _ => None,
        }));
    }
    let mut violations = Vec::new();
    let mut all = Vec::new();
    for (name, source) in files {
        match reaches(name, source, &top) {
            Ok((found, path_attributes)) => {
                all.extend(found);
                violations.extend(path_attributes.into_iter().map(|line| Violation {
                    file: name.clone(),
                    line,
                    path: "#[path]".into(),
                    rule: "a file's place under src/ is its module (no #[path])".into(),
                }));
            }
            Err(err) => violations.push(Violation {
                file: name.clone(),
                line: line(err.span()),
                path: String::new(),
                rule: format!("every source file parses ({err})"),
            }),
        }
    }
    let mut edges: BTreeMap<(String, String), usize> = BTreeMap::new();
    for reach in &all {
        *edges
            .entry((reach.from.clone(), reach.to.clone()))
            .or_default() += 1;
        if let Some(rule) = broken_rule(&reach.from, &reach.to) {
            violations.push(Violation {
                file: reach.file.clone(),
                line: reach.line,
                path: reach.path.clone(),
                rule: format!("{rule} ({} reaches {})", reach.from, reach.to),
            });
        }
    }
    // Indirect reaches: every hop is allowed, but `from` -> `via` -> ... leads to a module that
    // `from` must not reach (a re-export façade, or a module no rule covers, in between). Only
    // allowed edges are followed, so a direct violation is not reported again downstream.
    let allowed: BTreeSet<(String, String)> = edges
        .keys()
        .filter(|(from, to)| broken_rule(from, to).is_none())
        .cloned()
        .collect();
    let mut seen = BTreeSet::new();
    for reach in &all {
        if broken_rule(&reach.from, &reach.to).is_some() {
            continue;
        }
        for (to, chain) in closure(&allowed, &reach.to) {
            if let Some(rule) = broken_rule(&reach.from, &to)
                && seen.insert((reach.from.clone(), reach.to.clone(), to.clone()))
            {
                violations.push(Violation {
                    file: reach.file.clone(),
                    line: reach.line,
                    path: reach.path.clone(),
                    rule: format!(
                        "{rule} ({} reaches {to} indirectly: {} -> {})",
                        reach.from,
                        reach.from,
                        chain.join(" -> ")
                    ),
                });
            }
        }
    }
    violations.sort();
    Report { violations, edges }
}

/// Every module reachable from `start` (itself excluded), with one chain that leads there.
fn closure(edges: &BTreeSet<(String, String)>, start: &str) -> Vec<(String, Vec<String>)> {
    let mut chains: BTreeMap<String, Vec<String>> = BTreeMap::new();
    chains.insert(start.to_owned(), vec![start.to_owned()]);
    let mut queue = VecDeque::from([start.to_owned()]);
    while let Some(at) = queue.pop_front() {
        let chain = chains[&at].clone();
        for (from, to) in edges {
            if *from == at && !chains.contains_key(to) {
                let mut next = chain.clone();
                next.push(to.clone());
                chains.insert(to.clone(), next);
                queue.push_back(to.clone());
            }
        }
    }
    chains.remove(start);
    chains.into_iter().collect()
}

/// Every `.rs` file under `dir`, as `(path relative to root, source)`.
fn sources(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("listing a source directory")
        .map(|e| e.expect("reading a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path
                .strip_prefix(root)
                .expect("a path under src/")
                .to_string_lossy()
                .replace('\\', "/");
            let source = std::fs::read_to_string(&path).expect("reading a source file");
            out.push((relative, source));
        }
    }
}

#[test]
fn the_layering_holds_in_src() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &root, &mut files);
    let report = check(&files);
    println!(
        "{} files; edges between top-level modules (paths):",
        files.len()
    );
    for ((from, to), count) in &report.edges {
        println!("  {from} -> {to} ({count})");
    }
    for violation in &report.violations {
        println!("{violation}");
    }
    // The checker must have seen the real tree, or an empty result proves nothing.
    assert!(files.len() > 40, "only {} files under src/", files.len());
    for edge in [
        ("daemon", "engine"),
        ("daemon", "datapath"),
        ("engine", "crypto"),
    ] {
        let edge = (edge.0.to_owned(), edge.1.to_owned());
        assert!(
            report.edges.contains_key(&edge),
            "no path {edge:?} was seen"
        );
    }
    assert!(
        report.violations.is_empty(),
        "{} layering violations (listed above)",
        report.violations.len()
    );
}

#[cfg(test)]
mod checker {
    use super::*;

    fn run(files: &[(&str, &str)]) -> Vec<Violation> {
        let files: Vec<(String, String)> = files
            .iter()
            .map(|(name, source)| ((*name).to_owned(), (*source).to_owned()))
            .collect();
        let report = check(&files);
        for violation in &report.violations {
            println!("{violation}");
        }
        report.violations
    }

    /// Asserts one violation at `file:line` naming `path` and a rule that contains `rule`.
    fn assert_found(found: &[Violation], file: &str, line: usize, path: &str, rule: &str) {
        assert!(
            found.iter().any(|v| v.file == file
                && v.line == line
                && v.path == path
                && v.rule.contains(rule)),
            "expected {file}:{line} `{path}` ({rule}) among {found:#?}"
        );
    }

    const BELOW: &str = "nothing below the daemon";
    const BOTTOM: &str = "model is the bottom layer";
    const SIDEWAYS: &str = "engine and datapath do not reach each other";
    const UNDER: &str = "crypto and wire sit below";

    #[test]
    fn each_rule_fails_on_a_violation() {
        let found = run(&[
            ("engine/a.rs", "use crate::daemon::Death;"),
            // An alias of the module itself, then a path through it.
            ("engine/b.rs", "use crate::daemon as d;\nfn f() { d::x(); }"),
            // The crate root renamed, then a fully qualified path through it.
            (
                "crypto/c.rs",
                "use crate as c;\nfn f() { c::daemon::death(); }",
            ),
            // A group from datapath into engine.
            ("datapath/d.rs", "use crate::{model::Sa, engine::X};"),
            // `super::super` climbing out of engine.
            (
                "engine/e.rs",
                "mod tests {\n    use super::super::super::datapath::Y;\n}",
            ),
            // A path in an expression, inside a macro, and in a type.
            ("model/f.rs", "fn f() {\n    crate::engine::run();\n}"),
            (
                "wire/g.rs",
                "fn f() {\n    println!(\"{}\", crate::cli::NAME);\n}",
            ),
            ("model/h.rs", "struct S {\n    t: crate::crypto::Icv,\n}"),
            // A glob of the crate root brings `cli` into scope.
            ("classifier/i.rs", "use crate::*;\nfn f() { cli::run(); }"),
            // `extern crate self` renames the crate.
            (
                "datapath/j.rs",
                "extern crate self as me;\nfn f() { me::engine::x(); }",
            ),
            ("crypto/k.rs", "use crate::engine::Tables;"),
            ("model/l.rs", "use crate::daemon::{self as dd};"),
        ]);
        assert_found(&found, "engine/a.rs", 1, "crate::daemon::Death", BELOW);
        assert_found(&found, "engine/b.rs", 1, "crate::daemon", BELOW);
        assert_found(&found, "engine/b.rs", 2, "d::x", BELOW);
        assert_found(&found, "crypto/c.rs", 2, "c::daemon::death", BELOW);
        assert_found(&found, "datapath/d.rs", 1, "crate::engine::X", SIDEWAYS);
        assert_found(
            &found,
            "engine/e.rs",
            2,
            "super::super::super::datapath::Y",
            SIDEWAYS,
        );
        assert_found(&found, "model/f.rs", 2, "crate::engine::run", BOTTOM);
        assert_found(&found, "wire/g.rs", 2, "crate::cli::NAME", BELOW);
        assert_found(&found, "model/h.rs", 2, "crate::crypto::Icv", BOTTOM);
        assert_found(&found, "classifier/i.rs", 2, "cli::run", BELOW);
        assert_found(&found, "datapath/j.rs", 2, "me::engine::x", SIDEWAYS);
        assert_found(&found, "crypto/k.rs", 1, "crate::engine::Tables", UNDER);
        assert_found(&found, "model/l.rs", 1, "crate::daemon", BELOW);
        // `model::Sa` in the datapath group is allowed, and nothing else was invented.
        assert!(!found.iter().any(|v| v.path.contains("model::Sa")));
        assert_eq!(found.len(), 13, "{found:#?}");
    }

    #[test]
    fn a_facade_and_a_path_attribute_are_caught() {
        let found = run(&[
            (
                "lib.rs",
                "pub mod engine;\npub mod facade {\n    pub use crate::daemon::Request;\n}",
            ),
            ("engine/a.rs", "use crate::facade::Request;"),
            ("model/b.rs", "#[path = \"../daemon/x.rs\"]\nmod x;"),
        ]);
        assert_found(
            &found,
            "engine/a.rs",
            1,
            "crate::facade::Request",
            "indirectly",
        );
        assert_found(&found, "model/b.rs", 2, "#[path]", "no #[path]");
    }

    #[test]
    fn the_allowed_shapes_pass() {
        let found = run(&[
            (
                "lib.rs",
                "pub mod engine;\npub mod fuzzing {\n    pub use crate::model::X;\n}",
            ),
            (
                "engine/tables.rs",
                "use crate::model::Sa;\nuse crate::crypto::{self as c, OutboundSa};\n\
                 use super::seq;\nuse std::io;\n\
                 fn f() { crate::model::x(); c::y(); io::stdout(); seq::z(); \
                 crate::paths::DEFAULT_STATE_DIR; crate::fuzzing::X; }\n\
                 mod tests {\n    use super::super::seq::STEP;\n    use super::*;\n}",
            ),
            (
                "datapath/sync.rs",
                "use crate::model::{Spd, Sa as S};\nfn f(_: S) {}",
            ),
            (
                "model/sa.rs",
                "use crate::wire::Ipv6;\nuse super::types::Mode;",
            ),
            (
                "crypto/esp.rs",
                "use crate::{model::Mode, wire};\nfn f() { wire::x(); }",
            ),
            (
                "daemon/mod.rs",
                "use crate::engine::Engine;\nuse crate::datapath::Kernel;\nuse crate::cli;",
            ),
            ("cli/mod.rs", "use crate::daemon::protocol::Request;"),
            ("main.rs", "use ipsec_user::daemon;\nuse crate::x;"),
            ("bin/bench.rs", "use ipsec_user::{engine, datapath};"),
        ]);
        assert!(found.is_empty(), "{found:#?}");
    }
}
