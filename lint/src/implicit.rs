//! Calls rustc inserts where no call is written: `Drop::drop` when a value goes away,
//! `Display`/`Debug` when a value is formatted (`format!`, `println!`, `write!`, tracing's
//! `%x`/`?x`, `.to_string()`), `Deref`/`DerefMut` on auto-deref, `Index`/`IndexMut`, the
//! operator traits, `From`/`Into` (also by `?`) and `Iterator::next` driven by `for`.
//!
//! Each is an edge `via: implicit` to the workspace impl rustc would run. Which impl is
//! known from the value's type; when that type is unknown nothing is added (`--strict`
//! reports the call where the lint cannot type it).

use crate::calls::{Target, Via, Walker};
use crate::index::{FnId, Ty, TypeId, mentioned_types};

/// Macros that format their arguments with `Display`/`Debug`.
const FORMAT_MACROS: &[&str] = &[
    "format",
    "format_args",
    "print",
    "println",
    "eprint",
    "eprintln",
    "write",
    "writeln",
    "panic",
    "unreachable",
    "todo",
    "unimplemented",
    "dbg",
    "assert",
    "assert_eq",
    "assert_ne",
    "debug_assert",
    "debug_assert_eq",
    "debug_assert_ne",
    "trace",
    "debug",
    "info",
    "warn",
    "error",
    "event",
    "anyhow",
    "bail",
    "ensure",
    "eyre",
];

/// Binary operators and the trait method each calls on a workspace left operand.
fn binop_method(op: &syn::BinOp) -> Option<(&'static str, &'static str)> {
    use syn::BinOp as B;
    Some(match op {
        B::Add(_) => ("Add", "add"),
        B::Sub(_) => ("Sub", "sub"),
        B::Mul(_) => ("Mul", "mul"),
        B::Div(_) => ("Div", "div"),
        B::Rem(_) => ("Rem", "rem"),
        B::BitAnd(_) => ("BitAnd", "bitand"),
        B::BitOr(_) => ("BitOr", "bitor"),
        B::BitXor(_) => ("BitXor", "bitxor"),
        B::Shl(_) => ("Shl", "shl"),
        B::Shr(_) => ("Shr", "shr"),
        B::AddAssign(_) => ("AddAssign", "add_assign"),
        B::SubAssign(_) => ("SubAssign", "sub_assign"),
        B::MulAssign(_) => ("MulAssign", "mul_assign"),
        B::DivAssign(_) => ("DivAssign", "div_assign"),
        B::RemAssign(_) => ("RemAssign", "rem_assign"),
        B::BitAndAssign(_) => ("BitAndAssign", "bitand_assign"),
        B::BitOrAssign(_) => ("BitOrAssign", "bitor_assign"),
        B::BitXorAssign(_) => ("BitXorAssign", "bitxor_assign"),
        B::ShlAssign(_) => ("ShlAssign", "shl_assign"),
        B::ShrAssign(_) => ("ShrAssign", "shr_assign"),
        B::Eq(_) | B::Ne(_) => ("PartialEq", "*"),
        B::Lt(_) | B::Le(_) | B::Gt(_) | B::Ge(_) => ("PartialOrd", "*"),
        _ => return None,
    })
}

/// Collection methods that drop elements (removed, replaced or cleared).
const DROPPING_METHODS: &[&str] = &[
    "insert",
    "remove",
    "clear",
    "truncate",
    "retain",
    "pop",
    "pop_front",
    "pop_back",
    "swap_remove",
    "drain",
    "take",
    "replace",
    "set",
    "dedup",
    "split_off",
    "remove_entry",
    "shift_remove",
    "swap_remove_entry",
];

/// Outside methods that give an owned value (removed from a collection, cloned, built).
const OWNING_METHODS: &[&str] = &[
    "remove",
    "take",
    "pop",
    "pop_front",
    "pop_back",
    "swap_remove",
    "replace",
    "clone",
    "to_owned",
    "into",
    "collect",
    "split_off",
    "remove_entry",
];

/// Does a workspace fn return an owned value (not `&T`, `Option<&T>`, `Result<&T, _>`)?
pub(crate) fn returns_owned(ix: &crate::index::Index, f: FnId) -> bool {
    use crate::syntax::TyExpr;
    match &ix.fns[f].sig.ret {
        None | Some(TyExpr::Ref(_)) => false,
        Some(TyExpr::Path(p)) => !p.segs.last().is_some_and(|(n, args)| {
            matches!(n.as_str(), "Option" | "Result")
                && matches!(args.first(), Some(TyExpr::Ref(_)))
        }),
        Some(_) => true,
    }
}

pub(crate) fn is_format_macro(name: &str) -> bool {
    FORMAT_MACROS.contains(&name)
}

impl Walker<'_> {
    fn implicit(&mut self, fns: Vec<FnId>, line: usize) {
        self.add(
            fns.into_iter()
                .map(|f| (Target::Fn(f), Via::Implicit))
                .collect(),
            line,
        );
    }

    /// The `drop` fns run when a value of type `ty` is dropped (drop glue included).
    pub(crate) fn drop_fns(&self, ty: &Ty) -> Vec<FnId> {
        if self.ix.drop_glue.is_empty() {
            return Vec::new();
        }
        let mut ids = Vec::new();
        mentioned_types(ty, &mut ids);
        let mut out: Vec<FnId> = ids
            .iter()
            .filter_map(|t| self.ix.drop_glue.get(t))
            .flatten()
            .copied()
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Does this expression give an owned value (so the scope binding it drops it), rather
    /// than a reference or a value still owned elsewhere? When unsure: no (a `let` of a
    /// borrowed `Session` must not report its `Drop`).
    pub(crate) fn owned_value(&mut self, e: &syn::Expr) -> bool {
        match e {
            syn::Expr::Struct(_) | syn::Expr::Array(_) | syn::Expr::Tuple(_) => true,
            syn::Expr::Paren(p) => self.owned_value(&p.expr),
            syn::Expr::Await(a) => self.owned_value(&a.base),
            syn::Expr::Try(t) => self.owned_value(&t.expr),
            syn::Expr::Call(c) => {
                let syn::Expr::Path(p) = &*c.func else {
                    return false;
                };
                let targets = self.path_targets(p.qself.as_ref(), &p.path);
                match targets.iter().find_map(|(t, _)| match t {
                    Target::Fn(f) => Some(*f),
                    _ => None,
                }) {
                    Some(f) => returns_owned(self.ix, f),
                    // Constructors, `Box::new(..)`, `Arc::new(..)`, `mem::take(..)`.
                    None => true,
                }
            }
            syn::Expr::MethodCall(mc) => {
                let name = mc.method.to_string();
                if matches!(
                    name.as_str(),
                    "unwrap" | "expect" | "unwrap_or_default" | "unwrap_or" | "unwrap_or_else"
                ) {
                    return self.owned_value(&mc.receiver);
                }
                if OWNING_METHODS.contains(&name.as_str()) {
                    return true;
                }
                let recv = self.infer(&mc.receiver);
                match self
                    .method_targets(&recv, &name)
                    .iter()
                    .find_map(|(t, _)| match t {
                        Target::Fn(f) => Some(*f),
                        _ => None,
                    }) {
                    Some(f) => returns_owned(self.ix, f),
                    None => false,
                }
            }
            _ => false,
        }
    }

    pub(crate) fn add_drops(&mut self, ty: &Ty, line: usize) {
        let fns = self.drop_fns(ty);
        self.implicit(fns, line);
    }

    /// A method call on a collection that removes or replaces elements drops them.
    pub(crate) fn add_collection_drops(&mut self, recv: &Ty, method: &str, line: usize) {
        if DROPPING_METHODS.contains(&method) && matches!(recv, Ty::Coll(_) | Ty::Wrap(_)) {
            self.add_drops(recv, line);
        }
    }

    /// Sorting, searching and deduplicating a collection compare its elements; sets and
    /// maps hash them: their `Ord`/`PartialOrd`/`PartialEq`/`Hash` impls run.
    pub(crate) fn add_collection_compares(&mut self, recv: &Ty, method: &str, line: usize) {
        const COMPARING: &[&str] = &[
            "sort",
            "sort_unstable",
            "binary_search",
            "contains",
            "dedup",
            "max",
            "min",
            "insert",
            "get",
            "remove",
            "entry",
        ];
        let Ty::Coll(elem) = recv else { return };
        if !COMPARING.contains(&method) {
            return;
        }
        let mut ids = Vec::new();
        mentioned_types(elem, &mut ids);
        let mut fns = Vec::new();
        for t in ids {
            for (tr, m) in [
                ("Ord", "cmp"),
                ("PartialOrd", "partial_cmp"),
                ("PartialEq", "eq"),
                ("Hash", "hash"),
            ] {
                fns.extend(self.ix.ext_trait_methods(t, tr, m));
            }
        }
        self.implicit(fns, line);
    }

    /// `x.await` on a workspace type: its `Future::poll` (or `IntoFuture::into_future`).
    pub(crate) fn add_await(&mut self, ty: &Ty, line: usize) {
        let Ty::Def(t, _) = ty else { return };
        let mut fns = self.ix.ext_trait_methods(*t, "Future", "poll");
        fns.extend(self.ix.ext_trait_methods(*t, "IntoFuture", "into_future"));
        self.implicit(fns, line);
    }

    /// The `fmt` fns of the `Display` (and/or `Debug`) impls formatting a value of `ty` runs.
    pub(crate) fn fmt_fns(&self, ty: &Ty, display: bool, debug: bool) -> Vec<FnId> {
        let mut out = Vec::new();
        if display && let Ty::Def(t, _) = ty {
            out.extend(self.ix.ext_trait_methods(*t, "Display", "fmt"));
        }
        if debug {
            // `{:?}` of a collection or option formats each element with its `Debug`.
            let mut ids = Vec::new();
            mentioned_types(ty, &mut ids);
            for t in ids {
                out.extend(self.ix.ext_trait_methods(t, "Debug", "fmt"));
            }
        }
        out
    }

    /// The arguments of a formatting macro: each formatted value's `Display`/`Debug` impl
    /// (which one from the format string: `{}` or `{:?}`; both when unsure), also values
    /// captured by name (`{npc}`) and tracing's `%x` / `?x` fields.
    pub(crate) fn add_format_calls(&mut self, mac: &syn::Macro, exprs: &[syn::Expr], line: usize) {
        let name = mac
            .path
            .segments
            .last()
            .map(|s| s.ident.to_string())
            .unwrap_or_default();
        if !is_format_macro(&name) {
            return;
        }
        let fmt_str = exprs.iter().find_map(|e| match e {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        });
        let (display, debug) = match &fmt_str {
            Some(s) => placeholder_kinds(s),
            None => (true, true),
        };
        let skip_first = matches!(name.as_str(), "write" | "writeln");
        let mut values: Vec<Ty> = Vec::new();
        for (i, e) in exprs.iter().enumerate() {
            if skip_first && i == 0 {
                continue;
            }
            let e = match e {
                syn::Expr::Assign(a) => &*a.right,
                e => e,
            };
            if matches!(e, syn::Expr::Lit(_)) {
                continue;
            }
            values.push(self.infer(e));
        }
        if let Some(s) = &fmt_str {
            for captured in captured_names(s) {
                if let Some(t) = self.var(&captured) {
                    values.push(t.clone());
                }
            }
        }
        // tracing: `info!(npc = %npc, "..")`, `debug!(?state)`.
        let tracing = matches!(
            name.as_str(),
            "trace" | "debug" | "info" | "warn" | "error" | "event"
        );
        let mut toks = if tracing {
            mac.tokens.clone()
        } else {
            proc_macro2::TokenStream::new()
        }
        .into_iter()
        .peekable();
        while let Some(tt) = toks.next() {
            if let proc_macro2::TokenTree::Punct(p) = &tt
                && matches!(p.as_char(), '%' | '?')
                && let Some(proc_macro2::TokenTree::Ident(id)) = toks.peek()
            {
                let disp = p.as_char() == '%';
                if let Some(t) = self.var(&id.to_string()).cloned() {
                    let fns = self.fmt_fns(&t, disp, !disp);
                    self.implicit(fns, line);
                }
            }
        }
        for t in values {
            let fns = self.fmt_fns(&t, display, debug);
            self.implicit(fns, line);
        }
    }

    /// What `recv.name()` on a workspace type that has no such method may run:
    /// `to_string()` through its `Display` impl, or a method of its `Deref` target (with the
    /// `deref` impl itself).
    pub(crate) fn implicit_method_targets(
        &self,
        t: TypeId,
        args: &[Ty],
        name: &str,
    ) -> Vec<(Target, Via)> {
        if name == "to_string" {
            let fmt = self.ix.ext_trait_methods(t, "Display", "fmt");
            if !fmt.is_empty() {
                return fmt
                    .into_iter()
                    .map(|f| (Target::Fn(f), Via::Implicit))
                    .collect();
            }
        }
        // An iterator adapter (`map`, `filter`, `collect`, ...) on a workspace iterator
        // drives its `next`.
        if self.ix.ext_trait_impl(t, "Iterator").is_some() {
            let next = self.ix.ext_trait_methods(t, "Iterator", "next");
            if !next.is_empty() {
                return next
                    .into_iter()
                    .map(|f| (Target::Fn(f), Via::Implicit))
                    .collect();
            }
        }
        let depth = self.deref_depth.get();
        if depth > 4 {
            return Vec::new();
        }
        let Some((target, derefs)) = self.deref_of(t, args) else {
            return Vec::new();
        };
        self.deref_depth.set(depth + 1);
        let mut out: Vec<(Target, Via)> = match &target {
            Ty::Unknown => Vec::new(),
            tt => self
                .method_targets(tt, name)
                .into_iter()
                .filter(|(_, v)| *v != Via::Name)
                .collect(),
        };
        self.deref_depth.set(depth);
        if !out.is_empty() {
            out.extend(derefs.into_iter().map(|f| (Target::Fn(f), Via::Implicit)));
        }
        out
    }

    /// A workspace `Deref` impl of a type: its `Target`, and the `deref`/`deref_mut` fns.
    pub(crate) fn deref_of(&self, t: TypeId, args: &[Ty]) -> Option<(Ty, Vec<FnId>)> {
        self.ix.ext_trait_impl(t, "Deref")?;
        let target = self.ix.project(&Ty::Def(t, args.to_vec()), "Target", 0);
        let mut fns = self.ix.ext_trait_methods(t, "Deref", "deref");
        fns.extend(self.ix.ext_trait_methods(t, "DerefMut", "deref_mut"));
        Some((target, fns))
    }

    /// `*x` on a workspace type with a `Deref` impl.
    pub(crate) fn add_explicit_deref(&mut self, ty: &Ty, line: usize) {
        if let Ty::Def(t, args) = ty
            && let Some((_, fns)) = self.deref_of(*t, args)
        {
            self.implicit(fns, line);
        }
    }

    /// `a + b`, `a == b`, `a += b`, `-a`, `!a` on a workspace type: its operator impl.
    pub(crate) fn add_binary_op(&mut self, op: &syn::BinOp, left: &Ty, line: usize) {
        let Some((tr, method)) = binop_method(op) else {
            return;
        };
        let Ty::Def(t, _) = left else { return };
        let fns: Vec<FnId> = if method == "*" {
            let mut v = Vec::new();
            for m in ["eq", "ne", "partial_cmp", "lt", "le", "gt", "ge"] {
                v.extend(self.ix.ext_trait_methods(*t, tr, m));
            }
            v
        } else {
            self.ix.ext_trait_methods(*t, tr, method)
        };
        self.implicit(fns, line);
    }

    pub(crate) fn add_unary_op(&mut self, op: &syn::UnOp, ty: &Ty, line: usize) {
        let (tr, method) = match op {
            syn::UnOp::Neg(_) => ("Neg", "neg"),
            syn::UnOp::Not(_) => ("Not", "not"),
            syn::UnOp::Deref(_) => return self.add_explicit_deref(ty, line),
            _ => return,
        };
        if let Ty::Def(t, _) = ty {
            let fns = self.ix.ext_trait_methods(*t, tr, method);
            self.implicit(fns, line);
        }
    }

    /// `x[i]` on a workspace type: its `Index`/`IndexMut` impl; the element type.
    pub(crate) fn add_index(&mut self, base: &Ty, line: usize) -> Option<Ty> {
        let Ty::Def(t, args) = base else { return None };
        let i = self.ix.ext_trait_impl(*t, "Index")?;
        let mut fns = self.ix.ext_trait_methods(*t, "Index", "index");
        fns.extend(self.ix.ext_trait_methods(*t, "IndexMut", "index_mut"));
        self.implicit(fns, line);
        let out = self.ix.project(&Ty::Def(*t, args.clone()), "Output", 0);
        Some(if out == Ty::Unknown {
            self.ix.impl_assoc(i, "Output")
        } else {
            out
        })
    }

    /// `x.into()`: every workspace `From<X>` impl whose source fits `x`'s type, and `Into`
    /// impls of that type.
    pub(crate) fn add_into(&mut self, src: &Ty, line: usize) {
        // From a std value (`format!(..).into()`, `"x".into()`), the target is chosen by
        // inference and `From<String>` impls are many: only an annotated `let` says which
        // (see `visit_local`).
        if !matches!(src, Ty::Def(..)) {
            return;
        }
        let mut fns: Vec<FnId> = self
            .ix
            .from_impls
            .iter()
            .filter(|(_, from_ty, _)| *from_ty != Ty::Unknown && self.ix.fits(from_ty, src, 0))
            .map(|(_, _, f)| *f)
            .collect();
        if let Ty::Def(t, _) = src {
            fns.extend(self.ix.ext_trait_methods(*t, "Into", "into"));
        }
        self.implicit(fns, line);
    }

    /// `T::from(x)` / `x.into()` into a known type, and `?` into the fn's error type: the
    /// `From` impls of that type.
    pub(crate) fn add_from_into(&mut self, dst: &Ty, line: usize) {
        let Ty::Def(t, _) = dst else { return };
        let fns = self.ix.ext_trait_methods(*t, "From", "from");
        self.implicit(fns, line);
    }

    /// `for x in it` over a workspace type: its `IntoIterator::into_iter` and the
    /// `Iterator::next` of the iterator, run on every turn. Gives the element type.
    pub(crate) fn add_iteration(&mut self, ty: &Ty, line: usize) -> Option<Ty> {
        let Ty::Def(t, args) = ty else { return None };
        let me = Ty::Def(*t, args.clone());
        if self.ix.ext_trait_impl(*t, "Iterator").is_some() {
            let fns = self.ix.ext_trait_methods(*t, "Iterator", "next");
            self.implicit(fns, line);
            return Some(self.ix.project(&me, "Item", 0));
        }
        self.ix.ext_trait_impl(*t, "IntoIterator")?;
        let fns = self.ix.ext_trait_methods(*t, "IntoIterator", "into_iter");
        self.implicit(fns, line);
        let iter = self.ix.project(&me, "IntoIter", 0);
        let item = self.ix.project(&me, "Item", 0);
        if let Ty::Def(it, _) = &iter {
            let fns = self.ix.ext_trait_methods(*it, "Iterator", "next");
            self.implicit(fns, line);
        }
        Some(match (item, iter) {
            (Ty::Unknown, Ty::Coll(e)) => *e,
            (Ty::Unknown, i @ Ty::Def(..)) => self.ix.project(&i, "Item", 0),
            (item, _) => item,
        })
    }
}

/// Which traits a format string uses: `{}`/`{x}`/`{:>8}` are `Display`, `{:?}`/`{:#?}` are
/// `Debug`. `{{` is a literal brace.
fn placeholder_kinds(s: &str) -> (bool, bool) {
    let (mut display, mut debug) = (false, false);
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'{' {
            if b.get(i + 1) == Some(&b'{') {
                i += 2;
                continue;
            }
            let end = s[i..].find('}').map(|e| i + e).unwrap_or(b.len());
            let spec = &s[i + 1..end];
            let fmt = spec.split_once(':').map(|(_, f)| f).unwrap_or("");
            if fmt.contains('?') {
                debug = true;
            } else {
                display = true;
            }
            i = end + 1;
        } else {
            i += 1;
        }
    }
    (display, debug)
}

/// Identifiers captured by a format string (`"{npc} says {line:?}"`).
fn captured_names(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('{') {
        if rest[i + 1..].starts_with('{') {
            rest = &rest[i + 2..];
            continue;
        }
        let end = rest[i..].find('}').map(|e| i + e).unwrap_or(rest.len());
        let spec = &rest[i + 1..end];
        let name = spec.split(':').next().unwrap_or("").trim();
        if name
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_alphanumeric() || c == '_')
        {
            out.push(name.to_string());
        }
        rest = &rest[end.min(rest.len())..];
        if rest.is_empty() {
            break;
        }
        rest = &rest[1..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_strings() {
        assert_eq!(placeholder_kinds("{} and {:?}"), (true, true));
        assert_eq!(placeholder_kinds("{x:>8}"), (true, false));
        assert_eq!(placeholder_kinds("{{}} {0:#?}"), (false, true));
        assert_eq!(
            captured_names("{npc} says {line:?} {{x}} {0}"),
            vec!["npc", "line"]
        );
    }
}
