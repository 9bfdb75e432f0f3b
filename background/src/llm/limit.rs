//! One concurrency limit and one rate limit per provider, shared by every job kind, every worker
//! and — through a shared [`Limiter`] (Redis in the distributed deployment) — every process:
//! the provider's quota is one budget, whatever asks. (apalis' `concurrency` / `rate_limit`
//! layers bound jobs per worker; a job may call the model several times, or not at all, so the
//! model's own limit lives here.)
//!
//! A call holds a slot lease for its whole length (a stream until it is dropped), renewed every
//! third of [`SLOT_LEASE`] while it runs; a process that dies holding one frees it when the
//! lease lapses, within [`SLOT_LEASE`].
//! When the limiter cannot be reached no call is made ([`LlmError::Ledger`]): the job retries
//! later, rather than calling the model outside the deployment's limits.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use hotpath_cache::limits::{Admission, Lease, Limiter, MemoryLimiter, Rate};

use super::governor::Phase;
use super::{Completion, LlmError, LlmRequest, Provider, TextStream};

/// How long a slot stays held by a caller that stopped renewing it (it died).
pub const SLOT_LEASE: Duration = Duration::from_secs(30);

/// Waits between looks for a free slot: from the first to the last, doubling.
const SLOT_POLL: (Duration, Duration) = (Duration::from_millis(10), Duration::from_millis(250));

#[derive(Debug)]
pub struct Limited {
    inner: Arc<dyn Provider>,
    limiter: Arc<dyn Limiter>,
    /// The provider's keys in the limiter.
    key: String,
    slots: u32,
    /// Calls started per second (`None`: unlimited); no burst, so calls start evenly spaced.
    rate: Option<Rate>,
}

impl Limited {
    /// At most `max_concurrent` calls in flight and `per_second` started per second (0 or less:
    /// no rate limit), counted in this process.
    pub fn new(inner: Arc<dyn Provider>, max_concurrent: usize, per_second: f64) -> Limited {
        Limited {
            inner,
            limiter: Arc::new(MemoryLimiter::default()),
            key: "llm".to_owned(),
            slots: max_concurrent.clamp(1, u32::MAX as usize) as u32,
            rate: (per_second > 0.0).then_some(Rate {
                per_second,
                burst: 1,
            }),
        }
    }

    /// Counts in `limiter` under `key` instead (shared by every process that uses them).
    pub fn shared(mut self, limiter: Arc<dyn Limiter>, key: impl Into<String>) -> Limited {
        self.limiter = limiter;
        self.key = key.into();
        self
    }

    /// Waits for a free slot.
    async fn slot(&self) -> Result<Lease, LlmError> {
        let key = format!("{}:slots", self.key);
        let mut poll = SLOT_POLL.0;
        loop {
            let lease = self
                .limiter
                .lease(&key, self.slots, SLOT_LEASE)
                .await
                .map_err(|e| LlmError::Ledger(e.to_string()))?;
            if let Some(lease) = lease {
                return Ok(lease);
            }
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(SLOT_POLL.1);
        }
    }

    /// Waits for this call's turn under the rate.
    async fn pace(&self) -> Result<(), LlmError> {
        let Some(rate) = self.rate else { return Ok(()) };
        let key = format!("{}:rate", self.key);
        loop {
            match self
                .limiter
                .admit(&key, rate)
                .await
                .map_err(|e| LlmError::Ledger(e.to_string()))?
            {
                Admission::Admitted => return Ok(()),
                Admission::Wait(d) => tokio::time::sleep(d).await,
            }
        }
    }

    async fn release(limiter: &dyn Limiter, lease: &Lease) {
        if let Err(e) = limiter.release(lease).await {
            // The lease lapses by itself.
            tracing::warn!(error = %e, "could not release a provider slot");
        }
    }
}

/// A held slot, renewed while held and given back when dropped (a stream's, or a call's that
/// was cancelled).
struct HeldSlot {
    limiter: Arc<dyn Limiter>,
    lease: Option<Lease>,
    renewal: tokio::task::AbortHandle,
}

impl HeldSlot {
    fn new(limiter: Arc<dyn Limiter>, lease: Lease) -> HeldSlot {
        let renewal = tokio::spawn({
            let (limiter, lease) = (limiter.clone(), lease.clone());
            async move {
                let mut every = tokio::time::interval(SLOT_LEASE / 3);
                every.tick().await;
                loop {
                    every.tick().await;
                    match limiter.renew(&lease, SLOT_LEASE).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!("a provider slot lapsed while its call ran");
                            return;
                        }
                        // The next tick tries again; the lease may lapse meanwhile.
                        Err(e) => tracing::warn!(error = %e, "could not renew a provider slot"),
                    }
                }
            }
        })
        .abort_handle();
        HeldSlot {
            limiter,
            lease: Some(lease),
            renewal,
        }
    }

    /// Gives the slot back now.
    async fn release(mut self) {
        self.renewal.abort();
        if let Some(lease) = self.lease.take() {
            Limited::release(&*self.limiter, &lease).await;
        }
    }
}

impl Drop for HeldSlot {
    fn drop(&mut self) {
        self.renewal.abort();
        let Some(lease) = self.lease.take() else {
            return;
        };
        let limiter = self.limiter.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { Limited::release(&*limiter, &lease).await });
        }
    }
}

#[async_trait]
impl Provider for Limited {
    fn model(&self) -> &str {
        self.inner.model()
    }

    async fn complete(&self, request: &LlmRequest) -> Result<Completion, LlmError> {
        hotpath_cache::guard::assert_off_hot_path()?;
        // Until it is sent, a call dropped here cost nothing (the governor gives back its
        // reservation).
        super::governor::mark(Phase::Waiting);
        // Held by a guard: a call cancelled midway (the job's timeout, a shutdown) gives its
        // slot back too, instead of holding it until the lease lapses.
        let slot = HeldSlot::new(self.limiter.clone(), self.slot().await?);
        let result = match self.pace().await {
            Ok(()) => {
                super::governor::mark(Phase::Sent);
                self.inner.complete(request).await
            }
            Err(e) => Err(e),
        };
        slot.release().await;
        result
    }

    async fn stream(&self, request: &LlmRequest) -> Result<TextStream, LlmError> {
        hotpath_cache::guard::assert_off_hot_path()?;
        super::governor::mark(Phase::Waiting);
        // The slot is held until the stream ends: a streaming call occupies the provider.
        let held = HeldSlot::new(self.limiter.clone(), self.slot().await?);
        self.pace().await?;
        super::governor::mark(Phase::Sent);
        let inner = self.inner.stream(request).await?;
        Ok(inner
            .map(move |item| {
                let _held = &held;
                item
            })
            .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::scripted::{ScriptedConfig, ScriptedProvider};
    use hotpath_cache::jobs::JobKind;

    fn request() -> LlmRequest {
        LlmRequest {
            kind: JobKind::NarratePhaseTransition,
            game_id: None,
            player_id: None,
            system: String::new(),
            prompt: "p".into(),
            max_tokens: 10,
            json: true,
            schema: None,
            model: None,
            attempt: 1,
            facts: serde_json::Value::Null,
        }
    }

    #[tokio::test]
    async fn concurrency_is_bounded() {
        let slow = Arc::new(ScriptedProvider::new(ScriptedConfig {
            latency: Duration::from_millis(100),
            ..ScriptedConfig::default()
        }));
        let limited = Arc::new(Limited::new(slow, 2, 0.0));
        let t = std::time::Instant::now();
        let calls = (0..4).map(|_| {
            let l = limited.clone();
            async move { l.complete(&request()).await.unwrap() }
        });
        futures::future::join_all(calls).await;
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(200),
            "{took:?}: two rounds of two"
        );
    }

    #[tokio::test]
    async fn rate_is_bounded() {
        let fast = Arc::new(ScriptedProvider::new(ScriptedConfig::default()));
        let limited = Limited::new(fast, 8, 20.0);
        let t = std::time::Instant::now();
        for _ in 0..5 {
            limited.complete(&request()).await.unwrap();
        }
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(190),
            "{took:?}: 5 calls at 20/s"
        );
    }
}
