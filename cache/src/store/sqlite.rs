//! [`Store`](super::Store) on SQLite: the embedded deployment's one file.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::StoreError;

/// SQLite has no `SKIP LOCKED`, but it runs one writer at a time, so one `UPDATE … RETURNING`
/// is atomic: two claimers can never both see a row as ready. One statement claims for every
/// stakeholder present (`$3` is a JSON array of their ids).
const CLAIM: &str = "
UPDATE planned_stakeholder_actions SET status = 'consumed', claimed_at = $5
WHERE status = 'ready' AND id IN (
    SELECT (SELECT p.id FROM planned_stakeholder_actions p
            WHERE p.game_id = $1 AND p.scene_id = $2 AND p.stakeholder_id = s.value
              AND p.status = 'ready' AND p.expires_at > $5
              AND (p.context_hash = $4 OR p.kind = 'reaction')
            ORDER BY p.priority DESC, p.created_at, p.id
            LIMIT 1)
    FROM json_each($3) s)
RETURNING *";

/// The SQLite store. Cloning shares the pool.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
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
        Ok(SqliteStore { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// `BEGIN IMMEDIATE` takes the write lock up front: a deferred transaction that reads and
    /// then writes can fail with SQLITE_BUSY instead of waiting.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::from_sqlx)
    }
}

super::sql::impl_store!(SqliteStore, CLAIM);
