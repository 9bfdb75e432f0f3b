//! The cache: where the slow path leaves content for the hot path. A byte-level [`Cache`] trait
//! with two backends ([`RedisCache`], [`MemoryCache`]), typed [`Key`]s and values on top
//! ([`CacheExt`], [`Batch`]), and the dispatch guard (set-if-absent with an owner token).
//!
//! Every key of a game starts with `hp:{<game id>}:` — the braces are a Redis Cluster hash tag,
//! so all of a game's keys live in one slot and a multi-get of them is one round trip.

mod memory;
mod redis;

use std::marker::PhantomData;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use self::memory::MemoryCache;
pub use self::redis::RedisCache;

use crate::ids::{ConflictId, GameId, PhaseId};
use crate::model::{BeatText, CanonReferences, Narration, SocialBundle};
use crate::state::GameState;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache backend error: {0}")]
    Backend(String),
    #[error("cache value under `{key}` does not decode: {message}")]
    Decode { key: String, message: String },
}

impl From<::redis::RedisError> for CacheError {
    fn from(e: ::redis::RedisError) -> Self {
        CacheError::Backend(e.to_string())
    }
}

/// A key-value cache with TTLs and an owner-token guard. Values are opaque bytes here; see
/// [`CacheExt`] for typed access.
#[async_trait]
pub trait Cache: Send + Sync {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError>;
    /// All `keys` in one round trip; the answer is in the order of `keys`.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError>;
    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), CacheError>;
    async fn delete(&self, key: &str) -> Result<(), CacheError>;
    /// Deletes every key of `game`; returns how many there were (approximately, in-process).
    async fn delete_game(&self, game: GameId) -> Result<u64, CacheError>;
    /// Sets `key` to `owner` for `ttl` only if it is absent; `true` if this call took it.
    async fn try_acquire(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, CacheError>;
    /// Deletes `key` only if `owner` holds it; `true` if it did.
    async fn release(&self, key: &str, owner: &str) -> Result<bool, CacheError>;
    /// Checks the backend answers (for `/readyz`).
    async fn ping(&self) -> Result<(), CacheError>;
}

/// A typed cache key: the key string and the type stored under it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key<T> {
    name: String,
    _value: PhantomData<fn() -> T>,
}

impl<T> Key<T> {
    fn new(name: String) -> Self {
        Key {
            name,
            _value: PhantomData,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }
}

/// The keys of the contract between the paths.
pub mod keys {
    use super::*;

    /// The prefix of every key of `game`, hash tag included.
    pub fn game_prefix(game: GameId) -> String {
        format!("hp:{{{game}}}:")
    }

    pub fn snapshot(game: GameId) -> Key<GameState> {
        Key::new(format!("hp:{{{game}}}:snapshot"))
    }

    pub fn narration(game: GameId, conflict: &ConflictId, phase: &PhaseId) -> Key<Narration> {
        Key::new(format!("hp:{{{game}}}:narration:{conflict}:{phase}"))
    }

    pub fn beat(game: GameId, conflict: &ConflictId, phase: &PhaseId, beat: u32) -> Key<BeatText> {
        Key::new(format!("hp:{{{game}}}:beat:{conflict}:{phase}:{beat}"))
    }

    pub fn social(game: GameId) -> Key<SocialBundle> {
        Key::new(format!("hp:{{{game}}}:social"))
    }

    pub fn canon_references(game: GameId) -> Key<CanonReferences> {
        Key::new(format!("hp:{{{game}}}:canon-refs"))
    }

    /// The dispatch guard of a job (its dedupe key); games' guards live in the game's slot.
    pub fn dispatch_guard(game: Option<GameId>, dedupe_key: &str) -> String {
        match game {
            Some(game) => format!("hp:{{{game}}}:guard:{dedupe_key}"),
            None => format!("hp:guard:{dedupe_key}"),
        }
    }
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, CacheError> {
    serde_json::from_slice(bytes).map_err(|e| CacheError::Decode {
        key: key.to_owned(),
        message: e.to_string(),
    })
}

/// Typed access over any [`Cache`]. Values are stored as JSON.
#[async_trait]
pub trait CacheExt: Cache {
    async fn get_typed<T: DeserializeOwned + Send>(
        &self,
        key: &Key<T>,
    ) -> Result<Option<T>, CacheError> {
        match self.get(key.as_str()).await? {
            Some(bytes) => decode(key.as_str(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    async fn set_typed<T: Serialize + Sync>(
        &self,
        key: &Key<T>,
        value: &T,
        ttl: Duration,
    ) -> Result<(), CacheError> {
        let bytes = serde_json::to_vec(value).map_err(|e| CacheError::Decode {
            key: key.as_str().to_owned(),
            message: e.to_string(),
        })?;
        self.set(key.as_str(), bytes, ttl).await
    }
}

impl<C: Cache + ?Sized> CacheExt for C {}

/// A typed multi-get: add the keys one action needs, fetch them in one round trip, take each
/// value out by its slot.
///
/// ```
/// # async fn demo(cache: &dyn hotpath_cache::cache::Cache, game: hotpath_cache::GameId) -> Result<(), hotpath_cache::cache::CacheError> {
/// use hotpath_cache::cache::{Batch, keys};
/// let mut batch = Batch::default();
/// let snapshot = batch.add(&keys::snapshot(game));
/// let social = batch.add(&keys::social(game));
/// let mut got = batch.fetch(cache).await?;
/// let _state = got.take(snapshot)?;
/// let _social = got.take(social)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct Batch {
    keys: Vec<String>,
}

/// Where a value of type `T` will be in a fetched [`Batch`].
#[derive(Debug)]
pub struct Slot<T> {
    index: usize,
    _value: PhantomData<fn() -> T>,
}

impl<T> Clone for Slot<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Slot<T> {}

impl Batch {
    pub fn add<T>(&mut self, key: &Key<T>) -> Slot<T> {
        self.keys.push(key.name.clone());
        Slot {
            index: self.keys.len() - 1,
            _value: PhantomData,
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub async fn fetch(self, cache: &dyn Cache) -> Result<Fetched, CacheError> {
        let values = cache.get_many(&self.keys).await?;
        Ok(Fetched {
            keys: self.keys,
            values,
        })
    }
}

/// The values of a fetched [`Batch`].
#[derive(Debug)]
pub struct Fetched {
    keys: Vec<String>,
    values: Vec<Option<Vec<u8>>>,
}

impl Fetched {
    /// The value in `slot`: `Ok(None)` on a miss, `Err` if what is stored does not decode.
    pub fn take<T: DeserializeOwned>(&mut self, slot: Slot<T>) -> Result<Option<T>, CacheError> {
        match self.values.get_mut(slot.index).and_then(Option::take) {
            Some(bytes) => decode(&self.keys[slot.index], &bytes).map(Some),
            None => Ok(None),
        }
    }
}
