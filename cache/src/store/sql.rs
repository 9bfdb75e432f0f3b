//! The SQL both engines share. `impl_store!` writes the one [`Store`](super::Store)
//! implementation for a concrete pool type (typed sqlx, no `Any` driver); each engine supplies
//! only its claim statement and how it begins a write transaction.
//!
//! Placeholders are `$N` on both engines (sqlx-sqlite binds `$N` by number).

use crate::ids::ContextHash;
use crate::ids::{GameId, PlannedActionId, SceneId, StakeholderId};
use crate::model::{CanonEvent, PlannedAction, PlannedKind, PlannedStatus, Provenance};

use super::StoreError;

#[derive(sqlx::FromRow)]
pub(super) struct PlannedRow {
    id: String,
    game_id: String,
    scene_id: String,
    stakeholder_id: String,
    kind: String,
    payload: String,
    priority: i32,
    status: String,
    expires_at: i64,
    dedupe_key: String,
    reacts_to: Option<i64>,
    context_hash: String,
    world_version: i64,
    produced_at: i64,
    model: String,
    prompt_version: String,
    created_at: i64,
}

/// The provenance columns every slow-path row carries.
fn provenance(
    context_hash: String,
    world_version: i64,
    produced_at: i64,
    model: String,
    prompt_version: String,
) -> Provenance {
    Provenance {
        context_hash: ContextHash(context_hash),
        world_version: world_version as u64,
        produced_at,
        model,
        prompt_version,
    }
}

fn bad(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Decode(format!("{what}: {e}"))
}

impl TryFrom<PlannedRow> for PlannedAction {
    type Error = StoreError;
    fn try_from(r: PlannedRow) -> Result<Self, StoreError> {
        Ok(PlannedAction {
            id: PlannedActionId::from_uuid(r.id.parse().map_err(|e| bad("planned id", e))?),
            game_id: r.game_id.parse::<GameId>().map_err(|e| bad("game id", e))?,
            scene_id: SceneId::new(r.scene_id).map_err(|e| bad("scene id", e))?,
            stakeholder_id: StakeholderId::new(r.stakeholder_id)
                .map_err(|e| bad("stakeholder id", e))?,
            kind: PlannedKind::parse(&r.kind).ok_or_else(|| bad("kind", &r.kind))?,
            payload: serde_json::from_str(&r.payload).map_err(|e| bad("payload", e))?,
            priority: r.priority,
            status: PlannedStatus::parse(&r.status).ok_or_else(|| bad("status", &r.status))?,
            expires_at: r.expires_at,
            dedupe_key: r.dedupe_key,
            reacts_to: r.reacts_to.map(|s| s as u64),
            provenance: provenance(
                r.context_hash,
                r.world_version,
                r.produced_at,
                r.model,
                r.prompt_version,
            ),
            created_at: r.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct CanonRow {
    id: String,
    game_id: String,
    conflict_id: String,
    title: String,
    summary: String,
    dedupe_key: String,
    context_hash: String,
    world_version: i64,
    produced_at: i64,
    model: String,
    prompt_version: String,
    created_at: i64,
}

impl TryFrom<CanonRow> for CanonEvent {
    type Error = StoreError;
    fn try_from(r: CanonRow) -> Result<Self, StoreError> {
        Ok(CanonEvent {
            id: r.id.parse().map_err(|e| bad("canon id", e))?,
            game_id: r.game_id.parse().map_err(|e| bad("game id", e))?,
            conflict_id: r.conflict_id.parse().map_err(|e| bad("conflict id", e))?,
            title: r.title,
            summary: r.summary,
            dedupe_key: r.dedupe_key,
            provenance: provenance(
                r.context_hash,
                r.world_version,
                r.produced_at,
                r.model,
                r.prompt_version,
            ),
            created_at: r.created_at,
        })
    }
}

pub(super) fn rows_to_planned(rows: Vec<PlannedRow>) -> Result<Vec<PlannedAction>, StoreError> {
    rows.into_iter().map(PlannedAction::try_from).collect()
}

pub(super) fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Decode(e.to_string()))
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(
    what: &str,
    s: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| bad(what, e))
}

/// The head of a planned-rows insert; the rows follow as `VALUES` (sqlx's `QueryBuilder`).
pub(super) const INSERT_PLANNED_INTO: &str = "
INSERT INTO planned_stakeholder_actions
    (id, game_id, scene_id, stakeholder_id, kind, payload, priority, status, expires_at, dedupe_key,
     reacts_to, context_hash, world_version, produced_at, model, prompt_version, created_at) ";

/// Planned rows per insert statement: 17 binds each, well under both engines' bind limits.
pub(super) const PLANNED_INSERT_CHUNK: usize = 200;

pub(super) const APPEND_EVENT: &str =
    "INSERT INTO game_events (game_id, seq, kind, payload, created_at) VALUES ($1, $2, $3, $4, $5)";

pub(super) const APPEND_EVENT_NEXT: &str = "
INSERT INTO game_events (game_id, seq, kind, payload, created_at)
VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM game_events WHERE game_id = $1), $2, $3, $4)
RETURNING seq";

pub(super) const APPEND_EVENT_ONCE: &str = "
INSERT INTO game_events (game_id, seq, kind, payload, created_at, dedupe_key)
VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM game_events WHERE game_id = $1), $2, $3, $4, $5)
ON CONFLICT (game_id, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING
RETURNING seq";

/// Served by `planned_ready` (game, scene, context first): bounded by this context's ready
/// rows, whatever other games and contexts hold.
pub(super) const READY_COUNTS: &str = "
SELECT stakeholder_id, COUNT(*) FROM planned_stakeholder_actions
WHERE game_id = $1 AND scene_id = $2 AND context_hash = $3
  AND status = 'ready' AND expires_at > $4
GROUP BY stakeholder_id";

/// Coalescing guards held now (`$1`: now).
pub(super) const COUNT_GUARDS: &str = "SELECT COUNT(*) FROM job_guards WHERE expires_at > $1";

/// Per job kind: model calls, tokens, and calls whose result was written.
pub(super) const LLM_USAGE: &str = "
SELECT kind, COUNT(*), CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT),
       CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT),
       CAST(COALESCE(SUM(CASE WHEN ok THEN 1 ELSE 0 END), 0) AS BIGINT),
       CAST(COALESCE(SUM(CASE WHEN estimated THEN 1 ELSE 0 END), 0) AS BIGINT)
FROM llm_calls WHERE created_at >= $1 GROUP BY kind";

pub(super) const INSERT_CANON: &str = "
INSERT INTO canon_events
    (id, game_id, conflict_id, title, summary, dedupe_key, context_hash, world_version, produced_at,
     model, prompt_version, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (dedupe_key) DO NOTHING";

/// Implements `Store` for `$store`, which has `pool`, an inherent `claim_one` (each engine locks
/// rows its own way) and implements [`BatchSql`](super::batch::BatchSql); `$ready_counts` is its
/// form of [`READY_COUNTS`].
/// Reserves in one scope: inserts the day's row, or adds to it while `used + reserved` stays
/// within the hard limit (`$4`). No row back: refused.
pub(super) const RESERVE_TOKENS: &str = "INSERT INTO llm_spend (scope, day, used, reserved) \
VALUES ($1, $2, 0, $3) \
ON CONFLICT (scope, day) DO UPDATE SET reserved = llm_spend.reserved + excluded.reserved \
WHERE llm_spend.used + llm_spend.reserved + excluded.reserved <= $4 \
RETURNING used, reserved";

/// Rows a maintenance statement touches per turn (see [`in_chunks!`]).
pub(super) const MAINTENANCE_CHUNK: i64 = 500;

/// Runs a maintenance statement (its last placeholder is the chunk's `LIMIT`) until it touches
/// fewer than [`MAINTENANCE_CHUNK`] rows, each chunk in its own background turn: deleting a
/// day of rows in one statement would hold SQLite's writer for as long as that takes, and
/// every player's commit behind it. Returns the rows touched.
macro_rules! in_chunks {
    ($store:expr, $query:expr) => {
        async {
            let mut total = 0u64;
            loop {
                let _turn = <Self as $crate::store::batch::BatchSql>::turn(
                    $store,
                    $crate::store::lane::Turn::Background,
                )
                .await;
                let done = $query
                    .bind($crate::store::sql::MAINTENANCE_CHUNK)
                    .execute(&$store.pool)
                    .await
                    .map_err($crate::store::StoreError::from_sqlx)?;
                total += done.rows_affected();
                if done.rows_affected() < $crate::store::sql::MAINTENANCE_CHUNK as u64 {
                    break Ok::<u64, $crate::store::StoreError>(total);
                }
            }
        }
        .await
    };
}

pub(super) use in_chunks;

macro_rules! impl_store {
    ($store:ty, $ready_counts:expr) => {
        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            async fn ping(&self) -> Result<(), $crate::store::StoreError> {
                sqlx::query("SELECT 1")
                    .execute(&self.pool)
                    .await
                    .map(|_| ())
                    .map_err($crate::store::StoreError::from_sqlx)
            }

            async fn close(&self) {
                self.pool.close().await;
            }

            async fn create_game(
                &self,
                id: $crate::ids::GameId,
                scenario: &$crate::scenario::Scenario,
            ) -> Result<(), $crate::store::StoreError> {
                let _turn = <Self as $crate::store::batch::BatchSql>::turn(self, $crate::store::lane::Turn::Player).await;
                sqlx::query("INSERT INTO games (id, scenario_name, scenario, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(id.to_string())
                    .bind(&scenario.name)
                    .bind($crate::store::sql::to_json(scenario)?)
                    .bind($crate::time::now_ms())
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::from_sqlx)?;
                Ok(())
            }

            async fn game(
                &self,
                id: $crate::ids::GameId,
            ) -> Result<Option<$crate::store::GameRecord>, $crate::store::StoreError> {
                let row: Option<(String, i64)> = sqlx::query_as("SELECT scenario, created_at FROM games WHERE id = $1")
                    .bind(id.to_string())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::from_sqlx)?;
                row.map(|(scenario, created_at)| {
                    Ok($crate::store::GameRecord {
                        id,
                        scenario: $crate::store::sql::from_json("scenario", &scenario)?,
                        created_at,
                    })
                })
                .transpose()
            }

            async fn add_player(
                &self,
                game: $crate::ids::GameId,
                name: &str,
                token_hash: &str,
            ) -> Result<$crate::store::PlayerRecord, $crate::store::StoreError> {
                let _turn = <Self as $crate::store::batch::BatchSql>::turn(self, $crate::store::lane::Turn::Player).await;
                let id = $crate::ids::PlayerId::generate();
                sqlx::query("INSERT INTO players (id, game_id, name, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)")
                    .bind(id.to_string())
                    .bind(game.to_string())
                    .bind(name)
                    .bind(token_hash)
                    .bind($crate::time::now_ms())
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::from_sqlx)?;
                Ok($crate::store::PlayerRecord { id, game_id: game, name: name.to_owned() })
            }

            async fn player_by_token_hash(
                &self,
                token_hash: &str,
            ) -> Result<Option<$crate::store::PlayerRecord>, $crate::store::StoreError> {
                let row: Option<(String, String, String)> =
                    sqlx::query_as("SELECT id, game_id, name FROM players WHERE token_hash = $1")
                        .bind(token_hash)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err($crate::store::StoreError::from_sqlx)?;
                row.map(|(id, game, name)| {
                    Ok($crate::store::PlayerRecord {
                        id: id.parse().map_err(|e| $crate::store::StoreError::Decode(format!("player id: {e}")))?,
                        game_id: game.parse().map_err(|e| $crate::store::StoreError::Decode(format!("game id: {e}")))?,
                        name,
                    })
                })
                .transpose()
            }

            async fn idempotent_response(
                &self,
                player: $crate::ids::PlayerId,
                key: &str,
            ) -> Result<Option<$crate::store::StoredResponse>, $crate::store::StoreError> {
                let row: Option<(String, String)> =
                    sqlx::query_as("SELECT request_hash, response FROM idempotency_records WHERE player_id = $1 AND key = $2")
                        .bind(player.to_string())
                        .bind(key)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err($crate::store::StoreError::from_sqlx)?;
                row.map(|(request_hash, response)| {
                    Ok($crate::store::StoredResponse {
                        request_hash,
                        response: $crate::store::sql::from_json("stored response", &response)?,
                    })
                })
                .transpose()
            }

            async fn append_event(
                &self,
                game: $crate::ids::GameId,
                seq: u64,
                event: &$crate::events::LoggedEvent,
            ) -> Result<(), $crate::store::StoreError> {
                let _turn = <Self as $crate::store::batch::BatchSql>::turn(self, $crate::store::lane::Turn::Player).await;
                sqlx::query($crate::store::sql::APPEND_EVENT)
                    .bind(game.to_string())
                    .bind(seq as i64)
                    .bind(event.kind())
                    .bind($crate::store::sql::to_json(event)?)
                    .bind($crate::time::now_ms())
                    .execute(&self.pool)
                    .await
                    .map_err(|e| {
                        if $crate::store::is_unique_violation(&e) {
                            $crate::store::StoreError::SeqTaken { game, seq }
                        } else {
                            $crate::store::StoreError::from_sqlx(e)
                        }
                    })?;
                Ok(())
            }

            async fn append_event_next(
                &self,
                game: $crate::ids::GameId,
                event: &$crate::events::LoggedEvent,
            ) -> Result<u64, $crate::store::StoreError> {
                let payload = $crate::store::sql::to_json(event)?;
                let mut attempt = 0;
                loop {
                    let _turn = <Self as $crate::store::batch::BatchSql>::turn(self, $crate::store::lane::Turn::Background).await;
                    let result: Result<i64, sqlx::Error> = sqlx::query_scalar($crate::store::sql::APPEND_EVENT_NEXT)
                        .bind(game.to_string())
                        .bind(event.kind())
                        .bind(&payload)
                        .bind($crate::time::now_ms())
                        .fetch_one(&self.pool)
                        .await;
                    match result {
                        Ok(seq) => return Ok(seq as u64),
                        // Another writer took the same next seq: read the max again.
                        Err(e) if $crate::store::is_unique_violation(&e) && attempt < 20 => attempt += 1,
                        Err(e) => return Err($crate::store::StoreError::from_sqlx(e)),
                    }
                }
            }

            async fn append_event_once(
                &self,
                game: $crate::ids::GameId,
                event: &$crate::events::LoggedEvent,
                dedupe_key: &str,
            ) -> Result<Option<u64>, $crate::store::StoreError> {
                let payload = $crate::store::sql::to_json(event)?;
                let mut attempt = 0;
                loop {
                    let _turn = <Self as $crate::store::batch::BatchSql>::turn(self, $crate::store::lane::Turn::Background).await;
                    let result: Result<Option<i64>, sqlx::Error> =
                        sqlx::query_scalar($crate::store::sql::APPEND_EVENT_ONCE)
                            .bind(game.to_string())
                            .bind(event.kind())
                            .bind(&payload)
                            .bind($crate::time::now_ms())
                            .bind(dedupe_key)
                            .fetch_optional(&self.pool)
                            .await;
                    match result {
                        Ok(seq) => return Ok(seq.map(|s| s as u64)),
                        // The next seq was taken by another writer (the dedupe key conflict is
                        // handled by DO NOTHING): read the max again.
                        Err(e) if $crate::store::is_unique_violation(&e) && attempt < 20 => attempt += 1,
                        Err(e) => return Err($crate::store::StoreError::from_sqlx(e)),
                    }
                }
            }

            async fn events(
                &self,
                game: $crate::ids::GameId,
                after_seq: u64,
            ) -> Result<Vec<(u64, $crate::events::LoggedEvent)>, $crate::store::StoreError> {
                let rows: Vec<(i64, String)> =
                    sqlx::query_as("SELECT seq, payload FROM game_events WHERE game_id = $1 AND seq > $2 ORDER BY seq")
                        .bind(game.to_string())
                        .bind(after_seq as i64)
                        .fetch_all(&self.pool)
                        .await
                        .map_err($crate::store::StoreError::from_sqlx)?;
                rows.into_iter()
                    .map(|(seq, payload)| Ok((seq as u64, $crate::store::sql::from_json("logged event", &payload)?)))
                    .collect()
            }

            async fn commit_batch(
                &self,
                items: Vec<$crate::store::BatchItem>,
            ) -> Vec<$crate::store::ItemOutcome> {
                $crate::store::batch::commit(self, items).await
            }

            async fn stream_events_after(
                &self,
                game: $crate::ids::GameId,
                after: $crate::stream::StreamId,
                limit: u32,
            ) -> Result<$crate::store::CommittedEvents, $crate::store::StoreError> {
                let rows: Vec<(i64, i32, String)> = sqlx::query_as(
                    "SELECT seq, idx, payload FROM stream_events \
                     WHERE game_id = $1 AND (seq > $2 OR (seq = $2 AND idx > $3)) ORDER BY seq, idx LIMIT $4",
                )
                .bind(game.to_string())
                .bind(after.ms as i64)
                .bind(after.seq.min(i32::MAX as u64) as i32)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err($crate::store::StoreError::from_sqlx)?;
                let last: Option<i64> =
                    sqlx::query_scalar("SELECT MAX(seq) FROM game_events WHERE game_id = $1")
                        .bind(game.to_string())
                        .fetch_one(&self.pool)
                        .await
                        .map_err($crate::store::StoreError::from_sqlx)?;
                let events = rows
                    .into_iter()
                    .map(|(seq, idx, payload)| {
                        let id = $crate::stream::StreamId { ms: seq as u64, seq: idx as u64 };
                        Ok((id, $crate::store::sql::from_json("stream event", &payload)?))
                    })
                    .collect::<Result<Vec<_>, $crate::store::StoreError>>()?;
                Ok($crate::store::CommittedEvents {
                    events,
                    last_seq: last.unwrap_or(0).max(0) as u64,
                })
            }

            async fn stream_events_since(
                &self,
                since: $crate::time::Millis,
                limit: u32,
            ) -> Result<
                Vec<($crate::ids::GameId, $crate::stream::StreamId, $crate::events::GameEvent)>,
                $crate::store::StoreError,
            > {
                let rows: Vec<(String, i64, i32, String)> = sqlx::query_as(
                    "SELECT game_id, seq, idx, payload FROM stream_events WHERE created_at >= $1 \
                     ORDER BY game_id, seq, idx LIMIT $2",
                )
                .bind(since)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err($crate::store::StoreError::from_sqlx)?;
                rows.into_iter()
                    .map(|(game, seq, idx, payload)| {
                        let game = game
                            .parse::<$crate::ids::GameId>()
                            .map_err(|e| $crate::store::StoreError::Decode(format!("game id: {e}")))?;
                        let id = $crate::stream::StreamId { ms: seq as u64, seq: idx as u64 };
                        Ok((game, id, $crate::store::sql::from_json("stream event", &payload)?))
                    })
                    .collect()
            }

            async fn actions_between(
                &self,
                game: $crate::ids::GameId,
                after: u64,
                before: u64,
            ) -> Result<u64, $crate::store::StoreError> {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM game_events \
                     WHERE game_id = $1 AND seq > $2 AND seq < $3 AND kind = 'action_applied'",
                )
                .bind(game.to_string())
                .bind(after as i64)
                .bind(before.min(i64::MAX as u64) as i64)
                .fetch_one(&self.pool)
                .await
                .map_err($crate::store::StoreError::from_sqlx)?;
                Ok(n.max(0) as u64)
            }

            async fn delete_stream_events(
                &self,
                before: $crate::time::Millis,
            ) -> Result<u64, $crate::store::StoreError> {
                $crate::store::sql::in_chunks!(self, sqlx::query(
                    "DELETE FROM stream_events WHERE (game_id, seq, idx) IN \
                     (SELECT game_id, seq, idx FROM stream_events WHERE created_at < $1 LIMIT $2)",
                ).bind(before))
            }

            async fn release_job_guard(
                &self,
                game: $crate::ids::GameId,
                key: &str,
                job_id: &str,
            ) -> Result<bool, $crate::store::StoreError> {
                let _turn = <Self as $crate::store::batch::BatchSql>::turn(self, $crate::store::lane::Turn::Background).await;
                let done = sqlx::query("DELETE FROM job_guards WHERE game_id = $1 AND key = $2 AND job_id = $3")
                    .bind(game.to_string())
                    .bind(key)
                    .bind(job_id)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::from_sqlx)?;
                Ok(done.rows_affected() == 1)
            }

            async fn job_guards(&self) -> Result<u64, $crate::store::StoreError> {
                let n: i64 = sqlx::query_scalar($crate::store::sql::COUNT_GUARDS)
                    .bind($crate::time::now_ms())
                    .fetch_one(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::from_sqlx)?;
                Ok(n.max(0) as u64)
            }

            async fn delete_idempotency_records(
                &self,
                before: $crate::time::Millis,
            ) -> Result<u64, $crate::store::StoreError> {
                $crate::store::sql::in_chunks!(self, sqlx::query(
                    "DELETE FROM idempotency_records WHERE (player_id, key) IN \
                     (SELECT player_id, key FROM idempotency_records WHERE created_at < $1 LIMIT $2)",
                ).bind(before))
            }

            async fn record_llm_call(
                &self,
                call: &$crate::store::LlmCall,
            ) -> Result<(), $crate::store::StoreError> {
                let _turn = <Self as $crate::store::batch::BatchSql>::turn(self, $crate::store::lane::Turn::Background).await;
                sqlx::query(
                    "INSERT INTO llm_calls (game_id, kind, model, prompt_tokens, completion_tokens, estimated, ok, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(call.game_id.map(|g| g.to_string()))
                .bind(call.kind.as_str())
                .bind(&call.model)
                .bind(call.prompt_tokens as i64)
                .bind(call.completion_tokens as i64)
                .bind(call.estimated)
                .bind(call.ok)
                .bind(call.at)
                .execute(&self.pool)
                .await
                .map_err($crate::store::StoreError::from_sqlx)?;
                Ok(())
            }

            async fn llm_usage(
                &self,
                since: $crate::time::Millis,
            ) -> Result<std::collections::BTreeMap<String, $crate::store::LlmUsage>, $crate::store::StoreError> {
                let rows: Vec<(String, i64, i64, i64, i64, i64)> =
                    sqlx::query_as($crate::store::sql::LLM_USAGE)
                        .bind(since)
                        .fetch_all(&self.pool)
                        .await
                        .map_err($crate::store::StoreError::from_sqlx)?;
                Ok(rows
                    .into_iter()
                    .map(|(kind, calls, prompt, completion, written, estimated)| {
                        (kind, $crate::store::LlmUsage {
                            calls: calls as u64,
                            prompt_tokens: prompt as u64,
                            completion_tokens: completion as u64,
                            written: written as u64,
                            estimated: estimated as u64,
                        })
                    })
                    .collect())
            }

            async fn delete_llm_calls(
                &self,
                before: $crate::time::Millis,
            ) -> Result<u64, $crate::store::StoreError> {
                let deleted = $crate::store::sql::in_chunks!(self, sqlx::query(
                    "DELETE FROM llm_calls WHERE id IN \
                     (SELECT id FROM llm_calls WHERE created_at < $1 LIMIT $2)",
                ).bind(before))?;
                let _turn = <Self as $crate::store::batch::BatchSql>::turn(self, $crate::store::lane::Turn::Background).await;
                sqlx::query("DELETE FROM llm_spend WHERE day < $1")
                    .bind($crate::spend::day_of(before))
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::from_sqlx)?;
                sqlx::query("DELETE FROM job_guards WHERE expires_at < $1")
                    .bind($crate::time::now_ms())
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::from_sqlx)?;
                Ok(deleted)
            }

            async fn reserve_tokens(
                &self,
                day: i64,
                charges: &[$crate::spend::Charge],
                tokens: u64,
            ) -> Result<$crate::spend::Reservation, $crate::store::StoreError> {
                use $crate::store::batch::BatchSql;
                if let Some(c) = charges.iter().find(|c| tokens > c.budget.hard) {
                    return Ok($crate::spend::Reservation::Refused {
                        scope: c.scope.clone(),
                        taken: 0,
                        hard: c.budget.hard,
                    });
                }
                let err = $crate::store::StoreError::from_sqlx;
                // One transaction: every scope reserves, or (dropped, rolled back) none does.
                let _turn = <Self as $crate::store::batch::BatchSql>::turn(self, $crate::store::lane::Turn::Background).await;
                let mut tx = BatchSql::begin(self).await.map_err(err)?;
                let mut cheap = false;
                for c in charges {
                    let row: Option<(i64, i64)> = sqlx::query_as($crate::store::sql::RESERVE_TOKENS)
                        .bind(&c.scope)
                        .bind(day)
                        .bind(tokens as i64)
                        .bind(c.budget.hard as i64)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(err)?;
                    match row {
                        Some((used, reserved)) => {
                            let before = (used + reserved).max(0) as u64 - tokens;
                            cheap |= before >= c.budget.soft;
                        }
                        None => {
                            let taken: i64 = sqlx::query_scalar(
                                "SELECT used + reserved FROM llm_spend WHERE scope = $1 AND day = $2",
                            )
                            .bind(&c.scope)
                            .bind(day)
                            .fetch_one(&mut *tx)
                            .await
                            .map_err(err)?;
                            return Ok($crate::spend::Reservation::Refused {
                                scope: c.scope.clone(),
                                taken: taken.max(0) as u64,
                                hard: c.budget.hard,
                            });
                        }
                    }
                }
                <Self as BatchSql>::commit(tx).await.map_err(err)?;
                Ok($crate::spend::Reservation::Granted { cheap })
            }

            async fn settle_tokens(
                &self,
                day: i64,
                scopes: &[String],
                reserved: u64,
                used: u64,
            ) -> Result<(), $crate::store::StoreError> {
                let _turn = <Self as $crate::store::batch::BatchSql>::turn(self, $crate::store::lane::Turn::Background).await;
                for scope in scopes {
                    sqlx::query(
                        "UPDATE llm_spend SET used = used + $3, \
                         reserved = CASE WHEN reserved > $4 THEN reserved - $4 ELSE 0 END \
                         WHERE scope = $1 AND day = $2",
                    )
                    .bind(scope)
                    .bind(day)
                    .bind(used as i64)
                    .bind(reserved as i64)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::from_sqlx)?;
                }
                Ok(())
            }

            async fn tokens_spent(
                &self,
                day: i64,
                limit: u32,
            ) -> Result<Vec<$crate::spend::ScopeSpend>, $crate::store::StoreError> {
                let rows: Vec<(String, i64, i64)> = sqlx::query_as(
                    "SELECT scope, used, reserved FROM llm_spend WHERE day = $1 \
                     ORDER BY used DESC, scope LIMIT $2",
                )
                .bind(day)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err($crate::store::StoreError::from_sqlx)?;
                Ok(rows
                    .into_iter()
                    .map(|(scope, used, reserved)| $crate::spend::ScopeSpend {
                        scope,
                        used: used.max(0) as u64,
                        reserved: reserved.max(0) as u64,
                    })
                    .collect())
            }

            async fn insert_planned(
                &self,
                rows: &[$crate::model::PlannedAction],
            ) -> Result<u64, $crate::store::StoreError> {
                let mut inserted = 0;
                // One statement per chunk, not per row: a scene preparation writes dozens, and
                // on SQLite each statement is a turn at the one writer.
                for chunk in rows.chunks($crate::store::sql::PLANNED_INSERT_CHUNK) {
                    let mut payloads = Vec::with_capacity(chunk.len());
                    for a in chunk {
                        payloads.push($crate::store::sql::to_json(&a.payload)?);
                    }
                    let mut insert = sqlx::QueryBuilder::new($crate::store::sql::INSERT_PLANNED_INTO);
                    insert.push_values(chunk.iter().zip(payloads), |mut row, (a, payload)| {
                        row.push_bind(a.id.to_string())
                            .push_bind(a.game_id.to_string())
                            .push_bind(a.scene_id.as_str().to_owned())
                            .push_bind(a.stakeholder_id.as_str().to_owned())
                            .push_bind(a.kind.as_str())
                            .push_bind(payload)
                            .push_bind(a.priority)
                            .push_bind(a.status.as_str())
                            .push_bind(a.expires_at)
                            .push_bind(a.dedupe_key.clone())
                            .push_bind(a.reacts_to.map(|s| s as i64))
                            .push_bind(a.provenance.context_hash.0.clone())
                            .push_bind(a.provenance.world_version as i64)
                            .push_bind(a.provenance.produced_at)
                            .push_bind(a.provenance.model.clone())
                            .push_bind(a.provenance.prompt_version.clone())
                            .push_bind(a.created_at);
                    });
                    insert.push(" ON CONFLICT (dedupe_key) DO NOTHING");
                    let _turn = <Self as $crate::store::batch::BatchSql>::turn(self, $crate::store::lane::Turn::Background).await;
                    let done = insert
                        .build()
                        .execute(&self.pool)
                        .await
                        .map_err($crate::store::StoreError::from_sqlx)?;
                    inserted += done.rows_affected();
                }
                Ok(inserted)
            }

            async fn planned_exists(&self, dedupe_key: &str) -> Result<bool, $crate::store::StoreError> {
                let found: Option<i32> =
                    sqlx::query_scalar("SELECT 1 FROM planned_stakeholder_actions WHERE dedupe_key = $1")
                        .bind(dedupe_key)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err($crate::store::StoreError::from_sqlx)?;
                Ok(found.is_some())
            }

            async fn ready_rows(
                &self,
                game: $crate::ids::GameId,
                scene: &$crate::ids::SceneId,
                context: &$crate::ids::ContextHash,
                stakeholders: &[$crate::ids::StakeholderId],
                per_stakeholder: u32,
                now: $crate::time::Millis,
            ) -> Result<Vec<$crate::model::PlannedAction>, $crate::store::StoreError> {
                self.load_ready(game, scene, context, stakeholders, per_stakeholder, now).await
            }

            async fn claim(
                &self,
                q: &$crate::store::ClaimQuery,
            ) -> Result<Vec<$crate::model::PlannedAction>, $crate::store::StoreError> {
                let _turn = <Self as $crate::store::batch::BatchSql>::turn(self, $crate::store::lane::Turn::Player).await;
                self.claim_one(q).await
            }

            async fn ready_counts(
                &self,
                game: $crate::ids::GameId,
                scene: &$crate::ids::SceneId,
                context: &$crate::state::ContextHash,
                now: $crate::time::Millis,
            ) -> Result<std::collections::BTreeMap<$crate::ids::StakeholderId, u32>, $crate::store::StoreError> {
                let rows: Vec<(String, i64)> = sqlx::query_as($ready_counts)
                    .bind(game.to_string())
                    .bind(scene.as_str())
                    .bind(&context.0)
                    .bind(now)
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::from_sqlx)?;
                rows.into_iter()
                    .map(|(s, n)| {
                        let id = $crate::ids::StakeholderId::new(s)
                            .map_err(|e| $crate::store::StoreError::Decode(e.to_string()))?;
                        Ok((id, n as u32))
                    })
                    .collect()
            }

            async fn planned(
                &self,
                id: $crate::ids::PlannedActionId,
            ) -> Result<Option<$crate::model::PlannedAction>, $crate::store::StoreError> {
                let row: Option<$crate::store::sql::PlannedRow> =
                    sqlx::query_as("SELECT * FROM planned_stakeholder_actions WHERE id = $1")
                        .bind(id.to_string())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err($crate::store::StoreError::from_sqlx)?;
                row.map($crate::model::PlannedAction::try_from).transpose()
            }

            async fn retire_planned(
                &self,
                id: $crate::ids::PlannedActionId,
                status: $crate::model::PlannedStatus,
            ) -> Result<bool, $crate::store::StoreError> {
                let _turn = <Self as $crate::store::batch::BatchSql>::turn(self, $crate::store::lane::Turn::Background).await;
                let done = sqlx::query("UPDATE planned_stakeholder_actions SET status = $2 WHERE id = $1 AND status = 'ready'")
                    .bind(id.to_string())
                    .bind(status.as_str())
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::from_sqlx)?;
                Ok(done.rows_affected() == 1)
            }

            async fn expire_planned(&self, now: $crate::time::Millis) -> Result<u64, $crate::store::StoreError> {
                $crate::store::sql::in_chunks!(self, sqlx::query(
                    "UPDATE planned_stakeholder_actions SET status = 'expired' WHERE id IN \
                     (SELECT id FROM planned_stakeholder_actions \
                      WHERE status = 'ready' AND expires_at <= $1 LIMIT $2)",
                ).bind(now))
            }

            async fn delete_spent_planned(&self, before: $crate::time::Millis) -> Result<u64, $crate::store::StoreError> {
                $crate::store::sql::in_chunks!(self, sqlx::query(
                    "DELETE FROM planned_stakeholder_actions WHERE id IN \
                     (SELECT id FROM planned_stakeholder_actions \
                      WHERE status <> 'ready' AND created_at < $1 LIMIT $2)",
                ).bind(before))
            }

            async fn insert_canon(&self, c: &$crate::model::CanonEvent) -> Result<bool, $crate::store::StoreError> {
                let _turn = <Self as $crate::store::batch::BatchSql>::turn(self, $crate::store::lane::Turn::Background).await;
                let done = sqlx::query($crate::store::sql::INSERT_CANON)
                    .bind(c.id.to_string())
                    .bind(c.game_id.to_string())
                    .bind(c.conflict_id.as_str())
                    .bind(&c.title)
                    .bind(&c.summary)
                    .bind(&c.dedupe_key)
                    .bind(&c.provenance.context_hash.0)
                    .bind(c.provenance.world_version as i64)
                    .bind(c.provenance.produced_at)
                    .bind(&c.provenance.model)
                    .bind(&c.provenance.prompt_version)
                    .bind(c.created_at)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::from_sqlx)?;
                Ok(done.rows_affected() == 1)
            }

            async fn insert_dialogue_reply(
                &self,
                r: &$crate::model::DialogueReply,
            ) -> Result<bool, $crate::store::StoreError> {
                let _turn = <Self as $crate::store::batch::BatchSql>::turn(self, $crate::store::lane::Turn::Background).await;
                let done = sqlx::query(
                    "INSERT INTO dialogue_replies \
                     (game_id, request_id, answers_seq, player_id, stakeholder_id, text, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (game_id, request_id) DO NOTHING",
                )
                .bind(r.game_id.to_string())
                .bind(r.request_id.to_string())
                .bind(r.answers_seq as i64)
                .bind(r.player_id.to_string())
                .bind(r.stakeholder_id.as_str())
                .bind(&r.text)
                .bind(r.created_at)
                .execute(&self.pool)
                .await
                .map_err($crate::store::StoreError::from_sqlx)?;
                Ok(done.rows_affected() == 1)
            }

            async fn dialogue_replies(
                &self,
                game: $crate::ids::GameId,
                after: u64,
            ) -> Result<Vec<$crate::model::DialogueReply>, $crate::store::StoreError> {
                let rows: Vec<(String, i64, String, String, String, i64)> = sqlx::query_as(
                    "SELECT request_id, answers_seq, player_id, stakeholder_id, text, created_at \
                     FROM dialogue_replies WHERE game_id = $1 AND answers_seq > $2 \
                     ORDER BY answers_seq, created_at",
                )
                .bind(game.to_string())
                .bind(after as i64)
                .fetch_all(&self.pool)
                .await
                .map_err($crate::store::StoreError::from_sqlx)?;
                let bad = |what: &str, e: String| $crate::store::StoreError::Decode(format!("{what}: {e}"));
                rows.into_iter()
                    .map(|(request, seq, player, who, text, created_at)| {
                        Ok($crate::model::DialogueReply {
                            game_id: game,
                            request_id: request.parse().map_err(|e| bad("request id", format!("{e}")))?,
                            answers_seq: seq as u64,
                            player_id: player.parse().map_err(|e| bad("player id", format!("{e}")))?,
                            stakeholder_id: $crate::ids::StakeholderId::new(who)
                                .map_err(|e| bad("stakeholder id", e.to_string()))?,
                            text,
                            created_at,
                        })
                    })
                    .collect()
            }

            async fn canon_events(
                &self,
                game: $crate::ids::GameId,
            ) -> Result<Vec<$crate::model::CanonEvent>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::sql::CanonRow> =
                    sqlx::query_as("SELECT * FROM canon_events WHERE game_id = $1 ORDER BY created_at, id")
                        .bind(game.to_string())
                        .fetch_all(&self.pool)
                        .await
                        .map_err($crate::store::StoreError::from_sqlx)?;
                rows.into_iter().map($crate::model::CanonEvent::try_from).collect()
            }
        }
    };
}

pub(super) use impl_store;
