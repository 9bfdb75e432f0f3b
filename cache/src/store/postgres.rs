//! [`Store`](super::Store) on PostgreSQL: the distributed deployment's database.

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};

use super::StoreError;

/// For each stakeholder present (`$3`, a JSON array), lock the best ready row with
/// `FOR UPDATE SKIP LOCKED` — concurrent claimers skip rows another claimer holds instead of
/// waiting for them or taking them twice — and mark the picks consumed, in one statement.
const CLAIM: &str = "
WITH picked AS (
    SELECT c.id
    FROM json_array_elements_text($3::json) AS s(stakeholder_id)
    CROSS JOIN LATERAL (
        SELECT p.id FROM planned_stakeholder_actions p
        WHERE p.game_id = $1 AND p.scene_id = $2 AND p.stakeholder_id = s.stakeholder_id
          AND p.status = 'ready' AND p.expires_at > $5
          AND (p.context_hash = $4 OR p.kind = 'reaction')
        ORDER BY p.priority DESC, p.created_at, p.id
        LIMIT 1
        FOR UPDATE SKIP LOCKED) c)
UPDATE planned_stakeholder_actions t SET status = 'consumed', claimed_at = $5
FROM picked WHERE t.id = picked.id AND t.status = 'ready'
RETURNING t.*";

/// The PostgreSQL store. Cloning shares the pool.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/db`) and applies the migrations.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(2))
            .connect(url)
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
        Ok(PostgresStore { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        self.pool.begin().await.map_err(StoreError::from_sqlx)
    }
}

super::sql::impl_store!(PostgresStore, CLAIM);
