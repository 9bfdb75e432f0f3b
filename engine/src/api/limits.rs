//! The API's rate limits, counted for the whole deployment: each player's actions, and token
//! lookups that found no player per client address (so a flood of made-up tokens is refused
//! before it reaches the database; a known token is answered from the in-process player cache
//! and never counted). The limiter is Redis when distributed; when it cannot answer within
//! [`SHARED_TIMEOUT`] the limits fall back to this process' own counts for a moment, so a
//! Redis outage degrades the limits to per-process, never the answers.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use hotpath_cache::PlayerId;
use hotpath_cache::limits::{Admission, Limiter, MemoryLimiter, Rate};
use hotpath_cache::time::now_ms;

use super::error::ApiError;

/// How long an action waits for the shared limiter.
pub const SHARED_TIMEOUT: Duration = Duration::from_millis(25);

/// After the shared limiter failed, how long the limits stay per-process before it is asked
/// again (a hung Redis costs one timeout per second, not one per request).
const FALLBACK_FOR_MS: i64 = 1000;

#[derive(Debug, Clone)]
pub struct ApiLimits {
    /// `None`: counted in this process only.
    shared: Option<Arc<dyn Limiter>>,
    local: Arc<MemoryLimiter>,
    /// Until when (ms) the shared limiter is not asked.
    fallback_until: Arc<AtomicI64>,
    actions: Rate,
    unknown_tokens: Rate,
}

impl ApiLimits {
    /// Counted in this process only.
    pub fn local(actions: Rate, unknown_tokens: Rate) -> ApiLimits {
        ApiLimits {
            shared: None,
            local: Arc::new(MemoryLimiter::default()),
            fallback_until: Arc::default(),
            actions,
            unknown_tokens,
        }
    }

    /// Counted in `shared` (every engine process of the deployment).
    pub fn shared(mut self, shared: Arc<dyn Limiter>) -> ApiLimits {
        self.shared = Some(shared);
        self
    }

    /// Admits one action of `player`, or 429 with how long to wait.
    pub async fn action(&self, player: &PlayerId) -> Result<(), ApiError> {
        self.ask(&format!("act:{player}"), self.actions, true).await
    }

    /// Before a token lookup that will reach the database: 429 when `client` sent too many
    /// unknown tokens lately.
    pub async fn before_lookup(&self, client: Option<IpAddr>) -> Result<(), ApiError> {
        self.ask(&unknown_key(client), self.unknown_tokens, false)
            .await
    }

    /// Counts a lookup that found no player.
    pub async fn unknown_token(&self, client: Option<IpAddr>) {
        // The answer is 401 either way; this only charges the address.
        let _ = self
            .ask(&unknown_key(client), self.unknown_tokens, true)
            .await;
    }

    /// Forgets idle keys of the in-process counts.
    pub fn forget_idle(&self) {
        self.local.forget_idle();
    }

    async fn ask(&self, key: &str, rate: Rate, count: bool) -> Result<(), ApiError> {
        let admission = match self.ask_shared(key, rate, count).await {
            Some(a) => Ok(a),
            None if count => self.local.admit(key, rate).await,
            None => self.local.peek(key, rate).await,
        };
        match admission {
            Ok(Admission::Admitted) | Err(_) => Ok(()),
            Ok(Admission::Wait(wait)) => Err(ApiError::TooManyRequests(wait)),
        }
    }

    /// The shared limiter's answer, or `None` when it failed (now or a moment ago).
    async fn ask_shared(&self, key: &str, rate: Rate, count: bool) -> Option<Admission> {
        let shared = self.shared.as_ref()?;
        if now_ms() < self.fallback_until.load(Ordering::Relaxed) {
            return None;
        }
        let asked = async {
            if count {
                shared.admit(key, rate).await
            } else {
                shared.peek(key, rate).await
            }
        };
        match tokio::time::timeout(SHARED_TIMEOUT, asked).await {
            Ok(Ok(a)) => Some(a),
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {SHARED_TIMEOUT:?}"),
                };
                tracing::warn!(error = %why, "shared rate limiter unavailable; limiting per process for a moment");
                self.fallback_until
                    .store(now_ms() + FALLBACK_FOR_MS, Ordering::Relaxed);
                None
            }
        }
    }
}

fn unknown_key(client: Option<IpAddr>) -> String {
    match client {
        Some(ip) => format!("unknown-token:{ip}"),
        None => "unknown-token:-".to_owned(),
    }
}
