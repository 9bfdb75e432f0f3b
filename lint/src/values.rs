//! Functions kept as values. A closure or fn item may be stored (boxed into a registry,
//! put in a field or a `static` table, returned) and called later from somewhere else, where
//! the call is written on a value (`handler(ctx)`, `(self.on_event)(e)`), not on a path.
//!
//! The lint cannot follow each value, so it over-approximates by signature: a call through
//! a value reaches every *stored* closure and every fn item used as a value whose parameters
//! fit its arguments (as many, and the same workspace type where both are known), in the
//! whole workspace (`Target::Pool`, `via: value`). A closure
//! handed to a std adapter (`.map(|x| ..)`) is called at once by it and is not stored; its
//! calls stay the enclosing fn's, as do the calls of every closure.
//!
//! Workspace values handed to outside code (`schedule.add_system(NpcTick)`,
//! `router.service(Handler)`) may be called back through the outside traits they implement:
//! those impls' methods count as called from where the value is handed over.

use crate::calls::{Target, ValueSig, Via, Walker};
use crate::index::{FnId, Res, TraitRef, Ty};

/// Outside methods that keep the value they are given (a closure passed to one is stored).
const STORING: &[&str] = &[
    "insert",
    "push",
    "push_back",
    "push_front",
    "or_insert",
    "set",
    "replace",
    "get_or_insert",
    "extend",
    "append",
    "send",
    "store",
    "swap",
    "new",
    "from",
];

/// Outside traits whose methods the receiving code does not call on a value it is given
/// (rustc calls them: conversions and `Drop` are modelled where they happen).
const NOT_CALLED_BACK: &[&str] = &["Drop", "From", "Into", "TryFrom", "TryInto"];

/// The traits std code calls on values it is given (a map hashing and comparing its keys).
const STD_CALLS_BACK: &[&str] = &["Hash", "PartialEq", "Eq", "PartialOrd", "Ord"];

/// Std methods that hash or compare the value they are given (maps, sets, sorting).
const STD_KEYED: &[&str] = &[
    "insert",
    "entry",
    "get",
    "get_mut",
    "contains",
    "contains_key",
    "remove",
    "push",
    "binary_search",
    "sort",
    "sort_unstable",
];

/// A std trait: a path into std, or a trait of the prelude (or commonly imported from std)
/// named alone.
fn is_std_trait(p: &str) -> bool {
    is_std_path(p)
        || matches!(
            p,
            "Future"
                | "IntoFuture"
                | "Iterator"
                | "IntoIterator"
                | "DoubleEndedIterator"
                | "ExactSizeIterator"
                | "Extend"
                | "FromIterator"
                | "Fn"
                | "FnMut"
                | "FnOnce"
                | "Clone"
                | "Copy"
                | "Send"
                | "Sync"
                | "Sized"
                | "Unpin"
                | "Drop"
                | "Default"
                | "Debug"
                | "Display"
                | "Eq"
                | "PartialEq"
                | "Ord"
                | "PartialOrd"
                | "Hash"
                | "AsRef"
                | "AsMut"
                | "Borrow"
                | "From"
                | "Into"
                | "TryFrom"
                | "TryInto"
                | "ToString"
                | "Error"
                | "Any"
                | "Read"
                | "Write"
                | "Deref"
                | "DerefMut"
        )
}

/// A path into std, or a std prelude type or variant named without its module.
fn is_std_path(p: &str) -> bool {
    let first = p.split("::").next().unwrap_or("");
    matches!(first, "std" | "core" | "alloc")
        || matches!(
            first,
            "Arc"
                | "Rc"
                | "Box"
                | "Vec"
                | "String"
                | "HashMap"
                | "HashSet"
                | "BTreeMap"
                | "BTreeSet"
                | "VecDeque"
                | "Mutex"
                | "RwLock"
                | "Cell"
                | "RefCell"
                | "Option"
                | "Result"
                | "Some"
                | "Ok"
                | "Err"
                | "str"
                | "usize"
                | "u64"
                | "i64"
                | "u32"
                | "i32"
                | "f64"
                | "bool"
                | "char"
        )
}

pub(crate) fn stores_value(name: &str) -> bool {
    STORING.contains(&name)
}

/// `f.call(..)`-style methods of the closure traits, and methods that only exist on values
/// of std types the lint does not track (no workspace code runs through them).
pub(crate) fn is_fn_call_method(name: &str) -> bool {
    matches!(name, "call" | "call_mut" | "call_once")
}

impl Walker<'_> {
    /// A call written on a path that resolves to no fn: a local holding a fn value (a
    /// closure from elsewhere, a fn pointer, a `Box<dyn Fn>`) reaches the pool of its
    /// arity; a closure written in this fn, or a parameter typed by a generic `Fn` bound
    /// (its callers' closures are their calls), does not. Anything else is unresolved.
    pub(crate) fn call_through_value(
        &mut self,
        p: &syn::ExprPath,
        args: &syn::punctuated::Punctuated<syn::Expr, syn::Token![,]>,
        line: usize,
    ) {
        let segs: Vec<String> = p
            .path
            .segments
            .iter()
            .map(|s| s.ident.to_string())
            .collect();
        if segs.len() == 1 && self.var(&segs[0]).is_some() {
            let direct = self
                .scopes
                .iter()
                .any(|s| s.direct_callables.contains(&segs[0]));
            if !direct {
                let sig = self.value_sig(args.iter());
                self.add(vec![(Target::Pool(sig), Via::Value)], line);
            }
            return;
        }
        // Tuple structs, enum variants and `Some`/`Ok` build values: no call.
        let last = segs.last().map(String::as_str).unwrap_or("");
        if last.chars().next().is_some_and(char::is_uppercase) {
            return;
        }
        match self.resolve_path(&segs, p.path.leading_colon.is_some()) {
            Some(Res::Const(_)) => {
                // A fn pointer kept in a static or const (`static HOOK: fn(&Ctx) = ..`).
                let sig = self.value_sig(args.iter());
                self.add(vec![(Target::Pool(sig), Via::Value)], line);
            }
            // An associated fn of a type (an alias of a std type: `Entries::len`), a
            // variant, an outside path: no fn value.
            Some(Res::Ext(_)) | Some(Res::Type(_)) | Some(Res::Fn(_)) | Some(Res::Value) => {}
            _ => self.unresolved(
                line,
                format!(
                    "call to `{}`, which the lint cannot resolve",
                    segs.join("::")
                ),
            ),
        }
    }

    /// The workspace types of a call's arguments (what a stored value must accept).
    pub(crate) fn value_sig<'e>(&mut self, args: impl Iterator<Item = &'e syn::Expr>) -> ValueSig {
        let args: Vec<&syn::Expr> = args.collect();
        args.into_iter()
            .map(|a| crate::calls::def_id(self.infer(a)))
            .collect()
    }

    /// The initializer of the static a path names, if it is one.
    pub(crate) fn static_init(&self, path: &syn::Path) -> Option<FnId> {
        let segs: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        let last = segs.last()?;
        if segs.len() == 1 && self.var(last).is_some() {
            return None;
        }
        match self.resolve_path(&segs, path.leading_colon.is_some())? {
            Res::Const(m) => self.ix.static_inits.get(&(m, last.clone())).copied(),
            _ => None,
        }
    }

    /// Workspace values given to outside code: the methods of their impls of outside traits
    /// may be called back by it (an ECS schedule running a system, a router calling a
    /// service).
    pub(crate) fn hand_off<'e>(
        &mut self,
        callee: &str,
        args: impl Iterator<Item = &'e syn::Expr>,
        line: usize,
    ) {
        // Std constructors, pointers and collections keep a value without calling its
        // methods, except the comparisons and hashing that place it in a map or set.
        let std = is_std_path(callee);
        let method = callee.rsplit("::").next().unwrap_or("");
        if std && !STD_KEYED.contains(&method) {
            return;
        }
        let mut fns: Vec<FnId> = Vec::new();
        for a in args {
            // The value itself, or workspace values inside it (a tuple of components, a
            // boxed system).
            // `Box::new(NpcBrain) as Box<dyn System>`: the value's own type, not the cast's.
            let mut a = a;
            while let syn::Expr::Cast(c) = a {
                a = &c.expr;
            }
            let ty = self.infer(a);
            // A generic or `dyn` value of an outside trait (`s: S` with `S: ecs::System`):
            // any workspace impl of that trait may be the one handed over.
            if let Ty::Traits(trs) = &ty {
                for tr in trs {
                    if let TraitRef::Ext(p) = tr {
                        let last = p.rsplit("::").next().unwrap_or(p);
                        // A std trait (`F: Future` given to a runtime) says nothing about
                        // which of the workspace's many implementors it is: only a
                        // library's own callback trait (`S: ecs::System`) is fanned out.
                        if is_std_trait(p) {
                            continue;
                        }
                        for i in self.ix.ext_trait_impls.get(last).into_iter().flatten() {
                            fns.extend(self.ix.impls[*i].methods.values().copied());
                        }
                    }
                }
            }
            let mut types = Vec::new();
            crate::index::mentioned_types(&ty, &mut types);
            for t in types {
                for i in self.ix.impls_of_type.get(&t).into_iter().flatten() {
                    let imp = &self.ix.impls[*i];
                    let Some(TraitRef::Ext(p)) = &imp.trait_ else {
                        continue;
                    };
                    let last = p.rsplit("::").next().unwrap_or("");
                    if NOT_CALLED_BACK.contains(&last) || (std && !STD_CALLS_BACK.contains(&last)) {
                        continue;
                    }
                    fns.extend(imp.methods.values().copied());
                }
            }
        }
        fns.sort_unstable();
        fns.dedup();
        self.add(
            fns.into_iter()
                .map(|f| (Target::Fn(f), Via::Implicit))
                .collect(),
            line,
        );
    }
}

/// The extra graph nodes for fn values: one pool per signature called through a value, and
/// one node per closure (numbered after the fns and outside paths).
pub struct ValueNodes<'a> {
    ws: &'a crate::load::Workspace,
    pools: std::collections::HashMap<ValueSig, usize>,
    pool_sigs: Vec<ValueSig>,
    /// Per fn, the node of its first closure.
    closure_base: Vec<usize>,
    closure_owner: Vec<(FnId, u32)>,
    base: usize,
    end: usize,
}

/// An edge between value nodes (pool → member, closure → closure written in it).
pub struct ValueEdge {
    pub from: usize,
    pub to: usize,
    pub file: usize,
    pub line: usize,
    pub via: Via,
}

/// Can a value whose parameters are `member` be called with arguments `call`? As many, and
/// each known workspace type the same.
fn fits(call: &ValueSig, member: &ValueSig) -> bool {
    call.len() == member.len()
        && call
            .iter()
            .zip(member)
            .all(|(a, b)| a.is_none() || b.is_none() || a == b)
}

impl<'a> ValueNodes<'a> {
    pub fn new(ws: &'a crate::load::Workspace, base: usize) -> ValueNodes<'a> {
        let mut sigs: Vec<ValueSig> = ws
            .edges
            .iter()
            .flat_map(|w| w.edges.iter())
            .filter_map(|e| match &e.to {
                Target::Pool(k) => Some(k.clone()),
                _ => None,
            })
            .collect();
        sigs.sort_unstable();
        sigs.dedup();
        let pools = sigs
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), base + i))
            .collect();
        let mut next = base + sigs.len();
        let mut closure_base = Vec::with_capacity(ws.edges.len());
        let mut closure_owner = Vec::new();
        for (f, w) in ws.edges.iter().enumerate() {
            closure_base.push(next);
            for c in 0..w.closures.len() {
                closure_owner.push((f, c as u32));
            }
            next += w.closures.len();
        }
        ValueNodes {
            ws,
            pools,
            pool_sigs: sigs,
            closure_base,
            closure_owner,
            base,
            end: next,
        }
    }

    pub fn pool(&self, sig: &ValueSig) -> Option<usize> {
        self.pools.get(sig).copied()
    }

    pub fn closure(&self, f: FnId, c: u32) -> usize {
        self.closure_base[f] + c as usize
    }

    /// One past the last node.
    pub fn end(&self) -> usize {
        self.end
    }

    pub fn name(&self, ix: &crate::index::Index, node: usize) -> String {
        let first_closure = self.base + self.pool_sigs.len();
        if node < first_closure {
            let sig = &self.pool_sigs[node - self.base];
            let args: Vec<String> = sig
                .iter()
                .map(|t| match t {
                    Some(t) => ix.types[*t]
                        .path
                        .rsplit("::")
                        .next()
                        .unwrap_or("_")
                        .to_string(),
                    None => "_".to_string(),
                })
                .collect();
            return format!("<a stored fn value called with ({})>", args.join(", "));
        }
        let (f, c) = self.closure_owner[node - first_closure];
        let line = self.ws.edges[f].closures[c as usize].line;
        format!("{}::{{closure@{line}}}", ix.fns[f].path)
    }

    /// Pools to their members (stored closures and fn items used as values whose parameters
    /// fit the pool's arguments), and closures to the closures written in them.
    pub fn edges(&self, ix: &crate::index::Index) -> Vec<ValueEdge> {
        let mut out = Vec::new();
        let pools_fitting = |member: &ValueSig| -> Vec<usize> {
            self.pool_sigs
                .iter()
                .enumerate()
                .filter(|(_, p)| fits(p, member))
                .map(|(i, _)| self.base + i)
                .collect()
        };
        for (f, w) in self.ws.edges.iter().enumerate() {
            let file = ix.fns[f].file;
            for (c, info) in w.closures.iter().enumerate() {
                let node = self.closure(f, c as u32);
                if let Some(p) = info.parent {
                    out.push(ValueEdge {
                        from: self.closure(f, p),
                        to: node,
                        file,
                        line: info.line,
                        via: Via::Resolved,
                    });
                }
                if info.stored {
                    for pool in pools_fitting(&info.params) {
                        out.push(ValueEdge {
                            from: pool,
                            to: node,
                            file,
                            line: info.line,
                            via: Via::Value,
                        });
                    }
                }
            }
            for g in &w.fn_values {
                for pool in pools_fitting(&fn_sig(ix, *g)) {
                    out.push(ValueEdge {
                        from: pool,
                        to: *g,
                        file,
                        line: ix.fns[*g].sig.line,
                        via: Via::Value,
                    });
                }
            }
        }
        out
    }
}

/// The parameters of a fn used as a value (`self` first), by workspace type.
fn fn_sig(ix: &crate::index::Index, f: FnId) -> ValueSig {
    let (m, self_ty, generics) = ix.fn_ctx(f);
    let ctx = crate::index::TyCtx {
        module: m,
        self_ty: &self_ty,
        generics: &generics,
    };
    let def = &ix.fns[f];
    let mut out: ValueSig = Vec::new();
    if def.sig.has_self {
        out.push(crate::calls::def_id(self_ty.clone()));
    }
    for (_, t) in &def.sig.params {
        out.push(crate::calls::def_id(ix.resolve_ty(&ctx, t)));
    }
    out
}
