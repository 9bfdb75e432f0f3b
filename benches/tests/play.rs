//! The play simulator against a real embedded engine in this process: the HTTP server and the
//! job workers that `hotpath serve` runs (SQLite in a temporary directory, scripted LLM), on a
//! loopback port. A short run must act, follow the streams, sample the queue and report every
//! piece, and the plot must be drawn.

use std::sync::Arc;
use std::time::Duration;

use hotpath_background::llm::LlmConfig;
use hotpath_background::worker::WorkerConfig;
use hotpath_benches::play::{self, PIECES, PlayConfig};
use hotpath_engine::api::{ApiConfig, AppState};
use hotpath_engine::compose::{self, BackendConfig, Backends, Shutdown};
use hotpath_engine::hot::HotConfig;

const ADMIN: &str = "play-test-admin";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_play_on_an_embedded_engine_reports_every_piece() {
    let dir = tempfile::tempdir().unwrap();
    let backends = Backends::connect(&BackendConfig {
        data_dir: dir.path().join("data"),
        redis_url: None,
        database_url: None,
    })
    .await
    .expect("embedded backends");
    let api = ApiConfig::default();
    let hot = backends.hot_path(hotpath_cache::scenario::builtin(), HotConfig::default());
    let mut state = AppState::new(hot, ADMIN, &api);
    state.queue = Some(Arc::new(backends.jobs.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = Shutdown::default();
    let llm = LlmConfig {
        latency: Duration::from_millis(50),
        latency_jitter: Duration::from_millis(25),
        ..LlmConfig::default()
    };
    let workers = WorkerConfig {
        name: "play-test".into(),
        ..WorkerConfig::default()
    };

    let config = PlayConfig {
        url,
        admin_token: ADMIN.into(),
        games: 2,
        players: 2,
        period: Duration::from_millis(400),
        warmup: Duration::from_secs(2),
        seconds: Duration::from_secs(6),
        progress_every: Duration::from_secs(2),
        window: Duration::from_secs(2),
        label: "test".into(),
        ..PlayConfig::default()
    };
    let play = async {
        let report = play::run(&config).await;
        shutdown.trigger();
        report
    };
    let (served, worked, report) = tokio::join!(
        compose::serve(listener, state, &api, shutdown.wait()),
        backends.run_workers(&llm, workers, shutdown.wait()),
        play,
    );
    served.expect("server");
    worked.expect("workers");
    let report = report.expect("the play ran");

    assert!(report.actions.sent > 20, "{:?}", report.actions);
    assert_eq!(report.actions.failed, 0, "{:?}", report.actions.status);
    for piece in PIECES {
        let s = &report.pieces[piece];
        assert!(s.served > 0, "{piece}: {s:?}");
        assert_eq!(s.precomputed + s.cache + s.fallback, s.served, "{piece}");
        let shares = s.precomputed_share + s.cache_share + s.fallback_share;
        assert!((shares - 1.0).abs() < 1e-9, "{piece}: {shares}");
    }
    assert!(
        report.actions.by_kind.len() >= 4,
        "{:?}",
        report.actions.by_kind
    );
    assert!(
        report.events.get("action.applied").copied().unwrap_or(0) > 0,
        "{:?}",
        report.events
    );
    assert!(report.jobs.dispatched_per_action > 0.0, "{:?}", report.jobs);
    assert!(!report.queue.samples.is_empty());
    assert!(!report.windows.is_empty());
    let summary = report.summary();
    assert!(
        summary.contains("reactions") && summary.contains("jobs/action"),
        "{summary}"
    );

    let svg = dir.path().join("play.svg");
    play::plot(&report, &svg).unwrap();
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.contains("<svg") && text.contains("reactions"),
        "{}",
        &text[..200.min(text.len())]
    );
    let json = serde_json::to_value(&report).unwrap();
    for key in ["pieces", "freshness", "jobs", "queue", "windows", "notes"] {
        assert!(json.get(key).is_some(), "{key}");
    }
}
