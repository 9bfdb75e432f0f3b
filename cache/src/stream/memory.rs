//! The in-process event stream of the embedded deployment: a bounded ring per game and a
//! broadcast channel to its subscribers.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::fanout::{self, BROADCAST_CAPACITY, Live, Replay, Replayed};
use super::{DEFAULT_MAX_LEN, EventStream, Position, StreamError, StreamId, Subscription};
use crate::events::GameEvent;
use crate::ids::GameId;

struct GameLog {
    events: VecDeque<Live>,
    next: u64,
    /// The newest id trimmed away, if any.
    trimmed: Option<StreamId>,
    tx: broadcast::Sender<Live>,
}

struct Inner {
    games: Mutex<HashMap<GameId, Arc<Mutex<GameLog>>>>,
    max_len: usize,
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
            }),
        }
    }
}

impl Default for MemoryStream {
    fn default() -> Self {
        MemoryStream::new(DEFAULT_MAX_LEN)
    }
}

impl Inner {
    fn game(&self, game: GameId) -> Arc<Mutex<GameLog>> {
        let mut games = self.games.lock().expect("stream registry lock");
        games
            .entry(game)
            .or_insert_with(|| {
                Arc::new(Mutex::new(GameLog {
                    events: VecDeque::new(),
                    next: 1,
                    trimmed: None,
                    tx: broadcast::channel(BROADCAST_CAPACITY).0,
                }))
            })
            .clone()
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
        let missed = matches!((after, log.trimmed), (Some(a), Some(t)) if a < t);
        Ok(Replayed { events, missed })
    }
}

#[async_trait]
impl EventStream for MemoryStream {
    async fn publish(&self, game: GameId, event: &GameEvent) -> Result<StreamId, StreamError> {
        let log = self.inner.game(game);
        let mut log = log.lock().expect("game stream lock");
        let id = StreamId {
            ms: log.next,
            seq: 0,
        };
        log.next += 1;
        let entry = (id, Arc::new(event.clone()));
        log.events.push_back(entry.clone());
        while log.events.len() > self.inner.max_len {
            log.trimmed = log.events.pop_front().map(|(id, _)| id);
        }
        // No subscriber is fine: the ring keeps it for replay.
        let _ = log.tx.send(entry);
        Ok(id)
    }

    async fn subscribe(&self, game: GameId, from: Position) -> Result<Subscription, StreamError> {
        let log = self.inner.game(game);
        let (rx, tail) = {
            let log = log.lock().expect("game stream lock");
            (log.tx.subscribe(), log.events.back().map(|(id, _)| *id))
        };
        Ok(fanout::subscribe(self.inner.clone(), game, from, tail, rx))
    }

    async fn ping(&self) -> Result<(), StreamError> {
        Ok(())
    }
}
