//! The SQL stores: games, players (token hashes), idempotency records, the game event log,
//! `planned_stakeholder_actions` and canon events — on PostgreSQL ([`PostgresStore`]) or SQLite
//! ([`SqliteStore`]), behind one [`Store`] trait with one conformance suite.
//!
//! Both engines run the same SQL except the claim (PostgreSQL uses `FOR UPDATE SKIP LOCKED`;
//! SQLite serializes writers, so one `UPDATE … RETURNING` is atomic) and how a write
//! transaction begins. Migrations live in `migrations/<engine>/` and are embedded at build time.

pub mod batch;
pub mod lane;
mod postgres;
mod sql;
mod sqlite;

use std::collections::BTreeMap;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

pub use self::batch::{BatchItem, Claimed, Finish, Finished, ItemError, ItemOutcome, QueuedJob};
pub use self::postgres::PostgresStore;
pub use self::sqlite::{JobWakeups, SqliteStore};

use crate::events::{GameEvent, LoggedEvent};
use crate::ids::ContextHash;
use crate::ids::{GameId, PlannedActionId, PlayerId, SceneId, StakeholderId};
use crate::model::{CanonEvent, PlannedAction, PlannedStatus};
use crate::scenario::Scenario;
use crate::stream::StreamId;
use crate::time::Millis;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached (connection refused, pool timeout): the action cannot be
    /// recorded and the client should retry.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Another action took this seq first; reload the state and retry.
    #[error("event seq {seq} of game {game} is already taken")]
    SeqTaken { game: GameId, seq: u64 },
    /// A concurrent request with the same idempotency key committed first; replay its answer.
    #[error("idempotency key already recorded")]
    IdempotencyKeyTaken,
    #[error("stored data does not decode: {0}")]
    Decode(String),
    #[error("database error: {0}")]
    Database(String),
}

impl StoreError {
    fn from_sqlx(e: sqlx::Error) -> StoreError {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => StoreError::Unavailable(e.to_string()),
            other => StoreError::Database(other.to_string()),
        }
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// SHA-256 (hex) of a bearer token: what the `players` table stores.
pub fn hash_token(token: &str) -> String {
    crate::hex::hex(&Sha256::digest(token.as_bytes()))
}

#[derive(Debug, Clone, PartialEq)]
pub struct GameRecord {
    pub id: GameId,
    pub scenario: Scenario,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayerRecord {
    pub id: PlayerId,
    pub game_id: GameId,
    pub name: String,
}

/// An `Idempotency-Key` as recorded: per player, with a hash of the request it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub player_id: PlayerId,
    pub key: String,
    pub request_hash: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    pub request_hash: String,
    pub response: serde_json::Value,
}

/// Which ready actions to claim: for each stakeholder present, the best ready, unexpired action
/// made for this context (or a reaction, which is served on the next appearance in the scene),
/// by priority, then age.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimQuery {
    pub game_id: GameId,
    pub scene_id: SceneId,
    pub stakeholders: Vec<StakeholderId>,
    pub context_hash: ContextHash,
    pub now: Millis,
}

/// Committed stream events of one game, for a client resuming from an id the stream no longer
/// holds.
#[derive(Debug, Clone, PartialEq)]
pub struct CommittedEvents {
    pub events: Vec<(StreamId, GameEvent)>,
    /// The newest seq in the game's log (0 for an empty log): an id above it was never given.
    pub last_seq: u64,
}

/// How long an action's idempotency record (its stored answer) is kept: a retry with the same
/// `Idempotency-Key` within a day replays the answer; after that the key is free again.
pub const IDEMPOTENCY_RETAIN_SECS: u64 = 24 * 3600;

/// One model call, as the ledger records it.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmCall {
    pub game_id: Option<GameId>,
    pub kind: crate::jobs::JobKind,
    pub model: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// The provider reported no usage; the counts are estimates.
    pub estimated: bool,
    /// The answer validated and was written.
    pub ok: bool,
    pub at: Millis,
}

/// Model calls of one job kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LlmUsage {
    pub calls: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Calls whose answer was written.
    pub written: u64,
    /// Calls whose token counts are estimates.
    pub estimated: u64,
}

#[async_trait]
pub trait Store: Send + Sync {
    /// Checks the database answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;
    /// Closes the connections; every later call fails with [`StoreError::Unavailable`].
    async fn close(&self);

    async fn create_game(&self, id: GameId, scenario: &Scenario) -> Result<(), StoreError>;
    async fn game(&self, id: GameId) -> Result<Option<GameRecord>, StoreError>;
    /// Adds a player whose bearer token hashes to `token_hash`.
    async fn add_player(
        &self,
        game: GameId,
        name: &str,
        token_hash: &str,
    ) -> Result<PlayerRecord, StoreError>;
    async fn player_by_token_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<PlayerRecord>, StoreError>;

    async fn idempotent_response(
        &self,
        player: PlayerId,
        key: &str,
    ) -> Result<Option<StoredResponse>, StoreError>;

    /// Appends `event` as `seq` (must be the next one): [`StoreError::SeqTaken`] if it is not free.
    async fn append_event(
        &self,
        game: GameId,
        seq: u64,
        event: &LoggedEvent,
    ) -> Result<(), StoreError>;
    /// Appends `event` at whatever seq is next, retrying on races; returns that seq.
    async fn append_event_next(&self, game: GameId, event: &LoggedEvent)
    -> Result<u64, StoreError>;
    /// Appends `event` at the next seq unless the game's log already holds an event with
    /// `dedupe_key`: `Some(seq)` if appended, `None` if it was already there.
    async fn append_event_once(
        &self,
        game: GameId,
        event: &LoggedEvent,
        dedupe_key: &str,
    ) -> Result<Option<u64>, StoreError>;
    /// The log after `after_seq`, in order (`0` for all of it).
    async fn events(
        &self,
        game: GameId,
        after_seq: u64,
    ) -> Result<Vec<(u64, LoggedEvent)>, StoreError>;
    /// Commits a batch in one transaction (see [`batch`]); one outcome per item, in order.
    async fn commit_batch(&self, items: Vec<BatchItem>) -> Vec<ItemOutcome>;
    /// Committed stream events of `game` after `after` (at most `limit`, in id order).
    async fn stream_events_after(
        &self,
        game: GameId,
        after: StreamId,
        limit: u32,
    ) -> Result<CommittedEvents, StoreError>;
    /// Committed stream events of every game created at or after `since`, in (game, id) order:
    /// what a restarted relay may not have published yet. At most `limit`.
    async fn stream_events_since(
        &self,
        since: Millis,
        limit: u32,
    ) -> Result<Vec<(GameId, StreamId, GameEvent)>, StoreError>;
    /// How many actions the log holds strictly between seqs `after` and `before`: each of them
    /// committed stream events, so if the outbox has none there, they were pruned.
    async fn actions_between(
        &self,
        game: GameId,
        after: u64,
        before: u64,
    ) -> Result<u64, StoreError>;
    /// Deletes stream events created before `before`; returns how many.
    async fn delete_stream_events(&self, before: Millis) -> Result<u64, StoreError>;

    /// Releases a job's coalescing guard (see [`crate::jobs::Job::coalesce_key`]) if `job_id`
    /// still holds it; `true` if it did.
    async fn release_job_guard(
        &self,
        game: GameId,
        key: &str,
        job_id: &str,
    ) -> Result<bool, StoreError>;
    /// Guards held now: jobs queued or running that were dispatched by actions.
    async fn job_guards(&self) -> Result<u64, StoreError>;
    /// Deletes idempotency records created before `before`; returns how many.
    async fn delete_idempotency_records(&self, before: Millis) -> Result<u64, StoreError>;
    /// Records one model call in the `llm_calls` ledger.
    async fn record_llm_call(&self, call: &LlmCall) -> Result<(), StoreError>;
    /// Model calls since `since`, per job kind.
    async fn llm_usage(&self, since: Millis) -> Result<BTreeMap<String, LlmUsage>, StoreError>;
    /// Deletes ledger rows older than `before` (with guards past their expiry and the token
    /// spend of days before `before`'s); returns how many ledger rows.
    async fn delete_llm_calls(&self, before: Millis) -> Result<u64, StoreError>;

    /// Reserves `tokens` in every scope of `charges` for `day`, or in none (see
    /// [`crate::spend`]).
    async fn reserve_tokens(
        &self,
        day: i64,
        charges: &[crate::spend::Charge],
        tokens: u64,
    ) -> Result<crate::spend::Reservation, StoreError>;
    /// Returns a reservation of `reserved` tokens in `scopes` and adds `used`.
    async fn settle_tokens(
        &self,
        day: i64,
        scopes: &[String],
        reserved: u64,
        used: u64,
    ) -> Result<(), StoreError>;
    /// The day's spend per scope, largest first, at most `limit` scopes.
    async fn tokens_spent(
        &self,
        day: i64,
        limit: u32,
    ) -> Result<Vec<crate::spend::ScopeSpend>, StoreError>;

    /// Inserts every row whose dedupe key is not taken, a few hundred per statement; returns
    /// how many were inserted.
    async fn insert_planned(&self, rows: &[PlannedAction]) -> Result<u64, StoreError>;
    /// Whether a planned action with this dedupe key exists (whatever its status): lets a job
    /// skip work whose result is already stored.
    async fn planned_exists(&self, dedupe_key: &str) -> Result<bool, StoreError>;
    /// The best ready, unexpired rows made for a claim key (context and action kind), at most
    /// `per_stakeholder` for each of `stakeholders`, each stakeholder's best first: what a
    /// game's writer loads into its reservoir. Index ranges only, whatever the table holds.
    async fn ready_rows(
        &self,
        game: GameId,
        scene: &SceneId,
        context: &ContextHash,
        stakeholders: &[StakeholderId],
        per_stakeholder: u32,
        now: Millis,
    ) -> Result<Vec<PlannedAction>, StoreError>;
    /// Atomically claims (marks consumed) at most one action per stakeholder; one statement.
    async fn claim(&self, query: &ClaimQuery) -> Result<Vec<PlannedAction>, StoreError>;
    /// Ready, unexpired rows per stakeholder for a claim key (see [`crate::model::reaction_key`]).
    async fn ready_counts(
        &self,
        game: GameId,
        scene: &SceneId,
        context: &ContextHash,
        now: Millis,
    ) -> Result<BTreeMap<StakeholderId, u32>, StoreError>;
    async fn planned(&self, id: PlannedActionId) -> Result<Option<PlannedAction>, StoreError>;
    /// Marks a ready action `expired` or `failed`; `true` if it was ready.
    async fn retire_planned(
        &self,
        id: PlannedActionId,
        status: PlannedStatus,
    ) -> Result<bool, StoreError>;
    /// Marks every ready action past its `expires_at` as expired; returns how many.
    async fn expire_planned(&self, now: Millis) -> Result<u64, StoreError>;
    /// Deletes spent (not ready) rows created before `before`; returns how many.
    async fn delete_spent_planned(&self, before: Millis) -> Result<u64, StoreError>;

    /// Records a dialogue reply, once per request: `false` if that request's reply was
    /// already recorded.
    async fn insert_dialogue_reply(
        &self,
        reply: &crate::model::DialogueReply,
    ) -> Result<bool, StoreError>;
    /// The replies of `game` to actions after seq `after`, in seq order.
    async fn dialogue_replies(
        &self,
        game: GameId,
        after: u64,
    ) -> Result<Vec<crate::model::DialogueReply>, StoreError>;

    /// Inserts unless the dedupe key exists; `true` if inserted.
    async fn insert_canon(&self, canon: &CanonEvent) -> Result<bool, StoreError>;
    async fn canon_events(&self, game: GameId) -> Result<Vec<CanonEvent>, StoreError>;
}
