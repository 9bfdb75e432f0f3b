//! [`LlmConfig`]: which provider, which models, which key, how the scripted provider behaves,
//! the provider's limits and the token budgets — read from `HOTPATH_LLM_*` environment variables
//! (documented in `docs/SLOW_PATH.md`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::LlmError;
use super::cassette::CassetteMode;
use super::governor::{Budget, Budgets};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// Offline and deterministic: the default when none is configured.
    Scripted,
    /// Any OpenAI-compatible chat-completions server (OpenAI, Ollama, vLLM, llama.cpp, OpenRouter).
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

impl ProviderKind {
    /// Where this provider's concurrency and rate are counted in a shared limiter: one key per
    /// provider, whatever its model.
    pub fn limit_key(&self) -> &'static str {
        match self {
            ProviderKind::Scripted => "llm:scripted",
            ProviderKind::OpenAi => "llm:openai",
            ProviderKind::Anthropic => "llm:anthropic",
        }
    }
}

impl FromStr for ProviderKind {
    type Err = LlmError;
    fn from_str(s: &str) -> Result<Self, LlmError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "scripted" => Ok(ProviderKind::Scripted),
            "openai" => Ok(ProviderKind::OpenAi),
            "anthropic" => Ok(ProviderKind::Anthropic),
            other => Err(LlmError::Config(format!(
                "HOTPATH_LLM_PROVIDER=`{other}`: expected scripted, openai or anthropic"
            ))),
        }
    }
}

/// An API key. Its `Debug` never shows it, so it cannot leak into logs through a config dump.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }

    /// The key itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LlmConfig {
    pub provider: ProviderKind,
    /// Base URL of the API, ending in `/` (`http://localhost:11434/v1/`); the provider's
    /// public endpoint when `None`.
    pub base_url: Option<String>,
    pub model: String,
    /// Used over a soft budget limit.
    pub cheap_model: Option<String>,
    pub api_key: Option<ApiKey>,
    /// Per call.
    pub timeout: Duration,
    /// Ask for structured output by JSON schema where the provider supports it (OpenAI
    /// `response_format: json_schema`, Anthropic a forced tool). Off: JSON mode and the prompt
    /// only. A server that rejects a schema request turns it off for itself on the first one.
    pub structured: bool,
    /// Scripted provider: seed, latency per call (± up to `latency_jitter`, drawn per request),
    /// share of calls that fail, share of answers that are malformed.
    pub seed: u64,
    pub latency: Duration,
    pub latency_jitter: Duration,
    pub error_rate: f64,
    pub malformed_rate: f64,
    /// Calls in flight at once, for all job kinds together.
    pub max_concurrent: usize,
    /// Calls started per second, for all job kinds together (0 = unlimited).
    pub requests_per_second: f64,
    pub budgets: Budgets,
    /// Record to / replay from this cassette file.
    pub cassette: Option<PathBuf>,
    pub cassette_mode: CassetteMode,
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            provider: ProviderKind::Scripted,
            base_url: None,
            model: "scripted".into(),
            cheap_model: None,
            api_key: None,
            timeout: Duration::from_secs(60),
            structured: true,
            seed: 0,
            latency: Duration::ZERO,
            latency_jitter: Duration::ZERO,
            error_rate: 0.0,
            malformed_rate: 0.0,
            max_concurrent: 8,
            requests_per_second: 0.0,
            budgets: Budgets::default(),
            cassette: None,
            cassette_mode: CassetteMode::Replay,
        }
    }
}

impl LlmConfig {
    /// Reads the `HOTPATH_LLM_*` variables of the process environment.
    pub fn from_env() -> Result<LlmConfig, LlmError> {
        LlmConfig::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the same variables through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<LlmConfig, LlmError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let provider: ProviderKind = get("HOTPATH_LLM_PROVIDER").unwrap_or_default().parse()?;
        let default_model = match provider {
            ProviderKind::Scripted => "scripted",
            ProviderKind::OpenAi => "gpt-4o-mini",
            ProviderKind::Anthropic => "claude-3-5-haiku-latest",
        };
        let api_key = get("HOTPATH_LLM_API_KEY")
            .or_else(|| match provider {
                ProviderKind::OpenAi => get("OPENAI_API_KEY"),
                ProviderKind::Anthropic => get("ANTHROPIC_API_KEY"),
                ProviderKind::Scripted => None,
            })
            .map(ApiKey);
        let mut base_url = get("HOTPATH_LLM_BASE_URL");
        if let Some(url) = &mut base_url
            && !url.ends_with('/')
        {
            // genai joins `chat/completions` / `messages` onto the base URL.
            url.push('/');
        }
        let d = LlmConfig::default();
        let budgets = Budgets {
            global: budget(&get, "GLOBAL")?,
            per_game: budget(&get, "GAME")?,
            per_player: budget(&get, "PLAYER")?,
        };
        let cassette_mode = match get("HOTPATH_LLM_CASSETTE_MODE").as_deref() {
            None | Some("replay") => CassetteMode::Replay,
            Some("record") => CassetteMode::Record,
            Some(other) => {
                return Err(LlmError::Config(format!(
                    "HOTPATH_LLM_CASSETTE_MODE=`{other}`: expected record or replay"
                )));
            }
        };
        let config = LlmConfig {
            provider,
            base_url,
            model: get("HOTPATH_LLM_MODEL").unwrap_or_else(|| default_model.into()),
            cheap_model: get("HOTPATH_LLM_CHEAP_MODEL"),
            api_key,
            timeout: Duration::from_millis(num(&get, "HOTPATH_LLM_TIMEOUT_MS", 60_000u64)?),
            structured: match get("HOTPATH_LLM_SCHEMA").as_deref().map(str::trim) {
                None | Some("1" | "true" | "on") => true,
                Some("0" | "false" | "off") => false,
                Some(other) => {
                    return Err(LlmError::Config(format!(
                        "HOTPATH_LLM_SCHEMA=`{other}`: expected on or off"
                    )));
                }
            },
            seed: num(&get, "HOTPATH_LLM_SEED", d.seed)?,
            latency: Duration::from_millis(num(&get, "HOTPATH_LLM_LATENCY_MS", 0u64)?),
            latency_jitter: Duration::from_millis(num(
                &get,
                "HOTPATH_LLM_LATENCY_JITTER_MS",
                0u64,
            )?),
            error_rate: rate(&get, "HOTPATH_LLM_ERROR_RATE")?,
            malformed_rate: rate(&get, "HOTPATH_LLM_MALFORMED_RATE")?,
            max_concurrent: num(&get, "HOTPATH_LLM_MAX_CONCURRENT", d.max_concurrent)?.max(1),
            requests_per_second: num(&get, "HOTPATH_LLM_RATE_PER_SEC", 0.0f64)?,
            budgets,
            cassette: get("HOTPATH_LLM_CASSETTE").map(PathBuf::from),
            cassette_mode,
        };
        if config.provider != ProviderKind::Scripted
            && config.api_key.is_none()
            && config.base_url.is_none()
        {
            // A local OpenAI-compatible server needs no key; the public APIs do.
            return Err(LlmError::Config(format!(
                "provider {:?} needs HOTPATH_LLM_API_KEY (or {}) or a HOTPATH_LLM_BASE_URL",
                config.provider,
                if config.provider == ProviderKind::OpenAi {
                    "OPENAI_API_KEY"
                } else {
                    "ANTHROPIC_API_KEY"
                }
            )));
        }
        Ok(config)
    }
}

fn num<T: FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: T,
) -> Result<T, LlmError> {
    match get(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| LlmError::Config(format!("{name}=`{v}`: expected a number"))),
    }
}

fn rate(get: &impl Fn(&str) -> Option<String>, name: &str) -> Result<f64, LlmError> {
    let r: f64 = num(get, name, 0.0)?;
    if (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err(LlmError::Config(format!(
            "{name}=`{r}`: expected a share from 0.0 to 1.0"
        )))
    }
}

/// `HOTPATH_LLM_BUDGET_<SCOPE>_SOFT` / `_HARD`: tokens per day.
fn budget(get: &impl Fn(&str) -> Option<String>, scope: &str) -> Result<Option<Budget>, LlmError> {
    let soft: Option<u64> = match get(&format!("HOTPATH_LLM_BUDGET_{scope}_SOFT")) {
        Some(_) => Some(num(get, &format!("HOTPATH_LLM_BUDGET_{scope}_SOFT"), 0)?),
        None => None,
    };
    let hard: Option<u64> = match get(&format!("HOTPATH_LLM_BUDGET_{scope}_HARD")) {
        Some(_) => Some(num(get, &format!("HOTPATH_LLM_BUDGET_{scope}_HARD"), 0)?),
        None => None,
    };
    Ok(match (soft, hard) {
        (None, None) => None,
        (soft, hard) => Some(Budget {
            soft: soft.unwrap_or(u64::MAX),
            hard: hard.unwrap_or(u64::MAX),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<LlmConfig, LlmError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LlmConfig::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn scripted_is_the_default() {
        let c = from(&[]).unwrap();
        assert_eq!(c.provider, ProviderKind::Scripted);
        assert_eq!(c.model, "scripted");
        assert!(c.api_key.is_none());
    }

    #[test]
    fn openai_reads_its_key_and_base_url() {
        let c = from(&[
            ("HOTPATH_LLM_PROVIDER", "openai"),
            ("OPENAI_API_KEY", "sk-secret-123"),
            ("HOTPATH_LLM_BASE_URL", "http://localhost:11434/v1"),
            ("HOTPATH_LLM_CHEAP_MODEL", "tiny"),
            ("HOTPATH_LLM_BUDGET_GAME_SOFT", "1000"),
            ("HOTPATH_LLM_BUDGET_GAME_HARD", "2000"),
        ])
        .unwrap();
        assert_eq!(c.provider, ProviderKind::OpenAi);
        assert_eq!(c.base_url.as_deref(), Some("http://localhost:11434/v1/"));
        assert_eq!(c.api_key.as_ref().unwrap().expose(), "sk-secret-123");
        assert_eq!(c.cheap_model.as_deref(), Some("tiny"));
        assert_eq!(
            c.budgets.per_game,
            Some(Budget {
                soft: 1000,
                hard: 2000
            })
        );
        let dump = format!("{c:?}");
        assert!(!dump.contains("sk-secret-123"), "{dump}");
        assert!(dump.contains("redacted"), "{dump}");
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (pairs, needle) in [
            (
                vec![("HOTPATH_LLM_PROVIDER", "gpt")],
                "HOTPATH_LLM_PROVIDER",
            ),
            (vec![("HOTPATH_LLM_SEED", "x")], "HOTPATH_LLM_SEED"),
            (
                vec![("HOTPATH_LLM_MALFORMED_RATE", "1.5")],
                "HOTPATH_LLM_MALFORMED_RATE",
            ),
            (
                vec![("HOTPATH_LLM_PROVIDER", "anthropic")],
                "ANTHROPIC_API_KEY",
            ),
        ] {
            let err = from(&pairs).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
