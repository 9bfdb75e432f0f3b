//! The operations routes anyone can reach (`/metrics`, `/readyz`) and the 503 bodies: what they
//! cost the store and what they tell a stranger, on both deployments.

#[macro_use]
mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::json;

use common::TestApp;

/// The value of an unlabelled gauge in a Prometheus text page.
fn gauge(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn guards_on_the_page(app: &TestApp) -> Option<f64> {
    let r = app.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    gauge(&r.text, "hotpath_job_guards")
}

/// What a stranger reads when a backend is out: a generic message, never the backend's own
/// error text (which names hosts, users, files and versions).
const UNAVAILABLE: &str =
    "a backend is unavailable for a moment; retry after `Retry-After` seconds";

fn set_connections(database_url: &str, allow: bool) {
    let db = database_url.rsplit('/').next().unwrap();
    let pg = hotpath_testkit::shared_postgres();
    pg.psql(
        "postgres",
        &format!("ALTER DATABASE {db} ALLOW_CONNECTIONS {allow}"),
    );
    if !allow {
        pg.psql(
            "postgres",
            &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid()"),
        );
    }
}

/// Breaks the deployment's SQL store.
async fn break_store(app: &TestApp) {
    match &app.database {
        Some(url) => set_connections(url, false),
        None => app.backends.store.close().await,
    }
}

mod suite {
    use super::*;

    /// Finding 11: a scrape renders what the background refresh read last; the store is asked
    /// at most once per refresh interval however often `/metrics` is scraped.
    pub async fn metrics_read_the_store_at_most_every_few_seconds(app: TestApp) {
        let (game, token) = app.new_game().await;
        app.act(&game, &token, json!({"scene_id": "docks", "text": "Hello"}))
            .await;
        let held = app.backends.store.job_guards().await.unwrap() as f64;
        assert!(held > 0.0, "the action dispatched guarded jobs");
        // The first scrape starts a refresh; the page shows it soon.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while guards_on_the_page(&app).await != Some(held) {
            assert!(tokio::time::Instant::now() < deadline, "never refreshed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // More guards now (another game's); a flood of scrapes right after does not read the
        // store again.
        let (other, token) = app.new_game().await;
        app.act(
            &other,
            &token,
            json!({"scene_id": "docks", "text": "Hello"}),
        )
        .await;
        let now_held = app.backends.store.job_guards().await.unwrap() as f64;
        assert!(now_held > held);
        let pages = futures::future::join_all((0..50).map(|_| guards_on_the_page(&app))).await;
        assert!(
            pages.iter().all(|g| *g == Some(held)),
            "scrapes within the refresh interval show the last refresh: {pages:?}"
        );
    }

    /// Finding 11: `/readyz` and a 503 tell an unauthenticated client that a backend is out,
    /// not the backend's error text; the detail goes to the log.
    pub async fn backend_error_text_is_not_echoed(app: TestApp) {
        let (game, token) = app.new_game().await;
        break_store(&app).await;
        let r = app
            .act(&game, &token, json!({"scene_id": "docks", "text": "Hello"}))
            .await;
        r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
        assert_eq!(r.json["error"]["message"], UNAVAILABLE, "{}", r.text);
        let ready = app.call(Method::GET, "/readyz", None, None).await;
        assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
        let store = ready.json["checks"]["store"].as_str().unwrap().to_owned();
        assert!(
            store == "unavailable" || store == "timed out",
            "the check says what, not why: {store:?}"
        );
        if let Some(url) = &app.database {
            set_connections(url, true);
        }
    }
}

/// The metrics gauges are process-wide: the two deployments run one after the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_read_the_store_at_most_every_few_seconds() {
    suite::metrics_read_the_store_at_most_every_few_seconds(TestApp::embedded().await).await;
    suite::metrics_read_the_store_at_most_every_few_seconds(TestApp::distributed().await).await;
}

both_deployments!(backend_error_text_is_not_echoed);
