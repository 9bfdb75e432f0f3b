//! The history checker (`hotpath_testkit::chaos`) on both deployments: a short fixed-seed
//! history of several games and players acting with timeouts, retries (with the same
//! `Idempotency-Key`, hedged while the first try is in flight, and without a key), event-stream
//! clients that disconnect and resume, and faults (slow commits, paused and killed servers,
//! killed and restarted engines, writers retiring; two engines behind round-robin when
//! distributed), with precomputed rows seeded for the first context so that the writers'
//! reservoirs (two engines' on one game) claim under those faults too. Fails on any anomaly,
//! printing the seed and a minimal history to replay.
//!
//! Another seed: `CHAOS_SEED=7 cargo test -p hotpath-engine --test chaos`; longer runs:
//! `scripts/bench-chaos --seconds N --seed S`.

use hotpath_testkit::chaos::{self, Backends, HistoryConfig, Summary};

const BIN: &str = env!("CARGO_BIN_EXE_hotpath");

/// The fixed seed of the test run.
const SEED: u64 = 18;

/// How long the players act, per deployment (the whole test takes about twice this: start-up,
/// the quiet period, the catch-up sessions, the job look-ups and the log reads).
const SECONDS: f64 = 20.0;

fn seed() -> u64 {
    std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED)
}

async fn history(mut backends: Backends, test: &str) {
    let seed = seed();
    let work = tempfile::Builder::new()
        .prefix("hotpath-chaos-")
        .tempdir()
        .unwrap();
    let cfg = HistoryConfig::new(seed, SECONDS);
    let started = std::time::Instant::now();
    let r = chaos::run_history(BIN.as_ref(), &mut backends, &cfg, work.path())
        .await
        .unwrap_or_else(|e| panic!("the harness could not run (seed {seed}): {e}"));
    let mut summary = Summary::default();
    summary.add(&r);
    eprintln!(
        "{test}: seed {seed}, {:.1} s\n{}",
        started.elapsed().as_secs_f64(),
        summary.text()
    );
    assert!(
        summary.logged_actions > 0,
        "no action was applied: {summary:?}"
    );
    // Otherwise `precomputed_once` would hold of nothing.
    assert!(
        summary.seeded_rows_taken > 0,
        "no seeded precomputed row was claimed: {summary:?}"
    );
    if !r.anomalies.is_empty() {
        let kept = work.keep();
        let _ = std::fs::write(
            kept.join("history.json"),
            serde_json::to_vec(&r).unwrap_or_default(),
        );
        panic!(
            "{} anomalies in the {test} history of seed {seed} (rerun: CHAOS_SEED={seed} cargo \
             test -p hotpath-engine --test chaos {test}; engine logs and history.json under {kept:?})\n{}\n{}",
            r.anomalies.len(),
            summary.text(),
            chaos::report::replays(&r, 2)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded() {
    history(Backends::Embedded, "embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed() {
    history(Backends::owned_distributed(), "distributed").await;
}
