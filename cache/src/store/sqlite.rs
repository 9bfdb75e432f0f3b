//! [`Store`](super::Store) on SQLite: the embedded deployment's one file.

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::batch::{self, BatchItem, BatchSql, Finished, Opened};
use super::lane::{Held, Lane, Turn};
use super::sql::{PlannedRow, rows_to_planned, to_json};
use super::{ClaimQuery, StoreError};
use crate::ids::{ContextHash, GameId, SceneId, StakeholderId};
use crate::jobs::QUEUE;
use crate::model::PlannedAction;
use crate::time::Millis;

/// SQLite has no `SKIP LOCKED`, but it runs one writer at a time, so one `UPDATE … RETURNING`
/// is atomic: two claimers can never both see a row as ready. For each stakeholder present
/// (`$3`, a JSON array) the best ready row made for the claim key (context and action kind) is
/// taken; each lookup is one range of the partial index, named with `INDEXED BY`
/// (without statistics SQLite may prefer `planned_expiry` and scan every ready row). The `+` in
/// `+status` keeps the outer `UPDATE` on the primary key: measured, with it on `planned_expiry`
/// every claim walked all ready rows of the table (17 ms with 60,000 of them).
const CLAIM: &str = "
UPDATE planned_stakeholder_actions SET status = 'consumed', claimed_at = $5
WHERE +status = 'ready' AND id IN (
    SELECT (SELECT p.id
            FROM planned_stakeholder_actions p INDEXED BY planned_ready
            WHERE p.game_id = $1 AND p.scene_id = $2 AND p.context_hash = $4
              AND p.stakeholder_id = s.value
              AND p.status = 'ready' AND p.expires_at > $5
            ORDER BY p.priority DESC, p.created_at, p.id LIMIT 1)
    FROM json_each($3) s)
RETURNING *";

/// A writer's reservoir load for one stakeholder: the `$6` best ready, unexpired rows made for
/// the claim key, one range of the partial index.
const READY_ROWS: &str = "
SELECT * FROM planned_stakeholder_actions INDEXED BY planned_ready
WHERE game_id = $1 AND scene_id = $2 AND context_hash = $3 AND stakeholder_id = $4
  AND status = 'ready' AND expires_at > $5
ORDER BY priority DESC, created_at, id
LIMIT $6";

/// Marks the rows a batch's writers picked consumed, by primary key (`$1`, a JSON array); the
/// `+` keeps SQLite on the primary key rather than the status index.
const TAKE: &str = "
UPDATE planned_stakeholder_actions SET status = 'consumed', claimed_at = $2
WHERE id IN (SELECT value FROM json_each($1)) AND +status = 'ready'
RETURNING id";

/// [`super::sql::READY_COUNTS`] with its index named.
const READY_COUNTS_INDEXED: &str = "
SELECT stakeholder_id, COUNT(*) FROM planned_stakeholder_actions INDEXED BY planned_ready
WHERE game_id = $1 AND scene_id = $2 AND context_hash = $3
  AND status = 'ready' AND expires_at > $4
GROUP BY stakeholder_id";

/// A batch's events in one statement, from a JSON array of `[game, seq, kind, payload]`: each
/// statement of a transaction is a round trip to the connection's thread while the write lock
/// is held, so a batch writes each table once, whatever its size. `WHERE true` keeps SQLite
/// from reading `ON` as a join's.
const INSERT_EVENTS: &str = "
INSERT INTO game_events (game_id, seq, kind, payload, created_at)
SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
       json_extract(value, '$[3]'), $2
FROM json_each($1) WHERE true
ON CONFLICT (game_id, seq) DO NOTHING
RETURNING game_id, seq";

/// Idempotency records from `[player, key, game, request hash, response]`.
const INSERT_KEYS: &str = "
INSERT INTO idempotency_records (player_id, key, game_id, request_hash, response, created_at)
SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
       json_extract(value, '$[3]'), json_extract(value, '$[4]'), $2
FROM json_each($1)";

/// Outbox rows from `[game, seq, idx, payload]`.
const INSERT_OUTBOX: &str = "
INSERT INTO stream_events (game_id, seq, idx, payload, created_at)
SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
       json_extract(value, '$[3]'), $2
FROM json_each($1)";

/// Coalescing guards from `[game, key, job, kind, expires_at]`.
const INSERT_GUARDS: &str = "
INSERT INTO job_guards (game_id, key, job_id, kind, expires_at)
SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
       json_extract(value, '$[3]'), json_extract(value, '$[4]')
FROM json_each($1) WHERE true
ON CONFLICT (game_id, key) DO UPDATE
SET job_id = excluded.job_id, kind = excluded.kind, expires_at = excluded.expires_at";

fn json_rows(rows: Vec<serde_json::Value>) -> Result<String, sqlx::Error> {
    serde_json::to_string(&rows).map_err(|e| sqlx::Error::Encode(e.into()))
}

async fn claim_rows(
    conn: &mut sqlx::SqliteConnection,
    q: &ClaimQuery,
) -> Result<Vec<PlannedAction>, StoreError> {
    let rows: Vec<PlannedRow> = sqlx::query_as(CLAIM)
        .bind(q.game_id.to_string())
        .bind(q.scene_id.as_str())
        .bind(to_json(&q.stakeholders)?)
        .bind(&q.context_hash.0)
        .bind(q.now)
        .fetch_all(conn)
        .await
        .map_err(StoreError::from_sqlx)?;
    rows_to_planned(rows)
}

/// How a connection waits for SQLite's write lock. SQLite's own busy handler (what
/// `busy_timeout` installs) sleeps 1, 2, 5, … up to 100 ms between tries, so an action whose
/// commit met a job worker's write waited tens of milliseconds after the lock was free —
/// measured: 503s past the 200 ms budget with workers in-process. This one tries every 50 µs for
/// the first 2 ms — the writes it meets are single statements of a few dozen microseconds (the
/// players' own commits and the slow path's take turns in the store's lane; only the job
/// storage's bookkeeping, one statement each, comes in between) — then every 1 ms up to 5 s.
/// Measured at one connection: polling every 1 ms from the start cost each action that met a
/// worker's statement a whole millisecond (embedded, c=1, p50 3.8 ms with workers busy). It
/// runs on the connection's own worker thread, where sleeping is fine.
mod busy {
    use std::os::raw::{c_int, c_void};
    use std::ptr::NonNull;
    use std::time::Duration;

    use libsqlite3_sys::{sqlite3, sqlite3_busy_handler};

    const QUICK: Duration = Duration::from_micros(50);
    const QUICK_TRIES: c_int = 40; // × 50 µs = 2 ms
    const PAUSE: Duration = Duration::from_millis(1);
    const TRIES: c_int = QUICK_TRIES + 5_000; // + 5 s

    extern "C" fn retry(_: *mut c_void, tries: c_int) -> c_int {
        if tries >= TRIES {
            return 0;
        }
        std::thread::sleep(if tries < QUICK_TRIES { QUICK } else { PAUSE });
        1
    }

    pub(super) fn poll_briefly(db: NonNull<sqlite3>) {
        // SAFETY: `db` is the live handle of the connection being set up, locked for us by
        // sqlx; the handler is a plain function with no state.
        unsafe {
            sqlite3_busy_handler(db.as_ptr(), Some(retry), std::ptr::null_mut());
        }
    }
}

/// Wakes this process's job workers when a batch committed jobs: SQLite has no LISTEN, and its
/// update hook would fire before COMMIT (a worker woken then finds nothing yet).
#[derive(Clone, Debug)]
pub struct JobWakeups {
    rx: Arc<Mutex<futures::channel::mpsc::Receiver<()>>>,
}

impl futures::Stream for JobWakeups {
    type Item = ();
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<()>> {
        use futures::StreamExt;
        self.rx.lock().expect("wakeup lock").poll_next_unpin(cx)
    }
}

/// The SQLite store. Cloning shares the pool.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Full means a wake-up is already pending: nothing is lost by dropping another.
    wake: futures::channel::mpsc::Sender<()>,
    wakeups: JobWakeups,
    backlog: Arc<batch::Backlog>,
    /// This process's writers take turns here, players first.
    lane: Arc<Lane>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and applies the migrations.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::new().filename(path);
        SqliteStore::with_options(options).await
    }

    /// Opens a `sqlite://` URL and applies the migrations.
    pub async fn connect(url: &str) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url).map_err(StoreError::from_sqlx)?;
        SqliteStore::with_options(options).await
    }

    async fn with_options(options: SqliteConnectOptions) -> Result<SqliteStore, StoreError> {
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(2))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    let mut handle = conn.lock_handle().await?;
                    busy::poll_briefly(handle.as_raw_handle());
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(StoreError::from_sqlx)?;
        let mut migrations = sqlx::migrate!("../migrations/sqlite");
        // The job storage (apalis) may keep its own migrations in the same `_sqlx_migrations`
        // table; versions we do not know are theirs, not a sign of a broken database.
        migrations.set_ignore_missing(true);
        migrations
            .run(&pool)
            .await
            .map_err(|e| StoreError::Database(format!("migrations: {e}")))?;
        let (wake, rx) = futures::channel::mpsc::channel(1);
        Ok(SqliteStore {
            pool,
            wake,
            wakeups: JobWakeups {
                rx: Arc::new(Mutex::new(rx)),
            },
            backlog: Default::default(),
            lane: Default::default(),
        })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The statements an action runs that read planned actions (name, SQL; binds: game, scene,
    /// JSON array of stakeholders or context, context, now), for plan checks.
    #[doc(hidden)]
    pub fn planned_statements() -> [(&'static str, &'static str); 3] {
        [
            ("claim", CLAIM),
            ("ready", READY_COUNTS_INDEXED),
            ("load", READY_ROWS),
        ]
    }

    /// Wake-ups for the job workers of this process, one per committed batch with jobs.
    pub fn job_wakeups(&self) -> JobWakeups {
        self.wakeups.clone()
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
        // One index range per stakeholder; reads do not wait for the writer (WAL).
        let mut conn = self.pool.acquire().await.map_err(StoreError::from_sqlx)?;
        let mut out = Vec::new();
        for who in stakeholders {
            let rows: Vec<PlannedRow> = sqlx::query_as(READY_ROWS)
                .bind(game.to_string())
                .bind(scene.as_str())
                .bind(&context.0)
                .bind(who.as_str())
                .bind(now)
                .bind(i64::from(per_stakeholder))
                .fetch_all(&mut *conn)
                .await
                .map_err(StoreError::from_sqlx)?;
            out.extend(rows_to_planned(rows)?);
        }
        Ok(out)
    }

    async fn claim_one(&self, q: &ClaimQuery) -> Result<Vec<PlannedAction>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::from_sqlx)?;
        claim_rows(&mut conn, q).await
    }
}

impl BatchSql for SqliteStore {
    type Tx = sqlx::Transaction<'static, sqlx::Sqlite>;

    fn turn(&self, who: Turn) -> BoxFuture<'_, Option<Held<'_>>> {
        self.lane.take(who).map(Some).boxed()
    }

    /// `BEGIN IMMEDIATE` takes the write lock up front: a deferred transaction that reads and
    /// then writes can fail with SQLITE_BUSY instead of waiting.
    fn begin(&self) -> BoxFuture<'_, Result<Self::Tx, sqlx::Error>> {
        self.pool.begin_with("BEGIN IMMEDIATE").boxed()
    }

    fn commit(tx: Self::Tx) -> BoxFuture<'static, Result<(), sqlx::Error>> {
        tx.commit().boxed()
    }

    fn committed_jobs(&self) {
        let _ = self.wake.clone().try_send(());
    }

    /// Three statements (SQLite has no data-modifying CTEs), each over the whole batch.
    fn open<'a>(
        tx: &'a mut Self::Tx,
        items: &'a [&'a BatchItem],
        ids: &'a [String],
        games: &'a [GameId],
        now: Millis,
    ) -> BoxFuture<'a, Result<Opened, StoreError>> {
        async move {
            let encode = |e: serde_json::Error| StoreError::Decode(e.to_string());
            let mut rows = Vec::with_capacity(items.len());
            for i in items {
                let payload = serde_json::to_string(&i.event).map_err(encode)?;
                rows.push(serde_json::json!([
                    i.game_id.to_string(),
                    i.seq,
                    i.event.kind(),
                    payload
                ]));
            }
            let inserted: Vec<(String, i64)> = sqlx::query_as(INSERT_EVENTS)
                .bind(to_json(&rows)?)
                .bind(now)
                .fetch_all(&mut **tx)
                .await
                .map_err(StoreError::from_sqlx)?;
            let inserted: HashSet<(String, i64)> = inserted.into_iter().collect();
            let free = items
                .iter()
                .map(|i| inserted.contains(&(i.game_id.to_string(), i.seq as i64)))
                .collect();
            let taken: Vec<String> = if ids.is_empty() {
                Vec::new()
            } else {
                sqlx::query_scalar(TAKE)
                    .bind(to_json(&ids)?)
                    .bind(now)
                    .fetch_all(&mut **tx)
                    .await
                    .map_err(StoreError::from_sqlx)?
            };
            let games: Vec<String> = games.iter().map(|g| g.to_string()).collect();
            let held: Vec<(String, String)> = sqlx::query_as(
                "SELECT game_id, key FROM job_guards \
                 WHERE game_id IN (SELECT value FROM json_each($1)) AND expires_at > $2",
            )
            .bind(to_json(&games)?)
            .bind(now)
            .fetch_all(&mut **tx)
            .await
            .map_err(StoreError::from_sqlx)?;
            let mut guards = Vec::with_capacity(held.len());
            for (game, key) in held {
                let game = game
                    .parse::<GameId>()
                    .map_err(|e| StoreError::Decode(format!("game id: {e}")))?;
                guards.push((game, key));
            }
            Ok(Opened {
                free,
                taken: taken.into_iter().collect(),
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
            if rows.key_len > 0 {
                let keys = (0..rows.key_len)
                    .map(|k| {
                        serde_json::json!([
                            rows.key_player[k],
                            rows.key[k],
                            rows.key_game[k],
                            rows.key_hash[k],
                            rows.key_response[k]
                        ])
                    })
                    .collect();
                sqlx::query(INSERT_KEYS)
                    .bind(json_rows(keys)?)
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
            }
            if rows.event_len > 0 {
                let events = (0..rows.event_len)
                    .map(|e| {
                        serde_json::json!([
                            rows.event_game[e],
                            rows.event_seq[e],
                            rows.event_idx[e],
                            rows.event_payload[e]
                        ])
                    })
                    .collect();
                sqlx::query(INSERT_OUTBOX)
                    .bind(json_rows(events)?)
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
            }
            if !rows.guard_key.is_empty() {
                let guards = (0..rows.guard_key.len())
                    .map(|g| {
                        serde_json::json!([
                            rows.guard_game[g],
                            rows.guard_key[g],
                            rows.guard_job[g],
                            rows.guard_kind[g],
                            rows.guard_expires[g]
                        ])
                    })
                    .collect();
                sqlx::query(INSERT_GUARDS)
                    .bind(json_rows(guards)?)
                    .execute(&mut **tx)
                    .await?;
            }
            if !rows.tasks.is_empty() {
                apalis_sqlite::queries::push_tasks(&mut **tx, QUEUE, &rows.tasks)
                    .await
                    .map_err(|e| sqlx::Error::Encode(format!("pushing jobs: {e}").into()))?;
            }
            Ok(())
        }
        .boxed()
    }
}

super::sql::impl_store!(SqliteStore, READY_COUNTS_INDEXED);
