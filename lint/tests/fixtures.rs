//! One fixture workspace per resolution rule, each violating (`bad`) and clean, run through
//! the real command line in-process. Violating fixtures have their JSON snapshotted.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Runs the CLI on a fixture; returns (exit code, stdout, stderr).
fn run(name: &str, extra: &[&str]) -> (ExitCode, String, String) {
    let root = fixture(name);
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

fn json(name: &str) -> (ExitCode, Value) {
    let (code, out, err) = run(name, &["--format", "json"]);
    let v = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("{name}: {e}\nstdout: {out}\nstderr: {err}"));
    (code, v)
}

/// A violating fixture: exit 1, JSON snapshotted, and each listed entry reaches a sink with
/// the expected `via` somewhere in its chain.
fn check_bad(name: &str, expected: &[(&str, &str)]) -> Value {
    let (code, v) = json(&format!("{name}/bad"));
    assert_eq!(code, ExitCode::from(1), "{name}/bad must fail: {v:#}");
    for (entry, via) in expected {
        let hit = v["violations"].as_array().unwrap().iter().any(|x| {
            x["entry"] == *entry
                && x["chain"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|h| h["via"] == *via)
        });
        assert!(
            hit,
            "{name}/bad: no violation from {entry} via {via}: {v:#}"
        );
    }
    snapshot(name, &v);
    v
}

/// Snapshots with maps sorted: whether `serde_json` keeps insertion order depends on which
/// other crates of the build enable its `preserve_order` feature, so the order is fixed here.
fn snapshot(name: &str, v: &Value) {
    insta::with_settings!({ sort_maps => true }, {
        insta::assert_json_snapshot!(name, v);
    });
}

/// A clean fixture: exit 0 and no violation.
fn check_clean(name: &str) -> Value {
    let (code, v) = json(&format!("{name}/clean"));
    assert_eq!(
        v["violations"],
        serde_json::json!([]),
        "{name}/clean: {v:#}"
    );
    assert_eq!(code, ExitCode::from(0));
    v
}

#[test]
fn path_calls() {
    check_bad(
        "path_calls",
        &[
            ("app::hot::plain", "resolved"),
            ("app::hot::qualified", "resolved"),
        ],
    );
    check_clean("path_calls");
}

#[test]
fn use_aliases_globs_groups_reexports() {
    check_bad(
        "use_forms",
        &[
            ("app::hot::alias", "resolved"),
            ("app::hot::glob", "resolved"),
            ("app::hot::nested", "resolved"),
            ("app::hot::reexport", "resolved"),
        ],
    );
    check_clean("use_forms");
}

#[test]
fn crate_self_super() {
    let v = check_bad(
        "relative_paths",
        &[
            ("app::hot::via_super", "resolved"),
            ("app::hot::via_self", "resolved"),
        ],
    );
    // The chain through the helper names every hop, file and line.
    let via_self = v["violations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["entry"] == "app::hot::via_self")
        .unwrap();
    assert_eq!(via_self["chain"][0]["fn"], "app::hot::inner::deep");
    assert_eq!(via_self["chain"][1]["fn"], "app::llm::generate");
    assert_eq!(via_self["chain"][1]["file"], "app/src/lib.rs");
    check_clean("relative_paths");
}

#[test]
fn self_type_and_qualified_trait_paths() {
    check_bad(
        "assoc_calls",
        &[
            ("app::hot::Handler::helper", "resolved"),
            ("app::hot::via_qualified", "resolved"),
        ],
    );
    check_clean("assoc_calls");
}

#[test]
fn method_receivers_from_fields_params_lets_and_constructors() {
    check_bad(
        "receivers",
        &[
            ("app::hot::Engine::field", "resolved"),
            ("app::hot::param", "resolved"),
            ("app::hot::annotated", "resolved"),
            ("app::hot::constructed", "resolved"),
            ("app::hot::literal", "resolved"),
        ],
    );
    check_clean("receivers");
}

#[test]
fn unknown_receiver_falls_back_to_method_name() {
    check_bad("name_fallback", &[("app::hot::unknown", "name")]);
    check_clean("name_fallback");
}

#[test]
fn dyn_and_generic_bounds_reach_every_impl() {
    check_bad(
        "dyn_generic",
        &[
            ("app::hot::by_dyn", "dyn"),
            ("app::hot::by_bound", "dyn"),
            ("app::hot::by_where", "dyn"),
            ("app::hot::by_impl", "dyn"),
            ("app::hot::concrete", "resolved"),
        ],
    );
    check_clean("dyn_generic");
}

#[test]
fn closures_async_blocks_and_spawned_tasks() {
    check_bad(
        "closures_spawn",
        &[
            ("app::hot::closure", "resolved"),
            ("app::hot::async_block", "resolved"),
            ("app::hot::tokio_task", "spawned"),
            ("app::hot::thread", "spawned"),
            ("app::hot::blocking", "spawned"),
        ],
    );
    check_clean("closures_spawn");
}

#[test]
fn macro_arguments() {
    check_bad(
        "macros",
        &[
            ("app::hot::printed", "resolved"),
            ("app::hot::formatted", "resolved"),
            ("app::hot::vector", "resolved"),
            ("app::hot::joined", "resolved"),
        ],
    );
    check_clean("macros");
}

#[test]
fn fn_items_passed_as_values() {
    check_bad(
        "fn_values",
        &[
            ("app::hot::mapped", "resolved"),
            ("app::hot::stored", "resolved"),
        ],
    );
    check_clean("fn_values");
}

#[test]
fn cross_crate_calls_and_dashed_crate_names() {
    let v = check_bad("cross_crate", &[("game_engine::hot::handle", "resolved")]);
    // The sink is a module prefix; the label extends it to what was called.
    assert_eq!(v["violations"][0]["sink"], "llm-client::api::complete");
    check_clean("cross_crate");
}

#[test]
fn cycles_terminate() {
    check_bad("cycles", &[("app::hot::pong", "resolved")]);
    check_clean("cycles");
}

#[test]
fn precision_same_method_name_on_known_type_and_type_named_only() {
    check_clean("precision");
    // The same method, now really calling the client, is found.
    check_bad(
        "precision",
        &[("app::hot::Autocomplete::complete", "resolved")],
    );
}

#[test]
fn allowed_paths_cut_chains() {
    let v = check_bad("allow", &[("app::hot::handle", "resolved")]);
    assert_eq!(
        v["violations"].as_array().unwrap().len(),
        1,
        "only the direct call remains"
    );
    check_clean("allow");
}

#[test]
fn test_code_is_out_bins_and_features_are_in() {
    check_bad(
        "scope",
        &[
            ("app::hot::live", "resolved"),
            ("app_tool::hot::run", "resolved"),
        ],
    );
    check_clean("scope");
}

#[test]
fn sinks_outside_the_workspace_by_path() {
    let v = check_bad(
        "external_sink",
        &[
            ("app::hot::handle", "resolved"),
            ("app::hot::constructed", "resolved"),
        ],
    );
    let callees: Vec<&str> = v["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            x["chain"].as_array().unwrap().last().unwrap()["fn"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert!(callees.contains(&"genai::Client::exec_chat"), "{callees:?}");
    check_clean("external_sink");
}

#[test]
fn module_files_mod_rs_path_attribute_and_inline() {
    check_bad(
        "module_files",
        &[
            ("app::hot::handlers::handle", "resolved"),
            ("app::hot::routes::v1::route", "resolved"),
        ],
    );
}

#[test]
fn suppressions_cut_chains_and_stale_ones_are_reported() {
    let v = check_clean("suppression");
    snapshot("suppression", &v);
    let s = v["suppressions"].as_array().unwrap();
    assert_eq!(s.len(), 3);
    assert_eq!(s.iter().filter(|x| x["stale"] == true).count(), 1);
    let (_, text, _) = run("suppression/clean", &[]);
    assert!(text.contains("stale suppression"), "{text}");
}

#[test]
fn suppression_without_reason_is_an_error() {
    let (code, _, err) = run("suppression/no_reason", &[]);
    assert_eq!(code, ExitCode::from(2));
    assert!(
        err.contains("app/src/lib.rs:10") && err.contains("without a reason"),
        "{err}"
    );
}

#[test]
fn config_and_parse_errors_exit_2() {
    for (name, needle) in [
        ("errors/unmatched_root", "root `app::hott` matches nothing"),
        ("errors/unmatched_sink", "sink `app::lm` matches nothing"),
        ("errors/malformed_config", "hotpath.toml"),
        ("errors/parse_error", "app/src/llm.rs:1"),
    ] {
        let (code, _, err) = run(name, &[]);
        assert_eq!(code, ExitCode::from(2), "{name}: {err}");
        assert!(err.contains(needle), "{name}: {err}");
    }
    let (code, _, err) = run("path_calls/bad", &["--format", "yaml"]);
    assert_eq!(code, ExitCode::from(2), "{err}");
    let (code, _, err) = run("path_calls/bad", &["--config", "/nonexistent/hotpath.toml"]);
    assert_eq!(code, ExitCode::from(2), "{err}");
}

#[test]
fn receivers_inferred_through_variants_extractors_adapters_and_consts() {
    // Every `.len()`/`.is_empty()` here is on a known type, so the sink type's `len` is not
    // matched by name.
    check_clean("inference");
    // With the receiver's type truly unknown, the name fallback still reports it.
    check_bad("inference", &[("app::hot::unknown", "name")]);
}

/// The last hop of the violation from `entry`.
fn callee_of<'a>(v: &'a Value, entry: &str) -> &'a str {
    let x = v["violations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["entry"] == entry)
        .unwrap_or_else(|| panic!("no violation from {entry}: {v:#}"));
    x["chain"].as_array().unwrap().last().unwrap()["fn"]
        .as_str()
        .unwrap()
}

#[test]
fn renamed_dependencies_resolve_to_their_package() {
    let v = check_bad(
        "renamed_deps",
        &[
            ("game::hot::on_talk", "resolved"),
            ("game::hot::on_ask", "resolved"),
            ("game::hot::on_remote", "resolved"),
            ("game::hot::on_think", "resolved"),
        ],
    );
    // Each call lands on the package's crate, not on the key it was written with.
    assert_eq!(
        callee_of(&v, "game::hot::on_talk"),
        "npc_brain::llm::respond"
    );
    assert_eq!(
        callee_of(&v, "game::hot::on_ask"),
        "llm_client::Client::send"
    );
    assert_eq!(callee_of(&v, "game::hot::on_remote"), "llm_rpc::call");
    assert_eq!(
        callee_of(&v, "game::hot::on_think"),
        "npc_mind::think::generate"
    );
    check_clean("renamed_deps");
}

#[test]
fn trait_impls_for_std_and_foreign_types_and_blanket_impls() {
    let entries = [
        "announce_seconds",
        "announce_param",
        "narrate_string",
        "narrate_slice",
        "narrate_vec",
        "narrate_tuple",
        "narrate_tuple_literal",
        "narrate_option",
        "narrate_wrapping",
        "speak_ref",
        "speak_boxed",
        "speak_arc",
    ]
    .map(|e| format!("app::hot::{e}"));
    let expected: Vec<(&str, &str)> = entries.iter().map(|e| (e.as_str(), "resolved")).collect();
    let v = check_bad("foreign_impls", &expected);
    // Every chain goes through the impl that applies, never by name.
    assert_eq!(v["violations"].as_array().unwrap().len(), entries.len());
    assert_eq!(
        v["violations"][0]["chain"][0]["fn"], "app::say::T::announce",
        "{v:#}"
    );
    check_clean("foreign_impls");
}

#[test]
fn std_and_foreign_receivers_of_known_type_are_not_matched_by_name() {
    // `send` on `std::sync::mpsc::Sender<Job>` (field, let, parameter, tuple, map value) and
    // on tokio's `Sender<Job>` is not the LLM client's `send`.
    check_clean("std_receivers");
    let v = check_bad(
        "std_receivers",
        &[
            ("app::hot::Engine::ask", "resolved"),
            ("app::hot::handler", "resolved"),
            ("app::hot::wrapped", "deref"),
            ("app::hot::unknown", "name"),
        ],
    );
    assert_eq!(v["violations"].as_array().unwrap().len(), 4, "{v:#}");
}

#[test]
fn cfg_gated_twins_are_all_kept() {
    let entries = [
        "on_reply",
        "on_think",
        "on_ping",
        "on_fetch",
        "on_probe",
        "on_render",
        "on_spawn",
    ]
    .map(|e| format!("app::hot::{e}"));
    let expected: Vec<(&str, &str)> = entries.iter().map(|e| (e.as_str(), "resolved")).collect();
    let v = check_bad("cfg_twins", &expected);
    // The chain names the twin that calls the sink, by its file and line.
    let fetch = v["violations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["entry"] == "app::hot::on_fetch")
        .unwrap();
    assert_eq!(fetch["chain"][1]["file"], "app/src/net/remote.rs", "{v:#}");
    check_clean("cfg_twins");
}

#[test]
fn every_hot_entry_reaching_a_violation_is_listed() {
    let v = check_bad(
        "outer_entries",
        &[("app::hot::combat::resolve_hit", "resolved")],
    );
    let list = v["violations"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{v:#}");
    // The innermost hot fn stays the entry; the handlers calling it follow, nearest first;
    // the caller whose call is suppressed is not among them.
    assert_eq!(list[0]["entry"], "app::hot::combat::resolve_hit");
    assert_eq!(
        list[0]["also_reached_from"],
        serde_json::json!(["app::hot::on_attack", "app::hot::on_combo"])
    );
    assert_eq!(v["summary"]["affected_entries"], 3);
    let (_, text, _) = run("outer_entries/bad", &[]);
    assert!(
        text.contains("  reached from: app::hot::on_attack, app::hot::on_combo\n"),
        "{text}"
    );
    assert!(
        text.contains("1 violation(s) affecting 3 hot entries"),
        "{text}"
    );
    check_clean("outer_entries");
}

#[test]
fn false_alarms_found_on_real_crates_stay_fixed() {
    check_clean("real_world");
}

#[test]
fn closure_parameters_take_the_callees_fn_bound_and_thread_locals_their_type() {
    let entries = [
        "Parker::park",
        "Parker::each_ask",
        "Parker::boxed_ask",
        "ufcs",
        "free",
        "cell",
        "local",
        "context::current::with_current",
    ]
    .map(|e| format!("app::hot::{e}"));
    let expected: Vec<(&str, &str)> = entries.iter().map(|e| (e.as_str(), "resolved")).collect();
    let v = check_bad("closure_bounds", &expected);
    let named = v["violations"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|x| x["chain"].as_array().unwrap())
        .any(|h| h["via"] == "name");
    assert!(!named, "every closure parameter's type is known: {v:#}");
    check_clean("closure_bounds");
}

#[test]
fn name_fallback_reaches_only_sinks_with_a_name_of_their_own_from_a_local() {
    let v = check_bad(
        "name_policy",
        &[
            ("app::hot::direct", "name"),
            ("app::hot::through_field", "name"),
            ("app::hot::through_lock", "name"),
            ("app::hot::in_a_task", "spawned"),
        ],
    );
    assert_eq!(v["violations"].as_array().unwrap().len(), 4, "{v:#}");
    check_clean("name_policy");
}

#[test]
fn values_moved_out_matched_and_returned_by_generic_methods_keep_their_type() {
    let v = check_bad(
        "moved_values",
        &[
            ("app::hot::Service::replace", "resolved"),
            ("app::hot::Service::take", "resolved"),
            ("app::hot::matched", "resolved"),
            ("app::hot::slot", "resolved"),
        ],
    );
    assert_eq!(v["violations"].as_array().unwrap().len(), 4, "{v:#}");
    check_clean("moved_values");
}

// Issue 20: what rustc runs without a call being written, functions kept as values, and
// types that come from traits. Each fixture is a small game server; `bad` holds the chain
// rustc would run, `clean` the same code without the LLM call behind it.

/// An entry and a `via` its chain must show.
type Expect = (&'static str, &'static str);

/// (fixture, expected chains, violations in `bad`).
const IMPLICIT_AND_VALUES: &[(&str, &[Expect], usize)] = &[
    ("macro_expansion", &[("app::hot::greet", "resolved")], 1),
    (
        "drop_impl",
        &[
            ("app::hot::quit", "implicit"),
            ("app::hot::rejoin", "implicit"),
            ("app::hot::preview", "implicit"),
        ],
        3,
    ),
    (
        "format_impls",
        &[
            ("app::hot::introduce", "implicit"),
            ("app::hot::title", "implicit"),
            ("app::hot::trace_mood", "implicit"),
        ],
        3,
    ),
    (
        "deref_impl",
        &[
            ("app::hot::line", "resolved"),
            ("app::hot::narrate", "resolved"),
        ],
        3,
    ),
    (
        "operators",
        &[
            ("app::hot::on_event", "implicit"),
            ("app::hot::epithet", "implicit"),
            ("app::hot::same_rank", "implicit"),
        ],
        3,
    ),
    (
        "conversions",
        &[
            ("app::hot::echo", "implicit"),
            ("app::hot::show", "implicit"),
        ],
        2,
    ),
    (
        "for_iterators",
        &[
            ("app::hot::chat", "implicit"),
            ("app::hot::replay", "implicit"),
        ],
        2,
    ),
    ("closure_registry", &[("app::hot::dispatch", "value")], 1),
    ("fn_tables", &[("app::hot::run", "resolved")], 1),
    (
        "outside_callbacks",
        &[
            ("app::hot::tick", "implicit"),
            ("app::hot::tick_boxed", "implicit"),
            ("app::hot::tick_generic", "implicit"),
        ],
        3,
    ),
    (
        "assoc_types",
        &[("app::hot::describe", "dyn"), ("app::hot::twice", "dyn")],
        2,
    ),
    (
        "trait_returns",
        &[("app::hot::greet", "dyn"), ("app::hot::shout", "dyn")],
        2,
    ),
    (
        "std_wrapper_methods",
        &[
            ("app::hot::via_arc_clone", "resolved"),
            ("app::hot::via_once", "resolved"),
        ],
        2,
    ),
    (
        "shape_impls",
        &[
            ("app::hot::duel", "resolved"),
            ("app::hot::crowd", "resolved"),
            ("app::hot::trio", "resolved"),
        ],
        3,
    ),
    (
        "lib_name_extern",
        &[
            ("app::hot::react", "resolved"),
            ("app::hot::react_path", "resolved"),
        ],
        2,
    ),
    // The three false alarms of issue 20: `clean` must stay clean, `bad` holds only the
    // call that does reach the model.
    (
        "trait_path_static",
        &[("app::hot::narrate_live", "resolved")],
        1,
    ),
    (
        "impl_type_args",
        &[("app::hot::react_generated", "resolved")],
        1,
    ),
    (
        "arc_clone",
        &[
            ("app::hot::fork", "resolved"),
            ("app::hot::fork_inner", "resolved"),
        ],
        2,
    ),
];

#[test]
fn implicit_calls_values_and_trait_types() {
    for (name, expected, count) in IMPLICIT_AND_VALUES {
        check_clean(name);
        let v = check_bad(name, expected);
        assert_eq!(
            v["violations"].as_array().unwrap().len(),
            *count,
            "{name}/bad: {v:#}"
        );
    }
}

#[test]
fn strict_reports_unresolved_hot_calls() {
    // Without --strict the call is invisible: no violation, exit 0.
    let (code, v) = json("strict_unresolved/bad");
    assert_eq!(code, ExitCode::from(0), "{v:#}");
    assert!(v.get("unresolved").is_none(), "{v:#}");
    let (code, out, _) = run("strict_unresolved/bad", &["--strict", "--format", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(code, ExitCode::from(1), "{v:#}");
    let u = v["unresolved"].as_array().unwrap();
    assert_eq!(u.len(), 1, "{v:#}");
    assert_eq!(u[0]["fn"], "app::hot::narrate");
    assert_eq!(u[0]["file"], "app/src/lib.rs");
    assert_eq!(u[0]["line"], 33);
    assert_eq!(v["summary"]["unresolved"], 1);
    let (code, text, _) = run("strict_unresolved/bad", &["--strict"]);
    assert_eq!(code, ExitCode::from(1));
    assert!(text.contains("error[hotpath-unresolved-call]"), "{text}");
    assert!(text.contains("--> app/src/lib.rs:33"), "{text}");
    // Typed, the same code is clean even in strict mode.
    let (code, out, _) = run("strict_unresolved/clean", &["--strict", "--format", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["unresolved"], serde_json::json!([]), "{v:#}");
    assert_eq!(code, ExitCode::from(0));
}

#[test]
fn items_and_tables() {
    // An item-position `macro_rules!` writing an impl, a `const` table of fn items, an
    // iterator adapter driving a workspace `next`, and boxed closures in a `Vec`.
    check_clean("items_and_tables");
    let v = check_bad(
        "items_and_tables",
        &[
            ("app::hot::guard", "resolved"),
            ("app::hot::verb", "resolved"),
            ("app::hot::lines", "implicit"),
            ("app::hot::systems", "value"),
        ],
    );
    assert_eq!(v["violations"].as_array().unwrap().len(), 4, "{v:#}");
}

#[test]
fn aliases_and_handoffs() {
    // A closure behind a `type Handler = Box<dyn Fn ..>` parameter and in `Some(Box::new(..))`,
    // a field through an axum `State` of a `Deref` type, `Drop` of a field set to `None`,
    // `Display` via tracing's `%npc`, a workspace component handed to an outside `spawn`
    // inside a tuple.
    check_clean("aliases_and_handoffs");
    let v = check_bad(
        "aliases_and_handoffs",
        &[
            ("app::hot::cmd", "value"),
            ("app::hot::fallback", "value"),
            ("app::hot::via_state", "resolved"),
            ("app::hot::end_turn", "implicit"),
            ("app::hot::log", "implicit"),
            ("app::hot::spawn", "spawned"),
        ],
    );
    assert_eq!(v["violations"].as_array().unwrap().len(), 6, "{v:#}");
}

#[test]
fn compare_await_tables() {
    // `Vec::sort` runs the elements' `Ord`, `.await` a workspace `Future::poll`,
    // `try_into()` a `TryFrom` impl, and a `lazy_static!` table holds a fn item.
    check_clean("compare_await_tables");
    let v = check_bad(
        "compare_await_tables",
        &[
            ("app::hot::rank", "implicit"),
            ("app::hot::reply", "implicit"),
            ("app::hot::parse", "implicit"),
            ("app::hot::verb", "resolved"),
        ],
    );
    assert_eq!(v["violations"].as_array().unwrap().len(), 4, "{v:#}");
}

#[test]
fn dispatch_forms() {
    // Static dispatch in other spellings: a trait path on a boxed field (`&*s.template`),
    // an alias of `Npc<Scripted>`, a turbofish path, `<Npc<Scripted> as Perform>::perform`,
    // `Template::narrate`. `clean` must stay clean; `bad` adds the generative impl's calls.
    check_clean("dispatch_forms");
    let v = check_bad(
        "dispatch_forms",
        &[("app::hot::e", "resolved"), ("app::hot::f", "resolved")],
    );
    assert_eq!(v["violations"].as_array().unwrap().len(), 2, "{v:#}");
}
