//! Lowering one parsed file into an owned skeleton: its items, `use` declarations, impls,
//! signatures and `mod` declarations, with line numbers already taken from spans.
//!
//! Skeletons are what crosses threads: syn trees hold `proc_macro2` values, which are neither
//! `Send` nor meaningful outside the thread whose source map produced their spans. Bodies stay
//! in the parsing thread and are walked there once the whole workspace is indexed.

use proc_macro2::TokenStream;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;

/// A path as written, e.g. `crate::llm::Client<T>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathExpr {
    /// Starts with `::` (2015-style global path).
    pub global: bool,
    /// Segments with their generic type arguments.
    pub segs: Vec<(String, Vec<TyExpr>)>,
}

impl PathExpr {
    pub fn names(&self) -> Vec<String> {
        self.segs.iter().map(|(n, _)| n.clone()).collect()
    }
}

/// A type as written, reduced to what method resolution needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TyExpr {
    Path(PathExpr),
    /// `&T`, `&mut T`, `*const T`: method calls see through them.
    Ref(Box<TyExpr>),
    /// `dyn A + B` or `impl A + B`.
    Traits(Vec<PathExpr>),
    /// `[T]` or `[T; N]`.
    Slice(Box<TyExpr>),
    /// `(A, B)`, and `()`.
    Tuple(Vec<TyExpr>),
    /// An associated type of a type, `<T as Trait>::Name` (the trait is not needed: the
    /// name is looked up in the type's impls, or in the bounds of a generic parameter).
    Proj(Box<TyExpr>, String),
    Unknown,
}

/// Type parameters and their trait bounds (inline and `where`).
pub type Bounds = Vec<(String, Vec<PathExpr>)>;

#[derive(Debug, Clone)]
pub struct Sig {
    pub name: String,
    pub line: usize,
    pub has_self: bool,
    pub params: Vec<(Option<String>, TyExpr)>,
    pub ret: Option<TyExpr>,
    pub generics: Bounds,
    /// Per parameter: does it keep a fn value given to it (see `keeps_fn_value`)?
    pub stored_params: Vec<bool>,
}

/// A fn with a body (or a trait method without one), numbered in file order.
#[derive(Debug, Clone)]
pub struct FnSkel {
    pub local: usize,
    pub sig: Sig,
    pub has_body: bool,
}

#[derive(Debug, Clone)]
pub enum TypeKind {
    Struct(Vec<(String, TyExpr)>),
    /// Variants with their fields (`0`, `1`, … for tuple variants).
    Enum(Vec<(String, Vec<(String, TyExpr)>)>),
    Alias(TyExpr),
}

#[derive(Debug, Clone)]
pub struct TypeSkel {
    pub name: String,
    pub kind: TypeKind,
    pub generics: Bounds,
}

#[derive(Debug, Clone)]
pub struct TraitSkel {
    pub name: String,
    pub supertraits: Vec<PathExpr>,
    pub generics: Bounds,
    pub methods: Vec<FnSkel>,
    /// Associated types with their bounds (`type Narrator: Narrate;`).
    pub assoc: Vec<(String, Vec<PathExpr>)>,
}

#[derive(Debug, Clone)]
pub struct ImplSkel {
    pub self_ty: TyExpr,
    pub trait_: Option<PathExpr>,
    pub generics: Bounds,
    pub methods: Vec<FnSkel>,
    /// Associated types (`type Target = Client;`).
    pub assoc: Vec<(String, TyExpr)>,
}

/// One name brought in by a `use` item (`*` for a glob).
#[derive(Debug, Clone)]
pub struct UseSkel {
    pub path: Vec<String>,
    pub global: bool,
    /// The name it is bound to, or `None` for a glob.
    pub alias: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ModDecl {
    pub name: String,
    pub path_attr: Option<String>,
    /// Files chosen by `#[cfg_attr(<cfg>, path = "..")]`: each is loaded, as a twin of the
    /// same module, since some build selects it.
    pub cfg_paths: Vec<String>,
    pub line: usize,
}

/// The items of one module, inline modules nested.
#[derive(Debug, Clone, Default)]
pub struct ModSkel {
    pub fns: Vec<FnSkel>,
    pub types: Vec<TypeSkel>,
    pub traits: Vec<TraitSkel>,
    pub impls: Vec<ImplSkel>,
    pub uses: Vec<UseSkel>,
    /// Consts, statics, macros: names that shadow but are never called as fns.
    pub values: Vec<String>,
    /// Declared types of consts and statics (receivers such as `TEMPLATES.len()`).
    pub const_types: Vec<(String, TyExpr)>,
    pub inline_mods: Vec<(String, Option<String>, ModSkel)>,
    pub mod_decls: Vec<ModDecl>,
    /// `macro_rules!` definitions: name and the token text of each rule's matcher and
    /// transcriber.
    pub macros: Vec<(String, Vec<(String, String)>)>,
    /// Initializers of statics and consts, walked like fn bodies (named after the item): a
    /// `LazyLock::new(|| ..)` runs when first touched, and fn items in a table are values.
    pub inits: Vec<FnSkel>,
}

/// A `// hotpath-lint: allow(...)` comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuppressionComment {
    pub line: usize,
    pub reason: Option<String>,
    /// The comment follows code on its line (rather than standing alone above a statement).
    pub trailing: bool,
}

#[derive(Debug, Clone)]
pub struct FileSkel {
    pub root: ModSkel,
    pub fn_count: usize,
}

/// A fn body kept in the parsing thread, in the same order as the skeleton's `local` numbers.
pub struct Body<'a> {
    /// `None` for a trait method declared without a default body.
    pub block: Option<&'a syn::Block>,
    /// The signature, whose parameter patterns (`Json(body): Json<T>`) bind locals; `None`
    /// for a static's initializer.
    pub sig: Option<&'a syn::Signature>,
    /// A static's initializer expression.
    pub init: Option<&'a syn::Expr>,
}

/// Splices the items of item-position macro calls into the surrounding module, when their
/// tokens parse as items: `cfg_rt! { pub mod runtime; }`-style wrappers are common, and code
/// inside them is as real as code outside. `macro_rules!` definitions are left alone.
pub fn splice_item_macros(items: &mut Vec<syn::Item>) {
    let macros = crate::macros::file_macros(items);
    splice_with(items, &macros, 0);
}

type FileMacros = std::collections::HashMap<String, Vec<(TokenStream, TokenStream)>>;

/// `depth` counts nested expansions, so a macro expanding to itself ends.
fn splice_with(items: &mut Vec<syn::Item>, macros: &FileMacros, depth: usize) {
    let mut out = Vec::with_capacity(items.len());
    for item in items.drain(..) {
        match item {
            // An invocation of a `macro_rules!` of this file that writes items (an `impl`
            // per NPC kind): its expansion stands where it is invoked.
            syn::Item::Macro(m)
                if m.ident.is_none()
                    && !is_out_of_scope(&m.attrs)
                    && depth < 4
                    && let Some(mut expanded) = crate::macros::expand_items(&m.mac, macros) =>
            {
                splice_with(&mut expanded, macros, depth + 1);
                out.extend(expanded);
            }
            syn::Item::Macro(m) if m.ident.is_none() && !is_out_of_scope(&m.attrs) => {
                let mut parsed = syn::parse2::<syn::File>(m.mac.tokens.clone());
                if parsed.is_err() && is_lazy_static(&m.mac.path) {
                    // `lazy_static! { static ref X: T = ..; }`: a static like any other.
                    parsed = syn::parse2::<syn::File>(drop_ref_after_static(&m.mac.tokens));
                }
                if parsed.is_err() && is_thread_local_macro(&m.mac.path) {
                    // `thread_local! { static X: T = const { .. } }`: the last `;` is optional.
                    let mut tokens = m.mac.tokens.clone();
                    tokens.extend([proc_macro2::TokenTree::Punct(proc_macro2::Punct::new(
                        ';',
                        proc_macro2::Spacing::Alone,
                    ))]);
                    parsed = syn::parse2::<syn::File>(tokens);
                }
                match parsed {
                    Ok(mut f) if !f.items.is_empty() => {
                        splice_with(&mut f.items, macros, depth);
                        if is_thread_local_macro(&m.mac.path) {
                            for item in &mut f.items {
                                if let syn::Item::Static(s) = item {
                                    let inner = &s.ty;
                                    *s.ty = syn::parse_quote!(::std::thread::LocalKey<#inner>);
                                }
                            }
                        }
                        out.extend(f.items);
                    }
                    _ => out.push(syn::Item::Macro(m)),
                }
            }
            syn::Item::Mod(mut md) => {
                if let Some((_, inner)) = &mut md.content {
                    splice_with(inner, macros, depth);
                }
                out.push(syn::Item::Mod(md));
            }
            other => out.push(other),
        }
    }
    *items = out;
}

/// The bodies of a file in `local` order, without building the skeleton again: the same
/// traversal as [`lower_file`], kept in step with it (see `bodies_match_skeleton_numbering`).
pub fn file_bodies(file: &syn::File) -> Vec<Body<'_>> {
    fn walk<'a>(items: &'a [syn::Item], out: &mut Vec<Body<'a>>) {
        for item in items {
            if is_out_of_scope(item_attrs(item)) {
                continue;
            }
            match item {
                syn::Item::Fn(f) => out.push(Body {
                    block: Some(&f.block),
                    sig: Some(&f.sig),
                    init: None,
                }),
                syn::Item::Static(st) => out.push(Body {
                    block: None,
                    sig: None,
                    init: Some(&st.expr),
                }),
                syn::Item::Const(c) => out.push(Body {
                    block: None,
                    sig: None,
                    init: Some(&c.expr),
                }),
                syn::Item::Trait(t) => {
                    for ti in &t.items {
                        if let syn::TraitItem::Fn(f) = ti
                            && !is_out_of_scope(&f.attrs)
                        {
                            out.push(Body {
                                block: f.default.as_ref(),
                                sig: Some(&f.sig),
                                init: None,
                            });
                        }
                    }
                }
                syn::Item::Impl(i) => {
                    for ii in &i.items {
                        if let syn::ImplItem::Fn(f) = ii
                            && !is_out_of_scope(&f.attrs)
                        {
                            out.push(Body {
                                block: Some(&f.block),
                                sig: Some(&f.sig),
                                init: None,
                            });
                        }
                    }
                }
                syn::Item::Mod(m) => {
                    if let Some((_, inner)) = &m.content {
                        walk(inner, out);
                    }
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(&file.items, &mut out);
    out
}

/// Lowers a file; the bodies come back in `local` order.
pub fn lower_file(file: &syn::File) -> (FileSkel, Vec<Body<'_>>) {
    let mut l = Lowerer { bodies: Vec::new() };
    let root = l.items(&file.items);
    let fn_count = l.bodies.len();
    (FileSkel { root, fn_count }, l.bodies)
}

struct Lowerer<'a> {
    bodies: Vec<Body<'a>>,
}

impl<'a> Lowerer<'a> {
    fn push_fn(&mut self, sig: &'a syn::Signature, block: Option<&'a syn::Block>) -> FnSkel {
        let local = self.bodies.len();
        self.bodies.push(Body {
            block,
            sig: Some(sig),
            init: None,
        });
        FnSkel {
            local,
            sig: lower_sig(sig),
            has_body: block.is_some(),
        }
    }

    /// A static's or const's initializer, walked like a fn body named after the item.
    fn push_init(&mut self, ident: &syn::Ident, ty: &syn::Type, expr: &'a syn::Expr) -> FnSkel {
        let local = self.bodies.len();
        self.bodies.push(Body {
            block: None,
            sig: None,
            init: Some(expr),
        });
        FnSkel {
            local,
            sig: Sig {
                name: ident.to_string(),
                line: ident.span().start().line,
                has_self: false,
                params: Vec::new(),
                ret: Some(lower_ty(ty)),
                generics: Vec::new(),
                stored_params: Vec::new(),
            },
            has_body: true,
        }
    }

    fn items(&mut self, items: &'a [syn::Item]) -> ModSkel {
        let mut m = ModSkel::default();
        for item in items {
            if is_out_of_scope(item_attrs(item)) {
                continue;
            }
            match item {
                syn::Item::Fn(f) => {
                    let s = self.push_fn(&f.sig, Some(&f.block));
                    m.fns.push(s);
                }
                syn::Item::Struct(s) => {
                    let fields = s
                        .fields
                        .iter()
                        .enumerate()
                        .map(|(i, f)| {
                            let name = f
                                .ident
                                .as_ref()
                                .map(|i| i.to_string())
                                .unwrap_or(i.to_string());
                            (name, lower_ty(&f.ty))
                        })
                        .collect();
                    m.types.push(TypeSkel {
                        name: s.ident.to_string(),
                        kind: TypeKind::Struct(fields),
                        generics: lower_generics(&s.generics),
                    });
                }
                syn::Item::Union(u) => {
                    let fields = u
                        .fields
                        .named
                        .iter()
                        .map(|f| {
                            (
                                f.ident.as_ref().map(|i| i.to_string()).unwrap_or_default(),
                                lower_ty(&f.ty),
                            )
                        })
                        .collect();
                    m.types.push(TypeSkel {
                        name: u.ident.to_string(),
                        kind: TypeKind::Struct(fields),
                        generics: lower_generics(&u.generics),
                    });
                }
                syn::Item::Enum(e) => m.types.push(TypeSkel {
                    name: e.ident.to_string(),
                    kind: TypeKind::Enum(
                        e.variants
                            .iter()
                            .map(|v| {
                                let fields = v
                                    .fields
                                    .iter()
                                    .enumerate()
                                    .map(|(i, f)| {
                                        let name = f
                                            .ident
                                            .as_ref()
                                            .map(|i| i.to_string())
                                            .unwrap_or(i.to_string());
                                        (name, lower_ty(&f.ty))
                                    })
                                    .collect();
                                (v.ident.to_string(), fields)
                            })
                            .collect(),
                    ),
                    generics: lower_generics(&e.generics),
                }),
                syn::Item::Type(t) => m.types.push(TypeSkel {
                    name: t.ident.to_string(),
                    kind: TypeKind::Alias(lower_ty(&t.ty)),
                    generics: lower_generics(&t.generics),
                }),
                syn::Item::Trait(t) => {
                    let mut methods = Vec::new();
                    let mut assoc = Vec::new();
                    for ti in &t.items {
                        if let syn::TraitItem::Type(ty) = ti {
                            assoc.push((ty.ident.to_string(), bound_paths(&ty.bounds)));
                        }
                        if let syn::TraitItem::Fn(f) = ti {
                            if is_out_of_scope(&f.attrs) {
                                continue;
                            }
                            methods.push(self.push_fn(&f.sig, f.default.as_ref()));
                        }
                    }
                    m.traits.push(TraitSkel {
                        name: t.ident.to_string(),
                        supertraits: bound_paths(&t.supertraits),
                        generics: lower_generics(&t.generics),
                        methods,
                        assoc,
                    });
                }
                syn::Item::Impl(i) => {
                    let mut methods = Vec::new();
                    let mut assoc = Vec::new();
                    for ii in &i.items {
                        if let syn::ImplItem::Type(ty) = ii {
                            assoc.push((ty.ident.to_string(), lower_ty(&ty.ty)));
                        }
                        if let syn::ImplItem::Fn(f) = ii {
                            if is_out_of_scope(&f.attrs) {
                                continue;
                            }
                            methods.push(self.push_fn(&f.sig, Some(&f.block)));
                        }
                    }
                    m.impls.push(ImplSkel {
                        self_ty: lower_ty(&i.self_ty),
                        trait_: i.trait_.as_ref().map(|(p, _)| lower_path(p)),
                        generics: lower_generics(&i.generics),
                        methods,
                        assoc,
                    });
                }
                syn::Item::Mod(md) => {
                    let path_attr = path_attr(&md.attrs);
                    match &md.content {
                        Some((_, items)) => {
                            let inner = self.items(items);
                            m.inline_mods.push((md.ident.to_string(), path_attr, inner));
                        }
                        None => m.mod_decls.push(ModDecl {
                            name: md.ident.to_string(),
                            path_attr,
                            cfg_paths: cfg_attr_paths(&md.attrs),
                            line: md.ident.span().start().line,
                        }),
                    }
                }
                syn::Item::Use(u) => {
                    let global = u.leading_colon.is_some();
                    lower_use(&u.tree, &mut Vec::new(), global, &mut m.uses);
                }
                syn::Item::ExternCrate(e) => {
                    let name = e
                        .rename
                        .as_ref()
                        .map(|(_, i)| i.to_string())
                        .unwrap_or(e.ident.to_string());
                    m.uses.push(UseSkel {
                        path: vec![e.ident.to_string()],
                        global: true,
                        alias: Some(name),
                    });
                }
                syn::Item::Const(c) => {
                    m.values.push(c.ident.to_string());
                    m.const_types.push((c.ident.to_string(), lower_ty(&c.ty)));
                    let init = self.push_init(&c.ident, &c.ty, &c.expr);
                    m.inits.push(init);
                }
                syn::Item::Static(s) => {
                    m.values.push(s.ident.to_string());
                    m.const_types.push((s.ident.to_string(), lower_ty(&s.ty)));
                    let init = self.push_init(&s.ident, &s.ty, &s.expr);
                    m.inits.push(init);
                }
                syn::Item::Macro(mac) if mac.mac.path.is_ident("macro_rules") => {
                    if let Some(name) = &mac.ident {
                        m.macros
                            .push((name.to_string(), macro_transcribers(&mac.mac.tokens)));
                    }
                }
                _ => {}
            }
        }
        m
    }
}

fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    match item {
        syn::Item::Const(i) => &i.attrs,
        syn::Item::Enum(i) => &i.attrs,
        syn::Item::ExternCrate(i) => &i.attrs,
        syn::Item::Fn(i) => &i.attrs,
        syn::Item::ForeignMod(i) => &i.attrs,
        syn::Item::Impl(i) => &i.attrs,
        syn::Item::Macro(i) => &i.attrs,
        syn::Item::Mod(i) => &i.attrs,
        syn::Item::Static(i) => &i.attrs,
        syn::Item::Struct(i) => &i.attrs,
        syn::Item::Trait(i) => &i.attrs,
        syn::Item::TraitAlias(i) => &i.attrs,
        syn::Item::Type(i) => &i.attrs,
        syn::Item::Union(i) => &i.attrs,
        syn::Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

/// True for code that only exists in test builds: `#[cfg(test)]` (also inside `all(..)`) and
/// `#[test]`-like attributes. Feature-gated code is in scope: some build enables it.
pub fn is_out_of_scope(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        let path = a.path();
        if path.is_ident("cfg") {
            match &a.meta {
                syn::Meta::List(l) => syn::parse2::<syn::Meta>(l.tokens.clone())
                    .map(|m| requires_test(&m))
                    .unwrap_or(false),
                _ => false,
            }
        } else {
            path.segments.last().is_some_and(|s| s.ident == "test")
        }
    })
}

fn requires_test(m: &syn::Meta) -> bool {
    match m {
        syn::Meta::Path(p) => p.is_ident("test"),
        syn::Meta::List(l) => {
            let parser = Punctuated::<syn::Meta, syn::Token![,]>::parse_terminated;
            let Ok(args) = syn::parse::Parser::parse2(parser, l.tokens.clone()) else {
                return false;
            };
            if l.path.is_ident("all") {
                args.iter().any(requires_test)
            } else if l.path.is_ident("any") {
                !args.is_empty() && args.iter().all(requires_test)
            } else {
                false
            }
        }
        syn::Meta::NameValue(_) => false,
    }
}

fn path_attr(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| match &a.meta {
        syn::Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    })
}

/// The `path = ".."` arguments of `#[cfg_attr(<cfg>, ..)]` attributes.
fn cfg_attr_paths(attrs: &[syn::Attribute]) -> Vec<String> {
    let parser = Punctuated::<syn::Meta, syn::Token![,]>::parse_terminated;
    let mut out = Vec::new();
    for a in attrs {
        let syn::Meta::List(l) = &a.meta else {
            continue;
        };
        if !l.path.is_ident("cfg_attr") {
            continue;
        }
        let Ok(args) = syn::parse::Parser::parse2(parser, l.tokens.clone()) else {
            continue;
        };
        // The first argument is the condition; the rest are attributes.
        out.extend(args.iter().skip(1).filter_map(|m| {
            path_attr(std::slice::from_ref(&syn::Attribute {
                pound_token: Default::default(),
                style: syn::AttrStyle::Outer,
                bracket_token: Default::default(),
                meta: m.clone(),
            }))
        }));
    }
    out
}

fn lower_use(tree: &syn::UseTree, prefix: &mut Vec<String>, global: bool, out: &mut Vec<UseSkel>) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            lower_use(&p.tree, prefix, global, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let name = n.ident.to_string();
            if name == "self" {
                // `use a::b::{self}` binds `b`.
                if let Some(last) = prefix.last() {
                    out.push(UseSkel {
                        path: prefix.clone(),
                        global,
                        alias: Some(last.clone()),
                    });
                }
            } else {
                let mut path = prefix.clone();
                path.push(name.clone());
                out.push(UseSkel {
                    path,
                    global,
                    alias: Some(name),
                });
            }
        }
        syn::UseTree::Rename(r) => {
            let name = r.ident.to_string();
            let path = if name == "self" {
                prefix.clone()
            } else {
                let mut p = prefix.clone();
                p.push(name);
                p
            };
            // `use x::Trait as _` binds no usable name but puts the trait in scope for
            // method calls; it is kept under the name `_`, which no path can spell.
            out.push(UseSkel {
                path,
                global,
                alias: Some(r.rename.to_string()),
            });
        }
        syn::UseTree::Glob(_) => out.push(UseSkel {
            path: prefix.clone(),
            global,
            alias: None,
        }),
        syn::UseTree::Group(g) => {
            for t in &g.items {
                lower_use(t, prefix, global, out);
            }
        }
    }
}

/// Lowers a `use` item met inside a fn body (same shape as a module-level one).
pub fn lower_use_item(u: &syn::ItemUse) -> Vec<UseSkel> {
    let mut out = Vec::new();
    lower_use(
        &u.tree,
        &mut Vec::new(),
        u.leading_colon.is_some(),
        &mut out,
    );
    out
}

pub fn lower_sig(sig: &syn::Signature) -> Sig {
    let mut has_self = false;
    let mut params = Vec::new();
    let mut stored_params = Vec::new();
    for input in &sig.inputs {
        match input {
            syn::FnArg::Receiver(_) => has_self = true,
            syn::FnArg::Typed(pt) => {
                let name = match &*pt.pat {
                    syn::Pat::Ident(pi) => Some(pi.ident.to_string()),
                    _ => None,
                };
                params.push((name, lower_ty(&pt.ty)));
                stored_params.push(keeps_fn_value(&pt.ty, &sig.generics));
            }
        }
    }
    let ret = match &sig.output {
        syn::ReturnType::Default => None,
        syn::ReturnType::Type(_, t) => Some(lower_ty(t)),
    };
    Sig {
        name: sig.ident.to_string(),
        line: sig.ident.span().start().line,
        has_self,
        params,
        ret,
        generics: lower_generics(&sig.generics),
        stored_params,
    }
}

/// Does a parameter of this type keep the fn value it is given (so a closure passed to it
/// is stored and may be called later from elsewhere)? A boxed or shared `dyn Fn`, a fn
/// pointer, or an `impl Fn`/generic `F: Fn` bound with `'static` (a registry's `register(..,
/// f: impl Fn(&Ctx) + Send + 'static)`, a spawner).
fn keeps_fn_value(t: &syn::Type, generics: &syn::Generics) -> bool {
    let is_static = |b: &syn::TypeParamBound| matches!(b, syn::TypeParamBound::Lifetime(l) if l.ident == "static");
    match t {
        syn::Type::FnPtr(_) => true,
        syn::Type::Reference(r) => keeps_fn_value(&r.elem, generics),
        syn::Type::ImplTrait(i) => i.bounds.iter().any(is_static),
        syn::Type::Path(tp) if tp.qself.is_none() => {
            let Some(last) = tp.path.segments.last() else {
                return false;
            };
            if matches!(last.ident.to_string().as_str(), "Box" | "Arc" | "Rc") {
                return true;
            }
            if tp.path.segments.len() != 1 {
                return false;
            }
            let name = &last.ident;
            let inline = generics.params.iter().any(|p| {
                matches!(p, syn::GenericParam::Type(tp) if tp.ident == *name && tp.bounds.iter().any(is_static))
            });
            let in_where = generics.where_clause.as_ref().is_some_and(|w| {
                w.predicates.iter().any(|pred| match pred {
                    syn::WherePredicate::Type(pt) => {
                        matches!(&pt.bounded_ty, syn::Type::Path(b) if b.path.is_ident(name))
                            && pt.bounds.iter().any(is_static)
                    }
                    _ => false,
                })
            });
            inline || in_where
        }
        _ => false,
    }
}

pub fn lower_generics(g: &syn::Generics) -> Bounds {
    let mut out: Bounds = Vec::new();
    for p in &g.params {
        if let syn::GenericParam::Type(tp) = p {
            out.push((tp.ident.to_string(), bound_paths(&tp.bounds)));
        }
    }
    if let Some(wc) = &g.where_clause {
        for pred in &wc.predicates {
            if let syn::WherePredicate::Type(pt) = pred
                && let syn::Type::Path(tp) = &pt.bounded_ty
                && tp.qself.is_none()
                && tp.path.segments.len() == 1
            {
                let name = tp.path.segments[0].ident.to_string();
                let b = bound_paths(&pt.bounds);
                match out.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, v)) => v.extend(b),
                    None => out.push((name, b)),
                }
            }
        }
    }
    out
}

fn bound_paths(bounds: &Punctuated<syn::TypeParamBound, syn::Token![+]>) -> Vec<PathExpr> {
    bounds
        .iter()
        .filter_map(|b| match b {
            syn::TypeParamBound::Trait(t) if t.maybe.is_none() => Some(lower_path(&t.path)),
            _ => None,
        })
        .collect()
}

pub fn lower_path(p: &syn::Path) -> PathExpr {
    PathExpr {
        global: p.leading_colon.is_some(),
        segs: p
            .segments
            .iter()
            .map(|s| {
                let args = match &s.arguments {
                    syn::PathArguments::AngleBracketed(a) => a
                        .args
                        .iter()
                        .filter_map(|g| match g {
                            syn::GenericArgument::Type(t) => Some(lower_ty(t)),
                            _ => None,
                        })
                        .collect(),
                    // `Fn(A, B) -> R` is `Fn<(A, B), Output = R>`: the inputs as one tuple,
                    // then the output (`()` when none is written).
                    syn::PathArguments::Parenthesized(p) => vec![
                        TyExpr::Tuple(p.inputs.iter().map(|a| lower_ty(&a.ty)).collect()),
                        match &p.output {
                            syn::ReturnType::Default => TyExpr::Tuple(Vec::new()),
                            syn::ReturnType::Type(_, t) => lower_ty(t),
                        },
                    ],
                    syn::PathArguments::None => Vec::new(),
                };
                (s.ident.to_string(), args)
            })
            .collect(),
    }
}

pub fn lower_ty(t: &syn::Type) -> TyExpr {
    match t {
        syn::Type::Path(tp) if tp.qself.is_none() => TyExpr::Path(lower_path(&tp.path)),
        // `<T as Trait>::Name`: the projection of `T`.
        syn::Type::Path(tp) => match (&tp.qself, tp.path.segments.last()) {
            (Some(q), Some(last)) => {
                TyExpr::Proj(Box::new(lower_ty(&q.ty)), last.ident.to_string())
            }
            _ => TyExpr::Unknown,
        },
        syn::Type::Reference(r) => TyExpr::Ref(Box::new(lower_ty(&r.elem))),
        syn::Type::Ptr(p) => TyExpr::Ref(Box::new(lower_ty(&p.elem))),
        syn::Type::Paren(p) => lower_ty(&p.elem),
        syn::Type::Group(g) => lower_ty(&g.elem),
        syn::Type::TraitObject(o) => TyExpr::Traits(bound_paths(&o.bounds)),
        syn::Type::ImplTrait(i) => TyExpr::Traits(bound_paths(&i.bounds)),
        syn::Type::Slice(s) => TyExpr::Slice(Box::new(lower_ty(&s.elem))),
        syn::Type::Array(a) => TyExpr::Slice(Box::new(lower_ty(&a.elem))),
        syn::Type::Tuple(t) => TyExpr::Tuple(t.elems.iter().map(lower_ty).collect()),
        _ => TyExpr::Unknown,
    }
}

/// Finds `hotpath-lint: allow(...)` line comments. syn drops comments, so this is a small
/// lexer of its own: it skips string, raw string and char literals and block comments, so a
/// marker quoted in a string is not mistaken for a suppression.
pub fn scan_suppressions(src: &str) -> Vec<SuppressionComment> {
    let mut out = Vec::new();
    for (line, start, text) in line_comments(src) {
        if text.starts_with('/') || text.starts_with('!') {
            continue; // doc comments describe, they do not suppress
        }
        let Some(rest) = text.trim_start().strip_prefix("hotpath-lint:") else {
            continue;
        };
        let Some(args) = rest.trim().strip_prefix("allow") else {
            continue;
        };
        let line_start = src[..start].rfind('\n').map(|i| i + 1).unwrap_or(0);
        out.push(SuppressionComment {
            line,
            reason: parse_reason(args.trim()),
            trailing: !src[line_start..start].trim().is_empty(),
        });
    }
    out
}

/// `(line, byte offset of the "//", text after "//")` of every line comment.
fn line_comments(src: &str) -> Vec<(usize, usize, &str)> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut line) = (0usize, 1usize);
    let skip_to = |i: &mut usize, line: &mut usize, end: usize| {
        *line += b[*i..end.min(b.len())]
            .iter()
            .filter(|c| **c == b'\n')
            .count();
        *i = end.min(b.len());
    };
    while i < b.len() {
        match b[i] {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = src[i..].find('\n').map(|e| i + e).unwrap_or(b.len());
                out.push((line, i, &src[i + 2..end]));
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let (mut depth, mut j) = (1, i + 2);
                while j < b.len() && depth > 0 {
                    if b[j] == b'/' && b.get(j + 1) == Some(&b'*') {
                        depth += 1;
                        j += 2;
                    } else if b[j] == b'*' && b.get(j + 1) == Some(&b'/') {
                        depth -= 1;
                        j += 2;
                    } else {
                        j += 1;
                    }
                }
                skip_to(&mut i, &mut line, j);
            }
            b'r' if matches!(b.get(i + 1), Some(b'"') | Some(b'#'))
                && (i == 0 || !is_ident_byte(b[i - 1])) =>
            {
                let mut j = i + 1;
                let mut hashes = 0;
                while b.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                if b.get(j) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let close = format!("\"{}", "#".repeat(hashes));
                let end = src[j + 1..]
                    .find(&close)
                    .map(|e| j + 1 + e + close.len())
                    .unwrap_or(b.len());
                skip_to(&mut i, &mut line, end);
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                skip_to(&mut i, &mut line, j + 1);
            }
            b'\'' => {
                // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
                let end = if b.get(i + 1) == Some(&b'\\') {
                    src[i + 2..].find('\'').map(|e| i + 2 + e + 1)
                } else {
                    let ch_len = src[i + 1..].chars().next().map(char::len_utf8).unwrap_or(1);
                    (b.get(i + 1 + ch_len) == Some(&b'\'')).then_some(i + 2 + ch_len)
                };
                match end {
                    Some(e) => skip_to(&mut i, &mut line, e),
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    out
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Extracts a non-empty `reason = "..."` from `(reason = "...")`.
fn parse_reason(args: &str) -> Option<String> {
    let inner = args.strip_prefix('(')?.trim_end().strip_suffix(')')?.trim();
    let value = inner
        .strip_prefix("reason")?
        .trim_start()
        .strip_prefix('=')?
        .trim();
    let value = value.strip_prefix('"')?.strip_suffix('"')?;
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_string())
}

/// The first line of a statement (its attributes included). Computed from the leftmost
/// token: `Spanned::span` would print the whole statement to find it, which is quadratic in
/// nesting and dominated the run time.
pub fn stmt_line(s: &syn::Stmt) -> usize {
    match s {
        syn::Stmt::Local(l) => match l.attrs.first() {
            Some(a) => a.pound_token.span.start().line,
            None => l.let_token.span.start().line,
        },
        syn::Stmt::Macro(m) => match m.attrs.first() {
            Some(a) => a.pound_token.span.start().line,
            None => path_line(&m.mac.path),
        },
        syn::Stmt::Expr(e, _) => expr_line(e),
        syn::Stmt::Item(_) => 0,
    }
}

fn path_line(p: &syn::Path) -> usize {
    match (&p.leading_colon, p.segments.first()) {
        (Some(c), _) => c.spans[0].start().line,
        (None, Some(s)) => s.ident.span().start().line,
        (None, None) => 0,
    }
}

/// The line of an expression's leftmost token.
pub fn expr_line(e: &syn::Expr) -> usize {
    use syn::Expr as E;
    let attr_line =
        |attrs: &[syn::Attribute]| attrs.first().map(|a| a.pound_token.span.start().line);
    match e {
        E::Call(c) => attr_line(&c.attrs).unwrap_or_else(|| expr_line(&c.func)),
        E::MethodCall(m) => attr_line(&m.attrs).unwrap_or_else(|| expr_line(&m.receiver)),
        E::Field(f) => expr_line(&f.base),
        E::Await(a) => expr_line(&a.base),
        E::Try(t) => expr_line(&t.expr),
        E::Index(i) => expr_line(&i.expr),
        E::Cast(c) => expr_line(&c.expr),
        E::Binary(b) => expr_line(&b.left),
        E::Assign(a) => expr_line(&a.left),
        E::Path(p) => attr_line(&p.attrs).unwrap_or_else(|| match &p.qself {
            Some(q) => q.lt_token.span.start().line,
            None => path_line(&p.path),
        }),
        E::Struct(s) => path_line(&s.path),
        E::Macro(m) => attr_line(&m.attrs).unwrap_or_else(|| path_line(&m.mac.path)),
        E::Lit(l) => l.lit.span().start().line,
        E::If(i) => i.if_token.span.start().line,
        E::Match(m) => m.match_token.span.start().line,
        E::Block(b) => {
            attr_line(&b.attrs).unwrap_or_else(|| b.block.brace_token.span.open().start().line)
        }
        E::Async(a) => a.async_token.span.start().line,
        E::Unsafe(u) => u.unsafe_token.span.start().line,
        E::Loop(l) => l.loop_token.span.start().line,
        E::While(w) => w.while_token.span.start().line,
        E::ForLoop(f) => f.for_token.span.start().line,
        E::Return(r) => r.return_token.span.start().line,
        E::Let(l) => l.let_token.span.start().line,
        E::Reference(r) => r.and_token.span.start().line,
        E::Paren(p) => p.paren_token.span.open().start().line,
        E::Tuple(t) => t.paren_token.span.open().start().line,
        E::Array(a) => a.bracket_token.span.open().start().line,
        E::Closure(c) => attr_line(&c.attrs).unwrap_or_else(|| c.inputs_begin.span.start().line),
        other => other.span().start().line,
    }
}

/// Tries to read macro arguments as Rust: comma-separated expressions (`println!`, `vec!`,
/// `tokio::join!`), else statements (`vec![x; n]`, block-like macros). Macros with their own
/// grammar (`select!`) fall back to the nested groups that parse.
pub fn macro_exprs(tokens: &TokenStream) -> Vec<syn::Expr> {
    let parser = Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated;
    if let Ok(list) = syn::parse::Parser::parse2(parser, tokens.clone()) {
        return list.into_iter().collect();
    }
    if let Ok(stmts) = syn::parse::Parser::parse2(syn::Block::parse_within, tokens.clone()) {
        let block = syn::Block {
            brace_token: Default::default(),
            stmts,
        };
        return vec![syn::Expr::Block(syn::ExprBlock {
            attrs: vec![],
            label: None,
            block,
        })];
    }
    let mut out = Vec::new();
    for tt in tokens.clone() {
        if let proc_macro2::TokenTree::Group(g) = tt {
            out.extend(macro_exprs(&g.stream()));
        }
    }
    // Token runs between `=>`/`,`/`;` separators (e.g. `select!` arms) are tried as
    // expressions too, so calls written directly in the arms are seen.
    let mut run = TokenStream::new();
    let flush = |run: &mut TokenStream, out: &mut Vec<syn::Expr>| {
        if let Ok(e) = syn::parse2::<syn::Expr>(std::mem::take(run))
            && !matches!(e, syn::Expr::Block(_))
        {
            out.push(e);
        }
    };
    // A lone `:` separates too (`json!({"line": npc.line()})`), not the `::` of a path.
    let mut prev_joint_colon = false;
    for tt in tokens.clone() {
        let lone_colon = matches!(&tt, proc_macro2::TokenTree::Punct(p)
            if p.as_char() == ':' && p.spacing() == proc_macro2::Spacing::Alone && !prev_joint_colon);
        prev_joint_colon = matches!(&tt, proc_macro2::TokenTree::Punct(p)
            if p.as_char() == ':' && p.spacing() == proc_macro2::Spacing::Joint);
        let sep = lone_colon
            || matches!(&tt, proc_macro2::TokenTree::Punct(p) if matches!(p.as_char(), ',' | ';' | '=' | '>'));
        if sep {
            flush(&mut run, &mut out);
        } else {
            run.extend(std::iter::once(tt));
        }
    }
    flush(&mut run, &mut out);
    out
}

/// The rules of a `macro_rules!` definition as token text, `(matcher, transcriber)`:
/// `(matcher) => { transcriber };` repeated.
fn macro_transcribers(tokens: &TokenStream) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut after_arrow = false;
    let mut prev_eq = false;
    let mut matcher = String::new();
    for tt in tokens.clone() {
        match &tt {
            proc_macro2::TokenTree::Punct(p) if p.as_char() == '=' => prev_eq = true,
            proc_macro2::TokenTree::Punct(p) if p.as_char() == '>' && prev_eq => {
                after_arrow = true;
                prev_eq = false;
            }
            proc_macro2::TokenTree::Group(g) if after_arrow => {
                out.push((std::mem::take(&mut matcher), g.stream().to_string()));
                after_arrow = false;
            }
            proc_macro2::TokenTree::Group(g) => {
                matcher = g.stream().to_string();
                prev_eq = false;
            }
            _ => prev_eq = false,
        }
    }
    out
}

fn is_lazy_static(path: &syn::Path) -> bool {
    path.segments
        .last()
        .is_some_and(|s| s.ident == "lazy_static")
}

/// `static ref X` → `static X`.
fn drop_ref_after_static(tokens: &TokenStream) -> TokenStream {
    let mut out = Vec::new();
    let mut after_static = false;
    for tt in tokens.clone() {
        let is_ref = matches!(&tt, proc_macro2::TokenTree::Ident(i) if i == "ref");
        if !(after_static && is_ref) {
            after_static = matches!(&tt, proc_macro2::TokenTree::Ident(i) if i == "static");
            out.push(tt);
        } else {
            after_static = false;
        }
    }
    out.into_iter().collect()
}

/// `thread_local!` and the wrappers crates write around it (`tokio_thread_local!`,
/// `loom::thread_local!`): each `static X: T` in it is a `LocalKey<T>`, not a `T`.
fn is_thread_local_macro(path: &syn::Path) -> bool {
    path.segments
        .last()
        .is_some_and(|s| s.ident.to_string().ends_with("thread_local"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suppression_comments() {
        let s = scan_suppressions(concat!(
            "a();\n// hotpath-lint: allow(reason = \"warm\")\nb(); // hotpath-lint: allow\n",
            "/// hotpath-lint: allow(reason = \"doc\")\n",
            "let s = \"// hotpath-lint: allow\"; let c = '\"'; let r = r#\"// hotpath-lint: allow\"#;\n",
            "/* // hotpath-lint: allow */ fn f<'a>(x: &'a str) {} // hotpath-lint: allow(reason = \"x\")\n",
        ));
        assert_eq!(
            s,
            vec![
                SuppressionComment {
                    line: 2,
                    reason: Some("warm".into()),
                    trailing: false
                },
                SuppressionComment {
                    line: 3,
                    reason: None,
                    trailing: true
                },
                SuppressionComment {
                    line: 6,
                    reason: Some("x".into()),
                    trailing: true
                },
            ]
        );
    }

    #[test]
    fn bodies_match_skeleton_numbering() {
        let f: syn::File = syn::parse_str(
            "fn a(){} trait T { fn b(); fn c(){} #[cfg(test)] fn t(){} } mod m { impl X { fn d(){} } #[test] fn e(){} } #[cfg(test)] mod tests { fn f(){} } fn g(){}",
        )
        .unwrap();
        let (skel, bodies) = lower_file(&f);
        let light = file_bodies(&f);
        assert_eq!(skel.fn_count, 5);
        assert_eq!(bodies.len(), light.len());
        for (a, b) in bodies.iter().zip(&light) {
            assert_eq!(
                a.block.map(|x| x as *const _),
                b.block.map(|x| x as *const _)
            );
        }
    }

    #[test]
    fn statement_lines_come_from_the_leftmost_token() {
        let f: syn::Block =
            syn::parse_str("{\n let a = 1;\n foo(\n 1);\n #[allow(x)]\n x.y().z();\n}").unwrap();
        let lines: Vec<usize> = f.stmts.iter().map(stmt_line).collect();
        assert_eq!(lines, vec![2, 3, 5]);
    }

    #[test]
    fn macro_arguments_in_json_like_grammars() {
        let t: TokenStream = r#"{"line": npc.line(), "mood": { "n": crate::m::f(1) }}"#
            .parse()
            .unwrap();
        let found = macro_exprs(&t);
        assert!(
            found
                .iter()
                .any(|e| matches!(e, syn::Expr::MethodCall(m) if m.method == "line"))
        );
        assert!(found.iter().any(|e| matches!(e, syn::Expr::Call(_))));
    }

    #[test]
    fn cfg_test_detection() {
        let f: syn::File = syn::parse_str(
            "#[cfg(test)] fn a(){} #[cfg(all(test, unix))] fn b(){} #[cfg(any(test, feature=\"x\"))] fn c(){} #[cfg(feature=\"x\")] fn d(){} #[tokio::test] async fn e(){}",
        )
        .unwrap();
        let out: Vec<bool> = f
            .items
            .iter()
            .map(|i| is_out_of_scope(item_attrs(i)))
            .collect();
        assert_eq!(out, vec![true, true, false, false, true]);
    }
}
