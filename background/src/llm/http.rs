//! The HTTP providers, both through genai: OpenAI-compatible chat completions (any base URL:
//! OpenAI, Ollama, vLLM, llama.cpp's server, OpenRouter) and Anthropic Messages. genai speaks
//! each wire protocol (including SSE streaming); this module maps its errors onto [`LlmError`]
//! so the jobs can tell a 429 (retry after its delay) from a 400 (do not retry).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use genai::adapter::AdapterKind;
use genai::chat::{ChatMessage, ChatOptions, ChatRequest, ChatResponseFormat, ChatStreamEvent};
use genai::resolver::{AuthData, Endpoint, ServiceTargetResolver};
use genai::{Client, ModelIden, ServiceTarget, WebConfig};
use hotpath_cache::guard::assert_off_hot_path;

use super::config::{ApiKey, LlmConfig, ProviderKind};
use super::{Completion, LlmError, LlmRequest, Provider, TextStream, Usage};

/// An OpenAI-compatible or Anthropic provider.
pub struct HttpProvider {
    client: Client,
    adapter: AdapterKind,
    model: String,
    base_url: Option<String>,
    api_key: Option<ApiKey>,
    timeout: Duration,
}

impl fmt::Debug for HttpProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is held by genai's resolver too; neither is ever printed.
        f.debug_struct("HttpProvider")
            .field("adapter", &self.adapter)
            .field("model", &self.model)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl HttpProvider {
    pub fn new(config: &LlmConfig) -> Result<HttpProvider, LlmError> {
        let adapter = match config.provider {
            ProviderKind::OpenAi => AdapterKind::OpenAI,
            ProviderKind::Anthropic => AdapterKind::Anthropic,
            ProviderKind::Scripted => {
                return Err(LlmError::Config(
                    "the scripted provider is not an HTTP provider".into(),
                ));
            }
        };
        let base_url = config.base_url.clone();
        // Local OpenAI-compatible servers take any key; genai wants one to build the header.
        let key = config
            .api_key
            .as_ref()
            .map(|k| k.expose().to_owned())
            .unwrap_or_else(|| "none".into());
        let endpoint_url = base_url.clone();
        let resolver = ServiceTargetResolver::from_resolver_fn(
            move |st: ServiceTarget| -> Result<ServiceTarget, genai::resolver::Error> {
                let endpoint = match &endpoint_url {
                    Some(url) => Endpoint::from_owned(url.clone()),
                    None => st.endpoint,
                };
                Ok(ServiceTarget {
                    endpoint,
                    auth: AuthData::from_single(key.clone()),
                    model: ModelIden::new(adapter, st.model.model_name),
                })
            },
        );
        let client = Client::builder()
            .with_service_target_resolver(resolver)
            .with_web_config(WebConfig::default().with_timeout(config.timeout))
            .build()
            .map_err(|e| LlmError::Config(e.to_string()))?;
        Ok(HttpProvider {
            client,
            adapter,
            model: config.model.clone(),
            base_url,
            api_key: config.api_key.clone(),
            timeout: config.timeout,
        })
    }

    fn chat(&self, request: &LlmRequest) -> (String, ChatRequest, ChatOptions) {
        let model = request.model.clone().unwrap_or_else(|| self.model.clone());
        let chat = ChatRequest::new(vec![ChatMessage::user(request.prompt.clone())])
            .with_system(request.system.clone());
        let mut options = ChatOptions::default()
            .with_max_tokens(request.max_tokens)
            .with_capture_usage(true)
            .with_temperature(0.8);
        if request.json && self.adapter == AdapterKind::OpenAI {
            // Anthropic has no JSON mode; its prompt asks for JSON, and the job validates.
            options = options.with_response_format(ChatResponseFormat::JsonMode);
        }
        (model, chat, options)
    }
}

/// `Retry-After` in seconds (or `retry-after-ms`), as providers send it with a 429.
fn parse_delay(value: Option<&str>, scale: f64) -> Option<Duration> {
    let secs = value?.trim().parse::<f64>().ok()? * scale;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

fn map_error(e: genai::Error, timeout: Duration) -> LlmError {
    // A stream carries the HTTP failure of its opening request inside `WebStream`.
    let e = match e {
        genai::Error::WebStream {
            error,
            cause,
            model_iden,
        } => match error.downcast::<genai::Error>() {
            Ok(inner) => *inner,
            Err(error) => genai::Error::WebStream {
                error,
                cause,
                model_iden,
            },
        },
        other => other,
    };
    if let Some(status) = e.status() {
        let code = status.as_u16();
        let message = one_line(&e.to_string());
        return match code {
            429 => {
                let headers = e.headers();
                let header = |name: &str| {
                    headers
                        .and_then(|h| h.get(name))
                        .and_then(|v| v.to_str().ok())
                };
                LlmError::RateLimited {
                    retry_after: parse_delay(header("retry-after-ms"), 0.001)
                        .or_else(|| parse_delay(header("retry-after"), 1.0)),
                }
            }
            500..=599 => LlmError::Server {
                status: code,
                message,
            },
            _ => LlmError::Rejected {
                status: code,
                message,
            },
        };
    }
    let text = one_line(&e.to_string());
    match &e {
        genai::Error::WebModelCall { webc_error, .. }
        | genai::Error::WebAdapterCall { webc_error, .. } => match webc_error {
            genai::webc::Error::Reqwest(r) if r.is_timeout() => LlmError::Timeout(timeout),
            genai::webc::Error::Reqwest(_) => LlmError::Transport(text),
            _ => LlmError::Malformed(text),
        },
        genai::Error::WebStream { .. } => LlmError::Transport(text),
        _ => LlmError::Malformed(text),
    }
}

fn one_line(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.len() > 400 {
        format!("{}…", &s[..s.floor_char_boundary(400)])
    } else {
        s
    }
}

#[async_trait]
impl Provider for HttpProvider {
    fn model(&self) -> &str {
        &self.model
    }

    async fn complete(&self, request: &LlmRequest) -> Result<Completion, LlmError> {
        assert_off_hot_path()?;
        let (model, chat, options) = self.chat(request);
        let call = self.client.exec_chat(&model, chat, Some(&options));
        let res = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| LlmError::Timeout(self.timeout))?
            .map_err(|e| map_error(e, self.timeout))?;
        let text = res
            .first_text()
            .ok_or_else(|| LlmError::Malformed("the answer has no text".into()))?
            .to_owned();
        let usage = Usage {
            input_tokens: res.usage.prompt_tokens.unwrap_or(0).max(0) as u64,
            output_tokens: res.usage.completion_tokens.unwrap_or(0).max(0) as u64,
        };
        Ok(Completion {
            text,
            usage,
            model: res.model_iden.model_name.to_string(),
        })
    }

    async fn stream(&self, request: &LlmRequest) -> Result<TextStream, LlmError> {
        assert_off_hot_path()?;
        let (model, chat, options) = self.chat(request);
        let call = self.client.exec_chat_stream(&model, chat, Some(&options));
        let timeout = self.timeout;
        let res = tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| LlmError::Timeout(timeout))?
            .map_err(|e| map_error(e, timeout))?;
        let mut chunks = res
            .stream
            .filter_map(move |event| async move {
                match event {
                    Ok(ChatStreamEvent::Chunk(chunk)) if !chunk.content.is_empty() => {
                        Some(Ok(chunk.content))
                    }
                    Ok(_) => None,
                    Err(e) => Some(Err(map_error(e, timeout))),
                }
            })
            .boxed();
        // genai opens the stream lazily: an HTTP error status arrives as its first item. Wait
        // for the first chunk so such a failure is this call's `Err`, as the trait promises.
        let first = tokio::time::timeout(timeout, chunks.next())
            .await
            .map_err(|_| LlmError::Timeout(timeout))?;
        match first {
            None => Ok(futures::stream::empty().boxed()),
            Some(Err(e)) => Err(e),
            Some(Ok(chunk)) => Ok(futures::stream::once(async move { Ok(chunk) })
                .chain(chunks)
                .boxed()),
        }
    }
}
