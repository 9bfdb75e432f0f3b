//! One game's writer: a task that owns the game's state in this process and applies its actions
//! one after another.
//!
//! It keeps two states: `committed` (after the last item the store confirmed) and `tip` (after
//! the last item handed to the committer). An action is applied to `tip` and submitted at once,
//! so a busy game has several items in flight and they share commits. Items carry the writer's
//! *generation*; when one fails, the generation moves on, the committer refuses the rest of the
//! old one, and the writer either answers them 503 (the store is down or slow) or reloads the
//! game from the log and applies them again (another process took a seq: the fence worked).
//!
//! A writer with nothing in flight and nothing received for `writer_idle` retires: it writes
//! its state to the cache as a snapshot, leaves the registry and drops the state.

use std::collections::HashSet;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use hotpath_cache::GameId;
use hotpath_cache::cache::{CacheExt, keys};
use hotpath_cache::ids::{RequestId, StakeholderId};
use hotpath_cache::model::PlayerAction;
use hotpath_cache::scenario::Scenario;
use hotpath_cache::state::GameState;
use hotpath_cache::store::{Finished, IdempotencyKey, ItemError, StoredResponse};
use hotpath_cache::time::now_ms;

use super::reads::CachedContent;
use super::reservoir::{ClaimKey, ROWS_PER_STAKEHOLDER, Reservoir};
use super::resolve::same_request;
use super::writers::{Append, Msg, Writers};
use super::{HotError, apply, load};
use crate::write::Fate;
use crate::write::committer::{Outcome, Submit};

/// An action on its way to its game's writer: validated, with what the cache had for it.
pub struct Act {
    pub action: PlayerAction,
    /// Set for a `say` to a stakeholder: the id of the reply that will stream back.
    pub dialogue: Option<RequestId>,
    pub cached: Arc<CachedContent>,
    pub degraded: bool,
    pub idempotency: Option<IdempotencyKey>,
    /// The end of the action's budget.
    pub deadline: tokio::time::Instant,
    /// Where the answer goes (set by [`Writers::act`]).
    pub reply: Option<oneshot::Sender<Result<serde_json::Value, HotError>>>,
    /// Whether it may still be refused (set by [`Writers::act`]).
    pub(crate) fate: Fate,
    /// Retries with the same `Idempotency-Key` that joined it while it was in flight.
    pub(crate) joined: Vec<Reply>,
}

type Reply = oneshot::Sender<Result<serde_json::Value, HotError>>;

/// Writer generations come from one counter for the whole process, so a generation the
/// committer refuses can never be reused by a later writer of the same game.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

fn next_generation() -> u64 {
    GENERATIONS.fetch_add(1, Ordering::Relaxed)
}

/// How many recently committed idempotency keys a writer remembers, to answer a retry that
/// arrives just after its first try committed without applying it again.
const RECENT_KEYS: usize = 256;

/// How long a job the writer asked for keeps it from asking again: past the job deadline, a
/// job that died, was shed or skipped is asked for again (the store's guards still coalesce
/// one that is alive).
const ASKED_FOR: std::time::Duration =
    std::time::Duration::from_millis(hotpath_cache::jobs::JOB_DEADLINE_MS as u64);

/// Something submitted and not yet confirmed, kept to answer it or to apply it again.
struct Inflight {
    id: u64,
    work: Work,
    after: GameState,
}

enum Work {
    Act(Box<Act>),
    Append(Box<Append>),
}

impl Work {
    fn deadline(&self) -> tokio::time::Instant {
        match self {
            Work::Act(a) => a.deadline,
            Work::Append(a) => a.deadline,
        }
    }

    fn fate(&self) -> &Fate {
        match self {
            Work::Act(a) => &a.fate,
            Work::Append(a) => &a.fate,
        }
    }

    fn fail(self, error: HotError) {
        match self {
            Work::Act(mut a) => {
                for joined in a.joined.drain(..) {
                    let _ = joined.send(Err(error.clone()));
                }
                if let Some(reply) = a.reply.take() {
                    let _ = reply.send(Err(error));
                }
            }
            Work::Append(a) => {
                let _ = a.reply.send(Err(error));
            }
        }
    }
}

/// Starts the writer of `game`; returns its mailbox.
pub(crate) fn spawn(
    game: GameId,
    scenario: Arc<Scenario>,
    path: Writers,
    queue: usize,
) -> mpsc::Sender<Msg> {
    let (tx, rx) = mpsc::channel(queue.max(1));
    let (outcomes_tx, outcomes) = mpsc::unbounded_channel();
    let writer = Writer {
        game,
        scenario,
        path,
        own: Some(tx.clone()),
        outcomes_tx,
        committed: None,
        tip: None,
        generation: next_generation(),
        next_id: 0,
        inflight: VecDeque::new(),
        recent: VecDeque::new(),
        asked: Arc::new(HashSet::new()),
        asked_since: std::time::Instant::now(),
        since_snapshot: 0,
        reservoir: Reservoir::default(),
    };
    metrics::gauge!("hotpath_writers").increment(1.0);
    tokio::spawn(writer.run(rx, outcomes));
    tx
}

struct Writer {
    game: GameId,
    scenario: Arc<Scenario>,
    path: Writers,
    /// This writer's own mailbox sender, to leave the registry only if the entry is still its own.
    own: Option<mpsc::Sender<Msg>>,
    outcomes_tx: mpsc::UnboundedSender<Outcome>,
    committed: Option<GameState>,
    tip: Option<GameState>,
    generation: u64,
    next_id: u64,
    inflight: VecDeque<Inflight>,
    /// Idempotency keys this writer committed last, with their answers (at most
    /// [`RECENT_KEYS`]).
    recent: VecDeque<(IdempotencyKey, serde_json::Value)>,
    /// Coalesce keys of the jobs this writer has had committed: what dispatch need not ask
    /// for again (see [`crate::hot::dispatch::PlanInput::asked`]).
    asked: Arc<HashSet<String>>,
    /// When `asked` was last emptied (every [`ASKED_FOR`]).
    asked_since: std::time::Instant,
    since_snapshot: u32,
    /// The game's ready precomputed rows, picked in memory (see [`super::reservoir`]).
    reservoir: Reservoir,
}

impl Writer {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Msg>,
        mut outcomes: mpsc::UnboundedReceiver<Outcome>,
    ) {
        let idle = self.path.inner.config.writer_idle;
        let mut retiring = false;
        let mut mailbox_closed = false;
        loop {
            if mailbox_closed && self.inflight.is_empty() {
                break;
            }
            // The handlers' futures are boxed: an idle writer (most of them, most of the time)
            // then holds only this small loop, not the largest future it could await.
            tokio::select! {
                biased;
                Some(outcome) = outcomes.recv() => Box::pin(self.on_outcome(outcome)).await,
                msg = rx.recv(), if !mailbox_closed => match msg {
                    Some(msg) => Box::pin(self.on_msg(msg)).await,
                    None => mailbox_closed = true,
                },
                () = tokio::time::sleep(idle), if !retiring && self.inflight.is_empty() => {
                    // Leave the registry first: a later action starts a new writer, which
                    // loads what this one committed. Then finish what is already queued.
                    retiring = true;
                    if let Some(own) = self.own.take() {
                        self.path.retire(self.game, &own);
                    }
                    rx.close();
                }
            }
        }
        if let Some(state) = self.committed.take() {
            self.store_snapshot(state);
        }
        metrics::gauge!("hotpath_writers").decrement(1.0);
    }

    /// The state actions apply to, loaded on first use: the cached snapshot brought up to date
    /// with the log, inside the work's deadline.
    async fn tip(&mut self, deadline: tokio::time::Instant) -> Result<&GameState, HotError> {
        if self.tip.is_none() {
            let state = match &self.committed {
                Some(committed) => committed.clone(),
                None => {
                    let state = self.load(deadline).await?;
                    self.committed = Some(state.clone());
                    state
                }
            };
            self.tip = Some(state);
        }
        Ok(self.tip.as_ref().expect("loaded above"))
    }

    async fn load(&self, deadline: tokio::time::Instant) -> Result<GameState, HotError> {
        let hot = &self.path.inner;
        let cache_deadline = deadline.min(tokio::time::Instant::now() + hot.config.cache_budget());
        let (state, _) = load::load(
            &*hot.cache,
            &*hot.store,
            self.game,
            &self.scenario,
            cache_deadline,
            deadline,
        )
        .await?;
        Ok(state)
    }

    async fn catch_up(
        &self,
        state: GameState,
        deadline: tokio::time::Instant,
    ) -> Result<GameState, HotError> {
        load::catch_up(&*self.path.inner.store, &self.scenario, state, deadline).await
    }

    async fn on_msg(&mut self, msg: Msg) {
        let work = match msg {
            Msg::Act(act) => Work::Act(act),
            Msg::Append(append) => Work::Append(append),
        };
        let deadline = work.deadline();
        if (deadline <= tokio::time::Instant::now() && work.fate().abandon())
            || work.fate().is_abandoned()
        {
            work.fail(HotError::Unavailable(
                "the action waited in its game's queue past its budget and was not applied; \
                 retry"
                    .into(),
            ));
            return;
        }
        let work = match work {
            Work::Act(act) => match self.join(act) {
                Some(act) => Work::Act(act),
                None => return,
            },
            other => other,
        };
        if let Err(e) = self.tip(deadline).await {
            work.fail(e);
            return;
        }
        self.submit(work).await;
    }

    /// A retry of an action with the same `Idempotency-Key` as one in flight joins it (its
    /// answer is the first try's), and one that just committed gets that answer: never a
    /// second action. `None` when `act` was answered here.
    fn join(&mut self, mut act: Box<Act>) -> Option<Box<Act>> {
        let Some(key) = act.idempotency.clone() else {
            return Some(act);
        };
        let same_key = |k: &IdempotencyKey| k.player_id == key.player_id && k.key == key.key;
        if let Some((first, response)) = self.recent.iter().find(|(k, _)| same_key(k)) {
            let answer = same_request(&first.request_hash, &key.request_hash, response.clone());
            if let Some(reply) = act.reply.take() {
                let _ = reply.send(answer);
            }
            return None;
        }
        let leader = self.inflight.iter_mut().find_map(|i| match &mut i.work {
            Work::Act(a) if a.idempotency.as_ref().is_some_and(same_key) => Some(a),
            _ => None,
        });
        let leader = match leader {
            Some(leader) if !leader.fate.is_abandoned() => leader,
            // An abandoned first try will not commit: this retry is the action.
            _ => return Some(act),
        };
        // An act without a reply was answered already (`?`).
        let reply = act.reply.take()?;
        let first = leader.idempotency.as_ref().map_or("", |k| &k.request_hash);
        if let Err(e) = same_request(first, &key.request_hash, serde_json::Value::Null) {
            let _ = reply.send(Err(e));
        } else if act.fate.follow(&leader.fate) {
            metrics::counter!("hotpath_idempotent_joins_total").increment(1);
            leader.joined.push(reply);
        }
        None
    }

    /// Applies `work` to the tip, picks its precomputed rows and hands it to the committer.
    async fn submit(&mut self, work: Work) {
        if self.asked_since.elapsed() >= ASKED_FOR {
            self.asked = Arc::new(HashSet::new());
            self.asked_since = std::time::Instant::now();
        }
        // Taken, not cloned: reading the reservoir borrows the writer; the tip is put back below.
        let before = self.tip.take().expect("submit after load");
        let (after, item) = match &work {
            Work::Act(act) => {
                let applied = apply::rules(&self.scenario, &before, act);
                let now = now_ms();
                self.stock(&applied.claim_key, &applied.stakeholders, act.deadline)
                    .await;
                let claim = self
                    .reservoir
                    .pick(&applied.claim_key, &applied.stakeholders, now);
                if applied.ready_key != applied.claim_key {
                    self.stock(&applied.ready_key, &applied.stakeholders, act.deadline)
                        .await;
                }
                let ready = self
                    .reservoir
                    .count(&applied.ready_key, &applied.stakeholders, now);
                let config = &self.path.inner.config;
                let asked = self.asked.clone();
                apply::item(
                    &self.scenario,
                    &before,
                    act,
                    applied,
                    claim,
                    ready,
                    config,
                    asked,
                )
            }
            Work::Append(a) => apply::append(&self.scenario, &before, a.event.clone()),
        };
        let id = self.next_id;
        self.next_id += 1;
        let submitted = self.path.inner.committer.submit(Submit {
            item,
            generation: self.generation,
            id,
            deadline: work.deadline(),
            fate: work.fate().clone(),
            writer: self.outcomes_tx.clone(),
        });
        if !submitted {
            self.tip = Some(before);
            work.fail(HotError::Unavailable("the committer stopped; retry".into()));
            return;
        }
        self.tip = Some(after.clone());
        self.inflight.push_back(Inflight { id, work, after });
    }

    async fn on_outcome(&mut self, outcome: Outcome) {
        if outcome.generation != self.generation {
            return; // answered already, when its generation failed
        }
        let Some(pos) = self.inflight.iter().position(|i| i.id == outcome.id) else {
            return;
        };
        match *outcome.result {
            Ok(finished) => {
                // Outcomes of one generation arrive in submission order.
                let done = self.inflight.remove(pos).expect("found above");
                self.committed = Some(done.after);
                if self.inflight.is_empty() {
                    // Nothing in flight: the tip is the committed state; keep one copy.
                    self.tip = None;
                }
                if !finished.jobs.is_empty() {
                    let asked = Arc::make_mut(&mut self.asked);
                    for j in &finished.jobs {
                        asked.insert(j.job.coalesce_key());
                    }
                }
                for j in &finished.jobs {
                    metrics::counter!("hotpath_dispatched_jobs_total", "kind" => j.job.kind().as_str())
                        .increment(1);
                }
                if let Work::Act(act) = &done.work
                    && let Some(key) = &act.idempotency
                {
                    if self.recent.len() >= RECENT_KEYS {
                        self.recent.pop_front();
                    }
                    self.recent
                        .push_back((key.clone(), finished.response.clone()));
                }
                answer(done.work, finished);
                self.since_snapshot += 1;
                if self.since_snapshot >= self.path.inner.config.snapshot_every {
                    self.since_snapshot = 0;
                    if let Some(state) = &self.committed {
                        self.store_snapshot(state.clone());
                    }
                }
            }
            // An earlier item of this game failed in the same batch; its outcome came first and
            // moved the generation on, so this only runs if it somehow did not.
            Err(ItemError::LostRace | ItemError::EarlierFailed) => {
                metrics::counter!("hotpath_writer_lost_races_total").increment(1);
                self.reload_and_reapply(None).await;
            }
            Err(ItemError::ClaimTaken { gone }) => {
                // Another engine took a row this writer picked: read the stock again, never
                // picking those rows again (whatever made them unclaimable).
                metrics::counter!("hotpath_claims_taken_elsewhere_total").increment(1);
                self.reservoir.refuse(gone);
                self.reload_and_reapply(None).await;
            }
            Err(ItemError::IdempotencyKeyTaken) => {
                // A concurrent request with the same key won: this one answers what it recorded.
                let lost = self.inflight.remove(pos).expect("found above");
                self.reload_and_reapply(Some(lost.work)).await;
            }
            Err(ItemError::Store(e)) => {
                self.generation = next_generation();
                self.tip = None;
                // The failed items' picks are still ready in the store.
                self.reservoir.forget();
                let message = e.to_string();
                for lost in std::mem::take(&mut self.inflight) {
                    lost.work.fail(HotError::Unavailable(message.clone()));
                }
            }
        }
    }

    /// Another writer took a seq (or an idempotency key): load what the log holds now and apply
    /// everything still in flight again, under a new generation. `replayed` is answered from
    /// the stored idempotency record instead.
    async fn reload_and_reapply(&mut self, replayed: Option<Work>) {
        self.generation = next_generation();
        // What the failed items picked is ready again, and what is in memory may be stale.
        self.reservoir.forget();
        let pending: Vec<Inflight> = std::mem::take(&mut self.inflight).into();
        let deadline = pending
            .iter()
            .map(|p| p.work.deadline())
            .chain(replayed.iter().map(Work::deadline))
            .max()
            .unwrap_or_else(tokio::time::Instant::now);
        let base = self
            .committed
            .clone()
            .unwrap_or_else(|| GameState::new(self.game, &self.scenario));
        match self.catch_up(base, deadline).await {
            Ok(state) => {
                self.committed = Some(state.clone());
                self.tip = Some(state);
                for p in pending {
                    self.submit(p.work).await;
                }
            }
            Err(e) => {
                self.tip = None;
                self.committed = None;
                for p in pending {
                    p.work.fail(HotError::Unavailable(e.to_string()));
                }
            }
        }
        if let Some(work) = replayed {
            self.answer_replay(work);
        }
    }

    fn answer_replay(&self, work: Work) {
        let Work::Act(mut act) = work else {
            return;
        };
        let Some(key) = act.idempotency.clone() else {
            return;
        };
        let replies: Vec<Reply> = act
            .reply
            .take()
            .into_iter()
            .chain(act.joined.drain(..))
            .collect();
        let store = self.path.inner.store.clone();
        let deadline = act.deadline;
        tokio::spawn(async move {
            let stored = tokio::time::timeout_at(
                deadline,
                store.idempotent_response(key.player_id, &key.key),
            )
            .await;
            let answer = match stored {
                Ok(Ok(Some(StoredResponse {
                    request_hash,
                    response,
                }))) => same_request(&request_hash, &key.request_hash, response),
                _ => Err(HotError::Unavailable(
                    "a concurrent request with this Idempotency-Key is being recorded; retry"
                        .into(),
                )),
            };
            for reply in replies {
                let _ = reply.send(answer.clone());
            }
        });
    }

    /// Makes sure the reservoir holds `key`'s ready rows, reading them from the store if it
    /// must, within the action's deadline. A read that fails leaves the stock empty (the action
    /// falls back to rules): precomputed content is never worth a 503.
    async fn stock(
        &mut self,
        key: &ClaimKey,
        stakeholders: &[StakeholderId],
        deadline: tokio::time::Instant,
    ) {
        let now = now_ms();
        if !self.reservoir.wants(key, stakeholders, now) {
            return;
        }
        let store = &self.path.inner.store;
        let read = store.ready_rows(
            self.game,
            &key.0,
            &key.1,
            stakeholders,
            ROWS_PER_STAKEHOLDER,
            now,
        );
        // A slow read costs the action its precomputed rows, never its budget.
        let config = &self.path.inner.config;
        let deadline = deadline.min(tokio::time::Instant::now() + config.cache_budget());
        let rows = match tokio::time::timeout_at(deadline, read).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, game = %self.game, "reading ready rows failed");
                Vec::new()
            }
            Err(_) => {
                tracing::debug!(game = %self.game, "reading ready rows timed out");
                Vec::new()
            }
        };
        metrics::counter!("hotpath_reservoir_loads_total").increment(1);
        self.reservoir.fill(key.clone(), stakeholders, rows);
    }

    /// Writes a committed state to the cache without holding anyone: a failure only costs the
    /// next writer of this game a longer read of the log.
    fn store_snapshot(&self, state: GameState) {
        let cache = self.path.inner.cache.clone();
        let ttl = self.path.inner.config.snapshot_ttl;
        tokio::spawn(async move {
            let key = keys::snapshot(state.game_id);
            if let Err(e) = cache.set_typed(&key, &state, ttl).await {
                tracing::debug!(error = %e, "snapshot write failed");
            }
        });
    }
}

fn answer(work: Work, finished: Finished) {
    match work {
        Work::Act(mut act) => {
            for joined in act.joined.drain(..) {
                let _ = joined.send(Ok(finished.response.clone()));
            }
            if let Some(reply) = act.reply.take() {
                let _ = reply.send(Ok(finished.response));
            }
        }
        Work::Append(a) => {
            let seq = finished.response["seq"].as_u64().unwrap_or_default();
            let _ = a.reply.send(Ok(seq));
        }
    }
}
