//! Faults under real processes on real servers (a distributed `hotpath serve` and `hotpath
//! worker` on a Redis and a PostgreSQL of the test's own):
//!
//! - Redis frozen (`SIGSTOP`: connections hang, nothing is refused) or killed during play:
//!   every action is still answered, degraded, well inside the client's patience; no model call
//!   is made whose result cannot be written; once Redis is back, answers and jobs recover
//!   without a restart.
//!
//! The rest of the fault suite: `outages.rs` (PostgreSQL down or slow → 503 within the budget,
//! nothing half-applied), `slow_path.rs` (a worker process SIGKILLed mid-job → another completes
//! it once), `durability.rs` (an engine SIGKILLed after answering loses nothing), `cluster.rs`
//! (two engines and two workers on one deployment) and `budgets.rs` (two workers, one budget).

mod common;
#[path = "common/process.rs"]
mod process;

use std::time::{Duration, Instant};

use hotpath_testkit::RedisServer;
use process::{Served, Worker, act, jobs, jobs_settled};

const ADMIN: &str = "faults-admin-token";

/// Model calls since `since` (ms) whose result was not written: what an outage must not cost.
fn unwritten_calls(db: &str, since: i64) -> u64 {
    hotpath_testkit::shared_postgres()
        .psql(
            db,
            &format!("SELECT count(*) FROM llm_calls WHERE NOT ok AND created_at >= {since}"),
        )
        .trim()
        .parse()
        .unwrap()
}

fn calls(db: &str) -> u64 {
    hotpath_testkit::shared_postgres()
        .psql(db, "SELECT count(*) FROM llm_calls")
        .trim()
        .parse()
        .unwrap()
}

#[derive(Debug, Clone, Copy)]
enum RedisFault {
    /// `SIGSTOP`: the socket stays open and nothing answers.
    Frozen,
    /// The process is gone: connections are refused.
    Killed,
}

async fn redis_out_during_play(fault: RedisFault) {
    let mut redis = RedisServer::start();
    let database = hotpath_testkit::fresh_postgres_database();
    let db = database.rsplit('/').next().unwrap().to_owned();
    let served = Served::distributed(
        ADMIN,
        &redis.url(),
        &database,
        &["--rate-per-second", "1000"],
    );
    let worker = Worker::start(&redis.url(), &database, &[]);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // Two games: the second is first played during the outage, so its first jobs (narration,
    // beats, the social bundle: all written to Redis) are dispatched while Redis is out.
    let (before, t1) = served.new_game("Ada").await;
    let (during, t2) = served.new_game("Bo").await;
    let (status, answer) = act(&client, &served.base, &before, &t1, "Hello").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["degraded"], false);
    jobs_settled(&db, Duration::from_secs(60)).await;
    let calls_before = calls(&db);
    assert!(calls_before > 0, "the first action's jobs asked the model");

    let out_since = hotpath_cache::time::now_ms();
    match fault {
        RedisFault::Frozen => redis.pause(),
        RedisFault::Killed => redis.stop(),
    }
    let lines = ["Hello", "What is the strike about?", "I will help you"];
    let mut slowest = Duration::ZERO;
    for (i, text) in lines.iter().enumerate() {
        for (game, token) in [(&during, &t2), (&before, &t1)] {
            let started = Instant::now();
            let (status, answer) = act(&client, &served.base, game, token, text).await;
            let took = started.elapsed();
            slowest = slowest.max(took);
            assert_eq!(status, 200, "{fault:?}: action {i}: {answer}");
            assert_eq!(answer["degraded"], true, "{fault:?}: {answer}");
            // A guard against hanging on the dead connection, not a latency figure (the load
            // bench holds those): the cache's timeout bounds each Redis call.
            assert!(
                took < Duration::from_secs(3),
                "{fault:?}: answered in {took:?}"
            );
        }
    }
    // Long enough for the worker to have asked (and re-asked) for every job it holds.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        unwritten_calls(&db, out_since),
        0,
        "{fault:?}: no model call whose result could not be written"
    );
    let jobs_during = jobs(&db);
    assert!(
        jobs_during.iter().all(|(_, st)| st != "Killed"),
        "{fault:?}: an outage dead-letters nothing: {jobs_during:?}"
    );

    match fault {
        RedisFault::Frozen => redis.resume(),
        RedisFault::Killed => redis.restart(),
    }
    // Answers recover without a restart of anything.
    let back = Instant::now();
    let deadline = back + Duration::from_secs(20);
    loop {
        let (status, answer) = act(&client, &served.base, &before, &t1, "Are you well?").await;
        assert_eq!(status, 200, "{answer}");
        if answer["degraded"] == false {
            break;
        }
        assert!(Instant::now() < deadline, "{fault:?}: still degraded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let recovered = back.elapsed();
    // The paused jobs resume and end: written, none dead.
    let all = jobs_settled(&db, Duration::from_secs(90)).await;
    let settled = back.elapsed();
    assert!(
        all.iter().all(|(_, st)| st == "Done"),
        "{fault:?}: every job done after the outage: {all:?}"
    );
    assert_eq!(
        unwritten_calls(&db, 0),
        0,
        "{fault:?}: nothing paid for twice"
    );
    assert!(
        calls(&db) > calls_before,
        "the paused work ran once Redis was back"
    );
    let log = worker.log();
    // The figures, for the record (a guard above bounds them; the benches hold latency).
    eprintln!(
        "{fault:?}: slowest degraded answer {slowest:?}; answers whole again {recovered:?} and \
         every job done {settled:?} after Redis came back; {} jobs, {} model calls",
        all.len(),
        calls(&db)
    );
    assert!(
        log.contains("job paused until storage answers"),
        "{fault:?}: the worker paused jobs that write to Redis:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen_during_play() {
    redis_out_during_play(RedisFault::Frozen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_during_play() {
    redis_out_during_play(RedisFault::Killed).await;
}
