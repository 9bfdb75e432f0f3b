//! `hotpath-background` — the slow path of hotpath: apalis workers that do all LLM work and
//! write the results where the hot path will find them (the cache, the planned-actions table,
//! canon, the game's event stream).
//!
//! Map: [`queue`] (the job storage the hot path pushes to: SQLite or PostgreSQL), [`worker`]
//! (`worker::run`: apalis workers consuming it, orphan recovery, the optional cron), [`jobs`]
//! (one handler per job kind, retries, events, dead letters), [`prompts`] (minijinja templates
//! from `background/prompts/`), [`output`] (model output parsed and validated into
//! `hotpath-cache` types), [`llm`] (providers and their wrappers; the only place a model is
//! called). `docs/SLOW_PATH.md` describes the whole.
//!
//! Invariant: nothing in this crate may be reached from the hot path. The engine's hot-path code
//! only pushes [`hotpath_cache::jobs::Job`] messages through [`hotpath_cache::jobs::JobQueue`];
//! `hotpath-lint` proves no call chain from a hot-path root reaches [`llm`] (the lint's sink),
//! and every provider call first runs [`hotpath_cache::guard::assert_off_hot_path`].

pub mod jobs;
pub mod llm;
pub mod output;
pub mod prompts;
pub mod queue;
pub mod worker;

pub use queue::{JobRecord, JobStorage};
