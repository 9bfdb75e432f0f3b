//! The write path: how an action becomes durable, in one place.
//!
//! - [`writer`]: one writer per game in this process. It owns the game's state in memory
//!   (loaded once from the cached snapshot and the log, dropped when idle), applies that game's
//!   actions in order and hands each to the committer — without waiting for the previous one to
//!   commit, so one game's actions pipeline instead of queueing on a round trip.
//! - [`committer`]: takes whatever every writer has pending and commits it in one transaction
//!   ([`Store::commit_batch`]): events, claims, idempotency records, the outbox of stream
//!   events and the jobs. No timer: the next batch is what queued while the last one committed.
//! - [`relay`]: publishes committed stream events in commit order per game, and on start what
//!   was committed but perhaps not published.
//!
//! The `UNIQUE (game_id, seq)` of the log is the fence between processes: a writer whose item
//! lost its seq to another process reloads the game and applies its pending actions again.
//!
//! This is hot-path code (`hotpath.toml` lists it as a root): it reaches the store, the cache
//! and the stream, never an LLM.

pub mod committer;
pub mod relay;
pub mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use hotpath_cache::GameId;
use hotpath_cache::cache::Cache;
use hotpath_cache::events::LoggedEvent;
use hotpath_cache::scenario::Scenario;
use hotpath_cache::store::Store;
use hotpath_cache::stream::EventStream;

use crate::hot::{HotConfig, HotError};

pub use self::writer::Act;

/// What a writer is told.
pub(crate) enum Msg {
    Act(Box<Act>),
    /// Append an event outside an action (a player joining); answers its seq.
    Append(Box<Append>),
}

/// An event to append outside an action.
pub(crate) struct Append {
    pub event: LoggedEvent,
    pub deadline: tokio::time::Instant,
    pub reply: tokio::sync::oneshot::Sender<Result<u64, HotError>>,
}

/// The writer's reply, or 503 at the deadline: the client is answered inside its budget even if
/// the commit is still under way.
async fn reply_by<T>(
    deadline: tokio::time::Instant,
    answer: tokio::sync::oneshot::Receiver<Result<T, HotError>>,
    what: &str,
) -> Result<T, HotError> {
    match tokio::time::timeout_at(deadline, answer).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(HotError::Unavailable(
            "the game's writer stopped; retry".into(),
        )),
        Err(_) => Err(HotError::Unavailable(format!(
            "the {what} could not be recorded within the budget; retry"
        ))),
    }
}

/// The write path of this process: the writers of the games it serves, the committer and the
/// relay. Cheap to clone.
#[derive(Clone)]
pub struct WritePath {
    inner: Arc<Inner>,
}

struct Inner {
    writers: Mutex<HashMap<GameId, mpsc::Sender<Msg>>>,
    committer: committer::Handle,
    store: Arc<dyn Store>,
    cache: Arc<dyn Cache>,
    config: HotConfig,
}

impl WritePath {
    /// Starts the committer and the relay (tasks of the current runtime).
    pub fn start(
        store: Arc<dyn Store>,
        cache: Arc<dyn Cache>,
        stream: Arc<dyn EventStream>,
        config: HotConfig,
    ) -> WritePath {
        let relay = relay::Relay::start(store.clone(), stream, config.relay_recovery);
        let committer = committer::Handle::start(store.clone(), relay, config.max_batch);
        WritePath {
            inner: Arc::new(Inner {
                writers: Mutex::new(HashMap::new()),
                committer,
                store,
                cache,
                config,
            }),
        }
    }

    /// Hands `act` to its game's writer and waits for the answer until the action's deadline.
    pub async fn act(
        &self,
        scenario: &Arc<Scenario>,
        act: Act,
    ) -> Result<serde_json::Value, HotError> {
        let deadline = act.deadline;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let game = act.action.game_id;
        self.send(
            game,
            scenario,
            Msg::Act(Box::new(Act {
                reply: Some(reply),
                ..act
            })),
        )?;
        reply_by(deadline, answer, "action").await
    }

    /// Appends `event` to the game's log through its writer; returns its seq.
    pub async fn append(
        &self,
        game: GameId,
        scenario: &Arc<Scenario>,
        event: LoggedEvent,
    ) -> Result<u64, HotError> {
        let deadline = tokio::time::Instant::now() + self.inner.config.budget;
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.send(
            game,
            scenario,
            Msg::Append(Box::new(Append {
                event,
                deadline,
                reply,
            })),
        )?;
        reply_by(deadline, answer, "event").await
    }

    /// How many games have a writer in this process.
    pub fn writer_count(&self) -> usize {
        self.inner.writers.lock().expect("writers lock").len()
    }

    /// Sends to the game's writer, starting one if there is none (or it just retired).
    fn send(&self, game: GameId, scenario: &Arc<Scenario>, msg: Msg) -> Result<(), HotError> {
        let mut writers = self.inner.writers.lock().expect("writers lock");
        let mut msg = msg;
        for _ in 0..2 {
            let tx = writers.entry(game).or_insert_with(|| {
                writer::spawn(
                    game,
                    scenario.clone(),
                    self.clone(),
                    self.inner.config.writer_queue,
                )
            });
            match tx.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    metrics::counter!("hotpath_writer_queue_full_total").increment(1);
                    return Err(HotError::Busy(Duration::from_millis(100)));
                }
                // The writer retired between lookup and send: start another.
                Err(mpsc::error::TrySendError::Closed(m)) => {
                    writers.remove(&game);
                    msg = m;
                }
            }
        }
        Err(HotError::Unavailable(
            "the game's writer could not start; retry".into(),
        ))
    }

    /// A writer leaves the registry when it retires (only if the entry is still its own).
    pub(crate) fn retire(&self, game: GameId, own: &mpsc::Sender<Msg>) {
        let mut writers = self.inner.writers.lock().expect("writers lock");
        if writers.get(&game).is_some_and(|tx| tx.same_channel(own)) {
            writers.remove(&game);
        }
    }
}
