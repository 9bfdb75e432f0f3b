//! The API's rate limits, counted for the whole deployment: each player's actions, and token
//! lookups that reach the database per client address (so a flood of made-up tokens is refused
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
    joins: Rate,
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
            joins: Rate {
                per_second: 10.0 / 60.0,
                burst: 10,
            },
        }
    }

    /// Join attempts per game (see [`ApiLimits::join`]).
    pub fn joins(mut self, joins: Rate) -> ApiLimits {
        self.joins = joins;
        self
    }

    /// Admits one attempt to join `game` with an invite (counted before the invite is checked,
    /// so guessing costs as much as joining), or 429 with how long to wait.
    pub async fn join(&self, game: hotpath_cache::GameId) -> Result<(), ApiError> {
        self.ask(&format!("join:{game}"), self.joins).await
    }

    /// Counted in `shared` (every engine process of the deployment).
    pub fn shared(mut self, shared: Arc<dyn Limiter>) -> ApiLimits {
        self.shared = Some(shared);
        self
    }

    /// Admits one action of `player`, or 429 with how long to wait.
    pub async fn action(&self, player: &PlayerId) -> Result<(), ApiError> {
        self.ask(&format!("act:{player}"), self.actions).await
    }

    /// Before a token lookup that will reach the database: counts it against `client`'s
    /// address, or 429 when the address sent too many lately. Counted before the lookup, not
    /// after it found no player: a burst sent at once is held back too, not looked up whole.
    /// (A known player's token is answered from the player cache and never gets here, but for
    /// its first request after this process started.)
    pub async fn before_lookup(&self, client: Option<IpAddr>) -> Result<(), ApiError> {
        self.ask(&unknown_key(client), self.unknown_tokens).await
    }

    /// Forgets idle keys of the in-process counts.
    pub fn forget_idle(&self) {
        self.local.forget_idle();
    }

    async fn ask(&self, key: &str, rate: Rate) -> Result<(), ApiError> {
        let admission = match self.ask_shared(key, rate).await {
            Some(a) => Ok(a),
            None => self.local.admit(key, rate).await,
        };
        match admission {
            Ok(Admission::Admitted) | Err(_) => Ok(()),
            Ok(Admission::Wait(wait)) => Err(ApiError::TooManyRequests(wait)),
        }
    }

    /// The shared limiter's answer, or `None` when it failed (now or a moment ago).
    async fn ask_shared(&self, key: &str, rate: Rate) -> Option<Admission> {
        let shared = self.shared.as_ref()?;
        if now_ms() < self.fallback_until.load(Ordering::Relaxed) {
            return None;
        }
        let asked = shared.admit(key, rate);
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

/// The event streams open per player in this process, bounded: each holds a task, a
/// subscription and a connection.
#[derive(Debug, Clone)]
pub struct StreamSlots {
    open: Arc<std::sync::Mutex<std::collections::HashMap<PlayerId, usize>>>,
    max: usize,
}

impl StreamSlots {
    pub fn new(max: usize) -> StreamSlots {
        StreamSlots {
            open: Arc::default(),
            max: max.max(1),
        }
    }

    /// A place for one more stream of `player`, held until the slot is dropped; 429 when the
    /// player holds the most already.
    pub fn take(&self, player: PlayerId) -> Result<StreamSlot, ApiError> {
        let mut open = self.open.lock().expect("stream slots lock");
        let held = open.entry(player).or_default();
        if *held >= self.max {
            return Err(ApiError::TooMany(
                format!(
                    "this player has {} event streams open, the most allowed: close one \
                     (one stream per client is enough; it resumes with `Last-Event-ID`)",
                    self.max
                ),
                Duration::from_secs(1),
            ));
        }
        *held += 1;
        Ok(StreamSlot {
            slots: self.clone(),
            player,
        })
    }
}

/// One open event stream's place (see [`StreamSlots`]).
pub struct StreamSlot {
    slots: StreamSlots,
    player: PlayerId,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().expect("stream slots lock");
        if let Some(held) = open.get_mut(&self.player) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                open.remove(&self.player);
            }
        }
    }
}
