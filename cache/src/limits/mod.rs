//! Rate limits and concurrency slots shared by every process of a deployment: the provider's
//! concurrency and request rate (the slow path), each player's action rate and the rate of
//! token lookups per client address (the API). One [`Limiter`] trait, two backends:
//! [`RedisLimiter`] (distributed: every process counts in the same keys) and [`MemoryLimiter`]
//! (embedded: one process).
//!
//! Rates are GCRA (the generic cell rate algorithm, as in the `governor` crate and
//! redis-cell): a key holds the theoretical arrival time of its next event; an event is admitted
//! if that time is at most `burst − 1` intervals ahead of now. Slots are leases with an expiry,
//! so a process that dies holding one frees it when the lease lapses.

mod memory;
mod redis;

use std::time::Duration;

use async_trait::async_trait;

pub use self::memory::MemoryLimiter;
pub use self::redis::RedisLimiter;

/// `per_second` events a second sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

impl Rate {
    /// Microseconds between events at the sustained rate.
    fn interval_us(&self) -> u64 {
        (1_000_000.0 / self.per_second.max(1e-6)).ceil() as u64
    }

    /// How far ahead of now the next arrival time may be.
    fn tolerance_us(&self) -> u64 {
        self.interval_us() * u64::from(self.burst.max(1) - 1)
    }
}

/// Whether an event was admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// Not admitted: one would be after this long.
    Wait(Duration),
}

/// A slot held until [`Limiter::release`], or until its lease lapses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: String,
    pub id: String,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("limiter unavailable: {0}")]
pub struct LimitError(pub String);

#[async_trait]
pub trait Limiter: Send + Sync + std::fmt::Debug {
    /// Admits one event under `key` at `rate`, or says how long until one would be.
    async fn admit(&self, key: &str, rate: Rate) -> Result<Admission, LimitError>;

    /// Whether an event under `key` would be admitted now, without counting one.
    async fn peek(&self, key: &str, rate: Rate) -> Result<Admission, LimitError>;

    /// Takes one of `slots` slots under `key` for at most `ttl`; `None` when all are held.
    async fn lease(
        &self,
        key: &str,
        slots: u32,
        ttl: Duration,
    ) -> Result<Option<Lease>, LimitError>;

    /// Extends a held lease to `ttl` from now; `false` if it had lapsed (it is not revived).
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, LimitError>;

    /// Gives a slot back (a lapsed or unknown lease is fine).
    async fn release(&self, lease: &Lease) -> Result<(), LimitError>;
}

fn lease_id() -> String {
    ulid::Ulid::generate().to_string()
}
