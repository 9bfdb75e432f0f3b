//! The admin job routes on both deployments, against real job storage and real workers: jobs
//! a model that only answers garbage left behind are listed as dead letters with their reasons,
//! shown one by one, run again by a requeue once the model answers, and purged; unknown ids
//! are 404 and every route wants the admin token.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use hotpath_background::jobs::JobSettings;
use hotpath_background::llm::LlmConfig;
use hotpath_background::worker::WorkerConfig;
use hotpath_engine::api::{self, AppState};
use hotpath_engine::compose::Shutdown;
use hotpath_engine::hot::HotConfig;

use common::{ADMIN, TestApp};

/// How long any awaited condition may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(60);

/// A generous hot-path budget: workers share the machine with the action being answered.
fn patient(mut app: TestApp) -> TestApp {
    let api_config = common::api_config(1000);
    let hot = app.backends.hot_path(
        hotpath_cache::scenario::builtin(),
        HotConfig {
            budget: Duration::from_secs(5),
            ..HotConfig::default()
        },
    );
    app.state = AppState::new(hot, ADMIN, &api_config);
    app.state.queue = Some(std::sync::Arc::new(app.backends.jobs.clone()));
    app.router = api::app(app.state.clone(), &api_config);
    app
}

/// Workers of this process on the app's job storage, with quick retries.
struct Workers {
    shutdown: Shutdown,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Workers {
    fn start(app: &TestApp, llm: LlmConfig, tag: &str) -> Workers {
        let config = WorkerConfig {
            name: format!("admin-jobs-{tag}-{}", uuid::Uuid::new_v4().simple()),
            concurrency: 4,
            heartbeat: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(10),
            jobs: JobSettings {
                timeout: Duration::from_secs(20),
                retry_base: Duration::from_millis(20),
                retry_max: Duration::from_millis(100),
                ..JobSettings::default()
            },
            ..WorkerConfig::default()
        };
        let shutdown = Shutdown::default();
        let backends = app.backends.clone();
        let stop = shutdown.wait();
        let handle = tokio::spawn(async move { backends.run_workers(&llm, config, stop).await });
        Workers { shutdown, handle }
    }

    async fn stop(self) {
        self.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("the workers stop on shutdown")
            .expect("the worker task does not panic")
            .expect("the workers ran without error");
    }
}

async fn admin_get(app: &TestApp, uri: &str) -> Value {
    let r = app.call(Method::GET, uri, Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text);
    r.json
}

async fn admin_post(app: &TestApp, uri: &str, body: Value) -> common::Reply {
    app.call(Method::POST, uri, Some(ADMIN), Some(body)).await
}

/// Polls `uri` until `done` holds of its body.
async fn wait_for(app: &TestApp, uri: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let body = admin_get(app, uri).await;
        if done(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {DEADLINE:?}: {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ids_of(list: &Value) -> Vec<String> {
    list["jobs"]
        .as_array()
        .expect("`jobs` is an array")
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect()
}

mod suite {
    use super::*;

    pub async fn every_route_wants_the_admin_token(app: TestApp) {
        let (_, player) = app.new_game().await;
        let routes = [
            (Method::GET, "/v1/admin/jobs", None),
            (
                Method::GET,
                "/v1/admin/jobs/01J0000000000000000000000",
                None,
            ),
            (Method::GET, "/v1/admin/dead-letters", None),
            (
                Method::POST,
                "/v1/admin/jobs/requeue",
                Some(json!({"all": true})),
            ),
            (Method::POST, "/v1/admin/jobs/purge", Some(json!({}))),
        ];
        for (method, uri, body) in routes {
            let r = app.call(method.clone(), uri, None, body.clone()).await;
            r.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
            let r = app
                .call(method.clone(), uri, Some("not-the-admin"), body.clone())
                .await;
            r.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
            let r = app.call(method, uri, Some(&player), body).await;
            r.assert_error(StatusCode::FORBIDDEN, "forbidden");
        }
    }

    pub async fn bad_requests_and_unknown_ids(app: TestApp) {
        let r = app
            .call(
                Method::GET,
                "/v1/admin/jobs/01J0000000000000000000000",
                Some(ADMIN),
                None,
            )
            .await;
        r.assert_error(StatusCode::NOT_FOUND, "not_found");
        for uri in [
            "/v1/admin/jobs?status=Sleeping",
            "/v1/admin/jobs?kind=nap",
            "/v1/admin/jobs?limit=0",
            "/v1/admin/dead-letters?limit=1001",
        ] {
            let r = app.call(Method::GET, uri, Some(ADMIN), None).await;
            r.assert_error(StatusCode::BAD_REQUEST, "bad_request");
        }
        for body in [
            json!({}),
            json!({"ids": []}),
            json!({"all": false}),
            json!({"ids": ["x"], "all": true}),
        ] {
            let r = admin_post(&app, "/v1/admin/jobs/requeue", body).await;
            r.assert_error(StatusCode::BAD_REQUEST, "bad_request");
        }
        let r = admin_post(&app, "/v1/admin/jobs/purge", json!({"done_secs": u64::MAX})).await;
        r.assert_error(StatusCode::BAD_REQUEST, "bad_request");
        // Requeueing what is not a dead letter changes nothing.
        let r = admin_post(
            &app,
            "/v1/admin/jobs/requeue",
            json!({"ids": ["01J0000000000000000000000"]}),
        )
        .await;
        assert_eq!(
            (r.status, &r.json),
            (StatusCode::OK, &json!({"requeued": 0})),
            "{}",
            r.text
        );
    }

    pub async fn dead_letters_are_listed_with_their_reason_and_requeued(app: TestApp) {
        let app = patient(app);
        let garbage = LlmConfig {
            malformed_rate: 1.0,
            ..LlmConfig::default()
        };
        let workers = Workers::start(&app, garbage, "malformed");
        let (game, token) = app.new_game().await;
        let act = app
            .act(
                &game,
                &token,
                json!({"scene_id": "docks", "kind": "threaten", "text": "Pay the crews or else", "target": "mara"}),
            )
            .await;
        assert_eq!(act.status, StatusCode::OK, "{}", act.text);
        let ids: Vec<String> = act.json["dispatched"]
            .as_array()
            .expect("dispatched")
            .iter()
            .map(|d| d["job_id"].as_str().expect("acknowledged").to_owned())
            .collect();
        assert!(!ids.is_empty(), "{}", act.text);

        let dead = wait_for(
            &app,
            "/v1/admin/dead-letters?limit=1000",
            "every job dead",
            |b| {
                let dead = ids_of(b);
                ids.iter().all(|id| dead.contains(id))
            },
        )
        .await;
        workers.stop().await;
        for job in dead["jobs"].as_array().unwrap() {
            assert_eq!(job["dead"], true, "{job}");
            assert_eq!(job["status"], "Killed", "{job}");
            assert_eq!(job["game_id"], game.as_str(), "{job}");
            let kind = job["kind"].as_str().expect("a kind");
            let reason = job["reason"].as_str().expect("a reason");
            assert!(
                reason.contains(kind) && reason.contains("invalid output"),
                "{reason}"
            );
        }

        // One of them, shown and listed by status and kind.
        let first = &ids[0];
        let shown = admin_get(&app, &format!("/v1/admin/jobs/{first}")).await;
        assert_eq!(shown["id"], first.as_str());
        assert_eq!(shown["dead"], true);
        let kind = shown["kind"].as_str().unwrap().to_owned();
        assert_eq!(shown["message"]["kind"], kind.as_str(), "{shown}");
        let killed = admin_get(
            &app,
            &format!("/v1/admin/jobs?status=Killed&kind={kind}&limit=1000"),
        )
        .await;
        assert!(ids_of(&killed).contains(first), "{killed}");
        assert!(
            killed["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .all(|j| j["kind"] == kind.as_str() && j["status"] == "Killed"),
            "{killed}"
        );
        let pending = admin_get(&app, "/v1/admin/jobs?status=Pending").await;
        assert!(!ids_of(&pending).contains(first), "{pending}");

        // The model answers now: a requeued job runs again and is done.
        let workers = Workers::start(&app, LlmConfig::default(), "healthy");
        let r = admin_post(&app, "/v1/admin/jobs/requeue", json!({"ids": [first]})).await;
        assert_eq!(
            (r.status, &r.json),
            (StatusCode::OK, &json!({"requeued": 1})),
            "{}",
            r.text
        );
        let done = wait_for(
            &app,
            &format!("/v1/admin/jobs/{first}"),
            "the requeued job done",
            |j| j["status"] == "Done",
        )
        .await;
        assert_eq!(done["dead"], false, "{done}");
        assert!(done["reason"].is_null(), "{done}");

        let r = admin_post(&app, "/v1/admin/jobs/requeue", json!({"all": true})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        // Every other dead letter (jobs those jobs queued may have died too).
        let requeued = r.json["requeued"].as_u64().unwrap();
        assert!(requeued >= ids.len() as u64 - 1, "{}", r.text);
        wait_for(&app, "/v1/admin/dead-letters", "no dead letter left", |b| {
            b["jobs"] == json!([])
        })
        .await;
        wait_for(
            &app,
            "/v1/admin/jobs?limit=1000",
            "every requeued job done",
            |b| {
                b["jobs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|j| ids.iter().any(|id| j["id"] == id.as_str()))
                    .all(|j| j["status"] == "Done")
            },
        )
        .await;
        workers.stop().await;

        // Purged: done jobs older than 0 s are gone.
        let r = admin_post(
            &app,
            "/v1/admin/jobs/purge",
            json!({"done_secs": 0, "dead_secs": 0}),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let deadline = Instant::now() + DEADLINE;
        // `done_at` has a resolution of a second: what finished within it is kept until the
        // next purge.
        let mut deleted = r.json["deleted"].as_u64().unwrap();
        while deleted < ids.len() as u64 {
            assert!(
                Instant::now() < deadline,
                "purged {deleted} of {} jobs",
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
            let r = admin_post(&app, "/v1/admin/jobs/purge", json!({"done_secs": 0})).await;
            deleted += r.json["deleted"].as_u64().unwrap();
        }
        let r = app
            .call(
                Method::GET,
                &format!("/v1/admin/jobs/{first}"),
                Some(ADMIN),
                None,
            )
            .await;
        r.assert_error(StatusCode::NOT_FOUND, "not_found");
    }
}

both_deployments!(
    every_route_wants_the_admin_token,
    bad_requests_and_unknown_ids,
    dead_letters_are_listed_with_their_reason_and_requeued,
);
