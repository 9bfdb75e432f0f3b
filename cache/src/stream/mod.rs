//! The per-game event stream clients follow over SSE: publish, and subscribe from a position —
//! replay what is still held after a given id, then live. Bounded length; a subscriber whose id
//! is older than what the stream still holds gets [`StreamItem::Reset`] first, never a silent gap.
//!
//! Backends: [`RedisStream`] (Redis Streams) and [`MemoryStream`]. Both fan out in-process: one
//! process holds one reader per game and every local subscriber is fed from it, so a thousand
//! SSE clients of one game cost one Redis connection, not a thousand.

mod fanout;
mod memory;
mod redis;

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use futures::stream::BoxStream;

pub use self::memory::MemoryStream;
pub use self::redis::RedisStream;

use crate::events::GameEvent;
use crate::ids::GameId;

/// A stream entry id, `<ms>-<seq>` as in Redis; ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a stream id: expected `<number>-<number>`")]
pub struct BadStreamId(pub String);

impl FromStr for StreamId {
    type Err = BadStreamId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadStreamId(s.to_owned());
        let (ms, seq) = s.split_once('-').ok_or_else(bad)?;
        Ok(StreamId {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Only events published from now on.
    Live,
    /// Everything the stream still holds, then live.
    Start,
    /// Everything after this id (a client's `Last-Event-ID`), then live.
    After(StreamId),
}

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    Event {
        id: StreamId,
        event: GameEvent,
    },
    /// Events after the requested id were trimmed away: reload the state. What the stream still
    /// holds follows.
    Reset,
}

/// A live subscription; it ends if the backend fails (the client resumes with its last id).
pub type Subscription = BoxStream<'static, StreamItem>;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("event stream backend error: {0}")]
    Backend(String),
    #[error("event stream entry does not decode: {0}")]
    Decode(String),
}

impl From<::redis::RedisError> for StreamError {
    fn from(e: ::redis::RedisError) -> Self {
        StreamError::Backend(e.to_string())
    }
}

/// What [`EventStream::publish_committed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    Done,
    /// Nothing was published: the stream's newest entry is `top`, and the first entry's seq is
    /// more than one above it — committed events of another process may be missing. The relay
    /// publishes them from the SQL outbox first, then again without the check.
    Gap {
        top: StreamId,
    },
}

#[async_trait]
pub trait EventStream: Send + Sync {
    /// Publishes a transient event (job progress, dialogue chunks): its id follows the stream's
    /// newest entry (`<top seq>-<next>`), so it sorts after the committed event it follows.
    async fn publish(&self, game: GameId, event: &GameEvent) -> Result<StreamId, StreamError>;
    /// Publishes committed events at their own ids (`<seq>-<idx>`, from the outbox), in order.
    /// An id not above the stream's newest entry is skipped: it was published already, so a
    /// relay's retry is a no-op. With `check_gap`, see [`Published::Gap`].
    async fn publish_committed(
        &self,
        game: GameId,
        entries: &[(StreamId, GameEvent)],
        check_gap: bool,
    ) -> Result<Published, StreamError>;
    async fn subscribe(&self, game: GameId, from: Position) -> Result<Subscription, StreamError>;
    /// Checks the backend answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StreamError>;
}

/// How many events a game's stream keeps by default.
pub const DEFAULT_MAX_LEN: usize = 10_000;
