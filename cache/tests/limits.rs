//! The limiter conformance suite: in this process and in a real Redis. Rates admit their
//! burst then space events out; slots are never over-leased, come back on release, and lapse.

mod common;

use std::sync::Arc;
use std::time::Duration;

use hotpath_cache::cache::RedisCache;
use hotpath_cache::limits::*;

async fn memory() -> Arc<dyn Limiter> {
    Arc::new(MemoryLimiter::default())
}

async fn redis() -> Arc<dyn Limiter> {
    let url = hotpath_testkit::shared_redis().url();
    let cache = RedisCache::connect(&url, Duration::from_secs(2))
        .await
        .unwrap();
    Arc::new(RedisLimiter::new(cache.connection()))
}

/// Keys unique to one run, so runs sharing a Redis do not meet.
fn key(name: &str) -> String {
    format!("{name}:{}", ulid::Ulid::generate())
}

mod suite {
    use super::*;

    pub async fn rate_admits_its_burst_then_spaces_events(l: Arc<dyn Limiter>) {
        let k = key("rate");
        let rate = Rate {
            per_second: 10.0,
            burst: 3,
        };
        for _ in 0..3 {
            assert_eq!(l.admit(&k, rate).await.unwrap(), Admission::Admitted);
        }
        let Admission::Wait(wait) = l.admit(&k, rate).await.unwrap() else {
            panic!("the fourth of a burst of three is not admitted");
        };
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        // Looking does not count: a peek after a refusal is refused too, and counts nothing.
        assert!(matches!(
            l.peek(&k, rate).await.unwrap(),
            Admission::Wait(_)
        ));
        tokio::time::sleep(wait + Duration::from_millis(5)).await;
        assert_eq!(l.peek(&k, rate).await.unwrap(), Admission::Admitted);
        assert_eq!(l.admit(&k, rate).await.unwrap(), Admission::Admitted);
        assert!(matches!(
            l.admit(&k, rate).await.unwrap(),
            Admission::Wait(_)
        ));
        // Other keys have their own count.
        assert_eq!(
            l.admit(&key("rate"), rate).await.unwrap(),
            Admission::Admitted
        );
    }

    pub async fn slots_are_bounded_released_and_lapse(l: Arc<dyn Limiter>) {
        let k = key("slots");
        let ttl = Duration::from_secs(60);
        let a = l.lease(&k, 2, ttl).await.unwrap().expect("first slot");
        let _b = l.lease(&k, 2, ttl).await.unwrap().expect("second slot");
        assert!(l.lease(&k, 2, ttl).await.unwrap().is_none(), "two slots");
        l.release(&a).await.unwrap();
        assert!(l.lease(&k, 2, ttl).await.unwrap().is_some(), "released");
        // A holder that never gives its slot back loses it when the lease lapses.
        let k = key("lapse");
        let _held = l.lease(&k, 1, Duration::from_millis(50)).await.unwrap();
        assert!(l.lease(&k, 1, ttl).await.unwrap().is_none());
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(l.lease(&k, 1, ttl).await.unwrap().is_some(), "lapsed");
        // A holder that renews keeps its slot past the first lease; a lapsed lease is not
        // revived.
        let k = key("renew");
        let short = Duration::from_millis(300);
        let kept = l.lease(&k, 1, short).await.unwrap().expect("a slot");
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            assert!(l.renew(&kept, short).await.unwrap(), "renewed while live");
        }
        assert!(l.lease(&k, 1, ttl).await.unwrap().is_none(), "still held");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!l.renew(&kept, short).await.unwrap(), "lapsed, not revived");
        assert!(l.lease(&k, 1, ttl).await.unwrap().is_some());
    }

    pub async fn concurrent_leases_never_exceed_the_slots(l: Arc<dyn Limiter>) {
        let k = key("race");
        let calls = (0..30).map(|_| {
            let (l, k) = (l.clone(), k.clone());
            tokio::spawn(async move { l.lease(&k, 4, Duration::from_secs(60)).await.unwrap() })
        });
        let got = futures::future::join_all(calls)
            .await
            .into_iter()
            .filter(|r| r.as_ref().unwrap().is_some())
            .count();
        assert_eq!(got, 4);
    }
}

conformance!(
    [memory, redis],
    [
        rate_admits_its_burst_then_spaces_events,
        slots_are_bounded_released_and_lapse,
        concurrent_leases_never_exceed_the_slots
    ]
);

/// A lease asked of a frozen Redis times out, and Redis grants it anyway when it wakes (it runs
/// its backlog): the limiter gives such a lease back at its next call, so the slot is free at
/// once instead of when the lease lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_whose_answer_was_lost_is_given_back() {
    let redis = hotpath_testkit::RedisServer::start();
    let cache = RedisCache::connect(&redis.url(), Duration::from_millis(300))
        .await
        .unwrap();
    let limiter = RedisLimiter::new(cache.connection());
    let k = key("unanswered");
    let long = Duration::from_secs(60);
    // Once first, so the server knows the script and runs the frozen request by its hash.
    let first = limiter.lease(&k, 1, long).await.unwrap().unwrap();
    limiter.release(&first).await.unwrap();
    redis.pause();
    assert!(
        limiter.lease(&k, 1, long).await.is_err(),
        "no answer while frozen"
    );
    redis.resume();
    // The frozen request is granted now (its lease holds the only slot until it lapses, a
    // minute from now); the limiter gives it back before its next request.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(Some(_)) = limiter.lease(&k, 1, long).await {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slot stayed held by a lease nobody got"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
