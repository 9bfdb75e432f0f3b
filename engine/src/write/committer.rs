//! The committer: group commit without a timer. It waits for one item, takes every item that
//! queued meanwhile (up to `max_batch`), commits them in one transaction and hands each writer
//! its outcome and the relay the committed stream events. At low load a batch is one action; under
//! load batches grow by themselves. One transaction is in flight at a time, which keeps each
//! game's items in seq order.
//!
//! Items whose deadline passed before their batch began are refused (their client was answered
//! 503); a batch that began is never abandoned, so an item whose client gave up may still
//! commit — which is why a retry should carry an `Idempotency-Key`.
//!
//! A game whose item failed (the store is down, the deadline passed, the seq was taken) is
//! poisoned for that writer generation: its later items of the same generation are refused
//! without touching the store, since they were applied on top of a state that did not commit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use hotpath_cache::GameId;
use hotpath_cache::events::GameEvent;
use hotpath_cache::store::{BatchItem, ItemError, ItemOutcome, Store, StoreError};
use hotpath_cache::stream::StreamId;

use super::Fate;
use super::relay::Relay;

/// One item on its way to the store.
pub(crate) struct Submit {
    pub item: BatchItem,
    /// The writer generation that applied it (see [`super::writer`]).
    pub generation: u64,
    /// The writer's id for it.
    pub id: u64,
    /// Past this, the item is refused instead of committed: its client was answered 503.
    pub deadline: tokio::time::Instant,
    /// Settles the race between this deadline and the start of the item's commit.
    pub fate: Fate,
    /// The writer's outcome channel (unbounded: it holds at most the writer's items in flight).
    pub writer: mpsc::UnboundedSender<Outcome>,
}

/// What the committer tells a writer.
pub(crate) struct Outcome {
    pub id: u64,
    pub generation: u64,
    /// Boxed: a writer's outcome channel allocates slots of this size.
    pub result: Box<ItemOutcome>,
}

#[derive(Clone)]
pub(crate) struct Handle {
    tx: mpsc::UnboundedSender<Submit>,
}

impl Handle {
    pub fn start(store: Arc<dyn Store>, relay: Relay, max_batch: usize) -> Handle {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, relay, rx, max_batch.max(1)));
        Handle { tx }
    }

    /// Queues an item; `false` if the committer stopped. The queue is bounded by the writers'
    /// own queues: each writer has at most its queue's worth of actions in flight.
    pub fn submit(&self, submit: Submit) -> bool {
        self.tx.send(submit).is_ok()
    }
}

/// How long a failed generation is refused: far longer than any action's budget, after which
/// its items are refused for their deadline anyway.
const POISON_KEPT_FOR: std::time::Duration = std::time::Duration::from_secs(60);
const POISON_PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

async fn run(
    store: Arc<dyn Store>,
    relay: Relay,
    mut rx: mpsc::UnboundedReceiver<Submit>,
    max_batch: usize,
) {
    // Game → the newest writer generation whose items must be refused, and since when.
    // Generations are unique in the process, so an entry never refuses a later writer's items;
    // it is forgotten once every item it could refuse is past its deadline anyway.
    let mut poisoned: HashMap<GameId, (u64, tokio::time::Instant)> = HashMap::new();
    let mut pruned = tokio::time::Instant::now();
    let mut batch: Vec<Submit> = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut batch, max_batch).await > 0 {
        let now = tokio::time::Instant::now();
        if now.duration_since(pruned) >= POISON_PRUNE_EVERY {
            poisoned.retain(|_, (_, since)| now.duration_since(*since) < POISON_KEPT_FOR);
            pruned = now;
        }
        // Outcomes go to the writers in submission order, refusals included, once the batch
        // has committed: a writer must learn that its earlier items committed before it hears
        // that a later one was refused, or it would answer 503 for items that commit.
        let mut told: Vec<(usize, Told)> = Vec::with_capacity(batch.len());
        let mut live: Vec<(usize, Submit)> = Vec::with_capacity(batch.len());
        for (position, s) in batch.drain(..).enumerate() {
            let game = s.item.game_id;
            match poisoned.get(&game) {
                Some((g, _)) if s.generation <= *g => {
                    let error = "an earlier action of this game did not commit";
                    told.push((position, refusal(s, error)));
                    continue;
                }
                Some(_) => {
                    poisoned.remove(&game);
                }
                None => {}
            }
            // Its client is (or is about to be) answered 503 at this deadline: refuse it, unless
            // an earlier commit of it already began (the client then waits for the outcome).
            if s.deadline <= now {
                s.fate.abandon();
            }
            if !s.fate.begin_commit() {
                poisoned.insert(game, (s.generation, now));
                metrics::counter!("hotpath_commit_expired_total").increment(1);
                let error = "the action's budget ran out before its commit";
                told.push((position, refusal(s, error)));
                continue;
            }
            live.push((position, s));
        }
        if live.is_empty() {
            tell(told);
            continue;
        }
        let (items, meta): (Vec<BatchItem>, Vec<_>) = live
            .into_iter()
            .map(|(position, s)| (s.item, (position, s.id, s.generation, s.writer)))
            .unzip();
        let games: Vec<(GameId, u64)> = items.iter().map(|i| (i.game_id, i.seq)).collect();
        let started = Instant::now();
        let size = items.len();
        // Never abandoned half way: a transaction dropped mid-statement would keep its locks
        // on a pooled connection and stall every later batch. Clients are answered 503 at
        // their own deadlines meanwhile; the database bounds a stuck statement itself
        // (`statement_timeout`, set by the store).
        let outcomes = store.commit_batch(items).await;
        metrics::histogram!("hotpath_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("hotpath_commit_batch_size").record(size as f64);
        let mut published = Vec::new();
        for (((game, seq), (position, id, generation, writer)), result) in
            games.into_iter().zip(meta).zip(outcomes)
        {
            match &result {
                Ok(finished) => {
                    let entries: Vec<(StreamId, GameEvent)> = finished.stream_entries(seq);
                    if !entries.is_empty() {
                        published.push((game, entries));
                    }
                }
                Err(_) => {
                    poisoned.insert(game, (generation, tokio::time::Instant::now()));
                }
            }
            let outcome = Outcome {
                id,
                generation,
                result: Box::new(result),
            };
            told.push((position, (writer, outcome)));
        }
        tell(told);
        relay.publish(published);
    }
}

/// An outcome and the writer it goes to.
type Told = (mpsc::UnboundedSender<Outcome>, Outcome);

/// Sends each writer its outcomes in the order its items were submitted.
fn tell(mut told: Vec<(usize, Told)>) {
    told.sort_by_key(|(position, _)| *position);
    for (_, (writer, outcome)) in told {
        // A writer that retired has nobody left to tell.
        let _ = writer.send(outcome);
    }
}

fn refusal(s: Submit, error: &str) -> Told {
    (
        s.writer,
        Outcome {
            id: s.id,
            generation: s.generation,
            result: Box::new(Err(ItemError::Store(StoreError::Unavailable(error.into())))),
        },
    )
}
