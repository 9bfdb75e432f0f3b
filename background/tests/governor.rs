//! The cost governor over the provider limit, on every backend of the spend ledger (this
//! process, SQLite, PostgreSQL) and of the limiter (this process, Redis): a model call that
//! never ends — its future dropped by the job's timeout or a shutdown — settles its token
//! reservation. Dropped while it waited for a provider slot, nothing was sent and the
//! reservation is given back; dropped once sent, it is charged (it may have been billed).
//! Before, neither happened: under provider saturation the day's hard budget filled with
//! reservations of calls long gone, and every later call was refused.

use std::sync::Arc;
use std::time::Duration;

use hotpath_background::llm::governor::reservation;
use hotpath_background::llm::limit::Limited;
use hotpath_background::llm::scripted::{ScriptedConfig, ScriptedProvider};
use hotpath_background::llm::{Budget, Budgets, Governor, LlmError, LlmRequest, Provider};
use hotpath_cache::GameId;
use hotpath_cache::cache::RedisCache;
use hotpath_cache::jobs::JobKind;
use hotpath_cache::limits::{Limiter, MemoryLimiter, RedisLimiter};
use hotpath_cache::spend::{MemorySpend, SpendLedger, StoreSpend, day_of};
use hotpath_cache::store::{PostgresStore, SqliteStore};
use hotpath_cache::time::now_ms;

/// Where spend and provider slots are counted.
struct Fixture {
    spend: Arc<dyn SpendLedger>,
    limiter: Arc<dyn Limiter>,
    _dir: Option<tempfile::TempDir>,
}

async fn memory() -> Fixture {
    Fixture {
        spend: MemorySpend::new(),
        limiter: Arc::new(MemoryLimiter::default()),
        _dir: None,
    }
}

/// The embedded deployment: spend in the SQLite game database, slots in this process.
async fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("hotpath.sqlite"))
        .await
        .unwrap();
    Fixture {
        spend: Arc::new(StoreSpend(Arc::new(store))),
        limiter: Arc::new(MemoryLimiter::default()),
        _dir: Some(dir),
    }
}

/// The distributed deployment: spend in PostgreSQL, slots in Redis.
async fn postgres() -> Fixture {
    let url = hotpath_testkit::fresh_postgres_database();
    let store = PostgresStore::connect(&url).await.unwrap();
    let redis = RedisCache::connect(
        &hotpath_testkit::shared_redis().url(),
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    Fixture {
        spend: Arc::new(StoreSpend(Arc::new(store))),
        limiter: Arc::new(RedisLimiter::new(redis.connection())),
        _dir: None,
    }
}

fn request(game: GameId) -> LlmRequest {
    LlmRequest {
        kind: JobKind::NarratePhaseTransition,
        game_id: Some(game),
        player_id: None,
        system: "s".repeat(60),
        prompt: "p".repeat(540),
        max_tokens: 100,
        json: true,
        schema: None,
        model: None,
        attempt: 1,
        facts: serde_json::Value::Null,
    }
}

/// One provider slot (counted in the fixture's limiter, under a key of this run), a model
/// answering after `latency`, and a per-game hard budget of `calls` reservations.
fn governed(f: &Fixture, latency: Duration, game: GameId, calls: u64) -> Arc<Governor> {
    let model = Arc::new(ScriptedProvider::new(ScriptedConfig {
        latency,
        ..ScriptedConfig::default()
    }));
    let limited = Limited::new(model, 1, 0.0).shared(
        f.limiter.clone(),
        format!("llm-test:{}", ulid::Ulid::generate()),
    );
    let hard = calls * reservation(&request(game));
    Arc::new(
        Governor::new(
            Arc::new(limited),
            Budgets {
                per_game: Some(Budget { soft: hard, hard }),
                ..Budgets::default()
            },
            None,
        )
        .with_spend(f.spend.clone()),
    )
}

/// The game's (used, reserved) today.
async fn spent(f: &Fixture, game: GameId) -> (u64, u64) {
    let scope = format!("game:{game}");
    f.spend
        .spent(day_of(now_ms()), 1000)
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.scope == scope)
        .map_or((0, 0), |s| (s.used, s.reserved))
}

/// Waits (a little) until the game's count is `want`.
async fn settles_to(f: &Fixture, game: GameId, want: (u64, u64), what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = spent(f, game).await;
        if now == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: (used, reserved) is {now:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

mod suite {
    use super::*;

    /// The provider is saturated (its one slot taken by a slow call); calls queued behind it
    /// are dropped by their timeout, a completion and a stream. Their reservations come back,
    /// so once the slow call ends the budget still has room.
    pub async fn calls_dropped_waiting_for_a_slot_give_their_reservation_back(f: Fixture) {
        let game = GameId::generate();
        let r = reservation(&request(game));
        let g = governed(&f, Duration::from_secs(3), game, 3);
        let slow = tokio::spawn({
            let g = g.clone();
            async move { g.complete(&request(game)).await }
        });
        settles_to(&f, game, (0, r), "the slow call reserved").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let req = request(game);
        let waited = tokio::time::timeout(Duration::from_millis(200), g.complete(&req));
        assert!(
            waited.await.is_err(),
            "no slot: the call waits, then is dropped"
        );
        let waited = tokio::time::timeout(Duration::from_millis(200), g.stream(&req));
        assert!(waited.await.is_err(), "a stream waits for its slot too");
        settles_to(
            &f,
            game,
            (0, r),
            "the dropped calls gave their reservations back",
        )
        .await;
        let answered = slow.await.unwrap().unwrap();
        let used = answered.usage.total();
        settles_to(&f, game, (used, 0), "the slow call settled").await;
        // Room for two more calls today, as there should be.
        for _ in 0..2 {
            match g.complete(&request(game)).await {
                Ok(_) => {}
                Err(LlmError::OverBudget(why)) => panic!("refused by phantom reservations: {why}"),
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// A call dropped once it was sent may have been answered and billed: its reservation
    /// is charged (as for a timeout), not left reserved, and not given back.
    pub async fn a_call_dropped_in_flight_is_charged_its_reservation(f: Fixture) {
        let game = GameId::generate();
        let r = reservation(&request(game));
        let g = governed(&f, Duration::from_secs(3), game, 10);
        let req = request(game);
        let dropped = tokio::time::timeout(Duration::from_millis(300), g.complete(&req));
        assert!(
            dropped.await.is_err(),
            "the model is slower than the timeout"
        );
        settles_to(&f, game, (r, 0), "the dropped call was charged").await;
    }
}

/// `conformance!([backend, ...], [case, ...])`: for each backend a module whose tests call
/// `suite::case(backend().await)` (as the cache crate's conformance suites do).
macro_rules! conformance {
    ([$($backend:ident),* $(,)?], $cases:tt) => {
        $( conformance!(@backend $backend, $cases); )*
    };
    (@backend $backend:ident, [$($case:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::suite::$case(super::$backend().await).await;
                }
            )*
        }
    };
}

conformance!(
    [memory, sqlite, postgres],
    [
        calls_dropped_waiting_for_a_slot_give_their_reservation_back,
        a_call_dropped_in_flight_is_charged_its_reservation,
    ]
);
