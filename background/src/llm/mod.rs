//! Every LLM call of hotpath lives under this module — it is the sink `hotpath-lint` looks for
//! (`hotpath_background::llm`), so no hot-path code may reach it. Each provider call first runs
//! [`hotpath_cache::guard::assert_off_hot_path`], so what the lint cannot see still fails.
//!
//! - [`Provider`]: complete a request, or stream its text.
//! - Providers: [`http::HttpProvider`] (OpenAI-compatible chat completions and Anthropic
//!   Messages, via genai), [`scripted::ScriptedProvider`] (offline, deterministic from a seed).
//! - Wrappers: [`cassette::Cassette`] (record / replay), [`limit::Limited`] (one concurrency and
//!   rate limit per provider, shared by every job kind), [`governor::Governor`] (token budgets,
//!   cheaper model over the soft limit, no call over the hard one; tokens counted per job kind).
//! - [`config::LlmConfig`] (from the environment) and [`build`], which stacks them.

pub mod cassette;
pub mod config;
pub mod governor;
pub mod http;
pub mod limit;
pub mod scripted;
pub mod voice;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use hotpath_cache::guard::OnHotPath;
use hotpath_cache::jobs::JobKind;
use hotpath_cache::{GameId, PlayerId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use config::{LlmConfig, ProviderKind};
pub use governor::{Budget, Budgets, Governor, KindUsage};

/// What a job asks a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmRequest {
    /// The job kind asking: tokens are counted per kind, and the scripted provider writes the
    /// shape this kind expects.
    pub kind: JobKind,
    /// Whose budget pays (`None` for maintenance work).
    pub game_id: Option<GameId>,
    pub player_id: Option<PlayerId>,
    pub system: String,
    pub prompt: String,
    pub max_tokens: u32,
    /// The answer must be one JSON object.
    pub json: bool,
    /// The JSON schema the answer must follow (with `json`). Providers that can enforce one
    /// do (OpenAI `response_format: json_schema`, Anthropic a forced tool); the others fall
    /// back to JSON mode and the prompt's description of the shape. Part of the cassette key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<serde_json::Value>,
    /// A model other than the provider's configured one (the governor sets the cheap model).
    pub model: Option<String>,
    /// 1 for the first try of a job, 2 for its first retry, ... Not part of the cassette key
    /// (a replayed session replays answers, not failures); the scripted provider draws from it
    /// so that a retry is a fresh draw.
    pub attempt: u32,
    /// Structured facts the prompt was rendered from. Real models read the prompt; the scripted
    /// provider writes its content from these. Not part of the cassette key.
    pub facts: serde_json::Value,
}

impl LlmRequest {
    /// SHA-256 (hex) of the request's canonical form: kind, model override, system, prompt,
    /// max tokens, JSON mode and schema. Who pays and the scripted facts are left out, so the same
    /// question asked for another game replays the same answer.
    pub fn canonical_hash(&self) -> String {
        let mut canonical = serde_json::json!({
            "kind": self.kind,
            "model": self.model,
            "system": self.system,
            "prompt": self.prompt,
            "max_tokens": self.max_tokens,
            "json": self.json,
        });
        // Only when present, so requests without a schema keep their recorded keys.
        if let Some(schema) = &self.schema {
            canonical["schema"] = schema.clone();
        }
        hex(&Sha256::digest(canonical.to_string().as_bytes()))
    }
}

pub(crate) use hotpath_cache::hex::hex;

/// Tokens a call used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// The provider reported no usage: the counts are estimated from the text.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub estimated: bool,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }

    /// A rough count for a call whose provider reported none: four characters a token.
    pub fn estimate(prompt_chars: usize, output_chars: usize) -> Usage {
        Usage {
            input_tokens: prompt_chars.div_ceil(4) as u64,
            output_tokens: output_chars.div_ceil(4) as u64,
            estimated: true,
        }
    }
}

/// A model's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub text: String,
    pub usage: Usage,
    /// The model that answered.
    pub model: String,
    /// The provider stopped at `max_tokens` (OpenAI `finish_reason: "length"`, Anthropic
    /// `stop_reason: "max_tokens"`): the text is cut off. The job retries with a shorter ask.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// One item of a streamed answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Delta {
    /// The next piece of the text.
    Text(String),
    /// What the call used, as the provider reported it when the stream ended (OpenAI's last
    /// chunk with `stream_options.include_usage`, Anthropic's `message_delta`). A stream that
    /// ends without one is settled from an estimate.
    Usage(Usage),
}

impl Delta {
    /// The text of a [`Delta::Text`].
    pub fn text(&self) -> Option<&str> {
        match self {
            Delta::Text(t) => Some(t),
            Delta::Usage(_) => None,
        }
    }
}

/// A streamed answer: text chunk by chunk, and the usage when the provider reports it.
pub type TextStream = BoxStream<'static, Result<Delta, LlmError>>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    #[error(transparent)]
    OnHotPath(#[from] OnHotPath),
    /// 429: slow down; retry after the delay the provider asked for, if it said.
    #[error("rate limited by the provider{}", .retry_after.map(|d| format!(" (retry after {d:?})")).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    /// 5xx or a simulated provider failure: worth retrying.
    #[error("provider error {status}: {message}")]
    Server { status: u16, message: String },
    /// Another 4xx (bad key, bad request): retrying will not help.
    #[error("request rejected with {status}: {message}")]
    Rejected { status: u16, message: String },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The answer did not have the provider's wire format.
    #[error("malformed provider response: {0}")]
    Malformed(String),
    #[error("transport error: {0}")]
    Transport(String),
    /// The token budget is spent: no call was made.
    #[error("token budget exhausted: {0}")]
    OverBudget(String),
    /// The shared spend ledger (or limiter) could not be reached: no call was made, since
    /// its cost could not be reserved. Worth retrying.
    #[error("spend ledger unavailable: {0}")]
    Ledger(String),
    /// Replay mode and the cassette has no answer for this request.
    #[error("cassette {path} has no recording for request {hash} ({kind}); record it first")]
    CassetteMiss {
        path: String,
        hash: String,
        kind: String,
    },
    #[error("LLM configuration: {0}")]
    Config(String),
}

impl LlmError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            LlmError::RateLimited { .. }
                | LlmError::Server { .. }
                | LlmError::Timeout(_)
                | LlmError::Malformed(_)
                | LlmError::Transport(_)
                | LlmError::Ledger(_)
        )
    }

    /// The delay the provider asked for before a retry.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LlmError::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }
}

/// A language model. Implementations call [`hotpath_cache::guard::assert_off_hot_path`] first.
#[async_trait]
pub trait Provider: Send + Sync + fmt::Debug {
    /// The model used when the request names none.
    fn model(&self) -> &str;

    async fn complete(&self, request: &LlmRequest) -> Result<Completion, LlmError>;

    /// Streams the answer's text. Errors before the first chunk come back as `Err`; later ones
    /// as an `Err` item.
    async fn stream(&self, request: &LlmRequest) -> Result<TextStream, LlmError>;

    /// Tokens counted per job kind, if this provider (a [`Governor`]) counts them.
    fn token_usage(&self) -> Option<Vec<KindUsage>> {
        None
    }

    /// Returns once the token reservations of calls that ended (or were dropped) are settled
    /// in the spend ledger: a process about to exit waits for this, or they would stay
    /// counted until the day ends.
    async fn settled(&self) {}
}

#[async_trait]
impl<P: Provider + ?Sized> Provider for Arc<P> {
    fn model(&self) -> &str {
        (**self).model()
    }
    async fn complete(&self, request: &LlmRequest) -> Result<Completion, LlmError> {
        (**self).complete(request).await
    }
    async fn stream(&self, request: &LlmRequest) -> Result<TextStream, LlmError> {
        (**self).stream(request).await
    }
    fn token_usage(&self) -> Option<Vec<KindUsage>> {
        (**self).token_usage()
    }
    async fn settled(&self) {
        (**self).settled().await
    }
}

/// The configured provider stack: base provider (scripted, OpenAI-compatible or Anthropic),
/// then the cassette if one is configured, then the provider's concurrency and rate limit,
/// then the cost governor outermost (so a call it refuses never waits for a slot). Limits and
/// spend are counted in this process; [`build_shared`] counts them for a whole deployment.
pub fn build(config: &LlmConfig) -> Result<Arc<dyn Provider>, LlmError> {
    Ok(build_governor(config)?)
}

/// What the processes of a deployment share: where token spend is reserved and settled, and
/// where the provider's concurrency and rate are counted.
#[derive(Debug, Clone)]
pub struct Shared {
    pub spend: Arc<dyn hotpath_cache::spend::SpendLedger>,
    pub limiter: Arc<dyn hotpath_cache::limits::Limiter>,
}

/// [`build`], with budgets and limits held in `shared` (see [`hotpath_cache::spend`] and
/// [`hotpath_cache::limits`]).
pub fn build_shared(config: &LlmConfig, shared: Shared) -> Result<Arc<dyn Provider>, LlmError> {
    Ok(Arc::new(stack(config, Some(shared))?))
}

/// [`build`], keeping the concrete [`Governor`] (for its counters).
pub fn build_governor(config: &LlmConfig) -> Result<Arc<Governor>, LlmError> {
    Ok(Arc::new(stack(config, None)?))
}

fn stack(config: &LlmConfig, shared: Option<Shared>) -> Result<Governor, LlmError> {
    let base: Arc<dyn Provider> = match config.provider {
        ProviderKind::Scripted => Arc::new(scripted::ScriptedProvider::new(
            scripted::ScriptedConfig::from(config),
        )),
        ProviderKind::OpenAi | ProviderKind::Anthropic => {
            Arc::new(http::HttpProvider::new(config)?)
        }
    };
    let recorded: Arc<dyn Provider> = match &config.cassette {
        Some(path) => Arc::new(cassette::Cassette::open(path, config.cassette_mode, base)?),
        None => base,
    };
    let mut limited =
        limit::Limited::new(recorded, config.max_concurrent, config.requests_per_second);
    if let Some(shared) = &shared {
        limited = limited.shared(shared.limiter.clone(), config.provider.limit_key());
    }
    let governor = Governor::new(
        Arc::new(limited),
        config.budgets.clone(),
        config.cheap_model.clone(),
    );
    Ok(match shared {
        Some(shared) => governor.with_spend(shared.spend),
        None => governor,
    })
}
