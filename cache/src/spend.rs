//! Token spend against daily budgets, shared by every process of a deployment.
//!
//! A model call first **reserves** what it may use — its prompt estimated generously plus its
//! `max_tokens` — in every scope that pays for it (`global`, `game:<id>`, `player:<id>`). The
//! reservation is admitted only while `used + reserved + tokens` stays within each scope's hard
//! limit, all scopes or none, so concurrent calls of any number of processes cannot together
//! pass a hard limit. After the call it **settles**: the reservation is returned and what the
//! provider reported (or, when it reported nothing, an estimate) is added to `used`.
//!
//! Backends: [`StoreSpend`] keeps the counts in the deployment's SQL store (the `llm_spend`
//! table; PostgreSQL when distributed, the embedded SQLite file otherwise), so spend is shared
//! and survives restarts; [`MemorySpend`] keeps them in this process (tests, a provider built
//! without a store). A reservation whose process dies before settling stays counted until its
//! day ends: the error is always towards spending less.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

/// Tokens per UTC day for one scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// From here on, calls use the cheaper model.
    pub soft: u64,
    /// No reservation may take `used + reserved` past this.
    pub hard: u64,
}

/// One scope a call is charged to, with its budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// `global`, `game:<id>` or `player:<id>`.
    pub scope: String,
    pub budget: Budget,
}

/// What a reservation got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// Reserved in every scope; `cheap` when some scope had passed its soft limit.
    Granted { cheap: bool },
    /// Not reserved anywhere: `scope` has `used + reserved` tokens of `hard` taken and cannot
    /// take `tokens` more.
    Refused {
        scope: String,
        taken: u64,
        hard: u64,
    },
}

/// One scope's count for a day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScopeSpend {
    pub scope: String,
    pub used: u64,
    pub reserved: u64,
}

/// Days since the Unix epoch (UTC) of `ms`.
pub fn day_of(ms: crate::time::Millis) -> i64 {
    ms.div_euclid(86_400_000)
}

#[async_trait]
pub trait SpendLedger: Send + Sync + std::fmt::Debug {
    /// Reserves `tokens` in every scope of `charges`, or in none.
    async fn reserve(
        &self,
        day: i64,
        charges: &[Charge],
        tokens: u64,
    ) -> Result<Reservation, StoreError>;
    /// Returns a reservation of `reserved` tokens in `scopes` and adds `used`.
    async fn settle(
        &self,
        day: i64,
        scopes: &[String],
        reserved: u64,
        used: u64,
    ) -> Result<(), StoreError>;
    /// Every scope's count for `day`, largest `used` first, at most `limit`.
    async fn spent(&self, day: i64, limit: u32) -> Result<Vec<ScopeSpend>, StoreError>;
}

/// Spend in the deployment's SQL store.
#[derive(Clone)]
pub struct StoreSpend(pub Arc<dyn Store>);

impl std::fmt::Debug for StoreSpend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreSpend")
    }
}

#[async_trait]
impl SpendLedger for StoreSpend {
    async fn reserve(
        &self,
        day: i64,
        charges: &[Charge],
        tokens: u64,
    ) -> Result<Reservation, StoreError> {
        self.0.reserve_tokens(day, charges, tokens).await
    }

    async fn settle(
        &self,
        day: i64,
        scopes: &[String],
        reserved: u64,
        used: u64,
    ) -> Result<(), StoreError> {
        self.0.settle_tokens(day, scopes, reserved, used).await
    }

    async fn spent(&self, day: i64, limit: u32) -> Result<Vec<ScopeSpend>, StoreError> {
        self.0.tokens_spent(day, limit).await
    }
}

/// Spend in this process.
#[derive(Debug, Default)]
pub struct MemorySpend {
    /// (scope, day) → (used, reserved)
    counts: Mutex<HashMap<(String, i64), (u64, u64)>>,
}

impl MemorySpend {
    pub fn new() -> Arc<MemorySpend> {
        Arc::new(MemorySpend::default())
    }
}

#[async_trait]
impl SpendLedger for MemorySpend {
    async fn reserve(
        &self,
        day: i64,
        charges: &[Charge],
        tokens: u64,
    ) -> Result<Reservation, StoreError> {
        let mut counts = self.counts.lock().expect("spend lock");
        let mut cheap = false;
        for c in charges {
            let (used, reserved) = counts
                .get(&(c.scope.clone(), day))
                .copied()
                .unwrap_or_default();
            let taken = used + reserved;
            if taken + tokens > c.budget.hard {
                return Ok(Reservation::Refused {
                    scope: c.scope.clone(),
                    taken,
                    hard: c.budget.hard,
                });
            }
            cheap |= taken >= c.budget.soft;
        }
        for c in charges {
            counts.entry((c.scope.clone(), day)).or_default().1 += tokens;
        }
        Ok(Reservation::Granted { cheap })
    }

    async fn settle(
        &self,
        day: i64,
        scopes: &[String],
        reserved: u64,
        used: u64,
    ) -> Result<(), StoreError> {
        let mut counts = self.counts.lock().expect("spend lock");
        for scope in scopes {
            let entry = counts.entry((scope.clone(), day)).or_default();
            entry.0 += used;
            entry.1 = entry.1.saturating_sub(reserved);
        }
        Ok(())
    }

    async fn spent(&self, day: i64, limit: u32) -> Result<Vec<ScopeSpend>, StoreError> {
        let counts = self.counts.lock().expect("spend lock");
        let mut all: Vec<ScopeSpend> = counts
            .iter()
            .filter(|((_, d), _)| *d == day)
            .map(|((scope, _), (used, reserved))| ScopeSpend {
                scope: scope.clone(),
                used: *used,
                reserved: *reserved,
            })
            .collect();
        all.sort_by(|a, b| b.used.cmp(&a.used).then_with(|| a.scope.cmp(&b.scope)));
        all.truncate(limit as usize);
        Ok(all)
    }
}
