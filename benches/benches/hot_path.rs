//! Resolving one action in-process with a warm cache, on the embedded backends (in-process
//! cache and stream, SQLite) and the distributed ones (Redis and PostgreSQL on loopback,
//! started by hotpath-testkit), plus the rules alone. Every iteration is a real action: it is
//! appended to the log, claims, and dispatches (the dispatch guards are warm after the first).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};

use hotpath_cache::GameId;
use hotpath_cache::ids::{ActionId, PlayerId, SceneId};
use hotpath_cache::model::{ActionKind, PlayerAction};
use hotpath_cache::scenario::builtin;
use hotpath_cache::store::{PlayerRecord, hash_token};
use hotpath_engine::compose::{BackendConfig, Backends};
use hotpath_engine::hot::resolve::{ActionInput, resolve};
use hotpath_engine::hot::{HotConfig, HotPath, fallback, rules};

struct Setup {
    hot: HotPath,
    player: PlayerRecord,
    game: GameId,
}

async fn setup(config: BackendConfig) -> Setup {
    let backends = Backends::connect(&config).await.expect("backends");
    let hot = backends.hot_path(builtin(), HotConfig::default());
    let game = GameId::generate();
    let scenario = hot.scenario_named("harbor-strike").unwrap();
    backends.store.create_game(game, &scenario).await.unwrap();
    let player = backends
        .store
        .add_player(game, "bench", &hash_token("bench-token"))
        .await
        .unwrap();
    // Warm up: the snapshot is cached and the first dispatch guards are held.
    for _ in 0..5 {
        resolve(&hot, &player, game, input(), None).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    Setup { hot, player, game }
}

/// Threaten, persuade, persuade, ...: the strike's intensity moves every action (so reactions
/// are dispatched every time) but nets to zero, so the game stays in one steady phase however
/// many iterations criterion runs.
fn input() -> ActionInput {
    static TURN: AtomicUsize = AtomicUsize::new(0);
    let (kind, text) = match TURN.fetch_add(1, Ordering::Relaxed) % 3 {
        0 => ("threaten", "Pay the crews or the cranes burn"),
        _ => ("persuade", "You should sit down with the guild, trust me"),
    };
    ActionInput {
        scene_id: "docks".into(),
        kind: Some(kind.into()),
        text: text.into(),
        target: None,
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let mut group = c.benchmark_group("hot_path");
    group.measurement_time(Duration::from_secs(10));

    let dir = tempfile::tempdir().unwrap();
    let embedded = rt.block_on(setup(BackendConfig {
        data_dir: dir.path().to_owned(),
        redis_url: None,
        database_url: None,
    }));
    group.bench_function("resolve_action/memory+sqlite", |b| {
        b.to_async(&rt).iter(|| async {
            resolve(
                &embedded.hot,
                &embedded.player,
                embedded.game,
                input(),
                None,
            )
            .await
            .unwrap()
        })
    });

    let redis = hotpath_testkit::RedisServer::start();
    let postgres = hotpath_testkit::PostgresServer::start();
    let distributed = rt.block_on(setup(BackendConfig {
        data_dir: dir.path().join("unused"),
        redis_url: Some(redis.url()),
        database_url: Some(postgres.create_database("bench")),
    }));
    group.bench_function("resolve_action/redis+postgres", |b| {
        b.to_async(&rt).iter(|| async {
            resolve(
                &distributed.hot,
                &distributed.player,
                distributed.game,
                input(),
                None,
            )
            .await
            .unwrap()
        })
    });

    let scenario = builtin().remove("harbor-strike").unwrap();
    let state = hotpath_cache::GameState::new(GameId::generate(), &scenario);
    let scene = scenario
        .scene(&SceneId::new("docks").unwrap())
        .unwrap()
        .clone();
    group.bench_function("rules_only", |b| {
        b.iter(|| {
            let kind = rules::classify(None, "Pay the crews or else the docks burn");
            let action = PlayerAction {
                id: ActionId::generate(),
                game_id: state.game_id,
                player_id: PlayerId::generate(),
                scene_id: scene.id.clone(),
                kind,
                text: "Pay the crews or else the docks burn".into(),
                target: None,
            };
            let event = rules::apply_action(&scenario, &state, &action);
            let mut after = state.clone();
            after.apply(&scenario, 1, &event);
            let moves: Vec<_> = scene
                .stakeholders
                .iter()
                .filter_map(|s| scenario.stakeholder(s))
                .map(|who| fallback::stakeholder_move(&scenario, &after, who, kind, after.turn))
                .collect();
            (after, moves, ActionKind::Say)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
