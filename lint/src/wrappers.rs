//! Std wrappers' own methods. Method calls see through `Arc`, `Rc`, `Box`, locks and cells
//! to the wrapped type, but rustc looks at the wrapper first: `arc.clone()` is `Arc::clone`
//! (a reference count), not the wrapped type's `Clone`; `lock()` is the `Mutex`'s,
//! `get_or_init(..)` the `OnceLock`'s. The wrapper of a value is read from its declared type
//! (a field, a local's annotation or constructor, a static, a parameter).

use crate::calls::Walker;
use crate::index::Ty;
use crate::syntax::TyExpr;

/// Std wrappers and the methods that are their own.
const OWN_METHODS: &[(&str, &[&str])] = &[
    ("Arc", &["clone"]),
    ("Rc", &["clone"]),
    (
        "Mutex",
        &[
            "lock",
            "try_lock",
            "get_mut",
            "into_inner",
            "is_poisoned",
            "clear_poison",
        ],
    ),
    (
        "RwLock",
        &[
            "read",
            "write",
            "try_read",
            "try_write",
            "get_mut",
            "into_inner",
            "is_poisoned",
        ],
    ),
    (
        "RefCell",
        &[
            "borrow",
            "borrow_mut",
            "try_borrow",
            "try_borrow_mut",
            "get_mut",
            "into_inner",
            "replace",
            "take",
            "swap",
        ],
    ),
    (
        "Cell",
        &[
            "get",
            "set",
            "replace",
            "take",
            "swap",
            "into_inner",
            "get_mut",
        ],
    ),
    (
        "OnceLock",
        &[
            "get",
            "get_mut",
            "set",
            "get_or_init",
            "get_or_try_init",
            "take",
            "into_inner",
            "wait",
        ],
    ),
    (
        "OnceCell",
        &[
            "get",
            "get_mut",
            "set",
            "get_or_init",
            "get_or_try_init",
            "take",
            "into_inner",
        ],
    ),
];

/// The name a simple pattern binds (`a`, `&a`, `mut a`).
fn simple_binding(p: &syn::Pat) -> Option<String> {
    match p {
        syn::Pat::Ident(pi) => Some(pi.ident.to_string()),
        syn::Pat::Reference(r) => simple_binding(&r.pat),
        syn::Pat::Type(t) => simple_binding(&t.pat),
        _ => None,
    }
}

/// The std wrapper a written type is, outermost (`&Arc<Client>` is an `Arc`).
pub fn head_wrapper(t: &TyExpr) -> Option<&'static str> {
    match t {
        TyExpr::Ref(inner) => head_wrapper(inner),
        TyExpr::Path(p) => {
            let (name, args) = p.segs.last()?;
            if args.is_empty() {
                return None;
            }
            OWN_METHODS.iter().find(|(w, _)| w == name).map(|(w, _)| *w)
        }
        _ => None,
    }
}

/// The std wrapper of a collection's elements, as written (`Vec<Arc<Npc>>`, `&[Rc<T>]`,
/// `HashMap<Id, Arc<Npc>>`: the value).
pub fn elem_head_wrapper(t: &TyExpr) -> Option<&'static str> {
    match t {
        TyExpr::Ref(inner) => elem_head_wrapper(inner),
        TyExpr::Slice(inner) => head_wrapper(inner),
        TyExpr::Path(p) => {
            let (name, args) = p.segs.last()?;
            match name.as_str() {
                "Vec" | "VecDeque" | "HashSet" | "BTreeSet" | "Option" | "LinkedList" => {
                    args.first().and_then(head_wrapper)
                }
                "HashMap" | "BTreeMap" | "IndexMap" => args.get(1).and_then(head_wrapper),
                _ => None,
            }
        }
        _ => None,
    }
}

fn owns(wrapper: &str, method: &str) -> bool {
    OWN_METHODS
        .iter()
        .any(|(w, ms)| *w == wrapper && ms.contains(&method))
}

impl Walker<'_> {
    /// The std wrapper an expression's value is, when its declared type says so.
    pub(crate) fn std_wrapper(&mut self, e: &syn::Expr) -> Option<&'static str> {
        match e {
            syn::Expr::Path(p) if p.qself.is_none() && p.path.segments.len() == 1 => {
                let name = p.path.segments[0].ident.to_string();
                if self.var(&name).is_some() {
                    return self
                        .scopes
                        .iter()
                        .rev()
                        .find_map(|s| s.wrappers.get(&name).copied());
                }
                self.static_wrapper(&p.path)
            }
            syn::Expr::Path(p) if p.qself.is_none() => self.static_wrapper(&p.path),
            syn::Expr::Reference(r) => self.std_wrapper(&r.expr),
            syn::Expr::Paren(p) => self.std_wrapper(&p.expr),
            syn::Expr::Field(f) => {
                let Ty::Def(t, _) = self.infer(&f.base) else {
                    return None;
                };
                let member = match &f.member {
                    syn::Member::Named(i) => i.to_string(),
                    syn::Member::Unnamed(i) => i.index.to_string(),
                };
                self.ix.field_written(t, &member).and_then(head_wrapper)
            }
            syn::Expr::MethodCall(mc) if mc.method == "clone" => {
                match self.std_wrapper(&mc.receiver) {
                    Some(w @ ("Arc" | "Rc")) => Some(w),
                    _ => None,
                }
            }
            syn::Expr::Call(c) => {
                let syn::Expr::Path(p) = &*c.func else {
                    return None;
                };
                let segs: Vec<String> = p
                    .path
                    .segments
                    .iter()
                    .map(|s| s.ident.to_string())
                    .collect();
                match segs.as_slice() {
                    [.., w, f] if matches!(f.as_str(), "new" | "clone" | "default" | "from") => {
                        OWN_METHODS.iter().find(|(n, _)| n == w).map(|(n, _)| *n)
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// The std wrapper of the elements an iterated expression yields: a field, static or
    /// parameter declared as a collection of wrappers, through `&`, `.iter()`,
    /// `.values()` and the like.
    pub(crate) fn elem_wrapper(&mut self, e: &syn::Expr) -> Option<&'static str> {
        match e {
            syn::Expr::Reference(r) => self.elem_wrapper(&r.expr),
            syn::Expr::Paren(p) => self.elem_wrapper(&p.expr),
            syn::Expr::MethodCall(mc)
                if matches!(
                    mc.method.to_string().as_str(),
                    "iter"
                        | "iter_mut"
                        | "into_iter"
                        | "values"
                        | "values_mut"
                        | "into_values"
                        | "drain"
                        | "as_slice"
                        | "as_ref"
                ) =>
            {
                self.elem_wrapper(&mc.receiver)
            }
            syn::Expr::Field(f) => {
                let Ty::Def(t, _) = self.infer(&f.base) else {
                    return None;
                };
                let member = match &f.member {
                    syn::Member::Named(i) => i.to_string(),
                    syn::Member::Unnamed(i) => i.index.to_string(),
                };
                self.ix
                    .field_written(t, &member)
                    .and_then(elem_head_wrapper)
            }
            syn::Expr::Path(p) if p.qself.is_none() => {
                let name = p.path.get_ident()?.to_string();
                self.scopes
                    .iter()
                    .rev()
                    .find_map(|s| s.elem_wrappers.get(&name).copied())
            }
            _ => None,
        }
    }

    /// Records the std wrapper of a simple binding (`for a in arcs`, `|a| ..`).
    pub(crate) fn mark_wrapper(&mut self, pat: &syn::Pat, w: Option<&'static str>) {
        let (Some(w), Some(name)) = (w, simple_binding(pat)) else {
            return;
        };
        self.scopes
            .last_mut()
            .expect("a scope")
            .wrappers
            .insert(name, w);
    }

    fn static_wrapper(&self, path: &syn::Path) -> Option<&'static str> {
        let segs: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        let (module, name) = match segs.as_slice() {
            [name] => match self.resolve_path(&segs, false)? {
                crate::index::Res::Const(m) => (m, name),
                _ => return None,
            },
            [prefix @ .., name] => match self.resolve_path(prefix, false)? {
                crate::index::Res::Mod(m) => (m, name),
                _ => return None,
            },
            [] => return None,
        };
        self.ix
            .const_types
            .get(&(module, name.clone()))
            .and_then(head_wrapper)
    }

    /// `recv.name()` when it is the std wrapper's own method: its outside path.
    pub(crate) fn wrapper_method(&mut self, recv: &syn::Expr, name: &str) -> Option<String> {
        let w = self.std_wrapper(recv)?;
        owns(w, name).then(|| {
            let module = match w {
                "Arc" | "Mutex" | "RwLock" | "OnceLock" => "sync",
                "Rc" => "rc",
                _ => "cell",
            };
            format!("std::{module}::{w}::{name}")
        })
    }
}
