//! Running the workers: [`run`] consumes a [`JobStorage`] with one apalis worker (named
//! [`WorkerConfig::name`], `{role}-{hostname}-{pid}` by default) under an apalis `Monitor`, until
//! `shutdown` resolves; then it stops fetching, hands back jobs fetched but not started, and
//! waits up to [`WorkerConfig::shutdown_timeout`] for running ones.
//!
//! Wake-ups: on SQLite the storage's update hook wakes the worker the moment a job is inserted
//! in this process; on PostgreSQL a LISTEN connection is woken by apalis' NOTIFY trigger. The
//! heartbeat (a few seconds) is also when a worker re-enqueues the jobs of workers that stopped
//! beating — so a job whose worker died is picked up again after about two heartbeats.
//!
//! One gap apalis leaves is closed here: PostgreSQL re-enqueues only jobs of workers whose last
//! heartbeat is old, and a worker restarted under the same name (same host and pid, as in a
//! container) refreshes that heartbeat at once, which would strand the jobs its previous life
//! held. So, before it starts, [`run`] hands back every job still locked under its own name —
//! names are unique among live workers, so those can only be a dead predecessor's.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use apalis_cron::{CronScheduler, Tick};
use apalis_postgres::Pubsub;
use hotpath_cache::jobs::{CleanupExpiredActions, Job, JobQueue};

use crate::jobs::{self, Deps, Failure, JobSettings};
use crate::queue::{Backend, JobStorage, QUEUE};

#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    /// Unique among live workers of the storage: `{role}-{hostname}-{pid}`.
    pub name: String,
    /// Jobs run at once by this worker (the LLM provider's own limit is in `LlmConfig`).
    pub concurrency: usize,
    pub jobs: JobSettings,
    /// How often the worker says it is alive (and looks for orphans of dead workers).
    pub heartbeat: Duration,
    /// Heartbeats a worker may miss before its jobs are handed to others.
    pub missed_heartbeats: usize,
    /// An idle worker also looks for jobs this often, whatever woke it or not. The wake-ups
    /// are not airtight: measured on PostgreSQL, about one pickup in a hundred missed its NOTIFY
    /// (it arrives while a fetch is in flight whose snapshot predates the insert) and waited
    /// for the next heartbeat. This bounds such a miss.
    pub poll_backstop: Duration,
    /// How long shutdown waits for running jobs.
    pub shutdown_timeout: Duration,
    /// Schedule `cleanup_expired_actions` in this process. Turn it on in exactly one process:
    /// every scheduler pushes its own ticks.
    pub run_cron: bool,
    /// Cron expression (with seconds) of the cleanup.
    pub cleanup_schedule: String,
    /// Spent planned actions older than this are deleted by the cleanup.
    pub cleanup_retain: Duration,
}

/// `{role}-{hostname}-{pid}`.
pub fn default_name(role: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{role}-{host}-{}", std::process::id())
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            name: default_name("background"),
            concurrency: 4,
            jobs: JobSettings::default(),
            heartbeat: Duration::from_secs(2),
            missed_heartbeats: 2,
            poll_backstop: Duration::from_millis(250),
            shutdown_timeout: Duration::from_secs(30),
            run_cron: false,
            cleanup_schedule: "0 */5 * * * *".into(),
            cleanup_retain: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("worker configuration: {0}")]
    Config(String),
    #[error("job storage: {0}")]
    Storage(String),
    #[error("worker monitor: {0}")]
    Monitor(String),
}

/// What each job handler gets.
#[derive(Clone)]
struct Runtime {
    deps: Deps,
    settings: JobSettings,
    max_deliveries: u32,
    storage: JobStorage,
}

/// Gives back the job's coalescing guard, so the next action that needs its work can ask.
async fn release_guard(rt: &Runtime, job: &Job, job_id: &str) {
    let Some(game) = job.game_id().filter(|_| job.guarded()) else {
        return;
    };
    if let Err(e) = rt
        .deps
        .store
        .release_job_guard(game, &job.coalesce_key(), job_id)
        .await
    {
        // The guard expires by itself (`JOB_GUARD_TTL_MS`); until then the work is not asked again.
        tracing::warn!(job_id, error = %e, "could not release a job's guard");
    }
}

async fn handle(
    job: Job,
    rt: Data<Arc<Runtime>>,
    id: TaskId,
    attempt: Attempt,
) -> Result<(), BoxDynError> {
    let delivery = attempt.current().max(1) as u32;
    let job_id = id.to_string();
    if delivery > rt.max_deliveries {
        // Each earlier delivery ended with its worker gone (crash, kill, OOM): running it again
        // would likely take this worker down too.
        return Err(AbortError::new(format!(
            "{}: delivered {delivery} times without finishing; each worker running it stopped",
            job.kind().as_str()
        ))
        .into());
    }
    if delivery == 1
        && let Some(at) = jobs::dispatched_at(&job_id)
    {
        // From dispatch to a worker starting it: how long the queue held it.
        let waited = (hotpath_cache::time::now_ms() - at).max(0) as f64 / 1000.0;
        metrics::histogram!("hotpath_job_pickup_seconds", "kind" => job.kind().as_str())
            .record(waited);
    }
    match jobs::execute(&job, &job_id, delivery, &rt.deps, &rt.settings).await {
        Ok(_) => {
            release_guard(&rt, &job, &job_id).await;
            Ok(())
        }
        Err(Failure::Retry { after, reason }) if delivery < rt.max_deliveries => {
            // The storage holds it until then; the error marks it `Failed` with a delivery
            // left, which apalis fetches again once `run_at` has passed.
            if let Err(e) = rt.storage.reschedule(&job_id, after).await {
                tracing::warn!(job_id, error = %e, "could not schedule a job's retry");
            }
            Err(reason.into())
        }
        Err(Failure::Retry { reason, .. }) => {
            release_guard(&rt, &job, &job_id).await;
            Err(AbortError::new(format!(
                "{}: delivery {delivery}: {reason}",
                job.kind().as_str()
            ))
            .into())
        }
        // AbortError: apalis marks the task `Killed` and its backend never fetches it again —
        // the dead-letter state, with the reason as its last result.
        Err(Failure::Dead(dead)) => {
            release_guard(&rt, &job, &job_id).await;
            Err(AbortError::new(dead.reason).into())
        }
    }
}

#[derive(Clone)]
struct CronData {
    storage: JobStorage,
    retain_secs: u64,
}

async fn tick(_tick: Tick, data: Data<CronData>) -> Result<(), BoxDynError> {
    // The tick only enqueues: the cleanup itself runs on whichever worker fetches it.
    data.storage
        .push(
            CleanupExpiredActions {
                retain_secs: data.retain_secs,
                stream_retain_secs: hotpath_cache::jobs::DEFAULT_STREAM_RETAIN_SECS,
            }
            .into(),
        )
        .await?;
    Ok(())
}

/// Hands back jobs locked under `name` (see the module docs).
async fn release_own(storage: &JobStorage, name: &str) -> Result<u64, WorkerError> {
    let err = |e: sqlx::Error| WorkerError::Storage(e.to_string());
    let n = match &storage.backend {
        Backend::Sqlite { storage, .. } => sqlx::query(
            "UPDATE Jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL, done_at = NULL, \
             attempts = attempts + 1 \
             WHERE job_type = ? AND lock_by = ? AND status IN ('Running', 'Queued')",
        )
        .bind(QUEUE)
        .bind(name)
        .execute(storage.pool())
        .await
        .map_err(err)?
        .rows_affected(),
        Backend::Postgres { storage } => sqlx::query(
            "UPDATE apalis.jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL, done_at = NULL, \
             attempts = attempts + 1 \
             WHERE job_type = $1 AND lock_by = $2 AND status IN ('Running', 'Queued')",
        )
        .bind(QUEUE)
        .bind(name)
        .execute(storage.pool())
        .await
        .map_err(err)?
        .rows_affected(),
    };
    if n > 0 {
        tracing::info!(
            worker = name,
            jobs = n,
            "handed back jobs of this worker's previous run"
        );
    }
    Ok(n)
}

/// Runs the workers until `shutdown` resolves. See the module docs.
pub async fn run(
    storage: JobStorage,
    deps: Deps,
    config: WorkerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    if config.concurrency == 0 {
        return Err(WorkerError::Config("concurrency must be at least 1".into()));
    }
    release_own(&storage, &config.name).await?;
    let rt = Arc::new(Runtime {
        deps,
        settings: config.jobs.clone(),
        max_deliveries: storage.max_deliveries(),
        storage: storage.clone(),
    });
    let name = config.name.clone();
    let concurrency = config.concurrency;
    // Fetch no more than can run: a fetched job is locked to this worker, and one waiting in
    // its buffer would neither run nor be free for an idle worker elsewhere.
    let batch = concurrency;

    macro_rules! worker {
        ($backend:expr) => {{
            let rt = rt.clone();
            let name = name.clone();
            move |_restarts: usize| {
                WorkerBuilder::new(name.as_str())
                    .backend($backend)
                    .data(rt.clone())
                    .catch_panic()
                    .concurrency(concurrency)
                    .build(handle)
            }
        }};
    }

    let mut monitor = Monitor::new();
    match &storage.backend {
        Backend::Sqlite {
            storage: s,
            listener,
        } => {
            let cfg = apalis_sqlite::Config::default()
                .queue(QUEUE)
                .heartbeat_interval(config.heartbeat)
                .missed_heartbeats(config.missed_heartbeats)
                .batch_size(batch);
            let (s, listener) = (s.clone(), listener.clone());
            let backstop = config.poll_backstop;
            monitor = monitor.register(worker!(
                s.clone().with_config(cfg.clone()).poll_with_strategy(
                    Strategy::new().stream(listener.clone()).interval(backstop)
                )
            ));
        }
        Backend::Postgres { storage: s } => {
            let cfg = apalis_postgres::Config::default()
                .queue(QUEUE)
                .heartbeat_interval(config.heartbeat)
                .missed_heartbeats(config.missed_heartbeats)
                .batch_size(batch);
            let s = s.clone();
            let backstop = config.poll_backstop;
            monitor = monitor.register(worker!(
                s.clone().with_config(cfg.clone()).poll_with_strategy(
                    Strategy::new()
                        .stream(Pubsub::new(s.pool().clone(), QUEUE.to_owned()))
                        .interval(backstop)
                )
            ));
        }
    }
    if config.run_cron {
        let schedule = cron::Schedule::from_str(&config.cleanup_schedule).map_err(|e| {
            WorkerError::Config(format!(
                "cleanup schedule `{}`: {e}",
                config.cleanup_schedule
            ))
        })?;
        let data = CronData {
            storage: storage.clone(),
            retain_secs: config.cleanup_retain.as_secs(),
        };
        let cron_name = format!("{name}-cron");
        monitor = monitor.register(move |_restarts| {
            WorkerBuilder::new(cron_name.as_str())
                .backend(CronScheduler::new(schedule.clone()))
                .data(data.clone())
                .build(tick)
        });
    }
    monitor
        // A worker whose backend failed (database briefly unreachable) is started again; the
        // pool's connect timeout paces the attempts.
        .should_restart(|_ctx, _err| true)
        .shutdown_timeout(config.shutdown_timeout)
        .run_with_signal(async move {
            shutdown.await;
            Ok(())
        })
        .await
        .map_err(|e| WorkerError::Monitor(e.to_string()))
}
