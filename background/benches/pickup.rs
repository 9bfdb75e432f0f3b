//! Job pickup latency: from `JobQueue::push` returning to the handler starting (its
//! `job.started` event on the game's stream), for what ships — SQLite woken in-process by its
//! update hook, PostgreSQL woken by LISTEN/NOTIFY. One job at a time, so each sample is a cold
//! pickup by an idle worker, which is what a player's dispatched job meets.
//!
//! `cargo bench -p hotpath-background --bench pickup` (optionally `-- <samples>`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hotpath_background::JobStorage;
use hotpath_background::jobs::Deps;
use hotpath_background::llm::scripted::{ScriptedConfig, ScriptedProvider};
use hotpath_background::worker::{self, WorkerConfig};
use hotpath_cache::GameId;
use hotpath_cache::cache::MemoryCache;
use hotpath_cache::events::GameEvent;
use hotpath_cache::jobs::{GenerateSocialBundle, JobQueue};
use hotpath_cache::scenario::builtin;
use hotpath_cache::store::{PostgresStore, SqliteStore, Store};
use hotpath_cache::stream::{EventStream, MemoryStream, Position, StreamItem};

async fn measure(name: &str, storage: JobStorage, store: Arc<dyn Store>, samples: usize) {
    let stream: Arc<dyn EventStream> = Arc::new(MemoryStream::new(100_000));
    let game = GameId::generate();
    let scenario = builtin()["harbor-strike"].clone();
    store.create_game(game, &scenario).await.unwrap();
    let deps = Deps {
        cache: Arc::new(MemoryCache::new(100_000)),
        store,
        stream: stream.clone(),
        provider: Arc::new(ScriptedProvider::new(ScriptedConfig::default())),
        queue: None,
        answers: Default::default(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = WorkerConfig {
        name: format!("pickup-bench-{name}-{}", std::process::id()),
        ..WorkerConfig::default()
    };
    let running = tokio::spawn(worker::run(storage.clone(), deps, config, async move {
        let _ = stopped.await;
    }));
    let mut sub = stream.subscribe(game, Position::Live).await.unwrap();
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples + 10 {
        let job = GenerateSocialBundle {
            game_id: game,
            world_version: i as u64,
        };
        let t = Instant::now();
        let id = storage.push(job.into()).await.unwrap();
        let pushed = t.elapsed();
        let started = loop {
            let item = tokio::time::timeout(Duration::from_secs(60), sub.next())
                .await
                .expect("the job starts within a minute")
                .unwrap();
            if let StreamItem::Event {
                event: GameEvent::JobStarted { job_id, .. },
                ..
            } = item
                && job_id == id
            {
                break t.elapsed();
            }
        };
        // Wait for the job to finish so the next sample meets an idle worker.
        loop {
            if let Some(StreamItem::Event {
                event: GameEvent::JobCompleted { job_id, .. },
                ..
            }) = sub.next().await
                && job_id == id
            {
                break;
            }
        }
        if i >= 10 {
            // The first pushes warm connections and statements up.
            latencies.push((started.saturating_sub(pushed), pushed));
        }
    }
    let _ = stop.send(());
    running.await.unwrap().unwrap();
    let mut pickup: Vec<Duration> = latencies.iter().map(|(p, _)| *p).collect();
    let mut push: Vec<Duration> = latencies.iter().map(|(_, p)| *p).collect();
    pickup.sort();
    push.sort();
    let pct = |v: &[Duration], p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{name:<28} samples {samples:>4}  pickup p50 {:>9.2?}  p99 {:>9.2?}  max {:>9.2?}   (push itself p50 {:>9.2?})",
        pct(&pickup, 0.5),
        pct(&pickup, 0.99),
        pickup[pickup.len() - 1],
        pct(&push, 0.5),
    );
}

fn main() {
    let samples: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(300);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let storage = JobStorage::sqlite(&dir.path().join("jobs.sqlite"))
            .await
            .unwrap();
        let store = Arc::new(
            SqliteStore::open(&dir.path().join("game.sqlite"))
                .await
                .unwrap(),
        );
        measure("sqlite (update hook)", storage, store, samples).await;

        let url = hotpath_testkit::fresh_postgres_database();
        let storage = JobStorage::postgres(&url).await.unwrap();
        let store = Arc::new(PostgresStore::connect(&url).await.unwrap());
        measure("postgres (LISTEN/NOTIFY)", storage, store, samples).await;
    });
}
