//! The in-process event stream of the embedded deployment: a bounded ring per game and a
//! broadcast channel to its subscribers.
//!
//! A game costs memory only while it is followed: the broadcast channel (which preallocates its
//! slots) is made on the first subscriber and dropped with the last, and the events of a game
//! nobody follows are forgotten after [`IDLE`] (its committed ones are still in the SQL outbox,
//! which the event route replays from). What remains of it is a few ids — where the stream was
//! and what it lost — so that a client resuming into it gets `reset` only if a transient event
//! after its id is gone; after [`FORGET`] those go too.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::fanout::{self, BROADCAST_CAPACITY, Live, Replay, Replayed};
use super::{
    Bounds, DEFAULT_MAX_LEN, EventStream, LastSeq, Position, Published, StreamError, StreamId,
    Subscription,
};
use crate::events::GameEvent;
use crate::ids::GameId;

/// A game without subscribers is dropped after this long without a publish.
const IDLE: Duration = Duration::from_secs(60);
/// A game idle this long is forgotten entirely (as Redis expires a game's stream).
const FORGET: Duration = Duration::from_secs(24 * 3600);
/// Idle games are looked for once per this many publishes.
const SWEEP_EVERY: u64 = 1024;

struct GameLog {
    events: VecDeque<Live>,
    /// The newest id trimmed away, if any.
    trimmed: Option<StreamId>,
    /// See [`Bounds::lost`]: the first id this stream held, raised to each transient id trimmed
    /// or forgotten.
    lost: Option<StreamId>,
    /// Present while someone subscribes.
    tx: Option<broadcast::Sender<Live>>,
    touched: Instant,
}

impl GameLog {
    fn top(&self) -> Option<StreamId> {
        self.events.back().map(|(id, _)| *id).or(self.trimmed)
    }

    fn bounds(&self) -> Bounds {
        Bounds {
            top: self.top(),
            trimmed: self.trimmed,
            lost: self.lost,
        }
    }

    fn drop_front(&mut self) {
        if let Some((id, _)) = self.events.pop_front() {
            self.trimmed = Some(id);
            if id.is_transient() {
                self.lost = self.lost.max(Some(id));
            }
        }
    }

    /// Drops the events of an idle game, keeping where it was and what it lost.
    fn forget_events(&mut self) {
        while !self.events.is_empty() {
            self.drop_front();
        }
        self.events.shrink_to_fit();
    }

    fn push(&mut self, entry: Live, max_len: usize) {
        self.lost.get_or_insert(entry.0);
        self.events.push_back(entry.clone());
        while self.events.len() > max_len {
            self.drop_front();
        }
        self.touched = Instant::now();
        if let Some(tx) = &self.tx {
            if tx.receiver_count() == 0 {
                self.tx = None;
            } else {
                let _ = tx.send(entry);
            }
        }
    }
}

struct Inner {
    games: Mutex<HashMap<GameId, Arc<Mutex<GameLog>>>>,
    max_len: usize,
    publishes: std::sync::atomic::AtomicU64,
    /// Where a game's first transient event learns the game's log seq.
    last_seq: std::sync::OnceLock<Arc<dyn LastSeq>>,
}

/// The in-process [`EventStream`]. Cloning shares it.
#[derive(Clone)]
pub struct MemoryStream {
    inner: Arc<Inner>,
}

impl MemoryStream {
    /// A stream keeping the last `max_len` events of each game.
    pub fn new(max_len: usize) -> MemoryStream {
        MemoryStream {
            inner: Arc::new(Inner {
                games: Mutex::new(HashMap::new()),
                max_len: max_len.max(1),
                publishes: Default::default(),
                last_seq: Default::default(),
            }),
        }
    }

    /// Where a transient event published into an empty game stream learns the game's newest
    /// log seq (the store). Without it such an event's id starts at seq 0.
    pub fn set_last_seq(&self, source: Arc<dyn LastSeq>) {
        let _ = self.inner.last_seq.set(source);
    }
}

impl MemoryStream {
    /// How many games the stream holds (followed, or published to within [`IDLE`]).
    pub fn game_count(&self) -> usize {
        self.inner.len()
    }
}

impl Default for MemoryStream {
    fn default() -> Self {
        MemoryStream::new(DEFAULT_MAX_LEN)
    }
}

impl Inner {
    fn game(&self, game: GameId) -> Arc<Mutex<GameLog>> {
        let n = self
            .publishes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut games = self.games.lock().expect("stream registry lock");
        if n % SWEEP_EVERY == SWEEP_EVERY - 1 {
            games.retain(|_, log| {
                let mut log = log.lock().expect("game stream lock");
                if log.tx.as_ref().is_some_and(|tx| tx.receiver_count() > 0)
                    || log.touched.elapsed() < IDLE
                {
                    return true;
                }
                log.forget_events();
                log.touched.elapsed() < FORGET
            });
        }
        games
            .entry(game)
            .or_insert_with(|| {
                Arc::new(Mutex::new(GameLog {
                    events: VecDeque::new(),
                    trimmed: None,
                    lost: None,
                    tx: None,
                    touched: Instant::now(),
                }))
            })
            .clone()
    }

    /// How many games the stream currently holds.
    fn len(&self) -> usize {
        self.games.lock().expect("stream registry lock").len()
    }
}

#[async_trait]
impl Replay for Inner {
    async fn replay(&self, game: GameId, after: Option<StreamId>) -> Result<Replayed, StreamError> {
        let log = self.game(game);
        let log = log.lock().expect("game stream lock");
        let events = log
            .events
            .iter()
            .filter(|(id, _)| after.is_none_or(|a| *id > a))
            .cloned()
            .collect();
        let missed = log.bounds().missed(after);
        Ok(Replayed { events, missed })
    }
}

#[async_trait]
impl EventStream for MemoryStream {
    async fn publish(&self, game: GameId, event: &GameEvent) -> Result<StreamId, StreamError> {
        let log = self.inner.game(game);
        let empty = log.lock().expect("game stream lock").top().is_none();
        let log_seq = match (empty, self.inner.last_seq.get()) {
            (true, Some(source)) => source.last_seq(game).await?,
            _ => 0,
        };
        let mut log = log.lock().expect("game stream lock");
        let id = StreamId::transient_after(log.top(), log_seq, super::now_us());
        log.push((id, Arc::new(event.clone())), self.inner.max_len);
        Ok(id)
    }

    async fn publish_committed(
        &self,
        game: GameId,
        entries: &[(StreamId, GameEvent)],
        _check_gap: bool,
    ) -> Result<Published, StreamError> {
        // One process writes each embedded game, so its committed events arrive in order.
        let log = self.inner.game(game);
        let mut log = log.lock().expect("game stream lock");
        for (id, event) in entries {
            if log.top().is_none_or(|top| *id > top) {
                log.push((*id, Arc::new(event.clone())), self.inner.max_len);
            }
        }
        Ok(Published::Done)
    }

    async fn subscribe(&self, game: GameId, from: Position) -> Result<Subscription, StreamError> {
        let log = self.inner.game(game);
        let (rx, tail) = {
            let mut log = log.lock().expect("game stream lock");
            let tx = log
                .tx
                .get_or_insert_with(|| broadcast::channel(BROADCAST_CAPACITY).0);
            (tx.subscribe(), log.events.back().map(|(id, _)| *id))
        };
        Ok(fanout::subscribe(self.inner.clone(), game, from, tail, rx))
    }

    async fn bounds(&self, game: GameId) -> Result<Bounds, StreamError> {
        let log = self.inner.game(game);
        let bounds = log.lock().expect("game stream lock").bounds();
        Ok(bounds)
    }

    async fn ping(&self) -> Result<(), StreamError> {
        Ok(())
    }
}
