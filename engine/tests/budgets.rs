//! Token budgets hold for a whole deployment: two `hotpath worker` processes on one PostgreSQL
//! and Redis, with a global budget of N tokens a day, together spend at most N — each reserves
//! a call's cost in the shared `llm_spend` table before calling, so neither can spend what the
//! other holds.

mod common;
#[path = "common/process.rs"]
mod process;

use std::time::{Duration, Instant};

use serde_json::json;

use common::TestApp;
use hotpath_cache::spend::day_of;
use hotpath_cache::time::now_ms;
use process::Worker;

/// The global hard (and soft) limit: a few calls' worth, far less than the play below asks.
const BUDGET: u64 = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_share_one_global_budget() {
    let app = TestApp::distributed().await;
    let redis = app.config.redis_url.clone().unwrap();
    let database = app.database.clone().unwrap();
    let env = vec![
        ("HOTPATH_LLM_BUDGET_GLOBAL_SOFT", BUDGET.to_string()),
        ("HOTPATH_LLM_BUDGET_GLOBAL_HARD", BUDGET.to_string()),
        ("HOTPATH_LLM_MAX_CONCURRENT", "4".to_owned()),
    ];
    let started = now_ms();
    let workers = [
        Worker::start(&redis, &database, &env),
        Worker::start(&redis, &database, &env),
    ];

    // Enough play that the jobs ask for many times the budget.
    let lines = ["Hello", "What is the strike about?", "I will help you"];
    for _ in 0..4 {
        let (game, token) = app.new_game().await;
        for text in lines {
            let r = app
                .act(&game, &token, json!({"scene_id": "docks", "text": text}))
                .await;
            assert_eq!(r.status, 200, "{}", r.text);
        }
    }

    // Every job ends: written, skipped over budget, or dead.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let jobs = app.backends.jobs.jobs(1000).await.unwrap();
        let open = jobs
            .iter()
            .filter(|j| matches!(j.status.as_str(), "Pending" | "Queued" | "Running"))
            .count();
        if !jobs.is_empty() && open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} of {} jobs still open",
            jobs.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let store = &app.backends.store;
    let spent = store.tokens_spent(day_of(now_ms()), 10).await.unwrap();
    let global = spent
        .iter()
        .find(|s| s.scope == "global")
        .expect("global spend");
    assert!(
        global.used + global.reserved <= BUDGET,
        "spent past the budget: {global:?}"
    );
    let ledger: u64 = store
        .llm_usage(started)
        .await
        .unwrap()
        .values()
        .map(|u| u.prompt_tokens + u.completion_tokens)
        .sum();
    assert!(ledger <= BUDGET, "the ledger counts {ledger} tokens");
    assert!(ledger > 0 && global.used > 0, "the budget was used");
    // The play asked for more: some calls were refused, not made.
    let logs: Vec<String> = workers.iter().map(Worker::log).collect();
    assert!(
        logs.iter().any(|l| l.contains("token budget exhausted")),
        "no call was refused over the budget (spent {global:?}, ledger {ledger}); logs:\n{}",
        logs.join("\n---\n")
    );
}
