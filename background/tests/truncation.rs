//! A job whose answer is cut off at the token limit is retried with a shorter ask: the retry's
//! prompt says it was cut off and asks for fewer, shorter items; the first ask carried the
//! kind's own token budget and its JSON schema.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hotpath_background::jobs::{self, Deps, JobSettings, Outcome};
use hotpath_background::llm::scripted::{ScriptedConfig, ScriptedProvider};
use hotpath_background::llm::{Completion, LlmError, LlmRequest, Provider, TextStream};
use hotpath_background::prompts::MaxTokens;
use hotpath_cache::GameId;
use hotpath_cache::cache::MemoryCache;
use hotpath_cache::jobs::{GenerateSocialBundle, Job, JobKind};
use hotpath_cache::scenario::builtin;
use hotpath_cache::store::{SqliteStore, Store};
use hotpath_cache::stream::MemoryStream;

/// The scripted provider, except that its first answer stops at the token limit.
#[derive(Debug)]
struct CutOnce {
    inner: ScriptedProvider,
    asked: Mutex<Vec<LlmRequest>>,
}

#[async_trait]
impl Provider for CutOnce {
    fn model(&self) -> &str {
        "cut-once"
    }

    async fn complete(&self, request: &LlmRequest) -> Result<Completion, LlmError> {
        let first = {
            let mut asked = self.asked.lock().unwrap();
            asked.push(request.clone());
            asked.len() == 1
        };
        let mut c = self.inner.complete(request).await?;
        if first {
            c.text.truncate(c.text.len() / 2);
            c.truncated = true;
        }
        Ok(c)
    }

    async fn stream(&self, request: &LlmRequest) -> Result<TextStream, LlmError> {
        self.inner.stream(request).await
    }
}

#[tokio::test]
async fn a_cut_off_answer_is_asked_again_shorter() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("game.sqlite"))
            .await
            .unwrap(),
    );
    let game = GameId::generate();
    store
        .create_game(game, &builtin()["harbor-strike"])
        .await
        .unwrap();
    let provider = Arc::new(CutOnce {
        inner: ScriptedProvider::new(ScriptedConfig::default()),
        asked: Mutex::new(Vec::new()),
    });
    let deps = Deps {
        cache: Arc::new(MemoryCache::new(1000)),
        store,
        stream: Arc::new(MemoryStream::new(1000)),
        provider: provider.clone(),
        queue: None,
        answers: Default::default(),
    };
    let settings = JobSettings {
        retry_base: Duration::from_millis(1),
        retry_max: Duration::from_millis(5),
        ..JobSettings::default()
    };
    let job: Job = GenerateSocialBundle {
        game_id: game,
        world_version: 0,
    }
    .into();
    let outcome = jobs::execute(&job, "job-1", 1, &deps, &settings)
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Written(_)), "{outcome:?}");

    let asked = provider.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 2, "one cut-off answer, one retry");
    let budget = MaxTokens::default().of(JobKind::GenerateSocialBundle, &asked[0].facts);
    assert_eq!(asked[0].max_tokens, budget);
    assert_ne!(budget, 400, "social bundles have their own budget");
    let schema = asked[0].schema.as_ref().expect("asked by schema");
    assert!(schema["properties"]["reputation"]["required"].is_array());
    assert!(
        asked[0].prompt.contains("at most 12]"),
        "{}",
        asked[0].prompt
    );
    assert!(!asked[0].prompt.contains("cut off"));
    let retry = &asked[1].prompt;
    assert!(
        retry.contains(&format!("cut off at the limit of {budget} tokens")),
        "{retry}"
    );
    assert!(retry.contains("at most 5]"), "{retry}");
}
