//! Group commit: the write path hands the store a batch of actions (each already applied by its
//! game's writer) and the store writes all of them in **one transaction** — the events at their
//! seqs, the precomputed rows every action took, the idempotency records with their answers,
//! the stream events to relay (the outbox) and the jobs (apalis' `push_tasks`). Each item gets
//! its own outcome.
//!
//! Order inside the transaction: the events first, with `ON CONFLICT DO NOTHING`, so that a
//! game whose seq another process took is found before anything else is written; such a batch
//! rolls back and commits again without that game ([`ItemError::LostRace`]). Then the rows the
//! writers picked are marked consumed, by id, in one statement for the batch; an item one of
//! whose rows is no longer ready (another engine took it, the slow path retired it) rolls back
//! the same way ([`ItemError::ClaimTaken`]) and its writer picks again. Then each item's
//! [`Finish`] builds its answer, then the records, the outbox and the jobs. A unique violation on an idempotency key (a
//! concurrent request with the same key won) rolls back and commits the items one by one, so
//! only the loser fails.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use futures::future::BoxFuture;

use crate::events::{GameEvent, LoggedEvent};
use crate::ids::{GameId, PlannedActionId, StakeholderId};
use crate::jobs::Job;
use crate::model::PlannedAction;
use crate::stream::StreamId;
use crate::time::Millis;

use super::lane::{Held, Turn};
use super::{IdempotencyKey, StoreError};

/// Builds an item's answer, jobs and stream events from what its claim got. `Fn`, not
/// `FnOnce`: a batch that rolls back runs its items again.
pub type Finish = Box<dyn Fn(Claimed) -> Finished + Send + Sync>;

/// One event to append at a known seq, with everything that commits with it.
pub struct BatchItem {
    pub game_id: GameId,
    /// The loaded state's seq + 1.
    pub seq: u64,
    pub event: LoggedEvent,
    /// The ready rows the game's writer picked for this action (one per stakeholder present
    /// at most, from its reservoir): marked consumed by the commit, or the item fails with
    /// [`ItemError::ClaimTaken`] if one of them is no longer ready.
    pub claim: Vec<PlannedAction>,
    /// What is still ready for the context the action leads to, as the writer counted it
    /// (what dispatch refills); `None` when not counted.
    pub ready: Option<BTreeMap<StakeholderId, u32>>,
    pub idempotency: Option<IdempotencyKey>,
    pub finish: Finish,
}

/// What the transaction found for one item, before its answer is built.
#[derive(Debug, Clone, Default)]
pub struct Claimed {
    pub claimed: Vec<PlannedAction>,
    /// `None` when the item asked for no count.
    pub ready: Option<BTreeMap<StakeholderId, u32>>,
    /// Coalescing guards held for the item's game (jobs queued or running, by
    /// [`Job::coalesce_key`]), including those taken by earlier items of the batch.
    pub held: BTreeSet<String>,
    /// Guards held in the whole deployment: the backlog dispatch sheds against.
    pub backlog: u64,
}

/// A job to insert, with the id the answer already names.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedJob {
    /// A ULID (apalis decodes task ids as ULIDs).
    pub id: String,
    pub job: Job,
    /// When it may run (seconds since the epoch; see [`crate::jobs::JobKind::head_start`]).
    pub run_at: u64,
}

/// What commits with an item: its answer (recorded under the idempotency key), its jobs and the
/// stream events it promised, in order (they get ids `<seq>-0`, `<seq>-1`, …).
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub response: serde_json::Value,
    pub jobs: Vec<QueuedJob>,
    pub events: Vec<GameEvent>,
}

impl Finished {
    /// The item's stream events with their ids.
    pub fn stream_entries(&self, seq: u64) -> Vec<(StreamId, GameEvent)> {
        self.events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                (
                    StreamId {
                        ms: seq,
                        seq: i as u64,
                    },
                    e.clone(),
                )
            })
            .collect()
    }
}

/// Why one item did not commit.
#[derive(Debug, thiserror::Error)]
pub enum ItemError {
    /// Another process holds this seq: reload the game and apply again.
    #[error("seq already taken by another writer")]
    LostRace,
    /// A concurrent request with the same idempotency key committed first.
    #[error("idempotency key already recorded")]
    IdempotencyKeyTaken,
    /// An earlier item of the same game in this batch did not commit, so this one, applied on
    /// top of it, must not either: the writer applies it again.
    #[error("an earlier action of this game did not commit")]
    EarlierFailed,
    /// A precomputed row the writer picked is no longer ready (another engine took it, or the
    /// slow path retired it): the writer reloads its reservoir and applies again.
    #[error("a precomputed row this action picked was taken meanwhile")]
    ClaimTaken {
        /// The picked rows that were no longer ready.
        gone: Vec<PlannedActionId>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Outcome of one item, in the order the batch was given.
pub type ItemOutcome = Result<Finished, ItemError>;

/// Ready counts read in an action's transaction stop at this many: dispatch compares them
/// with a low-water mark of a few.
pub const READY_COUNT_CAP: i64 = 8;

/// The guards held for a batch's games.
pub(super) type HeldGuards = Vec<(GameId, String)>;

/// The deployment's backlog (guards held), as last counted.
#[derive(Debug, Default)]
pub struct Backlog(std::sync::Mutex<Option<(std::time::Instant, u64)>>);

impl Backlog {
    fn fresh(&self) -> Option<u64> {
        let last = self.0.lock().expect("backlog lock");
        last.filter(|(at, _)| at.elapsed() < std::time::Duration::from_secs(1))
            .map(|(_, n)| n)
    }

    fn set(&self, n: u64) {
        *self.0.lock().expect("backlog lock") = Some((std::time::Instant::now(), n));
    }
}

/// What a batch's first step found.
pub(super) struct Opened {
    /// Per item, whether its seq was free.
    pub free: Vec<bool>,
    /// The picked rows it marked consumed.
    pub taken: HashSet<String>,
    pub guards: HeldGuards,
}

/// Per-engine SQL of a batch, each step inside the one open transaction.
pub(super) trait BatchSql: Send + Sync {
    type Tx: Send;

    /// Waits for this process's turn at the database's writer (SQLite, see [`super::lane`]);
    /// `None` where the engine needs no turns.
    fn turn(&self, _who: Turn) -> BoxFuture<'_, Option<Held<'_>>> {
        Box::pin(std::future::ready(None))
    }
    fn begin(&self) -> BoxFuture<'_, Result<Self::Tx, sqlx::Error>>;
    fn commit(tx: Self::Tx) -> BoxFuture<'static, Result<(), sqlx::Error>>;
    /// Called after a commit that inserted jobs (SQLite wakes its in-process workers;
    /// PostgreSQL's insert trigger notifies by itself).
    fn committed_jobs(&self) {}
    /// The batch's first step: inserts the events, marks the picked rows `ids` consumed where
    /// they are still ready, and reads the coalescing guards held (unexpired) for `games` — in
    /// as few statements as the engine allows.
    fn open<'a>(
        tx: &'a mut Self::Tx,
        items: &'a [&'a BatchItem],
        ids: &'a [String],
        games: &'a [GameId],
        now: Millis,
    ) -> BoxFuture<'a, Result<Opened, StoreError>>;
    /// How many guards are held in the whole deployment.
    fn count_guards<'a>(
        tx: &'a mut Self::Tx,
        now: Millis,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;
    /// The last count, for at most a second.
    fn backlog(&self) -> &Backlog;
    /// Idempotency records, outbox rows and jobs.
    fn record<'a>(
        tx: &'a mut Self::Tx,
        items: &'a [&'a BatchItem],
        finished: &'a [Finished],
        now: Millis,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>>;
}

enum Attempt {
    Done(Vec<Finished>),
    /// These items (indexes into the attempt's slice) lost their seq.
    Lost(Vec<usize>),
    /// These items (the first of their game in the attempt) picked rows that are gone.
    ClaimsGone(Vec<(usize, Vec<PlannedActionId>)>),
    DuplicateKey,
}

async fn attempt<S: BatchSql>(
    sql: &S,
    items: &[&BatchItem],
    now: Millis,
) -> Result<Attempt, StoreError> {
    let t0 = std::time::Instant::now();
    let mut tx = sql.begin().await.map_err(StoreError::from_sqlx)?;
    let began = t0.elapsed();
    let ids: Vec<String> = items
        .iter()
        .flat_map(|i| i.claim.iter().map(|p| p.id.to_string()))
        .collect();
    let games: Vec<GameId> = items
        .iter()
        .map(|i| i.game_id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let Opened {
        mut free,
        taken,
        guards,
    } = S::open(&mut tx, items, &ids, &games, now).await?;
    let opened = t0.elapsed();
    // Two items of one batch at the same (game, seq) (a retiring writer overlapping its
    // successor): only the first can hold it, whatever the engine reports for the second.
    let mut seen: HashSet<(GameId, u64)> = HashSet::with_capacity(items.len());
    for (item, free) in items.iter().zip(free.iter_mut()) {
        if !seen.insert((item.game_id, item.seq)) {
            *free = false;
        }
    }
    // Dropping the transaction rolls back all of it, the claims too.
    if free.iter().any(|f| !f) {
        // A game's items from its first taken seq on are lost (each was applied on top of the
        // one before); its earlier items commit in the next attempt.
        let mut first_lost: HashMap<GameId, usize> = HashMap::new();
        for (i, (item, free)) in items.iter().zip(&free).enumerate() {
            if !free {
                first_lost.entry(item.game_id).or_insert(i);
            }
        }
        let lost = (0..items.len())
            .filter(|i| first_lost.get(&items[*i].game_id).is_some_and(|f| i >= f))
            .collect();
        return Ok(Attempt::Lost(lost));
    }
    let mut games_gone = HashSet::new();
    let gone: Vec<(usize, Vec<PlannedActionId>)> = (0..items.len())
        .filter_map(|n| {
            let item = items[n];
            let rows: Vec<PlannedActionId> = item
                .claim
                .iter()
                .filter(|p| !taken.contains(&p.id.to_string()))
                .map(|p| p.id)
                .collect();
            (!rows.is_empty() && games_gone.insert(item.game_id)).then_some((n, rows))
        })
        .collect();
    if !gone.is_empty() {
        return Ok(Attempt::ClaimsGone(gone));
    }
    // The deployment's backlog is read at most once a second: counting every guard on every
    // commit would cost in proportion to the backlog.
    let mut backlog = match sql.backlog().fresh() {
        Some(n) => n,
        None => {
            let n = S::count_guards(&mut tx, now).await?;
            sql.backlog().set(n);
            n
        }
    };
    let mut held: HashMap<GameId, BTreeSet<String>> = HashMap::new();
    for (game, key) in guards {
        held.entry(game).or_default().insert(key);
    }
    let mut finished = Vec::with_capacity(items.len());
    for item in items {
        let game_held = held.entry(item.game_id).or_default();
        let done = (item.finish)(Claimed {
            claimed: item.claim.clone(),
            ready: item.ready.clone(),
            held: game_held.clone(),
            backlog,
        });
        // The next item of this game sees the guards this one took.
        for job in done.jobs.iter().filter(|j| j.job.guarded()) {
            if game_held.insert(job.job.coalesce_key()) {
                backlog += 1;
            }
        }
        finished.push(done);
    }
    let built = t0.elapsed();
    match S::record(&mut tx, items, &finished, now).await {
        Ok(()) => {}
        Err(e) if super::is_unique_violation(&e) => return Ok(Attempt::DuplicateKey),
        Err(e) => return Err(StoreError::from_sqlx(e)),
    }
    let recorded = t0.elapsed();
    S::commit(tx).await.map_err(StoreError::from_sqlx)?;
    tracing::trace!(
        items = items.len(),
        began_us = began.as_micros() as u64,
        opened_us = opened.as_micros() as u64,
        built_us = built.as_micros() as u64,
        recorded_us = recorded.as_micros() as u64,
        committed_us = t0.elapsed().as_micros() as u64,
        "batch: committed"
    );
    if finished.iter().any(|f| !f.jobs.is_empty()) {
        sql.committed_jobs();
    }
    Ok(Attempt::Done(finished))
}

/// Commits `items` in as few transactions as their outcomes allow: one, unless a seq race or a
/// duplicate idempotency key forces a retry without (or apart from) the items concerned.
///
/// An item that fails takes every later item of its game in the batch with it
/// ([`ItemError::EarlierFailed`]): a later item was applied on top of the failed one, and
/// committing it would leave a hole in the game's log (and, once the writer applied it again,
/// a second copy of it).
pub(super) async fn commit<S: BatchSql>(sql: &S, items: Vec<BatchItem>) -> Vec<ItemOutcome> {
    // Players first: the whole batch, retries included, is one turn.
    let asked = std::time::Instant::now();
    let _turn = sql.turn(Turn::Player).await;
    // Where a slow commit's time went (`RUST_LOG=hotpath_cache::store::batch=trace`).
    tracing::trace!(
        us = asked.elapsed().as_micros() as u64,
        "batch: waited for its turn"
    );
    let now = crate::time::now_ms();
    let mut outcomes: Vec<Option<ItemOutcome>> = items.iter().map(|_| None).collect();
    let mut pending: Vec<usize> = (0..items.len()).collect();
    let mut one_by_one = false;
    while !pending.is_empty() {
        let chunk: Vec<usize> = if one_by_one {
            vec![pending[0]]
        } else {
            pending.clone()
        };
        let refs: Vec<&BatchItem> = chunk.iter().map(|i| &items[*i]).collect();
        match attempt(sql, &refs, now).await {
            Ok(Attempt::Done(finished)) => {
                for (i, f) in chunk.iter().zip(finished) {
                    outcomes[*i] = Some(Ok(f));
                }
                pending.retain(|i| !chunk.contains(i));
            }
            Ok(Attempt::Lost(lost)) => {
                for l in lost {
                    fail(
                        &items,
                        &mut outcomes,
                        &mut pending,
                        chunk[l],
                        ItemError::LostRace,
                    );
                }
            }
            Ok(Attempt::ClaimsGone(gone)) => {
                for (g, rows) in gone {
                    let error = ItemError::ClaimTaken { gone: rows };
                    fail(&items, &mut outcomes, &mut pending, chunk[g], error);
                }
            }
            Ok(Attempt::DuplicateKey) if chunk.len() == 1 => {
                let error = ItemError::IdempotencyKeyTaken;
                fail(&items, &mut outcomes, &mut pending, chunk[0], error);
            }
            Ok(Attempt::DuplicateKey) => one_by_one = true,
            Err(e) => {
                // The database failed: nothing of this attempt committed.
                let message = e.to_string();
                for i in &pending {
                    outcomes[*i] = Some(Err(ItemError::Store(match &e {
                        StoreError::Unavailable(_) => StoreError::Unavailable(message.clone()),
                        _ => StoreError::Database(message.clone()),
                    })));
                }
                pending.clear();
            }
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.expect("every item gets an outcome"))
        .collect()
}

/// Gives item `i` its failure (unless it has one) and every later pending item of its game
/// [`ItemError::EarlierFailed`].
fn fail(
    items: &[BatchItem],
    outcomes: &mut [Option<ItemOutcome>],
    pending: &mut Vec<usize>,
    i: usize,
    error: ItemError,
) {
    let game = items[i].game_id;
    if outcomes[i].is_none() {
        outcomes[i] = Some(Err(error));
    }
    pending.retain(|&p| {
        if p == i {
            return false;
        }
        if p > i && items[p].game_id == game {
            outcomes[p] = Some(Err(ItemError::EarlierFailed));
            return false;
        }
        true
    });
}

/// The apalis task of a queued job: JSON bytes, our id, its priority and delivery bound.
pub(super) fn task(job: &QueuedJob) -> Result<apalis_core::task::Task<Vec<u8>>, sqlx::Error> {
    let id = job.id.parse::<ulid::Ulid>().map_err(|e| {
        sqlx::Error::Encode(format!("job id `{}` is not a ULID: {e}", job.id).into())
    })?;
    let bytes = serde_json::to_vec(&job.job).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    Ok(apalis_core::task::builder::TaskBuilder::new(bytes)
        .task_id(apalis_core::task::task_id::TaskId::from_ulid(id))
        // The storages fetch by priority, then `run_at`: one priority for all, and the kind's
        // head start in `run_at`, so that waiting jobs age instead of starving.
        .priority(0)
        .run_at_timestamp(job.run_at)
        .max_attempts(crate::jobs::MAX_DELIVERIES as usize)
        .build())
}

/// The rows a batch records besides its events, as columns (PostgreSQL binds them as arrays;
/// SQLite inserts them row by row).
#[derive(Default)]
pub(super) struct Rows {
    pub key_player: Vec<String>,
    pub key: Vec<String>,
    pub key_game: Vec<String>,
    pub key_hash: Vec<String>,
    pub key_response: Vec<String>,
    pub key_len: usize,
    pub event_game: Vec<String>,
    pub event_seq: Vec<i64>,
    pub event_idx: Vec<i32>,
    pub event_payload: Vec<String>,
    pub event_len: usize,
    pub tasks: Vec<apalis_core::task::Task<Vec<u8>>>,
    pub guard_game: Vec<String>,
    pub guard_key: Vec<String>,
    pub guard_job: Vec<String>,
    pub guard_kind: Vec<String>,
    pub guard_expires: Vec<i64>,
}

impl Rows {
    pub fn collect(items: &[&BatchItem], finished: &[Finished]) -> Result<Rows, sqlx::Error> {
        let encode = |e: serde_json::Error| sqlx::Error::Encode(e.into());
        let mut rows = Rows::default();
        for (item, done) in items.iter().zip(finished) {
            if let Some(key) = &item.idempotency {
                rows.key_player.push(key.player_id.to_string());
                rows.key.push(key.key.clone());
                rows.key_game.push(item.game_id.to_string());
                rows.key_hash.push(key.request_hash.clone());
                rows.key_response
                    .push(serde_json::to_string(&done.response).map_err(encode)?);
                rows.key_len += 1;
            }
            for (idx, event) in done.events.iter().enumerate() {
                rows.event_game.push(item.game_id.to_string());
                rows.event_seq.push(item.seq as i64);
                rows.event_idx.push(idx as i32);
                rows.event_payload
                    .push(serde_json::to_string(event).map_err(encode)?);
                rows.event_len += 1;
            }
            for job in &done.jobs {
                rows.tasks.push(task(job)?);
                if !job.job.guarded() {
                    continue;
                }
                rows.guard_game.push(item.game_id.to_string());
                rows.guard_key.push(job.job.coalesce_key());
                rows.guard_job.push(job.id.clone());
                rows.guard_kind.push(job.job.kind().as_str().to_owned());
                rows.guard_expires
                    .push(crate::time::now_ms() + crate::jobs::JOB_GUARD_TTL_MS);
            }
        }
        Ok(rows)
    }

    pub fn is_empty(&self) -> bool {
        self.key_len == 0 && self.event_len == 0 && self.guard_key.is_empty()
    }
}
