//! Real workers on real storage with the scripted provider, on both deployments:
//! embedded (SQLite jobs, SQLite store, in-process cache and stream) and distributed
//! (PostgreSQL jobs and store, Redis cache and stream). Every job kind writes what the hot path
//! reads; writes are idempotent; malformed output is dead-lettered with its reason and writes
//! nothing; dialogue streams in order, then `done`, then the log; a job whose worker died is
//! finished by another worker, once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hotpath_background::jobs::{Deps, JobSettings};
use hotpath_background::llm::scripted::{ScriptedConfig, ScriptedProvider};
use hotpath_background::llm::{Budget, Budgets, Governor, Provider};
use hotpath_background::worker::{self, WorkerConfig};
use hotpath_background::{JobRecord, JobStorage};
use hotpath_cache::cache::{Cache, CacheExt, MemoryCache, RedisCache, keys};
use hotpath_cache::events::{AppliedAction, Effect, GameEvent, LoggedEvent};
use hotpath_cache::jobs::*;
use hotpath_cache::model::{ActionKind, reaction_key};
use hotpath_cache::scenario::{Scenario, builtin};
use hotpath_cache::state::{ContextHash, GameState};
use hotpath_cache::store::{ClaimQuery, PostgresStore, SqliteStore, Store};
use hotpath_cache::stream::{EventStream, MemoryStream, Position, RedisStream, StreamItem};
use hotpath_cache::time::now_ms;
use hotpath_cache::*;
use tokio::sync::oneshot;

struct Env {
    storage: JobStorage,
    cache: Arc<dyn Cache>,
    store: Arc<dyn Store>,
    stream: Arc<dyn EventStream>,
    /// The database holding the jobs (and the game data): a SQLite file or a PostgreSQL URL.
    db: Db,
    _dir: Option<tempfile::TempDir>,
}

enum Db {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

async fn embedded() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("game.sqlite");
    let store = SqliteStore::open(&path).await.unwrap();
    Env {
        // The jobs live in the game database, as in the embedded deployment: an action's
        // jobs (and their guards) commit with it.
        storage: JobStorage::sqlite_in(&store).await.unwrap(),
        store: Arc::new(store),
        cache: Arc::new(MemoryCache::new(10_000)),
        stream: Arc::new(MemoryStream::new(10_000)),
        db: Db::Sqlite(path),
        _dir: Some(dir),
    }
}

async fn distributed() -> Env {
    let pg = hotpath_testkit::fresh_postgres_database();
    let redis = hotpath_testkit::shared_redis().url();
    Env {
        db: Db::Postgres(pg.clone()),
        // The job storage shares the game database, as a deployment may.
        storage: JobStorage::postgres(&pg).await.unwrap(),
        store: Arc::new(PostgresStore::connect(&pg).await.unwrap()),
        cache: Arc::new(
            RedisCache::connect(&redis, Duration::from_secs(2))
                .await
                .unwrap(),
        ),
        stream: Arc::new(RedisStream::connect_default(&redis).await.unwrap()),
        _dir: None,
    }
}

fn scripted(seed: u64, malformed_rate: f64, latency: Duration) -> Arc<dyn Provider> {
    Arc::new(ScriptedProvider::new(ScriptedConfig {
        seed,
        latency,
        error_rate: 0.0,
        malformed_rate,
        ..ScriptedConfig::default()
    }))
}

fn scenario() -> Scenario {
    builtin()["harbor-strike"].clone()
}

fn sid(s: &str) -> StakeholderId {
    StakeholderId::new(s).unwrap()
}

fn fast_config(name: &str) -> WorkerConfig {
    WorkerConfig {
        name: name.into(),
        concurrency: 4,
        heartbeat: Duration::from_secs(1),
        missed_heartbeats: 2,
        shutdown_timeout: Duration::from_secs(5),
        jobs: JobSettings {
            max_attempts: 3,
            timeout: Duration::from_secs(20),
            retry_base: Duration::from_millis(20),
            retry_max: Duration::from_millis(100),
            ..JobSettings::default()
        },
        ..WorkerConfig::default()
    }
}

struct Running {
    stop: Option<oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<Result<(), worker::WorkerError>>,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(20), self.handle)
            .await
            .expect("the worker stops on shutdown")
            .unwrap()
            .unwrap();
    }
}

fn start(env: &Env, provider: Arc<dyn Provider>, config: WorkerConfig) -> Running {
    let deps = Deps {
        cache: env.cache.clone(),
        store: env.store.clone(),
        stream: env.stream.clone(),
        provider,
        queue: Some(Arc::new(env.storage.clone())),
        answers: Default::default(),
    };
    let (tx, rx) = oneshot::channel();
    let storage = env.storage.clone();
    let handle = tokio::spawn(worker::run(storage, deps, config, async move {
        let _ = rx.await;
    }));
    Running {
        stop: Some(tx),
        handle,
    }
}

async fn wait_finished(storage: &JobStorage, id: &str) -> JobRecord {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(rec) = storage.job(id).await.unwrap()
            && (rec.status == "Done" || rec.status == "Killed")
        {
            return rec;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} did not finish: {:?}",
            storage.job(id).await
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A game with one player and one applied action (seq 2) in the docks.
async fn game(env: &Env) -> (GameId, PlayerId, u64) {
    let game = GameId::generate();
    let s = scenario();
    env.store.create_game(game, &s).await.unwrap();
    let player = PlayerId::generate();
    env.store
        .append_event_next(
            game,
            &LoggedEvent::PlayerJoined {
                player_id: player,
                name: "Ada".into(),
            },
        )
        .await
        .unwrap();
    let seq = env
        .store
        .append_event_next(
            game,
            &LoggedEvent::ActionApplied(AppliedAction {
                action_id: ActionId::generate(),
                player_id: player,
                scene_id: SceneId::new("docks").unwrap(),
                kind: ActionKind::Threaten,
                text: "Open the warehouse or else.".into(),
                target: Some(sid("mara")),
                turn: 1,
                effects: vec![Effect::Standing {
                    stakeholder_id: sid("mara"),
                    delta: -5,
                }],
            }),
        )
        .await
        .unwrap();
    (game, player, seq)
}

async fn state(env: &Env, game: GameId) -> GameState {
    let s = scenario();
    let mut st = GameState::new(game, &s);
    for (seq, e) in env.store.events(game, 0).await.unwrap() {
        st.apply(&s, seq, &e);
    }
    st
}

fn docks() -> SceneId {
    SceneId::new("docks").unwrap()
}

async fn context(env: &Env, game: GameId) -> ContextHash {
    state(env, game).await.context_hash(&scenario(), &docks())
}

fn claim(game: GameId, who: &str, context: ContextHash) -> ClaimQuery {
    ClaimQuery {
        game_id: game,
        scene_id: docks(),
        stakeholders: vec![sid(who)],
        context_hash: context,
        now: now_ms(),
    }
}

async fn events(env: &Env, game: GameId) -> Vec<GameEvent> {
    let mut sub = env.stream.subscribe(game, Position::Start).await.unwrap();
    let mut out = Vec::new();
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
        if let StreamItem::Event { event, .. } = item {
            out.push(event);
        }
    }
    out
}

// ---- cases --------------------------------------------------------------------------------

async fn every_kind_writes_what_the_hot_path_reads(env: Env) {
    let (game, player, seq) = game(&env).await;
    let ctx = context(&env, game).await;
    let strike = ConflictId::new("strike").unwrap();
    let s = scenario();
    let conflict = s.conflict(&strike).unwrap();
    let phase = conflict.phases[1].id.clone();
    let running = start(
        &env,
        scripted(1, 0.0, Duration::ZERO),
        fast_config("embedded-test-1"),
    );
    let jobs: Vec<Job> = vec![
        PrepareSceneReactions {
            game_id: game,
            scene_id: docks(),
            context_hash: ctx.clone(),
            conflicts: Vec::new(),
            world_version: seq,
        }
        .into(),
        NarratePhaseTransition {
            game_id: game,
            conflict_id: strike.clone(),
            phase_id: phase.clone(),
            world_version: seq,
        }
        .into(),
        GenerateBeatDescription {
            game_id: game,
            conflict_id: strike.clone(),
            phase_id: phase.clone(),
            world_version: seq,
        }
        .into(),
        GenerateSocialBundle {
            game_id: game,
            world_version: seq,
        }
        .into(),
        CanonizeConflict {
            game_id: game,
            conflict_id: strike.clone(),
            world_version: seq,
        }
        .into(),
        StreamDialogueReply {
            game_id: game,
            request_id: RequestId::generate(),
            player_id: player,
            scene_id: docks(),
            stakeholder_id: sid("mara"),
            text: "Who runs the docks?".into(),
            world_version: seq,
        }
        .into(),
        CleanupExpiredActions {
            retain_secs: 3600,
            stream_retain_secs: 3600,
        }
        .into(),
    ];
    let mut ids = Vec::new();
    for job in jobs {
        ids.push(env.storage.push(job).await.unwrap());
    }
    for id in &ids {
        let rec = wait_finished(&env.storage, id).await;
        assert_eq!(rec.status, "Done", "{rec:?} {:?}", rec.reason());
    }

    // Reactions: claimable rows for each (stakeholder, action kind) of the context, with
    // provenance.
    let threaten = reaction_key(&ctx, ActionKind::Threaten);
    let reaction = env
        .store
        .claim(&claim(game, "brann", threaten.clone()))
        .await
        .unwrap();
    assert_eq!(reaction.len(), 1);
    assert_eq!(
        reaction[0].kind,
        hotpath_cache::model::PlannedKind::Reaction
    );
    assert_eq!(reaction[0].provenance.model, "scripted");
    assert_eq!(reaction[0].provenance.context_hash, threaten);
    assert!(
        reaction[0]
            .provenance
            .prompt_version
            .starts_with("prepare_scene_reactions@")
    );
    assert!(reaction[0].expires_at > now_ms() + 25 * 60 * 1000);
    let ready = env
        .store
        .ready_counts(game, &docks(), &threaten, now_ms())
        .await
        .unwrap();
    assert_eq!(ready.get(&sid("brann")), Some(&2), "3 written, 1 claimed");
    assert_eq!(ready.get(&sid("mara")), Some(&3));
    let elsewhere = env
        .store
        .claim(&claim(game, "mara", ContextHash("other".into())))
        .await
        .unwrap();
    assert!(
        elsewhere.is_empty(),
        "reactions are served only where they were made for"
    );

    // Cache contents.
    let narration = env
        .cache
        .get_typed(&keys::narration(game, &strike, &phase))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(narration.provenance.world_version, seq);
    assert!(
        env.cache
            .get_typed(&keys::beat(game, &strike, &phase, 0))
            .await
            .unwrap()
            .is_some()
    );
    let social = env
        .cache
        .get_typed(&keys::social(game))
        .await
        .unwrap()
        .unwrap();
    assert!(
        social
            .gossip
            .iter()
            .all(|g| s.stakeholder(&g.from).is_some() && s.stakeholder(&g.about).is_some())
    );

    // Canon: one row, logged, and the chained canon references job wrote the cache.
    let canon = env.store.canon_events(game).await.unwrap();
    assert_eq!(canon.len(), 1);
    let log = env.store.events(game, 0).await.unwrap();
    assert!(log.iter().any(|(_, e)| matches!(e, LoggedEvent::ConflictCanonized { canon_id, .. } if *canon_id == canon[0].id)));
    let deadline = Instant::now() + Duration::from_secs(30);
    let refs = loop {
        if let Some(r) = env
            .cache
            .get_typed(&keys::canon_references(game))
            .await
            .unwrap()
        {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "canon references were not written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(refs.items.iter().all(|i| i.canon_id == canon[0].id));

    // Dialogue: recorded beside the log, not in it.
    let replies = env.store.dialogue_replies(game, 0).await.unwrap();
    assert!(replies.iter().any(|r| r.player_id == player));
    assert!(
        log.iter()
            .all(|(_, e)| !matches!(e, LoggedEvent::DialogueReplied { .. }))
    );

    // Events: every job started and completed; writes announced.
    let evs = events(&env, game).await;
    let started = evs
        .iter()
        .filter(|e| matches!(e, GameEvent::JobStarted { .. }))
        .count();
    let completed = evs
        .iter()
        .filter(|e| matches!(e, GameEvent::JobCompleted { .. }))
        .count();
    assert!(
        started >= 7 && completed >= 7,
        "{started} started, {completed} completed"
    );
    for what in [
        "reactions",
        "narration",
        "beat",
        "social",
        "canon",
        "dialogue",
    ] {
        assert!(
            evs.iter()
                .any(|e| matches!(e, GameEvent::ContentReady { what: w, .. } if w == what)),
            "no content.ready for {what}"
        );
    }
    running.stop().await;
}

async fn same_job_twice_leaves_one_result(env: Env) {
    let (game, _, seq) = game(&env).await;
    let ctx = context(&env, game).await;
    let running = start(
        &env,
        scripted(2, 0.0, Duration::ZERO),
        fast_config("idem-test-1"),
    );
    let action: Job = PrepareSceneReactions {
        game_id: game,
        scene_id: docks(),
        context_hash: ctx.clone(),
        conflicts: Vec::new(),
        world_version: seq,
    }
    .into();
    let reaction: Job = PrepareSceneReactions {
        game_id: game,
        scene_id: docks(),
        context_hash: ctx.clone(),
        conflicts: Vec::new(),
        world_version: seq,
    }
    .into();
    let canon: Job = CanonizeConflict {
        game_id: game,
        conflict_id: ConflictId::new("strike").unwrap(),
        world_version: seq,
    }
    .into();
    let mut ids = Vec::new();
    for job in [&action, &action, &reaction, &reaction, &canon, &canon] {
        ids.push(env.storage.push(job.clone()).await.unwrap());
    }
    for id in &ids {
        assert_eq!(wait_finished(&env.storage, id).await.status, "Done");
    }
    let counts = env
        .store
        .ready_counts(
            game,
            &docks(),
            &reaction_key(&ctx, ActionKind::Help),
            now_ms(),
        )
        .await
        .unwrap();
    assert_eq!(counts.get(&sid("brann")), Some(&3), "one set of rows");
    assert_eq!(
        env.store
            .claim(&claim(game, "mara", reaction_key(&ctx, ActionKind::Help)))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        env.store
            .claim(&claim(game, "mara", ctx.clone()))
            .await
            .unwrap()
            .is_empty(),
        "one reaction row"
    );
    assert_eq!(env.store.canon_events(game).await.unwrap().len(), 1);
    running.stop().await;
}

async fn malformed_output_is_dead_lettered_and_writes_nothing(env: Env) {
    let (game, player, seq) = game(&env).await;
    let ctx = context(&env, game).await;
    let running = start(
        &env,
        scripted(3, 1.0, Duration::ZERO),
        fast_config("malformed-test-1"),
    );
    let strike = ConflictId::new("strike").unwrap();
    let phase = PhaseId::new("walkout").unwrap();
    let jobs: Vec<Job> = vec![
        PrepareSceneReactions {
            game_id: game,
            scene_id: docks(),
            context_hash: ctx.clone(),
            conflicts: Vec::new(),
            world_version: seq,
        }
        .into(),
        NarratePhaseTransition {
            game_id: game,
            conflict_id: strike.clone(),
            phase_id: phase.clone(),
            world_version: seq,
        }
        .into(),
        GenerateSocialBundle {
            game_id: game,
            world_version: seq,
        }
        .into(),
        StreamDialogueReply {
            game_id: game,
            request_id: RequestId::generate(),
            player_id: player,
            scene_id: docks(),
            stakeholder_id: sid("mara"),
            text: "Hello?".into(),
            world_version: seq,
        }
        .into(),
    ];
    let mut ids = Vec::new();
    for job in jobs {
        ids.push(env.storage.push(job).await.unwrap());
    }
    for id in &ids {
        let rec = wait_finished(&env.storage, id).await;
        assert_eq!(rec.status, "Killed", "{rec:?}");
        assert!(rec.is_dead());
        let reason = rec.reason().unwrap();
        assert!(
            reason.contains("attempt 3") && reason.contains("invalid output"),
            "{reason}"
        );
    }
    let dead = env.storage.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 4);
    assert!(dead.iter().all(|d| d.reason().is_some() && d.job.is_some()));
    // Nothing reached the table, the cache or the log.
    assert!(
        env.store
            .ready_counts(
                game,
                &docks(),
                &reaction_key(&ctx, ActionKind::Help),
                now_ms()
            )
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        env.cache
            .get_typed(&keys::narration(game, &strike, &phase))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        env.cache
            .get_typed(&keys::social(game))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(env.store.events(game, 0).await.unwrap().len(), 2);
    let evs = events(&env, game).await;
    let failed: Vec<_> = evs
        .iter()
        .filter_map(|e| match e {
            GameEvent::JobFailed { attempt, dead, .. } => Some((*attempt, *dead)),
            _ => None,
        })
        .collect();
    assert_eq!(failed.iter().filter(|(_, dead)| *dead).count(), 4);
    assert_eq!(
        failed.iter().filter(|(a, dead)| !*dead && *a < 3).count(),
        8,
        "two retries each: {failed:?}"
    );
    // Players read a category; the validation message (internal text) stays in the dead letter.
    for e in &evs {
        if let GameEvent::JobFailed { error, .. } = e {
            assert_eq!(error, "the model's answer was unusable", "{e:?}");
        }
    }
    assert!(!evs.iter().any(|e| matches!(
        e,
        GameEvent::ContentReady { .. } | GameEvent::DialogueChunk { .. }
    )));
    running.stop().await;
}

async fn dialogue_streams_in_order_then_done_then_log(env: Env) {
    let (game, player, seq) = game(&env).await;
    let mut sub = env.stream.subscribe(game, Position::Live).await.unwrap();
    let running = start(
        &env,
        scripted(4, 0.0, Duration::from_millis(200)),
        fast_config("dialogue-test-1"),
    );
    let request_id = RequestId::generate();
    let id = env
        .storage
        .push(
            StreamDialogueReply {
                game_id: game,
                request_id,
                player_id: player,
                scene_id: docks(),
                stakeholder_id: sid("mara"),
                text: "What about the strike?".into(),
                world_version: seq,
            }
            .into(),
        )
        .await
        .unwrap();
    let mut chunks = Vec::new();
    let done = loop {
        let item = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .expect("events flow")
            .unwrap();
        match item {
            StreamItem::Event {
                event:
                    GameEvent::DialogueChunk {
                        request_id: r,
                        index,
                        attempt,
                        text,
                        stakeholder_id,
                    },
                ..
            } => {
                assert_eq!((r, stakeholder_id.as_str()), (request_id, "mara"));
                assert_eq!(index as usize, chunks.len(), "chunks arrive in order");
                assert_eq!(attempt, 1, "streamed by the first try");
                chunks.push(text);
            }
            StreamItem::Event {
                event:
                    GameEvent::DialogueDone {
                        request_id: r,
                        text,
                        model,
                        prompt_version,
                        ..
                    },
                ..
            } => {
                assert_eq!(r, request_id);
                assert_eq!(
                    model.as_deref(),
                    Some("scripted"),
                    "the reply says who wrote it"
                );
                assert!(
                    prompt_version.is_some_and(|v| v.starts_with("stream_dialogue_reply@")),
                    "and with which prompt"
                );
                break text;
            }
            _ => {}
        }
    };
    assert!(chunks.len() > 3);
    assert_eq!(chunks.concat(), done);
    assert_eq!(wait_finished(&env.storage, &id).await.status, "Done");
    let replies = env.store.dialogue_replies(game, 0).await.unwrap();
    let reply = replies.last().unwrap();
    assert_eq!(
        (
            reply.request_id,
            reply.player_id,
            reply.stakeholder_id.clone(),
            reply.text.clone()
        ),
        (request_id, player, sid("mara"), done)
    );
    running.stop().await;
}

async fn a_job_whose_worker_died_is_finished_by_another_once(env: Env) {
    let (game, _, seq) = game(&env).await;
    let ctx = context(&env, game).await;
    // Worker A takes the job and dies in the middle of the model call.
    let victim = start(
        &env,
        scripted(5, 0.0, Duration::from_secs(3)),
        fast_config("victim-host-1"),
    );
    let id = env
        .storage
        .push(
            PrepareSceneReactions {
                game_id: game,
                scene_id: docks(),
                context_hash: ctx.clone(),
                conflicts: Vec::new(),
                world_version: seq,
            }
            .into(),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rec = env.storage.job(&id).await.unwrap().unwrap();
        if rec.lock_by.as_deref() == Some("victim-host-1")
            && (rec.status == "Running" || rec.status == "Queued")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the victim never took the job: {rec:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    victim.handle.abort();
    let _ = victim.handle.await;
    drop(victim.stop);
    // Worker B, another name, finds the orphan once A's heartbeats lapse.
    let rescuer = start(
        &env,
        scripted(5, 0.0, Duration::from_millis(100)),
        fast_config("rescuer-host-2"),
    );
    let rec = wait_finished(&env.storage, &id).await;
    assert_eq!(rec.status, "Done", "{rec:?}");
    assert_eq!(rec.lock_by.as_deref(), Some("rescuer-host-2"));
    assert!(rec.attempts >= 2, "{rec:?}");
    let counts = env
        .store
        .ready_counts(
            game,
            &docks(),
            &reaction_key(&ctx, ActionKind::Help),
            now_ms(),
        )
        .await
        .unwrap();
    assert_eq!(counts.get(&sid("brann")), Some(&3), "exactly one result");
    rescuer.stop().await;
}

async fn a_restarted_worker_with_the_same_name_hands_back_its_jobs(env: Env) {
    let (game, _, seq) = game(&env).await;
    let ctx = context(&env, game).await;
    let first = start(
        &env,
        scripted(6, 0.0, Duration::from_secs(3)),
        fast_config("same-host-7"),
    );
    let id = env
        .storage
        .push(
            PrepareSceneReactions {
                game_id: game,
                scene_id: docks(),
                context_hash: ctx.clone(),
                conflicts: Vec::new(),
                world_version: seq,
            }
            .into(),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while env
        .storage
        .job(&id)
        .await
        .unwrap()
        .unwrap()
        .lock_by
        .is_none()
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.handle.abort();
    let _ = first.handle.await;
    // Same name again (a container restarts with the same host and pid). SQLite refuses the
    // name for one heartbeat; the monitor restarts the worker until it registers.
    let second = start(
        &env,
        scripted(6, 0.0, Duration::from_millis(50)),
        fast_config("same-host-7"),
    );
    assert_eq!(wait_finished(&env.storage, &id).await.status, "Done");
    assert_eq!(
        env.store
            .ready_counts(
                game,
                &docks(),
                &reaction_key(&ctx, ActionKind::Help),
                now_ms()
            )
            .await
            .unwrap()
            .get(&sid("brann")),
        Some(&3)
    );
    second.stop().await;
}

async fn over_the_hard_budget_nothing_is_called_or_written(env: Env) {
    let (game, _, seq) = game(&env).await;
    let governed: Arc<dyn Provider> = Arc::new(Governor::new(
        scripted(7, 0.0, Duration::ZERO),
        Budgets {
            per_game: Some(Budget { soft: 0, hard: 0 }),
            ..Budgets::default()
        },
        None,
    ));
    let running = start(&env, governed.clone(), fast_config("budget-test-1"));
    let id = env
        .storage
        .push(
            GenerateSocialBundle {
                game_id: game,
                world_version: seq,
            }
            .into(),
        )
        .await
        .unwrap();
    let rec = wait_finished(&env.storage, &id).await;
    assert_eq!(
        rec.status, "Done",
        "not a dead letter: the game keeps its fallbacks"
    );
    assert!(
        env.cache
            .get_typed(&keys::social(game))
            .await
            .unwrap()
            .is_none()
    );
    let usage = governed.token_usage().unwrap();
    assert_eq!((usage[0].calls, usage[0].refused), (0, 1));
    let evs = events(&env, game).await;
    assert!(evs.iter().any(
        |e| matches!(e, GameEvent::JobFailed { error, dead: false, .. } if error.contains("budget"))
    ));
    running.stop().await;
}

async fn reactions_run_before_narration(env: Env) {
    let (game, _, seq) = game(&env).await;
    let ctx = context(&env, game).await;
    // Queue first, then start one worker that takes one job at a time.
    let narration = env
        .storage
        .push(
            NarratePhaseTransition {
                game_id: game,
                conflict_id: ConflictId::new("strike").unwrap(),
                phase_id: PhaseId::new("walkout").unwrap(),
                world_version: seq,
            }
            .into(),
        )
        .await
        .unwrap();
    let reaction = env
        .storage
        .push(
            PrepareSceneReactions {
                game_id: game,
                scene_id: docks(),
                context_hash: ctx,
                conflicts: Vec::new(),
                world_version: seq,
            }
            .into(),
        )
        .await
        .unwrap();
    let mut config = fast_config("priority-test-1");
    config.concurrency = 1;
    let running = start(&env, scripted(8, 0.0, Duration::ZERO), config);
    wait_finished(&env.storage, &narration).await;
    wait_finished(&env.storage, &reaction).await;
    let order: Vec<String> = events(&env, game)
        .await
        .into_iter()
        .filter_map(|e| match e {
            GameEvent::JobStarted { job_id, .. } => Some(job_id),
            _ => None,
        })
        .collect();
    assert_eq!(order, [reaction, narration]);
    running.stop().await;
}

async fn cron_is_opt_in_and_enqueues_cleanup(env: Env) {
    let mut config = fast_config("cron-test-1");
    config.run_cron = true;
    config.cleanup_schedule = "* * * * * *".into();
    let running = start(&env, scripted(9, 0.0, Duration::ZERO), config);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let jobs = env.storage.jobs(50).await.unwrap();
        if jobs
            .iter()
            .any(|j| matches!(j.job, Some(Job::CleanupExpiredActions(_))) && j.status == "Done")
        {
            break;
        }
        assert!(Instant::now() < deadline, "no cleanup ran: {jobs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.stop().await;
    let without = start(
        &env,
        scripted(9, 0.0, Duration::ZERO),
        fast_config("cron-test-2"),
    );
    let before = env.storage.jobs(1000).await.unwrap().len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        env.storage.jobs(1000).await.unwrap().len(),
        before,
        "no scheduler without run_cron"
    );
    without.stop().await;
}

/// The distributed deployment on a Redis of the test's own, which the test can stop.
async fn distributed_on(redis: &hotpath_testkit::RedisServer) -> Env {
    let pg = hotpath_testkit::fresh_postgres_database();
    Env {
        db: Db::Postgres(pg.clone()),
        storage: JobStorage::postgres(&pg).await.unwrap(),
        store: Arc::new(PostgresStore::connect(&pg).await.unwrap()),
        cache: Arc::new(
            RedisCache::connect(&redis.url(), Duration::from_millis(500))
                .await
                .unwrap(),
        ),
        stream: Arc::new(
            RedisStream::connect(&redis.url(), Duration::from_millis(500), 10_000)
                .await
                .unwrap(),
        ),
        _dir: None,
    }
}

/// The scripted model, counting the calls made to it; the first call can be held until the
/// test lets it go.
#[derive(Debug)]
struct Counted {
    inner: Arc<dyn Provider>,
    calls: std::sync::atomic::AtomicUsize,
    entered: std::sync::Mutex<Option<oneshot::Sender<()>>>,
    hold: tokio::sync::Mutex<Option<oneshot::Receiver<()>>>,
}

impl Counted {
    fn new(inner: Arc<dyn Provider>) -> Arc<Counted> {
        Arc::new(Counted {
            inner,
            calls: Default::default(),
            entered: Default::default(),
            hold: Default::default(),
        })
    }

    /// Holds the next call until the returned sender fires; the receiver fires when it starts.
    fn hold_next(&self) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (entered_tx, entered_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        *self.entered.lock().unwrap() = Some(entered_tx);
        *self.hold.try_lock().unwrap() = Some(release_rx);
        (entered_rx, release_tx)
    }

    fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl Provider for Counted {
    fn model(&self) -> &str {
        self.inner.model()
    }

    async fn complete(
        &self,
        request: &hotpath_background::llm::LlmRequest,
    ) -> Result<hotpath_background::llm::Completion, hotpath_background::llm::LlmError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(entered) = self.entered.lock().unwrap().take() {
            let _ = entered.send(());
        }
        let hold = self.hold.lock().await.take();
        if let Some(release) = hold {
            let _ = release.await;
        }
        self.inner.complete(request).await
    }

    async fn stream(
        &self,
        request: &hotpath_background::llm::LlmRequest,
    ) -> Result<hotpath_background::llm::TextStream, hotpath_background::llm::LlmError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.stream(request).await
    }
}

fn cache_jobs(game: GameId, seq: u64) -> Vec<Job> {
    vec![
        NarratePhaseTransition {
            game_id: game,
            conflict_id: ConflictId::new("strike").unwrap(),
            phase_id: scenario().conflicts[0].phases[1].id.clone(),
            world_version: seq,
        }
        .into(),
        GenerateSocialBundle {
            game_id: game,
            world_version: seq,
        }
        .into(),
    ]
}

/// Redis frozen (`SIGSTOP`, so calls hang instead of being refused): the jobs that write to the
/// cache wait without asking the model and without spending their tries; once Redis answers,
/// each asks once and writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_cache_pauses_its_jobs_without_model_calls() {
    let redis = hotpath_testkit::RedisServer::start();
    let env = distributed_on(&redis).await;
    let (game, _, seq) = game(&env).await;
    let model = Counted::new(scripted(3, 0.0, Duration::ZERO));
    let mut ids = Vec::new();
    for job in cache_jobs(game, seq) {
        ids.push(env.storage.push(job).await.unwrap());
    }
    redis.pause();
    let running = start(&env, model.clone(), fast_config("frozen-cache"));
    // Long enough for many tries at this config's backoff (20–100 ms): each would have paid.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(model.calls(), 0, "no model call while the cache is out");
    for id in &ids {
        let rec = env.storage.job(id).await.unwrap().unwrap();
        assert_ne!(
            rec.status, "Killed",
            "an outage does not dead-letter: {rec:?}"
        );
        assert_ne!(rec.status, "Done", "nothing could be written: {rec:?}");
    }
    redis.resume();
    for id in &ids {
        let rec = wait_finished(&env.storage, id).await;
        assert_eq!(rec.status, "Done", "{rec:?} {:?}", rec.reason());
    }
    assert_eq!(
        model.calls(),
        ids.len(),
        "one call per job once the cache is back"
    );
    let social = env.cache.get_typed(&keys::social(game)).await.unwrap();
    assert!(social.is_some(), "the social bundle was written");
    running.stop().await;
}

/// The cache dies between the model's answer and its write: the job waits for the cache and
/// writes the answer it already has — one call, not one per try.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_whose_write_failed_is_written_later_without_a_new_call() {
    let mut redis = hotpath_testkit::RedisServer::start();
    let env = distributed_on(&redis).await;
    let (game, _, seq) = game(&env).await;
    let model = Counted::new(scripted(4, 0.0, Duration::ZERO));
    let (entered, release) = model.hold_next();
    let job = cache_jobs(game, seq).remove(0);
    let id = env.storage.push(job).await.unwrap();
    let running = start(&env, model.clone(), fast_config("lost-write"));
    tokio::time::timeout(Duration::from_secs(20), entered)
        .await
        .expect("the job asks the model")
        .unwrap();
    redis.stop();
    release.send(()).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rec = env.storage.job(&id).await.unwrap().unwrap();
    assert_ne!(rec.status, "Killed", "{rec:?}");
    redis.restart();
    let rec = wait_finished(&env.storage, &id).await;
    assert_eq!(rec.status, "Done", "{rec:?} {:?}", rec.reason());
    assert_eq!(
        model.calls(),
        1,
        "the kept answer was written, not asked again"
    );
    let strike = ConflictId::new("strike").unwrap();
    let phase = scenario().conflicts[0].phases[1].id.clone();
    let narration = env
        .cache
        .get_typed(&keys::narration(game, &strike, &phase))
        .await
        .unwrap();
    assert!(narration.is_some(), "the narration was written");
    running.stop().await;
}

/// Runs one statement on the jobs' database, in its engine's dialect; `binds` are text.
async fn sql(env: &Env, sqlite: &str, postgres: &str, binds: &[&str]) {
    match &env.db {
        Db::Sqlite(path) => {
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sqlite.to_owned()));
            for b in binds {
                q = q.bind(*b);
            }
            q.execute(&pool).await.unwrap();
            pool.close().await;
        }
        Db::Postgres(url) => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            let mut q = sqlx::query(sqlx::AssertSqlSafe(postgres.to_owned()));
            for b in binds {
                q = q.bind(*b);
            }
            q.execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
}

/// Commits one action at `seq` that dispatches `job` under `id`, as the write path does: the
/// job and its coalescing guard in the action's transaction.
async fn dispatch(env: &Env, game: GameId, player: PlayerId, seq: u64, id: &str, job: Job) {
    let queued = hotpath_cache::store::QueuedJob {
        id: id.to_owned(),
        job,
        run_at: (now_ms() / 1000) as u64,
    };
    let item = hotpath_cache::store::BatchItem {
        game_id: game,
        seq,
        event: LoggedEvent::ActionApplied(AppliedAction {
            action_id: ActionId::generate(),
            player_id: player,
            scene_id: docks(),
            kind: ActionKind::Help,
            text: "Lend a hand.".into(),
            target: Some(sid("mara")),
            turn: 2,
            effects: Vec::new(),
        }),
        claim: Vec::new(),
        ready: None,
        idempotency: None,
        finish: Box::new(move |_| hotpath_cache::store::Finished {
            response: serde_json::json!({}),
            jobs: vec![queued.clone()],
            events: Vec::new(),
        }),
    };
    let outcomes = env.store.commit_batch(vec![item]).await;
    assert!(outcomes[0].is_ok(), "{:?}", outcomes[0].as_ref().err());
}

/// A job given up because each worker that took it stopped (here: one delivery allowed, and
/// its worker killed) gives its coalescing guard back at once, like any job that ends: the
/// next action that needs its work can ask for it again, instead of waiting out the guard's
/// ten minutes.
async fn a_job_given_up_for_its_deliveries_gives_back_its_guard(env: Env) {
    let mut env = env;
    env.storage = env.storage.clone().with_max_deliveries(1);
    let (game, player, seq) = game(&env).await;
    let id = ulid::Ulid::generate().to_string();
    dispatch(
        &env,
        game,
        player,
        seq + 1,
        &id,
        cache_jobs(game, seq).remove(0),
    )
    .await;
    assert_eq!(
        env.store.job_guards().await.unwrap(),
        1,
        "the action took the guard"
    );
    // The first worker takes the job and dies in the middle of the model call.
    let first = start(
        &env,
        scripted(12, 0.0, Duration::from_secs(3)),
        fast_config("deliveries-host-9"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while env
        .storage
        .job(&id)
        .await
        .unwrap()
        .unwrap()
        .lock_by
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "the first worker never took the job"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    first.handle.abort();
    let _ = first.handle.await;
    // Restarted under the same name, it hands the job back and is given it again: one
    // delivery too many, so the job is given up.
    let second = start(
        &env,
        scripted(12, 0.0, Duration::ZERO),
        fast_config("deliveries-host-9"),
    );
    let rec = wait_finished(&env.storage, &id).await;
    assert_eq!(rec.status, "Killed", "{rec:?}");
    assert!(
        rec.reason().is_some_and(|r| r.contains("delivered")),
        "{:?}",
        rec.reason()
    );
    assert_eq!(
        env.store.job_guards().await.unwrap(),
        0,
        "the dead job's guard is given back"
    );
    second.stop().await;
}

/// A dead letter older than the 5-minute job deadline (here: given up six minutes ago, while
/// the provider was down) runs again when an operator requeues it — not skipped as expired.
async fn a_requeued_dead_letter_older_than_the_deadline_runs_again(env: Env) {
    let (game, _, seq) = game(&env).await;
    let fresh = env
        .storage
        .push(cache_jobs(game, seq).remove(0))
        .await
        .unwrap();
    let old = ulid::Ulid::from_parts((now_ms() - 6 * 60 * 1000) as u64, 7).to_string();
    sql(
        &env,
        "UPDATE Jobs SET id = ?1, status = 'Killed', attempts = max_attempts, \
         last_result = '{\"Err\":\"narrate_phase_transition: provider down\"}', \
         done_at = strftime('%s', 'now') - 300 WHERE id = ?2",
        "UPDATE apalis.jobs SET id = $1, status = 'Killed', attempts = max_attempts, \
         last_result = '{\"Err\":\"narrate_phase_transition: provider down\"}', \
         done_at = now() - interval '5 minutes' WHERE id = $2",
        &[&old, &fresh],
    )
    .await;
    let dead = env.storage.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, old);
    let model = Counted::new(scripted(13, 0.0, Duration::ZERO));
    let running = start(&env, model.clone(), fast_config("requeue-old-1"));
    assert_eq!(
        env.storage
            .requeue(std::slice::from_ref(&old))
            .await
            .unwrap(),
        1
    );
    let rec = wait_finished(&env.storage, &old).await;
    assert_eq!(rec.status, "Done", "{rec:?}");
    assert_eq!(model.calls(), 1, "the requeued job ran: it asked the model");
    let strike = ConflictId::new("strike").unwrap();
    let phase = scenario().conflicts[0].phases[1].id.clone();
    assert!(
        env.cache
            .get_typed(&keys::narration(game, &strike, &phase))
            .await
            .unwrap()
            .is_some(),
        "and wrote its narration"
    );
    running.stop().await;
}

/// Workers stopped while a model call runs, past their shutdown timeout: the call is dropped,
/// and its token reservation is settled (charged: it had reached the provider) before
/// `worker::run` returns — the process may exit right after, and a reservation left in the
/// store would hold the day's budget until the day ends. The worker runs on a runtime of its
/// own, dropped as soon as `run` returns, as a process's is when it exits.
fn a_shutdown_mid_call_settles_its_reservation(distributed_deployment: bool) {
    let worker_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (db, dir, game) = worker_rt.block_on(async {
        let env = match distributed_deployment {
            true => distributed().await,
            false => embedded().await,
        };
        let (game, _, seq) = game(&env).await;
        let model = scripted(14, 0.0, Duration::from_secs(30));
        let limited = hotpath_background::llm::limit::Limited::new(model, 4, 0.0);
        let governed: Arc<dyn Provider> = Arc::new(
            Governor::new(
                Arc::new(limited),
                Budgets {
                    per_game: Some(Budget {
                        soft: 1_000_000,
                        hard: 1_000_000,
                    }),
                    ..Budgets::default()
                },
                None,
            )
            .with_spend(Arc::new(hotpath_cache::spend::StoreSpend(
                env.store.clone(),
            ))),
        );
        let mut config = fast_config("shutdown-settles-1");
        config.shutdown_timeout = Duration::from_millis(300);
        let running = start(&env, governed, config);
        env.storage
            .push(cache_jobs(game, seq).remove(0))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while game_spend(&*env.store, game).await.1 == 0 {
            assert!(Instant::now() < deadline, "the job never reserved its call");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        running.stop().await;
        let Env { db, _dir, .. } = env;
        (db, _dir, game)
    });
    drop(worker_rt);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store: Arc<dyn Store> = match &db {
            Db::Sqlite(path) => Arc::new(SqliteStore::open(path).await.unwrap()),
            Db::Postgres(url) => Arc::new(PostgresStore::connect(url).await.unwrap()),
        };
        let (used, reserved) = game_spend(&*store, game).await;
        assert_eq!(reserved, 0, "the dropped call's reservation is settled");
        assert!(used > 0, "and charged: it had reached the provider");
    });
    drop(dir);
}

/// The game's (used, reserved) tokens today.
async fn game_spend(store: &dyn Store, game: GameId) -> (u64, u64) {
    let scope = format!("game:{game}");
    store
        .tokens_spent(hotpath_cache::spend::day_of(now_ms()), 1000)
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.scope == scope)
        .map_or((0, 0), |s| (s.used, s.reserved))
}

#[test]
fn embedded_a_shutdown_mid_call_settles_its_reservation() {
    a_shutdown_mid_call_settles_its_reservation(false);
}

#[test]
fn distributed_a_shutdown_mid_call_settles_its_reservation() {
    a_shutdown_mid_call_settles_its_reservation(true);
}

macro_rules! both_deployments {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
              async fn $case() { super::$case(super::embedded().await).await })*
        }
        mod distributed {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
              async fn $case() { super::$case(super::distributed().await).await })*
        }
    };
}

both_deployments!(
    every_kind_writes_what_the_hot_path_reads,
    same_job_twice_leaves_one_result,
    malformed_output_is_dead_lettered_and_writes_nothing,
    dialogue_streams_in_order_then_done_then_log,
    a_job_whose_worker_died_is_finished_by_another_once,
    a_restarted_worker_with_the_same_name_hands_back_its_jobs,
    over_the_hard_budget_nothing_is_called_or_written,
    reactions_run_before_narration,
    cron_is_opt_in_and_enqueues_cleanup,
    a_job_given_up_for_its_deliveries_gives_back_its_guard,
    a_requeued_dead_letter_older_than_the_deadline_runs_again,
);
