//! The verdict: the call graph over fns and outside paths, every chain from a hot-path entry
//! to an LLM sink (shortest first, cut at vetted fns and suppressed calls), which
//! suppressions still cut a chain, and every LLM call site for the audit.

use crate::calls::{Target, Via};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::load::Workspace;
use crate::patterns::{self, Matched, Pattern};
use std::collections::{HashMap, VecDeque};

/// One hop of a chain: the function reached, and the call that reached it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// The function called (`crate::module::fn`, or an outside path).
    pub func: String,
    /// The file of the call, relative to the analysed root.
    pub file: String,
    /// The line of the call.
    pub line: usize,
    pub via: Via,
}

/// A chain from a hot-path entry to an LLM sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub entry: String,
    pub entry_file: String,
    pub entry_line: usize,
    /// The configured sink pattern, extended to what it matched.
    pub sink: String,
    pub chain: Vec<Hop>,
    /// The other hot entries whose calls reach `entry` (and so this sink), nearest first:
    /// `entry` is the innermost hot fn of the chain, these are the handlers that call it.
    pub also_reached_from: Vec<String>,
}

impl Violation {
    /// The function actually called at the end of the chain.
    pub fn callee(&self) -> &str {
        self.chain
            .last()
            .map(|h| h.func.as_str())
            .unwrap_or(&self.entry)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    pub file: String,
    pub line: usize,
    pub reason: String,
    /// True when the suppression no longer cuts any chain from a hot entry to a sink.
    pub stale: bool,
}

/// One call to an LLM sink anywhere in the workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSite {
    pub caller: String,
    pub file: String,
    pub line: usize,
    pub callee: String,
    pub sink: String,
    pub via: Via,
    pub suppressed: bool,
    /// The hot entry reaching this call and the chain, when hot code reaches it.
    pub hot: Option<(String, Vec<Hop>)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub files: usize,
    pub fns: usize,
    pub edges: usize,
    pub entries: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Analysis {
    pub violations: Vec<Violation>,
    pub suppressions: Vec<Suppression>,
    /// Calls in hot code the lint could not resolve (listed; failing only with `--strict`).
    pub unresolved: Vec<UnresolvedCall>,
    pub audit: Vec<AuditSite>,
    pub stats: Stats,
}

struct GEdge {
    from: usize,
    to: usize,
    /// The file of the call (a fn's, or where a stored closure or fn value is written).
    file: usize,
    line: usize,
    via: Via,
    supp: Option<usize>,
    by_name: bool,
}

/// A call in hot code the lint could not resolve (reported by `--strict`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnresolvedCall {
    /// The fn the call is written in.
    pub func: String,
    pub file: String,
    pub line: usize,
    pub what: String,
    /// The hot entry whose calls reach `func`.
    pub entry: String,
}

/// Runs the reachability analysis of a loaded workspace under a configuration.
pub fn analyze(ws: &Workspace, cfg: &Config) -> Result<Analysis> {
    let ix = &ws.index;
    let n_fns = ix.fns.len();
    // Nodes: fns first, then interned outside paths, then fn-value pools and closures.
    let mut ext_ids: HashMap<&str, usize> = HashMap::new();
    let mut ext_names: Vec<&str> = Vec::new();
    let supp_ids: HashMap<(usize, usize), usize> = ws
        .suppressions
        .iter()
        .enumerate()
        .map(|(i, (f, s))| ((*f, s.line), i))
        .collect();
    for walk in &ws.edges {
        for e in &walk.edges {
            if let Target::Ext(p) = &e.to {
                let next = n_fns + ext_names.len();
                ext_ids.entry(p.as_str()).or_insert_with(|| {
                    ext_names.push(p.as_str());
                    next
                });
            }
        }
    }
    let values = crate::values::ValueNodes::new(ws, n_fns + ext_names.len());
    let mut edges: Vec<GEdge> = Vec::new();
    for (from, walk) in ws.edges.iter().enumerate() {
        let file = ix.fns[from].file;
        for e in &walk.edges {
            let to = match &e.to {
                Target::Fn(f) => *f,
                Target::Ext(p) => ext_ids[p.as_str()],
                Target::Pool(k) => match values.pool(k) {
                    Some(p) => p,
                    None => continue,
                },
            };
            let supp = e
                .suppressed_by
                .and_then(|l| supp_ids.get(&(file, l)).copied());
            let mut push = |from: usize| {
                edges.push(GEdge {
                    from,
                    to,
                    file,
                    line: e.line,
                    via: e.via,
                    supp,
                    by_name: e.by_name,
                })
            };
            push(from);
            // A call written in a closure is also that closure's own call.
            if let Some(c) = e.closure {
                push(values.closure(from, c));
            }
        }
    }
    for v in values.edges(ix) {
        edges.push(GEdge {
            from: v.from,
            to: v.to,
            file: v.file,
            line: v.line,
            via: v.via,
            supp: None,
            by_name: false,
        });
    }
    let n = values.end();
    let name = |node: usize| -> String {
        if node < n_fns {
            ix.fns[node].path.clone()
        } else if node < n_fns + ext_names.len() {
            ext_names[node - n_fns].to_string()
        } else {
            values.name(ix, node)
        }
    };

    // Patterns.
    let resolve_all = |list: &[String], what: &str| -> Result<Vec<Pattern>> {
        list.iter()
            .map(|p| {
                patterns::resolve(ix, p).ok_or_else(|| {
                    Error::Config(format!("{what} `{p}` matches nothing in the workspace (typo, or the item was moved?)"))
                })
            })
            .collect()
    };
    let roots = resolve_all(&cfg.roots, "[hot_path] root")?;
    let sinks = resolve_all(&cfg.sinks, "[llm] sink")?;
    let allows = resolve_all(&cfg.allow, "[allow] path")?;
    let mut sink_of: Vec<Option<String>> = vec![None; n];
    for pat in &sinks {
        let mut hit = false;
        match &pat.matched {
            Matched::Fns(fns) => {
                for (f, p) in fns {
                    if sink_of[*f].is_none() {
                        sink_of[*f] = Some(pat.label(p));
                    }
                    hit = true;
                }
            }
            Matched::External(prefix) => {
                for (i, e) in ext_names.iter().enumerate() {
                    if under(e, prefix) {
                        hit = true;
                        if sink_of[n_fns + i].is_none() {
                            sink_of[n_fns + i] = Some(e.to_string());
                        }
                    }
                }
            }
        }
        if !hit {
            return Err(Error::Config(format!(
                "[llm] sink `{}` matches nothing: no workspace item and no call into it",
                pat.text
            )));
        }
    }
    // The name fallback (a local whose type is unknown) reaches a sink only: a method name
    // that some non-sink workspace method also has does not say which type the local is, and
    // a non-sink method reached by name alone is not followed (its callees would be matched
    // by a guess upon a guess). See docs/LINT.md, "What it proves".
    let name_reaches_sink = |f: usize| {
        sink_of[f].is_some()
            && ix
                .methods_by_name
                .get(&ix.fns[f].sig.name)
                .is_some_and(|fs| fs.iter().all(|g| sink_of[*g].is_some()))
    };
    edges.retain(|e| !e.by_name || (e.to < n_fns && name_reaches_sink(e.to)));
    let mut allowed = vec![false; n];
    for pat in &allows {
        match &pat.matched {
            Matched::Fns(fns) => fns.iter().for_each(|(f, _)| allowed[*f] = true),
            Matched::External(prefix) => {
                for (i, e) in ext_names.iter().enumerate() {
                    if under(e, prefix) {
                        allowed[n_fns + i] = true;
                    }
                }
            }
        }
    }
    let inits: std::collections::HashSet<usize> = ix.static_inits.values().copied().collect();
    let mut is_root = vec![false; n];
    for pat in &roots {
        match &pat.matched {
            // A static's initializer is not an entry: it runs where the static is touched.
            Matched::Fns(fns) => fns
                .iter()
                .for_each(|(f, _)| is_root[*f] = ix.fns[*f].has_body && !inits.contains(f)),
            Matched::External(_) => {
                return Err(Error::Config(format!(
                    "[hot_path] root `{}` is not in the workspace: roots must name workspace code",
                    pat.text
                )));
            }
        }
    }
    let root_list: Vec<usize> = (0..n_fns).filter(|f| is_root[*f]).collect();

    let mut out_edges: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut in_edges: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, e) in edges.iter().enumerate() {
        out_edges[e.from].push(i);
        in_edges[e.to].push(i);
    }
    // An edge is followed unless it leaves a sink (the chain ends there), touches a vetted fn,
    // or (when `respect_supp`) is a suppressed call.
    let passable = |e: &GEdge, respect_supp: bool| {
        let blocked = (respect_supp && e.supp.is_some())
            || sink_of[e.from].is_some()
            || allowed[e.from]
            || allowed[e.to];
        !blocked
    };
    let reaches_sink = |respect_supp: bool| -> Vec<bool> {
        let mut seen = vec![false; n];
        let mut queue: VecDeque<usize> = (0..n)
            .filter(|v| sink_of[*v].is_some() && !allowed[*v])
            .collect();
        for v in &queue {
            seen[*v] = true;
        }
        while let Some(v) = queue.pop_front() {
            for &ei in &in_edges[v] {
                let e = &edges[ei];
                if passable(e, respect_supp) && !seen[e.from] {
                    seen[e.from] = true;
                    queue.push_back(e.from);
                }
            }
        }
        seen
    };
    let can_reach = reaches_sink(true);
    let can_reach_unsuppressed = reaches_sink(false);

    let hop = |ei: usize| -> Hop {
        let e = &edges[ei];
        Hop {
            func: name(e.to),
            file: ix.files[e.file].rel.clone(),
            line: e.line,
            via: e.via,
        }
    };
    let chain_to = |parent: &[usize], mut v: usize| -> Vec<usize> {
        let mut chain = Vec::new();
        while parent[v] != usize::MAX {
            chain.push(parent[v]);
            v = edges[parent[v]].from;
        }
        chain.reverse();
        chain
    };

    // Per entry, a breadth-first search restricted to nodes that can reach a sink gives the
    // shortest chain to each sink; most of the graph is never touched.
    let mut violations = Vec::new();
    let mut violation_roots: Vec<usize> = Vec::new();
    let mut stamp = vec![usize::MAX; n];
    let mut parent = vec![usize::MAX; n];
    for &r in &root_list {
        if !can_reach[r] || allowed[r] || sink_of[r].is_some() {
            continue;
        }
        // One violation per (entry, sink): a dyn call fanning out to every impl of a sink
        // trait is one problem, reported with the first (shortest) chain.
        let mut sinks_seen: Vec<&str> = Vec::new();
        let mut queue = VecDeque::from([r]);
        stamp[r] = r;
        parent[r] = usize::MAX;
        while let Some(v) = queue.pop_front() {
            if v != r && sink_of[v].is_some() {
                let chain = chain_to(&parent, v);
                // A chain through another entry is that entry's violation already.
                let via_other_entry = chain[..chain.len() - 1]
                    .iter()
                    .any(|ei| is_root[edges[*ei].to]);
                let label = sink_of[v].as_deref().unwrap_or_default();
                if !via_other_entry && !sinks_seen.contains(&label) {
                    sinks_seen.push(label);
                    let def = &ix.fns[r];
                    violation_roots.push(r);
                    violations.push(Violation {
                        entry: def.path.clone(),
                        entry_file: ix.files[def.file].rel.clone(),
                        entry_line: def.sig.line,
                        sink: sink_of[v].clone().unwrap_or_default(),
                        chain: chain.into_iter().map(hop).collect(),
                        also_reached_from: Vec::new(),
                    });
                }
                continue;
            }
            for &ei in &out_edges[v] {
                let e = &edges[ei];
                if passable(e, true) && can_reach[e.to] && stamp[e.to] != r {
                    stamp[e.to] = r;
                    parent[e.to] = ei;
                    queue.push_back(e.to);
                }
            }
        }
    }
    // The hot entries calling each violating entry: a backward search over the same
    // followable calls, so a chain cut by a suppression or a vetted fn does not count.
    let mut callers_of: HashMap<usize, Vec<String>> = HashMap::new();
    for (v, r) in violations.iter_mut().zip(&violation_roots) {
        let list = callers_of.entry(*r).or_insert_with(|| {
            let mut dist: HashMap<usize, usize> = HashMap::from([(*r, 0)]);
            let mut queue = VecDeque::from([*r]);
            let mut found: Vec<(usize, String)> = Vec::new();
            while let Some(x) = queue.pop_front() {
                let d = dist[&x];
                for &ei in &in_edges[x] {
                    let e = &edges[ei];
                    if passable(e, true) && !dist.contains_key(&e.from) {
                        dist.insert(e.from, d + 1);
                        queue.push_back(e.from);
                        if is_root[e.from] && !allowed[e.from] {
                            found.push((d + 1, ix.fns[e.from].path.clone()));
                        }
                    }
                }
            }
            found.sort();
            found.into_iter().map(|(_, p)| p).collect()
        });
        v.also_reached_from = list.clone();
    }
    violations
        .sort_by(|a, b| (&a.entry, &a.sink, a.callee()).cmp(&(&b.entry, &b.sink, b.callee())));

    // Everything hot code reaches (one shortest chain each), for suppressions and the audit.
    let mut hot_parent = vec![usize::MAX; n];
    let mut hot_entry = vec![usize::MAX; n];
    let mut queue: VecDeque<usize> = VecDeque::new();
    for &r in &root_list {
        if !allowed[r] {
            hot_entry[r] = r;
            queue.push_back(r);
        }
    }
    while let Some(v) = queue.pop_front() {
        if sink_of[v].is_some() {
            continue;
        }
        for &ei in &out_edges[v] {
            let e = &edges[ei];
            if passable(e, true) && hot_entry[e.to] == usize::MAX {
                hot_entry[e.to] = hot_entry[v];
                hot_parent[e.to] = ei;
                queue.push_back(e.to);
            }
        }
    }
    // Method names an outside sink can be called by (`*`: an outside crate or module sink,
    // whose methods are any).
    let outside_sink_names: Vec<String> = sinks
        .iter()
        .filter_map(|p| match &p.matched {
            Matched::External(prefix) => Some(match prefix.rsplit("::").next() {
                Some(last)
                    if last.chars().next().is_some_and(char::is_lowercase)
                        && prefix.contains("::")
                        && !is_module_like(prefix) =>
                {
                    last.to_string()
                }
                _ => "*".to_string(),
            }),
            Matched::Fns(_) => None,
        })
        .collect();
    // Calls in hot code the lint could not resolve (`--strict`), unless suppressed.
    let mut supp_used = vec![false; ws.suppressions.len()];
    let mut unresolved = Vec::new();
    for (f, walk) in ws.edges.iter().enumerate() {
        if hot_entry[f] == usize::MAX || allowed[f] || sink_of[f].is_some() {
            continue;
        }
        let file = ix.fns[f].file;
        for u in &walk.unresolved {
            if let Some(m) = &u.method
                && !ix.methods_by_name.contains_key(m)
                && !outside_sink_names.iter().any(|s| s == m || s == "*")
            {
                continue;
            }
            if let Some(s) = u.suppressed_by.and_then(|l| supp_ids.get(&(file, l))) {
                supp_used[*s] = true;
                continue;
            }
            unresolved.push(UnresolvedCall {
                func: ix.fns[f].path.clone(),
                file: ix.files[file].rel.clone(),
                line: u.line,
                what: u.what.clone(),
                entry: ix.fns[hot_entry[f]].path.clone(),
            });
        }
    }
    unresolved.sort_by(|a, b| (&a.file, a.line, &a.what).cmp(&(&b.file, b.line, &b.what)));
    unresolved.dedup();
    for e in &edges {
        if let Some(s) = e.supp {
            let cuts = hot_entry[e.from] != usize::MAX
                && !allowed[e.to]
                && !allowed[e.from]
                && sink_of[e.from].is_none()
                && can_reach_unsuppressed[e.to];
            supp_used[s] |= cuts;
        }
    }
    let mut suppressions: Vec<Suppression> = ws
        .suppressions
        .iter()
        .enumerate()
        .map(|(i, (f, s))| Suppression {
            file: ix.files[*f].rel.clone(),
            line: s.line,
            reason: s.reason.clone().unwrap_or_default(),
            stale: !supp_used[i],
        })
        .collect();
    suppressions.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    suppressions.dedup();

    let mut audit = Vec::new();
    for (ei, e) in edges.iter().enumerate() {
        let Some(sink) = &sink_of[e.to] else { continue };
        if sink_of[e.from].is_some() {
            continue;
        }
        let hot = (hot_entry[e.from] != usize::MAX && !allowed[e.from]).then(|| {
            let mut chain: Vec<Hop> = chain_to(&hot_parent, e.from).into_iter().map(hop).collect();
            chain.push(hop(ei));
            (ix.fns[hot_entry[e.from]].path.clone(), chain)
        });
        audit.push(AuditSite {
            caller: name(e.from),
            file: ix.files[e.file].rel.clone(),
            line: e.line,
            callee: name(e.to),
            sink: sink.clone(),
            via: e.via,
            suppressed: e.supp.is_some(),
            hot,
        });
    }
    audit.sort_by(|a, b| (&a.file, a.line, &a.callee).cmp(&(&b.file, b.line, &b.callee)));

    Ok(Analysis {
        violations,
        suppressions,
        unresolved,
        audit,
        stats: Stats {
            files: ix.files.len(),
            fns: n_fns,
            edges: edges.len(),
            entries: root_list.len(),
        },
    })
}

/// `genai::chat` is a module (any method under it), `genai::Client::exec_chat` a method:
/// a method path has a capitalised segment before its last.
fn is_module_like(path: &str) -> bool {
    let segs: Vec<&str> = path.split("::").collect();
    segs.len() < 2
        || !segs[segs.len() - 2]
            .chars()
            .next()
            .is_some_and(char::is_uppercase)
}

fn under(path: &str, prefix: &str) -> bool {
    path == prefix || (path.starts_with(prefix) && path[prefix.len()..].starts_with("::"))
}

/// Loads and analyses in one call.
pub fn check(root: &std::path::Path, cfg: &Config) -> Result<Analysis> {
    let targets = crate::workspace::discover(root)?;
    let ws = crate::load::load(root, &targets)?;
    analyze(&ws, cfg)
}
