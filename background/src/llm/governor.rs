//! The cost governor: token budgets per day — global, per game, per player — checked before
//! every call. Over a soft limit the call goes to the configured cheaper model; over a hard
//! limit no call is made ([`LlmError::OverBudget`]) and the job ends without writing, so the game
//! keeps serving its fallbacks. Tokens used are counted per job kind.
//!
//! Counts live in this process (a day is a UTC day). With several worker processes each keeps
//! its own count, so a budget is per process there; the counters are what a metrics exporter
//! reads.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;
use hotpath_cache::guard::assert_off_hot_path;
use hotpath_cache::jobs::JobKind;
use hotpath_cache::time::now_ms;
use hotpath_cache::{GameId, PlayerId};
use serde::{Deserialize, Serialize};

use super::{Completion, LlmError, LlmRequest, Provider, TextStream, Usage};

/// Tokens per day for one scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// From here on, calls use the cheaper model.
    pub soft: u64,
    /// From here on, no call is made.
    pub hard: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budgets {
    pub global: Option<Budget>,
    pub per_game: Option<Budget>,
    pub per_player: Option<Budget>,
}

/// What one job kind has used.
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

#[derive(Debug, Default)]
struct Ledger {
    day: i64,
    global: u64,
    games: HashMap<GameId, u64>,
    players: HashMap<PlayerId, u64>,
    kinds: BTreeMap<JobKind, KindUsage>,
}

impl Ledger {
    fn roll(&mut self, day: i64) {
        if self.day != day {
            self.day = day;
            self.global = 0;
            self.games.clear();
            self.players.clear();
        }
    }

    fn kind(&mut self, kind: JobKind) -> &mut KindUsage {
        self.kinds.entry(kind).or_insert(KindUsage {
            kind,
            calls: 0,
            cheap_calls: 0,
            refused: 0,
            input_tokens: 0,
            output_tokens: 0,
        })
    }
}

enum Verdict {
    Full,
    Cheap,
}

#[derive(Debug)]
pub struct Governor {
    inner: Arc<dyn Provider>,
    budgets: Budgets,
    cheap_model: Option<String>,
    ledger: Arc<Mutex<Ledger>>,
}

fn today() -> i64 {
    now_ms().div_euclid(86_400_000)
}

impl Governor {
    pub fn new(
        inner: Arc<dyn Provider>,
        budgets: Budgets,
        cheap_model: Option<String>,
    ) -> Governor {
        Governor {
            inner,
            budgets,
            cheap_model,
            ledger: Arc::new(Mutex::new(Ledger::default())),
        }
    }

    /// Tokens counted per job kind so far (all days).
    pub fn usage(&self) -> Vec<KindUsage> {
        self.ledger
            .lock()
            .map(|l| l.kinds.values().copied().collect())
            .unwrap_or_default()
    }

    /// Tokens used today: global, and by `game` / `player` if given.
    pub fn used_today(&self, game: Option<GameId>, player: Option<PlayerId>) -> (u64, u64, u64) {
        let Ok(mut l) = self.ledger.lock() else {
            return (0, 0, 0);
        };
        l.roll(today());
        (
            l.global,
            game.and_then(|g| l.games.get(&g).copied()).unwrap_or(0),
            player.and_then(|p| l.players.get(&p).copied()).unwrap_or(0),
        )
    }

    fn check(&self, request: &LlmRequest) -> Result<Verdict, LlmError> {
        let mut l = self
            .ledger
            .lock()
            .map_err(|_| LlmError::Config("governor lock poisoned".into()))?;
        l.roll(today());
        let scopes = [
            ("global", self.budgets.global, Some(l.global)),
            (
                "game",
                self.budgets.per_game,
                request
                    .game_id
                    .map(|g| l.games.get(&g).copied().unwrap_or(0)),
            ),
            (
                "player",
                self.budgets.per_player,
                request
                    .player_id
                    .map(|p| l.players.get(&p).copied().unwrap_or(0)),
            ),
        ];
        let mut verdict = Verdict::Full;
        for (scope, budget, used) in scopes {
            let (Some(budget), Some(used)) = (budget, used) else {
                continue;
            };
            if used >= budget.hard {
                l.kind(request.kind).refused += 1;
                return Err(LlmError::OverBudget(format!(
                    "{scope} budget: {used} of {} tokens used today",
                    budget.hard
                )));
            }
            if used >= budget.soft {
                verdict = Verdict::Cheap;
            }
        }
        Ok(verdict)
    }

    fn governed(&self, request: &LlmRequest) -> Result<(LlmRequest, bool), LlmError> {
        let mut request = request.clone();
        let cheap = match (self.check(&request)?, &self.cheap_model) {
            (Verdict::Cheap, Some(model)) => {
                request.model = Some(model.clone());
                true
            }
            _ => false,
        };
        Ok((request, cheap))
    }
}

fn record(ledger: &Mutex<Ledger>, request: &LlmRequest, usage: Usage, cheap: bool) {
    let Ok(mut l) = ledger.lock() else { return };
    l.roll(today());
    let total = usage.total();
    l.global += total;
    if let Some(g) = request.game_id {
        *l.games.entry(g).or_default() += total;
    }
    if let Some(p) = request.player_id {
        *l.players.entry(p).or_default() += total;
    }
    let k = l.kind(request.kind);
    k.calls += 1;
    k.cheap_calls += cheap as u64;
    k.input_tokens += usage.input_tokens;
    k.output_tokens += usage.output_tokens;
}

#[async_trait]
impl Provider for Governor {
    fn model(&self) -> &str {
        self.inner.model()
    }

    async fn complete(&self, request: &LlmRequest) -> Result<Completion, LlmError> {
        assert_off_hot_path()?;
        let (request, cheap) = self.governed(request)?;
        let completion = self.inner.complete(&request).await?;
        record(&self.ledger, &request, completion.usage, cheap);
        Ok(completion)
    }

    async fn stream(&self, request: &LlmRequest) -> Result<TextStream, LlmError> {
        assert_off_hot_path()?;
        let (request, cheap) = self.governed(request)?;
        let inner = self.inner.stream(&request).await?;
        // Streams report no usage here: count four characters a token once the stream ends.
        let ledger = self.ledger.clone();
        let chars = Arc::new(Mutex::new(0usize));
        let count = chars.clone();
        let counted = inner.map(move |item| {
            if let (Ok(chunk), Ok(mut n)) = (&item, count.lock()) {
                *n += chunk.len();
            }
            item
        });
        let finish = futures::stream::once(async move {
            let out = chars.lock().map(|n| *n).unwrap_or(0);
            let usage = Usage::estimate(request.system.len() + request.prompt.len(), out);
            record(&ledger, &request, usage, cheap);
            None
        })
        .filter_map(futures::future::ready);
        Ok(counted.chain(finish).boxed())
    }

    fn token_usage(&self) -> Option<Vec<KindUsage>> {
        Some(self.usage())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::scripted::{ScriptedConfig, ScriptedProvider};

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
                    soft: 120,
                    hard: 300,
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
                    assert!(msg.contains("game budget"), "{msg}");
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
