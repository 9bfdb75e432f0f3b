//! The composition root: turns command-line settings into a deployment — which backends, which
//! job storage, whether workers run in this process — and serves it. The only module of the
//! engine that uses `hotpath-background`; the hot path sees nothing but traits.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use hotpath_background::JobStorage;
use hotpath_background::jobs::Deps;
use hotpath_background::llm::{self, LlmConfig};
use hotpath_background::worker::{self, WorkerConfig};
use hotpath_cache::cache::{Cache, MemoryCache, RedisCache};
use hotpath_cache::limits::{Limiter, MemoryLimiter, RedisLimiter};
use hotpath_cache::scenario::{self, Scenario};
use hotpath_cache::spend::StoreSpend;
use hotpath_cache::store::{PostgresStore, SqliteStore, Store};
use hotpath_cache::stream::{
    DEFAULT_MAX_LEN, EventStream, LastSeq, MemoryStream, RedisStream, StoreSeqs,
};
use tokio::net::TcpListener;

use crate::api::{self, ApiConfig, AppState};
use crate::hot::{HotConfig, HotPath};

/// Where a deployment keeps its state.
#[derive(Debug, Clone, Default)]
pub struct BackendConfig {
    /// Embedded mode keeps `hotpath.sqlite` here: games, their log and outbox, and the jobs.
    pub data_dir: PathBuf,
    /// Redis for the cache and event streams (distributed).
    pub redis_url: Option<String>,
    /// PostgreSQL for the store and the job storage (distributed).
    pub database_url: Option<String>,
}

/// The backends of one deployment. Cloning shares them.
#[derive(Clone)]
pub struct Backends {
    pub cache: Arc<dyn Cache>,
    pub store: Arc<dyn Store>,
    pub stream: Arc<dyn EventStream>,
    pub jobs: JobStorage,
    /// Rate limits and provider slots: in Redis when distributed (shared by every process), in
    /// this process when embedded.
    pub limiter: Arc<dyn Limiter>,
    /// `embedded` or `distributed`, for logs.
    pub mode: &'static str,
    /// The event stream outlives this process (Redis): a starting relay republishes the recent
    /// outbox into it.
    pub durable_stream: bool,
}

/// How long a backend may take to answer one command before the hot path stops waiting.
const BACKEND_TIMEOUT: Duration = Duration::from_millis(500);

impl Backends {
    pub async fn connect(config: &BackendConfig) -> anyhow::Result<Backends> {
        if config.redis_url.is_some() && config.database_url.is_none() {
            // The jobs would go to a SQLite file under --data-dir that no `hotpath worker` reads.
            anyhow::bail!(
                "--redis-url needs --database-url too: the distributed deployment keeps games and \
                 jobs in PostgreSQL, where every `hotpath worker` reads them; add --database-url \
                 (HOTPATH_DATABASE_URL), or drop --redis-url for the embedded deployment"
            );
        }
        let (store, jobs): (Arc<dyn Store>, JobStorage) = match &config.database_url {
            Some(url) => (
                Arc::new(
                    PostgresStore::connect(url)
                        .await
                        .with_context(|| format!("connecting to PostgreSQL at {}", redact(url)))?,
                ),
                JobStorage::postgres(url)
                    .await
                    .with_context(|| format!("opening the job storage at {}", redact(url)))?,
            ),
            None => {
                std::fs::create_dir_all(&config.data_dir).with_context(|| {
                    format!("creating the data directory {}", config.data_dir.display())
                })?;
                let games = config.data_dir.join("hotpath.sqlite");
                let store = SqliteStore::open(&games)
                    .await
                    .with_context(|| format!("opening {}", games.display()))?;
                // The jobs live in the game database: the committer inserts them in the
                // action's own transaction.
                let jobs = JobStorage::sqlite_in(&store)
                    .await
                    .with_context(|| format!("opening the job tables in {}", games.display()))?;
                (Arc::new(store), jobs)
            }
        };
        // A transient event published into a game's empty stream takes its seq from the log.
        let seqs: Arc<dyn LastSeq> = Arc::new(StoreSeqs(store.clone()));
        type Redisish = (Arc<dyn Cache>, Arc<dyn EventStream>, Arc<dyn Limiter>);
        let (cache, stream, limiter): Redisish = match &config.redis_url {
            Some(url) => {
                let cache = RedisCache::connect(url, BACKEND_TIMEOUT)
                    .await
                    .with_context(|| format!("connecting to Redis at {}", redact(url)))?;
                let limiter = RedisLimiter::new(cache.connection());
                (
                    Arc::new(cache),
                    {
                        let stream = RedisStream::connect(url, BACKEND_TIMEOUT, DEFAULT_MAX_LEN)
                            .await
                            .with_context(|| format!("connecting to Redis at {}", redact(url)))?;
                        stream.set_last_seq(seqs.clone());
                        Arc::new(stream)
                    },
                    Arc::new(limiter),
                )
            }
            None => (
                Arc::new(MemoryCache::default()),
                {
                    let stream = MemoryStream::default();
                    stream.set_last_seq(seqs.clone());
                    Arc::new(stream)
                },
                Arc::new(MemoryLimiter::default()),
            ),
        };
        let mode = if config.redis_url.is_some() || config.database_url.is_some() {
            "distributed"
        } else {
            "embedded"
        };
        Ok(Backends {
            cache,
            store,
            stream,
            jobs,
            limiter,
            mode,
            durable_stream: config.redis_url.is_some(),
        })
    }

    /// The hot path over these backends (it starts the write path's committer and relay).
    pub fn hot_path(&self, scenarios: BTreeMap<String, Scenario>, config: HotConfig) -> HotPath {
        let config = HotConfig {
            relay_recovery: self.durable_stream,
            ..config
        };
        HotPath::new(
            self.cache.clone(),
            self.store.clone(),
            self.stream.clone(),
            scenarios,
            config,
        )
    }
}

impl Backends {
    /// What the slow path's workers write through: the same backends, an LLM provider, and the
    /// job storage for follow-up jobs.
    pub fn worker_deps(&self, llm: &LlmConfig) -> anyhow::Result<Deps> {
        // Budgets are held in the store and provider limits in the limiter, so every process of
        // the deployment shares them (and spend survives restarts).
        let shared = llm::Shared {
            spend: Arc::new(StoreSpend(self.store.clone())),
            limiter: self.limiter.clone(),
        };
        let provider = llm::build_shared(llm, shared).context("configuring the LLM provider")?;
        Ok(Deps {
            cache: self.cache.clone(),
            store: self.store.clone(),
            stream: self.stream.clone(),
            provider,
            queue: Some(Arc::new(self.jobs.clone())),
            answers: Default::default(),
        })
    }

    /// Runs job workers on this deployment's storage until `shutdown` resolves.
    pub async fn run_workers(
        &self,
        llm: &LlmConfig,
        config: WorkerConfig,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let deps = self.worker_deps(llm)?;
        tracing::info!(name = %config.name, concurrency = config.concurrency, provider = ?llm.provider, "workers starting");
        worker::run(self.jobs.clone(), deps, config, shutdown)
            .await
            .context("running the workers")
    }
}

/// Runs `work` on a thread of its own, with its own single-threaded runtime, at a lower CPU
/// priority than the rest of the process; the receiver gets its result. The embedded
/// deployment runs its job workers this way: on a machine the players' requests fill, the slow
/// path gets what they leave (its jobs wait, and dispatch sheds what falls too far behind)
/// instead of taking half the cores — measured, the in-process workers halved the throughput
/// of a busy game while they shared the engine's runtime.
pub fn in_background<F>(
    name: &str,
    work: F,
) -> anyhow::Result<tokio::sync::oneshot::Receiver<anyhow::Result<()>>>
where
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            lower_priority();
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the workers' runtime")
                .and_then(|runtime| runtime.block_on(work));
            let _ = tx.send(result);
        })
        .with_context(|| format!("starting the {name} thread"))?;
    Ok(rx)
}

/// Lowers the calling thread's CPU priority (on Linux the nice value is per thread); where it
/// cannot, the thread runs at the normal priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        /// How much lower the thread runs than the engine's (a nice value).
        const BACKGROUND_NICENESS: i32 = 10;
        // SAFETY: plain system calls on the calling thread's own id.
        let done = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, BACKGROUND_NICENESS)
        };
        if done != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "could not lower the workers' priority; they run at the engine's"
            );
        }
    }
}

/// A URL without its password, for messages: the user info's password and the value of every
/// query parameter whose name says it holds a secret (`password`, `sslpassword`, `token`,
/// `secret`, any case) become `***`.
pub fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = match (base.find("://"), base.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &base[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &base[..scheme + 3], &base[at..]),
                None => base.to_owned(),
            }
        }
        _ => base.to_owned(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((name, _)) if is_secret_name(name) => format!("{name}=***"),
                _ => param.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "secret", "token"]
        .iter()
        .any(|s| name.contains(s))
}

/// The built-in scenarios plus every `*.toml` in `dirs`.
pub fn load_scenarios(dirs: &[PathBuf]) -> anyhow::Result<BTreeMap<String, Scenario>> {
    let mut all = scenario::builtin();
    for dir in dirs {
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("reading scenario directory {}", dir.display()))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        for file in files {
            let s = Scenario::load(&file)?;
            if all.contains_key(&s.name) {
                bail!(
                    "{}: scenario name `{}` is already taken",
                    file.display(),
                    s.name
                );
            }
            all.insert(s.name.clone(), s);
        }
    }
    Ok(all)
}

/// Checks one scenario file; the error names the file, the field and what was expected.
pub fn check_scenario(path: &Path) -> anyhow::Result<Scenario> {
    Ok(Scenario::load(path)?)
}

/// A shutdown signal several tasks can wait on: [`Shutdown::trigger`] once, every
/// [`Shutdown::wait`] resolves.
#[derive(Clone)]
pub struct Shutdown(tokio::sync::watch::Sender<bool>);

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown(tokio::sync::watch::Sender::new(false))
    }
}

impl Shutdown {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, ends event
/// streams, lets in-flight requests finish and returns.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    config: &ApiConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = api::app(state.clone(), config);
    // Forget players who stopped acting, so the rate limiter's memory follows the live players.
    let limits = state.limits.clone();
    let pruner = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            every.tick().await;
            limits.forget_idle();
        }
    });
    // The client's address, for the per-address limit on unknown tokens.
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            state.begin_shutdown();
        })
        .await;
    pruner.abort();
    served
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("redis://h:6379/"), "redis://h:6379/");
    }
}
