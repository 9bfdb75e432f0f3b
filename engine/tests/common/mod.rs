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
    _dir: tempfile::TempDir,
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
        let hot = backends.hot_path(hotpath_cache::scenario::builtin(), HotConfig::default());
        let state = AppState::new(hot, ADMIN, &api);
        let router = api::app(state.clone(), &api);
        let database = config.database_url.clone();
        TestApp {
            router,
            state,
            backends,
            config,
            redis,
            database,
            _dir: dir,
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
