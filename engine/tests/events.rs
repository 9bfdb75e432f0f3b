//! The SSE event stream over a real socket: live events, resume with `Last-Event-ID`, `reset`
//! for an id older than the stream holds, on both deployments.

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

        let (status, _) = open(&s, &game, &token, "", Some("not-an-id")).await;
        assert_eq!(status, 400);
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

both_deployments!(live_resume_and_errors, reset_when_the_id_is_too_old);
