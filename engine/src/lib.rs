//! `hotpath-engine` — the game loop and its HTTP face.
//!
//! - [`hot`]: the hot path — resolve an action from caches, precomputed actions and rules,
//!   dispatch jobs; never an LLM (checked by `hotpath-lint`, see `hotpath.toml`).
//! - [`write`]: the write path — one writer per game, the group committer, the outbox relay.
//! - [`api`]: the axum handlers, errors, auth, rate limit, SSE, metrics and OpenAPI.
//! - [`compose`]: the composition root — builds the backends of a deployment and is the only
//!   module that touches `hotpath-background` (to run workers in-process and to push jobs).
//!
//! The `hotpath` binary (`src/main.rs`) is a thin clap front over [`compose`].

pub mod api;
pub mod compose;
pub mod hot;
pub mod write;
