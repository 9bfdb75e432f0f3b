//! `hotpath-cache` — the precompute layer: the contract between the hot path and the slow path.
//!
//! The slow path (LLM jobs in `hotpath-background`) writes here; the hot path (`hotpath-engine`)
//! reads here and never waits for anything else. This crate holds:
//!
//! - the domain model: [`ids`], [`scenario`] (authored TOML), [`state`] (the game-state snapshot
//!   and its context hash), [`model`] (actions, planned stakeholder actions, narration, social
//!   bundles, canon), [`events`] (the event log and the events streamed to clients) and [`jobs`]
//!   (one message per background job kind);
//! - [`cache`]: typed keys and values with TTL, one-round-trip multi-get and the dispatch guard,
//!   on Redis or in-process;
//! - [`stream`]: the per-game event stream (Redis Streams or in-process) with replay and one
//!   reader per game per process;
//! - [`store`]: the SQL stores (games, players, idempotency, event log, planned stakeholder
//!   actions, canon) on PostgreSQL or SQLite;
//! - [`limits`]: rate limits and concurrency slots shared by every process (Redis) or held in
//!   one (in-process);
//! - [`spend`]: token spend against daily budgets, reserved before a model call and settled
//!   after, in the store (shared by every process) or in-process;
//! - [`guard`]: the runtime guard that makes an LLM call inside a hot-path scope fail.
//!
//! Invariant: this crate knows nothing of HTTP, job runners or LLMs; every backend is a trait
//! implementation, and both deployments run the same conformance suites.

pub mod cache;
pub mod events;
pub mod guard;
pub mod hex;
pub mod ids;
pub mod jobs;
pub mod limits;
pub mod model;
pub mod scenario;
pub mod spend;
pub mod state;
pub mod store;
pub mod stream;
pub mod time;

pub use ids::{
    ActionId, ConflictId, GameId, PhaseId, PlannedActionId, PlayerId, RequestId, SceneId,
    StakeholderId,
};
pub use scenario::Scenario;
pub use state::GameState;
