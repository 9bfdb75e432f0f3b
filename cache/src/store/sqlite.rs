//! [`Store`](super::Store) on SQLite: the embedded deployment's one file.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::batch::{self, BatchItem, BatchSql, Finished, HeldGuards, ReadyCounts};
use super::sql::{PlannedRow, rows_to_planned, to_json};
use super::{ClaimQuery, StoreError};
use crate::ids::{GameId, StakeholderId};
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

/// The action's ready counts, per stakeholder of `$5` (a JSON array), each counted up to `$6`
/// ([`batch::READY_COUNT_CAP`]): dispatch only asks whether stock ran low, and a count must
/// not cost in proportion to the stock.
pub(super) const READY_CAPPED: &str = "
SELECT s.value, (SELECT COUNT(*) FROM (
    SELECT 1 FROM planned_stakeholder_actions INDEXED BY planned_ready
    WHERE game_id = $1 AND scene_id = $2 AND context_hash = $3 AND stakeholder_id = s.value
      AND status = 'ready' AND expires_at > $4
    LIMIT $6))
FROM json_each($5) s";

/// [`super::sql::READY_COUNTS`] with its index named.
const READY_COUNTS_INDEXED: &str = "
SELECT stakeholder_id, COUNT(*) FROM planned_stakeholder_actions INDEXED BY planned_ready
WHERE game_id = $1 AND scene_id = $2 AND context_hash = $3
  AND status = 'ready' AND expires_at > $4
GROUP BY stakeholder_id";

const INSERT_EVENT: &str = "
INSERT INTO game_events (game_id, seq, kind, payload, created_at) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (game_id, seq) DO NOTHING";

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
/// measured: 503s past the 200 ms budget with workers in-process. This one retries every 1 ms
/// for the same 5 s (200 µs cost throughput: the waiting connections' polling took CPU). It
/// runs on the connection's own worker thread, where sleeping is fine.
mod busy {
    use std::os::raw::{c_int, c_void};
    use std::ptr::NonNull;

    use libsqlite3_sys::{sqlite3, sqlite3_busy_handler};

    const PAUSE: std::time::Duration = std::time::Duration::from_millis(1);
    const TRIES: c_int = 5_000; // × 1 ms = 5 s

    extern "C" fn retry(_: *mut c_void, tries: c_int) -> c_int {
        if tries >= TRIES {
            return 0;
        }
        std::thread::sleep(PAUSE);
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
        })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The statements an action runs that read planned actions (name, SQL; binds: game, scene,
    /// JSON array of stakeholders or context, context, now), for plan checks.
    #[doc(hidden)]
    pub fn planned_statements() -> [(&'static str, &'static str); 2] {
        [("claim", CLAIM), ("ready", READY_COUNTS_INDEXED)]
    }

    /// Wake-ups for the job workers of this process, one per committed batch with jobs.
    pub fn job_wakeups(&self) -> JobWakeups {
        self.wakeups.clone()
    }

    async fn claim_one(&self, q: &ClaimQuery) -> Result<Vec<PlannedAction>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::from_sqlx)?;
        claim_rows(&mut conn, q).await
    }
}

impl BatchSql for SqliteStore {
    type Tx = sqlx::Transaction<'static, sqlx::Sqlite>;

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

    fn insert_events<'a>(
        tx: &'a mut Self::Tx,
        items: &'a [&'a BatchItem],
        now: Millis,
    ) -> BoxFuture<'a, Result<Vec<bool>, sqlx::Error>> {
        async move {
            let mut free = Vec::with_capacity(items.len());
            for i in items {
                let payload =
                    serde_json::to_string(&i.event).map_err(|e| sqlx::Error::Encode(e.into()))?;
                let done = sqlx::query(INSERT_EVENT)
                    .bind(i.game_id.to_string())
                    .bind(i.seq as i64)
                    .bind(i.event.kind())
                    .bind(payload)
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
                free.push(done.rows_affected() == 1);
            }
            Ok(free)
        }
        .boxed()
    }

    fn claim<'a>(
        tx: &'a mut Self::Tx,
        items: &'a [&'a BatchItem],
        _now: Millis,
    ) -> BoxFuture<'a, Result<Vec<Vec<PlannedAction>>, StoreError>> {
        async move {
            let mut out = Vec::with_capacity(items.len());
            for i in items {
                out.push(match &i.claim {
                    Some(q) => claim_rows(tx, q).await?,
                    None => Vec::new(),
                });
            }
            Ok(out)
        }
        .boxed()
    }

    fn ready<'a>(
        tx: &'a mut Self::Tx,
        items: &'a [&'a BatchItem],
        now: Millis,
    ) -> BoxFuture<'a, Result<ReadyCounts, StoreError>> {
        async move {
            let mut out = Vec::with_capacity(items.len());
            for i in items {
                let Some(q) = &i.ready else {
                    out.push(None);
                    continue;
                };
                let rows: Vec<(String, i64)> = sqlx::query_as(READY_CAPPED)
                    .bind(i.game_id.to_string())
                    .bind(q.scene_id.as_str())
                    .bind(&q.context_hash.0)
                    .bind(now)
                    .bind(to_json(&q.stakeholders)?)
                    .bind(batch::READY_COUNT_CAP)
                    .fetch_all(&mut **tx)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                let mut counts = BTreeMap::new();
                for (who, n) in rows {
                    let who =
                        StakeholderId::new(who).map_err(|e| StoreError::Decode(e.to_string()))?;
                    if n > 0 && q.stakeholders.contains(&who) {
                        counts.insert(who, n as u32);
                    }
                }
                out.push(Some(counts));
            }
            Ok(out)
        }
        .boxed()
    }

    fn guards<'a>(
        tx: &'a mut Self::Tx,
        games: &'a [GameId],
        now: Millis,
    ) -> BoxFuture<'a, Result<HeldGuards, StoreError>> {
        async move {
            let mut held = Vec::new();
            for game in games {
                let keys: Vec<String> = sqlx::query_scalar(
                    "SELECT key FROM job_guards WHERE game_id = $1 AND expires_at > $2",
                )
                .bind(game.to_string())
                .bind(now)
                .fetch_all(&mut **tx)
                .await
                .map_err(StoreError::from_sqlx)?;
                held.extend(keys.into_iter().map(|k| (*game, k)));
            }
            Ok(held)
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
            for k in 0..rows.key_len {
                sqlx::query(
                    "INSERT INTO idempotency_records \
                     (player_id, key, game_id, request_hash, response, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&rows.key_player[k])
                .bind(&rows.key[k])
                .bind(&rows.key_game[k])
                .bind(&rows.key_hash[k])
                .bind(&rows.key_response[k])
                .bind(now)
                .execute(&mut **tx)
                .await?;
            }
            for e in 0..rows.event_len {
                sqlx::query(
                    "INSERT INTO stream_events (game_id, seq, idx, payload, created_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&rows.event_game[e])
                .bind(rows.event_seq[e])
                .bind(rows.event_idx[e])
                .bind(&rows.event_payload[e])
                .bind(now)
                .execute(&mut **tx)
                .await?;
            }
            for g in 0..rows.guard_key.len() {
                sqlx::query(
                    "INSERT INTO job_guards (game_id, key, job_id, kind, expires_at) \
                     VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (game_id, key) DO UPDATE \
                     SET job_id = excluded.job_id, kind = excluded.kind, expires_at = excluded.expires_at",
                )
                .bind(&rows.guard_game[g])
                .bind(&rows.guard_key[g])
                .bind(&rows.guard_job[g])
                .bind(&rows.guard_kind[g])
                .bind(rows.guard_expires[g])
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
