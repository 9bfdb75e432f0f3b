//! The subscriber side shared by both backends: one broadcast channel per game fed by a single
//! source, and per subscriber a small task that replays from the backend, then forwards live
//! events, skipping what it already sent, and replays again if it falls behind.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::{broadcast, mpsc};

use super::{Position, StreamError, StreamId, StreamItem, Subscription};
use crate::events::GameEvent;
use crate::ids::GameId;

/// Capacity of a game's broadcast channel; a subscriber further behind replays from the backend.
pub(super) const BROADCAST_CAPACITY: usize = 1024;
/// Events buffered per subscriber before its task waits for the client.
const SUBSCRIBER_BUFFER: usize = 256;

pub(super) type Live = (StreamId, Arc<GameEvent>);

/// What is still held after a position.
pub(super) struct Replayed {
    pub events: Vec<Live>,
    /// Events after the requested id were trimmed away.
    pub missed: bool,
}

#[async_trait]
pub(super) trait Replay: Send + Sync + 'static {
    /// Events after `after` (all if `None`) still held by the stream.
    async fn replay(&self, game: GameId, after: Option<StreamId>) -> Result<Replayed, StreamError>;
}

/// Starts a subscriber. `rx` must have been subscribed before `tail` was read, so that nothing
/// published in between is lost: it is either in the replay or arrives on `rx`.
pub(super) fn subscribe(
    source: Arc<dyn Replay>,
    game: GameId,
    from: Position,
    tail: Option<StreamId>,
    mut rx: broadcast::Receiver<Live>,
) -> Subscription {
    let (tx, out) = mpsc::channel::<StreamItem>(SUBSCRIBER_BUFFER);
    tokio::spawn(async move {
        let (mut last, replay_from, reset_allowed) = match from {
            Position::Live => (tail, None, false),
            Position::Start => (None, Some(None), false),
            Position::After(id) => (Some(id), Some(Some(id)), true),
        };
        if let Some(after) = replay_from {
            match catch_up(&*source, &tx, game, after, reset_allowed).await {
                Some(new_last) => last = new_last.or(last),
                None => return,
            }
        }
        loop {
            // Wait for the next event, or for the client to go away: a subscriber whose client
            // left must drop its receiver promptly so the game's reader can retire.
            let received = tokio::select! {
                received = rx.recv() => received,
                () = tx.closed() => return,
            };
            match received {
                Ok((id, event)) => {
                    if last.is_some_and(|l| id <= l) {
                        continue;
                    }
                    last = Some(id);
                    let item = StreamItem::Event {
                        id,
                        event: (*event).clone(),
                    };
                    if tx.send(item).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    match catch_up(&*source, &tx, game, last, true).await {
                        Some(new_last) => last = new_last.or(last),
                        None => return,
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    futures::stream::unfold(out, |mut out| async move {
        out.recv().await.map(|item| (item, out))
    })
    .boxed()
}

/// Sends what the backend holds after `after`; `None` if the subscription is over (client gone
/// or backend failed), else the last id sent.
async fn catch_up(
    source: &dyn Replay,
    tx: &mpsc::Sender<StreamItem>,
    game: GameId,
    after: Option<StreamId>,
    reset_allowed: bool,
) -> Option<Option<StreamId>> {
    let replayed = match source.replay(game, after).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%game, error = %e, "event stream replay failed; ending the subscription");
            return None;
        }
    };
    if replayed.missed && reset_allowed {
        tx.send(StreamItem::Reset).await.ok()?;
    }
    let mut last = None;
    for (id, event) in replayed.events {
        last = Some(id);
        tx.send(StreamItem::Event {
            id,
            event: (*event).clone(),
        })
        .await
        .ok()?;
    }
    Some(last)
}
