//! The real binary: exit codes, and the gate on this very repository.

use std::path::Path;
use std::process::Command;

fn lint() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hotpath-lint"))
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn exit_codes() {
    let code = |args: &[&str], dir: &str| {
        lint()
            .args(args)
            .arg(fixture(dir))
            .output()
            .unwrap()
            .status
            .code()
    };
    assert_eq!(code(&[], "path_calls/clean"), Some(0));
    assert_eq!(code(&[], "path_calls/bad"), Some(1));
    assert_eq!(code(&[], "errors/parse_error"), Some(2));
    assert_eq!(code(&["--no-such-flag"], "path_calls/clean"), Some(2));
    let help = lint().arg("--help").output().unwrap();
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--baseline"));
}

/// The gate itself: no LLM call is reachable from this repository's hot path, with the
/// repository's own `hotpath.toml`.
#[test]
fn this_repository_is_clean() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = lint().arg(repo).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
