//! The event stream conformance suite: every case runs against the in-process stream and against
//! Redis Streams on a real redis-server started by the test harness.

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hotpath_cache::events::GameEvent;
use hotpath_cache::ids::GameId;
use hotpath_cache::stream::*;

const MAX_LEN: usize = 8;

/// Builds a stream of the backend under test keeping `max_len` events per game.
type Make = fn(usize) -> futures::future::BoxFuture<'static, Arc<dyn EventStream>>;

async fn memory() -> Make {
    |max_len| Box::pin(async move { Arc::new(MemoryStream::new(max_len)) as Arc<dyn EventStream> })
}

async fn redis() -> Make {
    |max_len| {
        Box::pin(async move {
            let url = hotpath_testkit::shared_redis().url();
            let s = RedisStream::connect(&url, Duration::from_secs(2), max_len)
                .await
                .unwrap();
            Arc::new(s) as Arc<dyn EventStream>
        })
    }
}

async fn redis_stream() -> RedisStream {
    let url = hotpath_testkit::shared_redis().url();
    RedisStream::connect(&url, Duration::from_secs(2), MAX_LEN)
        .await
        .unwrap()
}

fn ev(n: usize) -> GameEvent {
    GameEvent::ContentReady {
        what: "test".into(),
        location: format!("n{n}"),
        job_kind: None,
        lag_ms: None,
    }
}

fn n_of(item: &StreamItem) -> Option<usize> {
    match item {
        StreamItem::Event {
            event: GameEvent::ContentReady { location, .. },
            ..
        } => location[1..].parse().ok(),
        _ => None,
    }
}

async fn next(sub: &mut Subscription) -> StreamItem {
    tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("an item within 10 s")
        .expect("subscription still open")
}

async fn next_n(sub: &mut Subscription) -> usize {
    let item = next(sub).await;
    n_of(&item).unwrap_or_else(|| panic!("expected an event, got {item:?}"))
}

mod suite {
    use super::*;

    pub async fn replay_from_start_then_live(make: Make) {
        let s = make(MAX_LEN).await;
        s.ping().await.unwrap();
        let game = GameId::generate();
        let mut ids = Vec::new();
        for n in 0..3 {
            ids.push(s.publish(game, &ev(n)).await.unwrap());
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
        let mut sub = s.subscribe(game, Position::Start).await.unwrap();
        for n in 0..3 {
            assert_eq!(next_n(&mut sub).await, n);
        }
        s.publish(game, &ev(3)).await.unwrap();
        assert_eq!(next_n(&mut sub).await, 3);
    }

    pub async fn resume_after_an_id_without_gaps_or_duplicates(make: Make) {
        let s = make(1_000).await;
        let game = GameId::generate();
        let mut ids = Vec::new();
        for n in 0..5 {
            ids.push(s.publish(game, &ev(n)).await.unwrap());
        }
        let mut sub = s.subscribe(game, Position::After(ids[1])).await.unwrap();
        // Publish while the subscriber is replaying: each event arrives exactly once. (The
        // bound is large here: with a small one the publisher may outrun the replay, and then
        // a `reset` is the right answer, not a gap.)
        let publisher = {
            let s = s.clone();
            tokio::spawn(async move {
                for n in 5..40 {
                    s.publish(game, &ev(n)).await.unwrap();
                }
            })
        };
        let mut seen = Vec::new();
        let mut last = None;
        while seen.len() < 38 {
            let item = next(&mut sub).await;
            if let StreamItem::Event { id, .. } = &item {
                assert!(last.is_none_or(|l| *id > l), "ids in order");
                last = Some(*id);
            }
            seen.push(n_of(&item).expect("an event"));
        }
        publisher.await.unwrap();
        assert_eq!(seen, (2..40).collect::<Vec<_>>());
    }

    pub async fn live_sees_only_new_events(make: Make) {
        let s = make(MAX_LEN).await;
        let game = GameId::generate();
        s.publish(game, &ev(0)).await.unwrap();
        let mut sub = s.subscribe(game, Position::Live).await.unwrap();
        s.publish(game, &ev(1)).await.unwrap();
        assert_eq!(next_n(&mut sub).await, 1);
    }

    pub async fn bounded_with_reset_when_too_old(make: Make) {
        let s = make(MAX_LEN).await;
        let game = GameId::generate();
        let mut ids = Vec::new();
        for n in 0..(MAX_LEN + 5) {
            ids.push(s.publish(game, &ev(n)).await.unwrap());
        }
        // Everything held: exactly the last MAX_LEN.
        let mut all = s.subscribe(game, Position::Start).await.unwrap();
        for n in 5..(MAX_LEN + 5) {
            assert_eq!(next_n(&mut all).await, n);
        }
        // An id older than what is held: reset first, then what is held.
        let mut old = s.subscribe(game, Position::After(ids[1])).await.unwrap();
        assert_eq!(next(&mut old).await, StreamItem::Reset);
        assert_eq!(next_n(&mut old).await, 5);
        // The id just before the oldest held: nothing was missed, no reset.
        let mut edge = s.subscribe(game, Position::After(ids[4])).await.unwrap();
        assert_eq!(next_n(&mut edge).await, 5);
    }

    pub async fn many_subscribers_of_one_game(make: Make) {
        let s = make(MAX_LEN).await;
        let game = GameId::generate();
        let other = GameId::generate();
        let mut subs = Vec::new();
        for _ in 0..20 {
            subs.push(s.subscribe(game, Position::Live).await.unwrap());
        }
        s.publish(other, &ev(99)).await.unwrap();
        for n in 0..3 {
            s.publish(game, &ev(n)).await.unwrap();
        }
        for sub in &mut subs {
            for n in 0..3 {
                assert_eq!(next_n(sub).await, n, "games are separate");
            }
        }
    }
}

conformance!(
    [memory, redis],
    [
        replay_from_start_then_live,
        resume_after_an_id_without_gaps_or_duplicates,
        live_sees_only_new_events,
        bounded_with_reset_when_too_old,
        many_subscribers_of_one_game
    ]
);

/// Redis only: one process holds one reader per game, however many clients follow it, and the
/// reader retires when the last one leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_one_reader_per_game_per_process() {
    let s = redis_stream().await;
    let (a, b) = (GameId::generate(), GameId::generate());
    let mut subs = Vec::new();
    for _ in 0..25 {
        subs.push(s.subscribe(a, Position::Live).await.unwrap());
    }
    subs.push(s.subscribe(b, Position::Live).await.unwrap());
    assert_eq!(s.reader_count(), 2);
    s.publish(a, &ev(1)).await.unwrap();
    for sub in subs.iter_mut().take(25) {
        assert_eq!(next_n(sub).await, 1);
    }
    drop(subs);
    // A reader notices at its next XREAD timeout (2 s) that nobody listens.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while s.reader_count() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "readers did not retire"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
