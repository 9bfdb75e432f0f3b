//! The Redis cache of the distributed deployment: one multiplexed, self-reconnecting
//! `ConnectionManager` (no pool needed), `MGET` for multi-gets, `SET NX PX` plus a compare-and-
//! delete script for the dispatch guard.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, ExistenceCheck, Script, SetExpiry, SetOptions};

use super::{Cache, CacheError, keys};
use crate::ids::GameId;

/// Deletes the key only if it still holds the caller's token.
const RELEASE: &str = r#"if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end"#;

/// The Redis [`Cache`]. Cloning shares the connection.
#[derive(Clone)]
pub struct RedisCache {
    conn: ConnectionManager,
    release: Script,
}

impl RedisCache {
    /// Connects to `url` (`redis://host:port/db`). `timeout` bounds every command and the
    /// connection attempt; the hot path additionally puts its own deadline on each read.
    pub async fn connect(url: &str, timeout: Duration) -> Result<RedisCache, CacheError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(timeout))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(RedisCache {
            conn,
            release: Script::new(RELEASE),
        })
    }

    /// The connection, for what shares it (the [`crate::limits::RedisLimiter`]).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let mut conn = self.conn.clone();
        Ok(AsyncCommands::get(&mut conn, key).await?)
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        // MGET with a single key answers a bare value, not a list: always ask through `cmd`.
        Ok(redis::cmd("MGET").arg(keys).query_async(&mut conn).await?)
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), CacheError> {
        let mut conn = self.conn.clone();
        let _: () = conn.pset_ex(key, value, ttl_ms(ttl)).await?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        let mut conn = self.conn.clone();
        let _: () = conn.del(key).await?;
        Ok(())
    }

    async fn delete_game(&self, game: GameId) -> Result<u64, CacheError> {
        let mut conn = self.conn.clone();
        // All of a game's keys share its hash tag, so SCAN on the slot's node finds them all.
        let pattern = format!("{}*", keys::game_prefix(game));
        let mut cursor: u64 = 0;
        let mut deleted = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await?;
            if !batch.is_empty() {
                let n: u64 = redis::cmd("UNLINK")
                    .arg(&batch)
                    .query_async(&mut conn)
                    .await?;
                deleted += n;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    async fn try_acquire(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, CacheError> {
        let mut conn = self.conn.clone();
        let opts = SetOptions::default()
            .conditional_set(ExistenceCheck::NX)
            .with_expiration(SetExpiry::PX(ttl_ms(ttl)));
        let reply: Option<String> = conn.set_options(key, owner, opts).await?;
        Ok(reply.is_some())
    }

    async fn release(&self, key: &str, owner: &str) -> Result<bool, CacheError> {
        let mut conn = self.conn.clone();
        let n: i64 = self
            .release
            .key(key)
            .arg(owner)
            .invoke_async(&mut conn)
            .await?;
        Ok(n == 1)
    }

    async fn ping(&self) -> Result<(), CacheError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }
}
