//! Adoption as docs/LINT.md describes it, in a throwaway git repository outside this
//! workspace: the built binary, the pre-commit hook from `lint/hooks/pre-commit`, a baseline
//! for a codebase that is not clean yet, and the exit codes 0/1/2 a team scripts against.

use std::path::Path;
use std::process::Command;

const MANIFEST: &str = "[workspace]\nresolver = \"3\"\nmembers = [\"app\"]\n";
const APP_MANIFEST: &str = "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2024\"\n";
const CONFIG: &str = "[hot_path]\nroots = [\"app::hot\"]\n[llm]\nsinks = [\"app::llm\"]\n";

fn lib(hot_body: &str) -> String {
    format!(
        "pub mod llm {{\n    pub fn generate(p: &str) -> String {{\n        p.to_string()\n    }}\n}}\n\
         pub mod hot {{\n{hot_body}}}\n"
    )
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// Runs the installed pre-commit hook the way git does (from the repository root).
fn hook(repo: &Path) -> (i32, String) {
    let out = Command::new("sh")
        .arg(repo.join(".git/hooks/pre-commit"))
        .current_dir(repo)
        .env("HOTPATH_LINT", env!("CARGO_BIN_EXE_hotpath-lint"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_new_repository_adopts_the_lint_through_the_hook_and_a_baseline() {
    let Ok(git) = Command::new("git").arg("--version").output() else {
        eprintln!("git not installed: the hook cannot be exercised");
        return;
    };
    assert!(git.status.success());
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("game");
    write(&repo, "Cargo.toml", MANIFEST);
    write(&repo, "app/Cargo.toml", APP_MANIFEST);
    write(
        &repo,
        "app/src/lib.rs",
        &lib("    pub fn on_attack() -> u32 {\n        1\n    }\n"),
    );
    write(&repo, "hotpath.toml", CONFIG);
    let init = Command::new("git")
        .arg("init")
        .arg("-q")
        .arg(&repo)
        .output()
        .unwrap();
    assert!(init.status.success());
    let hook_src = Path::new(env!("CARGO_MANIFEST_DIR")).join("hooks/pre-commit");
    std::fs::copy(&hook_src, repo.join(".git/hooks/pre-commit")).unwrap();

    // Clean: 0.
    let (code, out) = hook(&repo);
    assert_eq!(code, 0, "{out}");

    // A codebase that is not clean yet: 1, then a recorded baseline lets it in.
    let legacy = "    pub fn on_attack() -> String {\n        crate::llm::generate(\"a\")\n    }\n";
    write(&repo, "app/src/lib.rs", &lib(legacy));
    let (code, out) = hook(&repo);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("entry: app::hot::on_attack"), "{out}");
    let baseline = repo.join("hotpath-baseline.json");
    let record = Command::new(env!("CARGO_BIN_EXE_hotpath-lint"))
        .arg("--baseline")
        .arg(&baseline)
        .arg(&repo)
        .output()
        .unwrap();
    assert_eq!(record.status.code(), Some(0));
    let (code, out) = hook(&repo);
    assert_eq!(code, 0, "the baselined violation is known: {out}");
    assert!(out.contains("baseline: 1 known, 0 fixed"), "{out}");

    // A new chain fails the commit; only it is reported.
    let fresh = format!(
        "{legacy}    pub fn on_parry() -> String {{\n        crate::llm::generate(\"p\")\n    }}\n"
    );
    write(&repo, "app/src/lib.rs", &lib(&fresh));
    let (code, out) = hook(&repo);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("entry: app::hot::on_parry"), "{out}");
    assert!(!out.contains("entry: app::hot::on_attack"), "{out}");

    // A broken configuration is neither pass nor fail: 2.
    write(
        &repo,
        "hotpath.toml",
        "[hot_path]\nroots = [\"app::hott\"]\n[llm]\nsinks = [\"app::llm\"]\n",
    );
    let (code, out) = hook(&repo);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("matches nothing"), "{out}");
}
