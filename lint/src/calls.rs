//! Turning one fn body into call edges: every call, method call and fn item passed as a
//! value, resolved against the [`Index`], with local variable types tracked well enough to
//! resolve method receivers (`self` fields, parameters, `let` annotations, constructors).
//!
//! When a local's type cannot be known, its method calls are matched by method name against
//! every workspace method (`Via::Name`, `Edge::by_name`); the analysis keeps such an edge only
//! when it reaches a sink whose method name no other workspace method has (docs/LINT.md, the
//! name fallback policy). A value whose type was lost in a chain of calls is not matched.

use crate::index::{FnId, Index, ModId, Owner, Res, TraitId, TraitRef, Ty, TyCtx};
use crate::syntax::{lower_ty, lower_use_item, macro_exprs, stmt_line};
use std::collections::HashMap;
use syn::visit::{self, Visit};

/// What a call reaches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Fn(FnId),
    /// A path outside the workspace (`genai::Client::exec_chat`).
    Ext(String),
    /// A call through a fn value (a closure or fn item stored in a field, collection or
    /// static, a `Box<dyn Fn>`, a fn pointer), by the workspace types of its arguments
    /// (`None`: not a workspace type, or unknown): it reaches every stored closure and fn
    /// item with as many parameters whose types fit (see [`crate::values`]).
    Pool(ValueSig),
}

/// How a call edge was resolved; shown in every chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Via {
    /// The callee is known exactly.
    Resolved,
    /// A call through `dyn Trait` or a generic bound, fanned out to every workspace impl.
    Dyn,
    /// The receiver is a local of unknown type: matched by method name, into a sink only.
    Name,
    /// The receiver is an outside wrapper of workspace types (`State<App>`): matched by
    /// name against the methods of the wrapped types, which it may deref to.
    Deref,
    /// The call is inside a spawned task (`tokio::spawn`, `std::thread::spawn`, ...).
    Spawned,
    /// A call rustc inserts: `Drop::drop`, `Display::fmt` by formatting, `Deref::deref` by
    /// auto-deref, an operator or `Index` impl, a `From` conversion (also by `?`),
    /// `Iterator::next` by `for`, an outside trait's method called by the outside code a
    /// value is handed to, or a workspace `macro_rules!` expansion.
    Implicit,
    /// Through a fn value: a closure or fn item kept in data and called later.
    Value,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Resolved => "resolved",
            Via::Dyn => "dyn",
            Via::Name => "name",
            Via::Deref => "deref",
            Via::Spawned => "spawned",
            Via::Implicit => "implicit",
            Via::Value => "value",
        }
    }
}

/// The workspace type of each argument of a call through a fn value, or each parameter of
/// a stored closure or fn item (`None`: another or an unknown type, which fits any).
pub type ValueSig = Vec<Option<crate::index::TypeId>>;

/// One call from a fn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub to: Target,
    pub line: usize,
    pub via: Via,
    /// The line of the `hotpath-lint: allow` comment that cuts this call, if any.
    pub suppressed_by: Option<usize>,
    /// Matched by method name only (`Via::Name`, also inside a spawned task): the analysis
    /// keeps it only when it reaches a sink whose name no other workspace method has.
    pub by_name: bool,
    /// The innermost closure of the fn (an index into [`FnWalk::closures`]) the call is
    /// written in: a stored closure is also a node of its own, called through fn values.
    pub closure: Option<u32>,
}

/// A closure written in a fn body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosureInfo {
    /// The workspace types of its parameters, as far as known.
    pub params: ValueSig,
    pub line: usize,
    /// The closure it is written in, if any.
    pub parent: Option<u32>,
    /// Kept as a value (boxed, stored, returned, passed to a workspace fn), rather than
    /// handed to a std adapter that calls it at once.
    pub stored: bool,
}

/// A call the lint could not resolve (reported by `--strict` when hot code reaches it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    pub line: usize,
    pub what: String,
    pub suppressed_by: Option<usize>,
    /// For a method on a value of unknown type: its name. Such a call can run workspace
    /// code only if some workspace method has that name, or a sink outside the workspace
    /// only if a sink path ends with it (the analysis drops the others).
    pub method: Option<String>,
}

/// Everything walking one fn body gives.
#[derive(Debug, Clone, Default)]
pub struct FnWalk {
    pub edges: Vec<Edge>,
    pub closures: Vec<ClosureInfo>,
    pub unresolved: Vec<Unresolved>,
    /// Workspace fns used as values (not called where they are named): members of the pool
    /// of their arity.
    pub fn_values: Vec<FnId>,
}

/// Suppression comments of one file: line → is it a trailing comment.
pub type SuppLines = HashMap<usize, bool>;

/// Walks a fn body (or a static's initializer) into its call edges (deduplicated per target,
/// suppression and closure), closures, fn values and unresolved calls.
pub fn walk_fn(ix: &Index, f: FnId, body: &crate::syntax::Body<'_>, supps: &SuppLines) -> FnWalk {
    let (module, self_ty, generics) = ix.fn_ctx(f);
    let err_ty = ix.fns[f]
        .sig
        .ret
        .as_ref()
        .map(|r| {
            let ctx = TyCtx {
                module,
                self_ty: &self_ty,
                generics: &generics,
            };
            ix.result_err_ty(&ctx, r)
        })
        .unwrap_or(Ty::Unknown);
    let mut w = Walker {
        ix,
        module,
        self_ty,
        generics,
        scopes: vec![Scope::default()],
        spawned: 0,
        stmt_lines: Vec::new(),
        supps,
        edges: Vec::new(),
        ret_cache: HashMap::new(),
        closure_param: None,
        closure_stack: Vec::new(),
        closures: Vec::new(),
        unresolved: Vec::new(),
        fn_values: Vec::new(),
        line_override: None,
        macro_depth: 0,
        arg_stored: None,
        err_ty,
        deref_depth: std::cell::Cell::new(0),
        closure_wrapper: None,
    };
    let def = &ix.fns[f];
    if let Some(sig) = body.sig {
        for input in &sig.inputs {
            if let syn::FnArg::Typed(pt) = input {
                w.bind_param(&pt.pat, &pt.ty);
            }
        }
    }
    if def.sig.has_self {
        w.scopes[0].vars.insert("self".into(), w.self_ty.clone());
    }
    if let Some(block) = body.block {
        w.visit_block(block);
        // Parameters taken by value are dropped when the fn returns (not `&T`, not `&self`).
        let line = def.sig.line;
        if let Some(sig) = body.sig {
            for input in &sig.inputs {
                let syn::FnArg::Typed(pt) = input else {
                    continue;
                };
                if matches!(&*pt.ty, syn::Type::Reference(_) | syn::Type::Ptr(_)) {
                    continue;
                }
                let t = w.resolve_written(&lower_ty(&pt.ty));
                w.add_drops(&t, line);
            }
        }
    } else if let Some(init) = body.init {
        w.arg_stored = Some(true);
        w.visit_expr(init);
    }
    let mut seen = std::collections::HashSet::new();
    w.edges
        .retain(|e| seen.insert((e.to.clone(), e.suppressed_by, e.by_name, e.closure)));
    let mut seen = std::collections::HashSet::new();
    w.unresolved
        .retain(|u| seen.insert((u.line, u.what.clone())));
    w.fn_values.sort_unstable();
    w.fn_values.dedup();
    FnWalk {
        edges: w.edges,
        closures: w.closures,
        unresolved: w.unresolved,
        fn_values: w.fn_values,
    }
}

#[derive(Default)]
pub(crate) struct Scope {
    pub(crate) vars: HashMap<String, Ty>,
    /// Locals whose declared type is a std wrapper (`Arc`, `Mutex`, `OnceLock`, ...): its
    /// own methods come before the wrapped type's.
    pub(crate) wrappers: HashMap<String, &'static str>,
    /// Locals declared as collections of std wrappers (`npcs: &[Arc<Npc>]`): the wrapper of
    /// their elements.
    pub(crate) elem_wrappers: HashMap<String, &'static str>,
    /// Locals that call without a fn-value pool: closures written in this fn, and
    /// parameters typed by a generic or `impl` `Fn` bound (their callers' closures are
    /// attributed to the callers).
    pub(crate) direct_callables: std::collections::HashSet<String>,
    /// Closures bound by `let f = |..| ..;`: stored only once the local is moved into
    /// storage (boxed, inserted, returned), not when it is merely called here.
    pub(crate) local_closures: HashMap<String, u32>,
    uses: HashMap<String, Res>,
    /// Modules glob-imported inside the block (`use crate::llm::*;`).
    globs: Vec<ModId>,
}

pub(crate) struct Walker<'a> {
    pub(crate) ix: &'a Index,
    pub(crate) module: ModId,
    pub(crate) self_ty: Ty,
    pub(crate) generics: HashMap<String, Ty>,
    pub(crate) scopes: Vec<Scope>,
    spawned: usize,
    stmt_lines: Vec<usize>,
    supps: &'a SuppLines,
    edges: Vec<Edge>,
    ret_cache: HashMap<FnId, Ty>,
    /// The types of the next closure's parameters: set for iterator/`Option` adapters and
    /// for workspace callees whose parameter has an `Fn`-family bound.
    closure_param: Option<Vec<Ty>>,
    /// Closures being walked, innermost last (indices into `closures`).
    pub(crate) closure_stack: Vec<u32>,
    pub(crate) closures: Vec<ClosureInfo>,
    pub(crate) unresolved: Vec<Unresolved>,
    pub(crate) fn_values: Vec<FnId>,
    /// Inside a macro expansion: every call is reported at the invocation's line.
    pub(crate) line_override: Option<usize>,
    pub(crate) macro_depth: usize,
    /// Set just before a call argument is walked: would a closure written there be kept
    /// (`Some(true)`) or called by the callee at once (`Some(false)`)? `None` outside
    /// argument position, where a closure is a value (bound, returned, put in a field).
    pub(crate) arg_stored: Option<bool>,
    /// The error type of the fn's `Result`, which `?` converts into with `From`.
    pub(crate) err_ty: Ty,
    /// Depth of `Deref` targets followed while resolving one method call.
    pub(crate) deref_depth: std::cell::Cell<usize>,
    /// The std wrapper of the elements a std adapter passes to the next closure
    /// (`arcs.iter().map(|a| a.clone())`).
    pub(crate) closure_wrapper: Option<&'static str>,
}

/// Methods of the std smart pointers and locks themselves (`Arc`, `Mutex`, `RwLock`, ...).
const WRAPPER_METHODS: &[&str] = &[
    "lock",
    "read",
    "write",
    "try_lock",
    "try_read",
    "try_write",
    "borrow",
    "borrow_mut",
    "try_borrow",
    "try_borrow_mut",
    "get_mut",
    "into_inner",
    "clone",
    "as_ptr",
    "is_poisoned",
    "clear_poison",
    "replace",
    "swap",
    "take",
    "set",
    "get",
    "as_mut",
    "as_ref",
];

/// Outside macros whose value is never a workspace value: tracing spans, text and
/// compile-time information.
const OUTSIDE_VALUE_MACROS: &[&str] = &[
    "span",
    "trace_span",
    "debug_span",
    "info_span",
    "warn_span",
    "error_span",
    "format",
    "format_args",
    "concat",
    "stringify",
    "env",
    "option_env",
    "include_str",
    "include_bytes",
    "line",
    "column",
    "file",
    "module_path",
    "matches",
    "json",
];

/// Methods whose result `infer` takes to be the receiver's own value (a clone, a guard, a
/// borrow, an iterator over it); `UNWRAP_METHODS` also take `T` out of `Option`/`Result`.
const IDENTITY_METHODS: &[&str] = &[
    "clone",
    "to_owned",
    "as_ref",
    "as_mut",
    "borrow",
    "borrow_mut",
    "lock",
    "read",
    "write",
    "deref",
    "deref_mut",
    "by_ref",
    "as_deref",
    "iter",
    "iter_mut",
    "into_iter",
    "values",
    "values_mut",
    "drain",
    "into_values",
    "unwrap",
    "expect",
    "unwrap_or_default",
    "unwrap_or",
    "unwrap_or_else",
    "unwrap_unchecked",
];
const UNWRAP_METHODS: &[&str] = &[
    "unwrap",
    "expect",
    "unwrap_or_default",
    "unwrap_or",
    "unwrap_or_else",
    "unwrap_unchecked",
];

/// Outside fns returning a value of their first argument's type.
const MEM_MOVES: &[&str] = &["mem::replace", "mem::take"];

const SPAWNERS: &[&str] = &["spawn", "spawn_blocking", "spawn_local", "block_in_place"];
const CTOR_PREFIXES: &[&str] = &[
    "new", "default", "from", "with", "build", "open", "connect", "create",
];

fn is_ctor_name(name: &str) -> bool {
    CTOR_PREFIXES.iter().any(|p| name.starts_with(p))
}

impl<'a> Walker<'a> {
    pub(crate) fn ctx(&self) -> TyCtx<'_> {
        TyCtx {
            module: self.module,
            self_ty: &self.self_ty,
            generics: &self.generics,
        }
    }

    pub(crate) fn resolve_written(&self, t: &crate::syntax::TyExpr) -> Ty {
        self.ix.resolve_ty(&self.ctx(), t)
    }

    pub(crate) fn var(&self, name: &str) -> Option<&Ty> {
        self.scopes.iter().rev().find_map(|s| s.vars.get(name))
    }

    pub(crate) fn bind(&mut self, name: String, ty: Ty) {
        self.scopes
            .last_mut()
            .expect("a scope")
            .vars
            .insert(name, ty);
    }

    pub(crate) fn add(&mut self, targets: Vec<(crate::calls::Target, Via)>, line: usize) {
        if targets.is_empty() {
            return;
        }
        let line = self.line_override.unwrap_or(line);
        let closure = self.closure_stack.last().copied();
        let suppressed_by = self.suppression_for(line);
        let twins: Vec<(Target, Via)> = targets
            .iter()
            .flat_map(|(t, via)| match t {
                Target::Fn(f) => self
                    .ix
                    .call_twins(*f)
                    .map(|x| (Target::Fn(x), *via))
                    .collect(),
                Target::Ext(_) | Target::Pool(_) => Vec::new(),
            })
            .collect();
        for (to, via) in targets.into_iter().chain(twins) {
            let by_name = via == Via::Name;
            let via = if self.spawned > 0 { Via::Spawned } else { via };
            self.edges.push(Edge {
                to,
                line,
                via,
                suppressed_by,
                by_name,
                closure,
            });
        }
    }

    /// Records a call the lint cannot resolve, for `--strict`.
    pub(crate) fn unresolved(&mut self, line: usize, what: String) {
        let line = self.line_override.unwrap_or(line);
        let suppressed_by = self.suppression_for(line);
        self.unresolved.push(Unresolved {
            line,
            what,
            suppressed_by,
            method: None,
        });
    }

    /// A suppression stands alone on the line above a statement holding the call (any
    /// enclosing statement, so one comment covers a multi-line statement) or trails that
    /// statement's first line or the call's own line.
    fn suppression_for(&self, line: usize) -> Option<usize> {
        if self.supps.is_empty() {
            return None;
        }
        let above = |l: usize| l > 1 && self.supps.get(&(l - 1)) == Some(&false);
        let trailing = |l: usize| self.supps.get(&l) == Some(&true);
        for &s in self.stmt_lines.iter().rev().chain(std::iter::once(&line)) {
            if above(s) {
                return Some(s - 1);
            }
            if trailing(s) {
                return Some(s);
            }
        }
        None
    }

    /// Resolves a path's first segment, honouring block-local `use`s.
    pub(crate) fn resolve_path(&self, segs: &[String], global: bool) -> Option<Res> {
        if !global && let Some((first, rest)) = segs.split_first() {
            let block_glob = |s: &Scope| {
                s.globs
                    .iter()
                    .find_map(|m| self.ix.lookup(*m, first).and_then(|rs| rs.first()))
            };
            let found = self
                .scopes
                .iter()
                .rev()
                .find_map(|s| s.uses.get(first).or_else(|| block_glob(s)));
            if let Some(r) = found {
                return match (r, rest.is_empty()) {
                    (r, true) => Some(r.clone()),
                    (Res::Mod(m), false) => self.ix.resolve_path(*m, &with_self(rest), false),
                    (Res::Ext(p), false) => Some(Res::Ext(format!("{p}::{}", rest.join("::")))),
                    _ => None,
                };
            }
        }
        self.ix.resolve_path(self.module, segs, global)
    }

    /// Targets of a call or value written as a path (`f`, `m::f`, `Type::f`, `Self::f`,
    /// `T::f`, `<T as Trait>::f`).
    pub(crate) fn path_targets(
        &self,
        qself: Option<&syn::QSelf>,
        path: &syn::Path,
    ) -> Vec<(Target, Via)> {
        let segs: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        let Some(last) = segs.last().cloned() else {
            return Vec::new();
        };
        if let Some(q) = qself {
            let qty = self.resolve_written(&lower_ty(&q.ty));
            if q.position > 0 {
                let trait_segs = &segs[..q.position];
                let tr = match self.resolve_path(trait_segs, path.leading_colon.is_some()) {
                    Some(Res::Trait(t)) => Some(TraitRef::Ws(t)),
                    Some(Res::Ext(p)) => Some(TraitRef::Ext(p)),
                    _ => None,
                };
                if let Ty::Def(t, args) = &qty {
                    // `<Npc<Scripted> as Perform>::perform`: the impl of that trait whose
                    // arguments fit, else any method of the type by that name.
                    let mut ms: Vec<FnId> = self
                        .ix
                        .methods_of_type_args(*t, args, &last)
                        .into_iter()
                        .filter(|f| match (self.ix.fns[*f].owner, &tr) {
                            (Owner::Impl(i), Some(tr)) => {
                                self.ix.impls[i].trait_.as_ref() == Some(tr)
                            }
                            _ => true,
                        })
                        .collect();
                    if ms.is_empty() {
                        ms = self.ix.methods_of_type_args(*t, args, &last);
                    }
                    if !ms.is_empty() {
                        return ms
                            .into_iter()
                            .map(|f| (Target::Fn(f), Via::Resolved))
                            .collect();
                    }
                }
                return match tr {
                    Some(tr) => self.static_targets(&Ty::Traits(vec![tr]), &last),
                    None => Vec::new(),
                };
            }
            return self.static_targets(&qty, &last);
        }
        let global = path.leading_colon.is_some();
        if segs.len() == 1 {
            if self.var(&last).is_some() {
                return Vec::new(); // a closure or fn pointer held in a local
            }
            // Twin `use`s under opposite cfgs bind one name to two fns: both are reached.
            let block_bound = self.scopes.iter().any(|s| s.uses.contains_key(&last));
            if !global
                && !block_bound
                && let Some(rs) = self.ix.lookup(self.module, &last)
                && rs.iter().filter(|r| matches!(r, Res::Fn(_))).count() > 1
            {
                return fn_targets(rs);
            }
            return match self.resolve_path(&segs, global) {
                Some(Res::Fn(f)) => vec![(Target::Fn(f), Via::Resolved)],
                Some(Res::Ext(p)) if p.contains("::") => vec![(Target::Ext(p), Via::Resolved)],
                _ => Vec::new(),
            };
        }
        let prefix = &segs[..segs.len() - 1];
        if prefix.len() == 1 && !global {
            if prefix[0] == "Self" {
                return self.static_targets(&self.self_ty.clone(), &last);
            }
            if let Some(g) = self.generics.get(&prefix[0]) {
                return self.static_targets(&g.clone(), &last);
            }
        }
        match self.resolve_path(prefix, global) {
            Some(Res::Mod(m)) => match self.ix.lookup(m, &last) {
                Some(rs) => fn_targets(rs),
                None => Vec::new(),
            },
            Some(Res::Type(t)) => {
                let ty = self.type_res_to_ty(t, path, prefix.len() - 1);
                self.static_targets(&ty, &last)
            }
            Some(Res::Trait(t)) => self.static_targets(&Ty::Traits(vec![TraitRef::Ws(t)]), &last),
            Some(Res::Ext(p)) => vec![(Target::Ext(format!("{p}::{last}")), Via::Resolved)],
            _ => Vec::new(),
        }
    }

    /// The declared type of a const or static named by a path.
    fn const_ty(&self, segs: &[String]) -> Ty {
        let (module, name) = match segs {
            [name] => (self.module, name),
            [prefix @ .., name] => match self.resolve_path(prefix, false) {
                Some(Res::Mod(m)) => (m, name),
                _ => return Ty::Unknown,
            },
            [] => return Ty::Unknown,
        };
        self.const_ty_in(module, name)
    }

    fn const_ty_in(&self, module: ModId, name: &str) -> Ty {
        match self.ix.const_types.get(&(module, name.to_string())) {
            Some(t) => {
                let env = HashMap::new();
                let ctx = TyCtx {
                    module,
                    self_ty: &Ty::Unknown,
                    generics: &env,
                };
                self.ix.resolve_ty(&ctx, t)
            }
            None => Ty::Unknown,
        }
    }

    /// A type named in an expression path, following aliases.
    fn type_res_to_ty(&self, _t: usize, path: &syn::Path, seg_idx: usize) -> Ty {
        let mut p = crate::syntax::lower_path(path);
        p.segs.truncate(seg_idx + 1);
        self.resolve_written(&crate::syntax::TyExpr::Path(p))
    }

    /// `Type::f` / `T::f` on a resolved type; also `recv.f()` once the receiver's type is
    /// known (never matched by name against unrelated types).
    pub(crate) fn static_targets(&self, ty: &Ty, name: &str) -> Vec<(Target, Via)> {
        match ty {
            Ty::Def(t, args) => {
                // `impl Npc<Scripted>` and `impl Npc<Generative>`: the receiver's type
                // arguments choose the impl.
                let own: Vec<(Target, Via)> = self
                    .ix
                    .methods_of_type_args(*t, args, name)
                    .into_iter()
                    .map(|f| (Target::Fn(f), Via::Resolved))
                    .collect();
                if !own.is_empty() {
                    return own;
                }
                let open = self.open_impl_targets(ty, name);
                if !open.is_empty() {
                    return open;
                }
                // `to_string()` through `Display`, a method of a `Deref` target.
                self.implicit_method_targets(*t, args, name)
            }
            Ty::Ext(p) => {
                let mut out = vec![(Target::Ext(format!("{p}::{name}")), Via::Resolved)];
                out.extend(self.open_impl_targets(ty, name));
                out
            }
            // A smart pointer or lock around a type the lint cannot name: its own methods are
            // its own; any other method is the inner value's, matched by name.
            Ty::ExtOf(_, args)
                if matches!(args.as_slice(), [Ty::Unknown] | [Ty::Traits(_)])
                    && !WRAPPER_METHODS.contains(&name) =>
            {
                self.method_targets(&args[0], name)
            }
            Ty::ExtOf(p, args) => {
                let mut out = vec![(Target::Ext(format!("{p}::{name}")), Via::Resolved)];
                out.extend(self.open_impl_targets(ty, name));
                if !is_std(p) {
                    out.extend(self.deref_targets(args, name));
                }
                out
            }
            Ty::Traits(trs) => self.trait_targets(trs, name),
            Ty::Coll(_) | Ty::Wrap(_) | Ty::Tuple(_) => self.open_impl_targets(ty, name),
            Ty::Unknown => Vec::new(),
        }
    }

    /// Workspace trait impls on types the workspace does not define (`impl Announce for
    /// f64`, `impl<T: Display> Announce for T`), for a trait in scope at the call.
    pub(crate) fn open_impl_targets(&self, recv: &Ty, name: &str) -> Vec<(Target, Via)> {
        self.ix
            .open_impl_methods(recv, name)
            .into_iter()
            .filter(|(i, _)| match &self.ix.impls[*i].trait_ {
                Some(TraitRef::Ws(t)) => self.trait_in_scope(*t),
                _ => false,
            })
            .map(|(_, f)| (Target::Fn(f), Via::Resolved))
            .collect()
    }

    /// A trait's methods are callable with method syntax only where the trait is in scope:
    /// imported (also `as _`), defined in the module, or brought by a glob.
    fn trait_in_scope(&self, t: TraitId) -> bool {
        let is_t = |r: &Res| *r == Res::Trait(t);
        self.ix.trait_in_scope(self.module, t)
            || self.scopes.iter().any(|s| {
                s.uses.values().any(is_t) || s.globs.iter().any(|m| self.ix.trait_in_scope(*m, t))
            })
    }

    /// Methods named `name` of the workspace types an outside wrapper holds (`State<App>`
    /// derefs to `App`); the wrapper's own method is listed separately as an outside call.
    fn deref_targets(&self, args: &[Ty], name: &str) -> Vec<(Target, Via)> {
        let mut out = Vec::new();
        for a in args {
            match a {
                Ty::Def(t, _) => out.extend(
                    self.ix
                        .methods_of_type(*t, name)
                        .into_iter()
                        .map(|f| (Target::Fn(f), Via::Deref)),
                ),
                Ty::Traits(trs) => out.extend(
                    self.trait_targets(trs, name)
                        .into_iter()
                        .filter(|(t, _)| matches!(t, Target::Fn(_)))
                        .map(|(t, _)| (t, Via::Deref)),
                ),
                Ty::ExtOf(p, inner) if !is_std(p) => out.extend(self.deref_targets(inner, name)),
                _ => {}
            }
        }
        out
    }

    pub(crate) fn trait_targets(&self, trs: &[TraitRef], name: &str) -> Vec<(Target, Via)> {
        let mut out = Vec::new();
        for tr in trs {
            match tr {
                TraitRef::Ws(t) => {
                    let fan = self.ix.trait_fanout(*t, name);
                    if !fan.is_empty() {
                        return fan.into_iter().map(|f| (Target::Fn(f), Via::Dyn)).collect();
                    }
                }
                // Workspace impls of an outside trait called through `dyn` or a bound in
                // workspace code are not fanned out to: `S: Future`, `dyn AsyncRead` would
                // reach every implementor (1,580 reports on tokio, 36 on sqlx-core). They
                // are reached where a value is handed to outside code (`values`).
                TraitRef::Ext(p) => out.push((Target::Ext(format!("{p}::{name}")), Via::Resolved)),
            }
        }
        out
    }

    /// Targets of `recv.name(..)` given the receiver's type. Only a receiver whose type is
    /// unknown (or a bare generic parameter) is matched by name.
    pub(crate) fn method_targets(&self, recv: &Ty, name: &str) -> Vec<(Target, Via)> {
        match recv {
            Ty::Traits(trs) if !trs.is_empty() => {
                let mut out = self.trait_targets(trs, name);
                if !out.iter().any(|(t, _)| matches!(t, Target::Fn(_))) {
                    // `impl<T: Display> Announce for T` applies to `dyn Display` too.
                    out.extend(self.open_impl_targets(recv, name));
                }
                out
            }
            Ty::Def(..) | Ty::Ext(_) | Ty::ExtOf(..) | Ty::Wrap(_) | Ty::Coll(_) | Ty::Tuple(_) => {
                self.static_targets(recv, name)
            }
            Ty::Traits(_) | Ty::Unknown => self
                .ix
                .methods_by_name
                .get(name)
                .into_iter()
                .flatten()
                .map(|f| (Target::Fn(*f), Via::Name))
                .collect(),
        }
    }

    /// The return type of a workspace fn, in its own context.
    pub(crate) fn ret_ty(&mut self, f: FnId, recv: Option<&Ty>) -> Ty {
        // `Mutex<Waiters>::lock() -> MutexGuard<'_, T>`: the impl's `T` is the receiver's.
        let (m, self_ty, generics, substituted) = self.ix.ctx_for_recv(f, recv);
        // A concrete receiver is `Self`: `-> Self::Target` is its impl's associated type.
        let concrete = matches!(recv, Some(Ty::Def(..)));
        if (substituted || concrete)
            && let Some(r) = &self.ix.fns[f].sig.ret
        {
            let ctx = TyCtx {
                module: m,
                self_ty: &self_ty,
                generics: &generics,
            };
            return self.ix.resolve_ty(&ctx, r);
        }
        if let Some(t) = self.ret_cache.get(&f) {
            return substitute_self(t, recv);
        }
        let def = &self.ix.fns[f];
        let t = match &def.sig.ret {
            None => Ty::Unknown,
            Some(r) => {
                let (m, self_ty, generics) = self.ix.fn_ctx(f);
                let ctx = TyCtx {
                    module: m,
                    self_ty: &self_ty,
                    generics: &generics,
                };
                self.ix.resolve_ty(&ctx, r)
            }
        };
        self.ret_cache.insert(f, t.clone());
        substitute_self(&t, recv)
    }

    /// Infers an expression's type; `Ty::Unknown` when it cannot.
    pub(crate) fn infer(&mut self, e: &syn::Expr) -> Ty {
        match e {
            syn::Expr::Path(p) if p.qself.is_none() => {
                if p.path.segments.len() == 1 {
                    let name = p.path.segments[0].ident.to_string();
                    if let Some(t) = self.var(&name) {
                        return t.clone();
                    }
                    if name == "self" {
                        return self.self_ty.clone();
                    }
                }
                let segs: Vec<String> = p
                    .path
                    .segments
                    .iter()
                    .map(|s| s.ident.to_string())
                    .collect();
                match self.resolve_path(&segs, p.path.leading_colon.is_some()) {
                    Some(Res::Type(_)) => self.resolve_written(&crate::syntax::TyExpr::Path(
                        crate::syntax::lower_path(&p.path),
                    )),
                    Some(Res::Value) => self.const_ty(&segs),
                    // A const or static, also when imported (`use super::CONTEXT`).
                    Some(Res::Const(m)) => self.const_ty_in(m, &segs[segs.len() - 1]),
                    _ => Ty::Unknown,
                }
            }
            syn::Expr::Field(f) => {
                let base = self.infer(&f.base);
                let member = match &f.member {
                    syn::Member::Named(i) => i.to_string(),
                    syn::Member::Unnamed(i) => i.index.to_string(),
                };
                match base {
                    // A field of the `Deref` target when the type has no such field.
                    Ty::Def(t, args) if !self.ix.has_field(t, &member) => {
                        match self.deref_of(t, &args) {
                            Some((Ty::Def(t2, a2), _)) => self.ix.field_ty(t2, &a2, &member),
                            _ => self.ix.field_ty(t, &args, &member),
                        }
                    }
                    Ty::Def(t, args) => self.ix.field_ty(t, &args, &member),
                    Ty::Tuple(es) => member
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| es.get(i).cloned())
                        .unwrap_or(Ty::Unknown),
                    Ty::Ext(p) => Ty::Ext(format!("{p}.{member}")),
                    _ => Ty::Unknown,
                }
            }
            syn::Expr::Call(c) => self.infer_call(c),
            syn::Expr::MethodCall(mc) => self.infer_method_call(mc),
            _ => self.infer_rest(e),
        }
    }

    /// The type of a call's result.
    fn infer_call(&mut self, c: &syn::ExprCall) -> Ty {
        {
            {
                let syn::Expr::Path(p) = &*c.func else {
                    return Ty::Unknown;
                };
                let segs: Vec<String> = p
                    .path
                    .segments
                    .iter()
                    .map(|s| s.ident.to_string())
                    .collect();
                let last = segs.last().map(String::as_str).unwrap_or("");
                if matches!(last, "Some" | "Ok" | "Err") && segs.len() == 1 {
                    return match c.args.first() {
                        Some(a) if last != "Err" => Ty::Wrap(Box::new(self.infer(a))),
                        _ => Ty::Unknown,
                    };
                }
                if segs.len() == 2
                    && matches!(
                        segs[0].as_str(),
                        "Box"
                            | "Arc"
                            | "Rc"
                            | "Mutex"
                            | "RwLock"
                            | "RefCell"
                            | "Cell"
                            | "Pin"
                            | "LazyLock"
                            | "LazyCell"
                    )
                    && matches!(last, "new" | "pin" | "from" | "clone" | "force")
                    && !matches!(self.resolve_path(&segs[..1], false), Some(Res::Type(_)))
                {
                    return c.args.first().map(|a| self.infer(a)).unwrap_or(Ty::Unknown);
                }
                let targets = self.path_targets(p.qself.as_ref(), &p.path);
                let targets = self.static_dispatch(&p.path, targets, c.args.first());
                // `std::mem::replace(&mut self.hyper, clone)` and `take` give back a value of
                // the place's type (reqwest's `HyperService::call`).
                if targets.iter().any(|(t, _)| {
                    matches!(t, Target::Ext(e) if MEM_MOVES.iter().any(|m| e.ends_with(m)))
                }) && let Some(place) = c.args.first()
                {
                    return self.infer(place);
                }
                if let Some(f) = targets.iter().find_map(|(t, _)| match t {
                    Target::Fn(f) => Some(*f),
                    _ => None,
                }) {
                    let recv = match self.ix.fns[f].owner {
                        Owner::Impl(i) => Some(self.ix.impls[i].self_ty.clone()),
                        _ => None,
                    };
                    return self.ret_ty(f, recv.as_ref());
                }
                // A tuple-struct constructor, or a constructor-like associated fn we cannot see
                // (derived `Default`, an outside crate's `Client::new()`).
                if segs.len() == 1 {
                    if let Some(Res::Type(_)) = self.resolve_path(&segs, false) {
                        return self.resolve_written(&crate::syntax::TyExpr::Path(
                            crate::syntax::lower_path(&p.path),
                        ));
                    }
                } else if is_ctor_name(last) && p.qself.is_none() {
                    let prefix = &segs[..segs.len() - 1];
                    if prefix.len() == 1 && prefix[0] == "Self" {
                        return self.self_ty.clone();
                    }
                    match self.resolve_path(prefix, p.path.leading_colon.is_some()) {
                        Some(Res::Type(t)) => {
                            return self.type_res_to_ty(t, &p.path, prefix.len() - 1);
                        }
                        Some(Res::Ext(e)) => return Ty::Ext(e),
                        _ => {}
                    }
                }
                Ty::Unknown
            }
        }
    }

    /// The type of a method call's result.
    fn infer_method_call(&mut self, mc: &syn::ExprMethodCall) -> Ty {
        {
            {
                let recv = self.infer(&mc.receiver);
                let name = mc.method.to_string();
                // A std wrapper's own method gives the wrapped value (`get`: an option).
                if let Some(path) = self.wrapper_method(&mc.receiver, &name) {
                    return if name == "get" && path.contains("Once") {
                        Ty::Wrap(Box::new(recv))
                    } else {
                        recv
                    };
                }
                if name == "to_string" {
                    return Ty::Ext("String".into());
                }
                if IDENTITY_METHODS.contains(&name.as_str()) {
                    return match (recv, UNWRAP_METHODS.contains(&name.as_str())) {
                        (Ty::Wrap(inner), true) => *inner,
                        (other, _) => other,
                    };
                }
                if let Some(t) = self.adapter_result(&recv, &name, mc) {
                    return t;
                }
                let targets = self.method_targets(&recv, &name);
                match (targets.first(), &recv) {
                    // Through `dyn` or a bound the first target is the trait's own method,
                    // whose declared return type (`&Self::Narrator`) stands for every impl.
                    (Some((Target::Fn(f), Via::Resolved | Via::Dyn | Via::Deref)), _) => {
                        self.ret_ty(*f, Some(&recv))
                    }
                    // What an outside method returns is outside too, unless type arguments
                    // chosen at the call could make it a workspace type.
                    (_, Ty::Ext(p)) if mc.turbofish.is_none() => Ty::Ext(format!("{p}::{name}()")),
                    _ => Ty::Unknown,
                }
            }
        }
    }

    fn infer_rest(&mut self, e: &syn::Expr) -> Ty {
        match e {
            syn::Expr::Struct(s) => {
                if s.path.is_ident("Self") {
                    return self.self_ty.clone();
                }
                self.resolve_written(&crate::syntax::TyExpr::Path(crate::syntax::lower_path(
                    &s.path,
                )))
            }
            // `match builder.build() { Ok(v) => v, Err(e) => return }`: the first arm whose
            // value has a known type (diverging arms have none), its pattern bound.
            syn::Expr::Match(m) => {
                let scrutinee = self.infer(&m.expr);
                for arm in &m.arms {
                    self.scopes.push(Scope::default());
                    self.bind_pat(&arm.pat, scrutinee.clone());
                    let t = self.infer(&arm.body);
                    self.scopes.pop();
                    if t != Ty::Unknown {
                        return t;
                    }
                }
                Ty::Unknown
            }
            syn::Expr::Tuple(t) => Ty::Tuple(t.elems.iter().map(|e| self.infer(e)).collect()),
            syn::Expr::Reference(r) => self.infer(&r.expr),
            syn::Expr::Paren(p) => self.infer(&p.expr),
            syn::Expr::Group(g) => self.infer(&g.expr),
            syn::Expr::Await(a) => self.infer(&a.base),
            syn::Expr::Unary(u) if matches!(u.op, syn::UnOp::Deref(_)) => self.infer(&u.expr),
            syn::Expr::Try(t) => match self.infer(&t.expr) {
                Ty::Wrap(inner) => *inner,
                Ty::Ext(p) => Ty::Ext(format!("{p}?")),
                _ => Ty::Unknown,
            },
            syn::Expr::Index(i) => match self.infer(&i.expr) {
                Ty::Coll(inner) => *inner,
                d @ Ty::Def(..) => self.ix.project(&d, "Output", 0),
                _ => Ty::Unknown,
            },
            syn::Expr::Cast(c) => self.resolve_written(&lower_ty(&c.ty)),
            syn::Expr::Lit(l) => Ty::Ext(
                match &l.lit {
                    syn::Lit::Str(_) => "str",
                    // Unsuffixed literals take the type the impl or binding wants.
                    syn::Lit::Int(i) if i.suffix().is_empty() => "{integer}",
                    syn::Lit::Float(f) if f.suffix().is_empty() => "{float}",
                    syn::Lit::Int(i) => i.suffix(),
                    syn::Lit::Float(f) => f.suffix(),
                    syn::Lit::Bool(_) => "bool",
                    syn::Lit::Char(_) => "char",
                    _ => "literal",
                }
                .to_string(),
            ),
            syn::Expr::Macro(m)
                if m.mac.path.segments.last().is_some_and(|s| {
                    OUTSIDE_VALUE_MACROS.contains(&s.ident.to_string().as_str())
                }) =>
            {
                match m.mac.path.segments.last().map(|s| s.ident.to_string()) {
                    Some(n) if n == "format" => Ty::Ext("String".into()),
                    n => Ty::Ext(format!("{}!()", n.unwrap_or_default())),
                }
            }
            _ => Ty::Unknown,
        }
    }

    /// Result types of `Option`/`Result` and iterator adapters, inferring closure results
    /// with the closure's parameter bound to the element type.
    fn adapter_result(&mut self, recv: &Ty, name: &str, mc: &syn::ExprMethodCall) -> Option<Ty> {
        let closure = mc.args.iter().find_map(|a| match a {
            syn::Expr::Closure(c) => Some(c),
            _ => None,
        });
        let bool_ty = || Ty::Ext("bool".into());
        match recv {
            Ty::Coll(t) => Some(match name {
                "filter" | "skip" | "take" | "rev" | "cloned" | "copied" | "peekable" | "chain"
                | "collect" | "skip_while" | "take_while" | "inspect" | "to_vec" => recv.clone(),
                "first" | "last" | "get" | "get_mut" | "pop" | "next" | "front" | "back"
                | "find" | "max_by_key" | "min_by_key" | "max_by" | "min_by" | "max" | "min"
                | "next_back" => Ty::Wrap(t.clone()),
                "map" => Ty::Coll(Box::new(self.closure_result(closure, t))),
                "filter_map" => Ty::Coll(Box::new(unwrap(self.closure_result(closure, t)))),
                "find_map" => self.closure_result(closure, t),
                "any" | "all" | "is_empty" | "contains" => bool_ty(),
                "len" | "count" | "position" => Ty::Ext("usize".into()),
                _ => return None,
            }),
            Ty::ExtOf(p, args) if is_local_key(p, name) => {
                let inner = args.first().cloned().unwrap_or(Ty::Unknown);
                let r = self.closure_result(closure, &inner);
                Some(if name == "try_with" {
                    Ty::Wrap(Box::new(r))
                } else {
                    r
                })
            }
            Ty::Wrap(t) => Some(match name {
                "filter" | "as_ref" | "as_mut" | "cloned" | "copied" | "ok" | "ok_or"
                | "ok_or_else" | "or" | "or_else" | "take" | "as_deref" | "inspect" | "map_err"
                | "context" | "with_context" => recv.clone(),
                "map" => Ty::Wrap(Box::new(self.closure_result(closure, t))),
                "and_then" => self.closure_result(closure, t),
                "map_or" | "map_or_else" => self.closure_result(closure, t),
                "is_some" | "is_none" | "is_ok" | "is_err" | "is_some_and" | "is_ok_and" => {
                    bool_ty()
                }
                _ => return None,
            }),
            _ => None,
        }
    }

    fn closure_result(&mut self, closure: Option<&syn::ExprClosure>, param: &Ty) -> Ty {
        let Some(c) = closure else { return Ty::Unknown };
        self.scopes.push(Scope::default());
        if let Some(p) = c.inputs.first() {
            self.bind_pat(p, param.clone());
        }
        let body = match &*c.body {
            syn::Expr::Block(b) => match b.block.stmts.last() {
                Some(syn::Stmt::Expr(e, None)) => Some(e),
                _ => None,
            },
            e => Some(e),
        };
        let t = body.map(|e| self.infer(e)).unwrap_or(Ty::Unknown);
        self.scopes.pop();
        t
    }

    /// The type of a field bound by a struct or tuple-struct pattern: from the variant's or
    /// struct's declaration, whatever the scrutinee's inferred type.
    fn pattern_field_ty(&self, path: &syn::Path, scrutinee: &Ty, member: &str) -> Ty {
        let segs: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        let global = path.leading_colon.is_some();
        let args = match scrutinee {
            Ty::Def(_, a) => a.clone(),
            _ => Vec::new(),
        };
        if segs.len() == 1
            && segs[0] == "Self"
            && let Ty::Def(t, a) = &self.self_ty
        {
            return self.ix.member_ty(*t, a, None, member);
        }
        if let Some(Res::Type(t)) = self.resolve_path(&segs, global) {
            return self.ix.member_ty(t, &args, None, member);
        }
        // A bare variant name brought in by `use Enum::*`: the scrutinee's enum has it.
        if segs.len() == 1
            && let Ty::Def(t, a) = scrutinee
        {
            let found = self.ix.member_ty(*t, a, Some(&segs[0]), member);
            if found != Ty::Unknown {
                return found;
            }
        }
        if segs.len() >= 2 {
            let prefix = &segs[..segs.len() - 1];
            let t = if prefix.len() == 1 && prefix[0] == "Self" {
                match &self.self_ty {
                    Ty::Def(t, _) => Some(*t),
                    _ => None,
                }
            } else {
                match self.resolve_path(prefix, global) {
                    Some(Res::Type(t)) => Some(t),
                    _ => None,
                }
            };
            if let Some(t) = t {
                return self
                    .ix
                    .member_ty(t, &args, segs.last().map(String::as_str), member);
            }
        }
        Ty::Unknown
    }

    /// Binds a parameter pattern. Newtype extractors (`Json(body): Json<Req>`,
    /// `State(app): State<App>`) bind their inner value to the type argument.
    pub(crate) fn bind_param(&mut self, pat: &syn::Pat, ty: &syn::Type) {
        let written = lower_ty(ty);
        if let (syn::Pat::TupleStruct(ts), crate::syntax::TyExpr::Path(p)) = (pat, &written) {
            let resolved = self.resolve_written(&written);
            let args = p.segs.last().map(|(_, a)| a.clone()).unwrap_or_default();
            for (i, elem) in ts.elems.iter().enumerate() {
                let t = match &resolved {
                    Ty::Def(t, targs) => self.ix.field_ty(*t, targs, &i.to_string()),
                    _ if args.len() == ts.elems.len() => self.resolve_written(&args[i]),
                    _ => Ty::Unknown,
                };
                self.bind_pat(elem, t);
            }
            return;
        }
        let t = self.resolve_written(&written);
        self.bind_pat(pat, t);
        if let syn::Pat::Ident(pi) = pat {
            let name = pi.ident.to_string();
            let scope = self.scopes.last_mut().expect("a scope");
            if let Some(w) = crate::wrappers::head_wrapper(&written) {
                scope.wrappers.insert(name.clone(), w);
            }
            if let Some(w) = crate::wrappers::elem_head_wrapper(&written) {
                scope.elem_wrappers.insert(name.clone(), w);
            }
            if is_generic_callable(ty, &self.generics) {
                self.scopes
                    .last_mut()
                    .expect("a scope")
                    .direct_callables
                    .insert(name);
            }
        }
    }

    /// `Trait::method(&x, ..)` with `x` of a concrete type is that type's impl, not every
    /// impl of the trait (static dispatch).
    pub(crate) fn static_dispatch(
        &mut self,
        path: &syn::Path,
        targets: Vec<(Target, Via)>,
        first: Option<&syn::Expr>,
    ) -> Vec<(Target, Via)> {
        if !targets.iter().any(|(_, v)| *v == Via::Dyn) || path.segments.len() < 2 {
            return targets;
        }
        let Some(arg) = first else { return targets };
        let segs: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        let (prefix, name) = segs.split_at(segs.len() - 1);
        let Some(Res::Trait(tr)) = self.resolve_path(prefix, path.leading_colon.is_some()) else {
            return targets;
        };
        let Some((decl, default)) = self.ix.trait_method(tr, &name[0]) else {
            return targets;
        };
        let recv = self.infer(arg);
        let chosen: Vec<FnId> = match &recv {
            Ty::Unknown | Ty::Traits(_) => return targets,
            Ty::Def(t, _) => self
                .ix
                .impls_of_type
                .get(t)
                .into_iter()
                .flatten()
                .filter(|i| self.ix.impls[**i].trait_ == Some(TraitRef::Ws(decl)))
                .map(|i| {
                    self.ix.impls[*i]
                        .methods
                        .get(&name[0])
                        .copied()
                        .unwrap_or(default)
                })
                .collect(),
            other => self
                .ix
                .open_impl_methods(other, &name[0])
                .into_iter()
                .filter(|(i, _)| self.ix.impls[*i].trait_ == Some(TraitRef::Ws(decl)))
                .map(|(_, f)| f)
                .collect(),
        };
        if chosen.is_empty() {
            return targets;
        }
        chosen
            .into_iter()
            .map(|f| (Target::Fn(f), Via::Resolved))
            .collect()
    }

    /// The type a closure passed to `recv.name(..)` gets for its first parameter.
    fn closure_param(recv: &Ty, name: &str) -> Option<Ty> {
        match recv {
            Ty::Coll(t)
                if matches!(
                    name,
                    "map"
                        | "filter"
                        | "filter_map"
                        | "find"
                        | "find_map"
                        | "any"
                        | "all"
                        | "position"
                        | "for_each"
                        | "flat_map"
                        | "take_while"
                        | "skip_while"
                        | "inspect"
                        | "max_by_key"
                        | "min_by_key"
                        | "partition"
                        | "retain"
                        | "sort_by_key"
                ) =>
            {
                Some((**t).clone())
            }
            Ty::Wrap(t)
                if matches!(
                    name,
                    "map"
                        | "and_then"
                        | "filter"
                        | "map_or"
                        | "map_or_else"
                        | "is_some_and"
                        | "is_ok_and"
                        | "inspect"
                ) =>
            {
                Some((**t).clone())
            }
            // A `thread_local!` static lends its value to the closure.
            Ty::ExtOf(p, args) if is_local_key(p, name) => args.first().cloned(),
            // The contents of an outside value are outside values.
            Ty::Ext(p) => Some(Ty::Ext(format!("{p}::{name}::0"))),
            _ => None,
        }
    }

    pub(crate) fn bind_pat(&mut self, pat: &syn::Pat, ty: Ty) {
        match pat {
            syn::Pat::Ident(pi) => {
                if let Some((_, sub)) = &pi.subpat {
                    self.bind_pat(sub, ty.clone());
                }
                self.bind(pi.ident.to_string(), ty);
            }
            syn::Pat::Type(pt) => {
                let t = self.resolve_written(&lower_ty(&pt.ty));
                self.bind_pat(&pt.pat, t);
            }
            syn::Pat::Reference(r) => self.bind_pat(&r.pat, ty),
            syn::Pat::Paren(p) => self.bind_pat(&p.pat, ty),
            syn::Pat::TupleStruct(ts) => {
                let wrapper = ts
                    .path
                    .segments
                    .last()
                    .is_some_and(|s| matches!(s.ident.to_string().as_str(), "Some" | "Ok"));
                for (i, p) in ts.elems.iter().enumerate() {
                    let t = match (&ty, wrapper, i) {
                        (Ty::Wrap(inner), true, 0) => (**inner).clone(),
                        (_, false, i) if !matches!(ty, Ty::Ext(_)) => {
                            self.pattern_field_ty(&ts.path, &ty, &i.to_string())
                        }
                        // Destructuring an outside value yields outside values.
                        (Ty::Ext(p), _, i) => Ty::Ext(format!("{p}::{i}")),
                        _ => Ty::Unknown,
                    };
                    self.bind_pat(p, t);
                }
            }
            syn::Pat::Or(o) => {
                for c in &o.cases {
                    self.bind_pat(c, ty.clone());
                }
            }
            syn::Pat::Slice(s) => {
                let elem = match &ty {
                    Ty::Coll(inner) => (**inner).clone(),
                    _ => Ty::Unknown,
                };
                for p in &s.elems {
                    self.bind_pat(p, elem.clone());
                }
            }
            syn::Pat::Tuple(t) => {
                let elems = match &ty {
                    Ty::Tuple(es) if es.len() == t.elems.len() => es.clone(),
                    _ => vec![Ty::Unknown; t.elems.len()],
                };
                for (p, e) in t.elems.iter().zip(elems) {
                    self.bind_pat(p, e);
                }
            }
            syn::Pat::Struct(s) => {
                for f in &s.fields {
                    let member = match &f.member {
                        syn::Member::Named(i) => i.to_string(),
                        syn::Member::Unnamed(i) => i.index.to_string(),
                    };
                    let t = self.pattern_field_ty(&s.path, &ty, &member);
                    self.bind_pat(&f.pat, t);
                }
            }
            _ => {}
        }
    }

    /// A receiver that is a local binding or parameter, reached through fields, references,
    /// `?` and the identity-like methods `infer` sees through (`clone`, `lock`, `unwrap`, ...).
    pub(crate) fn local_rooted(&self, e: &syn::Expr) -> bool {
        match e {
            syn::Expr::Path(p) if p.qself.is_none() && p.path.segments.len() == 1 => {
                self.var(&p.path.segments[0].ident.to_string()).is_some()
            }
            syn::Expr::Paren(p) => self.local_rooted(&p.expr),
            syn::Expr::Group(g) => self.local_rooted(&g.expr),
            syn::Expr::Reference(r) => self.local_rooted(&r.expr),
            syn::Expr::Unary(u) if matches!(u.op, syn::UnOp::Deref(_)) => {
                self.local_rooted(&u.expr)
            }
            syn::Expr::Field(f) => self.local_rooted(&f.base),
            syn::Expr::Try(t) => self.local_rooted(&t.expr),
            syn::Expr::Await(a) => self.local_rooted(&a.base),
            syn::Expr::MethodCall(mc) => {
                IDENTITY_METHODS.contains(&mc.method.to_string().as_str())
                    && self.local_rooted(&mc.receiver)
            }
            _ => false,
        }
    }

    fn with_scope(&mut self, f: impl FnOnce(&mut Self)) {
        self.scopes.push(Scope::default());
        f(self);
        self.scopes.pop();
    }
}

/// A parameter typed by a generic or `impl` bound (`f: F`, `f: impl Fn(T)`): the values
/// it receives are written at its callers.
fn is_generic_callable(ty: &syn::Type, generics: &HashMap<String, Ty>) -> bool {
    match ty {
        syn::Type::ImplTrait(_) => true,
        syn::Type::Reference(r) => is_generic_callable(&r.elem, generics),
        syn::Type::Path(p) if p.qself.is_none() && p.path.segments.len() == 1 => {
            generics.contains_key(&p.path.segments[0].ident.to_string())
        }
        _ => false,
    }
}

/// The fns a name stands for (every cfg twin), else the outside path it names.
fn fn_targets(rs: &[Res]) -> Vec<(Target, Via)> {
    let fns: Vec<(Target, Via)> = rs
        .iter()
        .filter_map(|r| match r {
            Res::Fn(f) => Some((Target::Fn(*f), Via::Resolved)),
            _ => None,
        })
        .collect();
    if !fns.is_empty() {
        return fns;
    }
    rs.iter()
        .find_map(|r| match r {
            Res::Ext(p) => Some(vec![(Target::Ext(p.clone()), Via::Resolved)]),
            _ => None,
        })
        .unwrap_or_default()
}

/// The outside path a call reaches (its first), for deciding what the callee may call back.
fn ext_callee(targets: &[(Target, Via)]) -> String {
    targets
        .iter()
        .find_map(|(t, _)| match t {
            Target::Ext(p) => Some(p.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The first workspace fn among a call's targets: whose signature types the call's closures.
fn first_fn(targets: &[(Target, Via)]) -> Option<FnId> {
    targets.iter().find_map(|(t, _)| match t {
        Target::Fn(f) => Some(*f),
        Target::Ext(_) | Target::Pool(_) => None,
    })
}

/// A closure argument, also boxed or pinned (`Box::new(|x| ..)`).
fn is_closure_arg(a: &syn::Expr) -> bool {
    match a {
        syn::Expr::Closure(_) => true,
        syn::Expr::Call(c) => is_boxing(c) && c.args.first().is_some_and(is_closure_arg),
        _ => false,
    }
}

/// `Box::new(x)`, `Arc::new(x)`, `Rc::new(x)`, `Box::pin(x)`: the same value, boxed.
fn is_boxing(c: &syn::ExprCall) -> bool {
    let syn::Expr::Path(p) = &*c.func else {
        return false;
    };
    let segs: Vec<String> = p
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    c.args.len() == 1
        && matches!(
            segs.iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .as_slice(),
            [.., "Box" | "Arc" | "Rc", "new" | "pin"]
        )
}

/// `LocalKey::with` and kin, which call their closure with the thread-local value.
fn is_local_key(p: &str, method: &str) -> bool {
    p.ends_with("thread::LocalKey")
        && matches!(
            method,
            "with" | "try_with" | "with_borrow" | "with_borrow_mut"
        )
}

/// Std's generic types do not deref to their type arguments (those that do, `Box`, `Arc`,
/// guards, `LazyLock`, are seen through when types are resolved).
fn is_std(p: &str) -> bool {
    ["std::", "core::", "alloc::"]
        .iter()
        .any(|s| p.starts_with(s))
}

fn with_self(rest: &[String]) -> Vec<String> {
    let mut v = vec!["self".to_string()];
    v.extend(rest.iter().cloned());
    v
}

fn unwrap(t: Ty) -> Ty {
    match t {
        Ty::Wrap(inner) => *inner,
        other => other,
    }
}

/// `Self` in a method's return type means the receiver's concrete type when it is known.
fn substitute_self(t: &Ty, recv: Option<&Ty>) -> Ty {
    match (t, recv) {
        (Ty::Traits(_), Some(r @ Ty::Def(..))) => r.clone(),
        _ => t.clone(),
    }
}

impl<'ast> Visit<'ast> for Walker<'_> {
    fn visit_block(&mut self, b: &'ast syn::Block) {
        self.scopes.push(Scope::default());
        // `use` items apply to the whole block, wherever they stand in it.
        for s in &b.stmts {
            // Consts and statics declared in the block type their uses (`TEMPLATES.len()`).
            let local_const = match s {
                syn::Stmt::Item(syn::Item::Const(c)) => Some((&c.ident, &c.ty)),
                syn::Stmt::Item(syn::Item::Static(c)) => Some((&c.ident, &c.ty)),
                _ => None,
            };
            if let Some((ident, ty)) = local_const {
                let t = self.resolve_written(&lower_ty(ty));
                self.bind(ident.to_string(), t);
            }
            if let syn::Stmt::Item(syn::Item::Use(u)) = s {
                for us in lower_use_item(u) {
                    let r = self
                        .resolve_path(&us.path, us.global)
                        .unwrap_or(Res::Ext(us.path.join("::")));
                    let scope = self.scopes.last_mut().expect("a scope");
                    match (us.alias, r) {
                        // Several `as _` imports may share a block: keep each (under a key
                        // no path can spell) so their traits stay in scope.
                        (Some(alias), r) if alias == "_" => {
                            let key = format!("_ {}", scope.uses.len());
                            scope.uses.insert(key, r);
                        }
                        (Some(alias), r) => {
                            scope.uses.insert(alias, r);
                        }
                        (None, Res::Mod(m)) => scope.globs.push(m),
                        (None, _) => {}
                    }
                }
            }
        }
        for s in &b.stmts {
            let line = self.line_override.unwrap_or_else(|| stmt_line(s));
            self.stmt_lines.push(line);
            self.visit_stmt(s);
            self.stmt_lines.pop();
        }
        self.scopes.pop();
    }

    // Nested items are separate (or out-of-scope) code, not part of this body.
    fn visit_item(&mut self, _: &'ast syn::Item) {}

    fn visit_local(&mut self, l: &'ast syn::Local) {
        // The first closure recorded while walking the initializer is the one it is.
        let first_closure = self.closures.len();
        let (ty, wrapper) = match &l.init {
            Some(init) => {
                self.arg_stored = None;
                self.visit_expr(&init.expr);
                if let Some((_, d)) = &init.diverge {
                    self.visit_expr(d);
                }
                (self.infer(&init.expr), self.std_wrapper(&init.expr))
            }
            None => (Ty::Unknown, None),
        };
        let written = match &l.pat {
            syn::Pat::Type(pt) => crate::wrappers::head_wrapper(&lower_ty(&pt.ty)),
            _ => None,
        };
        // `let r: Reply = x.into();`: the annotation names the `From` impls that may run.
        if let (syn::Pat::Type(pt), Some(init)) = (&l.pat, &l.init)
            && let syn::Expr::MethodCall(mc) = &*init.expr
            && matches!(mc.method.to_string().as_str(), "into" | "try_into")
        {
            let dst = self.resolve_written(&lower_ty(&pt.ty));
            self.add_from_into(&dst, mc.method.span().start().line);
        }
        self.bind_pat(&l.pat, ty);
        let line = syn::spanned::Spanned::span(&l.let_token).start().line;
        if let Some(name) = pat_ident(&l.pat) {
            if let Some(w) = written.or(wrapper) {
                self.scopes
                    .last_mut()
                    .expect("a scope")
                    .wrappers
                    .insert(name.clone(), w);
            }
            if matches!(
                l.init.as_ref().map(|i| &*i.expr),
                Some(syn::Expr::Closure(_))
            ) {
                let scope = self.scopes.last_mut().expect("a scope");
                scope.direct_callables.insert(name.clone());
                if first_closure < self.closures.len() {
                    self.closures[first_closure].stored = false;
                    scope
                        .local_closures
                        .insert(name.clone(), first_closure as u32);
                }
            }
            // An owned value bound here is dropped at the end of the scope (unless moved
            // away); a reference (`let s = &map[k]`, `map.get(k)`) is not.
            if let Some(t) = self.var(&name).cloned()
                && !self.drop_fns(&t).is_empty()
                && l.init.as_ref().is_some_and(|i| self.owned_value(&i.expr))
            {
                self.add_drops(&t, line);
            }
        }
    }

    fn visit_expr_call(&mut self, c: &'ast syn::ExprCall) {
        self.arg_stored = None;
        // A closure boxed on its way to its callee (`f(Box::new(|x| ..))`) keeps the types
        // the callee's bound gives it.
        let boxing = self.closure_param.take().filter(|_| is_boxing(c));
        let mut spawner = false;
        let mut callee = None;
        let mut outside = false;
        let mut store_args = is_boxing(c);
        let mut targets_copy: Vec<(Target, Via)> = Vec::new();
        if let syn::Expr::Path(p) = &*c.func {
            let targets = self.path_targets(p.qself.as_ref(), &p.path);
            let targets = self.static_dispatch(&p.path, targets, c.args.first());
            callee = first_fn(&targets);
            let line = p
                .path
                .segments
                .last()
                .map(|s| s.ident.span().start().line)
                .unwrap_or(0);
            let last = p
                .path
                .segments
                .last()
                .map(|s| s.ident.to_string())
                .unwrap_or_default();
            if targets.is_empty() {
                self.call_through_value(p, &c.args, line);
            }
            outside = !targets.is_empty() && callee.is_none();
            targets_copy = targets.clone();
            // `Some(f)`, `Ok(f)`, `Handler(f)`: a variant or tuple struct keeps its value.
            let ctor = targets.is_empty() && last.chars().next().is_some_and(char::is_uppercase);
            store_args |= ctor || (outside && crate::values::stores_value(&last));
            if last == "drop"
                && p.path.segments.len() <= 3
                && let Some(a) = c.args.first()
            {
                let t = self.infer(a);
                self.add_drops(&t, line);
            }
            self.add(targets, line);
            spawner = SPAWNERS.contains(&last.as_str());
        } else {
            self.visit_expr(&c.func);
            let line = crate::syntax::expr_line(&c.func);
            let sig = self.value_sig(c.args.iter());
            self.add(vec![(Target::Pool(sig), Via::Value)], line);
        }
        if spawner {
            self.spawned += 1;
        }
        // `Type::method(recv, |x| ..)` passes `self` first.
        let (skip, recv) = match callee {
            Some(f) if self.ix.fns[f].sig.has_self => (1, c.args.first().map(|r| self.infer(r))),
            _ => (0, None),
        };
        for (i, a) in c.args.iter().enumerate() {
            if let (true, Some(f)) = (is_closure_arg(a), callee)
                && i >= skip
            {
                self.closure_param = self.ix.closure_inputs(f, i - skip, recv.as_ref());
            } else if boxing.is_some() {
                self.closure_param = boxing.clone();
            }
            let keeps = callee.is_some_and(|f| i >= skip && self.ix.param_keeps_value(f, i - skip));
            self.arg_stored = Some(store_args || keeps);
            self.visit_expr(a);
            self.arg_stored = None;
            self.closure_param = None;
        }
        // A value the call returns is dropped by someone: here, or where it is moved to.
        // (Outside fns return outside values; tuple structs and variants are typed too.)
        let typed_result = callee.is_some()
            || matches!(&*c.func, syn::Expr::Path(p) if p.path.segments.last().is_some_and(|s| s.ident.to_string().starts_with(char::is_uppercase)));
        if !self.ix.drop_glue.is_empty()
            && typed_result
            && callee.is_none_or(|f| crate::implicit::returns_owned(self.ix, f))
        {
            let t = self.infer_call(c);
            self.add_drops(&t, crate::syntax::expr_line(&c.func));
        }
        if outside {
            let callee = ext_callee(&targets_copy);
            self.hand_off(&callee, c.args.iter(), crate::syntax::expr_line(&c.func));
        }
        if spawner {
            self.spawned -= 1;
        }
    }

    fn visit_expr_method_call(&mut self, mc: &'ast syn::ExprMethodCall) {
        self.arg_stored = None;
        self.visit_expr(&mc.receiver);
        let recv = self.infer(&mc.receiver);
        let name = mc.method.to_string();
        let line = mc.method.span().start().line;
        let wrapper_own = self.wrapper_method(&mc.receiver, &name);
        let targets = match &wrapper_own {
            Some(path) => vec![(Target::Ext(path.clone()), Via::Resolved)],
            None => self.method_targets(&recv, &name),
        };
        // The name fallback is for a local whose type is unknown (a binding or parameter,
        // its fields, what it unwraps to): a value built by a chain of calls the lint could
        // not type is not matched by name (see `analysis`: name edges reach sinks only).
        let targets =
            if targets.iter().any(|(_, v)| *v == Via::Name) && !self.local_rooted(&mc.receiver) {
                targets
                    .into_iter()
                    .filter(|(_, v)| *v != Via::Name)
                    .collect()
            } else {
                targets
            };
        if !targets.iter().any(|(_, v)| *v != Via::Name)
            && matches!(recv, Ty::Unknown | Ty::Traits(_))
            && !crate::values::is_fn_call_method(&name)
        {
            self.unresolved(
                line,
                format!("method `{name}` on a value whose type the lint cannot infer"),
            );
            if let Some(u) = self.unresolved.last_mut() {
                u.method = Some(name.clone());
            }
        }
        let callee = first_fn(&targets);
        let outside = !targets.is_empty() && callee.is_none();
        let outside_callee = ext_callee(&targets);
        self.add(targets, line);
        if name == "into" || name == "try_into" {
            self.add_into(&recv, line);
        }
        self.add_collection_drops(&recv, &name, line);
        self.add_collection_compares(&recv, &name, line);
        let spawner = SPAWNERS.contains(&name.as_str());
        if spawner {
            self.spawned += 1;
        }
        let param = Self::closure_param(&recv, &name);
        let store_args = param.is_none() && outside && crate::values::stores_value(&name);
        let elem_wrapper = if param.is_some() {
            self.elem_wrapper(&mc.receiver)
        } else {
            None
        };
        for (i, a) in mc.args.iter().enumerate() {
            if is_closure_arg(a) {
                self.closure_wrapper = elem_wrapper;
                self.closure_param = match (&param, callee) {
                    (Some(p), _) => Some(vec![p.clone()]),
                    (None, Some(f)) => self.ix.closure_inputs(f, i, Some(&recv)),
                    _ => None,
                };
            }
            let keeps = param.is_none() && callee.is_some_and(|f| self.ix.param_keeps_value(f, i));
            self.arg_stored = Some(store_args || keeps);
            self.visit_expr(a);
            self.arg_stored = None;
            self.closure_param = None;
        }
        if outside && wrapper_own.is_none() {
            self.hand_off(&outside_callee, mc.args.iter(), line);
        }
        if spawner {
            self.spawned -= 1;
        }
    }

    // A fn item used as a value (`.map(helper)`, `spawn(worker)`) may be called later.
    fn visit_expr_path(&mut self, p: &'ast syn::ExprPath) {
        // A fn item handed to an adapter (`.map(helper)`) is called there; kept anywhere
        // else (a field, a table, a `let`, a storing call) it is a value for later.
        let stored = self.arg_stored.take().unwrap_or(true);
        let targets: Vec<(Target, Via)> = self
            .path_targets(p.qself.as_ref(), &p.path)
            .into_iter()
            .filter(|(t, _)| matches!(t, Target::Fn(_)) || p.path.segments.len() > 1)
            .collect();
        let line = p
            .path
            .segments
            .last()
            .map(|s| s.ident.span().start().line)
            .unwrap_or(0);
        // A closure bound by `let` and now moved into storage.
        if stored
            && p.qself.is_none()
            && let Some(id) = p.path.get_ident().and_then(|i| {
                let name = i.to_string();
                self.scopes
                    .iter()
                    .rev()
                    .find_map(|s| s.local_closures.get(&name).copied())
            })
        {
            self.closures[id as usize].stored = true;
        }
        if stored {
            for (t, _) in &targets {
                if let Target::Fn(f) = t {
                    self.fn_values.push(*f);
                }
            }
        }
        // A static with an initializer: touching it may run it (`LazyLock`), and its table
        // of fn items is reachable from here.
        if p.qself.is_none()
            && let Some(init) = self.static_init(&p.path)
        {
            self.add(vec![(Target::Fn(init), Via::Resolved)], line);
        }
        self.add(targets, line);
    }

    fn visit_expr_closure(&mut self, c: &'ast syn::ExprClosure) {
        let stored = self.arg_stored.take().unwrap_or(true);
        let params = self.closure_param.take().unwrap_or_default();
        let first_wrapper = self.closure_wrapper.take();
        let id = self.closures.len() as u32;
        self.closures.push(ClosureInfo {
            params: vec![None; c.inputs.len()],
            line: self
                .line_override
                .unwrap_or_else(|| c.inputs_begin.span.start().line),
            parent: self.closure_stack.last().copied(),
            stored,
        });
        self.closure_stack.push(id);
        self.with_scope(|w| {
            for (i, p) in c.inputs.iter().enumerate() {
                w.bind_pat(p, params.get(i).cloned().unwrap_or(Ty::Unknown));
            }
            if let Some(p) = c.inputs.first() {
                w.mark_wrapper(p, first_wrapper);
            }
            // The parameters' types, given by the callee's bound or written (`|ctx: &Ctx|`).
            let sig: ValueSig = c
                .inputs
                .iter()
                .map(|p| {
                    pat_ident(p)
                        .and_then(|n| w.var(&n).cloned())
                        .and_then(def_id)
                })
                .collect();
            w.closures[id as usize].params = sig;
            w.visit_expr(&c.body);
        });
        self.closure_stack.pop();
    }

    fn visit_expr_for_loop(&mut self, f: &'ast syn::ExprForLoop) {
        self.visit_expr(&f.expr);
        let line = f.for_token.span.start().line;
        let elem = match self.infer(&f.expr) {
            Ty::Coll(inner) => *inner,
            other => self.add_iteration(&other, line).unwrap_or(Ty::Unknown),
        };
        let elem_wrapper = self.elem_wrapper(&f.expr);
        self.with_scope(|w| {
            w.bind_pat(&f.pat, elem);
            w.mark_wrapper(&f.pat, elem_wrapper);
            w.visit_block(&f.body);
        });
    }

    fn visit_expr_let(&mut self, l: &'ast syn::ExprLet) {
        self.visit_expr(&l.expr);
        let t = self.infer(&l.expr);
        self.bind_pat(&l.pat, t);
    }

    fn visit_expr_match(&mut self, m: &'ast syn::ExprMatch) {
        self.visit_expr(&m.expr);
        let t = self.infer(&m.expr);
        for arm in &m.arms {
            self.with_scope(|w| {
                w.bind_pat(&arm.pat, t.clone());
                visit::visit_pat(w, &arm.pat);
                w.visit_expr(&arm.body);
            });
        }
    }

    fn visit_expr_assign(&mut self, a: &'ast syn::ExprAssign) {
        self.visit_expr(&a.left);
        self.visit_expr(&a.right);
        // The value overwritten is dropped.
        let t = self.infer(&a.left);
        self.add_drops(&t, crate::syntax::expr_line(&a.left));
    }

    fn visit_expr_binary(&mut self, b: &'ast syn::ExprBinary) {
        self.visit_expr(&b.left);
        self.visit_expr(&b.right);
        let t = self.infer(&b.left);
        self.add_binary_op(&b.op, &t, crate::syntax::expr_line(&b.left));
    }

    fn visit_expr_unary(&mut self, u: &'ast syn::ExprUnary) {
        self.visit_expr(&u.expr);
        let t = self.infer(&u.expr);
        self.add_unary_op(&u.op, &t, crate::syntax::expr_line(&u.expr));
    }

    fn visit_expr_index(&mut self, i: &'ast syn::ExprIndex) {
        self.visit_expr(&i.expr);
        self.visit_expr(&i.index);
        let t = self.infer(&i.expr);
        self.add_index(&t, crate::syntax::expr_line(&i.expr));
    }

    fn visit_expr_await(&mut self, a: &'ast syn::ExprAwait) {
        self.visit_expr(&a.base);
        let t = self.infer(&a.base);
        self.add_await(&t, crate::syntax::expr_line(&a.base));
    }

    fn visit_expr_try(&mut self, t: &'ast syn::ExprTry) {
        self.visit_expr(&t.expr);
        // `?` converts the error with `From` into the fn's error type.
        let err = self.err_ty.clone();
        self.add_from_into(&err, crate::syntax::expr_line(&t.expr));
    }

    fn visit_expr_field(&mut self, f: &'ast syn::ExprField) {
        self.visit_expr(&f.base);
        let base = self.infer(&f.base);
        if let Ty::Def(t, args) = &base {
            let member = match &f.member {
                syn::Member::Named(i) => i.to_string(),
                syn::Member::Unnamed(i) => i.index.to_string(),
            };
            if self.ix.field_ty(*t, args, &member) == Ty::Unknown
                && !self.ix.has_field(*t, &member)
                && let Some((_, fns)) = self.deref_of(*t, args)
            {
                let line = crate::syntax::expr_line(&f.base);
                self.add(
                    fns.into_iter()
                        .map(|f| (Target::Fn(f), Via::Implicit))
                        .collect(),
                    line,
                );
            }
        }
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        let line = m
            .path
            .segments
            .last()
            .map(|s| s.ident.span().start().line)
            .unwrap_or(0);
        let exprs = macro_exprs(&m.tokens);
        for e in &exprs {
            self.visit_expr(e);
        }
        if !self.expand_workspace_macro(m, line) {
            self.add_format_calls(m, &exprs, line);
            // An outside macro whose arguments are not Rust (a DSL): calls written in them
            // are not seen.
            if exprs.is_empty() && !m.tokens.is_empty() {
                let name = m
                    .path
                    .segments
                    .last()
                    .map(|s| s.ident.to_string())
                    .unwrap_or_default();
                self.unresolved(
                    line,
                    format!("macro `{name}!`: its arguments do not parse as Rust"),
                );
            }
        }
    }
}

/// The workspace type a value has, if it is one.
pub(crate) fn def_id(t: Ty) -> Option<crate::index::TypeId> {
    match t {
        Ty::Def(id, _) => Some(id),
        _ => None,
    }
}

/// The name a simple pattern binds (`x`, `mut x`, `x: T`).
fn pat_ident(p: &syn::Pat) -> Option<String> {
    match p {
        syn::Pat::Ident(pi) => Some(pi.ident.to_string()),
        syn::Pat::Type(pt) => pat_ident(&pt.pat),
        _ => None,
    }
}
