//! Limits in this process (the embedded deployment).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Admission, Lease, LimitError, Limiter, Rate, lease_id};

#[derive(Debug)]
pub struct MemoryLimiter {
    epoch: Instant,
    /// key → theoretical arrival time (µs since `epoch`)
    arrivals: Mutex<HashMap<String, u64>>,
    /// key → lease id → expiry (µs since `epoch`)
    slots: Mutex<HashMap<String, HashMap<String, u64>>>,
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        MemoryLimiter {
            epoch: Instant::now(),
            arrivals: Mutex::default(),
            slots: Mutex::default(),
        }
    }
}

impl MemoryLimiter {
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Forgets keys whose arrival time has passed (they would admit as if new): the map follows
    /// the live players, not every player ever seen.
    pub fn forget_idle(&self) {
        let now = self.now_us();
        if let Ok(mut a) = self.arrivals.lock() {
            a.retain(|_, tat| *tat > now);
            a.shrink_to_fit();
        }
        if let Ok(mut s) = self.slots.lock() {
            s.retain(|_, leases| {
                leases.retain(|_, expiry| *expiry > now);
                !leases.is_empty()
            });
        }
    }
}

impl MemoryLimiter {
    fn gcra(&self, key: &str, rate: Rate, count: bool) -> Admission {
        let now = self.now_us();
        let mut arrivals = self.arrivals.lock().expect("limiter lock");
        let tat = arrivals.get(key).copied().unwrap_or(now).max(now);
        let allow_at = tat.saturating_sub(rate.tolerance_us());
        if now < allow_at {
            return Admission::Wait(Duration::from_micros(allow_at - now));
        }
        if count {
            arrivals.insert(key.to_owned(), tat + rate.interval_us());
        }
        Admission::Admitted
    }
}

#[async_trait]
impl Limiter for MemoryLimiter {
    async fn admit(&self, key: &str, rate: Rate) -> Result<Admission, LimitError> {
        Ok(self.gcra(key, rate, true))
    }

    async fn peek(&self, key: &str, rate: Rate) -> Result<Admission, LimitError> {
        Ok(self.gcra(key, rate, false))
    }

    async fn lease(
        &self,
        key: &str,
        slots: u32,
        ttl: Duration,
    ) -> Result<Option<Lease>, LimitError> {
        let now = self.now_us();
        let mut all = self.slots.lock().expect("limiter lock");
        let leases = all.entry(key.to_owned()).or_default();
        leases.retain(|_, expiry| *expiry > now);
        if leases.len() >= slots as usize {
            return Ok(None);
        }
        let id = lease_id();
        leases.insert(id.clone(), now + ttl.as_micros() as u64);
        Ok(Some(Lease {
            key: key.to_owned(),
            id,
        }))
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, LimitError> {
        let now = self.now_us();
        let mut all = self.slots.lock().expect("limiter lock");
        let Some(expiry) = all
            .get_mut(&lease.key)
            .and_then(|leases| leases.get_mut(&lease.id))
            .filter(|expiry| **expiry > now)
        else {
            return Ok(false);
        };
        *expiry = now + ttl.as_micros() as u64;
        Ok(true)
    }

    async fn release(&self, lease: &Lease) -> Result<(), LimitError> {
        let mut all = self.slots.lock().expect("limiter lock");
        if let Some(leases) = all.get_mut(&lease.key) {
            leases.remove(&lease.id);
        }
        Ok(())
    }
}
