//! The job storage on both engines: push returns a ULID, the job is stored with its kind's
//! priority, counted as pending, and the storage shares a PostgreSQL database with the game store.

use hotpath_background::JobStorage;
use hotpath_cache::jobs::*;
use hotpath_cache::store::{PostgresStore, Store};
use hotpath_cache::{ConflictId, GameId, PhaseId, SceneId};

fn reaction(game: GameId) -> Job {
    PrepareSceneReactions {
        game_id: game,
        scene_id: SceneId::new("docks").unwrap(),
        context_hash: hotpath_cache::state::ContextHash("abc".into()),
        conflicts: Vec::new(),
        world_version: 3,
    }
    .into()
}

fn narration(game: GameId) -> Job {
    NarratePhaseTransition {
        game_id: game,
        conflict_id: ConflictId::new("strike").unwrap(),
        phase_id: PhaseId::new("walkout").unwrap(),
        world_version: 2,
    }
    .into()
}

async fn push_count_and_read_back(storage: JobStorage) {
    storage.ping().await.unwrap();
    assert_eq!(storage.pending().await.unwrap(), 0);
    let game = GameId::generate();
    let a = storage.push(reaction(game)).await.unwrap();
    let b = storage.push(narration(game)).await.unwrap();
    for id in [&a, &b] {
        assert!(ulid::Ulid::from_string(id).is_ok(), "{id} is a ULID");
    }
    assert_ne!(a, b);
    assert_eq!(storage.pending().await.unwrap(), 2);
    let rec = storage.job(&a).await.unwrap().expect("stored");
    assert_eq!(rec.job, Some(reaction(game)));
    assert_eq!(rec.status, "Pending");
    assert_eq!(rec.max_attempts, storage.max_deliveries());
    assert!(!rec.is_dead());
    assert_eq!(storage.jobs(10).await.unwrap().len(), 2);
    assert!(storage.dead_letters(10).await.unwrap().is_empty());

    // Several jobs in one write: ids in order, each stored as pushed.
    let batch = vec![
        narration(game),
        reaction(GameId::generate()),
        narration(GameId::generate()),
    ];
    let ids = storage.push_many(batch.clone()).await.unwrap();
    assert_eq!(ids.len(), 3);
    for (id, job) in ids.iter().zip(&batch) {
        assert_eq!(
            storage.job(id).await.unwrap().expect("stored").job.as_ref(),
            Some(job)
        );
    }
    assert_eq!(storage.pending().await.unwrap(), 5);
}

#[tokio::test]
async fn sqlite_push() {
    let dir = tempfile::tempdir().unwrap();
    let storage = JobStorage::sqlite(&dir.path().join("jobs.sqlite"))
        .await
        .unwrap();
    assert_eq!(storage.engine(), "sqlite");
    push_count_and_read_back(storage).await;
}

#[tokio::test]
async fn sqlite_reopen_keeps_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.sqlite");
    let id = {
        let s = JobStorage::sqlite(&path).await.unwrap();
        s.push(narration(GameId::generate())).await.unwrap()
    };
    let s = JobStorage::sqlite(&path).await.unwrap();
    assert!(s.job(&id).await.unwrap().is_some());
    assert_eq!(s.pending().await.unwrap(), 1);
}

#[tokio::test]
async fn postgres_push() {
    let url = hotpath_testkit::fresh_postgres_database();
    let storage = JobStorage::postgres(&url).await.unwrap();
    assert_eq!(storage.engine(), "postgres");
    push_count_and_read_back(storage).await;
}

#[tokio::test]
async fn postgres_shares_the_game_database() {
    // Either migrator first: each keeps its own history, so neither trips on the other's.
    let url = hotpath_testkit::fresh_postgres_database();
    let store = PostgresStore::connect(&url).await.unwrap();
    let jobs = JobStorage::postgres(&url).await.unwrap();
    jobs.push(narration(GameId::generate())).await.unwrap();
    let again = PostgresStore::connect(&url).await.unwrap();
    again.ping().await.unwrap();
    store.ping().await.unwrap();
    let jobs_again = JobStorage::postgres(&url).await.unwrap();
    assert_eq!(jobs_again.pending().await.unwrap(), 1);

    let url2 = hotpath_testkit::fresh_postgres_database();
    let jobs2 = JobStorage::postgres(&url2).await.unwrap();
    let store2 = PostgresStore::connect(&url2).await.unwrap();
    store2.ping().await.unwrap();
    jobs2.ping().await.unwrap();
}
