//! [`Store`](super::Store) on PostgreSQL: the distributed deployment's database.

use std::collections::HashSet;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{FromRow, Postgres, Row};

use super::batch::{self, BatchItem, BatchSql, Finished, Opened};
use super::sql::PlannedRow;
use super::{ClaimQuery, StoreError};
use crate::ids::ContextHash;
use crate::ids::{GameId, SceneId, StakeholderId};
use crate::jobs::{JOBS_META_SCHEMA, QUEUE};
use crate::model::PlannedAction;
use crate::time::Millis;

/// Claims for many requests at once. Each row of the arrays is one (request, stakeholder).
/// Requests for the same stakeholder and claim key (context and action kind, see
/// [`crate::model::reaction_key`]) form a group of `n`; for each group the `n` best ready rows
/// made for that key are locked with `FOR UPDATE SKIP LOCKED` — a concurrent claimer skips rows
/// another holds instead of waiting or taking them twice — and the k-th request of the group
/// takes the k-th best, so two actions of one batch never want the same row. Each lookup is one
/// range of the `planned_ready` partial index, whatever other games and contexts hold; no more
/// rows are locked than can be taken (an `OFFSET` would lock every row it skips).
const CLAIM: &str = "
WITH req AS (
    SELECT r.*, (row_number() OVER (
        PARTITION BY r.game_id, r.scene_id, r.stakeholder_id, r.context_hash ORDER BY r.item) - 1) AS rk
    FROM unnest($1::int[], $2::text[], $3::text[], $4::text[], $5::text[])
        AS r(item, game_id, scene_id, stakeholder_id, context_hash)),
grp AS (
    SELECT game_id, scene_id, stakeholder_id, context_hash, COUNT(*) AS n
    FROM req GROUP BY game_id, scene_id, stakeholder_id, context_hash),
ranked AS (
    SELECT g.game_id, g.scene_id, g.stakeholder_id, g.context_hash, c.id,
        (row_number() OVER (
            PARTITION BY g.game_id, g.scene_id, g.stakeholder_id, g.context_hash
            ORDER BY c.priority DESC, c.created_at, c.id) - 1) AS rk
    FROM grp g CROSS JOIN LATERAL (
        SELECT p.id, p.priority, p.created_at FROM planned_stakeholder_actions p
        WHERE p.game_id = g.game_id AND p.scene_id = g.scene_id
          AND p.context_hash = g.context_hash AND p.stakeholder_id = g.stakeholder_id
          AND p.status = 'ready' AND p.expires_at > $6
        ORDER BY p.priority DESC, p.created_at, p.id
        LIMIT g.n FOR UPDATE SKIP LOCKED) c),
best AS (
    SELECT req.item, ranked.id FROM req JOIN ranked
    USING (game_id, scene_id, stakeholder_id, context_hash, rk))
UPDATE planned_stakeholder_actions t SET status = 'consumed', claimed_at = $6
FROM best WHERE t.id = best.id AND t.status = 'ready'
RETURNING best.item, t.*";

/// A writer's reservoir load: for each stakeholder (`$4`), the `$6` best ready, unexpired rows
/// made for the claim key, one range of the `planned_ready` partial index each.
const READY_ROWS: &str = "
SELECT c.* FROM unnest($4::text[]) AS s(stakeholder_id)
CROSS JOIN LATERAL (
    SELECT p.* FROM planned_stakeholder_actions p
    WHERE p.game_id = $1 AND p.scene_id = $2 AND p.context_hash = $3
      AND p.stakeholder_id = s.stakeholder_id
      AND p.status = 'ready' AND p.expires_at > $5
    ORDER BY p.priority DESC, p.created_at, p.id
    LIMIT $6) c";

/// A batch's first step in one statement: the events at their seqs (a seq another process
/// took is not returned), the rows its writers picked marked consumed by primary key (a row no
/// longer ready — another engine's commit took it first: this one waited on its row lock, then
/// saw the new status — is not returned), and the guards held for its games. Rows come back as
/// (`e`, game, –, seq), (`t`, row id, –, 0) and (`g`, game, key, 0).
const OPEN: &str = "
WITH e AS (
    INSERT INTO game_events (game_id, seq, kind, payload, created_at)
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[])
    ON CONFLICT (game_id, seq) DO NOTHING
    RETURNING game_id, seq),
t AS (
    UPDATE planned_stakeholder_actions SET status = 'consumed', claimed_at = $7
    WHERE id = ANY($6) AND status = 'ready'
    RETURNING id)
SELECT 'e', game_id, NULL::text, seq FROM e
UNION ALL SELECT 't', id, NULL, 0 FROM t
UNION ALL SELECT 'g', game_id, key, 0 FROM job_guards WHERE game_id = ANY($8) AND expires_at > $7";

const RECORD: &str = "
WITH i AS (
    INSERT INTO idempotency_records (player_id, key, game_id, request_hash, response, created_at)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[])),
o AS (
    INSERT INTO stream_events (game_id, seq, idx, payload, created_at)
    SELECT * FROM unnest($7::text[], $8::bigint[], $9::int[], $10::text[], $11::bigint[])),
g AS (
    INSERT INTO job_guards (game_id, key, job_id, kind, expires_at)
    SELECT * FROM unnest($12::text[], $13::text[], $14::text[], $15::text[], $16::bigint[])
    ON CONFLICT (game_id, key) DO UPDATE
    SET job_id = excluded.job_id, kind = excluded.kind, expires_at = excluded.expires_at)
SELECT 1";

/// The request arrays of [`CLAIM`]: one row per (item, stakeholder).
#[derive(Default)]
struct Requests {
    item: Vec<i32>,
    game: Vec<String>,
    scene: Vec<String>,
    stakeholder: Vec<String>,
    context: Vec<String>,
}

impl Requests {
    fn add(
        &mut self,
        item: usize,
        game: GameId,
        scene: &SceneId,
        stakeholders: &[StakeholderId],
        context: &ContextHash,
    ) {
        for s in stakeholders {
            self.item.push(item as i32);
            self.game.push(game.to_string());
            self.scene.push(scene.to_string());
            self.stakeholder.push(s.to_string());
            self.context.push(context.0.clone());
        }
    }

    fn bind<'q>(
        self,
        sql: &'static str,
        now: Millis,
    ) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
        sqlx::query(sql)
            .bind(self.item)
            .bind(self.game)
            .bind(self.scene)
            .bind(self.stakeholder)
            .bind(self.context)
            .bind(now)
    }
}

/// Runs [`CLAIM`]; returns the claimed rows of each of `n` requests.
async fn claim_rows<'c>(
    executor: impl sqlx::Executor<'c, Database = Postgres>,
    requests: Requests,
    n: usize,
    now: Millis,
) -> Result<Vec<Vec<PlannedAction>>, StoreError> {
    let mut out: Vec<Vec<PlannedAction>> = (0..n).map(|_| Vec::new()).collect();
    if requests.item.is_empty() {
        return Ok(out);
    }
    let rows = requests
        .bind(CLAIM, now)
        .fetch_all(executor)
        .await
        .map_err(StoreError::from_sqlx)?;
    for row in rows {
        let item: i32 = row.try_get("item").map_err(StoreError::from_sqlx)?;
        let planned = PlannedRow::from_row(&row).map_err(StoreError::from_sqlx)?;
        out[item as usize].push(PlannedAction::try_from(planned)?);
    }
    Ok(out)
}

/// The PostgreSQL store. Cloning shares the pool.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
    backlog: std::sync::Arc<batch::Backlog>,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/db`) and applies the migrations.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(StoreError::from_sqlx)?
            // Our tables (and our migration history) in `public`; the job storage's types
            // (apalis creates `hstore` in its own schema) found after them, for the jobs the
            // committer inserts.
            .options([
                ("search_path", format!("public,{JOBS_META_SCHEMA}")),
                // The action statements are planned once per connection, not per call (their
                // plans do not depend on the values; a custom plan cost more than running it).
                ("plan_cache_mode", "force_generic_plan".to_owned()),
                // A stuck statement or lock is the database's to end: the write path never
                // drops a transaction half way.
                ("statement_timeout", "5s".to_owned()),
                ("lock_timeout", "5s".to_owned()),
                ("idle_in_transaction_session_timeout", "10s".to_owned()),
            ]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(2))
            .connect_with(options)
            .await
            .map_err(StoreError::from_sqlx)?;
        let mut migrations = sqlx::migrate!("../migrations/postgres");
        // The job storage (apalis) may keep its own migrations in the same `_sqlx_migrations`
        // table; versions we do not know are theirs, not a sign of a broken database.
        migrations.set_ignore_missing(true);
        migrations
            .run(&pool)
            .await
            .map_err(|e| StoreError::Database(format!("migrations: {e}")))?;
        Ok(PostgresStore {
            pool,
            backlog: Default::default(),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The statements that read planned actions for players (name, SQL), for plan checks: the
    /// standalone claim (binds: item, game, scene, stakeholder, context arrays and now) and the
    /// reservoir load (game, scene, context, stakeholder array, now, limit).
    #[doc(hidden)]
    pub fn planned_statements() -> [(&'static str, &'static str); 2] {
        [("claim", CLAIM), ("load", READY_ROWS)]
    }

    async fn load_ready(
        &self,
        game: GameId,
        scene: &SceneId,
        context: &ContextHash,
        stakeholders: &[StakeholderId],
        per_stakeholder: u32,
        now: Millis,
    ) -> Result<Vec<PlannedAction>, StoreError> {
        let rows: Vec<PlannedRow> = sqlx::query_as(READY_ROWS)
            .bind(game.to_string())
            .bind(scene.as_str())
            .bind(&context.0)
            .bind(
                stakeholders
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            )
            .bind(now)
            .bind(i64::from(per_stakeholder))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        super::sql::rows_to_planned(rows)
    }

    async fn claim_one(&self, q: &ClaimQuery) -> Result<Vec<PlannedAction>, StoreError> {
        let mut requests = Requests::default();
        requests.add(0, q.game_id, &q.scene_id, &q.stakeholders, &q.context_hash);
        let mut rows = claim_rows(&self.pool, requests, 1, q.now).await?;
        Ok(rows.pop().unwrap_or_default())
    }
}

impl BatchSql for PostgresStore {
    type Tx = sqlx::Transaction<'static, Postgres>;

    fn begin(&self) -> BoxFuture<'_, Result<Self::Tx, sqlx::Error>> {
        self.pool.begin().boxed()
    }

    fn commit(tx: Self::Tx) -> BoxFuture<'static, Result<(), sqlx::Error>> {
        tx.commit().boxed()
    }

    /// One statement: the events, the claims and the guards (data-modifying CTEs).
    fn open<'a>(
        tx: &'a mut Self::Tx,
        items: &'a [&'a BatchItem],
        ids: &'a [String],
        games: &'a [GameId],
        now: Millis,
    ) -> BoxFuture<'a, Result<Opened, StoreError>> {
        async move {
            let encode = |e: serde_json::Error| StoreError::Decode(e.to_string());
            let mut payloads = Vec::with_capacity(items.len());
            for i in items {
                payloads.push(serde_json::to_string(&i.event).map_err(encode)?);
            }
            let rows: Vec<(String, String, Option<String>, i64)> = sqlx::query_as(OPEN)
                .bind(
                    items
                        .iter()
                        .map(|i| i.game_id.to_string())
                        .collect::<Vec<_>>(),
                )
                .bind(items.iter().map(|i| i.seq as i64).collect::<Vec<_>>())
                .bind(items.iter().map(|i| i.event.kind()).collect::<Vec<_>>())
                .bind(payloads)
                .bind(vec![now; items.len()])
                .bind(ids)
                .bind(now)
                .bind(games.iter().map(|g| g.to_string()).collect::<Vec<_>>())
                .fetch_all(&mut **tx)
                .await
                .map_err(StoreError::from_sqlx)?;
            let mut inserted = HashSet::new();
            let mut taken = HashSet::new();
            let mut guards = Vec::new();
            for (what, a, b, n) in rows {
                match what.as_str() {
                    "e" => {
                        inserted.insert((a, n));
                    }
                    "t" => {
                        taken.insert(a);
                    }
                    _ => {
                        let game = a
                            .parse::<GameId>()
                            .map_err(|e| StoreError::Decode(e.to_string()))?;
                        guards.push((game, b.unwrap_or_default()));
                    }
                }
            }
            let free = items
                .iter()
                .map(|i| inserted.contains(&(i.game_id.to_string(), i.seq as i64)))
                .collect();
            Ok(Opened {
                free,
                taken,
                guards,
            })
        }
        .boxed()
    }

    fn count_guards<'a>(
        tx: &'a mut Self::Tx,
        now: Millis,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        async move {
            let n: i64 = sqlx::query_scalar(super::sql::COUNT_GUARDS)
                .bind(now)
                .fetch_one(&mut **tx)
                .await
                .map_err(StoreError::from_sqlx)?;
            Ok(n.max(0) as u64)
        }
        .boxed()
    }

    fn backlog(&self) -> &batch::Backlog {
        &self.backlog
    }

    fn record<'a>(
        tx: &'a mut Self::Tx,
        items: &'a [&'a BatchItem],
        finished: &'a [Finished],
        now: Millis,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        async move {
            let rows = batch::Rows::collect(items, finished)?;
            if !rows.is_empty() {
                sqlx::query(RECORD)
                    .bind(rows.key_player)
                    .bind(rows.key)
                    .bind(rows.key_game)
                    .bind(rows.key_hash)
                    .bind(rows.key_response)
                    .bind(vec![now; rows.key_len])
                    .bind(rows.event_game)
                    .bind(rows.event_seq)
                    .bind(rows.event_idx)
                    .bind(rows.event_payload)
                    .bind(vec![now; rows.event_len])
                    .bind(rows.guard_game)
                    .bind(rows.guard_key)
                    .bind(rows.guard_job)
                    .bind(rows.guard_kind)
                    .bind(rows.guard_expires)
                    .execute(&mut **tx)
                    .await?;
            }
            if !rows.tasks.is_empty() {
                apalis_postgres::queries::push_tasks(&mut **tx, QUEUE, rows.tasks)
                    .await
                    .map_err(|e| sqlx::Error::Encode(format!("pushing jobs: {e}").into()))?;
            }
            Ok(())
        }
        .boxed()
    }
}

super::sql::impl_store!(PostgresStore, super::sql::READY_COUNTS);
