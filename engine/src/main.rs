//! `hotpath` — the engine binary: `serve`, `worker`, `migrate`, `scenario check`, `openapi`,
//! and `play` (a console client of a running server, [`play`]).
//!
//! Exit codes: 0 success, 1 runtime failure (a backend could not be reached, a bind failed),
//! 2 bad usage or an invalid scenario file.

/// mimalloc: glibc's malloc took a third of the engine's CPU at 64 connections (perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use hotpath_background::llm::LlmConfig;
use hotpath_background::worker::{WorkerConfig, default_name};
use hotpath_engine::api::{ApiConfig, AppState};
use hotpath_engine::compose::{self, BackendConfig, Backends, Shutdown};
use hotpath_engine::hot::HotConfig;

mod play;

#[derive(Parser)]
#[command(
    name = "hotpath",
    version,
    about = "An engine for LLM-driven narrative games that never waits for an LLM"
)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "HOTPATH_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Backend {
    /// Directory of the embedded deployment's SQLite files.
    #[arg(long, env = "HOTPATH_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Redis for the cache and event streams (distributed deployment).
    #[arg(long, env = "HOTPATH_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// PostgreSQL for games, events, planned actions and the job storage (distributed).
    #[arg(long, env = "HOTPATH_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

impl Backend {
    fn config(&self) -> BackendConfig {
        BackendConfig {
            data_dir: self.data_dir.clone(),
            redis_url: self.redis_url.clone(),
            database_url: self.database_url.clone(),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API. With no backend flags: the embedded deployment (SQLite under
    /// --data-dir, in-process cache, stream and workers).
    Serve {
        #[arg(long, env = "HOTPATH_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[command(flatten)]
        backend: Backend,
        /// Run job workers in this process (default: yes when embedded, no when distributed).
        #[arg(long, env = "HOTPATH_WORKERS")]
        workers: Option<bool>,
        /// Extra scenario files (`*.toml`) to offer, besides the built-in ones.
        #[arg(long = "scenarios", env = "HOTPATH_SCENARIOS")]
        scenario_dirs: Vec<PathBuf>,
        /// The hot path's answer budget, in milliseconds.
        #[arg(long, env = "HOTPATH_BUDGET_MS", default_value_t = 200)]
        budget_ms: u64,
        /// A game's writer with nothing to do for this many seconds drops the game's state
        /// from memory (the next action reloads it: a cache read and a log read).
        #[arg(long, env = "HOTPATH_WRITER_IDLE_SECS", default_value_t = 10)]
        writer_idle_secs: u64,
        /// Actions one game may have queued in this process before it answers 429.
        #[arg(long, env = "HOTPATH_WRITER_QUEUE", default_value_t = 512)]
        writer_queue: usize,
        /// Sustained actions per second per player.
        #[arg(long, env = "HOTPATH_RATE_PER_SECOND", default_value_t = 10)]
        rate_per_second: u32,
        /// Bearer tokens matching no player a client address may send per second (sustained)
        /// before its requests answer 429 ahead of the database lookup.
        #[arg(long, env = "HOTPATH_UNKNOWN_TOKENS_PER_SECOND", default_value_t = 10)]
        unknown_tokens_per_second: u32,
        /// How many such tokens a client address may send at once.
        #[arg(long, env = "HOTPATH_UNKNOWN_TOKENS_BURST", default_value_t = 100)]
        unknown_tokens_burst: u32,
        /// Event streams (`GET /v1/games/{game}/events`) one player may hold open at once in
        /// this process; one more answers 429.
        #[arg(long, env = "HOTPATH_MAX_STREAMS_PER_PLAYER", default_value_t = 8)]
        max_streams_per_player: usize,
        /// How often `/metrics` reads its figures from the storage (job counts, guards, model
        /// calls, spend), in the background: a scrape shows the last read.
        #[arg(long, env = "HOTPATH_METRICS_REFRESH_SECS", default_value_t = 5)]
        metrics_refresh_secs: u64,
        /// How long a game's invite (join link) works; `POST /v1/games/{game}/invite` replaces
        /// it sooner.
        #[arg(long, env = "HOTPATH_INVITE_TTL_SECS", default_value_t = 24 * 3600)]
        invite_ttl_secs: u64,
        /// Players a game may have; joining or adding one more answers 403.
        #[arg(long, env = "HOTPATH_MAX_PLAYERS_PER_GAME", default_value_t = 64)]
        max_players_per_game: usize,
        /// Attempts to join one game with an invite per minute (sustained, and as a burst),
        /// counted across every `serve`; over it, 429.
        #[arg(long, env = "HOTPATH_JOINS_PER_MINUTE", default_value_t = 10)]
        joins_per_minute: u32,
    },
    /// Run job workers only (distributed deployment).
    Worker {
        #[command(flatten)]
        backend: Backend,
        /// Jobs run at once by this process (default: the provider's concurrency limit,
        /// `HOTPATH_LLM_MAX_CONCURRENT`: jobs wait on the model, not on this machine's CPU).
        #[arg(long, env = "HOTPATH_WORKER_CONCURRENCY")]
        concurrency: Option<usize>,
        /// Also schedule the periodic cleanup (run it in exactly one process).
        #[arg(long, env = "HOTPATH_CRON")]
        cron: bool,
        /// Serve this worker's Prometheus metrics (`GET /metrics`: model calls, tokens, pickup
        /// latency, content lag) on this address.
        #[arg(long, env = "HOTPATH_WORKER_METRICS_LISTEN")]
        metrics_listen: Option<SocketAddr>,
        /// This worker's name in the job storage (default `worker-{hostname}-{pid}-{random}`,
        /// new for every process). A chosen name must not be held by another live worker: at
        /// start a worker takes back every job locked under its name, as its dead predecessor's.
        #[arg(long, env = "HOTPATH_WORKER_NAME", value_parser = worker_name)]
        worker_name: Option<String>,
        /// How often the worker tells the storage it is alive; the jobs of a worker that missed
        /// two heartbeats go to other workers.
        #[arg(long, env = "HOTPATH_HEARTBEAT_SECS", default_value_t = 2,
            value_parser = clap::value_parser!(u64).range(1..=3600))]
        heartbeat_secs: u64,
    },
    /// Inspect and manage the slow path's jobs: list them, show one, list dead letters with
    /// their reasons, run dead letters again, purge finished ones.
    Jobs {
        #[command(flatten)]
        backend: Backend,
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Create or upgrade the database schema, then exit.
    Migrate {
        #[command(flatten)]
        backend: Backend,
    },
    /// Play a game in this terminal against a running server: prints its events as they
    /// arrive and sends each line you type as an action (`/kind [target] text`, or plain text).
    Play {
        /// The server.
        #[arg(
            long,
            env = "HOTPATH_URL",
            hide_env_values = true,
            default_value = "http://127.0.0.1:8080"
        )]
        url: String,
        /// The game to join (with --token).
        #[arg(long, required_unless_present = "new")]
        game: Option<String>,
        /// Your player token for --game.
        #[arg(
            long,
            env = "HOTPATH_TOKEN",
            hide_env_values = true,
            required_unless_present = "new"
        )]
        token: Option<String>,
        /// Start a new game and join it (needs the admin token).
        #[arg(long, conflicts_with_all = ["game", "token"])]
        new: bool,
        /// The admin token, for --new.
        #[arg(long, env = "HOTPATH_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// The scenario of a new game.
        #[arg(long, default_value = "harbor-strike")]
        scenario: String,
        /// Your name in a new game.
        #[arg(long, default_value = "Player")]
        name: String,
        /// The scene to start in (default: the scenario's first).
        #[arg(long)]
        scene: Option<String>,
    },
    /// Print the HTTP API's OpenAPI document (what `GET /openapi.json` serves) and exit.
    Openapi,
    /// Scenario tools.
    Scenario {
        #[command(subcommand)]
        command: ScenarioCommand,
    },
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Counts by state and kind (`pending`, `running`, `retrying`, `done`, `dead`).
    Stats,
    /// Jobs in one apalis status (`Pending`, `Queued`, `Running`, `Done`, `Failed`, `Killed`),
    /// newest first.
    List {
        #[arg(long, default_value = "Pending")]
        status: String,
        /// Only this kind (e.g. `prepare_scene_reactions`).
        #[arg(long)]
        kind: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One job: its message, status, attempts and last result.
    Show { id: String },
    /// Dead letters, newest first, with the reason each was given up.
    Dead {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Runs dead letters again: the given ids, or with `--all` every dead letter.
    Requeue {
        ids: Vec<String>,
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Deletes finished jobs done more than `--done-secs` ago and dead letters older than
    /// `--dead-secs` (what the periodic cleanup does with the default retention).
    Purge {
        #[arg(long, default_value_t = hotpath_cache::jobs::DONE_JOBS_RETAIN_SECS)]
        done_secs: u64,
        #[arg(long, default_value_t = hotpath_cache::jobs::DEAD_JOBS_RETAIN_SECS)]
        dead_secs: u64,
    },
}

/// A worker name: what the job storage's `lock_by` can hold and logs can quote.
fn worker_name(raw: &str) -> Result<String, String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if raw.is_empty() || raw.len() > 128 || !raw.chars().all(ok) {
        return Err("1 to 128 characters among ASCII letters, digits, `-`, `_` and `.`".into());
    }
    Ok(raw.to_owned())
}

fn print_job(r: &hotpath_background::JobRecord) {
    let kind = r.job.as_ref().map_or("?", |j| j.kind().as_str());
    let game = r
        .job
        .as_ref()
        .and_then(|j| j.game_id())
        .map(|g| g.to_string())
        .unwrap_or_default();
    let reason = r.failure().map(|x| format!("  {x}")).unwrap_or_default();
    println!(
        "{}  {:<8} {:<26} attempts {}/{}  {}{}",
        r.id, r.status, kind, r.attempts, r.max_attempts, game, reason
    );
}

async fn jobs_command(backend: &Backend, command: JobsCommand) -> anyhow::Result<()> {
    use hotpath_cache::jobs::{JobAdmin, JobFilter, JobQueue, Requeue};
    let backends = Backends::connect(&backend.config()).await?;
    let jobs = &backends.jobs;
    match command {
        JobsCommand::Stats => {
            for (state, kinds) in jobs.counts().await? {
                for (kind, n) in kinds {
                    println!("{state:<9} {kind:<28} {n}");
                }
            }
        }
        JobsCommand::List {
            status,
            kind,
            limit,
        } => {
            let kind = match kind {
                Some(name) => Some(
                    hotpath_cache::jobs::JobKind::ALL
                        .into_iter()
                        .find(|k| k.as_str() == name)
                        .ok_or_else(|| anyhow::anyhow!("no job kind `{name}`"))?,
                ),
                None => None,
            };
            // The kind is matched in the storage, so `--limit` counts jobs of that kind.
            let filter = JobFilter {
                status: Some(status),
                kind,
            };
            for r in jobs.list(&filter, limit).await? {
                print_job(&r);
            }
        }
        JobsCommand::Show { id } => {
            let r = jobs
                .job(&id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no job `{id}`"))?;
            print_job(&r);
            if let Some(job) = &r.job {
                println!("{}", serde_json::to_string_pretty(job)?);
            }
            if let Some(last) = &r.last_result {
                println!("last result: {last}");
            }
        }
        JobsCommand::Dead { limit } => {
            let dead = jobs.dead_letters(limit).await?;
            if dead.is_empty() {
                println!("no dead letters");
            }
            for r in &dead {
                print_job(r);
            }
        }
        JobsCommand::Requeue { ids, all } => {
            if ids.is_empty() && !all {
                anyhow::bail!("name the jobs to run again, or give --all for every dead letter");
            }
            let which = if all { Requeue::All } else { Requeue::Ids(ids) };
            let n = JobAdmin::requeue(jobs, &which).await?;
            println!("{n} dead letter(s) queued again");
        }
        JobsCommand::Purge {
            done_secs,
            dead_secs,
        } => {
            let n = jobs.purge(done_secs, dead_secs).await?;
            println!("{n} job(s) deleted");
        }
    }
    Ok(())
}

#[derive(Subcommand)]
enum ScenarioCommand {
    /// Check a scenario file; errors name the file, the field and what was expected.
    Check { file: PathBuf },
}

fn init_logs(json: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The console client prints its own lines; the engine's logs would interleave with them.
    if !matches!(cli.command, Command::Play { .. }) {
        init_logs(cli.log_json);
    }
    if let Command::Scenario {
        command: ScenarioCommand::Check { file },
    } = &cli.command
    {
        return match compose::check_scenario(file) {
            Ok(s) => {
                println!(
                    "{}: ok — `{}`: {} scenes, {} stakeholders, {} conflicts",
                    file.display(),
                    s.name,
                    s.scenes.len(),
                    s.stakeholders.len(),
                    s.conflicts.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    if let Command::Openapi = &cli.command {
        let (_, document) = hotpath_engine::api::router();
        return match document.to_pretty_json() {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve {
            listen,
            backend,
            workers,
            scenario_dirs,
            budget_ms,
            writer_idle_secs,
            writer_queue,
            rate_per_second,
            unknown_tokens_per_second,
            unknown_tokens_burst,
            max_streams_per_player,
            metrics_refresh_secs,
            invite_ttl_secs,
            max_players_per_game,
            joins_per_minute,
        } => {
            let scenarios = compose::load_scenarios(&scenario_dirs)?;
            let admin_token = match std::env::var("HOTPATH_ADMIN_TOKEN") {
                Ok(t) if !t.is_empty() => t,
                // Behind a load balancer each process would invent its own, and admin calls
                // would fail on all but one.
                _ if backend.redis_url.is_some() || backend.database_url.is_some() => {
                    anyhow::bail!(
                        "the distributed deployment needs HOTPATH_ADMIN_TOKEN: set the same admin \
                         token on every `hotpath serve` (each would otherwise invent its own)"
                    )
                }
                _ => {
                    let t = format!("hpa_{}", uuid::Uuid::new_v4().simple());
                    println!("admin token (set HOTPATH_ADMIN_TOKEN to choose one): {t}");
                    t
                }
            };
            let backends = Backends::connect(&backend.config()).await?;
            let hot_config = HotConfig {
                budget: Duration::from_millis(budget_ms),
                writer_idle: Duration::from_secs(writer_idle_secs.max(1)),
                writer_queue: writer_queue.max(1),
                ..HotConfig::default()
            };
            let api_config = ApiConfig {
                rate_per_second: std::num::NonZeroU32::new(rate_per_second.max(1)).expect("max(1)"),
                burst: std::num::NonZeroU32::new(rate_per_second.max(1) * 2).expect("max(1)"),
                unknown_tokens_per_second: std::num::NonZeroU32::new(
                    unknown_tokens_per_second.max(1),
                )
                .expect("max(1)"),
                unknown_tokens_burst: std::num::NonZeroU32::new(unknown_tokens_burst.max(1))
                    .expect("max(1)"),
                max_streams_per_player: max_streams_per_player.max(1),
                metrics_refresh: Duration::from_secs(metrics_refresh_secs.max(1)),
                invite_ttl: Duration::from_secs(invite_ttl_secs.max(1)),
                max_players_per_game: max_players_per_game.max(1),
                joins_per_minute: std::num::NonZeroU32::new(joins_per_minute.max(1))
                    .expect("max(1)"),
                joins_burst: std::num::NonZeroU32::new(joins_per_minute.max(1)).expect("max(1)"),
                ..ApiConfig::default()
            };
            let hot = backends.hot_path(scenarios, hot_config);
            let mut state = AppState::new(hot, &admin_token, &api_config);
            // Every engine process of the deployment counts in the same limits.
            state.limits = state.limits.shared(backends.limiter.clone());
            state.queue = Some(Arc::new(backends.jobs.clone()));
            let run_workers = workers.unwrap_or(backends.mode == "embedded");
            let llm = LlmConfig::from_env().context("reading HOTPATH_LLM_* settings")?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            tracing::info!(mode = backends.mode, %listen, workers = run_workers, "hotpath serving");
            println!("hotpath listening on http://{}", listener.local_addr()?);

            let shutdown = Shutdown::default();
            let signal = shutdown.clone();
            tokio::spawn(async move {
                compose::shutdown_signal().await;
                signal.trigger();
            });
            let workers_done = if run_workers {
                let config = WorkerConfig {
                    name: default_name("serve"),
                    concurrency: llm.max_concurrent,
                    // Embedded: this process is the only one, so it also runs the cleanup.
                    run_cron: backends.mode == "embedded",
                    ..WorkerConfig::default()
                };
                let stop = shutdown.wait();
                let backends = backends.clone();
                // Their own thread, at a lower priority: the players' requests go first.
                Some(compose::in_background("hotpath-workers", async move {
                    backends.run_workers(&llm, config, stop).await
                })?)
            } else {
                None
            };
            let served = compose::serve(listener, state, &api_config, shutdown.wait()).await;
            // The server stopped on its own (an accept error): take the workers down with it.
            shutdown.trigger();
            if let Some(w) = workers_done {
                w.await
                    .context("the workers' thread ended without a result")??;
            }
            served?;
            tracing::info!("stopped");
            Ok(())
        }
        Command::Worker {
            backend,
            concurrency,
            cron,
            metrics_listen,
            worker_name,
            heartbeat_secs,
        } => {
            if backend.redis_url.is_none() || backend.database_url.is_none() {
                anyhow::bail!(
                    "`hotpath worker` serves the distributed deployment: give --redis-url and --database-url \
                     (or HOTPATH_REDIS_URL and HOTPATH_DATABASE_URL); the embedded deployment runs its workers inside `hotpath serve`"
                );
            }
            let llm = LlmConfig::from_env().context("reading HOTPATH_LLM_* settings")?;
            let backends = Backends::connect(&backend.config()).await?;
            let config = WorkerConfig {
                name: worker_name.unwrap_or_else(|| default_name("worker")),
                concurrency: concurrency.unwrap_or(llm.max_concurrent),
                heartbeat: Duration::from_secs(heartbeat_secs),
                run_cron: cron,
                ..WorkerConfig::default()
            };
            if let Some(addr) = metrics_listen {
                let handle = hotpath_engine::api::metrics_handle();
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding {addr} for metrics"))?;
                let app = axum::Router::new().route(
                    "/metrics",
                    axum::routing::get(move || {
                        let handle = handle.clone();
                        async move { handle.render() }
                    }),
                );
                tracing::info!(%addr, "worker metrics");
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, app).await {
                        tracing::warn!(error = %e, "the metrics listener stopped");
                    }
                });
            }
            println!(
                "hotpath worker {} running {} jobs at once",
                config.name, config.concurrency
            );
            backends
                .run_workers(&llm, config, compose::shutdown_signal())
                .await?;
            tracing::info!("worker stopped");
            Ok(())
        }
        Command::Jobs { backend, command } => jobs_command(&backend, command).await,
        Command::Migrate { backend } => {
            let b = Backends::connect(&backend.config()).await?;
            println!("migrations applied ({} deployment)", b.mode);
            Ok(())
        }
        Command::Play {
            url,
            game,
            token,
            new,
            admin_token,
            scenario,
            name,
            scene,
        } => {
            play::run(play::PlayArgs {
                url,
                game,
                token,
                new,
                admin_token,
                scenario,
                name,
                scene,
            })
            .await
        }
        Command::Scenario { .. } | Command::Openapi => {
            unreachable!("handled before the runtime starts")
        }
    }
}
