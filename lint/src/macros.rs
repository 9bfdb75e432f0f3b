//! Workspace `macro_rules!` invocations, expanded as far as calls go: every rule's
//! transcriber is walked at the invocation (any rule may be the one that matches), with
//! `$crate` read as the defining crate and each `$var` replaced by the invocation's argument
//! when the rule's matcher is a plain comma-separated list of fragments, else by a local of
//! unknown type. Calls in the expansion are reported at the invocation's line.

use crate::calls::Walker;
use crate::index::Ty;
use proc_macro2::{Delimiter, Group, Ident, Punct, Spacing, Span, TokenStream, TokenTree};
use std::collections::HashMap;
use syn::visit::Visit;

/// Nested workspace macro invocations expanded (a macro calling itself stops here).
const MAX_DEPTH: usize = 4;
/// What a metavariable stands for when its argument is not known.
const UNKNOWN_ARG: &str = "__hotpath_macro_arg";

impl Walker<'_> {
    /// Walks the expansion of `mac` when it names a workspace `macro_rules!`; returns false
    /// when it does not.
    pub(crate) fn expand_workspace_macro(&mut self, mac: &syn::Macro, line: usize) -> bool {
        let Some(name) = mac.path.segments.last().map(|s| s.ident.to_string()) else {
            return false;
        };
        // The index outlives the walker's borrow of itself: rules are read in place.
        let ix = self.ix;
        let Some(rules) = ix.macros.get(&name) else {
            return false;
        };
        if self.macro_depth >= MAX_DEPTH {
            return true;
        }
        let saved = self.line_override;
        self.line_override = Some(saved.unwrap_or(line));
        self.macro_depth += 1;
        let args = split_args(&mac.tokens);
        for (rule, (krate, _, _)) in rules.iter().enumerate() {
            let Some(r) = prepared(ix, &name, rule) else {
                self.unresolved(line, format!("macro `{name}!`: a rule does not tokenize"));
                continue;
            };
            if !could_match(&r.matcher, &mac.tokens) {
                continue;
            }
            let exprs: std::rc::Rc<Vec<syn::Expr>> = match (&r.unbound, &r.vars) {
                (Expansion::Items, _) => continue,
                (Expansion::Unparsable, _) => {
                    self.unresolved(
                        line,
                        format!("macro `{name}!`: its expansion does not parse"),
                    );
                    continue;
                }
                // The invocation's arguments in place of the rule's fragments.
                (Expansion::Exprs(e), Some(vars))
                    if vars.len() == args.len() && !args.is_empty() =>
                {
                    let bound: HashMap<String, TokenStream> =
                        vars.iter().cloned().zip(args.iter().cloned()).collect();
                    let krate_name = ix.crates[*krate].name.replace('-', "_");
                    match parse_exprs(&substitute(r.transcriber.clone(), &krate_name, &bound)) {
                        Some(b) => std::rc::Rc::new(b),
                        None => e.clone(),
                    }
                }
                (Expansion::Exprs(e), _) => e.clone(),
            };
            self.with_scope_unknown_arg(|w| {
                for e in exprs.iter() {
                    w.visit_expr(e);
                }
            });
        }
        self.macro_depth -= 1;
        self.line_override = saved;
        true
    }

    fn with_scope_unknown_arg(&mut self, f: impl FnOnce(&mut Self)) {
        self.scopes.push(Default::default());
        self.bind(UNKNOWN_ARG.to_string(), Ty::Unknown);
        f(self);
        self.scopes.pop();
    }
}

/// The `macro_rules!` defined in a file (inline modules included), by name: `(matcher,
/// transcriber)` token streams of each rule.
pub fn file_macros(items: &[syn::Item]) -> HashMap<String, Vec<(TokenStream, TokenStream)>> {
    fn walk(items: &[syn::Item], out: &mut HashMap<String, Vec<(TokenStream, TokenStream)>>) {
        for item in items {
            match item {
                syn::Item::Macro(m) if m.mac.path.is_ident("macro_rules") => {
                    if let Some(name) = &m.ident {
                        let rules = rules_of(&m.mac.tokens);
                        out.entry(name.to_string()).or_default().extend(rules);
                    }
                }
                syn::Item::Mod(md) => {
                    if let Some((_, inner)) = &md.content {
                        walk(inner, out);
                    }
                }
                _ => {}
            }
        }
    }
    let mut out = HashMap::new();
    walk(items, &mut out);
    out
}

fn rules_of(tokens: &TokenStream) -> Vec<(TokenStream, TokenStream)> {
    let mut out = Vec::new();
    let mut matcher: Option<TokenStream> = None;
    let mut arrow = false;
    for tt in tokens.clone() {
        match &tt {
            TokenTree::Group(g) if arrow => {
                if let Some(m) = matcher.take() {
                    out.push((m, g.stream()));
                }
                arrow = false;
            }
            TokenTree::Group(g) => matcher = Some(g.stream()),
            TokenTree::Punct(p) if p.as_char() == '>' => arrow = matcher.is_some(),
            _ => {}
        }
    }
    out
}

/// The items an item-position invocation of a macro defined in the same file produces
/// (`npc_impl!(Guard, "guard");` writing an `impl`): each rule whose matcher takes as many
/// fragments as the invocation has arguments, expanded; `None` when none parses.
pub fn expand_items(
    mac: &syn::Macro,
    macros: &HashMap<String, Vec<(TokenStream, TokenStream)>>,
) -> Option<Vec<syn::Item>> {
    let name = mac.path.segments.last()?.ident.to_string();
    let rules = macros.get(&name)?;
    let args = split_args(&mac.tokens);
    let mut out = Vec::new();
    for (m, t) in rules {
        if !could_match(m, &mac.tokens) {
            continue;
        }
        let Some(vars) = matcher_vars(m) else {
            continue;
        };
        if vars.len() != args.len() {
            continue;
        }
        let bound: HashMap<String, TokenStream> = vars.into_iter().zip(args.clone()).collect();
        let expanded = substitute_items(t.clone(), &bound);
        if let Ok(f) = syn::parse2::<syn::File>(expanded) {
            out.extend(f.items);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Item expansion: `$crate` is `crate`, and an argument goes in as its bare tokens (it may
/// be a type or a name, where parentheses would not parse).
fn substitute_items(ts: TokenStream, bound: &HashMap<String, TokenStream>) -> TokenStream {
    let toks: Vec<TokenTree> = ts.into_iter().collect();
    let mut out: Vec<TokenTree> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        match (&toks[i], toks.get(i + 1)) {
            (TokenTree::Punct(p), Some(TokenTree::Ident(id))) if p.as_char() == '$' => {
                if id == "crate" {
                    out.push(TokenTree::Ident(Ident::new("crate", Span::call_site())));
                } else if let Some(arg) = bound.get(&id.to_string()) {
                    out.extend(arg.clone());
                } else {
                    out.push(TokenTree::Ident(Ident::new(UNKNOWN_ARG, Span::call_site())));
                }
                i += 2;
            }
            (TokenTree::Group(g), _) => {
                let mut ng = Group::new(g.delimiter(), substitute_items(g.stream(), bound));
                ng.set_span(g.span());
                out.push(TokenTree::Group(ng));
                i += 1;
            }
            (other, _) => {
                out.push(other.clone());
                i += 1;
            }
        }
    }
    out.into_iter().collect()
}

#[derive(Clone)]
enum Expansion {
    Exprs(std::rc::Rc<Vec<syn::Expr>>),
    Items,
    Unparsable,
}

/// A rule tokenized and expanded with unknown arguments, once per walking thread.
struct Prepared {
    matcher: TokenStream,
    vars: Option<Vec<String>>,
    transcriber: TokenStream,
    unbound: Expansion,
}

/// Prepared rules by macro name and rule index (`None`: the rule does not tokenize).
type PreparedRules = HashMap<(String, usize), Option<std::rc::Rc<Prepared>>>;

thread_local! {
    /// By macro name and rule index; emptied before each workspace's walk (token streams
    /// cannot cross threads, and a thread walks one workspace at a time).
    static PREPARED: std::cell::RefCell<PreparedRules> =
        std::cell::RefCell::new(HashMap::new());
}

/// Forgets the rules prepared by this thread (a new workspace is about to be walked).
pub fn reset_cache() {
    PREPARED.with(|c| c.borrow_mut().clear());
}

fn prepared(ix: &crate::index::Index, name: &str, rule: usize) -> Option<std::rc::Rc<Prepared>> {
    PREPARED.with(|c| {
        if let Some(p) = c.borrow().get(&(name.to_string(), rule)) {
            return p.clone();
        }
        let (krate, matcher, transcriber) = ix.macros.get(name)?.get(rule)?;
        let p = (|| {
            let m = matcher.parse::<TokenStream>().ok()?;
            let t = transcriber.parse::<TokenStream>().ok()?;
            let krate_name = ix.crates[*krate].name.replace('-', "_");
            let expanded = substitute(t.clone(), &krate_name, &HashMap::new());
            let unbound = match parse_exprs(&expanded) {
                Some(e) => Expansion::Exprs(std::rc::Rc::new(e)),
                None if expanded.is_empty() => Expansion::Exprs(std::rc::Rc::new(Vec::new())),
                None if syn::parse2::<syn::File>(expanded).is_ok() => Expansion::Items,
                None => Expansion::Unparsable,
            };
            Some(std::rc::Rc::new(Prepared {
                vars: matcher_vars(&m),
                matcher: m,
                transcriber: t,
                unbound,
            }))
        })();
        c.borrow_mut().insert((name.to_string(), rule), p.clone());
        p
    })
}

/// Can a rule's matcher match the invocation? Its leading literal tokens (before the first
/// fragment or group: `(@inner $x:expr)`, `(static $name:ident ..)`) must be the
/// invocation's; rustc picks a rule by them, and walking every rule of a dispatching macro
/// multiplies expansions.
fn could_match(matcher: &TokenStream, invocation: &TokenStream) -> bool {
    let mut inv = invocation.clone().into_iter();
    for m in matcher.clone() {
        match &m {
            TokenTree::Punct(p) if p.as_char() == '$' => return true,
            TokenTree::Group(_) => return true,
            TokenTree::Ident(id) => match inv.next() {
                Some(TokenTree::Ident(j)) if j == *id => {}
                _ => return false,
            },
            TokenTree::Punct(p) => match inv.next() {
                Some(TokenTree::Punct(q)) if q.as_char() == p.as_char() => {}
                _ => return false,
            },
            TokenTree::Literal(l) => match inv.next() {
                Some(TokenTree::Literal(k)) if k.to_string() == l.to_string() => {}
                _ => return false,
            },
        }
    }
    // The matcher is all literals: the invocation must be exactly them.
    inv.next().is_none()
}

/// An expansion as expressions (`a, b`) or statements (`let x = ..; f(x)`).
fn parse_exprs(tokens: &TokenStream) -> Option<Vec<syn::Expr>> {
    let parser = syn::punctuated::Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated;
    if let Ok(list) = syn::parse::Parser::parse2(parser, tokens.clone()) {
        return Some(list.into_iter().collect());
    }
    let stmts = syn::parse::Parser::parse2(syn::Block::parse_within, tokens.clone()).ok()?;
    Some(vec![syn::Expr::Block(syn::ExprBlock {
        attrs: vec![],
        label: None,
        block: syn::Block {
            brace_token: Default::default(),
            stmts,
        },
    })])
}

/// The invocation's arguments split at top-level commas.
fn split_args(tokens: &TokenStream) -> Vec<TokenStream> {
    let mut out = Vec::new();
    let mut cur = TokenStream::new();
    for tt in tokens.clone() {
        match &tt {
            TokenTree::Punct(p) if p.as_char() == ',' => out.push(std::mem::take(&mut cur)),
            _ => cur.extend(std::iter::once(tt)),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The metavariables of a matcher written as a plain list (`$npc:expr, $event:expr`), in
/// order; `None` when it repeats (`$(..)*`) or uses other separators.
fn matcher_vars(m: &TokenStream) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let toks: Vec<TokenTree> = m.clone().into_iter().collect();
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            TokenTree::Punct(p) if p.as_char() == '$' => match toks.get(i + 1) {
                Some(TokenTree::Ident(id)) => {
                    out.push(id.to_string());
                    // `:frag`
                    i += 4;
                }
                _ => return None,
            },
            TokenTree::Punct(p) if p.as_char() == ',' => i += 1,
            _ => return None,
        }
    }
    Some(out)
}

/// Replaces `$crate` by `::krate`, bound metavariables by their argument (in parentheses),
/// others by an unknown local, and flattens repetitions `$( .. ) sep? *`.
fn substitute(ts: TokenStream, krate: &str, bound: &HashMap<String, TokenStream>) -> TokenStream {
    let toks: Vec<TokenTree> = ts.into_iter().collect();
    let mut out: Vec<TokenTree> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            TokenTree::Punct(p) if p.as_char() == '$' => match toks.get(i + 1) {
                Some(TokenTree::Ident(id)) if id == "crate" => {
                    out.push(TokenTree::Punct(Punct::new(':', Spacing::Joint)));
                    out.push(TokenTree::Punct(Punct::new(':', Spacing::Alone)));
                    out.push(TokenTree::Ident(Ident::new(krate, Span::call_site())));
                    i += 2;
                }
                Some(TokenTree::Ident(id)) => {
                    match bound.get(&id.to_string()) {
                        Some(arg) => out.push(TokenTree::Group(Group::new(
                            Delimiter::Parenthesis,
                            arg.clone(),
                        ))),
                        None => {
                            out.push(TokenTree::Ident(Ident::new(UNKNOWN_ARG, Span::call_site())))
                        }
                    }
                    i += 2;
                }
                Some(TokenTree::Group(g)) => {
                    out.extend(substitute(g.stream(), krate, bound));
                    i += 2;
                    // An optional separator, then `*`, `+` or `?`.
                    let is_rep = |t: Option<&TokenTree>| matches!(t, Some(TokenTree::Punct(p)) if matches!(p.as_char(), '*' | '+' | '?'));
                    if is_rep(toks.get(i)) {
                        i += 1;
                    } else if is_rep(toks.get(i + 1)) {
                        i += 2;
                    }
                }
                _ => i += 1,
            },
            TokenTree::Group(g) => {
                let mut ng = Group::new(g.delimiter(), substitute(g.stream(), krate, bound));
                ng.set_span(g.span());
                out.push(TokenTree::Group(ng));
                i += 1;
            }
            other => {
                out.push(other.clone());
                i += 1;
            }
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution() {
        let t: TokenStream = "$crate::llm::ask($npc); $( $x.go(); )*".parse().unwrap();
        let bound = HashMap::from([("npc".to_string(), "self.npc".parse().unwrap())]);
        let out = substitute(t, "game", &bound).to_string();
        assert!(out.contains(":: game :: llm :: ask"), "{out}");
        assert!(out.contains("(self . npc)"), "{out}");
        assert!(out.contains("__hotpath_macro_arg . go ()"), "{out}");
        let m: TokenStream = "$npc:expr, $e:expr".parse().unwrap();
        assert_eq!(matcher_vars(&m), Some(vec!["npc".into(), "e".into()]));
        let inner: TokenStream = "@inner $x:expr".parse().unwrap();
        assert!(could_match(&inner, &"@inner 1".parse().unwrap()));
        assert!(!could_match(&inner, &"@outer 1".parse().unwrap()));
        assert!(could_match(&m, &"a, b".parse().unwrap()));
        assert!(could_match(&TokenStream::new(), &TokenStream::new()));
        assert!(!could_match(&TokenStream::new(), &"x".parse().unwrap()));
    }
}
