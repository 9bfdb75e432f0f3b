//! The cost governor: token budgets per UTC day — global, per game, per player — held before
//! every call. A call first reserves what it may use in every scope that pays for it (see
//! [`hotpath_cache::spend`]); over a soft limit it goes to the configured cheaper model; when a
//! hard limit has no room, no call is made ([`LlmError::OverBudget`]) and the job ends without
//! writing, so the game keeps serving its fallbacks. After the call the reservation is settled
//! from the provider's usage, or from an estimate that says so.
//!
//! The counts live in a [`SpendLedger`]: the deployment's store when the provider is built for
//! a deployment (every worker process shares them, and they survive restarts), this process'
//! memory otherwise. Calls, cheap calls, refusals and tokens per job kind are also counted in
//! this process, for its metrics.

use std::collections::BTreeMap;
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

    /// Reserves the call's cost; the request to send (the cheap model over a soft limit).
    async fn reserve(&self, request: &LlmRequest) -> Result<(LlmRequest, Held), LlmError> {
        let charges = self.charges(request);
        let mut held = Held {
            day: day_of(now_ms()),
            scopes: charges.iter().map(|c| c.scope.clone()).collect(),
            tokens: reservation(request),
            cheap: false,
        };
        if !charges.is_empty() {
            match self
                .spend
                .reserve(held.day, &charges, held.tokens)
                .await
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
        Ok((request, held))
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
        let (request, held) = self.reserve(request).await?;
        let result = self.inner.complete(&request).await;
        let usage = match &result {
            Ok(c) => Some(c.usage),
            Err(e) => failed_usage(e, &held),
        };
        settle(&*self.spend, &self.kinds, request.kind, &held, usage).await;
        result
    }

    async fn stream(&self, request: &LlmRequest) -> Result<TextStream, LlmError> {
        assert_off_hot_path()?;
        let (request, held) = self.reserve(request).await?;
        let inner = match self.inner.stream(&request).await {
            Ok(inner) => inner,
            Err(e) => {
                let usage = failed_usage(&e, &held);
                settle(&*self.spend, &self.kinds, request.kind, &held, usage).await;
                return Err(e);
            }
        };
        // Settled when the stream is dropped — finished, failed midway or abandoned — from
        // the usage the provider reported at its end, or else an estimate from the text that
        // came, marked as such.
        let mut settlement = StreamSettlement {
            spend: self.spend.clone(),
            kinds: self.kinds.clone(),
            kind: request.kind,
            prompt_chars: request.system.len() + request.prompt.len(),
            output_chars: 0,
            reported: None,
            held: Some(held),
        };
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
}

/// Settles a streamed call's reservation when its stream is dropped.
struct StreamSettlement {
    spend: Arc<dyn SpendLedger>,
    kinds: Arc<Mutex<BTreeMap<JobKind, KindUsage>>>,
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
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { settle(&*spend, &kinds, kind, &held, Some(usage)).await });
        }
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
