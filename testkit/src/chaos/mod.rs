//! The history checker (feature `chaos`), in the spirit of Jepsen's Elle and TigerBeetle's
//! simulator: it runs real `hotpath serve` processes, drives several games and players with a
//! seeded random schedule, injects faults, records everything the clients sent and got, then
//! reads each game's log from the store and checks the write path's promises.
//!
//! - [`schedule`]: one `u64` seed drives every random choice (ChaCha8 streams).
//! - [`cluster`]: the engines on one deployment and the servers under them.
//! - [`faults`]: slow commits, paused and killed servers, killed and restarted engines, quiet
//!   games whose writers retire.
//! - [`driver`]: players (timeouts, retries with and without `Idempotency-Key`, hedged tries),
//!   event-stream clients (disconnect, resume with `Last-Event-ID`), the fault lane.
//! - [`recorder`]: the history: tries, answers, sessions, faults, with times.
//! - [`checker`]: the invariants.
//! - [`report`]: counts, and for each anomaly its seed and a minimal history to replay.
//!
//! Not injected (yet): PostgreSQL killed and restarted on its data (connections are terminated
//! instead, which is what a restart looks like to the engines), network partitions and delays
//! between the processes, a full disk, clock jumps; Redis is only killed when the harness
//! started it. Job execution is not checked beyond the jobs existing.
//!
//! ```no_run
//! # async fn f() -> Result<(), String> {
//! use hotpath_testkit::chaos::{Backends, HistoryConfig, run_history};
//! let mut backends = Backends::owned_distributed();
//! let work = std::env::temp_dir().join("chaos");
//! let r = run_history("target/debug/hotpath".as_ref(), &mut backends, &HistoryConfig::new(7, 20.0), &work).await?;
//! for a in &r.anomalies {
//!     eprintln!("{}", hotpath_testkit::chaos::report::replay(&r, a));
//! }
//! # Ok(()) }
//! ```

pub mod checker;
pub mod cluster;
pub mod driver;
pub mod faults;
pub mod recorder;
pub mod report;
pub mod schedule;

use std::path::Path;
use std::sync::Arc;

pub use cluster::{Backends, Postgres, Redis};
pub use faults::FaultKind;
pub use report::{HistoryResult, Summary};

use cluster::{Cluster, Place};
use recorder::Recorder;

/// The admin token of the engines the harness starts.
pub const ADMIN: &str = "chaos-admin";

/// The shape of one history.
#[derive(Debug, Clone)]
pub struct HistoryConfig {
    pub seed: u64,
    /// How long players act and faults are injected.
    pub seconds: f64,
    pub games: usize,
    /// Players per game.
    pub players: usize,
    /// Event-stream clients per game.
    pub stream_clients: usize,
    /// Engines (distributed only; the embedded deployment has one), requests round-robin.
    pub engines: usize,
    /// A `hotpath worker` beside the engines (distributed), so the dispatched jobs run.
    pub worker: bool,
    /// Only these faults (default: every one the deployment allows).
    pub faults: Option<Vec<FaultKind>>,
    /// The engines' `--budget-ms` (default: theirs, 200).
    pub budget_ms: Option<u64>,
    /// Counters to print while it runs.
    pub progress: Option<Arc<recorder::Progress>>,
}

impl HistoryConfig {
    pub fn new(seed: u64, seconds: f64) -> HistoryConfig {
        HistoryConfig {
            seed,
            seconds,
            games: 3,
            players: 3,
            stream_clients: 2,
            engines: 2,
            worker: false,
            faults: None,
            budget_ms: None,
            progress: None,
        }
    }
}

/// Runs one history on fresh state (a new data dir, or a new database) of `backends`, with the
/// engine binary `bin`; engine logs go under `work`. `Err` when the harness itself could not
/// run (an engine that does not start), never for an anomaly.
pub async fn run_history(
    bin: &Path,
    backends: &mut Backends,
    cfg: &HistoryConfig,
    work: &Path,
) -> Result<HistoryResult, String> {
    let name = format!(
        "s{}_{}",
        cfg.seed,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let dir = work.join(format!("{}-{name}", backends.name()));
    let (place, engines) = match backends {
        Backends::Embedded => (
            Place::Embedded {
                dir: dir.join("data"),
            },
            1,
        ),
        Backends::Distributed { redis, postgres } => (
            Place::Distributed {
                redis_url: redis.url(),
                database_url: cluster::create_database(
                    &postgres.admin_url,
                    &format!("chaos_{name}"),
                )
                .await?,
            },
            cfg.engines.max(1),
        ),
    };
    let mut args: Vec<String> = ["--rate-per-second", "100000", "--writer-idle-secs", "1"]
        .map(str::to_owned)
        .to_vec();
    if let Some(b) = cfg.budget_ms {
        args.extend(["--budget-ms".to_owned(), b.to_string()]);
    }
    let mut cluster = Cluster::start(bin, ADMIN, place, &dir, engines, cfg.worker, &args).await?;
    let rec = Arc::new(Recorder::new(
        cfg.seed,
        backends.name(),
        cfg.progress.clone(),
    ));
    let evidence = driver::run(cfg, &mut cluster, backends, rec.clone()).await;
    cluster.stop();
    let evidence = evidence?;
    let history = rec.snapshot();
    let anomalies = checker::check(&history, &evidence);
    if anomalies.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(HistoryResult {
        history,
        evidence,
        anomalies,
    })
}
