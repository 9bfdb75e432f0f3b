//! Backends failing under a running deployment: a dead Redis degrades answers (never fails
//! them) and they recover when it returns; a database that cannot record the action answers
//! 503 with Retry-After, and the idempotency key makes the retry safe.

mod common;

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::json;

use common::{TestApp, api_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_redis_degrades_answers_and_they_recover() {
    let mut app = TestApp::distributed_with(api_config(1000), true).await;
    let (game, token) = app.new_game().await;
    let body = json!({"scene_id": "docks", "text": "Hello"});
    let r = app.act(&game, &token, body.clone()).await;
    assert_eq!(
        (r.status, &r.json["degraded"]),
        (StatusCode::OK, &json!(false)),
        "{}",
        r.text
    );

    app.redis.as_mut().unwrap().stop();
    for i in 0..3 {
        let started = Instant::now();
        let r = app.act(&game, &token, body.clone()).await;
        let took = started.elapsed();
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["degraded"], true);
        assert_eq!(r.json["turn"], 2 + i, "still recorded, in order");
        assert!(
            r.json["reactions"]
                .as_array()
                .unwrap()
                .iter()
                .all(|x| x["source"] == "fallback")
        );
        // Not a latency measurement (the benches hold those): a guard against hanging on the
        // dead connection instead of degrading.
        assert!(took < Duration::from_secs(2), "answered in {took:?}");
    }
    let ready = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_ne!(ready.json["checks"]["cache"], "ok");

    app.redis.as_mut().unwrap().restart();
    let mut recovered = false;
    for _ in 0..50 {
        let r = app.act(&game, &token, body.clone()).await;
        assert_eq!(r.status, StatusCode::OK);
        if r.json["degraded"] == false {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "answers are no longer degraded once Redis is back"
    );
    let r = app
        .call(
            Method::GET,
            &format!("/v1/games/{game}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.json["degraded"], false);
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_is_503_and_the_idempotent_retry_records_once() {
    let app = TestApp::distributed().await;
    let (game, token) = app.new_game().await;
    let url = app.database.clone().unwrap();
    let uri = format!("/v1/games/{game}/actions");
    let body = json!({"scene_id": "docks", "text": "I search the quay for the ledger"});
    let key = [("idempotency-key", "retry-me")];

    set_connections(&url, false);
    let r = app
        .call_with(Method::POST, &uri, Some(&token), Some(body.clone()), &key)
        .await;
    r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(r.headers.contains_key("retry-after"));

    set_connections(&url, true);
    let first = app
        .call_with(Method::POST, &uri, Some(&token), Some(body.clone()), &key)
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let again = app
        .call_with(Method::POST, &uri, Some(&token), Some(body), &key)
        .await;
    assert_eq!(again.json["action_id"], first.json["action_id"]);
    let r = app
        .call(
            Method::GET,
            &format!("/v1/games/{game}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.json["turn"], 1, "the action is in the log exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_down_is_503() {
    let app = TestApp::embedded().await;
    let (game, token) = app.new_game().await;
    app.backends.store.close().await;
    let r = app
        .act(&game, &token, json!({"scene_id": "docks", "text": "Hello"}))
        .await;
    r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(r.headers.contains_key("retry-after"));
    let ready = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
}

/// The log and the outbox of a game agree: every action in the log has its `action.applied`
/// in the outbox at `<seq>-0`, and the seqs have no gap — a commit happened whole or not at all.
async fn log_and_outbox_agree(app: &TestApp, game: &str) -> usize {
    let game: hotpath_cache::GameId = game.parse().unwrap();
    let log = app.backends.store.events(game, 0).await.unwrap();
    let seqs: Vec<u64> = log.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=log.len() as u64).collect::<Vec<_>>(), "no gap");
    let outbox = app
        .backends
        .store
        .stream_events_after(
            game,
            hotpath_cache::stream::StreamId { ms: 0, seq: 0 },
            10_000,
        )
        .await
        .unwrap();
    let mut actions = 0;
    for (seq, event) in &log {
        if let hotpath_cache::events::LoggedEvent::ActionApplied(a) = event {
            actions += 1;
            let first = outbox
                .events
                .iter()
                .find(|(id, _)| id.ms == *seq && id.seq == 0);
            match first {
                Some((_, hotpath_cache::events::GameEvent::ActionApplied { action_id, .. })) => {
                    assert_eq!(*action_id, a.action_id)
                }
                other => panic!("seq {seq}: outbox has {other:?}"),
            }
        }
    }
    actions
}

/// A database made slow (a lock every commit needs, held by another session) is answered 503
/// with Retry-After at the budget, not when the database gets round to it; once it is fast
/// again, the actions that did commit are whole.
async fn slow_database_is_503_within_the_budget(
    app: TestApp,
    hold: impl AsyncFnOnce() -> Box<dyn FnOnce() + Send>,
) {
    let (game, token) = app.new_game().await;
    let body = |text: &str| json!({"scene_id": "docks", "text": text});
    assert_eq!(
        app.act(&game, &token, body("Hello")).await.status,
        StatusCode::OK
    );

    let release = hold().await;
    let started = Instant::now();
    // The first action's commit begins at once and waits on the lock; the second queues
    // behind it and never begins.
    let (begun, queued) = tokio::join!(app.act(&game, &token, body("begun")), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        app.act(&game, &token, body("queued")).await
    });
    let waited = started.elapsed();
    // The budget is 200 ms; the database would have kept them for seconds.
    assert!(waited < Duration::from_secs(2), "answered after {waited:?}");
    // A commit that began is not answered 503 (it may land): 202, outcome unknown.
    assert_eq!(begun.status, StatusCode::ACCEPTED, "{}", begun.text);
    let location = begun.headers["location"].to_str().unwrap().to_owned();
    assert_eq!(begun.json["location"], json!(location));
    assert!(begun.headers.contains_key("retry-after"));
    // One that never began is 503: not applied.
    queued.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(queued.headers.contains_key("retry-after"));
    release();

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if app.act(&game, &token, body("Hello")).await.status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the game recovers once the database is fast"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(log_and_outbox_agree(&app, &game).await >= 3);
    // The begun action landed once the lock was released; the queued one never did.
    let outcome = app.call(Method::GET, &location, Some(&token), None).await;
    assert_eq!(outcome.status, StatusCode::OK, "{}", outcome.text);
    assert_eq!(outcome.json["action_id"], begun.json["action_id"]);
    let id: hotpath_cache::GameId = game.parse().unwrap();
    let texts: Vec<String> = app
        .backends
        .store
        .events(id, 0)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|(_, e)| match e {
            hotpath_cache::events::LoggedEvent::ActionApplied(a) => Some(a.text),
            _ => None,
        })
        .collect();
    assert_eq!(texts.iter().filter(|t| *t == "begun").count(), 1);
    assert!(!texts.iter().any(|t| t == "queued"), "{texts:?}");
}

/// What a test calls after the slow answer: `release` runs a second later (the database stays
/// slow a little longer than the answer took).
fn release_later(release: impl Future<Output = ()> + Send + 'static) -> Box<dyn FnOnce() + Send> {
    let (done, wait) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = wait.await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        release.await;
    });
    Box::new(move || {
        let _ = done.send(());
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_postgres_is_503_within_the_budget() {
    let app = TestApp::distributed().await;
    let url = app.database.clone().unwrap();
    slow_database_is_503_within_the_budget(app, async move || {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("LOCK TABLE stream_events IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .unwrap();
        release_later(async move { tx.rollback().await.unwrap() })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_sqlite_is_503_within_the_budget() {
    let app = TestApp::embedded().await;
    let file = app.config.data_dir.join("hotpath.sqlite");
    slow_database_is_503_within_the_budget(app, async move || {
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&file);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        // Another writer holds SQLite's one write lock.
        let tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        release_later(async move { tx.rollback().await.unwrap() })
    })
    .await;
}
