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
pub mod ingest;
pub mod listening;
pub mod metrics;
pub mod share;
pub mod store;

pub mod cli;
pub mod demo;
pub mod web;
pub mod workers;

/// The layering the modules keep, checked on the source (STYLE.md, issue 29): the pure
/// domain modules import neither storage nor the surfaces, and storage imports no surface
/// nor the workers that run it. (A whole-graph "no cycles" check joins when the config
/// types move into their domains.)
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
        let surfaces = ["store", "web", "cli", "demo", "workers"];
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

    #[test]
    fn storage_imports_no_surface_and_no_worker() {
        check("store", &["web", "cli", "demo", "workers"]);
        check("workers", &["web", "cli", "demo"]);
    }
}
