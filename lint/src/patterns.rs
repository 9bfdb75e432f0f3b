//! Matching the configured paths (roots, sinks, allowed fns) against the index. A pattern
//! may name a module or crate prefix, a fn or method, a type or a trait, by its defining path
//! or any re-export of it; a sink may also be a path into a crate outside the workspace.

use crate::config::normalize;
use crate::index::{FnId, Index, ModId, Owner, Res, TraitRef, Ty};

/// What a pattern stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matched {
    /// Workspace fns, each with the path it matched under (used to build the sink label).
    Fns(Vec<(FnId, String)>),
    /// A path into an outside crate: matches outside call targets equal to it or under it.
    External(String),
}

/// A pattern resolved against the index.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub text: String,
    /// Canonical path of what the pattern resolved to (the prefix replaced by `text` in
    /// sink labels).
    pub def_path: String,
    pub matched: Matched,
}

impl Pattern {
    /// The label of a match: the pattern itself extended by what lies under it, so that it
    /// always contains the configured text (`llm::Provider` → `llm::Provider::generate`).
    pub fn label(&self, matched_path: &str) -> String {
        match matched_path.strip_prefix(&self.def_path) {
            Some(rest) => format!("{}{rest}", self.text),
            None => self.text.clone(),
        }
    }
}

/// Resolves one configured path. `None` when it names nothing in the workspace although its
/// crate is a workspace crate (a typo).
pub fn resolve(ix: &Index, text: &str) -> Option<Pattern> {
    let segs = normalize(text);
    let first = segs.first()?;
    let crate_root = ix
        .libs
        .get(first)
        .copied()
        .or_else(|| ix.crates.iter().find(|c| c.name == *first).map(|c| c.root));
    let Some(root) = crate_root else {
        return Some(Pattern {
            text: text.to_string(),
            def_path: segs.join("::"),
            matched: Matched::External(segs.join("::")),
        });
    };
    let mut rel = vec!["crate".to_string()];
    rel.extend(segs[1..].iter().cloned());
    let res = ix.resolve_path(root, &rel, false)?;
    let (def_path, fns) = match res {
        Res::Mod(m) => (ix.modules[m].path.clone(), module_fns(ix, m)),
        Res::Fn(f) => (ix.fns[f].path.clone(), fn_and_overrides(ix, f)),
        Res::Type(t) => (ix.types[t].path.clone(), type_fns(ix, t)),
        Res::Trait(t) => (ix.traits[t].path.clone(), trait_fns(ix, t)),
        Res::Value if segs.len() >= 2 => {
            // `Type::method` or `Trait::method`.
            let name = segs.last()?;
            match ix.resolve_path(root, &rel[..rel.len() - 1], false)? {
                Res::Type(t) => {
                    let fns: Vec<(FnId, String)> = ix
                        .methods_of_type(t, name)
                        .into_iter()
                        .map(|f| (f, format!("{}::{name}", ix.types[t].path)))
                        .collect();
                    (format!("{}::{name}", ix.types[t].path), fns)
                }
                Res::Trait(t) => {
                    let (_, f) = ix.trait_method(t, name)?;
                    (ix.fns[f].path.clone(), fn_and_overrides(ix, f))
                }
                _ => return None,
            }
        }
        _ => return None,
    };
    if fns.is_empty() {
        return None;
    }
    // A cfg twin of a matched fn is the same item in another build.
    let mut fns = fns;
    let twins: Vec<(FnId, String)> = fns
        .iter()
        .flat_map(|(f, p)| ix.twins(*f).iter().map(move |t| (*t, p.clone())))
        .collect();
    for t in twins {
        if !fns.iter().any(|(f, _)| *f == t.0) {
            fns.push(t);
        }
    }
    Some(Pattern {
        text: text.to_string(),
        def_path,
        matched: Matched::Fns(fns),
    })
}

fn fn_and_overrides(ix: &Index, f: FnId) -> Vec<(FnId, String)> {
    let path = ix.fns[f].path.clone();
    let mut out = vec![(f, path.clone())];
    if let Owner::Trait(t) = ix.fns[f].owner {
        let name = &ix.fns[f].sig.name;
        for i in &ix.traits[t].impls {
            if let Some(m) = ix.impls[*i].methods.get(name) {
                out.push((*m, path.clone()));
            }
        }
    }
    out
}

fn type_fns(ix: &Index, t: usize) -> Vec<(FnId, String)> {
    let tpath = &ix.types[t].path;
    ix.impls_of_type
        .get(&t)
        .into_iter()
        .flatten()
        .flat_map(|i| ix.impls[*i].methods.iter())
        .map(|(name, f)| (*f, format!("{tpath}::{name}")))
        .collect()
}

fn trait_fns(ix: &Index, t: usize) -> Vec<(FnId, String)> {
    let tpath = &ix.traits[t].path;
    let mut out: Vec<(FnId, String)> = ix.traits[t]
        .methods
        .iter()
        .map(|(n, f)| (*f, format!("{tpath}::{n}")))
        .collect();
    for i in &ix.traits[t].impls {
        for (n, f) in &ix.impls[*i].methods {
            out.push((*f, format!("{tpath}::{n}")));
        }
    }
    out
}

fn within(ix: &Index, mut m: ModId, ancestor: ModId) -> bool {
    loop {
        if m == ancestor {
            return true;
        }
        match ix.modules[m].parent {
            Some(p) => m = p,
            None => return false,
        }
    }
}

/// Everything under a module: its fns and methods, plus methods of impls (wherever they
/// stand) of traits and types defined under it, since calling them is using the module.
fn module_fns(ix: &Index, m: ModId) -> Vec<(FnId, String)> {
    let mut out: Vec<(FnId, String)> = ix
        .fns
        .iter()
        .enumerate()
        .filter(|(_, f)| within(ix, f.module, m))
        .map(|(id, f)| (id, f.path.clone()))
        .collect();
    for imp in &ix.impls {
        if within(ix, imp.module, m) {
            continue;
        }
        let owner_path = match (&imp.trait_, &imp.self_ty) {
            (Some(TraitRef::Ws(t)), _) if within(ix, ix.traits[*t].module, m) => {
                Some(ix.traits[*t].path.clone())
            }
            (_, Ty::Def(t, _)) if within(ix, ix.types[*t].module, m) => {
                Some(ix.types[*t].path.clone())
            }
            _ => None,
        };
        if let Some(p) = owner_path {
            for (n, f) in &imp.methods {
                out.push((*f, format!("{p}::{n}")));
            }
        }
    }
    out
}
