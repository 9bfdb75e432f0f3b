//! The job handlers: one per [`JobKind`] (in [`kinds`]), run by [`execute`], which owns what
//! they share — retries with exponential backoff and jitter, the per-try timeout, the
//! validation error fed back into the next prompt, the `job.*` and `content.ready` events, and
//! the decision to dead-letter.
//!
//! A job ends in one of three ways: written (or already written: every write is idempotent),
//! skipped (nothing to do: the context moved on, the content exists, the token budget is
//! spent — the game keeps its fallbacks), or dead (retries exhausted, or a failure no retry can
//! fix), which the worker records as a dead letter with the reason.

pub mod context;
pub mod kinds;

use std::sync::Arc;
use std::time::Duration;

use hotpath_cache::cache::Cache;
use hotpath_cache::events::GameEvent;
use hotpath_cache::jobs::{Job, JobKind, JobQueue};
use hotpath_cache::store::Store;
use hotpath_cache::stream::EventStream;
use hotpath_cache::{GameId, PlayerId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use crate::llm::{Completion, LlmError, LlmRequest, Provider};
use crate::output::Invalid;
use crate::prompts;

/// What the handlers work with.
#[derive(Clone)]
pub struct Deps {
    pub cache: Arc<dyn Cache>,
    pub store: Arc<dyn Store>,
    pub stream: Arc<dyn EventStream>,
    /// The model (normally the governed stack from [`crate::llm::build`]).
    pub provider: Arc<dyn Provider>,
    /// Where follow-up work goes (canon references after a canonization). `None`: no chaining.
    pub queue: Option<Arc<dyn JobQueue>>,
    /// Answers whose write failed, kept for the job's next try in this process.
    pub answers: Arc<Answers>,
}

/// Answers the model gave for jobs whose result could not be written yet (the cache or store
/// failed after the call). The job's retry takes its answer from here instead of paying for it
/// again; validation runs on it as on a fresh one. In-process and bounded: a retry picked up by
/// another worker, or after [`Answers::TTL`], asks again.
#[derive(Debug, Default)]
pub struct Answers {
    kept: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, Completion)>>,
}

impl Answers {
    /// Most answers kept at once; the oldest go first.
    pub const CAP: usize = 1024;
    /// How long an answer waits for its job's retry.
    pub const TTL: Duration = Duration::from_secs(15 * 60);

    pub fn keep(&self, job_id: &str, answer: Completion) {
        let mut kept = self.kept.lock().expect("answers lock");
        let now = std::time::Instant::now();
        kept.retain(|_, (at, _)| now.duration_since(*at) < Self::TTL);
        if kept.len() >= Self::CAP
            && let Some(oldest) = kept
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(id, _)| id.clone())
        {
            kept.remove(&oldest);
        }
        kept.insert(job_id.to_owned(), (now, answer));
    }

    /// The answer kept for `job_id`, if any (it stays kept until [`Answers::forget`]).
    pub fn get(&self, job_id: &str) -> Option<Completion> {
        let kept = self.kept.lock().expect("answers lock");
        kept.get(job_id)
            .filter(|(at, _)| at.elapsed() < Self::TTL)
            .map(|(_, c)| c.clone())
    }

    pub fn forget(&self, job_id: &str) {
        self.kept.lock().expect("answers lock").remove(job_id);
    }

    pub fn len(&self) -> usize {
        self.kept.lock().expect("answers lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Checks that what `kind` writes its result to answers, before the model is asked: during a
/// cache or store outage the job waits (retried with backoff) instead of paying for answers
/// that cannot be kept.
pub async fn writable(deps: &Deps, kind: JobKind) -> Result<(), TryError> {
    let down = |what: &str, e: &dyn std::fmt::Display| {
        TryError::Unwritable(format!("{what} unavailable, the model was not asked: {e}"))
    };
    match kind {
        JobKind::PrepareSceneReactions | JobKind::CanonizeConflict => {
            deps.store.ping().await.map_err(|e| down("store", &e))
        }
        JobKind::NarratePhaseTransition
        | JobKind::GenerateBeatDescription
        | JobKind::GenerateSocialBundle
        | JobKind::GenerateCanonReferences => {
            deps.cache.ping().await.map_err(|e| down("cache", &e))
        }
        JobKind::StreamDialogueReply => {
            deps.stream.ping().await.map_err(|e| down("stream", &e))?;
            deps.store.ping().await.map_err(|e| down("store", &e))
        }
        JobKind::CleanupExpiredActions => Ok(()),
    }
}

impl std::fmt::Debug for Deps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deps")
            .field("provider", &self.provider)
            .field("queue", &self.queue.is_some())
            .finish_non_exhaustive()
    }
}

/// How jobs behave; part of [`crate::worker::WorkerConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct JobSettings {
    /// Tries per delivery, the first included.
    pub max_attempts: u32,
    /// Per try (a streamed reply must finish within it).
    pub timeout: Duration,
    /// The first retry waits about this long; each next one twice as long (with jitter).
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How long a planned action or reaction stays ready.
    pub planned_ttl: Duration,
    /// How long cached content lives.
    pub cache_ttl: Duration,
    /// Output tokens asked for, per job kind (the table is documented on
    /// [`prompts::MaxTokens`]).
    pub max_tokens: prompts::MaxTokens,
    /// Prepared reactions to keep per stakeholder, context and kind of action.
    pub reactions_per_kind: u32,
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings {
            max_attempts: 3,
            timeout: Duration::from_secs(60),
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            planned_ttl: Duration::from_secs(30 * 60),
            cache_ttl: Duration::from_secs(24 * 3600),
            max_tokens: prompts::MaxTokens::default(),
            reactions_per_kind: 3,
        }
    }
}

/// Why one try failed.
#[derive(Debug, thiserror::Error)]
pub enum TryError {
    #[error(transparent)]
    Llm(#[from] LlmError),
    /// The model's answer did not validate; the next prompt says why.
    #[error("invalid output: {0}")]
    Invalid(#[from] Invalid),
    /// The cache, store or stream failed; worth retrying.
    #[error("{0}")]
    Infra(String),
    /// Where the result goes did not answer, so the model was not asked; worth retrying.
    #[error("{0}")]
    Unwritable(String),
    /// Nothing a retry can change (unknown game or stakeholder, a broken template).
    #[error("{0}")]
    Fatal(String),
}

impl TryError {
    pub fn infra(e: impl std::fmt::Display) -> TryError {
        TryError::Infra(e.to_string())
    }

    /// What players may read about this failure: its category, never the internal error
    /// text (database messages, provider bodies), which goes to the logs and the dead letter.
    pub fn public(&self) -> &'static str {
        match self {
            TryError::Llm(LlmError::Timeout(_)) => "the model took too long",
            TryError::Llm(_) => "the model could not answer",
            TryError::Invalid(_) => "the model's answer was unusable",
            TryError::Infra(_) | TryError::Unwritable(_) => "storage was unavailable",
            TryError::Fatal(_) => "this job cannot run",
        }
    }

    fn retryable(&self) -> bool {
        match self {
            TryError::Llm(e) => e.is_retryable(),
            TryError::Invalid(_) | TryError::Infra(_) | TryError::Unwritable(_) => true,
            TryError::Fatal(_) => false,
        }
    }
}

/// What a successful try did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Wrote these (what, location) pairs.
    Written(Vec<(String, String)>),
    /// Nothing to write, and why.
    Skipped(String),
}

/// A job given up on: the reason goes to the dead-letter record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Dead {
    pub reason: String,
}

/// One try's context: which try, the feedback from the previous one, and the model calls it
/// made (for the ledger).
pub struct Try<'a> {
    pub job_id: &'a str,
    pub attempt: u32,
    pub feedback: Option<String>,
    pub calls: std::sync::Mutex<Vec<(String, crate::llm::Usage)>>,
}

impl<'a> Try<'a> {
    pub fn new(job_id: &'a str, attempt: u32, feedback: Option<String>) -> Try<'a> {
        Try {
            job_id,
            attempt,
            feedback,
            calls: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Notes a model call: its model and usage (which says whether it is an estimate).
    pub fn called(&self, model: &str, usage: crate::llm::Usage) {
        self.calls
            .lock()
            .expect("calls lock")
            .push((model.to_owned(), usage));
    }
}

impl Try<'_> {
    /// Renders `kind`'s prompt from `facts`, asks the model, and returns its answer with the
    /// prompt version.
    pub async fn ask(
        &self,
        deps: &Deps,
        settings: &JobSettings,
        kind: JobKind,
        payer: (Option<GameId>, Option<PlayerId>),
        facts: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(Completion, String), TryError> {
        let request = self.request(settings, kind, payer, facts, true)?;
        let version = prompts::version(kind);
        if let Some(kept) = deps.answers.get(self.job_id) {
            // Paid for by an earlier try whose write failed.
            metrics::counter!("hotpath_llm_answers_reused_total", "kind" => kind.as_str())
                .increment(1);
            return Ok((kept, version));
        }
        writable(deps, kind).await?;
        let completion = deps.provider.complete(&request).await?;
        self.called(&completion.model, completion.usage);
        if completion.truncated {
            // Cut off at the token limit: the next try is told so and asks for less.
            return Err(TryError::Invalid(Invalid(prompts::cut_off(
                request.max_tokens,
            ))));
        }
        deps.answers.keep(self.job_id, completion.clone());
        Ok((completion, version))
    }

    pub fn request(
        &self,
        settings: &JobSettings,
        kind: JobKind,
        (game_id, player_id): (Option<GameId>, Option<PlayerId>),
        facts: serde_json::Map<String, serde_json::Value>,
        json: bool,
    ) -> Result<LlmRequest, TryError> {
        let facts = serde_json::Value::Object(facts);
        let prompt = prompts::render(kind, &facts, json, self.feedback.as_deref())
            .map_err(|e| TryError::Fatal(e.to_string()))?;
        Ok(LlmRequest {
            kind,
            game_id,
            player_id,
            system: prompt.system,
            prompt: prompt.user,
            max_tokens: settings.max_tokens.of(kind, &facts),
            schema: if json {
                prompts::schema(kind, &facts)
            } else {
                None
            },
            json,
            model: None,
            attempt: self.attempt,
            facts,
        })
    }
}

/// The wait before try `attempt + 1`: `base · 2^(attempt-1)`, capped, then jittered into its
/// upper half so that jobs failing together do not retry together. The jitter is drawn from a
/// generator seeded by the job id: no unseeded randomness, the same job waits the same.
pub fn backoff(settings: &JobSettings, job_id: &str, attempt: u32) -> Duration {
    let exp = settings
        .retry_base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(settings.retry_max);
    let mut seed = [0u8; 32];
    seed.copy_from_slice(&Sha256::digest(format!("{job_id}:{attempt}").as_bytes()));
    let factor: f64 = ChaCha8Rng::from_seed(seed).random_range(0.5..=1.0);
    exp.mul_f64(factor)
}

async fn publish(deps: &Deps, game: Option<GameId>, event: GameEvent) {
    let Some(game) = game else { return };
    if let Err(e) = deps.stream.publish(game, &event).await {
        // Progress events are a courtesy to clients; the job's result is in the cache/store.
        tracing::warn!(%game, kind = event.kind(), error = %e, "could not publish a job event");
    }
}

/// Whether `e` came from storage that is out now (rather than, say, a constraint error): the
/// job pauses instead of failing.
async fn storage_down(deps: &Deps, kind: JobKind, e: &TryError) -> bool {
    match e {
        TryError::Unwritable(_) | TryError::Llm(LlmError::Ledger(_)) => true,
        TryError::Infra(_) => writable(deps, kind).await.is_err(),
        _ => false,
    }
}

/// The wait before pause `n`'s next look: the retry backoff, capped at five seconds so that a
/// job resumes soon after the outage ends.
fn pause(settings: &JobSettings, job_id: &str, n: u32) -> Duration {
    backoff(settings, job_id, n).min(Duration::from_secs(5))
}

/// How a delivery of a job ended badly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Try again after this long: the storage holds the job until then (no worker slot waits).
    Retry { after: Duration, reason: String },
    /// Give up: the reason goes to the dead-letter record.
    Dead(Dead),
}

/// When the job was dispatched (its id is a ULID, whose first 48 bits are milliseconds).
pub fn dispatched_at(job_id: &str) -> Option<i64> {
    ulid::Ulid::from_string(job_id)
        .ok()
        .map(|u| u.timestamp_ms() as i64)
}

/// Where a job's deadline ([`hotpath_cache::jobs::JOB_DEADLINE_MS`]) and its content lag count
/// from: its dispatch, or — when an operator queued it again (`requeued_at`, milliseconds since
/// the epoch, from [`crate::queue::REQUEUED_AT`]) — that requeue, whichever is later. A dead
/// letter requeued days after its dispatch runs instead of being skipped as expired.
pub fn counted_from(job_id: &str, requeued_at: Option<&str>) -> Option<i64> {
    let requeued = requeued_at.and_then(|ms| ms.parse::<i64>().ok());
    match (dispatched_at(job_id), requeued) {
        (Some(dispatched), Some(requeued)) => Some(dispatched.max(requeued)),
        (dispatched, requeued) => dispatched.or(requeued),
    }
}

async fn record_calls(deps: &Deps, job: &Job, t: &Try<'_>, ok: bool) {
    let calls = std::mem::take(&mut *t.calls.lock().expect("calls lock"));
    for (model, usage) in calls {
        let call = hotpath_cache::store::LlmCall {
            game_id: job.game_id(),
            kind: job.kind(),
            model,
            prompt_tokens: usage.input_tokens,
            completion_tokens: usage.output_tokens,
            estimated: usage.estimated,
            ok,
            at: hotpath_cache::time::now_ms(),
        };
        metrics::counter!("hotpath_llm_calls_total", "kind" => job.kind().as_str(), "written" => if ok { "true" } else { "false" })
            .increment(1);
        metrics::counter!("hotpath_llm_tokens_total", "kind" => job.kind().as_str())
            .increment(usage.total());
        if let Err(e) = deps.store.record_llm_call(&call).await {
            tracing::warn!(error = %e, "could not record a model call in the ledger");
        }
    }
}

/// Runs delivery `delivery` (1 for the first) of `job`. An answer that does not validate is
/// asked again at once, with the reason, up to `max_attempts` tries; a failure worth retrying
/// later (the provider overloaded, the store down) ends the delivery with
/// [`Failure::Retry`], and the storage runs it again after the backoff. `Ok` when it wrote or
/// had nothing to write.
pub async fn execute(
    job: &Job,
    job_id: &str,
    delivery: u32,
    deps: &Deps,
    settings: &JobSettings,
) -> Result<Outcome, Failure> {
    execute_from(job, job_id, dispatched_at(job_id), delivery, deps, settings).await
}

/// [`execute`], with the job's deadline and lag counted from `dispatched` (see
/// [`counted_from`]) rather than from the time in its id.
pub async fn execute_from(
    job: &Job,
    job_id: &str,
    dispatched: Option<i64>,
    delivery: u32,
    deps: &Deps,
    settings: &JobSettings,
) -> Result<Outcome, Failure> {
    let kind = job.kind();
    let game = job.game_id();
    let max = settings.max_attempts.max(1);
    if let Some(at) = dispatched
        && kind != JobKind::CleanupExpiredActions
        && hotpath_cache::time::now_ms() - at > hotpath_cache::jobs::JOB_DEADLINE_MS
    {
        // What it prepares would be served too late to matter; newer actions ask again.
        let why = "past its deadline".to_owned();
        tracing::debug!(job_id, kind = kind.as_str(), "job dropped: {why}");
        return Ok(Outcome::Skipped(why));
    }
    let mut feedback: Option<String> = None;
    let mut n = 0;
    // Waits for storage to come back (see `Pause`); they do not count as tries.
    let mut pauses = 0u32;
    loop {
        n += 1;
        // Tries keep counting across deliveries.
        let attempt = delivery.max(1) - 1 + n;
        if pauses == 0 {
            publish(
                deps,
                game,
                GameEvent::JobStarted {
                    job_id: job_id.to_owned(),
                    kind,
                    attempt,
                },
            )
            .await;
        }
        let t = Try::new(job_id, attempt, feedback.take());
        let result =
            match tokio::time::timeout(settings.timeout, kinds::run(job, &t, deps, settings)).await
            {
                Ok(r) => r,
                Err(_) => Err(TryError::Llm(LlmError::Timeout(settings.timeout))),
            };
        record_calls(deps, job, &t, matches!(result, Ok(Outcome::Written(_)))).await;
        // A kept answer waits only for a write that failed; any other end drops it (an
        // invalid one is asked again, with the reason).
        if !matches!(result, Err(TryError::Infra(_) | TryError::Unwritable(_))) {
            deps.answers.forget(job_id);
        }
        if let Err(e) = &result
            && storage_down(deps, kind, e).await
        {
            // The cache, store or ledger is out: the job waits here, holding its slot, and
            // tries again when it answers — without a new model call (a kept answer is reused)
            // and without spending a try. Bounded by the job's deadline.
            if dispatched.is_some_and(|at| {
                hotpath_cache::time::now_ms() - at > hotpath_cache::jobs::JOB_DEADLINE_MS
            }) {
                deps.answers.forget(job_id);
                let why = format!("past its deadline while storage was down: {e}");
                tracing::warn!(job_id, kind = kind.as_str(), "job dropped: {why}");
                return Ok(Outcome::Skipped(why));
            }
            pauses += 1;
            if pauses == 1 {
                tracing::warn!(job_id, kind = kind.as_str(), error = %e, "job paused until storage answers");
            }
            metrics::counter!("hotpath_job_pauses_total", "kind" => kind.as_str()).increment(1);
            tokio::time::sleep(pause(settings, job_id, pauses)).await;
            feedback = t.feedback;
            n -= 1;
            continue;
        }
        if pauses > 0 {
            tracing::info!(
                job_id,
                kind = kind.as_str(),
                pauses,
                "job resumed: storage answers"
            );
            pauses = 0;
        }
        match result {
            Ok(outcome) => {
                if let Outcome::Written(items) = &outcome {
                    let lag_ms =
                        dispatched.map(|at| (hotpath_cache::time::now_ms() - at).max(0) as u64);
                    if let Some(lag) = lag_ms {
                        metrics::histogram!("hotpath_content_lag_seconds", "kind" => kind.as_str())
                            .record(lag as f64 / 1000.0);
                    }
                    for (what, location) in items {
                        publish(
                            deps,
                            game,
                            GameEvent::ContentReady {
                                what: what.clone(),
                                location: location.clone(),
                                job_kind: Some(kind),
                                lag_ms,
                            },
                        )
                        .await;
                    }
                }
                publish(
                    deps,
                    game,
                    GameEvent::JobCompleted {
                        job_id: job_id.to_owned(),
                        kind,
                    },
                )
                .await;
                tracing::debug!(job_id, kind = kind.as_str(), ?outcome, "job done");
                return Ok(outcome);
            }
            Err(TryError::Llm(LlmError::OverBudget(why))) => {
                // Not an error to investigate: the game runs on fallbacks until the budget
                // renews. The job ends here, without writing and without a dead letter.
                let error = format!("token budget exhausted: {why}");
                tracing::debug!(job_id, kind = kind.as_str(), "job skipped: {error}");
                publish(
                    deps,
                    game,
                    GameEvent::JobFailed {
                        job_id: job_id.to_owned(),
                        kind,
                        attempt,
                        error: error.clone(),
                        dead: false,
                    },
                )
                .await;
                return Ok(Outcome::Skipped(error));
            }
            Err(e) => {
                let last = attempt >= max || !e.retryable();
                let error = e.to_string();
                tracing::warn!(job_id, kind = kind.as_str(), attempt, dead = last, %error, "job try failed");
                publish(
                    deps,
                    game,
                    GameEvent::JobFailed {
                        job_id: job_id.to_owned(),
                        kind,
                        attempt,
                        error: e.public().to_owned(),
                        dead: last,
                    },
                )
                .await;
                if last {
                    deps.answers.forget(job_id);
                    return Err(Failure::Dead(Dead {
                        reason: format!("{}: attempt {attempt}: {error}", kind.as_str()),
                    }));
                }
                match e {
                    // A bad answer is asked again now, with the reason.
                    TryError::Invalid(invalid) => feedback = Some(invalid.0),
                    TryError::Llm(l) => {
                        return Err(Failure::Retry {
                            after: l
                                .retry_after()
                                .unwrap_or_else(|| backoff(settings, job_id, attempt)),
                            reason: error,
                        });
                    }
                    _ => {
                        return Err(Failure::Retry {
                            after: backoff(settings, job_id, attempt),
                            reason: error,
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered_deterministically() {
        let s = JobSettings {
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_secs(1),
            ..JobSettings::default()
        };
        let d1 = backoff(&s, "job", 1);
        let d3 = backoff(&s, "job", 3);
        assert!(
            d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100),
            "{d1:?}"
        );
        assert!(
            d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400),
            "{d3:?}"
        );
        assert!(backoff(&s, "job", 30) <= Duration::from_secs(1));
        assert_eq!(backoff(&s, "job", 2), backoff(&s, "job", 2));
        let spread: std::collections::BTreeSet<_> = (0..20)
            .map(|i| backoff(&s, &format!("job-{i}"), 2))
            .collect();
        assert!(spread.len() > 10, "jobs failing together spread out");
    }
}
