//! The in-process cache of the embedded deployment, on moka (bounded, per-entry TTL).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;
use moka::future::Cache as Moka;
use moka::ops::compute::Op;

use super::{Cache, CacheError, keys};
use crate::ids::GameId;

#[derive(Clone)]
struct Entry {
    bytes: Arc<[u8]>,
    ttl: Duration,
}

/// Each entry lives for the TTL it was set with.
struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, value: &Entry, _now: Instant) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Entry,
        _now: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The in-process [`Cache`]: one per process, shared by the hot path and in-process workers.
#[derive(Clone)]
pub struct MemoryCache {
    entries: Moka<String, Entry>,
}

impl MemoryCache {
    /// A cache holding at most `max_entries` values (least recently used go first).
    pub fn new(max_entries: u64) -> MemoryCache {
        let entries = Moka::builder()
            .max_capacity(max_entries)
            .expire_after(PerEntryTtl)
            .support_invalidation_closures()
            .build();
        MemoryCache { entries }
    }
}

impl MemoryCache {
    /// A cache holding at most `max_bytes` of keys and values (least recently used go first):
    /// memory an operator can budget, whatever the values weigh.
    pub fn with_max_bytes(max_bytes: u64) -> MemoryCache {
        let entries = Moka::builder()
            .weigher(|k: &String, v: &Entry| {
                u32::try_from(k.len() + v.bytes.len()).unwrap_or(u32::MAX)
            })
            .max_capacity(max_bytes)
            .expire_after(PerEntryTtl)
            .support_invalidation_closures()
            .build();
        MemoryCache { entries }
    }
}

/// The embedded deployment's default: 32 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 32 * 1024 * 1024;

impl Default for MemoryCache {
    fn default() -> Self {
        MemoryCache::with_max_bytes(DEFAULT_MAX_BYTES)
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        Ok(self.entries.get(key).await.map(|e| e.bytes.to_vec()))
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.entries.get(k).await.map(|e| e.bytes.to_vec()));
        }
        Ok(out)
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), CacheError> {
        let entry = Entry {
            bytes: value.into(),
            ttl,
        };
        self.entries.insert(key.to_owned(), entry).await;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        self.entries.invalidate(key).await;
        Ok(())
    }

    async fn delete_game(&self, game: GameId) -> Result<u64, CacheError> {
        let prefix = keys::game_prefix(game);
        let count = self
            .entries
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .count() as u64;
        self.entries
            .invalidate_entries_if(move |k, _| k.starts_with(&prefix))
            .map_err(|e| CacheError::Backend(e.to_string()))?;
        Ok(count)
    }

    async fn try_acquire(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, CacheError> {
        let owner: Arc<[u8]> = owner.as_bytes().into();
        // `and_compute_with` runs under the entry's lock: exactly one caller inserts.
        let result = self
            .entries
            .entry(key.to_owned())
            .and_compute_with(|current| {
                let op = match current {
                    Some(_) => Op::Nop,
                    None => Op::Put(Entry { bytes: owner, ttl }),
                };
                std::future::ready(op)
            })
            .await;
        Ok(matches!(
            result,
            moka::ops::compute::CompResult::Inserted(_)
        ))
    }

    async fn release(&self, key: &str, owner: &str) -> Result<bool, CacheError> {
        let result = self
            .entries
            .entry(key.to_owned())
            .and_compute_with(|current| {
                let op = match current {
                    Some(e) if &*e.value().bytes == owner.as_bytes() => Op::Remove,
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
        Ok(matches!(result, moka::ops::compute::CompResult::Removed(_)))
    }

    async fn ping(&self) -> Result<(), CacheError> {
        Ok(())
    }
}
