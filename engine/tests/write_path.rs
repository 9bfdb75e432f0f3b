//! The write path's promise under the scenario the API docs lead clients into: a player sends
//! an action with an `Idempotency-Key`, PostgreSQL stalls (another connection holds a lock on
//! the log), the client retries with the same key while the first try waits, and a second
//! player of the same game acts meanwhile. Whatever the stall and the spacing, the game's log
//! has no hole and no action twice, every 200 is in the log at its seq, a 503 was not applied
//! and a 202 (outcome unknown) is in the log at most once.

mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::json;
use sqlx::Connection;

use common::{Reply, TestApp, api_config};
use hotpath_cache::GameId;
use hotpath_cache::events::LoggedEvent;
use hotpath_engine::compose::{BackendConfig, Backends};
use hotpath_engine::hot::HotConfig;

async fn act(app: &TestApp, game: &str, token: &str, text: &str, key: Option<&str>) -> Reply {
    let body = json!({"scene_id": "docks", "kind": "say", "target": "mara", "text": text});
    let headers: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
    app.call_with(
        Method::POST,
        &format!("/v1/games/{game}/actions"),
        Some(token),
        Some(body),
        &headers,
    )
    .await
}

/// Holds `ACCESS EXCLUSIVE` on the log for `stall`: every commit waits behind it.
async fn stall_commits(database: String, stall: Duration) {
    let mut conn = sqlx::PgConnection::connect(&database).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("LOCK TABLE game_events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .unwrap();
    tokio::time::sleep(stall).await;
    tx.commit().await.unwrap();
}

/// The log of `game` as (seq, action text) of its applied actions, all seqs checked contiguous.
async fn log_of(app: &TestApp, game: &str) -> Vec<(u64, String, String)> {
    let game: GameId = game.parse().unwrap();
    let events = app.state.hot.store.events(game, 0).await.unwrap();
    let seqs: Vec<u64> = events.iter().map(|(s, _)| *s).collect();
    let contiguous: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, contiguous, "the log has a hole");
    events
        .into_iter()
        .filter_map(|(seq, e)| match e {
            LoggedEvent::ActionApplied(a) => Some((seq, a.text, a.action_id.to_string())),
            _ => None,
        })
        .collect()
}

/// What one logical action's answers allow of the log: (must be in it, may be in it).
fn expect(answers: &[&Reply]) -> (bool, bool) {
    let applied = answers.iter().any(|r| r.status == StatusCode::OK);
    let unknown = answers.iter().any(|r| r.status == StatusCode::ACCEPTED);
    (applied, applied || unknown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_during_a_slow_commit_leaves_no_hole_and_no_duplicate() {
    let app = TestApp::distributed().await;
    let database = app.database.clone().unwrap();
    let stalls_ms = [100, 200, 300, 300, 400, 500, 700, 1000, 1500, 3000];
    let mut run = 0;
    for &stall in &stalls_ms {
        for spacing_ms in [20u64, 120] {
            run += 1;
            let (game, ada) = app.new_game().await;
            let bob = app.new_player(&game, "Bob").await;
            // One action before the stall, so the writer is loaded.
            assert_eq!(act(&app, &game, &ada, "warm up", None).await.status, 200);

            let lock = tokio::spawn(stall_commits(
                database.clone(),
                Duration::from_millis(stall),
            ));
            tokio::time::sleep(Duration::from_millis(30)).await;
            let key = format!("retry-{run}");
            let a_text = format!("run {run}: Ada asks once");
            let b_text = format!("run {run}: Bob speaks");
            let (first, retry, other) = tokio::join!(
                act(&app, &game, &ada, &a_text, Some(&key)),
                async {
                    tokio::time::sleep(Duration::from_millis(spacing_ms)).await;
                    act(&app, &game, &ada, &a_text, Some(&key)).await
                },
                async {
                    tokio::time::sleep(Duration::from_millis(spacing_ms * 2)).await;
                    act(&app, &game, &bob, &b_text, None).await
                },
            );
            lock.await.unwrap();
            // Let a commit still under way end before the log is read.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let context = format!(
                "run {run} (stall {stall} ms, spacing {spacing_ms} ms): first {} {}, retry {} {}, other {} {}",
                first.status, first.text, retry.status, retry.text, other.status, other.text
            );
            for r in [&first, &retry, &other] {
                assert!(
                    [200, 202, 503].contains(&r.status.as_u16()),
                    "unexpected answer: {context}"
                );
            }
            let log = log_of(&app, &game).await;
            let ids: std::collections::BTreeSet<&str> =
                log.iter().map(|(_, _, id)| id.as_str()).collect();
            assert_eq!(ids.len(), log.len(), "an action id twice: {context}");
            for (text, answers) in [(&a_text, vec![&first, &retry]), (&b_text, vec![&other])] {
                let found: Vec<&(u64, String, String)> =
                    log.iter().filter(|(_, t, _)| t == text).collect();
                let (must, may) = expect(&answers);
                assert!(found.len() <= 1, "`{text}` logged twice: {context}");
                assert!(
                    !must || found.len() == 1,
                    "`{text}` answered 200, not in the log: {context}"
                );
                assert!(
                    may || found.is_empty(),
                    "`{text}` answered 503, yet applied: {context}"
                );
                for r in answers.iter().filter(|r| r.status == StatusCode::OK) {
                    let (seq, _, id) = found[0];
                    assert_eq!(r.json["seq"], json!(seq), "{context}");
                    assert_eq!(r.json["action_id"], json!(id), "{context}");
                }
                for r in answers.iter().filter(|r| r.status == StatusCode::ACCEPTED) {
                    let id = r.json["action_id"].as_str().unwrap();
                    let location = r.headers["location"].to_str().unwrap().to_owned();
                    let asked = app.call(Method::GET, &location, Some(&ada), None).await;
                    match found.first() {
                        Some((seq, _, logged)) => {
                            assert_eq!(logged, id, "{context}");
                            assert_eq!(asked.json["seq"], json!(seq), "{context}");
                        }
                        None => asked.assert_error(StatusCode::NOT_FOUND, "not_found"),
                    }
                }
            }
            // Both tries of one key agree when both were answered.
            if first.status == StatusCode::OK && retry.status == StatusCode::OK {
                assert_eq!(
                    first.json, retry.json,
                    "the retry's answer differs: {context}"
                );
            }
        }
    }
}

/// After a commit of a game fails (SQLite's write lock held past the budget), the game's next
/// actions commit: the failed generation refuses only the items applied on top of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failed_commit_the_next_actions_commit() {
    let app = TestApp::embedded().await;
    let (game, ada) = app.new_game().await;
    let first = act(&app, &game, &ada, "first", None).await;
    assert_eq!(first.status, 200, "{}", first.text);
    // Fail the game's next commit: another connection holds SQLite's write lock past the budget.
    let path = app.config.data_dir.join("hotpath.sqlite");
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut conn)
        .await
        .unwrap();
    let refused = act(&app, &game, &ada, "while locked", None).await;
    assert!(
        [503, 202].contains(&refused.status.as_u16()),
        "{}",
        refused.text
    );
    sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
    // Every later action commits (the committer forgets nothing it should not refuse).
    for n in 0..5 {
        let r = act(&app, &game, &ada, &format!("after {n}"), None).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let log = log_of(&app, &game).await;
    let texts: Vec<&str> = log.iter().map(|(_, t, _)| t.as_str()).collect();
    assert!(texts.ends_with(&["after 0", "after 1", "after 2", "after 3", "after 4"]));
}

/// A writer that retires after its game's last item was refused leaves nothing behind: the
/// next writer of the game commits at once. (A refused generation used to outlive its writer:
/// the successor started at generation 0 again and its actions were refused with 503.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_writer_is_not_refused_for_its_predecessors_failure() {
    let dir = tempfile::tempdir().unwrap();
    let config = BackendConfig {
        data_dir: dir.path().join("data"),
        redis_url: None,
        database_url: None,
    };
    let backends = Backends::connect(&config).await.unwrap();
    let hot = HotConfig {
        writer_idle: Duration::from_millis(300),
        ..HotConfig::default()
    };
    let app = TestApp::from_backends_with(backends, config, None, dir, api_config(1000), hot);
    let (game, ada) = app.new_game().await;
    let first = act(&app, &game, &ada, "first", None).await;
    assert_eq!(first.status, 200, "{}", first.text);

    let path = app.config.data_dir.join("hotpath.sqlite");
    let mut lock = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut lock)
        .await
        .unwrap();
    // One commit begins and waits; the next item queues behind it, expires and is refused.
    let (begun, queued) = tokio::join!(act(&app, &game, &ada, "begun", None), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        act(&app, &game, &ada, "queued", None).await
    });
    assert_eq!(begun.status, StatusCode::ACCEPTED, "{}", begun.text);
    queued.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    sqlx::query("COMMIT").execute(&mut lock).await.unwrap();
    // The writer retires once idle; the next action starts a new one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = act(&app, &game, &ada, "after retirement", None).await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.text);
    let texts: Vec<String> = log_of(&app, &game)
        .await
        .into_iter()
        .map(|(_, t, _)| t)
        .collect();
    assert_eq!(texts, ["first", "begun", "after retirement"]);
}
