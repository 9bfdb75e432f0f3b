//! The job storage: one apalis queue carrying [`Job`] (the enum), so that priority orders every
//! kind against every other, on SQLite (embedded: in the game database, whose single committer
//! inserts an action's jobs in the action's own transaction and wakes the in-process workers
//! after COMMIT) or PostgreSQL (distributed: workers in other processes woken by LISTEN/NOTIFY). [`JobStorage`] is what the hot path pushes to ([`JobQueue`]), what
//! operators inspect ([`JobAdmin`]: the `hotpath jobs` CLI and the `/v1/admin/jobs` routes) and
//! what [`crate::worker::run`] consumes.
//!
//! Dead letters are apalis tasks in state `Killed` (a handler gave up: retries exhausted or the
//! output never validated) or `Failed` with no attempt left; their `last_result` holds the reason.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use apalis::prelude::*;
use apalis_postgres::PostgresStorage;
use apalis_sqlite::SqliteStorage;
use async_trait::async_trait;
use hotpath_cache::jobs::{Job, JobAdmin, JobFilter, JobQueue, QueueError, Requeue};
use hotpath_cache::store::{JobWakeups, SqliteStore};
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub use hotpath_cache::jobs::{JobRecord, QUEUE};

pub use hotpath_cache::jobs::JOBS_META_SCHEMA as PG_META_SCHEMA;

/// How many times a job may be delivered to a worker (the first run plus re-deliveries after a
/// worker died holding it). The handler's own retries happen within one delivery. The write
/// path inserts an action's jobs with this bound too.
pub const DEFAULT_MAX_DELIVERIES: u32 = hotpath_cache::jobs::MAX_DELIVERIES;

/// The metadata key a requeue sets on a job: when (milliseconds since the epoch) an operator
/// queued it again. Its deadline counts from there rather than from its dispatch (the time in
/// its ULID id), which a dead letter has usually long passed — see [`crate::jobs::counted_from`].
pub const REQUEUED_AT: &str = "requeued_at";

fn unavailable(e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

#[derive(Clone)]
pub(crate) enum Backend {
    Sqlite {
        storage: SqliteStorage<Job>,
        /// One wake-up per committed batch with jobs: a worker of this process fetches at once.
        listener: JobWakeups,
    },
    Postgres {
        storage: PostgresStorage<Job>,
    },
}

/// The job storage of a deployment: push jobs, count them, list dead letters; hand it to
/// [`crate::worker::run`] to consume them. Cheap to clone (a pool handle).
#[derive(Clone)]
pub struct JobStorage {
    pub(crate) backend: Backend,
    max_deliveries: u32,
}

impl std::fmt::Debug for JobStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.backend {
            Backend::Sqlite { .. } => "sqlite",
            Backend::Postgres { .. } => "postgres",
        };
        f.debug_struct("JobStorage")
            .field("backend", &kind)
            .field("max_deliveries", &self.max_deliveries)
            .finish()
    }
}

impl JobStorage {
    /// Opens (creating if absent) the SQLite game database at `path` and keeps the jobs there
    /// (see [`JobStorage::sqlite_in`]).
    pub async fn sqlite(path: &Path) -> Result<JobStorage, QueueError> {
        let store = SqliteStore::open(path).await.map_err(unavailable)?;
        JobStorage::sqlite_in(&store).await
    }

    /// Keeps the jobs in the game database of `store`, so that its committer inserts an
    /// action's jobs in the action's transaction. Runs apalis' migrations, but not its
    /// `setup` pragmas: the game data keeps `synchronous = NORMAL` (apalis would set `OFF`).
    pub async fn sqlite_in(store: &SqliteStore) -> Result<JobStorage, QueueError> {
        let pool = store.pool();
        let mut migrations = SqliteStorage::<()>::migrations();
        // The game store's migrations share the `_sqlx_migrations` table.
        migrations.set_ignore_missing(true);
        migrations.run(pool).await.map_err(unavailable)?;
        let storage = SqliteStorage::<Job>::new(pool)
            .with_config(apalis_sqlite::Config::default().queue(QUEUE));
        Ok(JobStorage {
            backend: Backend::Sqlite {
                storage,
                listener: store.job_wakeups(),
            },
            max_deliveries: DEFAULT_MAX_DELIVERIES,
        })
    }

    /// Connects to PostgreSQL at `url` and runs apalis' migrations (tables in schema `apalis`,
    /// migration history in [`PG_META_SCHEMA`]); safe to point at the game database.
    pub async fn postgres(url: &str) -> Result<JobStorage, QueueError> {
        let options = PgConnectOptions::from_str(url).map_err(unavailable)?;
        // One plain connection creates the schema the pool's search_path will name first.
        let bootstrap = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(unavailable)?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {PG_META_SCHEMA}"
        )))
        .execute(&bootstrap)
        .await
        .map_err(unavailable)?;
        bootstrap.close().await;
        let search_path = format!("{PG_META_SCHEMA},public");
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .connect_with(options.options([("search_path", search_path.as_str())]))
            .await
            .map_err(unavailable)?;
        PostgresStorage::setup(&pool).await.map_err(unavailable)?;
        let storage = PostgresStorage::<Job>::new(&pool)
            .with_config(apalis_postgres::Config::default().queue(QUEUE));
        Ok(JobStorage {
            backend: Backend::Postgres { storage },
            max_deliveries: DEFAULT_MAX_DELIVERIES,
        })
    }

    /// Sets how many deliveries a job gets (see [`DEFAULT_MAX_DELIVERIES`]).
    pub fn with_max_deliveries(mut self, n: u32) -> JobStorage {
        self.max_deliveries = n.max(1);
        self
    }

    pub fn max_deliveries(&self) -> u32 {
        self.max_deliveries
    }

    /// Which SQL engine holds the jobs: `sqlite` or `postgres`.
    pub fn engine(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite { .. } => "sqlite",
            Backend::Postgres { .. } => "postgres",
        }
    }

    fn task(&self, job: Job, id: &TaskId) -> Task<Job> {
        // As the write path does: the kind's head start in `run_at` (see `JobKind::head_start`).
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let run_at = now.saturating_sub(job.kind().head_start()).as_secs();
        TaskBuilder::new(job)
            .task_id(id.clone())
            .priority(0)
            .run_at_timestamp(run_at)
            .max_attempts(self.max_deliveries as usize)
            .build()
    }

    /// Holds job `id` in the storage until `after` from now: the retry of a failed delivery
    /// is scheduled by the storage (apalis fetches failed jobs again once `run_at` passed),
    /// not slept in a worker slot.
    pub async fn reschedule(&self, id: &str, after: Duration) -> Result<(), QueueError> {
        let secs = after.as_secs().max(1) as i64;
        match &self.backend {
            Backend::Sqlite { storage, .. } => {
                sqlx::query("UPDATE Jobs SET run_at = strftime('%s', 'now') + ? WHERE id = ?")
                    .bind(secs)
                    .bind(id)
                    .execute(storage.pool())
                    .await
                    .map_err(unavailable)?;
            }
            Backend::Postgres { storage } => {
                sqlx::query(
                    "UPDATE apalis.jobs SET run_at = now() + make_interval(secs => $2) WHERE id = $1",
                )
                .bind(id)
                .bind(secs as f64)
                .execute(storage.pool())
                .await
                .map_err(unavailable)?;
            }
        }
        Ok(())
    }

    /// Runs dead letters again: each of `ids` that is dead (or, with `ids` empty, every dead
    /// letter) becomes `Pending` with its deliveries reset, under the same id; returns how
    /// many. Its deadline counts from now ([`REQUEUED_AT`] in the task's metadata), so a dead
    /// letter older than the job deadline runs rather than being skipped as expired.
    pub async fn requeue(&self, ids: &[String]) -> Result<u64, QueueError> {
        const DEAD: &str =
            "(status = 'Killed' OR (status = 'Failed' AND attempts >= max_attempts))";
        let ids_json = serde_json::to_string(ids).map_err(unavailable)?;
        let now = hotpath_cache::time::now_ms().to_string();
        let n = match &self.backend {
            Backend::Sqlite { storage, .. } => sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE Jobs SET status = 'Pending', attempts = 0, lock_by = NULL, lock_at = NULL, \
                 done_at = NULL, run_at = strftime('%s', 'now'), \
                 metadata = json_set(COALESCE(metadata, '{{}}'), '$.{REQUEUED_AT}', ?3) \
                 WHERE job_type = ?1 AND {DEAD} \
                 AND (json_array_length(?2) = 0 OR id IN (SELECT value FROM json_each(?2)))"
            )))
            .bind(QUEUE)
            .bind(&ids_json)
            .bind(&now)
            .execute(storage.pool())
            .await
            .map_err(unavailable)?
            .rows_affected(),
            // `hstore` lives in the jobs' own schema, first on this pool's search_path.
            Backend::Postgres { storage } => sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE apalis.jobs SET status = 'Pending', attempts = 0, lock_by = NULL, \
                 lock_at = NULL, done_at = NULL, run_at = now(), \
                 metadata = COALESCE(metadata, ''::hstore) || hstore('{REQUEUED_AT}', $3) \
                 WHERE job_type = $1 AND {DEAD} AND (cardinality($2::text[]) = 0 OR id = ANY($2))"
            )))
            .bind(QUEUE)
            .bind(ids)
            .bind(&now)
            .execute(storage.pool())
            .await
            .map_err(unavailable)?
            .rows_affected(),
        };
        // Workers find them at their next poll (`WorkerConfig::poll_backstop`).
        Ok(n)
    }

    /// Jobs in apalis status `status` (`Pending`, `Running`, `Done`, `Failed`, `Killed`, ...),
    /// newest first, at most `limit`.
    pub async fn with_status(
        &self,
        status: &str,
        limit: u32,
    ) -> Result<Vec<JobRecord>, QueueError> {
        self.select("status = ?", &[status], limit).await
    }

    /// Jobs matching `filter` (status and kind), newest first, at most `limit`. The kind is
    /// matched in SQL, so `limit` counts matching jobs.
    pub async fn list(&self, filter: &JobFilter, limit: u32) -> Result<Vec<JobRecord>, QueueError> {
        let mut clauses = vec!["1 = 1"];
        let mut args = Vec::new();
        if let Some(status) = &filter.status {
            clauses.push("status = ?");
            args.push(status.as_str());
        }
        if let Some(kind) = filter.kind {
            clauses.push("{kind} = ?");
            args.push(kind.as_str());
        }
        self.select(&clauses.join(" AND "), &args, limit).await
    }

    /// One job by id.
    pub async fn job(&self, id: &str) -> Result<Option<JobRecord>, QueueError> {
        let rows = self.select("id = ?", &[id], 1).await?;
        Ok(rows.into_iter().next())
    }

    /// Every job of the queue, newest first (for tests and inspection), at most `limit`.
    pub async fn jobs(&self, limit: u32) -> Result<Vec<JobRecord>, QueueError> {
        self.select("1 = 1", &[], limit).await
    }

    /// The dead letters, newest first, at most `limit`: jobs a handler gave up on, or that
    /// failed with no delivery left. Each carries its reason ([`JobRecord::reason`]).
    pub async fn dead_letters(&self, limit: u32) -> Result<Vec<JobRecord>, QueueError> {
        self.select(
            "(status = 'Killed' OR (status = 'Failed' AND attempts >= max_attempts))",
            &[],
            limit,
        )
        .await
    }

    /// Runs `SELECT … WHERE job_type = queue AND <filter>` on either engine; `filter`'s `?`
    /// placeholders are bound to `args` in order, and `{kind}` stands for the message's kind.
    async fn select(
        &self,
        filter: &str,
        args: &[&str],
        limit: u32,
    ) -> Result<Vec<JobRecord>, QueueError> {
        match &self.backend {
            Backend::Sqlite { storage, .. } => {
                let filter = filter.replace("{kind}", "json_extract(CAST(job AS TEXT), '$.kind')");
                let sql = format!(
                    "SELECT id, job, status, attempts, max_attempts, last_result, lock_by \
                     FROM Jobs WHERE job_type = ? AND {filter} ORDER BY id DESC LIMIT {limit}"
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(QUEUE);
                for arg in args {
                    q = q.bind(*arg);
                }
                let rows = q.fetch_all(storage.pool()).await.map_err(unavailable)?;
                rows.iter()
                    .map(|r| {
                        Ok(JobRecord {
                            id: r.try_get("id").map_err(unavailable)?,
                            job: decode_job(r.try_get::<Vec<u8>, _>("job").ok()),
                            status: r.try_get("status").map_err(unavailable)?,
                            attempts: r.try_get::<i64, _>("attempts").map_err(unavailable)? as u32,
                            max_attempts: r
                                .try_get::<i64, _>("max_attempts")
                                .map_err(unavailable)?
                                as u32,
                            last_result: r.try_get("last_result").map_err(unavailable)?,
                            lock_by: r.try_get("lock_by").map_err(unavailable)?,
                        })
                    })
                    .collect()
            }
            Backend::Postgres { storage } => {
                // `?` → `$2`, `$3`, … (`$1` is the queue).
                let mut numbered = String::with_capacity(filter.len() + 8);
                let mut next = 2;
                for c in filter
                    .replace("{kind}", "(convert_from(job, 'UTF8')::jsonb ->> 'kind')")
                    .chars()
                {
                    if c == '?' {
                        numbered.push_str(&format!("${next}"));
                        next += 1;
                    } else {
                        numbered.push(c);
                    }
                }
                let filter = numbered;
                let sql = format!(
                    "SELECT id, job, status, attempts, max_attempts, last_result::text AS last_result, lock_by \
                     FROM apalis.jobs WHERE job_type = $1 AND {filter} ORDER BY id DESC LIMIT {limit}"
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(QUEUE);
                for arg in args {
                    q = q.bind(*arg);
                }
                let rows = q.fetch_all(storage.pool()).await.map_err(unavailable)?;
                rows.iter()
                    .map(|r| {
                        Ok(JobRecord {
                            id: r.try_get("id").map_err(unavailable)?,
                            job: decode_job(r.try_get::<Vec<u8>, _>("job").ok()),
                            status: r.try_get("status").map_err(unavailable)?,
                            attempts: r.try_get::<i32, _>("attempts").map_err(unavailable)? as u32,
                            max_attempts: r
                                .try_get::<i32, _>("max_attempts")
                                .map_err(unavailable)?
                                as u32,
                            last_result: r.try_get("last_result").map_err(unavailable)?,
                            lock_by: r.try_get("lock_by").map_err(unavailable)?,
                        })
                    })
                    .collect()
            }
        }
    }
}

fn decode_job(bytes: Option<Vec<u8>>) -> Option<Job> {
    serde_json::from_slice(&bytes?).ok()
}

/// The operators' view; the inherent methods of the same names do the work.
#[async_trait]
impl JobAdmin for JobStorage {
    async fn list(&self, filter: &JobFilter, limit: u32) -> Result<Vec<JobRecord>, QueueError> {
        JobStorage::list(self, filter, limit).await
    }

    async fn job(&self, id: &str) -> Result<Option<JobRecord>, QueueError> {
        JobStorage::job(self, id).await
    }

    async fn dead_letters(&self, limit: u32) -> Result<Vec<JobRecord>, QueueError> {
        JobStorage::dead_letters(self, limit).await
    }

    async fn requeue(&self, which: &Requeue) -> Result<u64, QueueError> {
        match which {
            Requeue::All => JobStorage::requeue(self, &[]).await,
            // An empty list asks for nothing (the inherent method would take it for "all").
            Requeue::Ids(ids) if ids.is_empty() => Ok(0),
            Requeue::Ids(ids) => JobStorage::requeue(self, ids).await,
        }
    }
}

#[async_trait]
impl JobQueue for JobStorage {
    async fn push(&self, job: Job) -> Result<String, QueueError> {
        // apalis decodes ids with `Ulid::from_string` when it fetches; any other id format
        // would be accepted here and then break every fetch of the row (STACK §5.1).
        let id = TaskId::from_ulid(ulid::Ulid::generate());
        let task = self.task(job, &id);
        match &self.backend {
            Backend::Sqlite { storage, .. } => {
                let mut sink = storage.clone();
                sink.push_task(task).await.map_err(unavailable)?;
            }
            Backend::Postgres { storage } => {
                let mut sink = storage.clone();
                sink.push_task(task).await.map_err(unavailable)?;
            }
        }
        Ok(id.to_string())
    }

    async fn push_many(&self, jobs: Vec<Job>) -> Result<Vec<String>, QueueError> {
        // One flush of the apalis sink is one write: a dispatch of several jobs costs one
        // round trip (and, on SQLite, one turn at the writer lock) instead of one per job.
        let ids: Vec<TaskId> = jobs
            .iter()
            .map(|_| TaskId::from_ulid(ulid::Ulid::generate()))
            .collect();
        let tasks: Vec<Task<Job>> = jobs
            .into_iter()
            .zip(&ids)
            .map(|(job, id)| self.task(job, id))
            .collect();
        let mut stream = futures::stream::iter(tasks);
        match &self.backend {
            Backend::Sqlite { storage, .. } => {
                let mut sink = storage.clone();
                sink.push_all(&mut stream).await.map_err(unavailable)?;
            }
            Backend::Postgres { storage } => {
                let mut sink = storage.clone();
                sink.push_all(&mut stream).await.map_err(unavailable)?;
            }
        }
        Ok(ids.iter().map(ToString::to_string).collect())
    }

    async fn pending(&self) -> Result<u64, QueueError> {
        let waiting = "(status = 'Pending' OR (status = 'Failed' AND attempts < max_attempts))";
        let n: i64 = match &self.backend {
            Backend::Sqlite { storage, .. } => sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM Jobs WHERE job_type = ? AND {waiting}"
            )))
            .bind(QUEUE)
            .fetch_one(storage.pool())
            .await
            .map_err(unavailable)?,
            Backend::Postgres { storage } => sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM apalis.jobs WHERE job_type = $1 AND {waiting}"
            )))
            .bind(QUEUE)
            .fetch_one(storage.pool())
            .await
            .map_err(unavailable)?,
        };
        Ok(n.max(0) as u64)
    }

    /// Deletes finished jobs done more than `done_secs` ago and dead letters older than
    /// `dead_secs`; returns how many.
    async fn purge(&self, done_secs: u64, dead_secs: u64) -> Result<u64, QueueError> {
        let (done, dead) = (done_secs as i64, dead_secs as i64);
        let n = match &self.backend {
            Backend::Sqlite { storage, .. } => sqlx::query(
                "DELETE FROM Jobs WHERE job_type = ?1 AND ( \
                 (status = 'Done' AND done_at < strftime('%s', 'now') - ?2) OR \
                 ((status = 'Killed' OR (status = 'Failed' AND attempts >= max_attempts)) \
                  AND done_at < strftime('%s', 'now') - ?3))",
            )
            .bind(QUEUE)
            .bind(done)
            .bind(dead)
            .execute(storage.pool())
            .await
            .map_err(unavailable)?
            .rows_affected(),
            Backend::Postgres { storage } => sqlx::query(
                "DELETE FROM apalis.jobs WHERE job_type = $1 AND ( \
                 (status = 'Done' AND done_at < now() - make_interval(secs => $2)) OR \
                 ((status = 'Killed' OR (status = 'Failed' AND attempts >= max_attempts)) \
                  AND done_at < now() - make_interval(secs => $3)))",
            )
            .bind(QUEUE)
            .bind(done as f64)
            .bind(dead as f64)
            .execute(storage.pool())
            .await
            .map_err(unavailable)?
            .rows_affected(),
        };
        Ok(n)
    }

    async fn counts(&self) -> Result<hotpath_cache::jobs::JobCounts, QueueError> {
        const STATE: &str = "CASE WHEN status = 'Pending' THEN 'pending' \
            WHEN status IN ('Queued', 'Running') THEN 'running' \
            WHEN status = 'Done' THEN 'done' \
            WHEN status = 'Failed' AND attempts < max_attempts THEN 'retrying' \
            ELSE 'dead' END";
        let rows: Vec<(String, Option<String>, i64)> = match &self.backend {
            Backend::Sqlite { storage, .. } => sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {STATE}, json_extract(CAST(job AS TEXT), '$.kind'), COUNT(*) \
                 FROM Jobs WHERE job_type = ? GROUP BY 1, 2"
            )))
            .bind(QUEUE)
            .fetch_all(storage.pool())
            .await
            .map_err(unavailable)?,
            Backend::Postgres { storage } => sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {STATE}, convert_from(job, 'UTF8')::jsonb ->> 'kind', COUNT(*) \
                 FROM apalis.jobs WHERE job_type = $1 GROUP BY 1, 2"
            )))
            .bind(QUEUE)
            .fetch_all(storage.pool())
            .await
            .map_err(unavailable)?,
        };
        let mut out = hotpath_cache::jobs::JobCounts::new();
        for (state, kind, n) in rows {
            *out.entry(state)
                .or_default()
                .entry(kind.unwrap_or_else(|| "unknown".into()))
                .or_default() += n.max(0) as u64;
        }
        Ok(out)
    }

    async fn ping(&self) -> Result<(), QueueError> {
        match &self.backend {
            Backend::Sqlite { storage, .. } => sqlx::query("SELECT 1")
                .execute(storage.pool())
                .await
                .map(drop),
            Backend::Postgres { storage } => sqlx::query("SELECT 1")
                .execute(storage.pool())
                .await
                .map(drop),
        }
        .map_err(unavailable)
    }
}
