//! The HTTP providers, both through genai: OpenAI-compatible chat completions (any base URL:
//! OpenAI, Ollama, vLLM, llama.cpp's server, OpenRouter) and Anthropic Messages. genai speaks
//! each wire protocol (including SSE streaming); this module maps its errors onto [`LlmError`]
//! so the jobs can tell a 429 (retry after its delay) from a 400 (do not retry).
//!
//! Structured output: a request with a JSON schema asks OpenAI for `response_format:
//! {type: "json_schema"}` and Anthropic for a forced tool call (`tools` + `tool_choice`) whose
//! `tool_use` input is the answer. A server that rejects the schema (a 400/422 from an
//! OpenAI-compatible server that knows only JSON mode) is asked again in JSON mode, and from
//! then on always in JSON mode. A stop at the token limit (`finish_reason: "length"`,
//! `stop_reason: "max_tokens"`) comes back as [`Completion::truncated`].

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use genai::adapter::AdapterKind;
use genai::chat::{
    ChatMessage, ChatOptions, ChatRequest, ChatResponseFormat, ChatStreamEvent, JsonSpec, Tool,
    ToolChoice,
};
use genai::resolver::{AuthData, Endpoint, ServiceTargetResolver};
use genai::{Client, ModelIden, ServiceTarget, WebConfig};
use hotpath_cache::guard::assert_off_hot_path;

use super::config::{ApiKey, LlmConfig, ProviderKind};
use super::{Completion, Delta, LlmError, LlmRequest, Provider, TextStream, Usage};

/// An OpenAI-compatible or Anthropic provider.
pub struct HttpProvider {
    client: Client,
    adapter: AdapterKind,
    model: String,
    base_url: Option<String>,
    api_key: Option<ApiKey>,
    timeout: Duration,
    /// Ask by JSON schema (cleared when the server rejects a schema request).
    structured: AtomicBool,
}

/// The tool an Anthropic model is made to call: its input is the answer.
pub const ANSWER_TOOL: &str = "answer";

impl fmt::Debug for HttpProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is held by genai's resolver too; neither is ever printed.
        f.debug_struct("HttpProvider")
            .field("adapter", &self.adapter)
            .field("model", &self.model)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key)
            .field("timeout", &self.timeout)
            .field("structured", &self.structured.load(Ordering::Relaxed))
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
            structured: AtomicBool::new(config.structured),
        })
    }

    /// Whether `request` is asked by schema.
    fn by_schema(&self, request: &LlmRequest) -> bool {
        request.json && request.schema.is_some() && self.structured.load(Ordering::Relaxed)
    }

    fn chat(&self, request: &LlmRequest, by_schema: bool) -> (String, ChatRequest, ChatOptions) {
        let model = request.model.clone().unwrap_or_else(|| self.model.clone());
        let mut chat = ChatRequest::new(vec![ChatMessage::user(request.prompt.clone())])
            .with_system(request.system.clone());
        let mut options = ChatOptions::default()
            .with_max_tokens(request.max_tokens)
            .with_capture_usage(true)
            .with_temperature(0.8);
        let schema = request.schema.clone().filter(|_| by_schema);
        match (self.adapter, schema) {
            (AdapterKind::Anthropic, Some(schema)) => {
                chat = chat.append_tool(
                    Tool::new(ANSWER_TOOL)
                        .with_description("Give your answer: its input is the answer.")
                        .with_schema(schema),
                );
                options = options.with_tool_choice(ToolChoice::tool(ANSWER_TOOL));
            }
            (_, Some(schema)) => {
                options =
                    options.with_response_format(JsonSpec::new(request.kind.as_str(), schema));
            }
            // Anthropic has no JSON mode; its prompt asks for JSON, and the job validates.
            (AdapterKind::OpenAI, None) if request.json => {
                options = options.with_response_format(ChatResponseFormat::JsonMode);
            }
            _ => {}
        }
        (model, chat, options)
    }

    async fn complete_once(
        &self,
        request: &LlmRequest,
        by_schema: bool,
    ) -> Result<Completion, LlmError> {
        let (model, chat, options) = self.chat(request, by_schema);
        let call = self.client.exec_chat(&model, chat, Some(&options));
        let res = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| LlmError::Timeout(self.timeout))?
            .map_err(|e| map_error(e, self.timeout))?;
        let truncated = res.stop_reason.as_ref().is_some_and(|r| r.is_max_tokens());
        // A forced tool's input is the answer; otherwise the text is.
        let tool_input = res
            .tool_calls()
            .into_iter()
            .find(|c| c.fn_name == ANSWER_TOOL)
            .map(|c| c.fn_arguments.to_string());
        let text = match (tool_input, res.first_text()) {
            (Some(input), _) => input,
            (None, Some(text)) => text.to_owned(),
            // Cut off before any text: an empty answer the job retries with a shorter ask.
            (None, None) if truncated => String::new(),
            (None, None) => return Err(LlmError::Malformed("the answer has no text".into())),
        };
        // A server that omits usage still charged for the call: estimate, and say so.
        let usage = reported(&res.usage).unwrap_or_else(|| {
            Usage::estimate(request.system.len() + request.prompt.len(), text.len())
        });
        Ok(Completion {
            text,
            usage,
            model: res.model_iden.model_name.to_string(),
            truncated,
        })
    }
}

/// `Retry-After` in seconds (or `retry-after-ms`), as providers send it with a 429.
fn parse_delay(value: Option<&str>, scale: f64) -> Option<Duration> {
    let secs = value?.trim().parse::<f64>().ok()? * scale;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// The usage a server reported, if it reported both counts.
fn reported(usage: &genai::chat::Usage) -> Option<Usage> {
    match (usage.prompt_tokens, usage.completion_tokens) {
        (Some(input), Some(output)) => Some(Usage {
            input_tokens: input.max(0) as u64,
            output_tokens: output.max(0) as u64,
            estimated: false,
        }),
        _ => None,
    }
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
        let by_schema = self.by_schema(request);
        match self.complete_once(request, by_schema).await {
            Err(LlmError::Rejected { status, message })
                if by_schema && matches!(status, 400 | 422) =>
            {
                // Most likely a server without structured output: JSON mode from now on.
                tracing::warn!(
                    adapter = ?self.adapter, status, %message,
                    "the provider rejected a JSON-schema request; falling back to JSON mode"
                );
                self.structured.store(false, Ordering::Relaxed);
                self.complete_once(request, false).await
            }
            other => other,
        }
    }

    async fn stream(&self, request: &LlmRequest) -> Result<TextStream, LlmError> {
        assert_off_hot_path()?;
        let (model, chat, options) = self.chat(request, false);
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
                        Some(Ok(Delta::Text(chunk.content)))
                    }
                    Ok(ChatStreamEvent::End(end)) => end
                        .captured_usage
                        .as_ref()
                        .and_then(reported)
                        .map(|u| Ok(Delta::Usage(u))),
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
