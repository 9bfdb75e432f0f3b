//! The outbox relay: publishes committed stream events to the game's event stream, in commit
//! order per game, after the commit that made them durable.
//!
//! Each event's stream id is `<seq>-<idx>`, given at commit; the stream skips an id not above
//! its newest, so publishing twice is harmless (at-least-once, and every event carries its id).
//! When another process's events for a game are missing below the first one to publish (a gap
//! in seqs), they are read from the outbox and published first. On start, a relay publishes
//! what the last [`RECOVERY_WINDOW`] committed, in case a process died between commit and
//! publish. A publish that fails (the stream is down) is tried again, first in the game's next
//! publish and every [`RETRY_EVERY`], up to [`RETRIES`] times, so a stream that comes back,
//! even empty, gets the events in order. Either way a stream that is down loses nothing: clients
//! resuming with `Last-Event-ID` are served from the outbox, and a live client that sees a hole
//! gets it filled from there (see the event route).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use hotpath_cache::GameId;
use hotpath_cache::events::GameEvent;
use hotpath_cache::store::Store;
use hotpath_cache::stream::{EventStream, Published, StreamId};
use hotpath_cache::time::now_ms;

/// How far back a starting relay republishes committed events.
pub const RECOVERY_WINDOW: Duration = Duration::from_secs(3600);
/// At most this many events are republished on start.
const RECOVERY_LIMIT: u32 = 100_000;

type Entries = Vec<(StreamId, GameEvent)>;

#[derive(Clone)]
pub(crate) struct Relay {
    tx: mpsc::UnboundedSender<Vec<(GameId, Entries)>>,
}

impl Relay {
    /// Starts the relay; with `recover`, it first republishes the recent outbox (for a stream
    /// that outlives this process, i.e. Redis).
    pub fn start(store: Arc<dyn Store>, stream: Arc<dyn EventStream>, recover: bool) -> Relay {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, stream, rx, recover));
        Relay { tx }
    }

    /// Publishes one commit's events (per game, in order) after the ones handed before.
    pub fn publish(&self, committed: Vec<(GameId, Entries)>) {
        if !committed.is_empty() {
            let _ = self.tx.send(committed);
        }
    }
}

/// How often committed events whose publish failed are tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// How many times they are tried before the relay leaves them to the outbox.
const RETRIES: u32 = 60;

async fn run(
    store: Arc<dyn Store>,
    stream: Arc<dyn EventStream>,
    mut rx: mpsc::UnboundedReceiver<Vec<(GameId, Entries)>>,
    recover: bool,
) {
    if recover {
        recover_recent(&*store, &*stream).await;
    }
    // Per game, the events a publish failed for (the stream was down) and how often they were
    // tried: they go first in the game's next publish, and on their own every [`RETRY_EVERY`],
    // so a stream that comes back (maybe empty) gets them in order, and its live readers too.
    let mut pending: BTreeMap<GameId, (Entries, u32)> = BTreeMap::new();
    let mut commits = Vec::new();
    loop {
        let open = if pending.is_empty() {
            rx.recv_many(&mut commits, 1024).await > 0
        } else {
            tokio::select! {
                n = rx.recv_many(&mut commits, 1024) => n > 0,
                () = tokio::time::sleep(RETRY_EVERY) => true,
            }
        };
        if !open {
            return;
        }
        // Whatever queued while the last publish ran goes out together: one call per game,
        // games side by side, each game's events in commit order.
        let mut per_game: BTreeMap<GameId, (Entries, u32)> = std::mem::take(&mut pending);
        for commit in commits.drain(..) {
            for (game, entries) in commit {
                per_game.entry(game).or_default().0.extend(entries);
            }
        }
        let published = futures::future::join_all(
            per_game
                .iter()
                .map(|(game, (entries, _))| publish_game(&*store, &*stream, *game, entries)),
        )
        .await;
        for ((game, (entries, tries)), ok) in per_game.into_iter().zip(published) {
            if !ok && tries + 1 < RETRIES {
                pending.insert(game, (entries, tries + 1));
            }
        }
    }
}

/// Publishes one game's events; `false` if they did not reach the stream.
async fn publish_game(
    store: &dyn Store,
    stream: &dyn EventStream,
    game: GameId,
    entries: &[(StreamId, GameEvent)],
) -> bool {
    let Some(first) = entries.first().map(|(id, _)| *id) else {
        return true;
    };
    let published = match stream.publish_committed(game, entries, true).await {
        Ok(Published::Done) => Ok(()),
        Ok(Published::Gap { top }) => {
            // Another process committed between the stream's newest and ours: its events go
            // first, from the outbox.
            match store.stream_events_after(game, top, 10_000).await {
                Ok(found) => {
                    let missing: Entries = found
                        .events
                        .into_iter()
                        .filter(|(id, _)| *id < first)
                        .collect();
                    metrics::counter!("hotpath_relay_gap_fills_total").increment(1);
                    match stream.publish_committed(game, &missing, false).await {
                        Ok(_) => stream
                            .publish_committed(game, entries, false)
                            .await
                            .map(drop),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => {
                    tracing::warn!(%game, error = %e, "outbox read for a stream gap failed");
                    stream
                        .publish_committed(game, entries, false)
                        .await
                        .map(drop)
                }
            }
        }
        Err(e) => Err(e),
    };
    match published {
        Ok(()) => {
            metrics::counter!("hotpath_relay_published_total").increment(entries.len() as u64);
            true
        }
        Err(e) => {
            // The events stay in the outbox (a resuming client is served from there) and are
            // tried again.
            metrics::counter!("hotpath_relay_failures_total").increment(1);
            tracing::warn!(%game, error = %e, events = entries.len(), "committed events not published");
            false
        }
    }
}

async fn recover_recent(store: &dyn Store, stream: &dyn EventStream) {
    let since = now_ms() - RECOVERY_WINDOW.as_millis() as i64;
    let recent = match store.stream_events_since(since, RECOVERY_LIMIT).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "relay recovery: the outbox cannot be read");
            return;
        }
    };
    let mut per_game: BTreeMap<GameId, Entries> = BTreeMap::new();
    for (game, id, event) in recent {
        per_game.entry(game).or_default().push((id, event));
    }
    let games = per_game.len();
    let mut published = 0usize;
    for (game, entries) in per_game {
        let count = Entries::len(&entries);
        match stream.publish_committed(game, &entries, false).await {
            Ok(_) => published += count,
            Err(e) => {
                tracing::warn!(%game, error = %e, "relay recovery: publish failed");
            }
        }
    }
    tracing::info!(
        games,
        events = published,
        "relay recovery: recent outbox republished"
    );
}
