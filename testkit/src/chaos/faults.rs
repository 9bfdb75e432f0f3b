//! The faults a history injects, one at a time, at seeded random moments:
//!
//! - `slow_commit`: another connection holds the log's write lock for 50 ms – 3 s (PostgreSQL:
//!   `LOCK TABLE game_events IN ACCESS EXCLUSIVE MODE`; SQLite: `BEGIN IMMEDIATE` on the game
//!   database), so commits wait past the answer budget and clients time out and retry;
//! - `pause_redis`, `pause_postgres`: the server (PostgreSQL: the postmaster and every backend)
//!   is frozen with SIGSTOP for 0.1 – 2 s, then continued;
//! - `kill_postgres_connections`: every connection to the history's database is terminated
//!   (`pg_terminate_backend`), as a database restart or failover looks to its clients;
//! - `restart_redis`: Redis killed and started empty on the same port (only when the harness
//!   owns it);
//! - `kill_engine`: an engine SIGKILLed and started again on the same data (on the embedded
//!   deployment: the deployment restarted);
//! - `restart_engine`: an engine stopped with SIGTERM (a graceful shutdown) and started again;
//! - `quiet_game`: a game's players hold off for 1.2 – 2.5 s, so its writer retires
//!   (`--writer-idle-secs 1`) and the next action reloads it.

use std::time::Duration;

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use sqlx::Connection;

use super::cluster::{Backends, Cluster, Place, Redis};
use super::recorder::{FaultRecord, Recorder};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    SlowCommit,
    PauseRedis,
    PausePostgres,
    KillPostgresConnections,
    RestartRedis,
    KillEngine,
    RestartEngine,
    QuietGame,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::SlowCommit => "slow_commit",
            FaultKind::PauseRedis => "pause_redis",
            FaultKind::PausePostgres => "pause_postgres",
            FaultKind::KillPostgresConnections => "kill_postgres_connections",
            FaultKind::RestartRedis => "restart_redis",
            FaultKind::KillEngine => "kill_engine",
            FaultKind::RestartEngine => "restart_engine",
            FaultKind::QuietGame => "quiet_game",
        }
    }

    /// The faults these servers allow, each with its weight in the draw.
    pub fn available(backends: &Backends) -> Vec<(FaultKind, u32)> {
        let mut kinds = vec![
            (FaultKind::SlowCommit, 3),
            (FaultKind::KillEngine, 1),
            (FaultKind::RestartEngine, 1),
            (FaultKind::QuietGame, 1),
        ];
        if let Backends::Distributed { redis, postgres } = backends {
            if redis.pid().is_some() {
                kinds.push((FaultKind::PauseRedis, 1));
            }
            if let Redis::Owned(_) = redis {
                kinds.push((FaultKind::RestartRedis, 1));
            }
            if postgres.pid.is_some() {
                kinds.push((FaultKind::PausePostgres, 1));
            }
            kinds.push((FaultKind::KillPostgresConnections, 1));
        }
        kinds
    }
}

/// One drawn fault.
#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: FaultKind,
    /// How long it lasts (a lock held, a pause, an engine down, a game quiet).
    pub ms: u64,
    pub engine: usize,
    pub game: usize,
}

/// The next fault, and the pause before it. Kinds come out of a bag holding each kind as many
/// times as its weight, shuffled and refilled when empty, so that a short history still meets
/// every kind.
pub fn draw(
    rng: &mut ChaCha8Rng,
    kinds: &[(FaultKind, u32)],
    bag: &mut Vec<FaultKind>,
    engines: usize,
    games: usize,
) -> (u64, Fault) {
    let gap = rng.random_range(100..1_200);
    if bag.is_empty() {
        bag.extend(
            kinds
                .iter()
                .flat_map(|(k, w)| std::iter::repeat_n(*k, *w as usize)),
        );
        bag.shuffle(rng);
    }
    let kind = bag.pop().unwrap_or(FaultKind::SlowCommit);
    let ms = match kind {
        FaultKind::SlowCommit => rng.random_range(50..3_000),
        FaultKind::PauseRedis | FaultKind::PausePostgres => rng.random_range(100..2_000),
        FaultKind::KillEngine | FaultKind::RestartEngine => rng.random_range(0..500),
        FaultKind::QuietGame => rng.random_range(1_200..2_500),
        FaultKind::KillPostgresConnections | FaultKind::RestartRedis => 0,
    };
    let fault = Fault {
        kind,
        ms,
        engine: rng.random_range(0..engines.max(1)),
        game: rng.random_range(0..games.max(1)),
    };
    (gap, fault)
}

/// Per game, until when (history ms) its players hold off.
pub struct Quiet(Vec<std::sync::atomic::AtomicU64>);

impl Quiet {
    pub fn new(games: usize) -> Quiet {
        Quiet((0..games).map(|_| Default::default()).collect())
    }

    pub fn until(&self, game: usize) -> u64 {
        self.0[game].load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set(&self, game: usize, until: u64) {
        self.0[game].store(until, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Injects `fault` and undoes it (a paused server is always continued, a killed engine always
/// restarted) before returning what was done. `Err` only when the system cannot be brought back
/// (an engine that does not start again).
pub async fn inject(
    fault: &Fault,
    cluster: &mut Cluster,
    backends: &mut Backends,
    quiet: &Quiet,
    rec: &Recorder,
) -> Result<FaultRecord, String> {
    let start_ms = rec.now_ms();
    let hold = Duration::from_millis(fault.ms);
    let mut game = None;
    let (injected, detail) = match fault.kind {
        FaultKind::SlowCommit => match slow_commit(&cluster.place, hold).await {
            Ok(held) => (true, format!("write lock held {} ms", held.as_millis())),
            Err(e) => (false, e),
        },
        FaultKind::PauseRedis => match backends {
            Backends::Distributed { redis, .. } => match redis.pid() {
                Some(pid) => {
                    pause(&[pid], hold).await;
                    (true, format!("redis pid {pid} stopped {} ms", fault.ms))
                }
                None => (false, "no redis pid".into()),
            },
            Backends::Embedded => (false, "embedded".into()),
        },
        FaultKind::PausePostgres => match backends {
            Backends::Distributed { postgres, .. } => match postgres.pid {
                Some(pid) => {
                    let mut pids = vec![pid];
                    pids.extend(children(pid));
                    pause(&pids, hold).await;
                    (
                        true,
                        format!("{} postgres processes stopped {} ms", pids.len(), fault.ms),
                    )
                }
                None => (false, "no postgres pid".into()),
            },
            Backends::Embedded => (false, "embedded".into()),
        },
        FaultKind::KillPostgresConnections => match &cluster.place {
            Place::Distributed { database_url, .. } => match kill_connections(database_url).await {
                Ok(n) => (true, format!("{n} connections terminated")),
                Err(e) => (false, e),
            },
            Place::Embedded { .. } => (false, "embedded".into()),
        },
        FaultKind::RestartRedis => match backends {
            Backends::Distributed {
                redis: Redis::Owned(r),
                ..
            } => {
                tokio::task::block_in_place(|| r.restart());
                (true, "redis killed and started empty".into())
            }
            _ => (false, "redis is not ours".into()),
        },
        FaultKind::KillEngine | FaultKind::RestartEngine => {
            let i = fault.engine % cluster.engines().max(1);
            if fault.kind == FaultKind::KillEngine {
                cluster.kill_engine(i);
            } else {
                cluster.stop_engine(i, Duration::from_secs(20)).await;
            }
            tokio::time::sleep(hold).await;
            cluster.start_engine(i).await?;
            let how = if fault.kind == FaultKind::KillEngine {
                "SIGKILL"
            } else {
                "SIGTERM"
            };
            (
                true,
                format!("engine {i}: {how}, down {} ms, restarted", fault.ms),
            )
        }
        FaultKind::QuietGame => {
            game = Some(fault.game);
            quiet.set(fault.game, rec.now_ms() + fault.ms);
            tokio::time::sleep(hold).await;
            (
                true,
                format!("game {} quiet {} ms (writer retires)", fault.game, fault.ms),
            )
        }
    };
    Ok(FaultRecord {
        kind: fault.kind.name().into(),
        detail,
        start_ms,
        end_ms: rec.now_ms(),
        game,
        injected,
    })
}

/// Holds the log's write lock from another connection for `hold`; returns how long it was
/// held (from the moment it was granted).
async fn slow_commit(place: &Place, hold: Duration) -> Result<Duration, String> {
    match place {
        Place::Distributed { database_url, .. } => {
            let mut conn = tokio::time::timeout(
                Duration::from_secs(5),
                sqlx::PgConnection::connect(database_url),
            )
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| format!("connect: {e}"))?;
            let mut tx = conn.begin().await.map_err(|e| format!("begin: {e}"))?;
            sqlx::raw_sql(
                "SET LOCAL lock_timeout = '5s'; LOCK TABLE game_events IN ACCESS EXCLUSIVE MODE",
            )
            .execute(&mut *tx)
            .await
            .map_err(|e| format!("lock: {e}"))?;
            let granted = std::time::Instant::now();
            tokio::time::sleep(hold).await;
            tx.commit().await.map_err(|e| format!("commit: {e}"))?;
            let held = granted.elapsed();
            let _ = conn.close().await;
            Ok(held)
        }
        Place::Embedded { dir } => {
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(dir.join("hotpath.sqlite"))
                .busy_timeout(Duration::from_secs(5));
            let mut conn = sqlx::SqliteConnection::connect_with(&options)
                .await
                .map_err(|e| format!("open: {e}"))?;
            sqlx::raw_sql("BEGIN IMMEDIATE")
                .execute(&mut conn)
                .await
                .map_err(|e| format!("BEGIN IMMEDIATE: {e}"))?;
            let granted = std::time::Instant::now();
            tokio::time::sleep(hold).await;
            let done = sqlx::raw_sql("COMMIT").execute(&mut conn).await;
            let held = granted.elapsed();
            let _ = conn.close().await;
            done.map_err(|e| format!("COMMIT: {e}"))?;
            Ok(held)
        }
    }
}

/// SIGSTOP, wait, SIGCONT (always, in reverse order).
async fn pause(pids: &[u32], hold: Duration) {
    for pid in pids {
        signal(*pid, "STOP");
    }
    tokio::time::sleep(hold).await;
    for pid in pids.iter().rev() {
        signal(*pid, "CONT");
    }
}

fn signal(pid: u32, name: &str) {
    let _ = std::process::Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status();
}

/// The pids whose parent is `parent` (from /proc).
fn children(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

/// Terminates every other connection to the database of `url`.
async fn kill_connections(url: &str) -> Result<u64, String> {
    let mut conn = tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(url))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let n: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(|e| format!("terminate: {e}"))?;
    let _ = conn.close().await;
    Ok(n as u64)
}
