//! HTTP integration suite: every route and every row of the error table, run against the
//! embedded deployment (SQLite, in-process) and the distributed one (PostgreSQL, Redis).

mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use common::{ADMIN, TestApp};
use hotpath_cache::GameId;
use hotpath_cache::cache::{CacheExt, keys};
use hotpath_cache::ids::*;
use hotpath_cache::model::*;
use hotpath_cache::state::ContextHash;
use hotpath_cache::time::now_ms;
use hotpath_engine::api::ApiConfig;

fn docks(text: &str) -> Value {
    json!({"scene_id": "docks", "text": text})
}

fn provenance(context: ContextHash, version: u64) -> Provenance {
    Provenance {
        context_hash: context,
        world_version: version,
        produced_at: now_ms() - 1_000,
        model: "test-writer".into(),
        prompt_version: "v1".into(),
    }
}

async fn state_of(app: &TestApp, game: &str) -> hotpath_cache::GameState {
    let game: GameId = game.parse().unwrap();
    let scenario = app.state.hot.scenario_of(game).await.unwrap();
    app.state
        .hot
        .current_state(game, &scenario)
        .await
        .unwrap()
        .0
}

mod suite {
    use super::*;

    pub async fn scenarios_games_and_players(app: TestApp) {
        let r = app.call(Method::GET, "/v1/scenarios", None, None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json["scenarios"], json!(["harbor-strike"]));

        let (game, token) = app.new_game().await;
        for who in [token.as_str(), ADMIN] {
            let r = app
                .call(Method::GET, &format!("/v1/games/{game}"), Some(who), None)
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            assert_eq!(r.json["turn"], 0);
            assert_eq!(r.json["scenes"].as_array().unwrap().len(), 3);
            assert_eq!(r.json["scenes"][0]["stakeholders"][0]["id"], "mara");
            let strike = &r.json["conflicts"][0];
            assert_eq!(
                (
                    strike["id"].as_str(),
                    strike["phase"].as_str(),
                    strike["intensity"].as_u64()
                ),
                (Some("strike"), Some("simmering"), Some(20))
            );
            assert_eq!(r.json["degraded"], false);
        }
    }

    pub async fn actions_answer_from_rules_and_dispatch(app: TestApp) {
        let (game, token) = app.new_game().await;
        let r = app
            .act(
                &game,
                &token,
                json!({"scene_id": "docks", "text": "Pay the crews or else", "target": "voss"}),
            )
            .await;
        // voss is not at the docks: refused, and nothing was recorded.
        r.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");

        let r = app
            .act(
                &game,
                &token,
                json!({"scene_id": "docks", "text": "Pay the crews or else", "target": "mara"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let a = &r.json;
        assert_eq!(a["turn"], 1);
        assert_eq!(a["kind"], "threaten");
        assert_eq!(a["degraded"], false);
        let reactions = a["reactions"].as_array().unwrap();
        let who: Vec<_> = reactions
            .iter()
            .map(|r| r["stakeholder_id"].as_str().unwrap())
            .collect();
        assert_eq!(who, ["mara", "brann", "iris"]);
        assert!(
            reactions
                .iter()
                .all(|r| r["source"] == "fallback" && !r["text"].as_str().unwrap().is_empty())
        );
        assert_eq!(a["narration"]["source"], "fallback");
        assert_eq!(a["social"]["source"], "fallback");
        let dispatched = a["dispatched"].as_array().unwrap();
        let kinds: Vec<_> = dispatched
            .iter()
            .map(|d| d["kind"].as_str().unwrap())
            .collect();
        assert!(kinds.contains(&"prepare_scene_reactions"), "{kinds:?}");
        assert!(
            !kinds.contains(&"populate_stakeholder_details"),
            "nothing reads details: {kinds:?}"
        );
        let queued: Vec<_> = dispatched
            .iter()
            .filter(|d| d["status"] == "queued")
            .collect();
        for d in &queued {
            let id = d["job_id"].as_str().unwrap();
            assert!(
                app.backends.jobs.job(id).await.unwrap().is_some(),
                "job {id} is in the storage"
            );
        }

        // Coalescing: work queued and not yet done is not dispatched again (no worker runs
        // here), and other scenes are prepared once per context.
        let r2 = app.act(&game, &token, docks("Pay the crews or else")).await;
        assert_eq!(r2.json["turn"], 2);
        let again: Vec<_> = r2.json["dispatched"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["kind"].as_str().unwrap().to_owned())
            .collect();
        assert!(kinds.contains(&"generate_social_bundle"), "{kinds:?}");
        assert!(
            !again.iter().any(|k| k == "generate_social_bundle"),
            "the social bundle is still queued: {again:?}"
        );
        assert!(
            again
                .iter()
                .filter(|k| *k == "prepare_scene_reactions")
                .count()
                < kinds
                    .iter()
                    .filter(|k| **k == "prepare_scene_reactions")
                    .count(),
            "first {kinds:?}, then {again:?}"
        );
        let r = app
            .call(
                Method::GET,
                &format!("/v1/games/{game}"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(r.json["turn"], 2);
        assert!(r.json["conflicts"][0]["intensity"].as_u64().unwrap() > 20);
    }

    pub async fn precomputed_and_cached_content_is_served(app: TestApp) {
        let (game, token) = app.new_game().await;
        let game_id: GameId = game.parse().unwrap();
        let state = state_of(&app, &game).await;
        let scenario = app.state.hot.scenario_of(game_id).await.unwrap();
        let docks_id = SceneId::new("docks").unwrap();
        let context = state.context_hash(&scenario, &docks_id);
        // One row for each kind of action: the claim takes the one made for this action's.
        let row = |kind: hotpath_cache::model::ActionKind| PlannedAction {
            id: PlannedActionId::generate(),
            game_id,
            scene_id: docks_id.clone(),
            stakeholder_id: StakeholderId::new("brann").unwrap(),
            kind: PlannedKind::Reaction,
            payload: StakeholderMove {
                behaviour: "Brann slams a crate down".into(),
                intent: "oppose".into(),
                line: "Six weeks, and not a copper!".into(),
            },
            priority: 1,
            status: PlannedStatus::Ready,
            expires_at: now_ms() + 60_000,
            dedupe_key: format!("test:{game}:brann:{}", kind.as_str()),
            reacts_to: None,
            provenance: provenance(
                hotpath_cache::model::reaction_key(&context, kind),
                state.seq,
            ),
            created_at: now_ms(),
        };
        let rows: Vec<PlannedAction> = hotpath_cache::model::ActionKind::ALL
            .into_iter()
            .map(row)
            .collect();
        for p in &rows {
            assert_eq!(
                app.backends
                    .store
                    .insert_planned(std::slice::from_ref(p))
                    .await
                    .unwrap(),
                1
            );
        }
        let strike = ConflictId::new("strike").unwrap();
        let simmering = PhaseId::new("simmering").unwrap();
        let beat = BeatText {
            conflict_id: strike.clone(),
            phase_id: simmering.clone(),
            beat: 1,
            text: "Rain hisses on the idle cranes.".into(),
            provenance: provenance(
                hotpath_cache::model::beat_key(&strike, &simmering, 1),
                state.seq,
            ),
        };
        let ttl = Duration::from_secs(60);
        app.backends
            .cache
            .set_typed(&keys::beat(game_id, &strike, &simmering, 1), &beat, ttl)
            .await
            .unwrap();
        let social = SocialBundle {
            gossip: vec![Gossip {
                from: StakeholderId::new("kest").unwrap(),
                about: StakeholderId::new("voss").unwrap(),
                line: "Kest swears Voss keeps two ledgers.".into(),
            }],
            reputation: [(StakeholderId::new("voss").unwrap(), -30)]
                .into_iter()
                .collect(),
            provenance: provenance(context.clone(), state.seq),
        };
        app.backends
            .cache
            .set_typed(&keys::social(game_id), &social, ttl)
            .await
            .unwrap();

        let r = app.act(&game, &token, docks("Good evening.")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let brann = r.json["reactions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["stakeholder_id"] == "brann")
            .unwrap()
            .clone();
        assert_eq!(brann["source"], "precomputed");
        assert_eq!(brann["text"], "Six weeks, and not a copper!");
        assert!(brann["age_ms"].as_i64().unwrap() >= 1_000);
        assert_eq!(
            brann["provenance"]["made_for"], brann["served_for"],
            "served for what it was made for: {brann}"
        );
        assert!(
            brann["served_for"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/{}", r.json["kind"].as_str().unwrap()))
        );
        assert_eq!(
            r.json["narration"]["provenance"]["made_for"],
            r.json["narration"]["served_for"]
        );
        assert_eq!(
            r.json["narration"]["source"], "cache",
            "turn 1 shows beat 1: {}",
            r.json["narration"]
        );
        assert_eq!(
            r.json["narration"]["text"],
            "Rain hisses on the idle cranes."
        );
        assert_eq!(r.json["social"]["source"], "cache");
        assert_eq!(
            r.json["social"]["gossip"][0]["line"],
            "Kest swears Voss keeps two ledgers."
        );
        let kind = r.json["kind"].as_str().unwrap().to_owned();
        for p in &rows {
            let status = app
                .backends
                .store
                .planned(p.id)
                .await
                .unwrap()
                .unwrap()
                .status;
            let mine = p.provenance.context_hash.0.ends_with(&format!("/{kind}"));
            assert_eq!(
                status,
                if mine {
                    PlannedStatus::Consumed
                } else {
                    PlannedStatus::Ready
                },
                "only the row made for a `{kind}` is taken: {}",
                p.provenance.context_hash.0
            );
        }

        // Claimed once: the next action of the same kind falls back.
        let r = app
            .act(
                &game,
                &token,
                json!({"scene_id": "docks", "kind": kind, "text": "Good evening again."}),
            )
            .await;
        let brann = r.json["reactions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["stakeholder_id"] == "brann")
            .unwrap()
            .clone();
        assert_eq!(brann["source"], "fallback");
    }

    pub async fn idempotency_key_replays(app: TestApp) {
        let (game, token) = app.new_game().await;
        let uri = format!("/v1/games/{game}/actions");
        let body = docks("I offer to help unload the ships");
        let first = app
            .call_with(
                Method::POST,
                &uri,
                Some(&token),
                Some(body.clone()),
                &[("idempotency-key", "k-1")],
            )
            .await;
        assert_eq!(first.status, StatusCode::OK, "{}", first.text);
        assert!(first.headers.get("idempotent-replayed").is_none());
        let again = app
            .call_with(
                Method::POST,
                &uri,
                Some(&token),
                Some(body.clone()),
                &[("idempotency-key", "k-1")],
            )
            .await;
        assert_eq!(again.status, StatusCode::OK);
        assert_eq!(again.headers["idempotent-replayed"], "true");
        assert_eq!(again.json["action_id"], first.json["action_id"]);
        assert_eq!(again.json["reactions"], first.json["reactions"]);
        assert_eq!(
            state_of(&app, &game).await.turn,
            1,
            "the action was recorded once"
        );
        let other = app
            .call_with(
                Method::POST,
                &uri,
                Some(&token),
                Some(docks("something else")),
                &[("idempotency-key", "k-1")],
            )
            .await;
        other.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
        assert_eq!(state_of(&app, &game).await.turn, 1);
    }

    pub async fn say_to_a_stakeholder_dispatches_the_dialogue(app: TestApp) {
        let (game, token) = app.new_game().await;
        let r = app.act(&game, &token, json!({"scene_id": "docks", "kind": "say", "text": "Mara, the guild trusts you.", "target": "mara"})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let request = r.json["dialogue_request_id"]
            .as_str()
            .expect("a request id")
            .to_owned();
        let d = r.json["dispatched"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["kind"] == "stream_dialogue_reply")
            .unwrap()
            .clone();
        assert!(d["dedupe_key"].as_str().unwrap().ends_with(&request));
        // The push may still be in flight when the answer leaves (`pending`): wait for it.
        let mut found = None;
        for _ in 0..100 {
            let jobs = app.backends.jobs.jobs(100).await.unwrap();
            found = jobs.into_iter().find_map(|j| match j.job {
                Some(hotpath_cache::jobs::Job::StreamDialogueReply(m))
                    if m.request_id.to_string() == request =>
                {
                    Some(m)
                }
                _ => None,
            });
            if found.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let job = found.expect("the dialogue job reaches the storage");
        assert_eq!(
            (job.stakeholder_id.as_str(), job.text.as_str()),
            ("mara", "Mara, the guild trusts you.")
        );
    }

    pub async fn error_table(app: TestApp) {
        let (game, token) = app.new_game().await;
        let (other_game, other_token) = app.new_game().await;
        let uri = format!("/v1/games/{game}/actions");

        // 400: malformed JSON, unknown fields, missing fields.
        let raw = axum::http::Request::post(&uri)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(axum::body::Body::from("{\"scene_id\": \"docks\", "))
            .unwrap();
        app.send(raw)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "bad_request");
        app.act(
            &game,
            &token,
            json!({"scene_id": "docks", "text": "hi", "mood": "grim"}),
        )
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad_request");
        app.act(&game, &token, json!({"scene_id": "docks"}))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "bad_request");
        // 413: body too large.
        app.act(&game, &token, docks(&"x".repeat(70_000)))
            .await
            .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
        // 401: missing or wrong token.
        app.call(Method::POST, &uri, None, Some(docks("hi")))
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
        app.act(&game, "not-a-token", docks("hi"))
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
        app.call(Method::GET, &format!("/v1/games/{game}"), None, None)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
        // 403: another player's game; the admin cannot act; players cannot administer.
        app.act(&game, &other_token, docks("hi"))
            .await
            .assert_error(StatusCode::FORBIDDEN, "forbidden");
        app.call(
            Method::GET,
            &format!("/v1/games/{other_game}"),
            Some(&token),
            None,
        )
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
        app.act(&game, ADMIN, docks("hi"))
            .await
            .assert_error(StatusCode::FORBIDDEN, "forbidden");
        app.call(
            Method::POST,
            "/v1/games",
            Some(&token),
            Some(json!({"scenario": "harbor-strike"})),
        )
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
        // 404: unknown game, scene, stakeholder, scenario, route.
        let nowhere = GameId::generate();
        app.call(
            Method::GET,
            &format!("/v1/games/{nowhere}"),
            Some(ADMIN),
            None,
        )
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
        app.call(Method::GET, "/v1/games/not-a-game", Some(ADMIN), None)
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
        app.call(
            Method::POST,
            &format!("/v1/games/{nowhere}/players"),
            Some(ADMIN),
            Some(json!({"name": "x"})),
        )
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
        app.act(&game, &token, json!({"scene_id": "moon", "text": "hi"}))
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
        app.act(
            &game,
            &token,
            json!({"scene_id": "docks", "text": "hi", "target": "nobody"}),
        )
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
        app.call(
            Method::POST,
            "/v1/games",
            Some(ADMIN),
            Some(json!({"scenario": "nope"})),
        )
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
        app.call(Method::GET, "/v2/nothing", None, None)
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
        // 422: unknown kind, text over the limit, empty text, bad player name.
        app.act(
            &game,
            &token,
            json!({"scene_id": "docks", "kind": "dance", "text": "hi"}),
        )
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
        app.act(&game, &token, docks(&"y".repeat(2_001)))
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
        app.act(&game, &token, docks("   "))
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
        app.call(
            Method::POST,
            &format!("/v1/games/{game}/players"),
            Some(ADMIN),
            Some(json!({"name": ""})),
        )
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
        // Nothing of the above was recorded.
        assert_eq!(state_of(&app, &game).await.turn, 0);
    }

    pub async fn ops_routes(app: TestApp) {
        let r = app.call(Method::GET, "/healthz", None, None).await;
        assert_eq!(
            (r.status, r.json["status"].as_str()),
            (StatusCode::OK, Some("ok"))
        );
        let r = app.call(Method::GET, "/readyz", None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["status"], "ready");
        for backend in ["cache", "store", "stream", "queue"] {
            assert_eq!(r.json["checks"][backend], "ok", "{backend}");
        }
        let (game, token) = app.new_game().await;
        app.act(&game, &token, docks("hello")).await;
        let r = app.call(Method::GET, "/metrics", None, None).await;
        assert_eq!(r.status, StatusCode::OK);
        for metric in [
            "hotpath_action_seconds_bucket",
            "hotpath_answer_pieces_total",
            "hotpath_dispatched_jobs_total",
            "hotpath_queue_depth",
        ] {
            assert!(
                r.text.contains(metric),
                "{metric} missing from:\n{}",
                r.text
            );
        }
        let r = app.call(Method::GET, "/openapi.json", None, None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.json["openapi"].as_str().unwrap().starts_with("3."));
        for path in [
            "/v1/scenarios",
            "/v1/games",
            "/v1/games/{game_id}",
            "/v1/games/{game_id}/players",
            "/v1/games/{game_id}/actions",
            "/v1/games/{game_id}/events",
            "/healthz",
            "/readyz",
            "/metrics",
        ] {
            assert!(
                r.json["paths"].get(path).is_some(),
                "{path} missing from the OpenAPI document"
            );
        }
    }

    pub async fn rate_limit_per_player(app: TestApp) {
        let (game, token) = app.new_game().await;
        let mut statuses = Vec::new();
        for i in 0..4 {
            statuses.push(app.act(&game, &token, docks(&format!("hello {i}"))).await);
        }
        assert_eq!(statuses[0].status, StatusCode::OK);
        assert_eq!(statuses[1].status, StatusCode::OK);
        let limited = statuses
            .iter()
            .find(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
            .expect("a 429 after the burst of 2");
        limited.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        assert!(
            limited.headers["retry-after"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                >= 1
        );
        // Another player of the same game has their own allowance.
        let second = app.new_player(&game, "Bea").await;
        assert_eq!(
            app.act(&game, &second, docks("hi")).await.status,
            StatusCode::OK
        );
    }
}

mod limits {
    use super::*;

    /// Three unknown tokens a client may send, then one a second.
    pub fn config() -> ApiConfig {
        ApiConfig {
            unknown_tokens_per_second: std::num::NonZeroU32::new(1).unwrap(),
            unknown_tokens_burst: std::num::NonZeroU32::new(3).unwrap(),
            ..common::api_config(1000)
        }
    }

    /// Made-up bearer tokens from one client: the first few are looked up (401), then the
    /// client is held back (429 with Retry-After) before its tokens reach the database. A
    /// player this process added is known from the start: its requests are never counted as
    /// lookups (a load generator that adds thousands of players from one address was held
    /// back before this), and it is not held back when its address is.
    pub async fn unknown_tokens_are_limited_before_the_lookup(app: TestApp) {
        let (game, token) = app.new_game().await;
        let path = format!("/v1/games/{game}");
        assert_eq!(
            app.call(Method::GET, &path, Some(&token), None)
                .await
                .status,
            StatusCode::OK
        );
        let mut replies = Vec::new();
        for i in 0..6 {
            let made_up = format!("made-up-token-{i}");
            replies.push(app.call(Method::GET, &path, Some(&made_up), None).await);
        }
        let statuses: Vec<u16> = replies.iter().map(|r| r.status.as_u16()).collect();
        // The burst is 3 lookups; the player's own first request was not one of them.
        assert_eq!(statuses[..3], [401, 401, 401], "{statuses:?}");
        assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
        replies[5].assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        assert!(replies[5].headers.contains_key("retry-after"));
        assert_eq!(
            app.call(Method::GET, &path, Some(&token), None)
                .await
                .status,
            StatusCode::OK,
            "a known player is answered from the player cache"
        );
    }

    /// Finding 13: a burst of made-up tokens sent at once is held back as well: each lookup is
    /// counted before it reaches the database, not after (when the whole burst had passed).
    pub async fn a_burst_of_unknown_tokens_is_held_back_too(app: TestApp) {
        let (game, _) = app.new_game().await;
        let path = format!("/v1/games/{game}");
        let replies = futures::future::join_all((0..20).map(|i| {
            let made_up = format!("burst-token-{i}");
            let app = &app;
            let path = &path;
            async move { app.call(Method::GET, path, Some(&made_up), None).await }
        }))
        .await;
        let looked_up = replies.iter().filter(|r| r.status == 401).count();
        let held = replies.iter().filter(|r| r.status == 429).count();
        assert!(
            looked_up <= 3,
            "{looked_up} lookups reached the database (burst 3)"
        );
        assert_eq!(looked_up + held, 20);
    }
}

mod limits_embedded {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unknown_tokens_are_limited_before_the_lookup() {
        let app = super::TestApp::embedded_with(super::limits::config()).await;
        super::limits::unknown_tokens_are_limited_before_the_lookup(app).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_unknown_tokens_is_held_back_too() {
        let app = super::TestApp::embedded_with(super::limits::config()).await;
        super::limits::a_burst_of_unknown_tokens_is_held_back_too(app).await;
    }
}

mod limits_distributed {
    /// Counted in Redis, as `hotpath serve` counts them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unknown_tokens_are_limited_before_the_lookup() {
        let config = super::limits::config();
        let mut app = super::TestApp::distributed_with(config.clone(), true).await;
        app.state.limits = app
            .state
            .limits
            .clone()
            .shared(app.backends.limiter.clone());
        app.router = hotpath_engine::api::app(app.state.clone(), &config);
        super::limits::unknown_tokens_are_limited_before_the_lookup(app).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_unknown_tokens_is_held_back_too() {
        let config = super::limits::config();
        let mut app = super::TestApp::distributed_with(config.clone(), true).await;
        app.state.limits = app
            .state
            .limits
            .clone()
            .shared(app.backends.limiter.clone());
        app.router = hotpath_engine::api::app(app.state.clone(), &config);
        super::limits::a_burst_of_unknown_tokens_is_held_back_too(app).await;
    }
}

mod clients {
    use super::*;

    /// The web page's join link: the admin hands out an invite, whoever holds it joins as a
    /// new player without a token; another game's invite or a blank name is refused.
    pub async fn invites_let_players_join(app: TestApp) {
        let (game, _) = app.new_game().await;
        let (other, player) = app.new_game().await;
        let uri = format!("/v1/games/{game}/invite");
        app.call(Method::GET, &uri, Some(&player), None)
            .await
            .assert_error(StatusCode::FORBIDDEN, "forbidden");
        let r = app.call(Method::GET, &uri, Some(ADMIN), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let invite = r.json["invite"].as_str().unwrap().to_owned();
        assert_eq!(
            r.json["join_path"],
            format!("/#game={game}&invite={invite}")
        );
        let again = app.call(Method::GET, &uri, Some(ADMIN), None).await;
        assert_eq!(
            again.json["invite"],
            invite.as_str(),
            "the same invite every time"
        );

        let join = |game: String, body: Value| {
            let app = &app;
            async move {
                app.call(
                    Method::POST,
                    &format!("/v1/games/{game}/join"),
                    None,
                    Some(body),
                )
                .await
            }
        };
        join(other.clone(), json!({"name": "Eve", "invite": invite}))
            .await
            .assert_error(StatusCode::FORBIDDEN, "forbidden");
        join(game.clone(), json!({"name": "  ", "invite": invite}))
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
        let r = join(game.clone(), json!({"name": "Bo", "invite": invite})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let token = r.json["token"].as_str().unwrap();
        assert_eq!(
            app.act(&game, token, docks("I join the crews"))
                .await
                .status,
            StatusCode::OK
        );
    }

    /// Small invite limits: invites live 2 s, a game holds 3 players, 4 join attempts per
    /// game at once (then one a minute).
    pub fn invite_config() -> ApiConfig {
        ApiConfig {
            invite_ttl: std::time::Duration::from_secs(2),
            max_players_per_game: 3,
            joins_per_minute: std::num::NonZeroU32::new(1).unwrap(),
            joins_burst: std::num::NonZeroU32::new(4).unwrap(),
            ..common::api_config(1000)
        }
    }

    /// Finding 10: an invite can be revoked (rotated) per game, expires, lets no more than
    /// the game's cap of players in, and joining is rate limited per game.
    pub async fn invites_rotate_expire_and_are_bounded(app: TestApp) {
        let (game, _ada) = app.new_game().await;
        let uri = format!("/v1/games/{game}/invite");
        let join = |game: String, name: &'static str, invite: String| {
            let app = &app;
            async move {
                app.call(
                    Method::POST,
                    &format!("/v1/games/{game}/join"),
                    None,
                    Some(json!({"name": name, "invite": invite})),
                )
                .await
            }
        };
        let first = app.call(Method::GET, &uri, Some(ADMIN), None).await;
        assert_eq!(first.status, StatusCode::OK, "{}", first.text);
        assert!(
            first.json["expires_at"].as_i64().is_some(),
            "{}",
            first.text
        );
        let first = first.json["invite"].as_str().unwrap().to_owned();
        let r = join(game.clone(), "Bo", first.clone()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

        // Rotating revokes the old invite.
        let rotated = app.call(Method::POST, &uri, Some(ADMIN), None).await;
        assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text);
        let second = rotated.json["invite"].as_str().unwrap().to_owned();
        assert_ne!(second, first);
        join(game.clone(), "Eve", first.clone())
            .await
            .assert_error(StatusCode::FORBIDDEN, "forbidden");
        let r = join(game.clone(), "Cy", second.clone()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        // Three players: the game is full.
        join(game.clone(), "Di", second.clone())
            .await
            .assert_error(StatusCode::FORBIDDEN, "forbidden");
        // Four attempts at once, then one a minute.
        let r = join(game.clone(), "Ed", second.clone()).await;
        r.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        assert!(r.headers.contains_key("retry-after"));

        // An invite expires.
        let (later, _) = app.new_game().await;
        let r = app
            .call(
                Method::GET,
                &format!("/v1/games/{later}/invite"),
                Some(ADMIN),
                None,
            )
            .await;
        let invite = r.json["invite"].as_str().unwrap().to_owned();
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        join(later.clone(), "Fay", invite)
            .await
            .assert_error(StatusCode::FORBIDDEN, "forbidden");
    }

    /// A method a path does not have: 405 with `Allow` and the API's error body.
    pub async fn other_methods_are_405_with_allow(app: TestApp) {
        let r = app
            .call(Method::DELETE, "/v1/games", Some(ADMIN), None)
            .await;
        r.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
        assert_eq!(r.headers["allow"], "POST");
        let r = app.call(Method::PUT, "/v1/scenarios", None, None).await;
        r.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
        assert!(r.headers["allow"].to_str().unwrap().contains("GET"));
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
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rate_limit_per_player() {
                super::suite::rate_limit_per_player(super::TestApp::embedded_with(super::common::api_config(2)).await).await;
            }
        }
        mod distributed {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::suite::$case(super::TestApp::distributed().await).await;
                }
            )*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rate_limit_per_player() {
                super::suite::rate_limit_per_player(super::TestApp::distributed_with(super::common::api_config(2), false).await).await;
            }
        }
    };
}

mod embedded_clients {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn invites_rotate_expire_and_are_bounded() {
        let app = super::TestApp::embedded_with(super::clients::invite_config()).await;
        super::clients::invites_rotate_expire_and_are_bounded(app).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn invites_let_players_join() {
        super::clients::invites_let_players_join(super::TestApp::embedded().await).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn other_methods_are_405_with_allow() {
        super::clients::other_methods_are_405_with_allow(super::TestApp::embedded().await).await;
    }
}

mod distributed_clients {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn invites_rotate_expire_and_are_bounded() {
        let config = super::clients::invite_config();
        let mut app = super::TestApp::distributed_with(config.clone(), false).await;
        // Counted in Redis, as `hotpath serve` counts them.
        app.state.limits = app
            .state
            .limits
            .clone()
            .shared(app.backends.limiter.clone());
        app.router = hotpath_engine::api::app(app.state.clone(), &config);
        super::clients::invites_rotate_expire_and_are_bounded(app).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn invites_let_players_join() {
        super::clients::invites_let_players_join(super::TestApp::distributed().await).await;
    }
}

both_deployments!(
    scenarios_games_and_players,
    actions_answer_from_rules_and_dispatch,
    precomputed_and_cached_content_is_served,
    idempotency_key_replays,
    say_to_a_stakeholder_dispatches_the_dialogue,
    error_table,
    ops_routes,
);
