//! Limits in Redis (the distributed deployment): every process counts in the same keys, each
//! decision one Lua script run on the server's clock (so processes' clocks need not agree).

use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use redis::aio::ConnectionManager;

use super::{Admission, Lease, LimitError, Limiter, Rate, lease_id};

/// GCRA. KEYS[1]: arrival time; ARGV: interval µs, tolerance µs, 1 to count the event (0 to
/// only look). Returns 0 when admitted, else the µs to wait.
const ADMIT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - tonumber(ARGV[2])
if now < allow_at then return allow_at - now end
if ARGV[3] == '0' then return 0 end
local next = tat + interval
redis.call('SET', KEYS[1], string.format('%d', next), 'PX', math.ceil((next - now) / 1000) + 1)
return 0
"#;

/// KEYS[1]: sorted set of lease ids by expiry (ms). ARGV: slots, ttl ms, id. 1 when leased.
const LEASE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// KEYS[1] the slots' sorted set; ARGV: ttl ms, lease id. Extends a live lease; 0 if lapsed.
const RENEW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not expiry or tonumber(expiry) <= now then
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[2])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 1
"#;

#[derive(Clone)]
pub struct RedisLimiter {
    conn: ConnectionManager,
    admit: Script,
    lease: Script,
    renew: Script,
    /// Leases asked for whose answer never came (a timeout): Redis may still grant them when
    /// it gets to the request — a hung server runs its backlog when it wakes — and nobody
    /// would give them back until they lapse. Released at the next call that reaches Redis.
    unanswered: std::sync::Arc<std::sync::Mutex<Vec<Lease>>>,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisLimiter")
    }
}

impl RedisLimiter {
    /// Over a connection shared with the cache (see [`crate::cache::RedisCache::connection`]).
    pub fn new(conn: ConnectionManager) -> RedisLimiter {
        RedisLimiter {
            conn,
            admit: Script::new(ADMIT),
            lease: Script::new(LEASE),
            renew: Script::new(RENEW),
            unanswered: Default::default(),
        }
    }
}

impl RedisLimiter {
    async fn gcra(&self, k: &str, rate: Rate, count: bool) -> Result<Admission, LimitError> {
        let mut conn = self.conn.clone();
        let wait: u64 = self
            .admit
            .key(key(k))
            .arg(rate.interval_us())
            .arg(rate.tolerance_us())
            .arg(u8::from(count))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(match wait {
            0 => Admission::Admitted,
            us => Admission::Wait(Duration::from_micros(us)),
        })
    }
}

impl RedisLimiter {
    /// Gives back the leases whose request timed out (see [`RedisLimiter::unanswered`]).
    async fn release_unanswered(&self) -> Result<(), LimitError> {
        let pending = std::mem::take(&mut *self.unanswered.lock().expect("unanswered lock"));
        for (i, lease) in pending.iter().enumerate() {
            if let Err(e) = self.release(lease).await {
                self.unanswered
                    .lock()
                    .expect("unanswered lock")
                    .extend(pending[i..].iter().cloned());
                return Err(e);
            }
        }
        Ok(())
    }
}

fn unavailable(e: redis::RedisError) -> LimitError {
    LimitError(e.to_string())
}

/// Keys live under one prefix, away from the cache's.
fn key(k: &str) -> String {
    format!("hotpath:limit:{k}")
}

#[async_trait]
impl Limiter for RedisLimiter {
    async fn admit(&self, k: &str, rate: Rate) -> Result<Admission, LimitError> {
        self.gcra(k, rate, true).await
    }

    async fn peek(&self, k: &str, rate: Rate) -> Result<Admission, LimitError> {
        self.gcra(k, rate, false).await
    }

    async fn lease(&self, k: &str, slots: u32, ttl: Duration) -> Result<Option<Lease>, LimitError> {
        self.release_unanswered().await?;
        let mut conn = self.conn.clone();
        let lease = Lease {
            key: k.to_owned(),
            id: lease_id(),
        };
        let got: u32 = match self
            .lease
            .key(key(k))
            .arg(slots)
            .arg((ttl.as_millis() as u64).max(1))
            .arg(&lease.id)
            .invoke_async(&mut conn)
            .await
        {
            Ok(got) => got,
            Err(e) => {
                let mut unanswered = self.unanswered.lock().expect("unanswered lock");
                // Bounded: in a long outage the oldest would have lapsed anyway.
                if unanswered.len() >= 256 {
                    unanswered.remove(0);
                }
                unanswered.push(lease);
                return Err(unavailable(e));
            }
        };
        Ok((got == 1).then_some(lease))
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, LimitError> {
        let mut conn = self.conn.clone();
        let renewed: u32 = self
            .renew
            .key(key(&lease.key))
            .arg((ttl.as_millis() as u64).max(1))
            .arg(&lease.id)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(renewed == 1)
    }

    async fn release(&self, lease: &Lease) -> Result<(), LimitError> {
        let mut conn = self.conn.clone();
        let _: u32 = redis::cmd("ZREM")
            .arg(key(&lease.key))
            .arg(&lease.id)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
