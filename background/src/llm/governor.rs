//! The cost governor: token budgets per UTC day — global, per game, per player — held before
//! every call. A call first reserves what it may use in every scope that pays for it (see
//! [`hotpath_cache::spend`]); over a soft limit it goes to the configured cheaper model; when a
//! hard limit has no room, no call is made ([`LlmError::OverBudget`]) and the job ends without
//! writing, so the game keeps serving its fallbacks. After the call the reservation is settled
//! from the provider's usage, or from an estimate that says so.
//!
//! A reservation is held by a guard ([`Reserved`]), so a call that never ends — its future
//! dropped by the job's timeout or a shutdown — settles too: **released** if the call had not
//! reached the provider yet (it was waiting for a slot or its turn under the rate: nothing can
//! have been billed, and under provider saturation these are most calls), **charged** its whole
//! reservation, marked estimated, if it had (it may have been answered and billed, as a timeout
//! is). Settlements run in tasks of their own; [`Provider::settled`] waits for them, which the
//! workers do before they return from a shutdown.
//!
//! The counts live in a [`SpendLedger`]: the deployment's store when the provider is built for
//! a deployment (every worker process shares them, and they survive restarts), this process'
//! memory otherwise. Calls, cheap calls, refusals and tokens per job kind are also counted in
//! this process, for its metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;
use hotpath_cache::guard::assert_off_hot_path;
use hotpath_cache::jobs::JobKind;
use hotpath_cache::spend::{Charge, MemorySpend, Reservation, SpendLedger, day_of};
use hotpath_cache::time::now_ms;
use serde::{Deserialize, Serialize};

use super::{Completion, Delta, LlmError, LlmRequest, Provider, TextStream, Usage};

pub use hotpath_cache::spend::Budget;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budgets {
    pub global: Option<Budget>,
    pub per_game: Option<Budget>,
    pub per_player: Option<Budget>,
}

/// What one job kind has used (in this process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindUsage {
    pub kind: JobKind,
    pub calls: u64,
    /// Calls sent to the cheap model because a soft limit was passed.
    pub cheap_calls: u64,
    /// Calls not made because a hard limit was reached.
    pub refused: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl KindUsage {
    fn new(kind: JobKind) -> KindUsage {
        KindUsage {
            kind,
            calls: 0,
            cheap_calls: 0,
            refused: 0,
            input_tokens: 0,
            output_tokens: 0,
        }
    }
}

/// How far a call has gone below the governor, as the provider limit ([`super::limit`]) says:
/// whether its reservation may have been billed if the call is dropped now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Phase {
    /// No limiter below says: count the call as sent.
    Unknown = 0,
    /// Waiting for a provider slot or its turn under the rate: nothing sent.
    Waiting = 1,
    /// Handed to the provider.
    Sent = 2,
}

tokio::task_local! {
    /// The phase of the call the governor is making in this task.
    static CALL_PHASE: Arc<AtomicU8>;
}

/// Records how far the governed call running in this task has gone (a no-op outside one).
pub(super) fn mark(phase: Phase) {
    let _ = CALL_PHASE.try_with(|p| p.store(phase as u8, Ordering::SeqCst));
}

/// Settlements in flight, so that a shutdown can wait for them.
#[derive(Debug, Default)]
struct Pending {
    count: AtomicUsize,
    idle: tokio::sync::Notify,
}

impl Pending {
    /// Runs `settlement` in a task of its own (it outlives a call dropped meanwhile).
    fn spawn(
        self: &Arc<Self>,
        settlement: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let rt = tokio::runtime::Handle::try_current().ok()?;
        self.count.fetch_add(1, Ordering::SeqCst);
        // Moved into the task, so it counts down however the task ends — run, or dropped
        // unpolled by a runtime shutting down.
        let done = Done(self.clone());
        Some(rt.spawn(async move {
            let _done = done;
            settlement.await;
        }))
    }

    /// Returns once no settlement is in flight.
    async fn idle(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

/// Counts a settlement out of [`Pending`] when dropped.
struct Done(Arc<Pending>);

impl Drop for Done {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// What a reservation holds until the call settles.
struct Held {
    day: i64,
    scopes: Vec<String>,
    tokens: u64,
    cheap: bool,
}

#[derive(Debug)]
pub struct Governor {
    inner: Arc<dyn Provider>,
    budgets: Budgets,
    cheap_model: Option<String>,
    spend: Arc<dyn SpendLedger>,
    kinds: Arc<Mutex<BTreeMap<JobKind, KindUsage>>>,
    pending: Arc<Pending>,
}

/// A call's reservation, until it is settled: by [`Reserved::settle`] when the call ends, or,
/// when the call is dropped first, by its `Drop` (see the module docs).
struct Reserved {
    spend: Arc<dyn SpendLedger>,
    kinds: Arc<Mutex<BTreeMap<JobKind, KindUsage>>>,
    pending: Arc<Pending>,
    kind: JobKind,
    phase: Arc<AtomicU8>,
    held: Option<Held>,
}

impl Reserved {
    fn held(&self) -> &Held {
        self.held
            .as_ref()
            .expect("a reservation is held until settled")
    }

    /// Settles with what the call used. The ledger is written by a task of its own, so a
    /// caller dropped meanwhile does not leave the reservation half settled.
    async fn settle(mut self, usage: Option<Usage>) {
        let Some(held) = self.held.take() else { return };
        let (spend, kinds, kind) = (self.spend.clone(), self.kinds.clone(), self.kind);
        if let Some(task) = self.pending.spawn(async move {
            settle(&*spend, &kinds, kind, &held, usage).await;
        }) {
            let _ = task.await;
        }
    }

    /// Hands the reservation to a stream's settlement.
    fn into_stream(mut self, prompt_chars: usize) -> StreamSettlement {
        StreamSettlement {
            spend: self.spend.clone(),
            kinds: self.kinds.clone(),
            pending: self.pending.clone(),
            kind: self.kind,
            prompt_chars,
            output_chars: 0,
            reported: None,
            held: self.held.take(),
        }
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        let Some(held) = self.held.take() else { return };
        // Dropped before its end: the job's timeout or a shutdown cancelled the call.
        let usage = match self.phase.load(Ordering::SeqCst) {
            // Still waiting for a slot or its turn: nothing sent, nothing billed.
            p if p == Phase::Waiting as u8 => None,
            // It may have been answered and billed: count the reservation, as for a timeout.
            _ => Some(Usage {
                input_tokens: held.tokens,
                output_tokens: 0,
                estimated: true,
            }),
        };
        let (spend, kinds, kind) = (self.spend.clone(), self.kinds.clone(), self.kind);
        // Drop cannot wait; without a runtime (it is gone) the reservation stays counted until
        // the day ends, like one of a process that died.
        self.pending.spawn(async move {
            settle(&*spend, &kinds, kind, &held, usage).await;
        });
    }
}

/// What a call may use, reserved before it is made: the prompt at three characters a token
/// (more tokens than most tokenizers make of prose, so the reservation errs high) plus every
/// output token asked for.
pub fn reservation(request: &LlmRequest) -> u64 {
    (request.system.len() + request.prompt.len()).div_ceil(3) as u64 + u64::from(request.max_tokens)
}

impl Governor {
    /// A governor counting spend in this process.
    pub fn new(
        inner: Arc<dyn Provider>,
        budgets: Budgets,
        cheap_model: Option<String>,
    ) -> Governor {
        Governor {
            inner,
            budgets,
            cheap_model,
            spend: MemorySpend::new(),
            kinds: Arc::default(),
            pending: Arc::default(),
        }
    }

    /// Counts spend in `spend` instead (the deployment's store: shared by every process).
    pub fn with_spend(mut self, spend: Arc<dyn SpendLedger>) -> Governor {
        self.spend = spend;
        self
    }

    /// Calls and tokens per job kind in this process so far.
    pub fn usage(&self) -> Vec<KindUsage> {
        self.kinds
            .lock()
            .map(|k| k.values().copied().collect())
            .unwrap_or_default()
    }

    /// The scopes `request` is charged to, with their budgets.
    fn charges(&self, request: &LlmRequest) -> Vec<Charge> {
        let scopes = [
            (self.budgets.global, Some("global".to_owned())),
            (
                self.budgets.per_game,
                request.game_id.map(|g| format!("game:{g}")),
            ),
            (
                self.budgets.per_player,
                request.player_id.map(|p| format!("player:{p}")),
            ),
        ];
        scopes
            .into_iter()
            .filter_map(|(budget, scope)| {
                Some(Charge {
                    scope: scope?,
                    budget: budget?,
                })
            })
            .collect()
    }

    /// Reserves the call's cost; the request to send (the cheap model over a soft limit) and
    /// the reservation's guard.
    async fn reserve(&self, request: &LlmRequest) -> Result<(LlmRequest, Reserved), LlmError> {
        let charges = self.charges(request);
        let mut held = Held {
            day: day_of(now_ms()),
            scopes: charges.iter().map(|c| c.scope.clone()).collect(),
            tokens: reservation(request),
            cheap: false,
        };
        if !charges.is_empty() {
            // Asked by a task of its own: if this call is dropped while the ledger answers, the
            // task still learns of the reservation, and gives it back.
            let (answer, granted) = tokio::sync::oneshot::channel();
            let (spend, day, scopes, tokens) = (
                self.spend.clone(),
                held.day,
                held.scopes.clone(),
                held.tokens,
            );
            let asked = self.pending.spawn(async move {
                let reserved = spend.reserve(day, &charges, tokens).await;
                if let Err(Ok(Reservation::Granted { .. })) = answer.send(reserved)
                    && let Err(e) = spend.settle(day, &scopes, tokens, 0).await
                {
                    tracing::warn!(error = %e, "could not give back a token reservation");
                }
            });
            if asked.is_none() {
                return Err(LlmError::Ledger("no runtime to reserve tokens on".into()));
            }
            match granted
                .await
                .map_err(|_| LlmError::Ledger("the reservation was not answered".into()))?
                .map_err(|e| LlmError::Ledger(e.to_string()))?
            {
                Reservation::Granted { cheap } => held.cheap = cheap,
                Reservation::Refused { scope, taken, hard } => {
                    count(&self.kinds, request.kind, |k| k.refused += 1);
                    return Err(LlmError::OverBudget(format!(
                        "{scope} budget: {taken} of {hard} tokens taken today, {} more asked",
                        held.tokens
                    )));
                }
            }
        }
        let mut request = request.clone();
        match (&self.cheap_model, held.cheap) {
            (Some(model), true) => request.model = Some(model.clone()),
            _ => held.cheap = false,
        }
        let reserved = Reserved {
            spend: self.spend.clone(),
            kinds: self.kinds.clone(),
            pending: self.pending.clone(),
            kind: request.kind,
            phase: Arc::new(AtomicU8::new(Phase::Unknown as u8)),
            held: Some(held),
        };
        Ok((request, reserved))
    }
}

fn count(
    kinds: &Mutex<BTreeMap<JobKind, KindUsage>>,
    kind: JobKind,
    f: impl FnOnce(&mut KindUsage),
) {
    if let Ok(mut k) = kinds.lock() {
        f(k.entry(kind).or_insert_with(|| KindUsage::new(kind)));
    }
}

/// Settles a reservation with what the call used.
async fn settle(
    spend: &dyn SpendLedger,
    kinds: &Mutex<BTreeMap<JobKind, KindUsage>>,
    kind: JobKind,
    held: &Held,
    usage: Option<Usage>,
) {
    if let Some(usage) = usage {
        count(kinds, kind, |k| {
            k.calls += 1;
            k.cheap_calls += held.cheap as u64;
            k.input_tokens += usage.input_tokens;
            k.output_tokens += usage.output_tokens;
        });
    }
    if held.scopes.is_empty() {
        return;
    }
    let used = usage.map_or(0, |u| u.total());
    if let Err(e) = spend
        .settle(held.day, &held.scopes, held.tokens, used)
        .await
    {
        // The reservation stays counted until the day ends: spend errs low, never high.
        tracing::warn!(error = %e, "could not settle a token reservation");
    }
}

/// What a failed call cost: nothing, unless it may have run on the provider's side.
fn failed_usage(error: &LlmError, held: &Held) -> Option<Usage> {
    match error {
        // A call that timed out may have been answered and billed: count the reservation.
        LlmError::Timeout(_) => Some(Usage {
            input_tokens: held.tokens,
            output_tokens: 0,
            estimated: true,
        }),
        _ => None,
    }
}

#[async_trait]
impl Provider for Governor {
    fn model(&self) -> &str {
        self.inner.model()
    }

    async fn complete(&self, request: &LlmRequest) -> Result<Completion, LlmError> {
        assert_off_hot_path()?;
        let (request, reserved) = self.reserve(request).await?;
        // If this future is dropped from here on, `reserved` settles by what the phase says.
        let result = CALL_PHASE
            .scope(reserved.phase.clone(), self.inner.complete(&request))
            .await;
        let usage = match &result {
            Ok(c) => Some(c.usage),
            Err(e) => failed_usage(e, reserved.held()),
        };
        reserved.settle(usage).await;
        result
    }

    async fn stream(&self, request: &LlmRequest) -> Result<TextStream, LlmError> {
        assert_off_hot_path()?;
        let (request, reserved) = self.reserve(request).await?;
        let inner = match CALL_PHASE
            .scope(reserved.phase.clone(), self.inner.stream(&request))
            .await
        {
            Ok(inner) => inner,
            Err(e) => {
                let usage = failed_usage(&e, reserved.held());
                reserved.settle(usage).await;
                return Err(e);
            }
        };
        // Settled when the stream is dropped — finished, failed midway or abandoned — from
        // the usage the provider reported at its end, or else an estimate from the text that
        // came, marked as such.
        let mut settlement = reserved.into_stream(request.system.len() + request.prompt.len());
        Ok(inner
            .map(move |item| {
                // The whole settlement moves into the closure (not only the counter), so it
                // drops, and settles, with the stream.
                let settlement = &mut settlement;
                match &item {
                    Ok(Delta::Text(chunk)) => settlement.output_chars += chunk.len(),
                    Ok(Delta::Usage(usage)) => settlement.reported = Some(*usage),
                    Err(_) => {}
                }
                item
            })
            .boxed())
    }

    fn token_usage(&self) -> Option<Vec<KindUsage>> {
        Some(self.usage())
    }

    async fn settled(&self) {
        self.pending.idle().await;
    }
}

/// Settles a streamed call's reservation when its stream is dropped.
struct StreamSettlement {
    spend: Arc<dyn SpendLedger>,
    kinds: Arc<Mutex<BTreeMap<JobKind, KindUsage>>>,
    pending: Arc<Pending>,
    kind: JobKind,
    prompt_chars: usize,
    output_chars: usize,
    reported: Option<Usage>,
    held: Option<Held>,
}

impl Drop for StreamSettlement {
    fn drop(&mut self) {
        let Some(held) = self.held.take() else { return };
        let usage = self
            .reported
            .unwrap_or_else(|| Usage::estimate(self.prompt_chars, self.output_chars));
        let (spend, kinds, kind) = (self.spend.clone(), self.kinds.clone(), self.kind);
        // Drop cannot wait; the runtime that ran the stream settles it.
        self.pending
            .spawn(async move { settle(&*spend, &kinds, kind, &held, Some(usage)).await });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::scripted::{ScriptedConfig, ScriptedProvider};
    use hotpath_cache::GameId;

    fn request(game: GameId) -> LlmRequest {
        LlmRequest {
            kind: JobKind::NarratePhaseTransition,
            game_id: Some(game),
            player_id: None,
            system: "s".repeat(40),
            prompt: "p".repeat(600),
            max_tokens: 100,
            json: true,
            schema: None,
            model: None,
            attempt: 1,
            facts: serde_json::Value::Null,
        }
    }

    #[tokio::test]
    async fn soft_limit_switches_model_and_hard_limit_refuses() {
        let base = Arc::new(ScriptedProvider::new(ScriptedConfig::default()));
        let g = Governor::new(
            base,
            Budgets {
                per_game: Some(Budget {
                    soft: 150,
                    hard: 800,
                }),
                ..Budgets::default()
            },
            Some("cheap-model".into()),
        );
        let game = GameId::generate();
        // Each call is ~160 input tokens plus the answer.
        let first = g.complete(&request(game)).await.unwrap();
        assert_eq!(first.model, "scripted");
        let second = g.complete(&request(game)).await.unwrap();
        assert_eq!(second.model, "cheap-model", "over the soft limit");
        let mut refused = false;
        for _ in 0..5 {
            match g.complete(&request(game)).await {
                Err(LlmError::OverBudget(msg)) => {
                    assert!(msg.contains(&format!("game:{game} budget")), "{msg}");
                    refused = true;
                    break;
                }
                Ok(c) => assert_eq!(c.model, "cheap-model"),
                Err(e) => panic!("{e}"),
            }
        }
        assert!(refused, "the hard limit stops calls");
        // Another game has its own budget.
        assert!(g.complete(&request(GameId::generate())).await.is_ok());
        let usage = g.usage();
        let k = usage
            .iter()
            .find(|u| u.kind == JobKind::NarratePhaseTransition)
            .unwrap();
        assert!(
            k.calls >= 3 && k.cheap_calls >= 1 && k.refused == 1,
            "{k:?}"
        );
        assert!(k.input_tokens > 300);
    }
}
