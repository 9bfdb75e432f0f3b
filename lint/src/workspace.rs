//! Finding what to analyse: the packages of a workspace (or a single package) and their crate
//! targets (library, `src/main.rs`, `src/bin/*`). Tests, benches and examples are not targets
//! here: they are out of the lint's scope by contract.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// One crate to analyse: a library or a binary target of a member package.
#[derive(Debug, Clone)]
pub struct CrateTarget {
    /// The crate's name as written in paths (`-` replaced by `_`).
    pub name: String,
    /// The root file (`lib.rs`, `main.rs`, ...).
    pub root: PathBuf,
    /// True for the library target; other crates of the package see it under `name`.
    pub is_lib: bool,
    /// The package directory, whose `src/` is pre-parsed in parallel.
    pub package_dir: PathBuf,
    /// The package name as written in its manifest (`npc-brain`).
    pub package: String,
    /// Dependencies whose key differs from their package: `(name in code, package)`.
    pub renamed_deps: Vec<(String, String)>,
}

/// Lists the crate targets of the workspace or package at `root`.
pub fn discover(root: &Path) -> Result<Vec<CrateTarget>> {
    let manifest = root.join("Cargo.toml");
    let doc = read_manifest(&manifest)?;
    let workspace_deps = doc
        .get("workspace")
        .and_then(|w| w.get("dependencies"))
        .and_then(|d| d.as_table());
    let mut dirs = Vec::new();
    if let Some(ws) = doc.get("workspace").and_then(|w| w.as_table()) {
        let excluded: Vec<PathBuf> = string_array(ws.get("exclude"))
            .iter()
            .map(|e| root.join(e))
            .collect();
        for member in string_array(ws.get("members")) {
            for dir in expand_member(root, &member)? {
                if !excluded.iter().any(|e| dir.starts_with(e)) && dir.join("Cargo.toml").is_file()
                {
                    dirs.push(dir);
                }
            }
        }
    }
    if doc.get("package").is_some() && !dirs.iter().any(|d| d == root) {
        dirs.insert(0, root.to_path_buf());
    }
    if dirs.is_empty() {
        return Err(Error::Io {
            path: manifest,
            message: "neither a [package] nor any [workspace] member found".into(),
        });
    }
    let mut targets = Vec::new();
    for dir in dirs {
        package_targets(&dir, workspace_deps, &mut targets)?;
    }
    Ok(targets)
}

fn read_manifest(path: &Path) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        message: format!("cannot read manifest: {e}"),
    })?;
    text.parse::<toml::Table>().map_err(|e| Error::Io {
        path: path.to_path_buf(),
        message: format!("malformed manifest: {e}"),
    })
}

fn string_array(v: Option<&toml::Value>) -> Vec<String> {
    v.and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Expands a member entry; only a trailing `*` component is supported as a glob, which is
/// what workspaces use in practice (`crates/*`).
fn expand_member(root: &Path, member: &str) -> Result<Vec<PathBuf>> {
    if let Some(prefix) = member.strip_suffix("/*") {
        let dir = root.join(prefix);
        let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| Error::Io {
                path: dir.clone(),
                message: e.to_string(),
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        out.sort();
        Ok(out)
    } else if member.contains('*') || member.contains('?') || member.contains('[') {
        Err(Error::Io {
            path: root.join("Cargo.toml"),
            message: format!("unsupported glob in workspace member `{member}` (only `dir/*`)"),
        })
    } else {
        Ok(vec![root.join(member)])
    }
}

fn package_targets(
    dir: &Path,
    workspace_deps: Option<&toml::Table>,
    out: &mut Vec<CrateTarget>,
) -> Result<()> {
    let manifest = dir.join("Cargo.toml");
    let doc = read_manifest(&manifest)?;
    let Some(pkg_name) = doc
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
    else {
        // A nested virtual manifest listed as a member: nothing to analyse in it.
        return Ok(());
    };
    let crate_name = |n: &str| n.replace('-', "_");
    let renamed_deps = crate::deps::renamed(&doc, workspace_deps);
    let lib = doc.get("lib");
    let lib_path = lib
        .and_then(|l| l.get("path"))
        .and_then(|p| p.as_str())
        .map(|p| dir.join(p))
        .unwrap_or_else(|| dir.join("src/lib.rs"));
    if lib_path.is_file() {
        let name = lib
            .and_then(|l| l.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or(pkg_name);
        out.push(CrateTarget {
            name: crate_name(name),
            root: lib_path,
            is_lib: true,
            package_dir: dir.to_path_buf(),
            package: pkg_name.to_string(),
            renamed_deps: renamed_deps.clone(),
        });
    }
    let mut bins: Vec<(String, PathBuf)> = Vec::new();
    if let Some(list) = doc.get("bin").and_then(|b| b.as_array()) {
        for b in list {
            let name = b.get("name").and_then(|n| n.as_str()).unwrap_or(pkg_name);
            let path = match b.get("path").and_then(|p| p.as_str()) {
                Some(p) => dir.join(p),
                None if name == pkg_name => dir.join("src/main.rs"),
                None => dir.join("src/bin").join(format!("{name}.rs")),
            };
            bins.push((name.to_string(), path));
        }
    }
    let autobins = doc
        .get("package")
        .and_then(|p| p.get("autobins"))
        .and_then(|a| a.as_bool())
        .unwrap_or(true);
    if autobins {
        let main = dir.join("src/main.rs");
        if main.is_file() && !bins.iter().any(|(_, p)| *p == main) {
            bins.push((pkg_name.to_string(), main));
        }
        if let Ok(rd) = std::fs::read_dir(dir.join("src/bin")) {
            let mut found: Vec<(String, PathBuf)> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter_map(|p| {
                    if p.extension().is_some_and(|e| e == "rs") {
                        Some((p.file_stem()?.to_string_lossy().into_owned(), p))
                    } else if p.join("main.rs").is_file() {
                        Some((
                            p.file_name()?.to_string_lossy().into_owned(),
                            p.join("main.rs"),
                        ))
                    } else {
                        None
                    }
                })
                .collect();
            found.sort();
            for (n, p) in found {
                if !bins.iter().any(|(_, q)| *q == p) {
                    bins.push((n, p));
                }
            }
        }
    }
    for (name, path) in bins {
        if path.is_file() {
            out.push(CrateTarget {
                name: crate_name(&name),
                root: path,
                is_lib: false,
                package_dir: dir.to_path_buf(),
                package: pkg_name.to_string(),
                renamed_deps: renamed_deps.clone(),
            });
        }
    }
    Ok(())
}

/// Every `.rs` file under `dir`, skipping build output and out-of-scope folders, so they can
/// be parsed in parallel before the module tree says which of them are really used.
pub fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in rd.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if !matches!(
                name.as_ref(),
                "target" | "tests" | "benches" | "examples" | ".git"
            ) && !name.starts_with("target-")
            {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}
