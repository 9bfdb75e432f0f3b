//! The store conformance suite: every case runs against SQLite and against a real PostgreSQL
//! server started by the test harness.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use hotpath_cache::events::{AppliedAction, Effect, LoggedEvent};
use hotpath_cache::ids::*;
use hotpath_cache::model::*;
use hotpath_cache::scenario::builtin;
use hotpath_cache::state::ContextHash;
use hotpath_cache::store::*;
use hotpath_cache::time::now_ms;

struct Fixture {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("hotpath.sqlite"))
        .await
        .unwrap();
    Fixture {
        store: Arc::new(store),
        _dir: Some(dir),
    }
}

async fn postgres() -> Fixture {
    let url = hotpath_testkit::fresh_postgres_database();
    let store = PostgresStore::connect(&url).await.unwrap();
    Fixture {
        store: Arc::new(store),
        _dir: None,
    }
}

fn sid(s: &str) -> StakeholderId {
    StakeholderId::new(s).unwrap()
}

fn scene(s: &str) -> SceneId {
    SceneId::new(s).unwrap()
}

fn ctx(s: &str) -> ContextHash {
    ContextHash(s.into())
}

fn planned(
    game: GameId,
    scene_id: &str,
    who: &str,
    context: &str,
    priority: i32,
    key: &str,
) -> PlannedAction {
    let now = now_ms();
    PlannedAction {
        id: PlannedActionId::generate(),
        game_id: game,
        scene_id: scene(scene_id),
        stakeholder_id: sid(who),
        kind: PlannedKind::Action,
        payload: StakeholderMove {
            behaviour: format!("{who} acts ({key})"),
            intent: "support".into(),
            line: format!("{who} says {key}"),
        },
        priority,
        status: PlannedStatus::Ready,
        expires_at: now + 60_000,
        dedupe_key: format!("{game}:{key}"),
        reacts_to: None,
        provenance: Provenance {
            context_hash: ctx(context),
            world_version: 1,
            produced_at: now,
            model: "scripted".into(),
            prompt_version: "v1".into(),
        },
        created_at: now,
    }
}

fn joined(name: &str) -> LoggedEvent {
    LoggedEvent::PlayerJoined {
        player_id: PlayerId::generate(),
        name: name.into(),
    }
}

fn claim_query(game: GameId, who: &[&str], context: &str) -> ClaimQuery {
    ClaimQuery {
        game_id: game,
        scene_id: scene("docks"),
        stakeholders: who.iter().map(|w| sid(w)).collect(),
        context_hash: ctx(context),
        now: now_ms(),
    }
}

async fn new_game(store: &dyn Store) -> GameId {
    let game = GameId::generate();
    store
        .create_game(game, &builtin()["harbor-strike"])
        .await
        .unwrap();
    game
}

mod suite {
    use super::*;

    pub async fn games_and_players(f: Fixture) {
        let s = &*f.store;
        s.ping().await.unwrap();
        let game = new_game(s).await;
        let record = s.game(game).await.unwrap().unwrap();
        assert_eq!(record.scenario, builtin()["harbor-strike"]);
        assert!(s.game(GameId::generate()).await.unwrap().is_none());

        let hash = hash_token("secret-token");
        assert_ne!(hash, "secret-token", "tokens are stored hashed");
        let player = s.add_player(game, "Ada", &hash).await.unwrap();
        assert_eq!(
            s.player_by_token_hash(&hash).await.unwrap(),
            Some(player.clone())
        );
        assert_eq!(player.game_id, game);
        assert!(
            s.player_by_token_hash(&hash_token("other"))
                .await
                .unwrap()
                .is_none()
        );

        s.close().await;
        let err = s.game(game).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Unavailable(_)),
            "a closed store is unavailable: {err}"
        );
    }

    pub async fn event_log_seq_is_unique(f: Fixture) {
        let s = &*f.store;
        let game = new_game(s).await;
        s.append_event(game, 1, &joined("a")).await.unwrap();
        s.append_event(game, 2, &joined("b")).await.unwrap();
        let err = s.append_event(game, 2, &joined("c")).await.unwrap_err();
        assert!(matches!(err, StoreError::SeqTaken { seq: 2, .. }), "{err}");
        let all = s.events(game, 0).await.unwrap();
        assert_eq!(
            all.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(all[1].1, joined_name(&all[1].1, "b"));
        assert_eq!(s.events(game, 1).await.unwrap().len(), 1);
        // Another game's log is separate.
        let other = new_game(s).await;
        s.append_event(other, 1, &joined("x")).await.unwrap();
        assert_eq!(s.events(game, 0).await.unwrap().len(), 2);
    }

    fn joined_name(e: &LoggedEvent, expect: &str) -> LoggedEvent {
        match e {
            LoggedEvent::PlayerJoined { name, .. } => assert_eq!(name, expect),
            other => panic!("unexpected {other:?}"),
        }
        e.clone()
    }

    pub async fn append_next_under_contention(f: Fixture) {
        let s = f.store.clone();
        let game = new_game(&*s).await;
        let tasks: Vec<_> = (0..12)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move {
                    s.append_event_next(game, &joined(&format!("p{i}")))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.push(t.await.unwrap());
        }
        seqs.sort();
        assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
    }

    pub async fn append_once_by_dedupe_key(f: Fixture) {
        let s = &*f.store;
        let game = new_game(s).await;
        s.append_event(game, 1, &joined("a")).await.unwrap();
        assert_eq!(
            s.append_event_once(game, &joined("reply"), "dialogue:r1")
                .await
                .unwrap(),
            Some(2)
        );
        assert_eq!(
            s.append_event_once(game, &joined("reply again"), "dialogue:r1")
                .await
                .unwrap(),
            None
        );
        // The same key in another game is another event.
        let other = new_game(s).await;
        assert_eq!(
            s.append_event_once(other, &joined("reply"), "dialogue:r1")
                .await
                .unwrap(),
            Some(1)
        );
        assert_eq!(
            s.append_event_once(game, &joined("other"), "dialogue:r2")
                .await
                .unwrap(),
            Some(3)
        );
        assert_eq!(s.events(game, 0).await.unwrap().len(), 3);
        // Concurrent duplicates: one entry.
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let s = f.store.clone();
                tokio::spawn(async move {
                    s.append_event_once(game, &joined("race"), "dialogue:r3")
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut appended = 0;
        for t in tasks {
            appended += t.await.unwrap().is_some() as usize;
        }
        assert_eq!(appended, 1);
        assert_eq!(s.events(game, 0).await.unwrap().len(), 4);
    }

    pub async fn insert_planned_is_idempotent(f: Fixture) {
        let s = &*f.store;
        let game = new_game(s).await;
        let a = planned(game, "docks", "mara", "c1", 1, "same");
        assert_eq!(s.insert_planned(std::slice::from_ref(&a)).await.unwrap(), 1);
        let mut again = planned(game, "docks", "mara", "c1", 1, "same");
        again.payload.line = "different".into();
        assert!(
            s.insert_planned(&[again.clone()]).await.unwrap() == 0,
            "same dedupe key, no second row"
        );
        assert!(s.planned_exists(&a.dedupe_key).await.unwrap());
        assert!(!s.planned_exists("no-such-key").await.unwrap());
        assert_eq!(s.planned(a.id).await.unwrap().unwrap(), a);
        assert!(s.planned(again.id).await.unwrap().is_none());
    }

    /// A scene preparation's rows go in a few statements; duplicates (within the call or of
    /// stored rows) are skipped, and the count says how many went in.
    pub async fn insert_planned_writes_many_rows_at_once(f: Fixture) {
        let s = &*f.store;
        let game = new_game(s).await;
        let stored = planned(game, "docks", "mara", "c1", 1, "row-7");
        assert_eq!(
            s.insert_planned(std::slice::from_ref(&stored))
                .await
                .unwrap(),
            1
        );
        // More rows than one statement takes, with the stored key and a key given twice.
        let mut rows: Vec<PlannedAction> = (0..450)
            .map(|n| planned(game, "docks", "mara", "c1", 1, &format!("row-{n}")))
            .collect();
        rows.push(planned(game, "docks", "mara", "c1", 1, "row-449"));
        assert_eq!(s.insert_planned(&rows).await.unwrap(), 449);
        assert_eq!(
            s.insert_planned(&rows).await.unwrap(),
            0,
            "all there already"
        );
        assert_eq!(s.insert_planned(&[]).await.unwrap(), 0);
        let fetched = s.planned(rows[300].id).await.unwrap().unwrap();
        assert_eq!(fetched, rows[300], "every column round-trips");
        let counts = s
            .ready_counts(game, &scene("docks"), &ctx("c1"), now_ms())
            .await
            .unwrap();
        assert_eq!(counts[&sid("mara")], 450);
    }

    /// Maintenance runs in chunks (each a short turn at SQLite's writer) until nothing is left.
    pub async fn maintenance_clears_more_than_one_chunk(f: Fixture) {
        let s = &*f.store;
        let game = new_game(s).await;
        let rows: Vec<PlannedAction> = (0..1_203)
            .map(|n| {
                let mut p = planned(game, "docks", "iris", "c1", 1, &format!("old-{n}"));
                p.expires_at = now_ms() - 1;
                p.created_at = now_ms() - 10_000;
                p
            })
            .collect();
        assert_eq!(s.insert_planned(&rows).await.unwrap(), 1_203);
        assert_eq!(s.expire_planned(now_ms()).await.unwrap(), 1_203);
        assert_eq!(s.expire_planned(now_ms()).await.unwrap(), 0);
        assert_eq!(s.delete_spent_planned(now_ms()).await.unwrap(), 1_203);
        assert!(s.planned(rows[0].id).await.unwrap().is_none());
    }

    pub async fn claim_takes_the_best_ready_action_per_stakeholder(f: Fixture) {
        let s = &*f.store;
        let game = new_game(s).await;
        let low = planned(game, "docks", "mara", "c1", 1, "low");
        let high = planned(game, "docks", "mara", "c1", 5, "high");
        let old_equal = planned(game, "docks", "brann", "c1", 3, "brann-old");
        let mut new_equal = planned(game, "docks", "brann", "c1", 3, "brann-new");
        new_equal.created_at += 10;
        let wrong_context = planned(game, "docks", "iris", "c2", 9, "iris-c2");
        let mut expired = planned(game, "docks", "iris", "c1", 9, "iris-expired");
        expired.expires_at = now_ms() - 1;
        let other_scene = planned(game, "harbor-office", "iris", "c1", 9, "iris-office");
        let mut reaction = planned(game, "docks", "iris", "old-context", 2, "iris-reaction");
        reaction.kind = PlannedKind::Reaction;
        reaction.reacts_to = Some(1);
        let other_game = planned(GameId::generate(), "docks", "mara", "c1", 99, "other-game");
        for a in [
            &low,
            &high,
            &new_equal,
            &old_equal,
            &wrong_context,
            &expired,
            &other_scene,
            &reaction,
            &other_game,
        ] {
            assert_eq!(s.insert_planned(std::slice::from_ref(a)).await.unwrap(), 1);
        }

        let got = s
            .claim(&claim_query(game, &["mara", "brann", "iris", "kest"], "c1"))
            .await
            .unwrap();
        let mut ids: Vec<_> = got.iter().map(|a| a.dedupe_key.clone()).collect();
        ids.sort();
        let mut want: Vec<_> = [&high, &old_equal]
            .iter()
            .map(|a| a.dedupe_key.clone())
            .collect();
        want.sort();
        assert_eq!(
            ids, want,
            "priority first, then age; only rows made for this very key (a reaction made for \
             another context is never served)"
        );
        assert!(got.iter().all(|a| a.status == PlannedStatus::Consumed));
        assert_eq!(
            s.planned(high.id).await.unwrap().unwrap().status,
            PlannedStatus::Consumed
        );

        let next = s
            .claim(&claim_query(game, &["mara", "brann", "iris"], "c1"))
            .await
            .unwrap();
        let keys: BTreeSet<_> = next.iter().map(|a| a.dedupe_key.clone()).collect();
        assert_eq!(
            keys,
            BTreeSet::from([low.dedupe_key.clone(), new_equal.dedupe_key.clone()])
        );
        assert!(
            s.claim(&claim_query(game, &["mara", "brann", "iris"], "c1"))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            s.planned(wrong_context.id).await.unwrap().unwrap().status,
            PlannedStatus::Ready
        );
        assert_eq!(
            s.planned(other_game.id).await.unwrap().unwrap().status,
            PlannedStatus::Ready
        );
    }

    /// 16 concurrent claimers, 4 ready actions: each claimed exactly once.
    pub async fn claim_race(f: Fixture) {
        let s = f.store.clone();
        let game = new_game(&*s).await;
        for (who, n) in [("mara", 0), ("mara", 1), ("brann", 0), ("brann", 1)] {
            s.insert_planned(&[planned(game, "docks", who, "c1", n, &format!("{who}-{n}"))])
                .await
                .unwrap();
        }
        let barrier = Arc::new(tokio::sync::Barrier::new(16));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (s, barrier) = (s.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let mut mine = Vec::new();
                    loop {
                        let got = s
                            .claim(&claim_query(game, &["mara", "brann"], "c1"))
                            .await
                            .unwrap();
                        if got.is_empty() {
                            return mine;
                        }
                        mine.extend(got.into_iter().map(|a| a.id));
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let unique: BTreeSet<_> = all.iter().collect();
        assert_eq!(all.len(), 4, "claimed {all:?}");
        assert_eq!(unique.len(), 4, "an action was claimed twice: {all:?}");
    }

    fn applied(game_scene: &str) -> LoggedEvent {
        LoggedEvent::ActionApplied(AppliedAction {
            action_id: ActionId::generate(),
            player_id: PlayerId::generate(),
            scene_id: scene(game_scene),
            kind: ActionKind::Say,
            text: "hello".into(),
            target: None,
            turn: 1,
            effects: vec![Effect::Standing {
                stakeholder_id: sid("mara"),
                delta: 1,
            }],
        })
    }

    /// A batch item: `say` in the docks, taking no precomputed row, answering with what it
    /// took and publishing one stream event.
    fn item(game: GameId, seq: u64, key: Option<&IdempotencyKey>) -> BatchItem {
        item_taking(game, seq, key, Vec::new())
    }

    /// [`item`] taking the rows its writer picked, with the writer's count of what is left.
    fn item_taking(
        game: GameId,
        seq: u64,
        key: Option<&IdempotencyKey>,
        claim: Vec<PlannedAction>,
    ) -> BatchItem {
        BatchItem {
            game_id: game,
            seq,
            event: applied("docks"),
            claim,
            ready: Some(std::collections::BTreeMap::from([(sid("mara"), 1)])),
            idempotency: key.cloned(),
            finish: Box::new(move |c: Claimed| Finished {
                response: serde_json::json!({
                    "seq": seq,
                    "claimed": c.claimed.iter().map(|p| p.dedupe_key.clone()).collect::<Vec<_>>(),
                    "ready": c.ready.map(|r| r.get(&sid("mara")).copied().unwrap_or(0)),
                }),
                jobs: Vec::new(),
                events: vec![hotpath_cache::events::GameEvent::ContentReady {
                    what: format!("answer {seq}"),
                    location: "docks".into(),
                    job_kind: None,
                    lag_ms: None,
                }],
            }),
        }
    }

    async fn seqs_of(s: &dyn Store, game: GameId) -> Vec<u64> {
        s.events(game, 0)
            .await
            .unwrap()
            .iter()
            .map(|e| e.0)
            .collect()
    }

    fn key(player: PlayerId, k: &str) -> IdempotencyKey {
        IdempotencyKey {
            player_id: player,
            key: k.into(),
            request_hash: format!("hash-{k}"),
        }
    }

    pub async fn commit_batch_is_one_transaction(f: Fixture) {
        let s = &*f.store;
        let game = new_game(s).await;
        let player = s.add_player(game, "Ada", &hash_token("t")).await.unwrap();
        let a = planned(game, "docks", "mara", "c1", 2, "a");
        let b = planned(game, "docks", "mara", "c1", 1, "b");
        let c = planned(game, "docks", "mara", "c1", 1, "c");
        for p in [&a, &b, &c] {
            s.insert_planned(std::slice::from_ref(p)).await.unwrap();
        }

        // The seq is taken: nothing of the item survives.
        s.append_event(game, 1, &joined("first")).await.unwrap();
        let k1 = key(player.id, "k1");
        let out = s
            .commit_batch(vec![item_taking(game, 1, Some(&k1), vec![a.clone()])])
            .await;
        assert!(matches!(out[0], Err(ItemError::LostRace)), "{:?}", out[0]);
        assert_eq!(
            s.planned(a.id).await.unwrap().unwrap().status,
            PlannedStatus::Ready
        );
        assert!(
            s.idempotent_response(player.id, "k1")
                .await
                .unwrap()
                .is_none()
        );
        let outbox = s
            .stream_events_after(game, hotpath_cache::stream::StreamId { ms: 0, seq: 0 }, 100)
            .await
            .unwrap();
        assert!(outbox.events.is_empty());
        assert_eq!(outbox.last_seq, 1);

        // Two actions of one game in one batch: each takes the row its writer picked, and
        // each answer is built from its own rows and count.
        let k2 = key(player.id, "k2");
        let out = s
            .commit_batch(vec![
                item_taking(game, 2, Some(&k1), vec![a.clone()]),
                item_taking(game, 3, Some(&k2), vec![b.clone()]),
            ])
            .await;
        let answers: Vec<serde_json::Value> =
            out.into_iter().map(|o| o.unwrap().response).collect();
        let claimed = |v: &serde_json::Value| v["claimed"][0].as_str().unwrap().to_owned();
        assert_eq!(claimed(&answers[0]), a.dedupe_key);
        assert_eq!(claimed(&answers[1]), b.dedupe_key);
        assert_eq!(answers[1]["ready"], 1);
        for (row, status) in [
            (&a, PlannedStatus::Consumed),
            (&b, PlannedStatus::Consumed),
            (&c, PlannedStatus::Ready),
        ] {
            assert_eq!(s.planned(row.id).await.unwrap().unwrap().status, status);
        }
        let stored = s
            .idempotent_response(player.id, "k2")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (stored.request_hash.as_str(), &stored.response),
            ("hash-k2", &answers[1])
        );
        assert_eq!(seqs_of(s, game).await, vec![1, 2, 3]);
        let outbox = s
            .stream_events_after(game, hotpath_cache::stream::StreamId { ms: 2, seq: 0 }, 100)
            .await
            .unwrap();
        let ids: Vec<String> = outbox.events.iter().map(|(id, _)| id.to_string()).collect();
        assert_eq!(ids, vec!["3-0"], "the outbox after 2-0 holds 3-0");
        assert_eq!(outbox.last_seq, 3);

        // The same key again, beside an innocent item of another game: only the duplicate
        // fails, and its event is not appended.
        let other = new_game(s).await;
        let out = s
            .commit_batch(vec![item(game, 4, Some(&k2)), item(other, 1, None)])
            .await;
        assert!(
            matches!(out[0], Err(ItemError::IdempotencyKeyTaken)),
            "{:?}",
            out[0]
        );
        assert!(out[1].is_ok(), "{:?}", out[1]);
        assert_eq!(s.events(game, 0).await.unwrap().len(), 3);
        assert_eq!(s.events(other, 0).await.unwrap().len(), 1);

        // A lost race in one game does not hold back another game of the same batch.
        let out = s
            .commit_batch(vec![
                item(game, 3, None),
                item(game, 4, None),
                item(other, 2, None),
            ])
            .await;
        assert!(matches!(out[0], Err(ItemError::LostRace)));
        assert!(
            matches!(out[1], Err(ItemError::EarlierFailed)),
            "later items of that game too: {:?}",
            out[1]
        );
        assert!(out[2].is_ok());
        assert_eq!(
            s.events(game, 0).await.unwrap().len(),
            3,
            "no seq 4 without 3"
        );

        let recent = s.stream_events_since(0, 100).await.unwrap();
        assert!(recent.iter().any(|(g, id, _)| *g == other && id.ms == 2));
        assert_eq!(
            s.delete_stream_events(now_ms() + 1).await.unwrap(),
            recent.len() as u64
        );

        // Retention: records older than the cut are deleted, newer ones kept.
        assert_eq!(
            s.delete_idempotency_records(now_ms() - 60_000)
                .await
                .unwrap(),
            0
        );
        assert!(s.delete_idempotency_records(now_ms() + 1).await.unwrap() >= 2);
        assert!(
            s.idempotent_response(player.id, "k2")
                .await
                .unwrap()
                .is_none()
        );
    }

    /// A dialogue reply is recorded once per request, beside the log (which it leaves
    /// alone), and read back by the seq it answers.
    pub async fn dialogue_replies_are_recorded_once_beside_the_log(f: Fixture) {
        let s = &*f.store;
        let game = new_game(s).await;
        let reply = |seq: u64, text: &str| DialogueReply {
            game_id: game,
            request_id: RequestId::generate(),
            answers_seq: seq,
            player_id: PlayerId::generate(),
            stakeholder_id: sid("mara"),
            text: text.into(),
            created_at: now_ms(),
        };
        let (late, early) = (reply(9, "late"), reply(4, "early"));
        assert!(s.insert_dialogue_reply(&late).await.unwrap());
        assert!(s.insert_dialogue_reply(&early).await.unwrap());
        let mut again = late.clone();
        again.text = "a second copy".into();
        assert!(
            !s.insert_dialogue_reply(&again).await.unwrap(),
            "once per request"
        );
        assert_eq!(
            s.dialogue_replies(game, 0).await.unwrap(),
            vec![early, late.clone()]
        );
        assert_eq!(s.dialogue_replies(game, 4).await.unwrap(), vec![late]);
        assert!(
            s.dialogue_replies(new_game(s).await, 0)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            s.events(game, 0).await.unwrap().is_empty(),
            "the log is untouched"
        );
    }

    /// A row the writer picked that is no longer ready (another engine's commit took it)
    /// fails its item — and the later items of its game — without writing anything of them;
    /// other games of the batch commit.
    pub async fn commit_batch_refuses_a_row_taken_meanwhile(f: Fixture) {
        let s = &*f.store;
        let game = new_game(s).await;
        let other = new_game(s).await;
        let row = planned(game, "docks", "mara", "c1", 1, "only");
        let spare = planned(game, "docks", "brann", "c1", 1, "spare");
        s.insert_planned(&[row.clone(), spare.clone()])
            .await
            .unwrap();
        assert!(
            s.commit_batch(vec![item_taking(game, 1, None, vec![row.clone()])])
                .await[0]
                .is_ok()
        );
        let out = s
            .commit_batch(vec![
                item_taking(game, 2, None, vec![spare.clone(), row.clone()]),
                item(game, 3, None),
                item(other, 1, None),
            ])
            .await;
        match &out[0] {
            Err(ItemError::ClaimTaken { gone }) => assert_eq!(gone, &vec![row.id]),
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(out[1], Err(ItemError::EarlierFailed)),
            "{:?}",
            out[1]
        );
        assert!(out[2].is_ok(), "{:?}", out[2]);
        assert_eq!(seqs_of(s, game).await, vec![1]);
        assert_eq!(
            s.planned(spare.id).await.unwrap().unwrap().status,
            PlannedStatus::Ready,
            "the failed item's other row is untouched"
        );

        // Many engines picking the same row at once: one commit takes it.
        let contested = planned(game, "docks", "iris", "c1", 1, "contested");
        s.insert_planned(std::slice::from_ref(&contested))
            .await
            .unwrap();
        let mut games = Vec::new();
        for _ in 0..8 {
            games.push(new_game(s).await);
        }
        let tries = games.into_iter().map(|g| {
            let it = item_taking(g, 1, None, vec![contested.clone()]);
            async move { s.commit_batch(vec![it]).await.remove(0) }
        });
        let outcomes = futures::future::join_all(tries).await;
        let won = outcomes.iter().filter(|o| o.is_ok()).count();
        let refused = outcomes
            .iter()
            .filter(|o| matches!(o, Err(ItemError::ClaimTaken { .. })))
            .count();
        assert_eq!((won, refused), (1, 7), "{outcomes:?}");
    }

    /// An item that fails takes the later items of its game with it, in every mode of the
    /// batch: committing a later one would leave a hole at the failed seq (and a second copy
    /// once its writer applies it again).
    pub async fn commit_batch_never_commits_past_a_failed_item(f: Fixture) {
        let s = &*f.store;
        let game = new_game(s).await;
        let other = new_game(s).await;
        let player = s.add_player(game, "Ada", &hash_token("t")).await.unwrap();
        let k1 = key(player.id, "k1");
        assert!(s.commit_batch(vec![item(game, 1, Some(&k1))]).await[0].is_ok());

        // A retry of k1 applied at seq 2, then another player's action at seq 3: the batch
        // falls back to one item at a time for the duplicate key; seq 3 must not commit.
        let out = s
            .commit_batch(vec![
                item(game, 2, Some(&k1)),
                item(other, 1, None),
                item(game, 3, None),
            ])
            .await;
        assert!(
            matches!(out[0], Err(ItemError::IdempotencyKeyTaken)),
            "{:?}",
            out[0]
        );
        assert!(out[1].is_ok(), "another game commits: {:?}", out[1]);
        assert!(
            matches!(out[2], Err(ItemError::EarlierFailed)),
            "{:?}",
            out[2]
        );
        assert_eq!(seqs_of(s, game).await, vec![1], "no seq 3 without seq 2");

        // Two items at one (game, seq) in one batch (a retiring writer overlapping its
        // successor): the first holds it, the second and what follows it lose.
        let out = s
            .commit_batch(vec![
                item(game, 2, None),
                item(game, 2, None),
                item(game, 3, None),
            ])
            .await;
        assert!(out[0].is_ok(), "{:?}", out[0]);
        assert!(matches!(out[1], Err(ItemError::LostRace)), "{:?}", out[1]);
        assert!(
            matches!(out[2], Err(ItemError::EarlierFailed)),
            "{:?}",
            out[2]
        );
        assert_eq!(seqs_of(s, game).await, vec![1, 2]);
    }

    pub async fn ready_counts_expiry_and_cleanup(f: Fixture) {
        let s = &*f.store;
        let game = new_game(s).await;
        let a1 = planned(game, "docks", "mara", "c1", 1, "a1");
        let a2 = planned(game, "docks", "mara", "c1", 1, "a2");
        let b1 = planned(game, "docks", "brann", "c1", 1, "b1");
        let mut stale = planned(game, "docks", "brann", "c1", 1, "stale");
        stale.expires_at = now_ms() - 1_000;
        let mut reaction = planned(game, "docks", "brann", "c1", 1, "reaction");
        reaction.kind = PlannedKind::Reaction;
        let other_key = planned(game, "docks", "brann", "c1/threaten", 1, "other-key");
        for a in [&a1, &a2, &b1, &stale, &reaction, &other_key] {
            s.insert_planned(std::slice::from_ref(a)).await.unwrap();
        }
        let counts = s
            .ready_counts(game, &scene("docks"), &ctx("c1"), now_ms())
            .await
            .unwrap();
        assert_eq!(counts.get(&sid("mara")), Some(&2));
        assert_eq!(
            counts.get(&sid("brann")),
            Some(&2),
            "every ready row of the key counts, expired rows and other keys do not"
        );

        assert!(
            s.retire_planned(b1.id, PlannedStatus::Failed)
                .await
                .unwrap()
        );
        assert!(
            !s.retire_planned(b1.id, PlannedStatus::Expired)
                .await
                .unwrap(),
            "only ready rows retire"
        );
        assert_eq!(s.expire_planned(now_ms()).await.unwrap(), 1);
        assert_eq!(
            s.planned(stale.id).await.unwrap().unwrap().status,
            PlannedStatus::Expired
        );
        assert_eq!(
            s.planned(b1.id).await.unwrap().unwrap().status,
            PlannedStatus::Failed
        );

        let removed = s.delete_spent_planned(now_ms() + 1).await.unwrap();
        assert_eq!(removed, 2, "the failed and the expired row");
        assert!(s.planned(stale.id).await.unwrap().is_none());
        assert!(s.planned(a1.id).await.unwrap().is_some(), "ready rows stay");
    }

    pub async fn canon_is_idempotent(f: Fixture) {
        let s = &*f.store;
        let game = new_game(s).await;
        let canon = CanonEvent {
            id: uuid::Uuid::now_v7(),
            game_id: game,
            conflict_id: ConflictId::new("strike").unwrap(),
            title: "The strike ends".into(),
            summary: "The crews were paid.".into(),
            dedupe_key: format!("canon:{game}:strike"),
            provenance: Provenance {
                context_hash: ctx("c1"),
                world_version: 7,
                produced_at: now_ms(),
                model: "scripted".into(),
                prompt_version: "v1".into(),
            },
            created_at: now_ms(),
        };
        assert!(s.insert_canon(&canon).await.unwrap());
        let mut dup = canon.clone();
        dup.id = uuid::Uuid::now_v7();
        assert!(!s.insert_canon(&dup).await.unwrap());
        assert_eq!(s.canon_events(game).await.unwrap(), vec![canon]);
    }
}

conformance!(
    [sqlite, postgres],
    [
        games_and_players,
        event_log_seq_is_unique,
        append_next_under_contention,
        append_once_by_dedupe_key,
        insert_planned_is_idempotent,
        insert_planned_writes_many_rows_at_once,
        maintenance_clears_more_than_one_chunk,
        claim_takes_the_best_ready_action_per_stakeholder,
        claim_race,
        commit_batch_is_one_transaction,
        commit_batch_refuses_a_row_taken_meanwhile,
        dialogue_replies_are_recorded_once_beside_the_log,
        commit_batch_never_commits_past_a_failed_item,
        ready_counts_expiry_and_cleanup,
        canon_is_idempotent
    ]
);
