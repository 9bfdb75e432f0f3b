//! Per-action SQL is bounded by the game, not the table: with 100,000 ready rows in other games
//! and in other contexts of the same scene, an action's claim and ready counts still find the
//! right rows, and their query plans go through the partial indexes (never a scan of the
//! planned table). Both engines.

use hotpath_cache::events::{AppliedAction, Effect, LoggedEvent};
use hotpath_cache::ids::*;
use hotpath_cache::model::ActionKind;
use hotpath_cache::scenario::builtin;
use hotpath_cache::state::ContextHash;
use hotpath_cache::store::*;
use hotpath_cache::time::now_ms;

const OTHER_ROWS: i64 = 100_000;

/// Half the rows in other games, half in this game's docks with other contexts (actions) or
/// other scenes (reactions). `$1` game, `$2` now.
const FILL_PG: &str = "
INSERT INTO planned_stakeholder_actions (id, game_id, scene_id, stakeholder_id, kind, payload,
    priority, status, expires_at, dedupe_key, reacts_to, context_hash, world_version, produced_at,
    model, prompt_version, created_at)
SELECT gen_random_uuid()::text,
    CASE WHEN g % 2 = 0 THEN 'other-' || (g % 97) ELSE $1 END,
    CASE WHEN g % 4 = 3 THEN 'market' ELSE 'docks' END,
    (ARRAY['mara','brann','iris'])[g % 3 + 1],
    CASE WHEN g % 4 = 3 THEN 'reaction' ELSE 'action' END,
    '{\"behaviour\":\"b\",\"intent\":\"i\",\"line\":\"l\"}', 9, 'ready', $2 + 3600000,
    'fill:' || g, NULL, 'ctx-' || (g % 1000), 0, $2, 'm', 'p', $2
FROM generate_series(1, 100000) g";

const FILL_SQLITE: &str = "
WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < 100000)
INSERT INTO planned_stakeholder_actions (id, game_id, scene_id, stakeholder_id, kind, payload,
    priority, status, expires_at, dedupe_key, reacts_to, context_hash, world_version, produced_at,
    model, prompt_version, created_at)
SELECT lower(hex(randomblob(16))),
    CASE WHEN g % 2 = 0 THEN 'other-' || (g % 97) ELSE $1 END,
    CASE WHEN g % 4 = 3 THEN 'market' ELSE 'docks' END,
    CASE g % 3 WHEN 0 THEN 'mara' WHEN 1 THEN 'brann' ELSE 'iris' END,
    CASE WHEN g % 4 = 3 THEN 'reaction' ELSE 'action' END,
    '{\"behaviour\":\"b\",\"intent\":\"i\",\"line\":\"l\"}', 9, 'ready', $2 + 3600000,
    'fill:' || g, NULL, 'ctx-' || (g % 1000), 0, $2, 'm', 'p', $2
FROM s";

fn sid(s: &str) -> StakeholderId {
    StakeholderId::new(s).unwrap()
}

fn planned(game: GameId, who: &str, kind: PlannedKind, key: &str) -> PlannedAction {
    let now = now_ms();
    PlannedAction {
        id: PlannedActionId::generate(),
        game_id: game,
        scene_id: SceneId::new("docks").unwrap(),
        stakeholder_id: sid(who),
        kind,
        payload: StakeholderMove {
            behaviour: "b".into(),
            intent: "i".into(),
            line: key.into(),
        },
        priority: 1,
        status: PlannedStatus::Ready,
        expires_at: now + 60_000,
        dedupe_key: format!("{game}:{key}"),
        reacts_to: None,
        provenance: Provenance {
            context_hash: ContextHash("c1".into()),
            world_version: 1,
            produced_at: now,
            model: "m".into(),
            prompt_version: "p".into(),
        },
        created_at: now,
    }
}

use hotpath_cache::model::{
    PlannedAction, PlannedKind, PlannedStatus, Provenance, StakeholderMove,
};

/// A writer's reservoir load and an action's commit, through the batch, must find this
/// context's rows among the 100,000 others.
async fn claims_the_right_rows(store: &dyn Store, game: GameId) {
    let mine = planned(game, "mara", PlannedKind::Action, "mine");
    let reaction = planned(game, "brann", PlannedKind::Reaction, "reaction");
    let spare = planned(game, "iris", PlannedKind::Action, "spare");
    let rows = [mine.clone(), reaction.clone(), spare.clone()];
    assert_eq!(store.insert_planned(&rows).await.unwrap(), 3);
    let stakeholders = vec![sid("mara"), sid("brann"), sid("iris")];
    let mut loaded = store
        .ready_rows(
            game,
            &SceneId::new("docks").unwrap(),
            &ContextHash("c1".into()),
            &stakeholders,
            32,
            now_ms(),
        )
        .await
        .unwrap();
    loaded.sort_by_key(|p| p.payload.line.clone());
    let lines: Vec<&str> = loaded.iter().map(|p| p.payload.line.as_str()).collect();
    assert_eq!(lines, vec!["mine", "reaction", "spare"]);
    let item = BatchItem {
        game_id: game,
        seq: 1,
        event: LoggedEvent::ActionApplied(AppliedAction {
            action_id: ActionId::generate(),
            player_id: PlayerId::generate(),
            scene_id: SceneId::new("docks").unwrap(),
            kind: ActionKind::Observe,
            text: "look".into(),
            target: None,
            turn: 1,
            effects: Vec::<Effect>::new(),
        }),
        claim: vec![mine.clone(), reaction.clone()],
        ready: None,
        idempotency: None,
        finish: Box::new(|c: Claimed| Finished {
            response: serde_json::json!({
                "claimed": c.claimed.iter().map(|p| p.payload.line.clone()).collect::<Vec<_>>(),
            }),
            jobs: Vec::new(),
            events: Vec::new(),
        }),
    };
    let out = store.commit_batch(vec![item]).await;
    let answer = out.into_iter().next().unwrap().unwrap().response;
    assert_eq!(answer["claimed"], serde_json::json!(["mine", "reaction"]));
    for (row, status) in [
        (&mine, PlannedStatus::Consumed),
        (&reaction, PlannedStatus::Consumed),
        (&spare, PlannedStatus::Ready),
    ] {
        assert_eq!(store.planned(row.id).await.unwrap().unwrap().status, status);
    }
}

fn assert_indexed(name: &str, plan: &str, scan_marker: &str) {
    assert!(
        plan.contains("planned_ready"),
        "{name} does not use the partial index:\n{plan}"
    );
    assert!(
        !plan.contains(scan_marker),
        "{name} scans the planned table:\n{plan}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_action_sql_is_bounded_by_the_game() {
    let url = hotpath_testkit::fresh_postgres_database();
    let store = PostgresStore::connect(&url).await.unwrap();
    let game = GameId::generate();
    store
        .create_game(game, &builtin()["harbor-strike"])
        .await
        .unwrap();
    // The fill is test set-up, not a hot statement: the store's 5 s statement timeout must not
    // cut it on a loaded machine.
    let mut fill = store.pool().begin().await.unwrap();
    sqlx::query("SET LOCAL statement_timeout = 0")
        .execute(&mut *fill)
        .await
        .unwrap();
    sqlx::query(FILL_PG)
        .bind(game.to_string())
        .bind(now_ms())
        .execute(&mut *fill)
        .await
        .unwrap();
    fill.commit().await.unwrap();
    sqlx::query("ANALYZE planned_stakeholder_actions")
        .execute(store.pool())
        .await
        .unwrap();
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM planned_stakeholder_actions")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(count, OTHER_ROWS);
    claims_the_right_rows(&store, game).await;

    for (name, sql) in PostgresStore::planned_statements() {
        let query = sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")));
        // claim: item, game, scene, stakeholder, context arrays, now; load: game, scene,
        // context, stakeholder array, now, limit.
        let query = if name == "claim" {
            query
                .bind(vec![0i32, 0])
                .bind(vec![game.to_string(), game.to_string()])
                .bind(vec!["docks", "docks"])
                .bind(vec!["mara", "brann"])
                .bind(vec!["c1", "c1"])
                .bind(now_ms())
        } else {
            query
                .bind(game.to_string())
                .bind("docks")
                .bind("c1")
                .bind(vec!["mara", "brann"])
                .bind(now_ms())
                .bind(32i64)
        };
        let rows: Vec<(String,)> = query.fetch_all(store.pool()).await.unwrap();
        let plan: Vec<String> = rows.into_iter().map(|r| r.0).collect();
        assert_indexed(
            name,
            &plan.join("\n"),
            "Seq Scan on planned_stakeholder_actions",
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_action_sql_is_bounded_by_the_game() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("hotpath.sqlite"))
        .await
        .unwrap();
    let game = GameId::generate();
    store
        .create_game(game, &builtin()["harbor-strike"])
        .await
        .unwrap();
    sqlx::query(FILL_SQLITE)
        .bind(game.to_string())
        .bind(now_ms())
        .execute(store.pool())
        .await
        .unwrap();
    claims_the_right_rows(&store, game).await;

    for (name, sql) in SqliteStore::planned_statements() {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let query = sqlx::query_as(sqlx::AssertSqlSafe(explain))
            .bind(game.to_string())
            .bind("docks");
        // claim: game, scene, stakeholders, context, now; ready: game, scene, context, now;
        // load: game, scene, context, stakeholder, now, limit.
        let query = match name {
            "claim" => query.bind("[\"mara\",\"brann\"]").bind("c1").bind(now_ms()),
            "load" => query.bind("c1").bind("mara").bind(now_ms()).bind(32i64),
            _ => query.bind("c1").bind(now_ms()),
        };
        let rows: Vec<(i64, i64, i64, String)> = query.fetch_all(store.pool()).await.unwrap();
        let plan: Vec<String> = rows.into_iter().map(|r| r.3).collect();
        let plan = plan.join("\n");
        // SQLite says `SCAN p` (or the table name) for a full scan of a table.
        assert_indexed(name, &plan, "SCAN planned_stakeholder_actions");
        assert!(
            !plan.lines().any(|l| l.trim() == "SCAN p"),
            "{name}:\n{plan}"
        );
        // A search by status alone walks every ready row of every game.
        assert!(!plan.contains("planned_expiry"), "{name}:\n{plan}");
    }
}
