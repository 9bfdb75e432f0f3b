//! The engine's test harness: a real deployment — embedded (SQLite files, in-process cache and
//! stream) or distributed (redis-server and PostgreSQL started by hotpath-testkit) — built by
//! the same composition code as `hotpath serve`, driven over HTTP with `oneshot`.

#![allow(dead_code)]

use std::num::NonZeroU32;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use hotpath_engine::api::{self, ApiConfig, AppState};
use hotpath_engine::compose::{BackendConfig, Backends};
use hotpath_engine::hot::HotConfig;
use hotpath_testkit::RedisServer;

pub const ADMIN: &str = "admin-test-token";

pub struct TestApp {
    pub router: Router,
    pub state: AppState,
    pub backends: Backends,
    pub config: BackendConfig,
    /// A Redis this test owns (and may kill).
    pub redis: Option<RedisServer>,
    pub database: Option<String>,
    /// Holds the embedded deployment's data directory (a restart takes it over).
    pub dir: tempfile::TempDir,
}

pub fn api_config(burst: u32) -> ApiConfig {
    ApiConfig {
        rate_per_second: NonZeroU32::new(burst).unwrap(),
        burst: NonZeroU32::new(burst).unwrap(),
        ..ApiConfig::default()
    }
}

impl TestApp {
    pub async fn build(
        config: BackendConfig,
        redis: Option<RedisServer>,
        dir: tempfile::TempDir,
        api: ApiConfig,
    ) -> TestApp {
        let backends = Backends::connect(&config).await.expect("backends");
        TestApp::from_backends(backends, config, redis, dir, api)
    }

    /// A test app over backends the test has adjusted (a smaller stream, say).
    pub fn from_backends(
        backends: Backends,
        config: BackendConfig,
        redis: Option<RedisServer>,
        dir: tempfile::TempDir,
        api: ApiConfig,
    ) -> TestApp {
        TestApp::from_backends_with(backends, config, redis, dir, api, HotConfig::default())
    }

    /// [`TestApp::from_backends`] with the hot path's settings (a short writer idle, say).
    pub fn from_backends_with(
        backends: Backends,
        config: BackendConfig,
        redis: Option<RedisServer>,
        dir: tempfile::TempDir,
        api: ApiConfig,
        hot: HotConfig,
    ) -> TestApp {
        let hot = backends.hot_path(hotpath_cache::scenario::builtin(), hot);
        let mut state = AppState::new(hot, ADMIN, &api);
        state.queue = Some(std::sync::Arc::new(backends.jobs.clone()));
        let router = api::app(state.clone(), &api);
        let database = config.database_url.clone();
        TestApp {
            router,
            state,
            backends,
            config,
            redis,
            database,
            dir,
        }
    }

    pub async fn embedded_with(api: ApiConfig) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let config = BackendConfig {
            data_dir: dir.path().join("data"),
            redis_url: None,
            database_url: None,
        };
        TestApp::build(config, None, dir, api).await
    }

    pub async fn embedded() -> TestApp {
        TestApp::embedded_with(api_config(1000)).await
    }

    pub async fn distributed_with(api: ApiConfig, own_redis: bool) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let redis = own_redis.then(RedisServer::start);
        let redis_url = match &redis {
            Some(r) => r.url(),
            None => hotpath_testkit::shared_redis().url(),
        };
        let config = BackendConfig {
            data_dir: dir.path().join("unused"),
            redis_url: Some(redis_url),
            database_url: Some(hotpath_testkit::fresh_postgres_database()),
        };
        TestApp::build(config, redis, dir, api).await
    }

    pub async fn distributed() -> TestApp {
        TestApp::distributed_with(api_config(1000), false).await
    }

    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        self.call_with(method, uri, token, body, &[]).await
    }

    pub async fn call_with(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&b).unwrap())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        self.send(req).await
    }

    pub async fn send(&self, req: Request<Body>) -> Reply {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            json,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// Creates a game and a player; returns (game id, player token).
    pub async fn new_game(&self) -> (String, String) {
        let r = self
            .call(
                Method::POST,
                "/v1/games",
                Some(ADMIN),
                Some(json!({"scenario": "harbor-strike"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let game = r.json["game_id"].as_str().unwrap().to_owned();
        let token = self.new_player(&game, "Ada").await;
        (game, token)
    }

    pub async fn new_player(&self, game: &str, name: &str) -> String {
        let r = self
            .call(
                Method::POST,
                &format!("/v1/games/{game}/players"),
                Some(ADMIN),
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.json["token"].as_str().unwrap().to_owned()
    }

    pub async fn act(&self, game: &str, token: &str, body: Value) -> Reply {
        self.call(
            Method::POST,
            &format!("/v1/games/{game}/actions"),
            Some(token),
            Some(body),
        )
        .await
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
    pub text: String,
}

impl Reply {
    /// Asserts the status and the JSON error shape.
    pub fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.json["error"]["code"], code, "{}", self.text);
        assert!(
            self.json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}",
            self.text
        );
    }
}

/// Serves `app` on a real socket of 127.0.0.1; returns the base URL.
pub async fn serve(app: &TestApp) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = app.state.clone();
    tokio::spawn(async move {
        hotpath_engine::compose::serve(listener, state, &api_config(1000), std::future::pending())
            .await
    });
    base
}

#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

/// A minimal SSE reader: enough of the format for the tests (id, event and data lines).
pub struct SseReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<axum::body::Bytes>>,
    buf: String,
}

impl SseReader {
    /// Opens `/v1/games/{game}/events{query}`, resuming after `last_id` if given.
    pub async fn open(
        client: &reqwest::Client,
        base: &str,
        game: &str,
        token: &str,
        query: &str,
        last_id: Option<&str>,
    ) -> (StatusCode, SseReader) {
        let mut req = client
            .get(format!("{base}/v1/games/{game}/events{query}"))
            .bearer_auth(token);
        if let Some(id) = last_id {
            req = req.header("last-event-id", id);
        }
        let resp = req.send().await.expect("events request");
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        let body = futures::StreamExt::boxed(resp.bytes_stream());
        (
            status,
            SseReader {
                body,
                buf: String::new(),
            },
        )
    }

    /// The next event (keep-alive comments skipped), within `deadline`.
    pub async fn next_within(&mut self, deadline: std::time::Duration) -> SseEvent {
        self.try_next_within(deadline)
            .await
            .unwrap_or_else(|| panic!("an event within {deadline:?}"))
    }

    /// The next event, or `None` if none comes within `deadline`.
    pub async fn try_next_within(&mut self, deadline: std::time::Duration) -> Option<SseEvent> {
        tokio::time::timeout(deadline, async {
            loop {
                if let Some(end) = self.buf.find("\n\n") {
                    let block: String = self.buf.drain(..end + 2).collect();
                    let mut ev = SseEvent {
                        id: None,
                        event: "message".into(),
                        data: Value::Null,
                    };
                    let mut data = String::new();
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("id:") {
                            ev.id = Some(v.trim().to_owned());
                        } else if let Some(v) = line.strip_prefix("event:") {
                            ev.event = v.trim().to_owned();
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data.push_str(v.trim());
                        }
                    }
                    if data.is_empty() && ev.id.is_none() {
                        continue; // a keep-alive comment
                    }
                    ev.data = serde_json::from_str(&data).unwrap_or(Value::Null);
                    return ev;
                }
                let chunk = futures::StreamExt::next(&mut self.body)
                    .await
                    .expect("stream open")
                    .expect("chunk");
                self.buf.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .ok()
    }

    pub async fn next(&mut self) -> SseEvent {
        self.next_within(std::time::Duration::from_secs(10)).await
    }

    /// The next event of one of `kinds`, skipping others (job.* events interleave).
    pub async fn next_of(&mut self, kinds: &[&str]) -> SseEvent {
        loop {
            let e = self.next().await;
            if kinds.contains(&e.event.as_str()) {
                return e;
            }
        }
    }
}

/// Runs each `suite::$case(app)` of the including test file on both deployments, as
/// `embedded::$case` and `distributed::$case` (the file has `suite` and `TestApp` in scope).
#[allow(unused_macros)]
macro_rules! both_deployments {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::suite::$case(super::TestApp::embedded().await).await;
                }
            )*
        }
        mod distributed {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::suite::$case(super::TestApp::distributed().await).await;
                }
            )*
        }
    };
}
