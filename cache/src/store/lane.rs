//! The write lane: SQLite runs one writer at a time, and this process's writers take turns
//! through here — the players' commits first. A background write (the slow path's rows, the
//! ledger, maintenance) starts only while no player's commit waits, and each one is a single
//! short statement, so a player's commit waits for at most one of them.
//!
//! Without it the writers met inside SQLite: a connection that finds the database locked
//! sleeps in its busy handler and retries, in no order, so a player's commit could wait behind
//! a whole scene preparation (measured: 72 % of answers 503 at one game × 64 connections).
//! PostgreSQL locks rows, not the database, and takes no turns.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Mutex, MutexGuard, Notify};

/// Who is asking for a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// A player's action or join: goes before every background write.
    Player,
    /// The slow path and maintenance: waits while any player's commit waits.
    Background,
}

/// The write lane of one database file (see the module docs).
#[derive(Debug, Default)]
pub struct Lane {
    turn: Mutex<()>,
    /// Players' commits waiting for their turn.
    players_waiting: AtomicUsize,
    /// Rung when the last waiting player got its turn.
    players_clear: Notify,
}

/// Holds the lane until dropped.
pub type Held<'a> = MutexGuard<'a, ()>;

impl Lane {
    pub async fn take(&self, who: Turn) -> Held<'_> {
        match who {
            Turn::Player => {
                let _waiting = Waiting::new(self);
                self.turn.lock().await
            }
            Turn::Background => loop {
                // Registered before the count is read, so a release in between is not missed.
                let clear = self.players_clear.notified();
                if self.players_waiting.load(Ordering::Acquire) > 0 {
                    clear.await;
                    continue;
                }
                let held = self.turn.lock().await;
                // The mutex is fair: a player who arrived while this one queued is next.
                if self.players_waiting.load(Ordering::Acquire) == 0 {
                    return held;
                }
            },
        }
    }
}

/// A waiting player, counted until it gets its turn or gives up (a dropped future).
struct Waiting<'a>(&'a Lane);

impl<'a> Waiting<'a> {
    fn new(lane: &'a Lane) -> Waiting<'a> {
        lane.players_waiting.fetch_add(1, Ordering::AcqRel);
        Waiting(lane)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.0.players_waiting.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.players_clear.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// A background write queued before a player's commit still goes after it.
    #[tokio::test]
    async fn a_waiting_player_goes_before_queued_background_writes() {
        let lane = Arc::new(Lane::default());
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let first = lane.take(Turn::Player).await;
        let mut tasks = Vec::new();
        for (name, who) in [
            ("background", Turn::Background),
            ("player", Turn::Player),
            ("background 2", Turn::Background),
        ] {
            let (lane, order) = (lane.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _held = lane.take(who).await;
                order.lock().unwrap().push(name);
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap();
        assert_eq!(order[0], "player", "{order:?}");
        assert_eq!(order.len(), 3);
    }

    /// A player who gives up while waiting does not keep background writes out for good.
    #[tokio::test]
    async fn a_player_who_gives_up_releases_the_lane() {
        let lane = Lane::default();
        let held = lane.take(Turn::Player).await;
        let gave_up =
            tokio::time::timeout(Duration::from_millis(10), lane.take(Turn::Player)).await;
        assert!(gave_up.is_err());
        drop(held);
        let _held = tokio::time::timeout(Duration::from_secs(1), lane.take(Turn::Background))
            .await
            .expect("a background write gets its turn once no player waits");
    }
}
