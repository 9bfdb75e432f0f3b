//! Workspace trait impls on types the workspace does not define: `impl Announce for f64`,
//! `impl<T: Display> Announce for T` (blanket), and impls for `&T`, `[T]`, tuples, `Box<T>`,
//! `Arc<T>`, `Vec<T>`, `Option<T>` or an outside generic wrapper. A method call reaches one
//! when the receiver's type has that shape and the trait is in scope at the call (a method
//! of a trait that is not imported cannot be called with method syntax).
//!
//! Outside values whose concrete type was never written (what an outside method returns)
//! fit every impl on an outside shape: the lint cannot tell, and a miss would be silent.

use crate::index::{FnId, ImplId, Index, TraitRef, Ty};

/// How deep bound checks recurse (`impl<T: A> B for T` where `A` is itself blanket-implemented).
const MAX_DEPTH: usize = 4;

impl Index {
    /// Records every impl of a workspace trait whose self type is not a workspace type, under
    /// each method it provides: its own, and the trait's default bodies it does not override.
    pub(crate) fn index_open_impls(&mut self) {
        for (i, imp) in self.impls.iter().enumerate() {
            let Some(TraitRef::Ws(t)) = &imp.trait_ else {
                continue;
            };
            if matches!(imp.self_ty, Ty::Def(..)) {
                continue;
            }
            let mut provided: Vec<(String, FnId)> =
                imp.methods.iter().map(|(n, f)| (n.clone(), *f)).collect();
            for (n, f) in &self.traits[*t].methods {
                if !imp.methods.contains_key(n) && self.fns[*f].has_body {
                    provided.push((n.clone(), *f));
                }
            }
            for (n, f) in provided {
                self.open_impls.entry(n).or_default().push((i, f));
            }
        }
    }

    /// The methods named `name` of open impls whose self type `recv` fits; the caller checks
    /// that the trait is in scope.
    pub fn open_impl_methods(&self, recv: &Ty, name: &str) -> Vec<(ImplId, FnId)> {
        self.open_impls
            .get(name)
            .into_iter()
            .flatten()
            .filter(|(i, _)| self.fits(&self.impls[*i].self_ty, recv, 0))
            .copied()
            .collect()
    }

    /// Could a value of type `recv` be the self type `pat` of an impl (generic parameters of
    /// the impl are `Traits` with their bounds)?
    pub(crate) fn fits(&self, pat: &Ty, recv: &Ty, depth: usize) -> bool {
        if depth > MAX_DEPTH {
            return true;
        }
        match (pat, recv) {
            (Ty::Traits(bounds), r) => bounds.iter().all(|b| self.implements(r, b, depth + 1)),
            (_, Ty::Unknown) => true,
            (_, Ty::Ext(p)) if is_opaque(p) => !matches!(pat, Ty::Def(..)),
            (Ty::Ext(q) | Ty::ExtOf(q, _), Ty::Ext(p) | Ty::ExtOf(p, _)) => {
                last(q) == last(p) || derefs_to(last(p), last(q)) || literal_fits(p, last(q))
            }
            (Ty::Coll(e), Ty::Coll(r)) | (Ty::Wrap(e), Ty::Wrap(r)) => self.fits(e, r, depth + 1),
            (Ty::Tuple(es), Ty::Tuple(rs)) => {
                es.len() == rs.len() && es.iter().zip(rs).all(|(e, r)| self.fits(e, r, depth + 1))
            }
            (Ty::Def(a, _), Ty::Def(b, _)) => a == b,
            _ => false,
        }
    }

    /// Does `recv` implement the bound `tr`? Outside traits (`Display`, `Send`) are assumed
    /// to hold: the lint cannot see std's impls, and assuming them errs towards reporting.
    fn implements(&self, recv: &Ty, tr: &TraitRef, depth: usize) -> bool {
        let TraitRef::Ws(t) = tr else { return true };
        match recv {
            Ty::Unknown => true,
            Ty::Traits(trs) => trs.iter().any(|x| match x {
                TraitRef::Ws(x) => self.trait_method_owner_chain(*x).contains(t),
                TraitRef::Ext(_) => false,
            }),
            Ty::Def(d, _)
                if self
                    .impls_of_type
                    .get(d)
                    .into_iter()
                    .flatten()
                    .any(|i| self.impls[*i].trait_.as_ref() == Some(&TraitRef::Ws(*t))) =>
            {
                true
            }
            _ => self.traits[*t].impls.iter().any(|i| {
                !matches!(self.impls[*i].self_ty, Ty::Def(..))
                    && self.fits(&self.impls[*i].self_ty, recv, depth + 1)
            }),
        }
    }

    /// A trait and all its supertraits.
    fn trait_method_owner_chain(&self, t: usize) -> Vec<usize> {
        let mut out = vec![t];
        let mut i = 0;
        while i < out.len() {
            for s in &self.traits[out[i]].supertraits {
                if let TraitRef::Ws(s) = s
                    && !out.contains(s)
                {
                    out.push(*s);
                }
            }
            i += 1;
        }
        out
    }
}

/// An outside value whose concrete type was never written: what an outside method, field or
/// destructuring produced (`HeaderMap::get()`, `resp.body`, `x?`, `pair::0`).
fn is_opaque(p: &str) -> bool {
    p.contains(['(', '.', '?']) || last(p).starts_with(|c: char| c.is_ascii_digit())
}

fn last(p: &str) -> &str {
    p.rsplit("::").next().unwrap_or(p)
}

/// An unsuffixed literal (`{integer}`, `{float}`) takes any primitive type of its kind.
fn literal_fits(lit: &str, ty: &str) -> bool {
    match lit {
        "{integer}" => matches!(
            ty,
            "i8" | "i16"
                | "i32"
                | "i64"
                | "i128"
                | "isize"
                | "u8"
                | "u16"
                | "u32"
                | "u64"
                | "u128"
                | "usize"
                | "f32"
                | "f64"
        ),
        "{float}" => matches!(ty, "f32" | "f64"),
        _ => false,
    }
}

/// Std's owned types that auto-deref to a borrowed one, whose impls their methods reach.
fn derefs_to(owned: &str, borrowed: &str) -> bool {
    matches!(
        (owned, borrowed),
        ("String", "str") | ("PathBuf", "Path") | ("OsString", "OsStr") | ("CString", "CStr")
    )
}
