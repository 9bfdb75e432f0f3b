//! The item index of the whole workspace and name resolution over it: modules and what each
//! name in them means (items, `use` aliases, globs, re-exports), types with their fields,
//! traits with their impls, and the methods of every type.
//!
//! Resolution is done once, up front, as a fixpoint over all `use` declarations, so that
//! walking bodies (in parallel) only does hash lookups.

use crate::syntax::{Bounds, FnSkel, ImplSkel, ModSkel, PathExpr, Sig, TyExpr, TypeKind};
use std::collections::HashMap;

pub type ModId = usize;
pub type FnId = usize;
pub type TypeId = usize;
pub type TraitId = usize;
pub type ImplId = usize;
pub type FileId = usize;

/// What a name or path means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Res {
    Mod(ModId),
    Fn(FnId),
    Type(TypeId),
    Trait(TraitId),
    /// An enum variant, macro or associated item: never a call target.
    Value,
    /// A const or static of a module (its declared type is in `Index::const_types`).
    Const(ModId),
    /// Something outside the workspace, by its full path (`genai::Client`).
    Ext(String),
}

/// A resolved type, as far as method resolution needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ty {
    Unknown,
    /// A workspace type with its generic arguments.
    Def(TypeId, Vec<Ty>),
    /// A type outside the workspace.
    Ext(String),
    /// An outside type with type arguments involving workspace types (`Sender<Job>`,
    /// `State<App>`): its own methods are outside calls; through `Deref` it may also expose
    /// the methods of those arguments.
    ExtOf(String, Vec<Ty>),
    /// A tuple type (or `()`).
    Tuple(Vec<Ty>),
    /// `dyn`/`impl` trait objects and generic parameters: any implementor.
    Traits(Vec<TraitRef>),
    /// `Option<T>` / `Result<T, _>`: `?`, `unwrap()` and `Some(x)` patterns give `T`.
    Wrap(Box<Ty>),
    /// Collections: iteration and indexing give the element.
    Coll(Box<Ty>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraitRef {
    Ws(TraitId),
    Ext(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Free,
    Impl(ImplId),
    Trait(TraitId),
}

#[derive(Debug)]
pub struct Module {
    pub path: String,
    pub krate: usize,
    pub parent: Option<ModId>,
    pub file: FileId,
    /// Items and explicit `use`s: they shadow glob imports.
    pub names: HashMap<String, Vec<Res>>,
    pub glob_names: HashMap<String, Vec<Res>>,
    /// Globs into crates outside the workspace (`use genai::prelude::*`).
    pub ext_globs: Vec<String>,
    pub(crate) uses: Vec<crate::syntax::UseSkel>,
}

#[derive(Debug)]
pub struct FnDef {
    pub path: String,
    pub module: ModId,
    pub file: FileId,
    pub sig: Sig,
    pub owner: Owner,
    pub has_body: bool,
}

#[derive(Debug)]
pub struct TypeDef {
    pub path: String,
    pub module: ModId,
    pub kind: TypeKind,
    pub generics: Bounds,
}

#[derive(Debug)]
pub struct TraitDef {
    pub path: String,
    pub module: ModId,
    pub supertraits_raw: Vec<PathExpr>,
    pub supertraits: Vec<TraitRef>,
    pub generics: Bounds,
    pub methods: HashMap<String, FnId>,
    pub impls: Vec<ImplId>,
    /// Associated types and their bounds.
    pub assoc: Vec<(String, Vec<PathExpr>)>,
}

#[derive(Debug)]
pub struct ImplDef {
    pub module: ModId,
    pub self_ty_raw: TyExpr,
    pub self_ty: Ty,
    pub trait_raw: Option<PathExpr>,
    pub trait_: Option<TraitRef>,
    pub generics: Bounds,
    pub methods: HashMap<String, FnId>,
    /// Associated types as written (`type Target = Client;`).
    pub assoc: Vec<(String, TyExpr)>,
}

#[derive(Debug)]
pub struct Crate {
    pub name: String,
    pub root: ModId,
    pub is_lib: bool,
    /// Renamed dependencies: the name code uses → the crate it stands for.
    pub externs: HashMap<String, String>,
}

/// A file that is part of some crate's module tree.
#[derive(Debug, Clone)]
pub struct FileInfo {
    pub abs: std::path::PathBuf,
    /// Relative to the analysed root, with `/` separators.
    pub rel: String,
}

/// A module-tree instance of a parsed file: its fns occupy `base..base + fn_count`.
#[derive(Debug, Clone, Copy)]
pub struct Instance {
    pub file: FileId,
    pub module: ModId,
    pub base: FnId,
}

#[derive(Debug, Default)]
pub struct Index {
    pub crates: Vec<Crate>,
    pub libs: HashMap<String, ModId>,
    pub modules: Vec<Module>,
    pub fns: Vec<FnDef>,
    pub types: Vec<TypeDef>,
    pub traits: Vec<TraitDef>,
    pub impls: Vec<ImplDef>,
    pub files: Vec<FileInfo>,
    pub instances: Vec<Instance>,
    /// All impls (inherent and trait) whose self type is a workspace type.
    pub impls_of_type: HashMap<TypeId, Vec<ImplId>>,
    /// Every method taking `self`, by name: the fallback when a receiver's type is unknown.
    pub methods_by_name: HashMap<String, Vec<FnId>>,
    /// Impls of workspace traits on types the workspace does not define (outside types,
    /// blanket impls, slices, tuples), with the fn each provides, by method name.
    pub open_impls: HashMap<String, Vec<(ImplId, FnId)>>,
    /// cfg-gated twins: fns sharing a path, each mapped to the whole group.
    pub twins: HashMap<FnId, Vec<FnId>>,
    /// Fns imported by `use` under the name of a local fn (its cfg twin): calls only.
    pub imported_twins: HashMap<FnId, Vec<FnId>>,
    /// Declared types of consts and statics, by defining module and name.
    pub const_types: HashMap<(ModId, String), TyExpr>,
    /// The initializer of each static, walked as a fn named after it.
    pub static_inits: HashMap<(ModId, String), FnId>,
    /// Workspace `macro_rules!` by name: (defining crate, each rule's matcher and
    /// transcriber text).
    pub macros: HashMap<String, Vec<(usize, String, String)>>,
    /// Drop glue: for each workspace type that owns (itself or through its fields) a value
    /// with a workspace `Drop` impl, the `drop` fns run when it is dropped.
    pub drop_glue: HashMap<TypeId, Vec<FnId>>,
    /// Workspace impls of outside traits, by the trait's last path segment (`System`).
    pub ext_trait_impls: HashMap<String, Vec<ImplId>>,
    /// Every workspace `impl From<X> for Y` (and `TryFrom<X>`): the impl, `X` resolved, and
    /// its `from` (`try_from`) fn.
    pub from_impls: Vec<(ImplId, Ty, FnId)>,
}

const MAX_RESOLVE_DEPTH: usize = 64;

impl Index {
    pub fn new_module(
        &mut self,
        path: String,
        krate: usize,
        parent: Option<ModId>,
        file: FileId,
    ) -> ModId {
        self.modules.push(Module {
            path,
            krate,
            parent,
            file,
            names: HashMap::new(),
            glob_names: HashMap::new(),
            ext_globs: Vec::new(),
            uses: Vec::new(),
        });
        self.modules.len() - 1
    }

    /// Adds the items of one module skeleton; fns are written into the pre-sized `fns` slots
    /// (`base + local`). Returns the inline child modules and `mod x;` declarations to load.
    pub fn add_items(
        &mut self,
        m: ModId,
        skel: &ModSkel,
        base: FnId,
        slots: &mut [Option<FnDef>],
    ) -> Vec<(ModId, ModSkel)> {
        let file = self.modules[m].file;
        let mpath = self.modules[m].path.clone();
        let mut add_fn = |slots: &mut [Option<FnDef>], f: &FnSkel, path: String, owner: Owner| {
            slots[f.local] = Some(FnDef {
                path,
                module: m,
                file,
                sig: f.sig.clone(),
                owner,
                has_body: f.has_body,
            });
            base + f.local
        };
        let mut names: Vec<(String, Res)> = Vec::new();
        for f in &skel.fns {
            let id = add_fn(slots, f, format!("{mpath}::{}", f.sig.name), Owner::Free);
            names.push((f.sig.name.clone(), Res::Fn(id)));
        }
        for t in &skel.types {
            self.types.push(TypeDef {
                path: format!("{mpath}::{}", t.name),
                module: m,
                kind: t.kind.clone(),
                generics: t.generics.clone(),
            });
            names.push((t.name.clone(), Res::Type(self.types.len() - 1)));
        }
        for t in &skel.traits {
            let id = self.traits.len();
            let tpath = format!("{mpath}::{}", t.name);
            let mut methods = HashMap::new();
            for f in &t.methods {
                let fid = add_fn(
                    slots,
                    f,
                    format!("{tpath}::{}", f.sig.name),
                    Owner::Trait(id),
                );
                methods.insert(f.sig.name.clone(), fid);
            }
            self.traits.push(TraitDef {
                path: tpath,
                module: m,
                supertraits_raw: t.supertraits.clone(),
                supertraits: Vec::new(),
                generics: t.generics.clone(),
                methods,
                impls: Vec::new(),
                assoc: t.assoc.clone(),
            });
            names.push((t.name.clone(), Res::Trait(id)));
        }
        for i in &skel.impls {
            self.add_impl(m, i, &mpath, &mut add_fn, slots);
        }
        for v in &skel.values {
            let typed = skel.const_types.iter().any(|(n, _)| n == v);
            names.push((v.clone(), if typed { Res::Const(m) } else { Res::Value }));
        }
        for (n, t) in &skel.const_types {
            self.const_types.insert((m, n.clone()), t.clone());
        }
        for f in &skel.inits {
            let id = add_fn(slots, f, format!("{mpath}::{}", f.sig.name), Owner::Free);
            self.static_inits.insert((m, f.sig.name.clone()), id);
        }
        let krate = self.modules[m].krate;
        for (name, rules) in &skel.macros {
            let e = self.macros.entry(name.clone()).or_default();
            e.extend(rules.iter().map(|(m, t)| (krate, m.clone(), t.clone())));
        }
        let mut children = Vec::new();
        for (name, _, inner) in &skel.inline_mods {
            // Twin modules under opposite cfgs merge into one, holding both definitions.
            let twin = names.iter().find_map(|(n, r)| match r {
                Res::Mod(c) if n == name => Some(*c),
                _ => None,
            });
            let child = match twin.or_else(|| self.child_module(m, name)) {
                Some(c) => c,
                None => {
                    let c = self.new_module(
                        format!("{mpath}::{name}"),
                        self.modules[m].krate,
                        Some(m),
                        file,
                    );
                    names.push((name.clone(), Res::Mod(c)));
                    c
                }
            };
            children.push((child, inner.clone()));
        }
        let module = &mut self.modules[m];
        for (n, r) in names {
            module.names.entry(n).or_default().push(r);
        }
        module.uses.extend(skel.uses.iter().cloned());
        children
    }

    fn add_impl(
        &mut self,
        m: ModId,
        i: &ImplSkel,
        mpath: &str,
        add_fn: &mut impl FnMut(&mut [Option<FnDef>], &FnSkel, String, Owner) -> FnId,
        slots: &mut [Option<FnDef>],
    ) {
        let id = self.impls.len();
        let ty_name = ty_display_name(&i.self_ty);
        let mut methods = HashMap::new();
        for f in &i.methods {
            let fid = add_fn(
                slots,
                f,
                format!("{mpath}::{ty_name}::{}", f.sig.name),
                Owner::Impl(id),
            );
            methods.insert(f.sig.name.clone(), fid);
        }
        self.impls.push(ImplDef {
            module: m,
            self_ty_raw: i.self_ty.clone(),
            self_ty: Ty::Unknown,
            trait_raw: i.trait_.clone(),
            trait_: None,
            generics: i.generics.clone(),
            methods,
            assoc: i.assoc.clone(),
        });
    }

    /// Resolves every `use` to a fixpoint, then impls, supertraits and the method tables.
    pub fn resolve(&mut self) {
        let mut done: Vec<Vec<bool>> = self
            .modules
            .iter()
            .map(|m| vec![false; m.uses.len()])
            .collect();
        // Each round resolves what the previous rounds made visible; re-export chains are
        // short in practice, and the bound guards against pathological glob cycles.
        // Indices, not iterators: each step reads other modules while updating this one.
        #[allow(clippy::needless_range_loop)]
        for _round in 0..MAX_RESOLVE_DEPTH {
            let mut changed = false;
            for m in 0..self.modules.len() {
                for u in 0..self.modules[m].uses.len() {
                    let use_ = self.modules[m].uses[u].clone();
                    match &use_.alias {
                        Some(alias) => {
                            if done[m][u] {
                                continue;
                            }
                            if let Some(r) = self.resolve_path_strict(m, &use_.path, use_.global) {
                                done[m][u] = true;
                                changed = true;
                                self.modules[m]
                                    .names
                                    .entry(alias.clone())
                                    .or_default()
                                    .push(r);
                            }
                        }
                        None => match self.resolve_path_strict(m, &use_.path, use_.global) {
                            Some(Res::Mod(src)) if src != m => {
                                let mut imported: Vec<(String, Res)> = Vec::new();
                                let sm = &self.modules[src];
                                for (n, rs) in sm.names.iter().chain(sm.glob_names.iter()) {
                                    for r in rs {
                                        imported.push((n.clone(), r.clone()));
                                    }
                                }
                                let ext: Vec<String> = sm.ext_globs.clone();
                                let dst = &mut self.modules[m];
                                for (n, r) in imported {
                                    if dst.names.contains_key(&n) {
                                        continue;
                                    }
                                    let e = dst.glob_names.entry(n).or_default();
                                    if !e.contains(&r) {
                                        e.push(r);
                                        changed = true;
                                    }
                                }
                                for e in ext {
                                    if !dst.ext_globs.contains(&e) {
                                        dst.ext_globs.push(e);
                                        changed = true;
                                    }
                                }
                                done[m][u] = true;
                            }
                            Some(Res::Ext(p)) if !done[m][u] => {
                                done[m][u] = true;
                                changed = true;
                                self.modules[m].ext_globs.push(p);
                            }
                            Some(_) => done[m][u] = true,
                            None => {}
                        },
                    }
                }
            }
            if !changed {
                break;
            }
        }
        // What is still unresolved names something outside the workspace (`use std::..`).
        for (m, done_m) in done.iter().enumerate() {
            for (u, d) in done_m.iter().enumerate() {
                let use_ = &self.modules[m].uses[u];
                if *d {
                    continue;
                }
                let r = self
                    .resolve_path(m, &use_.path, use_.global)
                    .unwrap_or(Res::Ext(use_.path.join("::")));
                match use_.alias.clone() {
                    Some(alias) => self.modules[m].names.entry(alias).or_default().push(r),
                    None => {
                        if let Res::Ext(p) = r {
                            self.modules[m].ext_globs.push(p);
                        }
                    }
                }
            }
        }
        // `extern crate brain as mind;` at a crate root puts `mind` in the extern prelude:
        // every module of the crate may write `mind::think`.
        for k in 0..self.crates.len() {
            let root = self.crates[k].root;
            let renames: Vec<(String, String)> = self.modules[root]
                .uses
                .iter()
                .filter(|u| u.global && u.path.len() == 1)
                .filter_map(|u| match &u.alias {
                    Some(a) if a != "_" && *a != u.path[0] => Some((a.clone(), u.path[0].clone())),
                    _ => None,
                })
                .collect();
            for (alias, real) in renames {
                let real = self.crates[k].externs.get(&real).cloned().unwrap_or(real);
                self.crates[k].externs.entry(alias).or_insert(real);
            }
        }
        for t in 0..self.traits.len() {
            let m = self.traits[t].module;
            let sup = self.traits[t].supertraits_raw.clone();
            self.traits[t].supertraits = sup
                .iter()
                .filter_map(|p| self.resolve_trait(m, p))
                .collect();
        }
        for i in 0..self.impls.len() {
            let m = self.impls[i].module;
            let generics = self.bounds_env(m, &self.impls[i].generics, &HashMap::new());
            let ctx = TyCtx {
                module: m,
                self_ty: &Ty::Unknown,
                generics: &generics,
            };
            let self_ty = self.resolve_ty(&ctx, &self.impls[i].self_ty_raw.clone());
            let trait_ = self.impls[i]
                .trait_raw
                .clone()
                .and_then(|p| self.resolve_trait(m, &p));
            if let Ty::Def(t, _) = &self_ty {
                self.impls_of_type.entry(*t).or_default().push(i);
            }
            if let Some(TraitRef::Ws(t)) = &trait_ {
                self.traits[*t].impls.push(i);
            }
            self.impls[i].self_ty = self_ty;
            self.impls[i].trait_ = trait_;
        }
        self.index_open_impls();
        self.index_twins();
        self.index_drop_glue();
        self.index_from_impls();
        for (i, imp) in self.impls.iter().enumerate() {
            if let Some(TraitRef::Ext(p)) = &imp.trait_ {
                let last = p.rsplit("::").next().unwrap_or(p).to_string();
                self.ext_trait_impls.entry(last).or_default().push(i);
            }
        }
        for (id, f) in self.fns.iter().enumerate() {
            if f.sig.has_self {
                self.methods_by_name
                    .entry(f.sig.name.clone())
                    .or_default()
                    .push(id);
            }
        }
    }

    /// Computes [`Index::drop_glue`]: the types with a `Drop` impl, then, to a fixpoint, the
    /// types with a field of such a type.
    fn index_drop_glue(&mut self) {
        let mut glue: HashMap<TypeId, Vec<FnId>> = HashMap::new();
        for t in 0..self.types.len() {
            let own = self.ext_trait_methods(t, "Drop", "drop");
            if !own.is_empty() {
                glue.insert(t, own);
            }
        }
        if glue.is_empty() {
            return;
        }
        // The workspace types each type's fields mention (generic arguments included).
        let mut fields_of: Vec<Vec<TypeId>> = vec![Vec::new(); self.types.len()];
        for (t, fields) in fields_of.iter_mut().enumerate() {
            let def = &self.types[t];
            let written: Vec<&TyExpr> = match &def.kind {
                TypeKind::Struct(fs) => fs.iter().map(|(_, t)| t).collect(),
                TypeKind::Enum(vs) => vs
                    .iter()
                    .flat_map(|(_, fs)| fs.iter().map(|(_, t)| t))
                    .collect(),
                TypeKind::Alias(_) => Vec::new(),
            };
            let env = self.bounds_env(def.module, &def.generics, &HashMap::new());
            let ctx = TyCtx {
                module: def.module,
                self_ty: &Ty::Unknown,
                generics: &env,
            };
            for w in written {
                mentioned_types(&self.resolve_ty(&ctx, w), fields);
            }
        }
        loop {
            let mut changed = false;
            for (t, fields) in fields_of.iter().enumerate() {
                let mut add: Vec<FnId> = Vec::new();
                for f in fields {
                    if let Some(g) = glue.get(f) {
                        add.extend(g);
                    }
                }
                if add.is_empty() {
                    continue;
                }
                let e = glue.entry(t).or_default();
                for f in add {
                    if !e.contains(&f) {
                        e.push(f);
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        self.drop_glue = glue;
    }

    fn index_from_impls(&mut self) {
        let mut out = Vec::new();
        for (i, imp) in self.impls.iter().enumerate() {
            let Some(TraitRef::Ext(p)) = &imp.trait_ else {
                continue;
            };
            let method = match p.rsplit("::").next() {
                Some("From") => "from",
                Some("TryFrom") => "try_from",
                _ => continue,
            };
            let (Some(f), Some(raw)) = (imp.methods.get(method), &imp.trait_raw) else {
                continue;
            };
            let src = raw
                .segs
                .last()
                .and_then(|(_, a)| a.first())
                .map(|a| {
                    let env = self.bounds_env(imp.module, &imp.generics, &HashMap::new());
                    let ctx = TyCtx {
                        module: imp.module,
                        self_ty: &imp.self_ty,
                        generics: &env,
                    };
                    self.resolve_ty(&ctx, a)
                })
                .unwrap_or(Ty::Unknown);
            out.push((i, src, *f));
        }
        self.from_impls = out;
    }

    /// The child module `name` of `m`, when one was declared already.
    pub fn child_module(&self, m: ModId, name: &str) -> Option<ModId> {
        self.modules[m]
            .names
            .get(name)?
            .iter()
            .find_map(|r| match r {
                Res::Mod(c) if self.modules[*c].parent == Some(m) => Some(*c),
                _ => None,
            })
    }

    /// Every definition sharing `f`'s path: cfg-gated twins (`#[cfg(feature = "x")]` and
    /// `#[cfg(not(..))]`) are all real in some build, so a call reaches each.
    pub fn twins(&self, f: FnId) -> &[FnId] {
        self.twins.get(&f).map(Vec::as_slice).unwrap_or(&[])
    }

    /// What a call resolved to `f` also reaches: its twins, and fns imported under its name
    /// in its module (a `use` twin).
    pub fn call_twins(&self, f: FnId) -> impl Iterator<Item = FnId> + '_ {
        self.twins(f)
            .iter()
            .copied()
            .chain(self.imported_twins.get(&f).into_iter().flatten().copied())
    }

    /// Groups fns by path (and, for impl methods, the trait implemented).
    fn index_twins(&mut self) {
        let mut groups: HashMap<String, Vec<FnId>> = HashMap::new();
        for (id, f) in self.fns.iter().enumerate() {
            // Impls are twins only when they implement the same trait (with the same
            // arguments) for the same written self type: `impl Npc<Scripted>` and `impl
            // Npc<Generative>` share method paths but are chosen by type arguments.
            let key = match f.owner {
                Owner::Impl(i) => {
                    let imp = &self.impls[i];
                    format!("{} for {:?} {:?}", f.path, imp.trait_raw, imp.self_ty_raw)
                }
                _ => f.path.clone(),
            };
            groups.entry(key).or_default().push(id);
        }
        for g in groups.into_values().filter(|g| g.len() > 1) {
            for f in &g {
                self.twins.insert(*f, g.clone());
            }
        }
        let mut imported_twins: HashMap<FnId, Vec<FnId>> = HashMap::new();
        // A fn and a `use` of another fn under the same name, under opposite cfgs (tokio's
        // `blocking::spawn_blocking`: a stub when `rt` is off, `pub(crate) use
        // crate::runtime::spawn_blocking` when it is on): a call resolved to the local fn
        // also reaches the imported one. One way only, so a pattern naming the imported fn
        // does not take the stubs with it.
        for (m, module) in self.modules.iter().enumerate() {
            for rs in module.names.values() {
                let fns: Vec<FnId> = rs
                    .iter()
                    .filter_map(|r| match r {
                        Res::Fn(f) => Some(*f),
                        _ => None,
                    })
                    .collect();
                if fns.len() < 2 {
                    continue;
                }
                let (local, imported): (Vec<FnId>, Vec<FnId>) = fns
                    .iter()
                    .partition(|f| self.fns[**f].module == m && self.fns[**f].owner == Owner::Free);
                for f in local {
                    let t = imported_twins.entry(f).or_default();
                    for i in &imported {
                        if !t.contains(i) {
                            t.push(*i);
                        }
                    }
                }
            }
        }
        self.imported_twins = imported_twins;
    }

    /// Is the trait nameable in module `m` (defined there, imported, `as _`, or by a glob)?
    pub fn trait_in_scope(&self, m: ModId, t: TraitId) -> bool {
        let module = &self.modules[m];
        module
            .names
            .values()
            .chain(module.glob_names.values())
            .flatten()
            .any(|r| *r == Res::Trait(t))
    }

    /// Looks a single name up in a module: items and explicit uses, then globs, then the
    /// crates of the workspace.
    pub fn lookup(&self, m: ModId, name: &str) -> Option<&[Res]> {
        let module = &self.modules[m];
        if let Some(r) = module.names.get(name) {
            return Some(r);
        }
        module.glob_names.get(name).map(|v| v.as_slice())
    }

    /// Resolves a path through modules only; `None` when a prefix is not (yet) known.
    fn resolve_path_strict(&self, m: ModId, segs: &[String], global: bool) -> Option<Res> {
        self.resolve_path_inner(m, segs, global, false)
    }

    /// Resolves a path; an unknown first segment names an outside crate.
    pub fn resolve_path(&self, m: ModId, segs: &[String], global: bool) -> Option<Res> {
        self.resolve_path_inner(m, segs, global, true)
    }

    fn resolve_path_inner(
        &self,
        m: ModId,
        segs: &[String],
        global: bool,
        lenient: bool,
    ) -> Option<Res> {
        let (first, rest) = segs.split_first()?;
        let mut cur = if global {
            self.extern_crate(m, first)
                .unwrap_or(Res::Ext(first.clone()))
        } else {
            match first.as_str() {
                "crate" => Res::Mod(self.crates[self.modules[m].krate].root),
                "self" => Res::Mod(m),
                "super" => Res::Mod(self.modules[m].parent.unwrap_or(m)),
                _ => match self
                    .lookup(m, first)
                    .and_then(|rs| pick(rs, rest.is_empty()))
                {
                    Some(r) => r,
                    None => match self.extern_crate(m, first) {
                        Some(r) => r,
                        None if lenient => match self.modules[m].ext_globs.first() {
                            Some(g) if rest.is_empty() || !is_known_crate_like(first) => {
                                Res::Ext(format!("{g}::{first}"))
                            }
                            _ => Res::Ext(first.clone()),
                        },
                        None => return None,
                    },
                },
            }
        };
        for (i, seg) in rest.iter().enumerate() {
            let last = i + 1 == rest.len();
            cur = match cur {
                Res::Mod(mm) => match seg.as_str() {
                    "super" => Res::Mod(self.modules[mm].parent.unwrap_or(mm)),
                    "self" => Res::Mod(mm),
                    _ => match self.lookup(mm, seg).and_then(|rs| pick(rs, last)) {
                        Some(r) => r,
                        None if lenient => return None,
                        None => return None,
                    },
                },
                Res::Ext(p) => Res::Ext(format!("{p}::{seg}")),
                Res::Type(_) | Res::Trait(_) => {
                    // An associated item (`Type::f`, `Enum::Variant`): the caller resolves
                    // it with the method tables.
                    return if last { Some(Res::Value) } else { None };
                }
                Res::Fn(_) | Res::Value | Res::Const(_) => return None,
            };
        }
        Some(cur)
    }

    /// A crate name as the code of module `m` writes it: a renamed dependency first (its key
    /// shadows a workspace crate of the same name), then a workspace library.
    fn extern_crate(&self, m: ModId, name: &str) -> Option<Res> {
        let krate = &self.crates[self.modules[m].krate];
        let real = krate.externs.get(name).map(String::as_str).unwrap_or(name);
        match self.libs.get(real) {
            Some(root) => Some(Res::Mod(*root)),
            None if real != name => Some(Res::Ext(real.to_string())),
            None => None,
        }
    }

    /// Resolves a trait path (bounds, impls).
    pub fn resolve_trait(&self, m: ModId, p: &PathExpr) -> Option<TraitRef> {
        match self.resolve_path(m, &p.names(), p.global)? {
            Res::Trait(t) => Some(TraitRef::Ws(t)),
            Res::Ext(s) => Some(TraitRef::Ext(s)),
            _ => None,
        }
    }

    /// The environment of generic parameters: each maps to its bounds as a `Traits` type.
    pub fn bounds_env(
        &self,
        m: ModId,
        bounds: &Bounds,
        outer: &HashMap<String, Ty>,
    ) -> HashMap<String, Ty> {
        let mut env = outer.clone();
        for (name, paths) in bounds {
            let traits: Vec<TraitRef> = paths
                .iter()
                .filter_map(|p| self.resolve_trait(m, p))
                .collect();
            let entry = env.entry(name.clone()).or_insert(Ty::Traits(Vec::new()));
            if let Ty::Traits(v) = entry {
                v.extend(traits);
            }
        }
        env
    }

    /// Resolves a written type in a context.
    pub fn resolve_ty(&self, ctx: &TyCtx<'_>, t: &TyExpr) -> Ty {
        self.resolve_ty_depth(ctx, t, 0)
    }

    fn resolve_ty_depth(&self, ctx: &TyCtx<'_>, t: &TyExpr, depth: usize) -> Ty {
        if depth > 16 {
            return Ty::Unknown;
        }
        match t {
            TyExpr::Ref(inner) => self.resolve_ty_depth(ctx, inner, depth + 1),
            TyExpr::Slice(inner) => {
                Ty::Coll(Box::new(self.resolve_ty_depth(ctx, inner, depth + 1)))
            }
            TyExpr::Traits(ps) => Ty::Traits(
                ps.iter()
                    .filter_map(|p| self.resolve_trait(ctx.module, p))
                    .collect(),
            ),
            TyExpr::Tuple(es) => Ty::Tuple(
                es.iter()
                    .map(|e| self.resolve_ty_depth(ctx, e, depth + 1))
                    .collect(),
            ),
            TyExpr::Unknown => Ty::Unknown,
            TyExpr::Proj(base, name) => {
                let b = self.resolve_ty_depth(ctx, base, depth + 1);
                self.project(&b, name, depth + 1)
            }
            TyExpr::Path(p) => {
                let names = p.names();
                let (last, args) = p.segs.last().expect("paths have segments");
                let arg = |i: usize| {
                    args.get(i)
                        .map(|a| self.resolve_ty_depth(ctx, a, depth + 1))
                        .unwrap_or(Ty::Unknown)
                };
                if names.len() == 1 && !p.global {
                    if last == "Self" {
                        return ctx.self_ty.clone();
                    }
                    if let Some(g) = ctx.generics.get(last) {
                        return g.clone();
                    }
                }
                // `Self::Narrator`, `T::Item`: an associated type of `Self` or a parameter.
                if names.len() == 2 && !p.global {
                    let base = if names[0] == "Self" {
                        Some(ctx.self_ty.clone())
                    } else {
                        ctx.generics.get(&names[0]).cloned()
                    };
                    if let Some(b) = base {
                        return self.project(&b, last, depth + 1);
                    }
                }
                // Smart pointers and locks are transparent to method calls (auto-deref, and
                // `lock()`/`borrow()` are treated as returning the same value).
                match last.as_str() {
                    "Box" | "Arc" | "Rc" | "Cow" | "Mutex" | "RwLock" | "RefCell" | "Cell"
                    | "Pin" | "ManuallyDrop" | "MutexGuard" | "RwLockReadGuard"
                    | "RwLockWriteGuard" | "Ref" | "RefMut" | "LazyLock" | "LazyCell" | "Lazy"
                        if args.len() == 1 && self.is_not_workspace(ctx.module, &names) =>
                    {
                        // Of a wrapper around a type the lint cannot name (a projection such
                        // as `<DB as Database>::Options`), the wrapper's own methods are
                        // still known: see `WRAPPER_METHODS`.
                        // The same for a bare generic parameter without bounds (tokio's
                        // `parking_lot::RwLock<T>`): `read` is the lock's.
                        return match arg(0) {
                            inner @ Ty::Unknown => Ty::ExtOf(format!("std::{last}"), vec![inner]),
                            Ty::Traits(b) if b.is_empty() => {
                                Ty::ExtOf(format!("std::{last}"), vec![Ty::Traits(b)])
                            }
                            inner => inner,
                        };
                    }
                    "Option" | "Result" | "Poll"
                        if !args.is_empty() && self.is_not_workspace(ctx.module, &names) =>
                    {
                        return Ty::Wrap(Box::new(arg(0)));
                    }
                    "Vec" | "VecDeque" | "HashSet" | "BTreeSet" | "BinaryHeap" | "LinkedList"
                        if args.len() == 1 && self.is_not_workspace(ctx.module, &names) =>
                    {
                        return Ty::Coll(Box::new(arg(0)));
                    }
                    "HashMap" | "BTreeMap" | "IndexMap" | "DashMap"
                        if args.len() >= 2 && self.is_not_workspace(ctx.module, &names) =>
                    {
                        return Ty::Coll(Box::new(arg(1)));
                    }
                    _ => {}
                }
                match self.resolve_path(ctx.module, &names, p.global) {
                    Some(Res::Type(t)) => {
                        let def = &self.types[t];
                        if let TypeKind::Alias(target) = &def.kind {
                            // `type Result<T> = std::result::Result<T, Error>`: the alias's
                            // parameters take the arguments written at the use.
                            let mut env =
                                self.bounds_env(def.module, &def.generics, &HashMap::new());
                            for ((name, _), a) in def.generics.iter().zip(args) {
                                env.insert(name.clone(), self.resolve_ty_depth(ctx, a, depth + 1));
                            }
                            let actx = TyCtx {
                                module: def.module,
                                self_ty: ctx.self_ty,
                                generics: &env,
                            };
                            return self.resolve_ty_depth(&actx, target, depth + 1);
                        }
                        let args = args
                            .iter()
                            .map(|a| self.resolve_ty_depth(ctx, a, depth + 1))
                            .collect();
                        Ty::Def(t, args)
                    }
                    Some(Res::Trait(t)) => Ty::Traits(vec![TraitRef::Ws(t)]),
                    // An outside type generic over workspace types (`Json<Req>`, `State<App>`,
                    // `Sender<Job>`) keeps its arguments: what it derefs to is theirs.
                    Some(Res::Ext(s)) => {
                        let args: Vec<Ty> = args
                            .iter()
                            .map(|a| self.resolve_ty_depth(ctx, a, depth + 1))
                            .collect();
                        if args.iter().all(|a| matches!(a, Ty::Ext(_))) {
                            Ty::Ext(s)
                        } else {
                            Ty::ExtOf(s, args)
                        }
                    }
                    _ => Ty::Unknown,
                }
            }
        }
    }

    /// The associated type `name` of a type: from the workspace impls of a workspace type
    /// (`impl Deref for Guard { type Target = Conn; }`), or, for a generic parameter or
    /// trait object, the bounds its traits declare (`type Narrator: Narrate;`), so calls on
    /// it fan out to every implementor.
    pub fn project(&self, base: &Ty, name: &str, depth: usize) -> Ty {
        if depth > 16 {
            return Ty::Unknown;
        }
        match base {
            Ty::Def(t, args) => {
                for i in self.impls_of_type.get(t).into_iter().flatten() {
                    let imp = &self.impls[*i];
                    if let Some((_, written)) = imp.assoc.iter().find(|(n, _)| n == name) {
                        let mut env = self.bounds_env(imp.module, &imp.generics, &HashMap::new());
                        if let TyExpr::Path(p) = &imp.self_ty_raw
                            && let Some((_, wargs)) = p.segs.last()
                        {
                            for (w, a) in wargs.iter().zip(args) {
                                if let TyExpr::Path(wp) = w
                                    && let [(n, _)] = wp.segs.as_slice()
                                    && env.contains_key(n)
                                    && *a != Ty::Unknown
                                {
                                    env.insert(n.clone(), a.clone());
                                }
                            }
                        }
                        let ctx = TyCtx {
                            module: imp.module,
                            self_ty: base,
                            generics: &env,
                        };
                        return self.resolve_ty_depth(&ctx, written, depth + 1);
                    }
                }
                Ty::Unknown
            }
            Ty::Traits(trs) => {
                let mut out = Vec::new();
                let mut stack: Vec<TraitId> = trs
                    .iter()
                    .filter_map(|t| match t {
                        TraitRef::Ws(t) => Some(*t),
                        TraitRef::Ext(_) => None,
                    })
                    .collect();
                let mut seen = Vec::new();
                while let Some(t) = stack.pop() {
                    if seen.contains(&t) {
                        continue;
                    }
                    seen.push(t);
                    let tr = &self.traits[t];
                    if let Some((_, bounds)) = tr.assoc.iter().find(|(n, _)| n == name) {
                        out.extend(
                            bounds
                                .iter()
                                .filter_map(|p| self.resolve_trait(tr.module, p)),
                        );
                    }
                    stack.extend(tr.supertraits.iter().filter_map(|s| match s {
                        TraitRef::Ws(s) => Some(*s),
                        TraitRef::Ext(_) => None,
                    }));
                }
                if out.is_empty() {
                    Ty::Unknown
                } else {
                    Ty::Traits(out)
                }
            }
            _ => Ty::Unknown,
        }
    }

    /// The error type of a written `Result<T, E>` return type, through type aliases (`type
    /// Result<T> = std::result::Result<T, ApiError>`): what `?` converts into with `From`.
    pub fn result_err_ty(&self, ctx: &TyCtx<'_>, t: &TyExpr) -> Ty {
        let mut ctx_env: Option<(ModId, HashMap<String, Ty>)> = None;
        let mut t = t.clone();
        for _ in 0..8 {
            let TyExpr::Path(p) = &t else {
                return Ty::Unknown;
            };
            let (last, args) = p.segs.last().expect("paths have segments");
            let here = match &ctx_env {
                Some((m, env)) => TyCtx {
                    module: *m,
                    self_ty: ctx.self_ty,
                    generics: env,
                },
                None => TyCtx {
                    module: ctx.module,
                    self_ty: ctx.self_ty,
                    generics: ctx.generics,
                },
            };
            if last == "Result" && args.len() == 2 {
                return self.resolve_ty(&here, &args[1]);
            }
            match self.resolve_path(here.module, &p.names(), p.global) {
                Some(Res::Type(a)) => {
                    let def = &self.types[a];
                    let TypeKind::Alias(target) = &def.kind else {
                        return Ty::Unknown;
                    };
                    let mut env = self.bounds_env(def.module, &def.generics, &HashMap::new());
                    for ((name, _), a) in def.generics.iter().zip(args) {
                        env.insert(name.clone(), self.resolve_ty(&here, a));
                    }
                    ctx_env = Some((def.module, env));
                    t = target.clone();
                }
                _ => return Ty::Unknown,
            }
        }
        Ty::Unknown
    }

    /// The impls of a workspace type for an outside trait whose last path segment is
    /// `trait_name` (`Drop`, `Display`, `Deref`, `Add`, ...), with the method `method`.
    pub fn ext_trait_methods(&self, t: TypeId, trait_name: &str, method: &str) -> Vec<FnId> {
        self.impls_of_type
            .get(&t)
            .into_iter()
            .flatten()
            .filter(|i| match &self.impls[**i].trait_ {
                Some(TraitRef::Ext(p)) => p.rsplit("::").next() == Some(trait_name),
                _ => false,
            })
            .filter_map(|i| self.impls[*i].methods.get(method).copied())
            .collect()
    }

    /// The impl of a workspace type for an outside trait named `trait_name`, if any.
    pub fn ext_trait_impl(&self, t: TypeId, trait_name: &str) -> Option<ImplId> {
        self.impls_of_type.get(&t)?.iter().copied().find(|i| {
            matches!(&self.impls[*i].trait_, Some(TraitRef::Ext(p)) if p.rsplit("::").next() == Some(trait_name))
        })
    }

    /// An associated type written in an impl, resolved in the impl's context.
    pub fn impl_assoc(&self, i: ImplId, name: &str) -> Ty {
        let imp = &self.impls[i];
        let Some((_, written)) = imp.assoc.iter().find(|(n, _)| n == name) else {
            return Ty::Unknown;
        };
        let env = self.bounds_env(imp.module, &imp.generics, &HashMap::new());
        let ctx = TyCtx {
            module: imp.module,
            self_ty: &imp.self_ty,
            generics: &env,
        };
        self.resolve_ty(&ctx, written)
    }

    /// True when a path does not name a workspace item (so `Arc` means `std::sync::Arc`).
    fn is_not_workspace(&self, m: ModId, names: &[String]) -> bool {
        !matches!(
            self.resolve_path(m, names, false),
            Some(Res::Type(_)) | Some(Res::Trait(_))
        )
    }

    /// The methods named `name` callable on a workspace type: inherent first, then trait
    /// impls, then default bodies of implemented traits.
    pub fn methods_of_type(&self, t: TypeId, name: &str) -> Vec<FnId> {
        let Some(impls) = self.impls_of_type.get(&t) else {
            return Vec::new();
        };
        let inherent: Vec<FnId> = impls
            .iter()
            .filter(|i| self.impls[**i].trait_.is_none())
            .filter_map(|i| self.impls[*i].methods.get(name).copied())
            .collect();
        if !inherent.is_empty() {
            return inherent;
        }
        let mut out: Vec<FnId> = impls
            .iter()
            .filter(|i| self.impls[**i].trait_.is_some())
            .filter_map(|i| self.impls[*i].methods.get(name).copied())
            .collect();
        if out.is_empty() {
            for i in impls {
                if let Some(TraitRef::Ws(tr)) = &self.impls[*i].trait_
                    && let Some((_, f)) = self.trait_method(*tr, name)
                {
                    out.push(f);
                }
            }
        }
        out
    }

    /// [`Index::methods_of_type`] restricted to the impls whose self type's arguments fit
    /// the receiver's (`impl Npc<Scripted>` is not called on an `Npc<Generative>`); all of
    /// them when none fits or the arguments are unknown.
    pub fn methods_of_type_args(&self, t: TypeId, args: &[Ty], name: &str) -> Vec<FnId> {
        let all = self.methods_of_type(t, name);
        if all.len() < 2 || args.is_empty() {
            return all;
        }
        let fit: Vec<FnId> = all
            .iter()
            .copied()
            .filter(|f| match self.fns[*f].owner {
                Owner::Impl(i) => match &self.impls[i].self_ty {
                    Ty::Def(_, pargs) => pargs
                        .iter()
                        .zip(args)
                        .all(|(p, a)| matches!(p, Ty::Unknown) || self.fits(p, a, 0)),
                    _ => true,
                },
                _ => true,
            })
            .collect();
        if fit.is_empty() { all } else { fit }
    }

    /// Finds a method in a trait or its supertraits: `(declaring trait, trait method fn)`.
    pub fn trait_method(&self, t: TraitId, name: &str) -> Option<(TraitId, FnId)> {
        let mut stack = vec![t];
        let mut seen = Vec::new();
        while let Some(t) = stack.pop() {
            if seen.contains(&t) {
                continue;
            }
            seen.push(t);
            if let Some(f) = self.traits[t].methods.get(name) {
                return Some((t, *f));
            }
            for s in &self.traits[t].supertraits {
                if let TraitRef::Ws(s) = s {
                    stack.push(*s);
                }
            }
        }
        None
    }

    /// Every fn a call of trait method `name` may run: the trait's own method (its default
    /// body, and the node a trait sink matches) and each workspace impl's override.
    pub fn trait_fanout(&self, t: TraitId, name: &str) -> Vec<FnId> {
        let Some((decl, f)) = self.trait_method(t, name) else {
            return Vec::new();
        };
        let mut out = vec![f];
        for i in &self.traits[decl].impls {
            if let Some(m) = self.impls[*i].methods.get(name) {
                out.push(*m);
            }
        }
        out
    }

    /// The type context of a fn: its module, `Self`, and its (and its impl's) generics.
    pub fn fn_ctx(&self, f: FnId) -> (ModId, Ty, HashMap<String, Ty>) {
        let def = &self.fns[f];
        let m = def.module;
        let (self_ty, outer) = match def.owner {
            Owner::Free => (Ty::Unknown, HashMap::new()),
            Owner::Impl(i) => {
                let imp = &self.impls[i];
                (
                    imp.self_ty.clone(),
                    self.bounds_env(m, &imp.generics, &HashMap::new()),
                )
            }
            Owner::Trait(t) => {
                let tr = &self.traits[t];
                (
                    Ty::Traits(vec![TraitRef::Ws(t)]),
                    self.bounds_env(m, &tr.generics, &HashMap::new()),
                )
            }
        };
        let env = self.bounds_env(m, &def.sig.generics, &outer);
        (m, self_ty, env)
    }

    /// The parameter types a closure passed as parameter `param` (not counting `self`) of the
    /// workspace fn `f` receives, from the callee's `Fn`-family bound: `F: FnOnce(&Park) -> R`
    /// (inline or `where`, on the fn, its impl or its trait), `impl Fn(T)`, `&dyn Fn(T)`,
    /// `Box<dyn FnMut(T)>`. The bound is resolved in the callee's context, with `Self` and
    /// the impl's parameters taken from the receiver when its type is known.
    pub fn closure_inputs(&self, f: FnId, param: usize, recv: Option<&Ty>) -> Option<Vec<Ty>> {
        let def = &self.fns[f];
        let written = &def.sig.params.get(param)?.1;
        let outer_bounds: &[(String, Vec<PathExpr>)] = match def.owner {
            Owner::Free => &[],
            Owner::Impl(i) => &self.impls[i].generics,
            Owner::Trait(t) => &self.traits[t].generics,
        };
        let fn_trait = |ps: &[PathExpr]| -> Option<Vec<TyExpr>> {
            ps.iter().find_map(|p| match p.segs.last() {
                Some((n, args)) if is_fn_trait(n) => match args.first() {
                    Some(TyExpr::Tuple(inputs)) => Some(inputs.clone()),
                    _ => None,
                },
                _ => None,
            })
        };
        let mut t = written;
        let inputs = loop {
            match t {
                TyExpr::Ref(inner) => t = inner,
                TyExpr::Traits(ps) => break fn_trait(ps)?,
                TyExpr::Path(p) if p.segs.len() == 1 => {
                    let (name, args) = &p.segs[0];
                    if name == "Box" && args.len() == 1 {
                        t = &args[0];
                        continue;
                    }
                    let bounds = def
                        .sig
                        .generics
                        .iter()
                        .chain(outer_bounds)
                        .filter(|(n, _)| n == name)
                        .flat_map(|(_, b)| b.iter().cloned())
                        .collect::<Vec<_>>();
                    break fn_trait(&bounds)?;
                }
                _ => return None,
            }
        };
        let (m, self_ty, env, _) = self.ctx_for_recv(f, recv);
        let ctx = TyCtx {
            module: m,
            self_ty: &self_ty,
            generics: &env,
        };
        Some(inputs.iter().map(|i| self.resolve_ty(&ctx, i)).collect())
    }

    /// The type context of `f` called on `recv`: `Self` is the receiver when its type is
    /// known, and the impl's parameters take the receiver's type arguments (`impl<T>
    /// UnsafeCell<T>` on an `UnsafeCell<Waker>`: `T` is `Waker`). The last value says whether
    /// any parameter was substituted.
    pub fn ctx_for_recv(
        &self,
        f: FnId,
        recv: Option<&Ty>,
    ) -> (ModId, Ty, HashMap<String, Ty>, bool) {
        let (m, self_ty, mut env) = self.fn_ctx(f);
        let self_ty = match recv {
            Some(r @ (Ty::Def(..) | Ty::Ext(_) | Ty::ExtOf(..))) => r.clone(),
            _ => self_ty,
        };
        let mut substituted = false;
        if let Owner::Impl(i) = self.fns[f].owner
            && let (TyExpr::Path(p), Some(Ty::Def(_, args))) = (&self.impls[i].self_ty_raw, recv)
            && let Some((_, written_args)) = p.segs.last()
        {
            for (w, a) in written_args.iter().zip(args) {
                if let TyExpr::Path(wp) = w
                    && let [(name, wargs)] = wp.segs.as_slice()
                    && wargs.is_empty()
                    && *a != Ty::Unknown
                    && env.contains_key(name)
                {
                    env.insert(name.clone(), a.clone());
                    substituted = true;
                }
            }
        }
        (m, self_ty, env, substituted)
    }

    /// Does parameter `i` (not counting `self`) of `f` keep a fn value given to it: written
    /// so (`keeps_fn_value`), or typed by an alias of a boxed or shared closure or a fn
    /// pointer (`type Handler = Box<dyn Fn(&Ctx) -> String>`)?
    pub fn param_keeps_value(&self, f: FnId, i: usize) -> bool {
        let sig = &self.fns[f].sig;
        if sig.stored_params.get(i) == Some(&true) {
            return true;
        }
        let Some((_, TyExpr::Path(p))) = sig.params.get(i) else {
            return false;
        };
        match self.resolve_path(self.fns[f].module, &p.names(), p.global) {
            Some(Res::Type(t)) => match &self.types[t].kind {
                TypeKind::Alias(TyExpr::Path(target)) => target
                    .segs
                    .last()
                    .is_some_and(|(n, _)| matches!(n.as_str(), "Box" | "Arc" | "Rc")),
                // A fn pointer is lowered as an unknown type.
                TypeKind::Alias(TyExpr::Unknown) => true,
                _ => false,
            },
            _ => false,
        }
    }

    /// A struct field's type as written.
    pub fn field_written(&self, t: TypeId, field: &str) -> Option<&TyExpr> {
        match &self.types[t].kind {
            TypeKind::Struct(fields) => fields.iter().find(|(n, _)| n == field).map(|(_, t)| t),
            _ => None,
        }
    }

    /// Does the struct declare this field?
    pub fn has_field(&self, t: TypeId, field: &str) -> bool {
        self.field_written(t, field).is_some()
    }

    /// The type of a field of a workspace struct, with its generic arguments substituted.
    pub fn field_ty(&self, t: TypeId, args: &[Ty], field: &str) -> Ty {
        self.member_ty(t, args, None, field)
    }

    /// The type of a field of a struct, or of an enum variant's field (`variant`).
    pub fn member_ty(&self, t: TypeId, args: &[Ty], variant: Option<&str>, field: &str) -> Ty {
        let def = &self.types[t];
        let fields = match (&def.kind, variant) {
            (TypeKind::Struct(fields), None) => fields,
            (TypeKind::Enum(vs), Some(v)) => match vs.iter().find(|(n, _)| n == v) {
                Some((_, fields)) => fields,
                None => return Ty::Unknown,
            },
            _ => return Ty::Unknown,
        };
        let Some((_, fty)) = fields.iter().find(|(n, _)| n == field) else {
            return Ty::Unknown;
        };
        let mut env = self.bounds_env(def.module, &def.generics, &HashMap::new());
        for (i, (name, _)) in def.generics.iter().enumerate() {
            if let Some(a) = args.get(i)
                && *a != Ty::Unknown
            {
                env.insert(name.clone(), a.clone());
            }
        }
        // Bounds written on impls rather than on the struct: a field of a bare generic type
        // takes the bounds any impl of the type puts on that parameter name.
        for (name, ty) in env.iter_mut() {
            if matches!(ty, Ty::Traits(v) if v.is_empty())
                && let Some(impls) = self.impls_of_type.get(&t)
            {
                for i in impls {
                    let imp = &self.impls[*i];
                    if let Some((_, b)) = imp.generics.iter().find(|(n, _)| n == name)
                        && let Ty::Traits(v) = ty
                    {
                        v.extend(b.iter().filter_map(|p| self.resolve_trait(imp.module, p)));
                    }
                }
            }
        }
        let self_ty = Ty::Def(t, args.to_vec());
        let ctx = TyCtx {
            module: def.module,
            self_ty: &self_ty,
            generics: &env,
        };
        self.resolve_ty(&ctx, fty)
    }

    /// Display path of a resolved path target, for messages.
    pub fn res_path(&self, r: &Res) -> Option<String> {
        Some(match r {
            Res::Mod(m) => self.modules[*m].path.clone(),
            Res::Fn(f) => self.fns[*f].path.clone(),
            Res::Type(t) => self.types[*t].path.clone(),
            Res::Trait(t) => self.traits[*t].path.clone(),
            Res::Ext(s) => s.clone(),
            Res::Value | Res::Const(_) => return None,
        })
    }
}

/// Where a written type is resolved.
pub struct TyCtx<'a> {
    pub module: ModId,
    pub self_ty: &'a Ty,
    pub generics: &'a HashMap<String, Ty>,
}

/// Chooses among same-named items: modules, types and traits for inner segments, otherwise
/// the first (fns before types, as call sites prefer).
fn pick(rs: &[Res], last: bool) -> Option<Res> {
    if last {
        rs.iter()
            .find(|r| matches!(r, Res::Fn(_)))
            .or_else(|| rs.first())
            .cloned()
    } else {
        rs.iter()
            .find(|r| matches!(r, Res::Mod(_) | Res::Type(_) | Res::Trait(_) | Res::Ext(_)))
            .cloned()
    }
}

/// The closure traits, whose parenthesized arguments are lowered as `(inputs, output)`.
pub fn is_fn_trait(name: &str) -> bool {
    matches!(
        name,
        "Fn" | "FnMut" | "FnOnce" | "AsyncFn" | "AsyncFnMut" | "AsyncFnOnce"
    )
}

/// Lower-case names are crates or modules; an unknown one is an outside crate rather than
/// something a glob brought in.
fn is_known_crate_like(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_lowercase())
}

/// Every workspace type a resolved type mentions (its own, its arguments', its elements').
pub fn mentioned_types(t: &Ty, out: &mut Vec<TypeId>) {
    match t {
        Ty::Def(id, args) => {
            if !out.contains(id) {
                out.push(*id);
            }
            args.iter().for_each(|a| mentioned_types(a, out));
        }
        Ty::ExtOf(_, args) | Ty::Tuple(args) => args.iter().for_each(|a| mentioned_types(a, out)),
        Ty::Wrap(inner) | Ty::Coll(inner) => mentioned_types(inner, out),
        Ty::Unknown | Ty::Ext(_) | Ty::Traits(_) => {}
    }
}

/// The name a method path uses for an impl's self type (`impl Foo<T>` → `Foo`).
fn ty_display_name(t: &TyExpr) -> String {
    match t {
        TyExpr::Path(p) => p.segs.last().map(|(n, _)| n.clone()).unwrap_or_default(),
        TyExpr::Ref(inner) => ty_display_name(inner),
        TyExpr::Slice(inner) => format!("[{}]", ty_display_name(inner)),
        TyExpr::Tuple(es) => format!(
            "({})",
            es.iter()
                .map(ty_display_name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        TyExpr::Traits(ps) => ps
            .first()
            .and_then(|p| p.segs.last())
            .map(|(n, _)| format!("dyn {n}"))
            .unwrap_or_else(|| "_".into()),
        TyExpr::Proj(_, n) => n.clone(),
        TyExpr::Unknown => "_".into(),
    }
}
