//! Output formats, the audit and the baseline, on fixture workspaces.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn run_at(root: &Path, extra: &[&str]) -> (ExitCode, String, String) {
    let mut args: Vec<String> = vec!["hotpath-lint".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(root.to_string_lossy().into_owned());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = hotpath_lint::cli::main_with(args, &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

#[test]
fn text_names_the_chain_and_the_fix() {
    let (code, out, _) = run_at(&fixture("relative_paths/bad"), &[]);
    assert_eq!(code, ExitCode::from(1));
    assert!(out.contains("--> app/src/lib.rs:13"), "{out}");
    assert!(out.contains("entry: app::hot::via_self"), "{out}");
    assert!(
        out.contains("-> app::hot::inner::deep  at app/src/lib.rs:13  [resolved]"),
        "{out}"
    );
    assert!(
        out.contains("-> app::llm::generate  at app/src/lib.rs:17  [resolved]"),
        "{out}"
    );
    assert!(
        out.contains("help: move the LLM call into a background job and dispatch it"),
        "{out}"
    );
    assert!(out.contains("2 violation(s)"), "{out}");
}

#[test]
fn sarif_is_2_1_0_with_locations_flows_and_suppressions() {
    let (code, out, _) = run_at(&fixture("relative_paths/bad"), &["--format", "sarif"]);
    assert_eq!(code, ExitCode::from(1));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["version"], "2.1.0");
    assert!(v["$schema"].as_str().unwrap().contains("sarif-2.1.0"));
    let run = &v["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "hotpath-lint");
    let rule = run["tool"]["driver"]["rules"][0]["id"].as_str().unwrap();
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        assert_eq!(r["ruleId"], rule);
        assert_eq!(r["level"], "error");
        let loc = &r["locations"][0]["physicalLocation"];
        assert_eq!(loc["artifactLocation"]["uri"], "app/src/lib.rs");
        assert!(loc["region"]["startLine"].as_u64().unwrap() >= 1);
        assert!(r["partialFingerprints"]["hotpathLint/v1"].is_string());
        assert!(
            !r["codeFlows"][0]["threadFlows"][0]["locations"]
                .as_array()
                .unwrap()
                .is_empty()
        );
    }

    let (code, out, _) = run_at(&fixture("suppression/clean"), &["--format", "sarif"]);
    assert_eq!(code, ExitCode::from(0));
    let v: Value = serde_json::from_str(&out).unwrap();
    let results = v["runs"][0]["results"].as_array().unwrap();
    assert_eq!(
        results
            .iter()
            .filter(|r| r["suppressions"][0]["kind"] == "inSource")
            .count(),
        2
    );
    assert_eq!(
        results.iter().filter(|r| r["level"] == "warning").count(),
        1,
        "the stale one"
    );
}

#[test]
fn github_annotations_one_line_each() {
    let (code, out, _) = run_at(&fixture("relative_paths/bad"), &["--format", "github"]);
    assert_eq!(code, ExitCode::from(1));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for l in lines {
        assert!(l.starts_with("::error file=app/src/lib.rs,line="), "{l}");
        assert!(
            l.contains("%0Ahelp: move the LLM call into a background job"),
            "{l}"
        );
    }
    let (_, out, _) = run_at(&fixture("suppression/clean"), &["--format", "github"]);
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("::notice file=app/src/lib.rs,line="))
            .count(),
        2,
        "{out}"
    );
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("::warning file=app/src/lib.rs,line=18::"))
            .count(),
        1,
        "{out}"
    );
}

#[test]
fn audit_lists_every_llm_call_site() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.md");
    let (code, _, _) = run_at(&fixture("allow/bad"), &["--audit", audit.to_str().unwrap()]);
    assert_eq!(code, ExitCode::from(1));
    let md = std::fs::read_to_string(&audit).unwrap();
    assert!(md.starts_with("# hotpath-lint audit"), "{md}");
    // The vetted fn's call is listed but not hot (the chain is cut there); the direct call is.
    assert!(md.contains("| `app/src/lib.rs:10` | `app::vetted::cached_or_generate` | `app::llm::generate` | `app::llm::generate` | resolved | no |"), "{md}");
    assert!(md.contains("| `app/src/lib.rs:16` | `app::hot::handle` | `app::llm::generate` | `app::llm::generate` | resolved | **HOT** |"), "{md}");
    assert!(md.contains("1. `app::hot::handle` (entry)"), "{md}");

    let (code, _, _) = run_at(
        &fixture("external_sink/clean"),
        &["--audit", audit.to_str().unwrap()],
    );
    assert_eq!(code, ExitCode::from(0));
    let md = std::fs::read_to_string(&audit).unwrap();
    assert!(md.contains("`app::worker::job` | `genai::Client::exec_chat` | `genai::Client::exec_chat` | resolved | no |"), "{md}");
}

#[test]
fn baseline_records_then_fails_only_on_new_violations() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    copy_dir(&fixture("path_calls/bad"), &ws);
    let baseline = dir.path().join("baseline.json");
    let b = baseline.to_str().unwrap();

    // No file yet: record and pass.
    let (code, _, err) = run_at(&ws, &["--baseline", b]);
    assert_eq!(code, ExitCode::from(0), "{err}");
    let recorded: Value =
        serde_json::from_str(&std::fs::read_to_string(&baseline).unwrap()).unwrap();
    assert_eq!(recorded["violations"].as_array().unwrap().len(), 2);
    assert_eq!(recorded["violations"][0]["callee"], "app::llm::generate");

    // Unrelated edits that move lines do not break it.
    let lib = ws.join("app/src/lib.rs");
    let src = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, format!("//! Moved down.\n\n\n{src}")).unwrap();
    let (code, out, _) = run_at(&ws, &["--baseline", b, "--format", "json"]);
    assert_eq!(code, ExitCode::from(0), "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["violations"], serde_json::json!([]));
    assert_eq!(v["baseline"]["known"], 2);

    // A new chain fails, and only it is reported.
    let src = std::fs::read_to_string(&lib).unwrap();
    let src = src.replace(
        "pub fn plain() -> String {",
        "pub fn fresh() -> String {\n        crate::llm::generate(\"new\")\n    }\n    pub fn plain() -> String {",
    );
    std::fs::write(&lib, src).unwrap();
    let (code, out, _) = run_at(&ws, &["--baseline", b, "--format", "json"]);
    assert_eq!(code, ExitCode::from(1), "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["violations"].as_array().unwrap().len(), 1);
    assert_eq!(v["violations"][0]["entry"], "app::hot::fresh");
}

#[test]
fn every_format_names_the_hot_entries_reaching_a_violation() {
    let dir = fixture("outer_entries/bad");
    let (_, out, _) = run_at(&dir, &["--format", "sarif"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let r = &v["runs"][0]["results"][0];
    assert!(
        r["message"]["text"]
            .as_str()
            .unwrap()
            .contains("\nreached from: app::hot::on_attack, app::hot::on_combo\n"),
        "{r:#}"
    );
    assert_eq!(
        r["properties"]["alsoReachedFrom"],
        serde_json::json!(["app::hot::on_attack", "app::hot::on_combo"])
    );
    let (_, out, _) = run_at(&dir, &["--format", "github"]);
    assert!(
        out.contains("%0Areached from: app::hot::on_attack, app::hot::on_combo%0A"),
        "{out}"
    );
}
