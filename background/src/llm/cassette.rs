//! Record / replay: a provider wrapper that keeps request → answer pairs in a cassette file,
//! keyed by [`LlmRequest::canonical_hash`]. Record a session against a real model once, then
//! replay it in tests for free; a replay that meets a request it has no answer for fails loudly
//! ([`LlmError::CassetteMiss`]) instead of quietly calling a model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;
use hotpath_cache::guard::assert_off_hot_path;
use serde::{Deserialize, Serialize};

use super::{Completion, Delta, LlmError, LlmRequest, Provider, TextStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CassetteMode {
    /// Answer from the cassette; call the inner provider on a miss and record its answer.
    Record,
    /// Answer only from the cassette; a miss is an error.
    Replay,
}

/// One recorded exchange. The request text is kept so a cassette can be read and reviewed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recording {
    pub kind: String,
    pub system: String,
    pub prompt: String,
    pub completion: Completion,
    /// For streamed answers: the chunks, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<Vec<String>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Tape {
    /// `<request hash>` for completions, `<request hash>:stream` for streams.
    recordings: BTreeMap<String, Recording>,
}

#[derive(Debug)]
pub struct Cassette {
    path: PathBuf,
    mode: CassetteMode,
    inner: Arc<dyn Provider>,
    tape: Arc<Mutex<Tape>>,
}

impl Cassette {
    /// Opens `path` (absent is an empty cassette in record mode, an error in replay mode).
    pub fn open(
        path: &Path,
        mode: CassetteMode,
        inner: Arc<dyn Provider>,
    ) -> Result<Cassette, LlmError> {
        let tape = match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| LlmError::Config(format!("cassette {}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && mode == CassetteMode::Record => {
                Tape::default()
            }
            Err(e) => {
                return Err(LlmError::Config(format!(
                    "cassette {}: {e}",
                    path.display()
                )));
            }
        };
        Ok(Cassette {
            path: path.to_owned(),
            mode,
            inner,
            tape: Arc::new(Mutex::new(tape)),
        })
    }

    /// How many exchanges the cassette holds.
    pub fn len(&self) -> usize {
        self.tape.lock().map(|t| t.recordings.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lookup(&self, key: &str) -> Option<Recording> {
        self.tape.lock().ok()?.recordings.get(key).cloned()
    }

    fn miss(&self, request: &LlmRequest) -> LlmError {
        LlmError::CassetteMiss {
            path: self.path.display().to_string(),
            hash: request.canonical_hash(),
            kind: request.kind.as_str().to_owned(),
        }
    }
}

/// Adds `recording` under `key` and rewrites the file (to a temporary name, then renamed, so a
/// crash never leaves half a cassette).
fn save(
    path: &Path,
    tape: &Mutex<Tape>,
    key: String,
    recording: Recording,
) -> Result<(), LlmError> {
    let text = {
        let mut tape = tape
            .lock()
            .map_err(|_| LlmError::Config("cassette lock poisoned".into()))?;
        tape.recordings.insert(key, recording);
        serde_json::to_string_pretty(&*tape).map_err(|e| LlmError::Config(e.to_string()))?
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| LlmError::Config(format!("cassette {}: {e}", path.display())))
}

#[async_trait]
impl Provider for Cassette {
    fn model(&self) -> &str {
        self.inner.model()
    }

    async fn complete(&self, request: &LlmRequest) -> Result<Completion, LlmError> {
        assert_off_hot_path()?;
        let key = request.canonical_hash();
        if let Some(hit) = self.lookup(&key) {
            return Ok(hit.completion);
        }
        if self.mode == CassetteMode::Replay {
            return Err(self.miss(request));
        }
        let completion = self.inner.complete(request).await?;
        let recording = Recording {
            kind: request.kind.as_str().to_owned(),
            system: request.system.clone(),
            prompt: request.prompt.clone(),
            completion: completion.clone(),
            chunks: None,
        };
        save(&self.path, &self.tape, key, recording)?;
        Ok(completion)
    }

    async fn stream(&self, request: &LlmRequest) -> Result<TextStream, LlmError> {
        assert_off_hot_path()?;
        let key = format!("{}:stream", request.canonical_hash());
        if let Some(hit) = self.lookup(&key) {
            let chunks = hit.chunks.unwrap_or_else(|| vec![hit.completion.text]);
            let deltas = chunks
                .into_iter()
                .map(Delta::Text)
                .chain([Delta::Usage(hit.completion.usage)]);
            return Ok(futures::stream::iter(deltas.map(Ok)).boxed());
        }
        if self.mode == CassetteMode::Replay {
            return Err(self.miss(request));
        }
        // Pass chunks through as they come (a recorded session still streams live), keep them,
        // and save the exchange once the stream has ended without error.
        let inner = self.inner.stream(request).await?;
        type Kept = Option<(Vec<String>, Option<super::Usage>)>;
        let kept: Arc<Mutex<Kept>> = Arc::new(Mutex::new(Some((Vec::new(), None))));
        let keep = kept.clone();
        let passed = inner.map(move |item| {
            if let Ok(mut kept) = keep.lock() {
                match &item {
                    Ok(delta) => {
                        if let Some((chunks, usage)) = kept.as_mut() {
                            match delta {
                                Delta::Text(chunk) => chunks.push(chunk.clone()),
                                Delta::Usage(u) => *usage = Some(*u),
                            }
                        }
                    }
                    Err(_) => *kept = None,
                }
            }
            item
        });
        let (path, tape) = (self.path.clone(), self.tape.clone());
        let (kind, system, prompt) = (
            request.kind.as_str().to_owned(),
            request.system.clone(),
            request.prompt.clone(),
        );
        let model = request
            .model
            .clone()
            .unwrap_or_else(|| self.inner.model().to_owned());
        let input_chars = request.system.len() + request.prompt.len();
        let finish = futures::stream::once(async move {
            let chunks = kept.lock().ok().and_then(|mut k| k.take());
            match chunks {
                Some((chunks, usage)) => {
                    let text = chunks.concat();
                    let recording = Recording {
                        kind,
                        system,
                        prompt,
                        completion: Completion {
                            usage: usage
                                .unwrap_or_else(|| super::Usage::estimate(input_chars, text.len())),
                            text,
                            model,
                            truncated: false,
                        },
                        chunks: Some(chunks),
                    };
                    save(&path, &tape, key, recording).err().map(Err)
                }
                None => None,
            }
        })
        .filter_map(futures::future::ready);
        Ok(passed.chain(finish).boxed())
    }
}
