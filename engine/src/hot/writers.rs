//! The writers of the games this process serves: one task per game ([`super::writer`]), found
//! or started by [`Writers::send`], and the wait for a writer's reply inside the action's
//! budget.

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

use super::writer::{self, Act};
use super::{HotConfig, HotError};
use crate::write::{Fate, committer, relay};

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
    pub fate: Fate,
    pub reply: tokio::sync::oneshot::Sender<Result<u64, HotError>>,
}

/// The writer's reply. At the deadline, an item not yet in a commit is abandoned (503: not
/// applied); one whose commit has begun is waited for up to one more budget, then answered
/// [`HotError::OutcomeUnknown`].
async fn reply_by<T>(
    deadline: tokio::time::Instant,
    grace: Duration,
    fate: &Fate,
    mut answer: tokio::sync::oneshot::Receiver<Result<T, HotError>>,
    what: &str,
) -> Result<T, HotError> {
    let received = match tokio::time::timeout_at(deadline, &mut answer).await {
        Ok(received) => received,
        Err(_) if fate.abandon() => {
            return Err(HotError::Unavailable(format!(
                "the {what} could not be recorded within the budget and was not applied; retry"
            )));
        }
        Err(_) => match tokio::time::timeout_at(deadline + grace, answer).await {
            Ok(received) => received,
            Err(_) => {
                metrics::counter!("hotpath_outcome_unknown_total").increment(1);
                return Err(unknown(
                    fate,
                    &format!("the {what} is still being recorded; retry"),
                ));
            }
        },
    };
    received.unwrap_or_else(|_| {
        // The writer is gone (the process is stopping): not applied only if it never will be.
        let stopped = "the game's writer stopped; retry";
        if fate.abandon() {
            Err(HotError::Unavailable(stopped.into()))
        } else {
            Err(unknown(fate, stopped))
        }
    })
}

/// An outcome not known yet: 202 for an action; for an event appended outside an action
/// (no id to ask about), 503 with `message`.
fn unknown(fate: &Fate, message: &str) -> HotError {
    match fate.action_id() {
        Some(action_id) => HotError::OutcomeUnknown(action_id),
        None => HotError::Unavailable(message.into()),
    }
}

/// The writers of this process, with the committer and the relay they hand their items to.
/// Cheap to clone.
#[derive(Clone)]
pub struct Writers {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) writers: Mutex<HashMap<GameId, mpsc::Sender<Msg>>>,
    pub(super) committer: committer::Handle,
    pub(super) store: Arc<dyn Store>,
    pub(super) cache: Arc<dyn Cache>,
    pub(super) config: HotConfig,
}

impl Writers {
    /// Starts the committer and the relay (tasks of the current runtime).
    pub fn start(
        store: Arc<dyn Store>,
        cache: Arc<dyn Cache>,
        stream: Arc<dyn EventStream>,
        config: HotConfig,
    ) -> Writers {
        let relay = relay::Relay::start(store.clone(), stream, config.relay_recovery);
        let committer = committer::Handle::start(store.clone(), relay, config.max_batch);
        Writers {
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
        let fate = Fate::new(Some(act.action.id));
        self.send(
            game,
            scenario,
            Msg::Act(Box::new(Act {
                reply: Some(reply),
                fate: fate.clone(),
                ..act
            })),
        )?;
        let grace = self.inner.config.budget;
        reply_by(deadline, grace, &fate, answer, "action").await
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
        let fate = Fate::new(None);
        self.send(
            game,
            scenario,
            Msg::Append(Box::new(Append {
                event,
                deadline,
                fate: fate.clone(),
                reply,
            })),
        )?;
        let grace = self.inner.config.budget;
        reply_by(deadline, grace, &fate, answer, "event").await
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
