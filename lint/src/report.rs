//! Output formats: `text` for people, `json` for scripts, `sarif` for GitHub code scanning,
//! `github` for workflow annotations, and the Markdown audit.

use crate::analysis::{Analysis, Hop, Suppression, Violation};
use serde_json::{Value, json};
use std::fmt::Write;

/// The fix every violation message carries.
pub const FIX_HINT: &str = "move the LLM call into a background job and dispatch it from the hot path \
(push a job message; the hot path answers from the cache meanwhile); if this call is vetted, put \
`// hotpath-lint: allow(reason = \"...\")` on the line above the statement";

/// Rule id used in SARIF and annotations.
pub const RULE_ID: &str = "hotpath-llm-reachable";
/// Rule id of an unresolved call in hot code (`--strict`).
pub const UNRESOLVED_ID: &str = "hotpath-unresolved-call";
/// What to do about an unresolved call.
pub const UNRESOLVED_HINT: &str = "the lint cannot tell what this call runs: give the value a type (`let c: Client = ..`), or, once checked, put `// hotpath-lint: allow(reason = \"...\")` on the line above the statement or list the fn under [allow] paths";

/// The output format selected on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Sarif,
    Github,
}

/// Extra context for rendering: violations already in the baseline are not reported.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// `--baseline` was given.
    pub baseline: bool,
    /// How many current violations the baseline accepted.
    pub baselined: usize,
    /// Baseline entries no current violation matches any more (fixed; can be removed).
    pub baseline_fixed: usize,
    /// `--strict`: unresolved calls in hot code are reported (and fail the run).
    pub strict: bool,
}

pub fn render(format: Format, a: &Analysis, violations: &[Violation], ctx: &Context) -> String {
    match format {
        Format::Text => text(a, violations, ctx),
        Format::Json => {
            serde_json::to_string_pretty(&json_value(a, violations, ctx))
                .expect("json values serialise")
                + "\n"
        }
        Format::Sarif => {
            serde_json::to_string_pretty(&sarif(a, violations, ctx)).expect("json values serialise")
                + "\n"
        }
        Format::Github => github(a, violations, ctx),
    }
}

/// The hot entries affected by these violations: each one's entry and the entries calling it.
pub fn affected_entries(violations: &[Violation]) -> usize {
    let mut all: Vec<&str> = violations
        .iter()
        .flat_map(|v| {
            std::iter::once(v.entry.as_str()).chain(v.also_reached_from.iter().map(String::as_str))
        })
        .collect();
    all.sort_unstable();
    all.dedup();
    all.len()
}

/// `reached from: a, b`, or nothing when only the entry itself is hot.
fn reached_from(v: &Violation) -> Option<String> {
    (!v.also_reached_from.is_empty())
        .then(|| format!("reached from: {}", v.also_reached_from.join(", ")))
}

fn chain_text(v: &Violation) -> String {
    let mut s = format!(
        "    {}  (entry, {}:{})\n",
        v.entry, v.entry_file, v.entry_line
    );
    for h in &v.chain {
        let _ = writeln!(
            s,
            "      -> {}  at {}:{}  [{}]",
            h.func,
            h.file,
            h.line,
            h.via.as_str()
        );
    }
    s
}

fn text(a: &Analysis, violations: &[Violation], ctx: &Context) -> String {
    let mut s = String::new();
    if ctx.strict {
        for u in &a.unresolved {
            let _ = writeln!(
                s,
                "error[{UNRESOLVED_ID}]: call in hot code the lint cannot resolve"
            );
            let _ = writeln!(s, "  --> {}:{}", u.file, u.line);
            let _ = writeln!(s, "  in:    {} (hot: reached from {})", u.func, u.entry);
            let _ = writeln!(s, "  what:  {}", u.what);
            let _ = writeln!(s, "  help: {UNRESOLVED_HINT}\n");
        }
    }
    for v in violations {
        let first = &v.chain[0];
        let _ = writeln!(s, "error[{RULE_ID}]: LLM call reachable from hot path");
        let _ = writeln!(s, "  --> {}:{}", first.file, first.line);
        let _ = writeln!(s, "  entry: {}", v.entry);
        let _ = writeln!(s, "  sink:  {}", v.sink);
        if let Some(r) = reached_from(v) {
            let _ = writeln!(s, "  {r}");
        }
        let _ = writeln!(s, "  chain:");
        s.push_str(&chain_text(v));
        let _ = writeln!(s, "  help: {FIX_HINT}\n");
    }
    for sup in &a.suppressions {
        let state = if sup.stale {
            "warning: stale suppression (cuts no chain any more; remove it)"
        } else {
            "note: suppression"
        };
        let _ = writeln!(s, "{state}: {}:{}: {}", sup.file, sup.line, sup.reason);
    }
    let stale = a.suppressions.iter().filter(|x| x.stale).count();
    let _ = write!(
        s,
        "hotpath-lint: {} violation(s) affecting {} hot entries, {} suppression(s) ({} stale); {} entries, {} fns, {} files",
        violations.len(),
        affected_entries(violations),
        a.suppressions.len(),
        stale,
        a.stats.entries,
        a.stats.fns,
        a.stats.files,
    );
    if ctx.baseline {
        let _ = write!(
            s,
            "; baseline: {} known, {} fixed",
            ctx.baselined, ctx.baseline_fixed
        );
    }
    if ctx.strict {
        let _ = write!(
            s,
            "; strict: {} unresolved call(s) in hot code",
            a.unresolved.len()
        );
    }
    s.push('\n');
    s
}

fn hop_json(h: &Hop) -> Value {
    json!({"fn": h.func, "file": h.file, "line": h.line, "via": h.via.as_str()})
}

fn suppression_json(s: &Suppression) -> Value {
    json!({"file": s.file, "line": s.line, "reason": s.reason, "stale": s.stale})
}

/// `{"violations":[{"entry","also_reached_from","sink","chain":[{"fn","file","line","via"}]}],
/// "suppressions":[..],"summary":{..}}`.
pub fn json_value(a: &Analysis, violations: &[Violation], ctx: &Context) -> Value {
    let mut v = json!({
        "violations": violations.iter().map(|v| json!({
            "entry": v.entry,
            "also_reached_from": v.also_reached_from,
            "sink": v.sink,
            "chain": v.chain.iter().map(hop_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "suppressions": a.suppressions.iter().map(suppression_json).collect::<Vec<_>>(),
        "summary": {
            "violations": violations.len(),
            "affected_entries": affected_entries(violations),
            "suppressions": a.suppressions.len(),
            "stale_suppressions": a.suppressions.iter().filter(|s| s.stale).count(),
        },
    });
    if ctx.baseline {
        v["baseline"] = json!({"known": ctx.baselined, "fixed": ctx.baseline_fixed});
    }
    if ctx.strict {
        v["unresolved"] = a
            .unresolved
            .iter()
            .map(|u| {
                json!({
                    "fn": u.func, "file": u.file, "line": u.line, "what": u.what, "entry": u.entry,
                })
            })
            .collect::<Vec<_>>()
            .into();
        v["summary"]["unresolved"] = json!(a.unresolved.len());
    }
    v
}

fn location(file: &str, line: usize, message: Option<String>) -> Value {
    let mut loc = json!({
        "physicalLocation": {
            "artifactLocation": {"uri": file, "uriBaseId": "%SRCROOT%"},
            "region": {"startLine": line.max(1)}
        }
    });
    if let Some(m) = message {
        loc["message"] = json!({"text": m});
    }
    loc
}

/// A stable identity for code scanning, independent of line numbers (like the baseline).
fn fingerprint(v: &Violation) -> String {
    // FNV-1a: stable across runs and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in format!("{}\u{0}{}\u{0}{}", v.entry, v.sink, v.callee()).bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

fn sarif(a: &Analysis, violations: &[Violation], ctx: &Context) -> Value {
    let mut results: Vec<Value> = violations
        .iter()
        .map(|v| {
            let first = &v.chain[0];
            let chain: Vec<String> = v.chain.iter().map(|h| h.func.clone()).collect();
            let mut flow = vec![json!({"location": location(&v.entry_file, v.entry_line, Some(format!("entry {}", v.entry)))})];
            flow.extend(v.chain.iter().map(|h| {
                json!({"location": location(&h.file, h.line, Some(format!("calls {} [{}]", h.func, h.via.as_str())))})
            }));
            json!({
                "ruleId": RULE_ID,
                "level": "error",
                "message": {"text": format!(
                    "LLM call reachable from hot path: {} -> {} (sink {}).{}\nFix: {}",
                    v.entry, chain.join(" -> "), v.sink,
                    reached_from(v).map(|r| format!("\n{r}")).unwrap_or_default(),
                    FIX_HINT
                )},
                "properties": {"entry": v.entry, "alsoReachedFrom": v.also_reached_from},
                "locations": [location(&first.file, first.line, None)],
                "partialFingerprints": {"hotpathLint/v1": fingerprint(v)},
                "codeFlows": [{"threadFlows": [{"locations": flow}]}],
            })
        })
        .collect();
    for s in &a.suppressions {
        let mut r = json!({
            "ruleId": RULE_ID,
            "level": if s.stale { "warning" } else { "note" },
            "message": {"text": if s.stale {
                format!("stale hotpath-lint suppression (cuts no chain any more): {}", s.reason)
            } else {
                format!("hotpath-lint suppression: {}", s.reason)
            }},
            "locations": [location(&s.file, s.line, None)],
        });
        if !s.stale {
            r["suppressions"] = json!([{"kind": "inSource", "justification": s.reason}]);
        }
        results.push(r);
    }
    if ctx.strict {
        for u in &a.unresolved {
            results.push(json!({
                "ruleId": UNRESOLVED_ID,
                "level": "error",
                "message": {"text": format!("call in hot code the lint cannot resolve: {} (in {}, reached from {}).\nFix: {}", u.what, u.func, u.entry, UNRESOLVED_HINT)},
                "locations": [location(&u.file, u.line, None)],
            }));
        }
    }
    let mut rules = vec![json!({
        "id": RULE_ID,
        "name": "LlmCallReachableFromHotPath",
        "shortDescription": {"text": "LLM call reachable from hot-path code"},
        "fullDescription": {"text": "A function configured as a hot-path root reaches a configured LLM sink through the call graph; the hot path must answer from caches and dispatch LLM work to background jobs."},
        "help": {"text": FIX_HINT},
        "defaultConfiguration": {"level": "error"},
        "properties": {"tags": ["performance", "latency"], "precision": "high", "problem.severity": "error"}
    })];
    if ctx.strict {
        rules.push(json!({
            "id": UNRESOLVED_ID,
            "name": "UnresolvedCallInHotPath",
            "shortDescription": {"text": "Call in hot-path code the lint cannot resolve"},
            "help": {"text": UNRESOLVED_HINT},
            "defaultConfiguration": {"level": "error"}
        }));
    }
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "hotpath-lint",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://github.com/hotpath/hotpath/blob/main/docs/LINT.md",
                "rules": rules
            }},
            "columnKind": "unicodeCodePoints",
            "originalUriBaseIds": {"%SRCROOT%": {"uri": "file:///"}},
            "results": results,
        }]
    })
}

/// Escapes data for a workflow command (`%`, CR, LF), and properties also (`:`, `,`).
fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_prop(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

fn github(a: &Analysis, violations: &[Violation], ctx: &Context) -> String {
    let mut s = String::new();
    if ctx.strict {
        for u in &a.unresolved {
            let msg = format!(
                "call in hot code the lint cannot resolve: {}\nin: {} (reached from {})\nhelp: {}",
                u.what, u.func, u.entry, UNRESOLVED_HINT
            );
            let _ = writeln!(
                s,
                "::error file={},line={},title={}::{}",
                escape_prop(&u.file),
                u.line,
                escape_prop("hotpath-lint: unresolved call in hot code"),
                escape_data(&msg)
            );
        }
    }
    for v in violations {
        let first = &v.chain[0];
        let chain: Vec<String> = v
            .chain
            .iter()
            .map(|h| format!("{} ({}:{}, {})", h.func, h.file, h.line, h.via.as_str()))
            .collect();
        let msg = format!(
            "LLM call reachable from hot path.\nentry: {}\n{}sink: {}\nchain: {} -> {}\nhelp: {}",
            v.entry,
            reached_from(v)
                .map(|r| format!("{r}\n"))
                .unwrap_or_default(),
            v.sink,
            v.entry,
            chain.join(" -> "),
            FIX_HINT
        );
        let _ = writeln!(
            s,
            "::error file={},line={},title={}::{}",
            escape_prop(&first.file),
            first.line,
            escape_prop("hotpath-lint: LLM call reachable from hot path"),
            escape_data(&msg)
        );
    }
    for sup in &a.suppressions {
        let (level, msg) = if sup.stale {
            (
                "warning",
                format!(
                    "stale hotpath-lint suppression (cuts no chain any more): {}",
                    sup.reason
                ),
            )
        } else {
            (
                "notice",
                format!("hotpath-lint suppression: {}", sup.reason),
            )
        };
        let _ = writeln!(
            s,
            "::{level} file={},line={}::{}",
            escape_prop(&sup.file),
            sup.line,
            escape_data(&msg)
        );
    }
    s
}

/// The Markdown audit: every LLM call site, whether hot code reaches it, and how.
pub fn audit(a: &Analysis) -> String {
    let mut s = String::from("# hotpath-lint audit: LLM call sites\n\n");
    let hot = a
        .audit
        .iter()
        .filter(|x| x.hot.is_some() && !x.suppressed)
        .count();
    let _ = writeln!(
        s,
        "{} LLM call site(s); {} reached from hot-path code, {} suppressed, {} background only.\n",
        a.audit.len(),
        hot,
        a.audit.iter().filter(|x| x.suppressed).count(),
        a.audit
            .iter()
            .filter(|x| x.hot.is_none() && !x.suppressed)
            .count(),
    );
    s.push_str("| call site | caller | calls | sink | resolved | hot? |\n| --- | --- | --- | --- | --- | --- |\n");
    for x in &a.audit {
        let status = match (&x.hot, x.suppressed) {
            (_, true) => "suppressed",
            (Some(_), false) => "**HOT**",
            (None, false) => "no",
        };
        let _ = writeln!(
            s,
            "| `{}:{}` | `{}` | `{}` | `{}` | {} | {} |",
            x.file,
            x.line,
            x.caller,
            x.callee,
            x.sink,
            x.via.as_str(),
            status
        );
    }
    let reached: Vec<_> = a.audit.iter().filter(|x| x.hot.is_some()).collect();
    if !reached.is_empty() {
        s.push_str("\n## Chains from hot code\n");
        for x in reached {
            let (entry, chain) = x.hot.as_ref().expect("filtered on hot");
            let _ = writeln!(
                s,
                "\n### `{}:{}` → `{}`{}\n",
                x.file,
                x.line,
                x.callee,
                if x.suppressed { " (suppressed)" } else { "" }
            );
            let _ = writeln!(s, "1. `{entry}` (entry)");
            for h in chain {
                let _ = writeln!(
                    s,
                    "1. `{}` at `{}:{}` ({})",
                    h.func,
                    h.file,
                    h.line,
                    h.via.as_str()
                );
            }
        }
    }
    s
}
