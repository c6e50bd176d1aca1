//! bellwether: self-hosted customer-success analytics.
//!
//! Modules in data-flow order (see ARCHITECTURE.md): configuration and limits, then
//! ingest -> store, then the web and command-line surfaces.

pub mod config;
pub mod limits;
pub mod telemetry;

pub mod records;

pub mod actions;
pub mod health;
pub mod import;
pub mod ingest;
pub mod listening;
pub mod metrics;
pub mod share;
pub mod store;

pub mod cli;
pub mod demo;
pub mod web;
pub mod workers;

/// The layering the modules keep, checked on the source (STYLE.md, issue 29): the graph of
/// top-level modules has no cycle; the pure domain modules import neither storage, the
/// surfaces nor the config layer; storage imports no surface nor the workers that run it.
#[cfg(test)]
mod tidy {
    use std::path::{Path, PathBuf};

    /// Every `.rs` file of a top-level module (`src/NAME.rs` and `src/NAME/**`), without
    /// its `#[cfg(test)]` part.
    fn sources(module: &str) -> Vec<(PathBuf, String)> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![src.join(format!("{module}.rs"))];
        let mut dirs = vec![src.join(module)];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        files
            .into_iter()
            .filter_map(|path| {
                let text = std::fs::read_to_string(&path).ok()?;
                let code = text
                    .split("#[cfg(test)]")
                    .next()
                    .unwrap_or_default()
                    .to_string();
                Some((path, code))
            })
            .collect()
    }

    fn check(module: &str, forbidden: &[&str]) {
        for (path, code) in sources(module) {
            for other in forbidden {
                assert!(
                    !code.contains(&format!("crate::{other}::"))
                        && !code.contains(&format!("crate::{other};")),
                    "{} (module {module}) uses crate::{other}",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn pure_modules_import_neither_storage_nor_surfaces() {
        // Nor the config file layer: each domain owns its settings, the config composes them.
        let surfaces = ["store", "web", "cli", "demo", "workers", "config"];
        for pure in [
            "metrics",
            "health",
            "actions",
            "listening",
            "share",
            "records",
            "limits",
        ] {
            check(pure, &surfaces);
        }
    }

    /// The top-level modules `module` uses (`crate::NAME` outside comments and tests).
    fn uses(module: &str, modules: &[String]) -> Vec<String> {
        let mut used: Vec<String> = Vec::new();
        for (_, code) in sources(module) {
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let name: String = line[i + 7..]
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if name != module && modules.contains(&name) && !used.contains(&name) {
                        used.push(name);
                    }
                }
            }
        }
        used
    }

    /// Depth first: a module met again while on the path closes a cycle.
    fn visit(
        m: &str,
        graph: &[(String, Vec<String>)],
        path: &mut Vec<String>,
        done: &mut Vec<String>,
    ) {
        if done.iter().any(|d| d == m) {
            return;
        }
        if let Some(i) = path.iter().position(|p| p == m) {
            panic!("module cycle: {} -> {m}", path[i..].join(" -> "));
        }
        path.push(m.to_string());
        for next in &graph
            .iter()
            .find(|(name, _)| name == m)
            .expect("a module")
            .1
        {
            visit(next, graph, path, done);
        }
        path.pop();
        done.push(m.to_string());
    }

    #[test]
    fn the_module_graph_has_no_cycle() {
        let lib_rs = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs");
        let lib = std::fs::read_to_string(lib_rs).unwrap();
        let modules: Vec<String> = lib
            .lines()
            .filter_map(|l| l.strip_prefix("pub mod "))
            .map(|l| l.trim_end_matches(';').to_string())
            .collect();
        assert!(modules.len() > 10, "{modules:?}");
        let graph: Vec<(String, Vec<String>)> = modules
            .iter()
            .map(|m| (m.clone(), uses(m, &modules)))
            .collect();
        let mut done = Vec::new();
        for (m, _) in &graph {
            visit(m, &graph, &mut Vec::new(), &mut done);
        }
        assert_eq!(done.len(), modules.len());
    }

    #[test]
    fn storage_imports_no_surface_and_no_worker() {
        check("store", &["web", "cli", "demo", "workers"]);
        check("workers", &["web", "cli", "demo"]);
    }
}
