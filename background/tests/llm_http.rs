//! The HTTP providers against wiremock speaking each wire protocol (OpenAI chat completions and
//! Anthropic Messages): an answer, a streamed answer (SSE), 429 with Retry-After, 500, a
//! timeout, malformed JSON. And the cassette: record through a provider, replay without it.

use std::time::Duration;

use futures::TryStreamExt;
use hotpath_background::llm::cassette::{Cassette, CassetteMode};
use hotpath_background::llm::config::ApiKey;
use hotpath_background::llm::http::HttpProvider;
use hotpath_background::llm::scripted::{ScriptedConfig, ScriptedProvider};
use hotpath_background::llm::{
    Delta, LlmConfig, LlmError, LlmRequest, Provider, ProviderKind, Usage,
};
use hotpath_cache::jobs::JobKind;
use serde_json::json;
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn request() -> LlmRequest {
    LlmRequest {
        kind: JobKind::NarratePhaseTransition,
        game_id: None,
        player_id: None,
        system: "You narrate.".into(),
        prompt: "Narrate the walkout.".into(),
        max_tokens: 64,
        json: true,
        schema: None,
        model: None,
        attempt: 1,
        facts: json!({}),
    }
}

fn config(kind: ProviderKind, server: &MockServer, timeout: Duration) -> LlmConfig {
    LlmConfig {
        provider: kind,
        base_url: Some(format!("{}/v1/", server.uri())),
        model: "test-model".into(),
        api_key: Some(ApiKey::new("sk-test-key")),
        timeout,
        ..LlmConfig::default()
    }
}

// ---- wire bodies --------------------------------------------------------------------------

fn openai_answer(text: &str) -> serde_json::Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "test-model",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
    })
}

fn openai_sse(chunks: &[&str]) -> String {
    let mut body = String::new();
    for c in chunks {
        let frame = json!({
            "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "test-model",
            "choices": [{"index": 0, "delta": {"content": c}, "finish_reason": null}]
        });
        body.push_str(&format!("data: {frame}\n\n"));
    }
    let end = json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "test-model",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    });
    body.push_str(&format!("data: {end}\n\ndata: [DONE]\n\n"));
    body
}

fn anthropic_answer(text: &str) -> serde_json::Value {
    json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "test-model",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 12, "output_tokens": 7}
    })
}

fn anthropic_sse(chunks: &[&str]) -> String {
    let mut body = String::new();
    let mut event = |name: &str, data: serde_json::Value| {
        body.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    };
    event(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
               "model": "test-model", "content": [], "stop_reason": null,
               "usage": {"input_tokens": 12, "output_tokens": 1}}}),
    );
    event(
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    );
    event("ping", json!({"type": "ping"}));
    for c in chunks {
        event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": c}}),
        );
    }
    event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    );
    event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
               "usage": {"output_tokens": 3}}),
    );
    event("message_stop", json!({"type": "message_stop"}));
    body
}

struct Wire {
    kind: ProviderKind,
    path: &'static str,
    answer: fn(&str) -> serde_json::Value,
    sse: fn(&[&str]) -> String,
}

const OPENAI: Wire = Wire {
    kind: ProviderKind::OpenAi,
    path: "/v1/chat/completions",
    answer: openai_answer,
    sse: openai_sse,
};

const ANTHROPIC: Wire = Wire {
    kind: ProviderKind::Anthropic,
    path: "/v1/messages",
    answer: anthropic_answer,
    sse: anthropic_sse,
};

async fn provider(wire: &Wire, server: &MockServer) -> HttpProvider {
    HttpProvider::new(&config(wire.kind, server, Duration::from_secs(5))).unwrap()
}

// ---- cases --------------------------------------------------------------------------------

async fn answers(wire: Wire) {
    let server = MockServer::start().await;
    let auth = match wire.kind {
        ProviderKind::OpenAi => header("authorization", "Bearer sk-test-key"),
        _ => header("x-api-key", "sk-test-key"),
    };
    Mock::given(method("POST"))
        .and(path(wire.path))
        .and(auth)
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json((wire.answer)("{\"text\":\"The docks fall silent.\"}")),
        )
        .expect(1)
        .mount(&server)
        .await;
    let p = provider(&wire, &server).await;
    let c = p.complete(&request()).await.unwrap();
    assert_eq!(c.text, "{\"text\":\"The docks fall silent.\"}");
    assert_eq!((c.usage.input_tokens, c.usage.output_tokens), (12, 7));
    assert_eq!(c.model, "test-model");
    // The key never shows in the provider's Debug.
    let dump = format!("{p:?}");
    assert!(!dump.contains("sk-test-key"), "{dump}");
}

async fn streams(wire: Wire) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(wire.path))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string((wire.sse)(&["The ", "docks ", "fall silent."])),
        )
        .mount(&server)
        .await;
    let p = provider(&wire, &server).await;
    let deltas: Vec<Delta> = p
        .stream(&request())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let chunks: Vec<&str> = deltas.iter().filter_map(Delta::text).collect();
    assert_eq!(chunks, ["The ", "docks ", "fall silent."]);
    // The usage the server sent at the end (OpenAI's last chunk, Anthropic's message_start and
    // message_delta), not an estimate.
    assert_eq!(
        deltas.last(),
        Some(&Delta::Usage(Usage {
            input_tokens: 12,
            output_tokens: 3,
            estimated: false
        })),
        "{deltas:?}"
    );

    // Governed, the stream settles its reservation from that usage when it ends.
    let spend = hotpath_cache::spend::MemorySpend::new();
    let budget = hotpath_background::llm::Budget {
        soft: 100_000,
        hard: 100_000,
    };
    let governed = hotpath_background::llm::Governor::new(
        std::sync::Arc::new(p),
        hotpath_background::llm::Budgets {
            global: Some(budget),
            ..Default::default()
        },
        None,
    )
    .with_spend(spend.clone());
    let _: Vec<Delta> = governed
        .stream(&request())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let today = hotpath_cache::spend::day_of(hotpath_cache::time::now_ms());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        use hotpath_cache::spend::SpendLedger;
        let spent = spend.spent(today, 10).await.unwrap();
        let global = spent.iter().find(|s| s.scope == "global").unwrap();
        if global.reserved == 0 {
            assert_eq!(
                global.used, 15,
                "settled from the reported usage: {global:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not settled: {global:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn rate_limited(wire: Wire) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(wire.path))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "7")
                .set_body_json(
                    json!({"error": {"message": "slow down", "type": "rate_limit_error"}}),
                ),
        )
        .mount(&server)
        .await;
    let p = provider(&wire, &server).await;
    let err = p.complete(&request()).await.unwrap_err();
    assert!(
        matches!(err, LlmError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(7)),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
}

async fn server_error(wire: Wire) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(wire.path))
        .respond_with(ResponseTemplate::new(500).set_body_string("boom"))
        .mount(&server)
        .await;
    let p = provider(&wire, &server).await;
    let err = p.complete(&request()).await.unwrap_err();
    assert!(
        matches!(err, LlmError::Server { status: 500, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    let err = p
        .stream(&request())
        .await
        .err()
        .expect("a stream of a 500 fails");
    assert!(
        matches!(err, LlmError::Server { status: 500, .. }),
        "{err:?}"
    );
}

async fn rejected(wire: Wire) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(wire.path))
        .respond_with(ResponseTemplate::new(401).set_body_string("bad key"))
        .mount(&server)
        .await;
    let err = provider(&wire, &server)
        .await
        .complete(&request())
        .await
        .unwrap_err();
    assert!(
        matches!(err, LlmError::Rejected { status: 401, .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

async fn times_out(wire: Wire) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(wire.path))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json((wire.answer)("late"))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    let p = HttpProvider::new(&config(wire.kind, &server, Duration::from_millis(300))).unwrap();
    let t = std::time::Instant::now();
    let err = p.complete(&request()).await.unwrap_err();
    assert!(matches!(err, LlmError::Timeout(_)), "{err:?}");
    assert!(t.elapsed() < Duration::from_secs(2));
}

async fn malformed_json(wire: Wire) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(wire.path))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "application/json")
                .set_body_string("{\"choices\": [ {\"message\": "),
        )
        .mount(&server)
        .await;
    let err = provider(&wire, &server)
        .await
        .complete(&request())
        .await
        .unwrap_err();
    assert!(matches!(err, LlmError::Malformed(_)), "{err:?}");
    assert!(err.is_retryable());
}

macro_rules! both_wires {
    ($($case:ident),*) => {
        mod openai {
            $(#[tokio::test] async fn $case() { super::$case(super::OPENAI).await })*
        }
        mod anthropic {
            $(#[tokio::test] async fn $case() { super::$case(super::ANTHROPIC).await })*
        }
    };
}

both_wires!(
    answers,
    streams,
    rate_limited,
    server_error,
    rejected,
    times_out,
    malformed_json
);

// ---- structured output and truncation ------------------------------------------------------

fn narration_schema() -> serde_json::Value {
    hotpath_background::prompts::schema(JobKind::NarratePhaseTransition, &json!({})).unwrap()
}

fn with_schema() -> LlmRequest {
    LlmRequest {
        schema: Some(narration_schema()),
        ..request()
    }
}

/// The body of every request the server received.
async fn bodies(server: &MockServer) -> Vec<serde_json::Value> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

#[tokio::test]
async fn openai_asks_by_json_schema() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(OPENAI.path))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(openai_answer("{\"text\":\"Silence.\"}")),
        )
        .mount(&server)
        .await;
    let p = provider(&OPENAI, &server).await;
    let c = p.complete(&with_schema()).await.unwrap();
    assert_eq!(c.text, "{\"text\":\"Silence.\"}");
    assert!(!c.truncated);
    let body = &bodies(&server).await[0];
    let format = &body["response_format"];
    assert_eq!(format["type"], "json_schema", "{body}");
    assert_eq!(format["json_schema"]["name"], "narrate_phase_transition");
    assert_eq!(format["json_schema"]["strict"], true);
    let schema = &format["json_schema"]["schema"];
    assert_eq!(schema["properties"]["text"]["type"], "string", "{schema}");
    assert_eq!(schema["required"], json!(["text"]));
    assert_eq!(body["max_tokens"], 64);

    // Without a schema: JSON mode, as before.
    p.complete(&request()).await.unwrap();
    let body = &bodies(&server).await[1];
    assert_eq!(
        body["response_format"],
        json!({"type": "json_object"}),
        "{body}"
    );
}

#[tokio::test]
async fn anthropic_forces_a_tool_and_reads_its_input() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(ANTHROPIC.path))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "test-model",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "answer",
                         "input": {"text": "The docks fall silent."}}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 30, "output_tokens": 12}
        })))
        .mount(&server)
        .await;
    let p = provider(&ANTHROPIC, &server).await;
    let c = p.complete(&with_schema()).await.unwrap();
    let answer: serde_json::Value = serde_json::from_str(&c.text).unwrap();
    assert_eq!(answer, json!({"text": "The docks fall silent."}));
    assert!(!c.truncated);
    assert_eq!((c.usage.input_tokens, c.usage.output_tokens), (30, 12));
    let body = &bodies(&server).await[0];
    assert_eq!(
        body["tool_choice"],
        json!({"type": "tool", "name": "answer"}),
        "{body}"
    );
    let tool = &body["tools"][0];
    assert_eq!(tool["name"], "answer", "{body}");
    assert_eq!(tool["input_schema"]["properties"]["text"]["type"], "string");
    assert_eq!(tool["input_schema"]["required"], json!(["text"]));
}

#[tokio::test]
async fn schema_off_means_json_mode_only() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(OPENAI.path))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(openai_answer("{\"text\":\"Silence.\"}")),
        )
        .mount(&server)
        .await;
    let p = HttpProvider::new(&LlmConfig {
        structured: false,
        ..config(ProviderKind::OpenAi, &server, Duration::from_secs(5))
    })
    .unwrap();
    p.complete(&with_schema()).await.unwrap();
    let body = &bodies(&server).await[0];
    assert_eq!(
        body["response_format"],
        json!({"type": "json_object"}),
        "{body}"
    );
}

#[tokio::test]
async fn a_server_without_json_schema_falls_back_to_json_mode() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(OPENAI.path))
        .and(body_string_contains("\"json_schema\""))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({"error": {"message": "response_format json_schema is not supported"}}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(OPENAI.path))
        .and(body_string_contains("\"json_object\""))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(openai_answer("{\"text\":\"Silence.\"}")),
        )
        .mount(&server)
        .await;
    let p = provider(&OPENAI, &server).await;
    assert_eq!(
        p.complete(&with_schema()).await.unwrap().text,
        "{\"text\":\"Silence.\"}"
    );
    // The next request goes straight to JSON mode: one rejected call in all.
    p.complete(&with_schema()).await.unwrap();
    let kinds: Vec<String> = bodies(&server)
        .await
        .iter()
        .map(|b| b["response_format"]["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["json_schema", "json_object", "json_object"]);
}

#[tokio::test]
async fn openai_length_finish_is_truncation() {
    let server = MockServer::start().await;
    let mut body = openai_answer("{\"text\":\"The docks fa");
    body["choices"][0]["finish_reason"] = json!("length");
    Mock::given(method("POST"))
        .and(path(OPENAI.path))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(&server)
        .await;
    let c = provider(&OPENAI, &server)
        .await
        .complete(&with_schema())
        .await
        .unwrap();
    assert!(c.truncated);
    assert_eq!(c.text, "{\"text\":\"The docks fa");
}

#[tokio::test]
async fn anthropic_max_tokens_stop_is_truncation() {
    let server = MockServer::start().await;
    let mut body = anthropic_answer("{\"text\": \"The docks");
    body["stop_reason"] = json!("max_tokens");
    Mock::given(method("POST"))
        .and(path(ANTHROPIC.path))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(&server)
        .await;
    let c = provider(&ANTHROPIC, &server)
        .await
        .complete(&request())
        .await
        .unwrap();
    assert!(c.truncated);
    // Cut off inside the forced tool, before any input: an empty, truncated answer.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(ANTHROPIC.path))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_2", "type": "message", "role": "assistant", "model": "test-model",
            "content": [], "stop_reason": "max_tokens", "stop_sequence": null,
            "usage": {"input_tokens": 30, "output_tokens": 64}
        })))
        .mount(&server)
        .await;
    let c = provider(&ANTHROPIC, &server)
        .await
        .complete(&with_schema())
        .await
        .unwrap();
    assert!(c.truncated && c.text.is_empty(), "{c:?}");
}

// ---- cassette -----------------------------------------------------------------------------

#[tokio::test]
async fn cassette_records_then_replays_and_misses_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("session.json");
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(openai_answer("{\"text\":\"recorded\"}")),
        )
        .expect(1)
        .mount(&server)
        .await;
    let real = std::sync::Arc::new(provider(&OPENAI, &server).await);
    let recorder = Cassette::open(&file, CassetteMode::Record, real).unwrap();
    let first = recorder.complete(&request()).await.unwrap();
    // A second identical request is answered from the tape (the mock expects one call).
    assert_eq!(recorder.complete(&request()).await.unwrap(), first);
    let scripted = std::sync::Arc::new(ScriptedProvider::new(ScriptedConfig::default()));
    let mut dialogue = request();
    dialogue.kind = JobKind::StreamDialogueReply;
    dialogue.json = false;
    let recorder_streams = Cassette::open(&file, CassetteMode::Record, scripted.clone()).unwrap();
    let live: Vec<Delta> = recorder_streams
        .stream(&dialogue)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    drop(server);

    // Replay: no provider that could answer (scripted with every call failing).
    let failing = std::sync::Arc::new(ScriptedProvider::new(ScriptedConfig {
        error_rate: 1.0,
        ..ScriptedConfig::default()
    }));
    let player = Cassette::open(&file, CassetteMode::Replay, failing).unwrap();
    assert_eq!(player.len(), 2);
    let mut other_game = request();
    other_game.game_id = Some(hotpath_cache::GameId::generate());
    assert_eq!(player.complete(&other_game).await.unwrap(), first);
    let replayed: Vec<Delta> = player
        .stream(&dialogue)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(replayed, live);
    let mut unknown = request();
    unknown.prompt = "Something never recorded".into();
    let err = player.complete(&unknown).await.unwrap_err();
    assert!(matches!(err, LlmError::CassetteMiss { .. }), "{err:?}");
    assert!(err.to_string().contains("session.json"), "{err}");
}

#[tokio::test]
async fn replay_of_a_missing_cassette_is_an_error() {
    let scripted = std::sync::Arc::new(ScriptedProvider::new(ScriptedConfig::default()));
    let err = Cassette::open(
        std::path::Path::new("/nonexistent/cassette.json"),
        CassetteMode::Replay,
        scripted,
    )
    .unwrap_err();
    assert!(matches!(err, LlmError::Config(_)));
}

#[tokio::test]
async fn build_defaults_to_scripted_and_counts_tokens() {
    let provider = hotpath_background::llm::build(&LlmConfig::default()).unwrap();
    assert_eq!(provider.model(), "scripted");
    provider.complete(&request()).await.unwrap();
    let usage = provider.token_usage().expect("the governor counts");
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].kind, JobKind::NarratePhaseTransition);
    assert!(usage[0].input_tokens > 0 && usage[0].output_tokens > 0);
}
