//! The write path: how an item becomes durable, independent of what the game is.
//!
//! - [`committer`]: takes whatever every game's writer ([`crate::hot::writer`]) has pending and
//!   commits it in one transaction ([`hotpath_cache::store::Store::commit_batch`]): events,
//!   claims, idempotency records, the outbox of stream events and the jobs. No timer: the next
//!   batch is what queued while the last one committed.
//! - [`relay`]: publishes committed stream events in commit order per game, and on start what
//!   was committed but perhaps not published.
//! - [`Fate`]: whether an item may still be refused, settled once between its client's
//!   deadline and the start of its commit (a 503 means "not applied").
//!
//! The `UNIQUE (game_id, seq)` of the log is the fence between processes: a writer whose item
//! lost its seq to another process reloads the game and applies its pending actions again.
//!
//! This is hot-path code (`hotpath.toml` lists it as a root): it reaches the store and the
//! stream, never an LLM. It imports nothing from [`crate::hot`].

pub mod committer;
mod fate;
pub mod relay;

pub(crate) use fate::Fate;
