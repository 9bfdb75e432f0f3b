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

fn content(location: &str) -> hotpath_cache::events::GameEvent {
    hotpath_cache::events::GameEvent::ContentReady {
        what: "test".into(),
        location: location.into(),
        job_kind: None,
        lag_ms: None,
    }
}

/// A transient event, as a worker publishes it; returns its id.
async fn publish_transient(s: &Served, game: &str, location: &str) -> String {
    s.app
        .backends
        .stream
        .publish(game.parse().unwrap(), &content(location))
        .await
        .unwrap()
        .to_string()
}

/// The game's event stream loses what it held: the embedded process restarts on the same data
/// (its in-process stream starts empty), or Redis loses the game's keys (a flush, a TTL).
async fn lose_stream(s: Served, game: &str) -> Served {
    match s.app.config.redis_url.clone() {
        Some(url) => {
            let client = redis::Client::open(url).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let prefix = hotpath_cache::cache::keys::game_prefix(game.parse().unwrap());
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}events*"))
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(!keys.is_empty(), "the game has a stream");
            let _: () = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut conn)
                .await
                .unwrap();
            s
        }
        None => {
            let config = s.app.config.clone();
            let dir = s.app.dir;
            serve(TestApp::build(config, None, dir, common::api_config(1000)).await).await
        }
    }
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

    /// Finding 4: a resume delivers the transient events (job progress, content, dialogue)
    /// that came between committed ones, in order, once.
    pub async fn a_resume_delivers_transient_events_between_committed_ones(app: TestApp) {
        let s = serve(app).await;
        let (game, token) = s.app.new_game().await;
        let (_, mut live) = open(&s, &game, &token, "", None).await;
        act(&s, &game, &token, "One").await;
        let first = live.next_of(&["action.applied"]).await.id.unwrap();
        let between = publish_transient(&s, &game, "between").await;
        act(&s, &game, &token, "Two").await;
        let second = live.next_of(&["action.applied"]).await.id.unwrap();
        let after = publish_transient(&s, &game, "after").await;

        let (status, mut resumed) = open(&s, &game, &token, "", Some(&first)).await;
        assert_eq!(status, 200);
        let kinds = ["content.ready", "action.applied", "reset"];
        let got = resumed.next_of(&kinds).await;
        assert_eq!(
            (got.event.as_str(), got.id.as_deref()),
            ("content.ready", Some(between.as_str())),
            "the transient event between the two actions comes first"
        );
        let got = resumed.next_of(&kinds).await;
        assert_eq!(got.id.as_deref(), Some(second.as_str()));
        let got = resumed.next_of(&kinds).await;
        assert_eq!(got.id.as_deref(), Some(after.as_str()));
    }

    /// Finding 4: when the stream lost its data (a restart, a flush, a TTL) and transient events
    /// after the client's id went with it, the resume says `reset`, not silence.
    pub async fn a_resume_whose_transient_events_are_gone_gets_reset(app: TestApp) {
        let s = serve(app).await;
        let (game, token) = s.app.new_game().await;
        let (_, mut live) = open(&s, &game, &token, "", None).await;
        act(&s, &game, &token, "One").await;
        let first = live.next_of(&["action.applied"]).await.id.unwrap();
        publish_transient(&s, &game, "lost").await;
        act(&s, &game, &token, "Two").await;
        let second = live.next_of(&["action.applied"]).await.id;
        drop(live);
        let s = lose_stream(s, &game).await;

        let (status, mut resumed) = open(&s, &game, &token, "", Some(&first)).await;
        assert_eq!(status, 200);
        let got = resumed
            .next_of(&["content.ready", "action.applied", "reset"])
            .await;
        assert_eq!(got.event, "reset", "the lost content.ready is not silence");
        // Then the committed events after the id (from the outbox), then live.
        let got = resumed.next_of(&["action.applied"]).await;
        assert_eq!(got.id, second);
        let answer = act(&s, &game, &token, "Three").await;
        let applied = resumed.next_of(&["action.applied"]).await;
        assert_eq!(applied.data["action_id"], answer["action_id"]);
    }

    /// Finding 5: a transient event published on an empty stream sorts after the game's last
    /// committed seq, and a client resuming from it is not replayed the whole outbox.
    pub async fn a_transient_id_on_an_empty_stream_follows_the_log(app: TestApp) {
        let s = serve(app).await;
        let (game, token) = s.app.new_game().await;
        act(&s, &game, &token, "One").await;
        let two = act(&s, &game, &token, "Two").await;
        let s = lose_stream(s, &game).await;

        let id = publish_transient(&s, &game, "fresh").await;
        let ms: u64 = id.split('-').next().unwrap().parse().unwrap();
        assert!(
            ms >= two["seq"].as_u64().unwrap(),
            "transient id {id} sorts after the committed seq {}",
            two["seq"]
        );
        let (status, mut resumed) = open(&s, &game, &token, "", Some(&id)).await;
        assert_eq!(status, 200);
        let answer = act(&s, &game, &token, "Three").await;
        let got = resumed.next_of(&["action.applied", "reset"]).await;
        assert_eq!(got.event, "action.applied", "no reset: nothing was lost");
        assert_eq!(
            got.data["action_id"], answer["action_id"],
            "not the whole outbox again"
        );
    }

    /// Finding 13: a player may hold only so many event streams at once (8 by default); one
    /// more is refused with 429 and `Retry-After`, and a closed one frees its place.
    pub async fn event_streams_per_player_are_capped(app: TestApp) {
        let s = serve(app).await;
        let (game, token) = s.app.new_game().await;
        let mut open_streams = Vec::new();
        for _ in 0..8 {
            let (status, reader) = open(&s, &game, &token, "", None).await;
            assert_eq!(status, 200);
            open_streams.push(reader);
        }
        let r = s
            .client
            .get(format!("{}/v1/games/{game}/events", s.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429, "the ninth stream of one player");
        assert!(r.headers().contains_key("retry-after"));
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "rate_limited");
        // Another player of the game is not held back by the first one's streams.
        let other = s.app.new_player(&game, "Bo").await;
        assert_eq!(open(&s, &game, &other, "", None).await.0, 200);
        // A closed stream frees its place (the server notices the client left).
        open_streams.pop();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (status, reader) = open(&s, &game, &token, "", None).await;
            if status == 200 {
                open_streams.push(reader);
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the place was not freed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
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

both_deployments!(
    live_resume_and_errors,
    reset_when_the_id_is_too_old,
    a_resume_delivers_transient_events_between_committed_ones,
    a_resume_whose_transient_events_are_gone_gets_reset,
    a_transient_id_on_an_empty_stream_follows_the_log,
    event_streams_per_player_are_capped,
);

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
async fn embedded_a_resume_from_before_a_restart_gets_reset_and_ids_continue() {
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

    // A new process on the same data: its in-process stream is empty. Whatever transient
    // events followed the client's id went with the old process: `reset`, never silence.
    let second = serve(TestApp::build(config, None, keep, common::api_config(1000)).await).await;
    let (status, mut resumed) = open(&second, &game, &token, "", Some(&ids[0])).await;
    assert_eq!(status, 200);
    assert_eq!(resumed.next().await.event, "reset");
    // New actions continue the ids, and a resume within the new process is exact.
    let (_, mut live) = open(&second, &game, &token, "", None).await;
    let answer = act(&second, &game, &token, "Four").await;
    assert_eq!(answer["turn"], 4);
    let four = live.next_of(&["action.applied"]).await.id.unwrap();
    assert!(
        four.split('-').next().unwrap().parse::<u64>().unwrap()
            > ids[2].split('-').next().unwrap().parse::<u64>().unwrap()
    );
    act(&second, &game, &token, "Five").await;
    let (_, data) = resumed_after(&second, &game, &token, &four).await;
    assert_eq!(data["turn"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_a_resume_across_lost_redis_data_gets_reset() {
    let s = serve(TestApp::distributed_with(common::api_config(1000), true).await).await;
    let (game, token) = s.app.new_game().await;
    let ids = three_actions(&s, &game, &token).await;
    let redis = s.app.redis.as_ref().unwrap();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();

    let (status, mut resumed) = open(&s, &game, &token, "", Some(&ids[0])).await;
    assert_eq!(status, 200);
    assert_eq!(resumed.next().await.event, "reset");
    // Then the committed events after the id, from the outbox, then live.
    for id in &ids[1..] {
        assert_eq!(
            resumed.next_of(&["action.applied"]).await.id.as_ref(),
            Some(id)
        );
    }
    let answer = act(&s, &game, &token, "Four").await;
    let applied = resumed.next_of(&["action.applied"]).await;
    assert_eq!(applied.data["action_id"], answer["action_id"]);
}

/// An embedded app whose event stream keeps only `max_len` events per game.
async fn embedded_with_short_stream(max_len: usize) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let config = hotpath_engine::compose::BackendConfig {
        data_dir: dir.path().join("data"),
        redis_url: None,
        database_url: None,
    };
    let mut backends = hotpath_engine::compose::Backends::connect(&config)
        .await
        .unwrap();
    let stream = hotpath_cache::stream::MemoryStream::new(max_len);
    stream.set_last_seq(std::sync::Arc::new(hotpath_cache::stream::StoreSeqs(
        backends.store.clone(),
    )));
    backends.stream = std::sync::Arc::new(stream);
    TestApp::from_backends(backends, config, None, dir, common::api_config(1000))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_events_the_stream_trimmed_come_from_the_outbox_unless_pruned() {
    let s = serve(embedded_with_short_stream(2).await).await;
    let (game, token) = s.app.new_game().await;
    let ids = three_actions(&s, &game, &token).await;
    // The stream keeps two events; the first two actions' are in the outbox only.
    let (id, data) = resumed_after(&s, &game, &token, &ids[0]).await;
    assert_eq!(id, ids[1], "replayed from the outbox");
    assert_eq!(data["turn"], 2);

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
    let (status, mut resumed) = open(&s, &game, &token, "", Some(&ids[0])).await;
    assert_eq!(status, 200);
    assert_eq!(
        resumed.next().await.event,
        "reset",
        "pruned events are not silence"
    );
    // From the newest id there is nothing missing: no reset, the next action comes.
    let (_, mut live) = open(&s, &game, &token, "?from=start", None).await;
    let mut newest = live.next().await.id.unwrap();
    while let Some(e) = live
        .try_next_within(std::time::Duration::from_millis(300))
        .await
    {
        newest = e.id.unwrap();
    }
    let (_, mut caught_up) = open(&s, &game, &token, "", Some(&newest)).await;
    act(&s, &game, &token, "Four").await;
    let next = caught_up.next_of(&["action.applied", "reset"]).await;
    assert_eq!(next.event, "action.applied");
}

/// Finding 13: a resume over more committed events than one outbox page (1,000) that the
/// stream trimmed gets them all, in order, once — read a page at a time as the client reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_pages_the_outbox_as_the_client_reads() {
    let s = serve(embedded_with_short_stream(2).await).await;
    let (game, token) = s.app.new_game().await;
    let (_, mut live) = open(&s, &game, &token, "", None).await;
    act(&s, &game, &token, "First").await;
    let first = live.next_of(&["action.applied"]).await.id.unwrap();
    drop(live);
    const ACTIONS: usize = 600;
    for n in 0..ACTIONS {
        act(&s, &game, &token, &format!("Again {n}")).await;
    }
    let (status, mut resumed) = open(&s, &game, &token, "", Some(&first)).await;
    assert_eq!(status, 200);
    let mut last: Option<(u64, u64)> = None;
    let mut applied = 0;
    let mut events = 0;
    while applied < ACTIONS {
        let e = resumed.next().await;
        assert_ne!(e.event, "reset");
        let id = e.id.unwrap();
        let (ms, n) = id.split_once('-').unwrap();
        let id = (ms.parse().unwrap(), n.parse().unwrap());
        assert!(
            last.is_none_or(|l| id > l),
            "in order, once: {id:?} after {last:?}"
        );
        last = Some(id);
        events += 1;
        if e.event == "action.applied" {
            applied += 1;
        }
    }
    assert!(events > 1000, "more than a page: {events}");
}

/// A client that stays connected while Redis dies and comes back empty, and a commit the stream
/// never got: made by another engine that cannot reach it (and never will, as if it had died).
/// The stream starts again after it, so nothing shows the hole but the seqs; the live client
/// still gets that commit's events, from the outbox, in order, before what follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_a_live_client_gets_the_commit_redis_lost_while_down() {
    let mut s = serve(TestApp::distributed_with(common::api_config(1000), true).await).await;
    let (game, token) = s.app.new_game().await;
    let (_, mut live) = open(&s, &game, &token, "", None).await;
    act(&s, &game, &token, "One").await;
    live.next_of(&["action.applied"]).await;

    let mut unreachable = hotpath_testkit::RedisServer::start();
    let config = hotpath_engine::compose::BackendConfig {
        redis_url: Some(unreachable.url()),
        ..s.app.config.clone()
    };
    let other = serve(
        TestApp::build(
            config,
            None,
            tempfile::tempdir().unwrap(),
            common::api_config(1000),
        )
        .await,
    )
    .await;
    unreachable.stop();
    let two = act(&other, &game, &token, "Two").await;
    s.app.redis.as_mut().unwrap().restart();
    while s.app.backends.stream.ping().await.is_err() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let three = act(&s, &game, &token, "Three").await;

    let next = live.next_of(&["action.applied", "reset"]).await;
    assert_eq!(next.event, "action.applied", "no reset needed: {next:?}");
    assert_eq!(next.data["action_id"], two["action_id"], "{next:?}");
    let after = live.next_of(&["action.applied"]).await;
    assert_eq!(after.data["action_id"], three["action_id"]);
}

/// The same on a quiet game: nothing follows the commit Redis missed, so no hole shows; the
/// relay publishes it again once Redis is back, and the live client gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_a_commit_redis_missed_while_down_is_published_when_it_is_back() {
    let mut s = serve(TestApp::distributed_with(common::api_config(1000), true).await).await;
    let (game, token) = s.app.new_game().await;
    let (_, mut live) = open(&s, &game, &token, "", None).await;
    act(&s, &game, &token, "One").await;
    live.next_of(&["action.applied"]).await;

    s.app.redis.as_mut().unwrap().stop();
    let two = act(&s, &game, &token, "Two").await;
    s.app.redis.as_mut().unwrap().restart();

    let next = live.next_of(&["action.applied", "reset"]).await;
    assert_eq!(next.event, "action.applied", "no reset needed: {next:?}");
    assert_eq!(next.data["action_id"], two["action_id"], "{next:?}");
}
