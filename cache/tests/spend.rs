//! The spend ledger conformance suite: in this process, in SQLite and in a real PostgreSQL.
//! What every backend must hold: a reservation is all scopes or none, concurrent reservations
//! never take a scope past its hard limit, and settling returns the reservation and counts use.

mod common;

use std::sync::Arc;

use hotpath_cache::spend::*;
use hotpath_cache::store::{PostgresStore, SqliteStore};

struct Fixture {
    ledger: Arc<dyn SpendLedger>,
    _dir: Option<tempfile::TempDir>,
}

async fn memory() -> Fixture {
    Fixture {
        ledger: MemorySpend::new(),
        _dir: None,
    }
}

async fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("hotpath.sqlite"))
        .await
        .unwrap();
    Fixture {
        ledger: Arc::new(StoreSpend(Arc::new(store))),
        _dir: Some(dir),
    }
}

async fn postgres() -> Fixture {
    let url = hotpath_testkit::fresh_postgres_database();
    let store = PostgresStore::connect(&url).await.unwrap();
    Fixture {
        ledger: Arc::new(StoreSpend(Arc::new(store))),
        _dir: None,
    }
}

fn charge(scope: &str, soft: u64, hard: u64) -> Charge {
    Charge {
        scope: scope.into(),
        budget: Budget { soft, hard },
    }
}

fn count(spent: &[ScopeSpend], scope: &str) -> (u64, u64) {
    spent
        .iter()
        .find(|s| s.scope == scope)
        .map_or((0, 0), |s| (s.used, s.reserved))
}

mod suite {
    use super::*;

    pub async fn reserve_settle_and_refuse(f: Fixture) {
        let l = &f.ledger;
        let day = 20_000;
        let charges = [charge("global", 50, 100)];
        assert_eq!(
            l.reserve(day, &charges, 40).await.unwrap(),
            Reservation::Granted { cheap: false }
        );
        assert_eq!(count(&l.spent(day, 10).await.unwrap(), "global"), (0, 40));
        l.settle(day, &["global".into()], 40, 30).await.unwrap();
        assert_eq!(count(&l.spent(day, 10).await.unwrap(), "global"), (30, 0));
        // 30 used: under the soft limit still.
        assert_eq!(
            l.reserve(day, &charges, 40).await.unwrap(),
            Reservation::Granted { cheap: false }
        );
        // 30 used + 40 reserved: past the soft limit, room for 30 more under the hard one.
        assert_eq!(
            l.reserve(day, &charges, 30).await.unwrap(),
            Reservation::Granted { cheap: true }
        );
        match l.reserve(day, &charges, 1).await.unwrap() {
            Reservation::Refused { scope, taken, hard } => {
                assert_eq!((scope.as_str(), taken, hard), ("global", 100, 100))
            }
            granted => panic!("over the hard limit: {granted:?}"),
        }
        // Another day has its own count; a call larger than the budget never fits.
        assert!(matches!(
            l.reserve(day + 1, &charges, 100).await.unwrap(),
            Reservation::Granted { .. }
        ));
        assert!(matches!(
            l.reserve(day + 2, &charges, 101).await.unwrap(),
            Reservation::Refused { .. }
        ));
    }

    pub async fn all_scopes_or_none(f: Fixture) {
        let l = &f.ledger;
        let day = 20_001;
        let game = charge("game:a", 1000, 1000);
        let player = charge("player:p", 100, 100);
        assert!(matches!(
            l.reserve(day, &[game.clone(), player.clone()], 80)
                .await
                .unwrap(),
            Reservation::Granted { .. }
        ));
        // The player scope has no room: the game scope must not keep a reservation either.
        match l.reserve(day, &[game.clone(), player], 80).await.unwrap() {
            Reservation::Refused { scope, .. } => assert_eq!(scope, "player:p"),
            granted => panic!("{granted:?}"),
        }
        let spent = l.spent(day, 10).await.unwrap();
        assert_eq!(count(&spent, "game:a"), (0, 80));
        assert_eq!(count(&spent, "player:p"), (0, 80));
    }

    pub async fn concurrent_reservations_hold_the_hard_limit(f: Fixture) {
        let l = f.ledger.clone();
        let day = 20_002;
        // 40 callers want 10 tokens each of a budget of 100: exactly ten get them.
        let calls = (0..40).map(|_| {
            let l = l.clone();
            tokio::spawn(async move {
                l.reserve(day, &[charge("global", 100, 100)], 10)
                    .await
                    .unwrap()
            })
        });
        let granted = futures::future::join_all(calls)
            .await
            .into_iter()
            .filter(|r| matches!(r.as_ref().unwrap(), Reservation::Granted { .. }))
            .count();
        assert_eq!(granted, 10);
        assert_eq!(count(&l.spent(day, 10).await.unwrap(), "global"), (0, 100));
    }
}

conformance!(
    [memory, sqlite, postgres],
    [
        reserve_settle_and_refuse,
        all_scopes_or_none,
        concurrent_reservations_hold_the_hard_limit
    ]
);
