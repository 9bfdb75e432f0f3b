//! Two engines and two workers on one Redis and one PostgreSQL, as real processes, for a short
//! play run: every job dispatched by either engine is run once and none is lost, no prepared
//! reaction is served twice, the event stream followed on engine A carries what engine B and
//! the workers wrote, and the per-player action limit holds across the engines.

mod common;
#[path = "common/process.rs"]
mod process;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::SseReader;
use process::{Served, Worker, act, jobs};

const ADMIN: &str = "cluster-admin-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_and_two_workers_play_one_deployment() {
    let redis = hotpath_testkit::shared_redis().url();
    let database = hotpath_testkit::fresh_postgres_database();
    let db = database.rsplit('/').next().unwrap().to_owned();
    // One action a second per player, burst two: counted in Redis, so across both engines.
    let a = Served::distributed(ADMIN, &redis, &database, &["--rate-per-second", "1"]);
    let b = Served::distributed(ADMIN, &redis, &database, &["--rate-per-second", "1"]);
    let latency = vec![("HOTPATH_LLM_LATENCY_MS", "30".to_owned())];
    let _workers = [
        Worker::start(&redis, &database, &latency),
        Worker::start(&redis, &database, &latency),
    ];
    let client = reqwest::Client::new();

    // Engine A creates the game; its player follows the game's events on A.
    let (game, token) = a.new_game("Ada").await;
    let (status, mut events) = SseReader::open(&client, &a.base, &game, &token, "", None).await;
    assert_eq!(status, 200);

    // The player acts through B, then alternately through A and B, paced under the limit.
    let lines = [
        "Hello",
        "What is the strike about?",
        "I will help you",
        "Tell me more",
        "Goodbye",
    ];
    let mut served_precomputed = 0;
    let mut dispatched: BTreeSet<String> = BTreeSet::new();
    for (i, text) in lines.iter().enumerate() {
        let base = if i % 2 == 0 { &b.base } else { &a.base };
        let (status, answer) = act(&client, base, &game, &token, text).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            answer["turn"],
            i as u64 + 1,
            "turns in order across engines"
        );
        served_precomputed += answer["reactions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["source"] == "precomputed")
            .count();
        for job in answer["dispatched"].as_array().into_iter().flatten() {
            if let Some(id) = job["job_id"].as_str() {
                dispatched.insert(id.to_owned());
            }
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }

    // The stream on A carries B's actions and the workers' content.
    let mut applied = 0;
    let mut content = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while (applied < lines.len() || content == 0) && Instant::now() < deadline {
        let e = events.next_within(Duration::from_secs(30)).await;
        match e.event.as_str() {
            "action.applied" => applied += 1,
            "content.ready" => content += 1,
            _ => {}
        }
    }
    assert_eq!(
        applied,
        lines.len(),
        "every action, through either engine, on A's stream"
    );
    assert!(content > 0, "content the workers wrote reached A's stream");

    // Every dispatched job exists and ends; none is run twice (a job is one row, and a second
    // delivery after a finished one would show as a retry in its attempts).
    let deadline = Instant::now() + Duration::from_secs(90);
    let all = loop {
        let all = jobs(&db);
        let open = all
            .iter()
            .filter(|(_, st)| matches!(st.as_str(), "Pending" | "Queued" | "Running"))
            .count();
        if open == 0 && !all.is_empty() {
            break all;
        }
        assert!(Instant::now() < deadline, "jobs still open: {all:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ids: BTreeSet<String> = all.iter().map(|(id, _)| id.clone()).collect();
    assert!(
        dispatched.is_subset(&ids),
        "lost jobs: {:?}",
        dispatched.difference(&ids).collect::<Vec<_>>()
    );
    assert!(
        all.iter().all(|(_, st)| st == "Done"),
        "every job done: {all:?}"
    );

    // No prepared reaction served twice: as many served as were marked consumed.
    let consumed: usize = hotpath_testkit::shared_postgres()
        .psql(
            &db,
            "SELECT count(*) FROM planned_stakeholder_actions WHERE status = 'consumed'",
        )
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        served_precomputed, consumed,
        "each prepared reaction served once"
    );

    // The action limit is one budget across the engines: a burst of three through A, B, A
    // gets the third refused.
    let mut statuses = Vec::new();
    for base in [&a.base, &b.base, &a.base] {
        statuses.push(act(&client, base, &game, &token, "Quick").await.0);
    }
    assert_eq!(statuses[..2], [200, 200], "{statuses:?}");
    assert_eq!(statuses[2], 429, "{statuses:?}");
}
