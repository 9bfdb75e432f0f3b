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
    pub audit: Vec<AuditSite>,
    pub stats: Stats,
}

struct GEdge {
    from: usize,
    to: usize,
    line: usize,
    via: Via,
    supp: Option<usize>,
    by_name: bool,
}

/// Runs the reachability analysis of a loaded workspace under a configuration.
pub fn analyze(ws: &Workspace, cfg: &Config) -> Result<Analysis> {
    let ix = &ws.index;
    let n_fns = ix.fns.len();
    // Nodes: fns first, then interned outside paths.
    let mut ext_ids: HashMap<&str, usize> = HashMap::new();
    let mut ext_names: Vec<&str> = Vec::new();
    let supp_ids: HashMap<(usize, usize), usize> = ws
        .suppressions
        .iter()
        .enumerate()
        .map(|(i, (f, s))| ((*f, s.line), i))
        .collect();
    let mut edges: Vec<GEdge> = Vec::new();
    for (from, list) in ws.edges.iter().enumerate() {
        for e in list {
            let to = match &e.to {
                Target::Fn(f) => *f,
                Target::Ext(p) => {
                    let next = n_fns + ext_names.len();
                    *ext_ids.entry(p.as_str()).or_insert_with(|| {
                        ext_names.push(p.as_str());
                        next
                    })
                }
            };
            let supp = e
                .suppressed_by
                .and_then(|l| supp_ids.get(&(ix.fns[from].file, l)).copied());
            edges.push(GEdge {
                from,
                to,
                line: e.line,
                via: e.via,
                supp,
                by_name: e.by_name,
            });
        }
    }
    let n = n_fns + ext_names.len();
    let name = |node: usize| -> String {
        if node < n_fns {
            ix.fns[node].path.clone()
        } else {
            ext_names[node - n_fns].to_string()
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
    let mut is_root = vec![false; n];
    for pat in &roots {
        match &pat.matched {
            Matched::Fns(fns) => fns
                .iter()
                .for_each(|(f, _)| is_root[*f] = ix.fns[*f].has_body),
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
            file: ix.files[ix.fns[e.from].file].rel.clone(),
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
    let mut supp_used = vec![false; ws.suppressions.len()];
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
            caller: ix.fns[e.from].path.clone(),
            file: ix.files[ix.fns[e.from].file].rel.clone(),
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
        audit,
        stats: Stats {
            files: ix.files.len(),
            fns: n_fns,
            edges: edges.len(),
            entries: root_list.len(),
        },
    })
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
