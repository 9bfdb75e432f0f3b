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

/// The target directory this test binary was built in (`<target>/debug/deps/adoption-*`).
fn target_dir() -> std::path::PathBuf {
    let exe = Path::new(env!("CARGO_BIN_EXE_hotpath-lint"));
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// The `run:` script of the step named `name` in `action.yml` (a one-line `run: cmd` or a
/// `run: |` block).
fn action_step(yml: &str, name: &str) -> String {
    let start = yml
        .find(&format!("- name: {name}\n"))
        .unwrap_or_else(|| panic!("action.yml has no step {name}"));
    let step = &yml[start..];
    let run_at = step.find("run: ").expect("a run key");
    let after = &step[run_at + "run: ".len()..];
    if let Some(block) = after.strip_prefix("|\n") {
        let indent = block.len() - block.trim_start().len();
        block
            .lines()
            .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent)
            .map(|l| l.get(indent..).unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        after.lines().next().unwrap().to_string()
    }
}

/// `action.yml`'s two steps, run for real on a throwaway repository: the install step
/// (`cargo install --locked --path`, here with `--debug --offline` and this build's target
/// directory so that it reuses what `cargo test` already compiled), then the lint step with
/// its inputs, SARIF included. A new violation fails the job (1); a baseline lets it in (0).
#[test]
fn the_actions_install_and_run_steps_work_in_another_repository() {
    let action = Path::new(env!("CARGO_MANIFEST_DIR")).join("../action.yml");
    let yml = std::fs::read_to_string(&action).unwrap();
    let install = action_step(&yml, "Install hotpath-lint");
    assert!(
        install.contains("cargo install --locked --path"),
        "{install}"
    );
    let run = action_step(&yml, "Run hotpath-lint");

    let dir = tempfile::tempdir().unwrap();
    let runner_temp = dir.path().join("runner");
    std::fs::create_dir_all(&runner_temp).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let cargo_dir = Path::new(&cargo).parent().map(Path::to_path_buf);
    let path = std::env::join_paths(cargo_dir.into_iter().chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let action_path = action.parent().unwrap().canonicalize().unwrap();
    let step = |script: &str, repo: &Path, baseline: &str| {
        let out = Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(repo)
            .env("PATH", &path)
            .env("GITHUB_ACTION_PATH", &action_path)
            .env("RUNNER_TEMP", &runner_temp)
            .env("CARGO_TARGET_DIR", target_dir())
            .env("INPUT_PATH", ".")
            .env("INPUT_CONFIG", "")
            .env("INPUT_BASELINE", baseline)
            .env("INPUT_FORMAT", "github")
            .env("INPUT_SARIF", "hotpath-lint.sarif")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap_or(-1), text)
    };

    let repo = dir.path().join("game");
    write(&repo, "Cargo.toml", MANIFEST);
    write(&repo, "app/Cargo.toml", APP_MANIFEST);
    write(&repo, "hotpath.toml", CONFIG);
    write(
        &repo,
        "app/src/lib.rs",
        &lib("    pub fn on_attack() -> u32 {\n        1\n    }\n"),
    );

    let (code, out) = step(&format!("{install} --debug --offline"), &repo, "");
    assert_eq!(code, 0, "{out}");
    let installed = runner_temp.join("hotpath-lint/bin/hotpath-lint");
    assert!(installed.exists(), "{out}");

    let (code, out) = step(&run, &repo, "");
    assert_eq!(code, 0, "clean: {out}");

    let legacy = "    pub fn on_attack() -> String {\n        crate::llm::generate(\"a\")\n    }\n";
    write(&repo, "app/src/lib.rs", &lib(legacy));
    let (code, out) = step(&run, &repo, "");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("::error file=app/src/lib.rs"), "{out}");
    let sarif = std::fs::read_to_string(repo.join("hotpath-lint.sarif")).unwrap();
    assert!(sarif.contains("hotpath-llm-reachable"), "{sarif}");

    // Adopted with a baseline recorded by the installed binary: the job passes.
    let record = Command::new(&installed)
        .args(["--baseline", "hotpath-baseline.json", "."])
        .current_dir(&repo)
        .output()
        .unwrap();
    assert_eq!(record.status.code(), Some(0));
    let (code, out) = step(&run, &repo, "hotpath-baseline.json");
    assert_eq!(code, 0, "baselined: {out}");
}
