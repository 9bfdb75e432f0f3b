//! Running the workers: [`run`] consumes a [`JobStorage`] with one apalis worker (named
//! [`WorkerConfig::name`], `{role}-{hostname}-{pid}-{8 random alphanumerics}` by default) under
//! an apalis `Monitor`, until `shutdown` resolves; then it stops fetching, hands back jobs
//! fetched but not started, and waits up to [`WorkerConfig::shutdown_timeout`] for running ones.
//!
//! Wake-ups: on SQLite the storage's update hook wakes the worker the moment a job is inserted
//! in this process; on PostgreSQL a LISTEN connection is woken by apalis' NOTIFY trigger. The
//! heartbeat (a few seconds) is also when a worker re-enqueues the jobs of workers that stopped
//! beating — so a job whose worker died is picked up again after about two heartbeats, by any
//! worker, whatever its name.
//!
//! Names: the random part makes every process's name new, so two live workers never share one
//! (in containers every process is pid 1 on a host name that may repeat). A shared name would
//! be harmful twice over: apalis would see one worker, and [`run`] — which, before it starts,
//! hands back every job still locked under its own name — would take a live worker's jobs.
//! That hand-back closes a gap apalis leaves for a name that *is* reused on purpose
//! (`hotpath worker --worker-name`, across restarts): PostgreSQL re-enqueues only jobs of
//! workers whose last heartbeat is old, and a worker restarted under the same name refreshes
//! that heartbeat at once, which would strand the jobs its previous life held. With a default
//! name there is nothing to hand back; with a chosen one, the operator promises that no other
//! live worker holds it.
//!
//! Restarts: a worker whose backend fails (the database unreachable while it registers or
//! fetches) is started again after a [`RestartBackoff`] — 100 ms doubling to 30 s, back to
//! 100 ms after a run that lasted a minute — not in a tight loop against a database that is
//! down.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use apalis_cron::{CronScheduler, Tick};
use apalis_postgres::Pubsub;
use hotpath_cache::jobs::{CleanupExpiredActions, Job, JobQueue};

use crate::jobs::{self, Deps, Failure, JobSettings};
use crate::queue::{Backend, JobStorage, QUEUE, REQUEUED_AT};

#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    /// Unique among live workers of the storage: [`default_name`] unless chosen.
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

/// `{role}-{hostname}-{pid}-{8 random alphanumerics}`: host and pid say where it runs; the
/// random part keeps it unique when they repeat (containers, where every process is pid 1).
pub fn default_name(role: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{role}-{host}-{}-{}", std::process::id(), name_suffix())
}

/// 8 lowercase alphanumerics from the OS's randomness (a v4 UUID's 122 random bits): 36^8,
/// about 2.8 × 10^12 names, for a handful of live workers.
fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut bits = uuid::Uuid::new_v4().as_u128();
    (0..8)
        .map(|_| {
            let c = ALPHABET[(bits % 36) as usize] as char;
            bits /= 36;
            c
        })
        .collect()
}

/// How long to wait before starting a worker again after its run ended in an error: 100 ms,
/// doubling up to 30 s, and 100 ms again once a run lasted [`RestartBackoff::RESET_AFTER`]
/// (the failure is then a new one, not the same outage going on).
#[derive(Debug, Clone, PartialEq)]
pub struct RestartBackoff {
    next: Duration,
}

impl Default for RestartBackoff {
    fn default() -> Self {
        RestartBackoff {
            next: RestartBackoff::FIRST,
        }
    }
}

impl RestartBackoff {
    pub const FIRST: Duration = Duration::from_millis(100);
    pub const MAX: Duration = Duration::from_secs(30);
    pub const RESET_AFTER: Duration = Duration::from_secs(60);

    /// The wait before the next start, after a run that lasted `ran` and failed.
    pub fn after_failure(&mut self, ran: Duration) -> Duration {
        if ran >= RestartBackoff::RESET_AFTER {
            self.next = RestartBackoff::FIRST;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(RestartBackoff::MAX);
        wait
    }
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
    meta: MetadataStore,
) -> Result<(), BoxDynError> {
    let delivery = attempt.current().max(1) as u32;
    let job_id = id.to_string();
    // Its dispatch, or the operator's requeue that made it run again.
    let since = jobs::counted_from(&job_id, meta.get(REQUEUED_AT));
    if delivery > rt.max_deliveries {
        // Each earlier delivery ended with its worker gone (crash, kill, OOM): running it again
        // would likely take this worker down too. Given up like any other dead job, it gives
        // its guard back, so the next action that needs its work can ask again.
        release_guard(&rt, &job, &job_id).await;
        return Err(AbortError::new(format!(
            "{}: delivered {delivery} times without finishing; each worker running it stopped",
            job.kind().as_str()
        ))
        .into());
    }
    if delivery == 1
        && let Some(at) = since
    {
        // From dispatch to a worker starting it: how long the queue held it.
        let waited = (hotpath_cache::time::now_ms() - at).max(0) as f64 / 1000.0;
        metrics::histogram!("hotpath_job_pickup_seconds", "kind" => job.kind().as_str())
            .record(waited);
    }
    match jobs::execute_from(&job, &job_id, since, delivery, &rt.deps, &rt.settings).await {
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

/// The shutdown signal, shared by every (re)start of the workers.
type Stop = futures::future::Shared<futures::future::BoxFuture<'static, ()>>;

/// Runs the workers until `shutdown` resolves. See the module docs.
pub async fn run(
    storage: JobStorage,
    deps: Deps,
    config: WorkerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    use futures::FutureExt;

    if config.concurrency == 0 {
        return Err(WorkerError::Config("concurrency must be at least 1".into()));
    }
    let schedule = match config.run_cron {
        true => Some(
            cron::Schedule::from_str(&config.cleanup_schedule).map_err(|e| {
                WorkerError::Config(format!(
                    "cleanup schedule `{}`: {e}",
                    config.cleanup_schedule
                ))
            })?,
        ),
        false => None,
    };
    // At start a failure is the caller's to report (the storage cannot be reached at all);
    // later ones are an outage the restarts below wait out.
    release_own(&storage, &config.name).await?;
    let rt = Arc::new(Runtime {
        deps,
        settings: config.jobs.clone(),
        max_deliveries: storage.max_deliveries(),
        storage: storage.clone(),
    });
    let stop: Stop = shutdown.boxed().shared();

    let jobs = supervise(
        &config.name,
        config.shutdown_timeout,
        stop.clone(),
        |restart| {
            let (storage, rt, config) = (&storage, &rt, &config);
            async move {
                if restart {
                    // What the failed run had fetched is still locked under this name.
                    release_own(storage, &config.name).await?;
                }
                Ok(jobs_monitor(storage, rt, config))
            }
        },
    );
    let cron = async {
        let Some(schedule) = schedule else {
            return Ok(());
        };
        let name = format!("{}-cron", config.name);
        let data = CronData {
            storage: storage.clone(),
            retain_secs: config.cleanup_retain.as_secs(),
        };
        supervise(&name, config.shutdown_timeout, stop.clone(), |_| {
            let (name, schedule, data) = (name.clone(), schedule.clone(), data.clone());
            async move {
                Ok(Monitor::new().register(move |_restarts| {
                    WorkerBuilder::new(name.as_str())
                        .backend(CronScheduler::new(schedule.clone()))
                        .data(data.clone())
                        .build(tick)
                }))
            }
        })
        .await
    };
    let (jobs, cron) = tokio::join!(jobs, cron);
    // Jobs still running at the shutdown timeout were dropped with their model calls: their
    // token reservations are being settled now. Wait for that (briefly: the ledger may be the
    // reason of the shutdown), since the process may exit as soon as this returns.
    if tokio::time::timeout(SETTLE_ON_SHUTDOWN, rt.deps.provider.settled())
        .await
        .is_err()
    {
        tracing::warn!(
            ?SETTLE_ON_SHUTDOWN,
            "token reservations were still being settled at shutdown; they stay counted until the day ends"
        );
    }
    jobs.and(cron)
}

/// How long a shutdown waits for the token reservations of dropped calls to be settled.
const SETTLE_ON_SHUTDOWN: Duration = Duration::from_secs(5);

/// A monitor running the job worker on `storage`.
fn jobs_monitor(storage: &JobStorage, rt: &Arc<Runtime>, config: &WorkerConfig) -> Monitor {
    let name = config.name.clone();
    let concurrency = config.concurrency;
    // Fetch no more than can run: a fetched job is locked to this worker, and one waiting in
    // its buffer would neither run nor be free for an idle worker elsewhere.
    let batch = concurrency;
    let backstop = config.poll_backstop;

    macro_rules! worker {
        ($backend:expr) => {{
            let rt = rt.clone();
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
            Monitor::new().register(worker!(
                s.clone().with_config(cfg.clone()).poll_with_strategy(
                    Strategy::new().stream(listener.clone()).interval(backstop)
                )
            ))
        }
        Backend::Postgres { storage: s } => {
            let cfg = apalis_postgres::Config::default()
                .queue(QUEUE)
                .heartbeat_interval(config.heartbeat)
                .missed_heartbeats(config.missed_heartbeats)
                .batch_size(batch);
            let s = s.clone();
            Monitor::new().register(worker!(
                s.clone().with_config(cfg.clone()).poll_with_strategy(
                    Strategy::new()
                        .stream(Pubsub::new(s.pool().clone(), QUEUE.to_owned()))
                        .interval(backstop)
                )
            ))
        }
    }
}

/// Starts a monitor with `start` and runs it until `stop` resolves; a run that ends before
/// (its backend failed: the database unreachable while registering or fetching) is started
/// again after a [`RestartBackoff`] pause. `start(true)` is a restart.
async fn supervise<F, Fut>(
    name: &str,
    shutdown_timeout: Duration,
    stop: Stop,
    mut start: F,
) -> Result<(), WorkerError>
where
    F: FnMut(bool) -> Fut,
    Fut: Future<Output = Result<Monitor, WorkerError>>,
{
    let mut backoff = RestartBackoff::default();
    let mut restart = false;
    loop {
        let began = std::time::Instant::now();
        let ended = match start(restart).await {
            Ok(monitor) => run_until(monitor, stop.clone(), shutdown_timeout).await,
            Err(e) => Err(e.to_string()),
        };
        let Err(error) = ended else {
            return Ok(());
        };
        let wait = backoff.after_failure(began.elapsed());
        tracing::warn!(
            worker = name,
            %error,
            wait_ms = wait.as_millis() as u64,
            "worker failed; starting it again after a pause"
        );
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.clone() => return Ok(()),
        }
        restart = true;
    }
}

/// Runs `monitor` until `stop` resolves (`Ok`: it stopped fetching and waited up to
/// `shutdown_timeout` for running jobs) or its workers end by themselves (`Err`: why).
async fn run_until(monitor: Monitor, stop: Stop, shutdown_timeout: Duration) -> Result<(), String> {
    let context = monitor.context();
    let run = monitor.run();
    tokio::pin!(run);
    tokio::select! {
        ended = &mut run => Err(match ended {
            Ok(()) => "the worker stopped by itself".to_owned(),
            Err(e) => e.to_string(),
        }),
        () = stop => {
            let _ = context.shutdown();
            if tokio::time::timeout(shutdown_timeout, &mut run).await.is_err() {
                tracing::warn!(?shutdown_timeout, "jobs were still running when the shutdown timeout ended");
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_from_100_ms_to_30_s_and_reset_after_a_long_run() {
        let mut b = RestartBackoff::default();
        let quick = Duration::from_millis(5);
        let waits: Vec<u64> = (0..12)
            .map(|_| b.after_failure(quick).as_millis() as u64)
            .collect();
        assert_eq!(
            waits,
            [
                100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000
            ]
        );
        // A run that lasted a while: the next failure is a new outage.
        assert_eq!(
            b.after_failure(RestartBackoff::RESET_AFTER),
            RestartBackoff::FIRST
        );
        assert_eq!(b.after_failure(quick), Duration::from_millis(200));
    }

    #[test]
    fn default_names_differ_within_one_process() {
        let (a, b) = (default_name("worker"), default_name("worker"));
        assert_ne!(a, b);
        let pid = format!("-{}-", std::process::id());
        for name in [&a, &b] {
            assert!(name.starts_with("worker-") && name.contains(&pid), "{name}");
            let suffix = name.rsplit('-').next().unwrap();
            assert_eq!(suffix.len(), 8, "{name}");
            assert!(suffix.chars().all(|c| c.is_ascii_alphanumeric()), "{name}");
        }
    }
}
