//! The cache conformance suite: every case runs against the in-process cache and against a real
//! redis-server started by the test harness.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hotpath_cache::cache::*;
use hotpath_cache::ids::*;
use hotpath_cache::model::{Provenance, SocialBundle};
use hotpath_cache::scenario::builtin;
use hotpath_cache::state::{ContextHash, GameState};

async fn memory() -> Arc<dyn Cache> {
    Arc::new(MemoryCache::new(10_000))
}

async fn redis() -> Arc<dyn Cache> {
    let url = hotpath_testkit::shared_redis().url();
    Arc::new(
        RedisCache::connect(&url, Duration::from_secs(2))
            .await
            .unwrap(),
    )
}

const LONG: Duration = Duration::from_secs(60);

fn social() -> SocialBundle {
    SocialBundle {
        gossip: vec![],
        reputation: BTreeMap::from([(StakeholderId::new("mara").unwrap(), 12)]),
        provenance: Provenance {
            context_hash: ContextHash("c".into()),
            world_version: 3,
            produced_at: 1,
            model: "scripted".into(),
            prompt_version: "v1".into(),
        },
    }
}

mod suite {
    use super::*;

    pub async fn typed_round_trip(c: Arc<dyn Cache>) {
        c.ping().await.unwrap();
        let game = GameId::generate();
        let state = GameState::new(game, &builtin()["harbor-strike"]);
        let key = keys::snapshot(game);
        assert_eq!(c.get_typed(&key).await.unwrap(), None);
        c.set_typed(&key, &state, LONG).await.unwrap();
        assert_eq!(c.get_typed(&key).await.unwrap(), Some(state.clone()));
        // Overwrite.
        let mut later = state.clone();
        later.turn = 9;
        c.set_typed(&key, &later, LONG).await.unwrap();
        assert_eq!(c.get_typed(&key).await.unwrap().map(|s| s.turn), Some(9));
        c.delete(key.as_str()).await.unwrap();
        assert_eq!(c.get_typed(&key).await.unwrap(), None);
    }

    pub async fn values_expire(c: Arc<dyn Cache>) {
        let game = GameId::generate();
        let key = keys::social(game);
        c.set_typed(&key, &social(), Duration::from_millis(150))
            .await
            .unwrap();
        assert!(c.get_typed(&key).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            c.get_typed(&key).await.unwrap().is_none(),
            "expired after its TTL"
        );
    }

    pub async fn undecodable_value_is_an_error_not_a_panic(c: Arc<dyn Cache>) {
        let game = GameId::generate();
        let key = keys::snapshot(game);
        c.set(key.as_str(), b"not json".to_vec(), LONG)
            .await
            .unwrap();
        let err = c.get_typed(&key).await.unwrap_err();
        assert!(matches!(err, CacheError::Decode { .. }), "{err}");
    }

    pub async fn batch_is_one_multi_get_in_order(c: Arc<dyn Cache>) {
        let game = GameId::generate();
        let state = GameState::new(game, &builtin()["harbor-strike"]);
        c.set_typed(&keys::snapshot(game), &state, LONG)
            .await
            .unwrap();
        c.set_typed(&keys::social(game), &social(), LONG)
            .await
            .unwrap();

        let mut batch = Batch::default();
        let social_slot = batch.add(&keys::social(game));
        let refs_slot = batch.add(&keys::canon_references(game));
        let snap_slot = batch.add(&keys::snapshot(game));
        assert_eq!(batch.len(), 3);
        let mut got = batch.fetch(&*c).await.unwrap();
        assert_eq!(got.take(snap_slot).unwrap(), Some(state));
        assert_eq!(got.take(social_slot).unwrap(), Some(social()));
        assert_eq!(got.take(refs_slot).unwrap(), None);

        // Edge sizes: none, and exactly one key.
        assert!(c.get_many(&[]).await.unwrap().is_empty());
        let one = c
            .get_many(&[keys::social(game).as_str().to_owned()])
            .await
            .unwrap();
        assert_eq!(one.len(), 1);
        assert!(one[0].is_some());
    }

    pub async fn delete_game_removes_only_that_game(c: Arc<dyn Cache>) {
        let (a, b) = (GameId::generate(), GameId::generate());
        for g in [a, b] {
            c.set_typed(&keys::social(g), &social(), LONG)
                .await
                .unwrap();
            c.set(&keys::dispatch_guard(Some(g), "job"), b"x".to_vec(), LONG)
                .await
                .unwrap();
        }
        let removed = c.delete_game(a).await.unwrap();
        assert_eq!(removed, 2);
        assert!(c.get_typed(&keys::social(a)).await.unwrap().is_none());
        assert!(
            c.get(&keys::dispatch_guard(Some(a), "job"))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            c.get_typed(&keys::social(b)).await.unwrap().is_some(),
            "other games untouched"
        );
    }

    pub async fn guard_has_one_owner(c: Arc<dyn Cache>) {
        let key = keys::dispatch_guard(Some(GameId::generate()), "narration:strike:walkout");
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let (c, key) = (c.clone(), key.clone());
                tokio::spawn(async move {
                    c.try_acquire(&key, &format!("owner-{i}"), LONG)
                        .await
                        .unwrap()
                        .then_some(i)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            winners.extend(t.await.unwrap());
        }
        assert_eq!(winners.len(), 1, "exactly one acquirer: {winners:?}");
        let owner = format!("owner-{}", winners[0]);
        assert!(
            !c.release(&key, "someone-else").await.unwrap(),
            "only the owner releases"
        );
        assert!(!c.try_acquire(&key, "late", LONG).await.unwrap());
        assert!(c.release(&key, &owner).await.unwrap());
        assert!(
            c.try_acquire(&key, "late", Duration::from_millis(150))
                .await
                .unwrap()
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            c.try_acquire(&key, "after-expiry", LONG).await.unwrap(),
            "the guard expires"
        );
    }
}

conformance!(
    [memory, redis],
    [
        typed_round_trip,
        values_expire,
        undecodable_value_is_an_error_not_a_panic,
        batch_is_one_multi_get_in_order,
        delete_game_removes_only_that_game,
        guard_has_one_owner
    ]
);
