//! The SSE event stream over a real socket: live events, resume with `Last-Event-ID`, `reset`
//! for an id older than the stream holds, on both deployments.

#[macro_use]
mod common;

use serde_json::{Value, json};

use axum::http::StatusCode;
use common::{ADMIN, SseReader, TestApp};

struct Served {
    base: String,
    app: TestApp,
    client: reqwest::Client,
}

async fn serve(app: TestApp) -> Served {
    Served {
        base: common::serve(&app).await,
        app,
        client: reqwest::Client::new(),
    }
}

async fn open(
    s: &Served,
    game: &str,
    token: &str,
    query: &str,
    last_id: Option<&str>,
) -> (StatusCode, SseReader) {
    SseReader::open(&s.client, &s.base, game, token, query, last_id).await
}

async fn act(s: &Served, game: &str, token: &str, text: &str) -> Value {
    let r = s
        .client
        .post(format!("{}/v1/games/{game}/actions", s.base))
        .bearer_auth(token)
        .json(&json!({"scene_id": "docks", "text": text}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    r.json().await.unwrap()
}

mod suite {
    use super::*;

    pub async fn live_resume_and_errors(app: TestApp) {
        let s = serve(app).await;
        let (game, token) = s.app.new_game().await;
        let (status, mut live) = open(&s, &game, &token, "", None).await;
        assert_eq!(status, 200);
        let answer = act(&s, &game, &token, "Hello").await;
        let applied = live.next_of(&["action.applied"]).await;
        assert_eq!(applied.data["action_id"], answer["action_id"]);
        assert_eq!(applied.data["turn"], 1);
        let updated = live.next_of(&["state.updated"]).await;
        assert_eq!(updated.data["conflicts"][0]["conflict_id"], "strike");
        let resume_from = updated.id.clone().unwrap();

        act(&s, &game, &token, "Hello again").await;
        let second = live.next_of(&["action.applied"]).await;
        assert_eq!(second.data["turn"], 2);

        // A client that dropped after `resume_from` gets exactly what came after it.
        let (_, mut resumed) = open(&s, &game, ADMIN, "", Some(&resume_from)).await;
        let first_after = resumed.next_of(&["action.applied"]).await;
        assert_eq!(first_after.id, second.id);
        // And from the start: everything the stream holds, in order.
        let (_, mut all) = open(&s, &game, &token, "?from=start", None).await;
        assert_eq!(all.next_of(&["action.applied"]).await.data["turn"], 1);

        // An id the stream cannot place gets `reset`, then the live stream: never silence.
        for unplaceable in ["not-an-id", "999999-0"] {
            let (status, mut lost) = open(&s, &game, &token, "", Some(unplaceable)).await;
            assert_eq!(status, 200);
            assert_eq!(lost.next().await.event, "reset", "for {unplaceable}");
            let answer = act(&s, &game, &token, "Anyone there?").await;
            let applied = lost.next_of(&["action.applied"]).await;
            assert_eq!(applied.data["action_id"], answer["action_id"]);
        }
        let (status, _) = open(&s, &game, "wrong", "", None).await;
        assert_eq!(status, 401);
        let (status, _) = open(&s, &game, &token, "?from=yesterday", None).await;
        assert_eq!(status, 400);
    }

    pub async fn reset_when_the_id_is_too_old(app: TestApp) {
        let s = serve(app).await;
        let (game, token) = s.app.new_game().await;
        let game_id: hotpath_cache::GameId = game.parse().unwrap();
        // Fill the stream past its bound so the first id is trimmed away.
        let first = s
            .app
            .backends
            .stream
            .publish(
                game_id,
                &hotpath_cache::events::GameEvent::ContentReady {
                    what: "test".into(),
                    location: "first".into(),
                    job_kind: None,
                    lag_ms: None,
                },
            )
            .await
            .unwrap();
        for i in 0..(hotpath_cache::stream::DEFAULT_MAX_LEN + 1) {
            s.app
                .backends
                .stream
                .publish(
                    game_id,
                    &hotpath_cache::events::GameEvent::ContentReady {
                        what: "test".into(),
                        location: format!("n{i}"),
                        job_kind: None,
                        lag_ms: None,
                    },
                )
                .await
                .unwrap();
        }
        let (_, mut old) = open(&s, &game, &token, "", Some(&first.to_string())).await;
        assert_eq!(old.next().await.event, "reset");
        assert_eq!(
            old.next().await.data["location"],
            "n1",
            "then what the stream still holds"
        );
    }
}

both_deployments!(live_resume_and_errors, reset_when_the_id_is_too_old);

/// Acts three times and returns the SSE ids of the `action.applied` events, read live.
async fn three_actions(s: &Served, game: &str, token: &str) -> Vec<String> {
    let (_, mut live) = open(s, game, token, "", None).await;
    let mut ids = Vec::new();
    for text in ["One", "Two", "Three"] {
        act(s, game, token, text).await;
        ids.push(live.next_of(&["action.applied"]).await.id.unwrap());
    }
    ids
}

/// What a client resuming after `last` receives first: the next `action.applied`.
async fn resumed_after(s: &Served, game: &str, token: &str, last: &str) -> (String, Value) {
    let (status, mut resumed) = open(s, game, token, "", Some(last)).await;
    assert_eq!(status, 200);
    let next = resumed.next_of(&["action.applied", "reset"]).await;
    assert_eq!(next.event, "action.applied", "resumes, no reset");
    (next.id.unwrap(), next.data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_last_event_id_from_before_a_restart_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let config = hotpath_engine::compose::BackendConfig {
        data_dir: dir.path().join("data"),
        redis_url: None,
        database_url: None,
    };
    let keep = tempfile::tempdir().unwrap();
    let first = serve(
        TestApp::build(
            config.clone(),
            None,
            tempfile::tempdir().unwrap(),
            common::api_config(1000),
        )
        .await,
    )
    .await;
    let (game, token) = first.app.new_game().await;
    let ids = three_actions(&first, &game, &token).await;
    drop(first);

    // A new process on the same data: its in-process stream is empty, its ids are the same.
    let second = serve(TestApp::build(config, None, keep, common::api_config(1000)).await).await;
    let (id, data) = resumed_after(&second, &game, &token, &ids[0]).await;
    assert_eq!(id, ids[1]);
    assert_eq!(data["turn"], 2);
    // And new actions continue the ids.
    let answer = act(&second, &game, &token, "Four").await;
    assert_eq!(answer["turn"], 4);
    let (id, _) = resumed_after(&second, &game, &token, &ids[2]).await;
    assert!(
        id.split('-').next().unwrap().parse::<u64>().unwrap()
            > ids[2].split('-').next().unwrap().parse::<u64>().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_resume_survives_lost_redis_data() {
    let s = serve(TestApp::distributed_with(common::api_config(1000), true).await).await;
    let (game, token) = s.app.new_game().await;
    let ids = three_actions(&s, &game, &token).await;
    let redis = s.app.redis.as_ref().unwrap();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();

    let (id, data) = resumed_after(&s, &game, &token, &ids[0]).await;
    assert_eq!(id, ids[1], "replayed from the outbox");
    assert_eq!(data["turn"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_into_a_pruned_outbox_gets_reset() {
    let s = serve(TestApp::embedded().await).await;
    let (game, token) = s.app.new_game().await;
    let ids = three_actions(&s, &game, &token).await;
    // The cleanup job's retention, run now: every committed stream event is pruned.
    let now = hotpath_cache::time::now_ms();
    assert!(
        s.app
            .backends
            .store
            .delete_stream_events(now + 1)
            .await
            .unwrap()
            > 0
    );
    // A stream that still holds them would serve them; this one is new (a restart).
    let fresh = serve(
        TestApp::build(
            s.app.config.clone(),
            None,
            tempfile::tempdir().unwrap(),
            common::api_config(1000),
        )
        .await,
    )
    .await;
    let (status, mut resumed) = open(&fresh, &game, &token, "", Some(&ids[0])).await;
    assert_eq!(status, 200);
    assert_eq!(
        resumed.next().await.event,
        "reset",
        "pruned events are not silence"
    );
    // From the last id there is nothing missing: no reset, the next action comes.
    let (_, mut caught_up) = open(&fresh, &game, &token, "", Some(&ids[2])).await;
    act(&fresh, &game, &token, "Four").await;
    let next = caught_up.next_of(&["action.applied", "reset"]).await;
    assert_eq!(next.event, "action.applied");
}
