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
    #[arg(long, env = "HOTPATH_REDIS_URL")]
    redis_url: Option<String>,
    /// PostgreSQL for games, events, planned actions and the job storage (distributed).
    #[arg(long, env = "HOTPATH_DATABASE_URL")]
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
        #[arg(long, env = "HOTPATH_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The game to join (with --token).
        #[arg(long, required_unless_present = "new")]
        game: Option<String>,
        /// Your player token for --game.
        #[arg(long, env = "HOTPATH_TOKEN", required_unless_present = "new")]
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
        } => {
            let scenarios = compose::load_scenarios(&scenario_dirs)?;
            let backends = Backends::connect(&backend.config()).await?;
            let admin_token = match std::env::var("HOTPATH_ADMIN_TOKEN") {
                Ok(t) if !t.is_empty() => t,
                _ => {
                    let t = format!("hpa_{}", uuid::Uuid::new_v4().simple());
                    println!("admin token (set HOTPATH_ADMIN_TOKEN to choose one): {t}");
                    t
                }
            };
            let hot_config = HotConfig {
                budget: Duration::from_millis(budget_ms),
                writer_idle: Duration::from_secs(writer_idle_secs.max(1)),
                writer_queue: writer_queue.max(1),
                ..HotConfig::default()
            };
            let api_config = ApiConfig {
                rate_per_second: std::num::NonZeroU32::new(rate_per_second.max(1)).expect("max(1)"),
                burst: std::num::NonZeroU32::new(rate_per_second.max(1) * 2).expect("max(1)"),
                ..ApiConfig::default()
            };
            let hot = backends.hot_path(scenarios, hot_config);
            let mut state = AppState::new(hot, &admin_token, &api_config);
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
                Some(tokio::spawn(async move {
                    backends.run_workers(&llm, config, stop).await
                }))
            } else {
                None
            };
            let served = compose::serve(listener, state, &api_config, shutdown.wait()).await;
            // The server stopped on its own (an accept error): take the workers down with it.
            shutdown.trigger();
            if let Some(w) = workers_done {
                w.await.context("worker task")??;
            }
            served?;
            tracing::info!("stopped");
            Ok(())
        }
        Command::Worker {
            backend,
            concurrency,
            cron,
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
                name: default_name("worker"),
                concurrency: concurrency.unwrap_or(llm.max_concurrent),
                run_cron: cron,
                ..WorkerConfig::default()
            };
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
