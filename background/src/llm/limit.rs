//! One concurrency limit and one rate limit per provider, shared by every job kind and every
//! worker of the process: the provider's quota is one budget, whatever asks. (apalis'
//! `concurrency` / `rate_limit` layers bound jobs per worker; a job may call the model several
//! times, or not at all, so the model's own limit lives here.)

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;

use super::{Completion, LlmError, LlmRequest, Provider, TextStream};

#[derive(Debug)]
pub struct Limited {
    inner: Arc<dyn Provider>,
    slots: Arc<Semaphore>,
    /// Minimum spacing between call starts (`None`: unlimited).
    spacing: Option<Duration>,
    next_start: Mutex<Instant>,
}

impl Limited {
    /// At most `max_concurrent` calls in flight and `per_second` started per second (0 or less:
    /// no rate limit).
    pub fn new(inner: Arc<dyn Provider>, max_concurrent: usize, per_second: f64) -> Limited {
        let spacing = (per_second > 0.0).then(|| Duration::from_secs_f64(1.0 / per_second));
        Limited {
            inner,
            slots: Arc::new(Semaphore::new(max_concurrent.max(1))),
            spacing,
            next_start: Mutex::new(Instant::now()),
        }
    }

    /// Waits for this call's turn: calls start at least `spacing` apart.
    async fn pace(&self) {
        let Some(spacing) = self.spacing else { return };
        let start = {
            let mut next = self.next_start.lock().await;
            let now = Instant::now();
            let start = (*next).max(now);
            *next = start + spacing;
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

#[async_trait]
impl Provider for Limited {
    fn model(&self) -> &str {
        self.inner.model()
    }

    async fn complete(&self, request: &LlmRequest) -> Result<Completion, LlmError> {
        hotpath_cache::guard::assert_off_hot_path()?;
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| LlmError::Config("provider limiter closed".into()))?;
        self.pace().await;
        self.inner.complete(request).await
    }

    async fn stream(&self, request: &LlmRequest) -> Result<TextStream, LlmError> {
        hotpath_cache::guard::assert_off_hot_path()?;
        // The slot is held until the stream ends: a streaming call occupies the provider.
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| LlmError::Config("provider limiter closed".into()))?;
        self.pace().await;
        let inner = self.inner.stream(request).await?;
        Ok(inner
            .map(move |item| {
                let _held = &slot;
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
