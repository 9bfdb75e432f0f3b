//! Renamed dependencies: the name a crate's code uses for a dependency is the key of its
//! entry in `Cargo.toml`, which differs from the package when the entry says `package = ".."`
//! (`brain = { package = "npc-brain", path = ".." }` makes `brain::respond` mean
//! `npc_brain::respond`). Without this, calls through the renamed key resolve to nothing and
//! the gate is silently open.

/// `(name in code, package name)` for every dependency whose key differs from its package:
/// `[dependencies]` and `[target.<cfg>.dependencies]` entries (path, git or registry alike),
/// and `key.workspace = true` entries whose `[workspace.dependencies]` entry renames.
/// Dev- and build-dependencies serve code the lint does not analyse (tests, `build.rs`).
pub fn renamed(
    manifest: &toml::Table,
    workspace_deps: Option<&toml::Table>,
) -> Vec<(String, String)> {
    let mut tables: Vec<&toml::Table> = Vec::new();
    if let Some(t) = manifest.get("dependencies").and_then(|d| d.as_table()) {
        tables.push(t);
    }
    if let Some(targets) = manifest.get("target").and_then(|t| t.as_table()) {
        for spec in targets.values() {
            if let Some(t) = spec.get("dependencies").and_then(|d| d.as_table()) {
                tables.push(t);
            }
        }
    }
    let mut out = Vec::new();
    for table in tables {
        for (key, entry) in table {
            let inherited = entry.get("workspace").and_then(|w| w.as_bool()) == Some(true);
            let source = if inherited {
                workspace_deps.and_then(|ws| ws.get(key))
            } else {
                Some(entry)
            };
            let Some(package) = source
                .and_then(|s| s.get("package"))
                .and_then(|p| p.as_str())
            else {
                continue;
            };
            let code_name = key.replace('-', "_");
            if code_name != package.replace('-', "_") && !out.iter().any(|(k, _)| *k == code_name) {
                out.push((code_name, package.to_string()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str) -> toml::Table {
        s.parse().unwrap()
    }

    #[test]
    fn every_place_a_rename_can_be_written() {
        let ws = table(
            "[workspace.dependencies]\nseer = { package = \"llm-client\", version = \"1\" }\nplain = \"1\"\n",
        );
        let ws_deps = ws["workspace"]["dependencies"].as_table();
        let m = table(concat!(
            "[dependencies]\n",
            "brain = { package = \"npc-brain\", path = \"../brain\" }\n",
            "oracle = { package = \"llm-client\", git = \"https://example.org/x\" }\n",
            "same-name = { package = \"same_name\", version = \"1\" }\n",
            "seer.workspace = true\n",
            "plain = { workspace = true }\n",
            "[target.'cfg(unix)'.dependencies]\n",
            "unixy = { package = \"npc-unix\", version = \"2\" }\n",
            "[dev-dependencies]\n",
            "testy = { package = \"test-only\", version = \"1\" }\n",
        ));
        let mut got = renamed(&m, ws_deps);
        got.sort();
        assert_eq!(
            got,
            vec![
                ("brain".to_string(), "npc-brain".to_string()),
                ("oracle".to_string(), "llm-client".to_string()),
                ("seer".to_string(), "llm-client".to_string()),
                ("unixy".to_string(), "npc-unix".to_string()),
            ]
        );
    }
}
