//! bellwether: self-hosted customer-success analytics.
//!
//! Modules in data-flow order (see ARCHITECTURE.md): configuration and limits, then
//! ingest -> store, then the web and command-line surfaces.

pub mod config;
pub mod limits;
pub mod telemetry;

pub mod records;

pub mod accounts;
pub mod actions;
pub mod format;
pub mod health;
pub mod identity;
pub mod import;
pub mod ingest;
pub mod listening;
pub mod metrics;
pub mod share;
pub mod store;
pub mod users;

pub mod cli;
pub mod demo;
pub mod web;
pub mod workers;

/// The layering the modules keep, checked on the source (STYLE.md, issue 29), over the
/// graph of modules (one per file, an edge for each `crate::`, `super::` or child path a
/// file's code names outside its tests): it has no cycle but a module's with its own
/// submodules; the pure domain modules import
/// neither storage, the surfaces nor the config layer, and each domain's one orchestration
/// file, which reads and writes through the store's traits, imports no surface; storage
/// imports no surface, no worker and no orchestration.
#[cfg(test)]
mod tidy {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    /// The files of each domain that read and write through the store's traits.
    const ORCHESTRATION: &[&str] = &[
        "health::history",
        "health::backtest",
        "actions::run",
        "listening::report",
        "metrics::read",
    ];
    /// Domain modules: no storage, no surface, no config file layer.
    const PURE: &[&str] = &[
        "metrics",
        "health",
        "actions",
        "listening",
        "share",
        "records",
        "limits",
        "identity",
        "format",
    ];
    const SURFACES: &[&str] = &["web", "cli", "demo", "workers", "config"];
    /// Modules above storage that compose it for the surfaces.
    const ABOVE_STORE: &[&str] = &["accounts", "users", "import"];

    /// Every module of the crate (`a::b` for `src/a/b.rs`) and its code without tests and
    /// comment lines.
    fn modules() -> BTreeMap<String, String> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut out = BTreeMap::new();
        let mut dirs: Vec<PathBuf> = vec![src.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                let relative = path.strip_prefix(&src).unwrap().with_extension("");
                let name = relative
                    .iter()
                    .map(|c| c.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("::");
                if name == "lib" || name == "main" {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let code = text
                    .split("#[cfg(test)]")
                    .next()
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("//"))
                    .collect::<Vec<_>>()
                    .join("\n");
                out.insert(name, code);
            }
        }
        out
    }

    /// The longest module of `known` that `path` (`a::b::item`) names.
    fn module_of(path: &[&str], known: &BTreeMap<String, String>) -> Option<String> {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].join("::"))
            .find(|m| known.contains_key(m))
    }

    /// The modules `module`'s code names.
    fn edges(module: &str, code: &str, known: &BTreeMap<String, String>) -> BTreeSet<String> {
        let own: Vec<&str> = module.split("::").collect();
        let children: Vec<String> = code
            .lines()
            .filter_map(|l| {
                let l = l.trim();
                let l = l.strip_prefix("pub ").unwrap_or(l);
                l.strip_prefix("mod ")?
                    .strip_suffix(';')
                    .map(str::to_string)
            })
            .collect();
        let mut out = BTreeSet::new();
        let word = |c: char| c.is_alphanumeric() || c == '_';
        for (i, _) in code.match_indices("::") {
            // The whole path this `::` belongs to, from its first segment.
            let start = code[..i]
                .char_indices()
                .rev()
                .find(|(_, c)| !(word(*c) || *c == ':'))
                .map_or(0, |(at, c)| at + c.len_utf8());
            if code[start..i].contains("::") {
                continue; // not the first `::` of its path
            }
            let end = code[i..]
                .find(|c: char| !(word(c) || c == ':'))
                .map_or(code.len(), |e| i + e);
            let segments: Vec<&str> = code[start..end]
                .split("::")
                .filter(|s| !s.is_empty())
                .collect();
            let absolute: Vec<&str> = match segments.first() {
                Some(&"crate") => segments[1..].to_vec(),
                Some(&"super") => {
                    let ups = segments.iter().take_while(|s| **s == "super").count();
                    let base = own.len().saturating_sub(ups);
                    own[..base]
                        .iter()
                        .chain(&segments[ups..])
                        .copied()
                        .collect()
                }
                Some(first) if children.iter().any(|c| c == first) => {
                    own.iter().chain(&segments).copied().collect()
                }
                _ => continue,
            };
            if let Some(target) = module_of(&absolute, known) {
                if target != module {
                    out.insert(target);
                }
            }
        }
        out
    }

    fn graph() -> BTreeMap<String, BTreeSet<String>> {
        let known = modules();
        known
            .iter()
            .map(|(m, code)| (m.clone(), edges(m, code, &known)))
            .collect()
    }

    fn under(module: &str, top: &str) -> bool {
        module == top || module.starts_with(&format!("{top}::"))
    }

    /// Every edge from a module under one of `from` to one under `to`.
    fn crossing(
        graph: &BTreeMap<String, BTreeSet<String>>,
        from: impl Fn(&str) -> bool,
        to: &[&str],
    ) -> Vec<String> {
        graph
            .iter()
            .filter(|(m, _)| from(m))
            .flat_map(|(m, used)| {
                used.iter()
                    .filter(|u| to.iter().any(|t| under(u, t)))
                    .map(move |u| format!("{m} -> {u}"))
            })
            .collect()
    }

    #[test]
    fn the_graph_sees_the_edges_it_checks() {
        let graph = graph();
        assert!(graph.len() > 60, "{} modules", graph.len());
        assert!(graph["health::history"].contains("store"));
        assert!(graph["store::sqlite::health"].contains("store"));
        assert!(graph["web::pages::account"].contains("accounts"));
    }

    #[test]
    fn pure_modules_import_neither_storage_nor_surfaces() {
        let graph = graph();
        let pure = |m: &str| PURE.iter().any(|p| under(m, p)) && !ORCHESTRATION.contains(&m);
        let forbidden: Vec<&str> = ["store"]
            .iter()
            .chain(SURFACES)
            .chain(ABOVE_STORE)
            .chain(ORCHESTRATION)
            .copied()
            .collect();
        assert_eq!(crossing(&graph, pure, &forbidden), Vec::<String>::new());
        let orchestration = |m: &str| ORCHESTRATION.contains(&m);
        assert_eq!(
            crossing(&graph, orchestration, SURFACES),
            Vec::<String>::new()
        );
    }

    #[test]
    fn storage_imports_no_surface_no_worker_and_no_orchestration() {
        let graph = graph();
        let forbidden: Vec<&str> = SURFACES
            .iter()
            .chain(ABOVE_STORE)
            .chain(ORCHESTRATION)
            .copied()
            .filter(|m| *m != "config")
            .collect();
        let store = |m: &str| under(m, "store");
        assert_eq!(crossing(&graph, store, &forbidden), Vec::<String>::new());
        let workers = |m: &str| under(m, "workers");
        assert_eq!(
            crossing(&graph, workers, &["web", "cli", "demo"]),
            Vec::<String>::new()
        );
    }

    /// Only `store` tells the backends apart (`store::Backend`); the config that names them
    /// is the one other place their names appear.
    #[test]
    fn nothing_outside_store_matches_on_the_backend() {
        let mut found = Vec::new();
        for (module, code) in modules() {
            if under(&module, "store") || module == "config" {
                continue;
            }
            for name in [
                "Backend::Embedded",
                "Backend::ClickHouse",
                "StoreLocation::",
            ] {
                if code.contains(name) {
                    found.push(format!("{module}: {name}"));
                }
            }
        }
        assert_eq!(found, Vec::<String>::new());
    }

    /// Depth first: a module met again while on the path closes a cycle.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(i) = path.iter().position(|p| p == m) {
            panic!("module cycle: {} -> {m}", path[i..].join(" -> "));
        }
        path.push(m.to_string());
        // A module's use of its own submodules is composition (`web` routes to its pages,
        // which use its state): the cycles that tax a change are between siblings, or
        // through a module's descendants back to a sibling of it.
        for next in graph[m].iter().filter(|n| !under(n, m)) {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(m.to_string());
    }

    #[test]
    fn the_module_graph_has_no_cycle() {
        let graph = graph();
        let mut done = BTreeSet::new();
        for m in graph.keys() {
            visit(m, &graph, &mut Vec::new(), &mut done);
        }
        assert_eq!(done.len(), graph.len());
    }
}
