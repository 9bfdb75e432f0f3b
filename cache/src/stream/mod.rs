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

/// The lowest `n` of a transient event's id `<seq>-<n>`. Committed events are numbered from 0
/// within their seq, far below it; a transient one takes the publish time in microseconds since
/// the epoch (or the next number if that is not above the newest), so ids given after a
/// restart or a lost stream sort after every id given before it.
pub const TRANSIENT_BASE: u64 = 1 << 40;

impl StreamId {
    /// Whether this is a transient event's id (job progress, content, dialogue), which only the
    /// stream ever holds; a committed one is also in the outbox.
    pub fn is_transient(&self) -> bool {
        self.seq >= TRANSIENT_BASE
    }

    /// The id of a transient event published after `top` (the stream's newest), or, on a stream
    /// that holds nothing, after the game's newest log seq `log_seq`.
    pub fn transient_after(top: Option<StreamId>, log_seq: u64, now_us: u64) -> StreamId {
        let now = now_us.max(TRANSIENT_BASE);
        match top {
            Some(top) => StreamId {
                ms: top.ms,
                seq: top.seq.saturating_add(1).max(now),
            },
            None => StreamId {
                ms: log_seq,
                seq: now,
            },
        }
    }
}

/// Microseconds since the epoch, for transient ids.
pub(crate) fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
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
    /// Events after the requested id are gone (trimmed away, or lost with the stream's data):
    /// reload the state. What the stream still holds follows.
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

/// What a game's stream holds, for a resume to place a client's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bounds {
    /// The newest id published (held, or trimmed away); `None` if the stream holds nothing for
    /// the game — never published to, or its data was lost (a restart of the embedded process,
    /// a Redis flush, a TTL).
    pub top: Option<StreamId>,
    /// The newest id trimmed away by the length bound: events up to it are gone from the stream
    /// (committed ones are still in the outbox).
    pub trimmed: Option<StreamId>,
    /// Events below this id may be gone with nothing to replay them from: the stream's data
    /// starts here (anything before was lost), or a transient event up to here was trimmed. A
    /// resume from below it gets `reset`.
    pub lost: Option<StreamId>,
}

impl Bounds {
    /// Whether a subscriber after `after` may have missed events the stream cannot replay.
    pub fn missed(&self, after: Option<StreamId>) -> bool {
        let Some(after) = after else { return false };
        self.trimmed.is_some_and(|t| after < t) || self.lost.is_none_or(|l| after < l)
    }
}

/// Where a stream that holds nothing for a game learns the game's newest log seq, so that a
/// transient event published into it sorts after the game's committed events.
#[async_trait]
pub trait LastSeq: Send + Sync {
    async fn last_seq(&self, game: GameId) -> Result<u64, StreamError>;
}

/// [`LastSeq`] from the store (the game's log).
pub struct StoreSeqs(pub std::sync::Arc<dyn crate::store::Store>);

#[async_trait]
impl LastSeq for StoreSeqs {
    async fn last_seq(&self, game: GameId) -> Result<u64, StreamError> {
        let beyond = StreamId {
            ms: i64::MAX as u64,
            seq: 0,
        };
        self.0
            .stream_events_after(game, beyond, 0)
            .await
            .map(|found| found.last_seq)
            .map_err(|e| StreamError::Backend(format!("the game's last seq: {e}")))
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
    /// Publishes a transient event (job progress, dialogue chunks): its id is `<seq>-<n>` with
    /// the stream's newest seq (or, on a stream that holds nothing, the game's newest log seq)
    /// and `n` at least [`TRANSIENT_BASE`] (see there), so it sorts after the committed event it
    /// follows and after anything published before a restart or a lost stream.
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
    /// What the stream holds for `game` (see [`Bounds`]).
    async fn bounds(&self, game: GameId) -> Result<Bounds, StreamError>;
    /// Checks the backend answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StreamError>;
}

/// How many events a game's stream keeps by default.
pub const DEFAULT_MAX_LEN: usize = 10_000;
