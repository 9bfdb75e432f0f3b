//! `hotpath-lint`: proves that no LLM call is reachable from hot-path code.
//!
//! It parses every member of a Cargo workspace with `syn`, resolves names the way rustc
//! would as far as syntax allows (`use` aliases, globs, re-exports, `self`/`super`/`crate`,
//! methods from receiver types, trait objects and generic bounds fanned out to every impl),
//! builds a call graph, and reports each chain from a configured hot-path root to a
//! configured LLM sink. It depends on nothing of the hotpath engine and works on any Rust
//! workspace.
//!
//! Map, lowest first:
//! - [`config`] — `hotpath.toml`.
//! - [`workspace`] — members and crate targets; [`deps`] — renamed dependencies.
//! - [`syntax`] — syn trees lowered to owned skeletons; suppression comments.
//! - [`index`] — the item index and name resolution; [`foreign_impls`] — workspace trait
//!   impls on outside types, blanket impls included.
//! - [`calls`] — fn bodies to call edges; with [`implicit`] (calls rustc inserts: `Drop`,
//!   formatting, `Deref`, operators, conversions, iteration), [`macros`] (workspace
//!   `macro_rules!` expanded at their invocations), [`values`] (closures and fn items kept
//!   as values, callbacks handed to outside code) and [`wrappers`] (std wrappers' own
//!   methods before the wrapped type's).
//! - [`load`] — parallel parsing, module trees, indexing, walking.
//! - [`patterns`] — roots, sinks and allowed fns matched against the index.
//! - [`analysis`] — reachability, chains, suppressions, audit sites.
//! - [`report`], [`baseline`], [`cli`] — what users see and script against.

pub mod analysis;
pub mod baseline;
pub mod calls;
pub mod cli;
pub mod config;
pub mod deps;
pub mod error;
pub mod foreign_impls;
pub mod implicit;
pub mod index;
pub mod load;
pub mod macros;
pub mod patterns;
pub mod report;
pub mod syntax;
pub mod values;
pub mod workspace;
pub mod wrappers;

pub use analysis::{Analysis, Hop, Violation, check};
pub use config::Config;
pub use error::{Error, Result};
