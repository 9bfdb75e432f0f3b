//! `chaos` — the history checker's long runs (`hotpath_testkit::chaos`): back-to-back seeded
//! histories on real `hotpath serve` processes, each checked on its own (logs contiguous, no
//! action twice, every answered action in the log where its answer says, replays identical,
//! dispatched jobs stored, event streams complete or `reset`, refused actions absent), and one
//! report over all of them.
//!
//! ```sh
//! cargo build --release -p hotpath-engine -p hotpath-benches
//! target/release/chaos --engine target/release/hotpath --seconds 600 --seed 1 --out chaos-results
//! ```
//!
//! History `i` has seed `S + i`; deployments alternate with `--deployment both`. With no
//! `--redis-url` / `--postgres-url` it starts its own throwaway servers (testkit); given them
//! (`scripts/bench-chaos` does), it uses them, and pauses them through `--redis-pid` and
//! `--postgres-pid` if given. Progress every `--progress-secs`; at the end a summary, each
//! anomaly with its seed and a minimal history to replay, and with `--out` a JSON report
//! (`chaos-report.json`) plus the full history of each failing seed. Exit status 1 if any
//! anomaly was found.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use serde_json::json;

use hotpath_testkit::chaos::recorder::Progress;
use hotpath_testkit::chaos::{
    self, Backends, FaultKind, HistoryConfig, Postgres, Redis, Summary, report,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Deployment {
    Embedded,
    Distributed,
    Both,
}

#[derive(Parser, Debug)]
#[command(about = "Run seeded chaos histories against hotpath engines and check their logs")]
struct Args {
    /// The `hotpath` binary to run.
    #[arg(long, default_value = "target/release/hotpath")]
    engine: PathBuf,
    /// Total time to run histories for (the last one is cut to fit).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// The first history's seed; history `i` uses `seed + i`.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, value_enum, default_value = "both")]
    deployment: Deployment,
    /// A directory for the JSON report and the failing histories.
    #[arg(long)]
    out: Option<PathBuf>,
    /// How long each history's players act.
    #[arg(long, default_value_t = 60)]
    history_secs: u64,
    /// Games per history.
    #[arg(long, default_value_t = 4)]
    games: usize,
    /// Players per game.
    #[arg(long, default_value_t = 4)]
    players: usize,
    /// Event-stream clients per game.
    #[arg(long, default_value_t = 2)]
    stream_clients: usize,
    /// Engines of the distributed deployment, requests round-robin.
    #[arg(long, default_value_t = 2)]
    engines: usize,
    /// Run a `hotpath worker` beside the distributed engines (the dispatched jobs run).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    worker: bool,
    /// Only these faults (comma-separated: slow_commit, pause_redis, pause_postgres,
    /// kill_postgres_connections, restart_redis, kill_engine, restart_engine, quiet_game).
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// The engines' `--budget-ms`.
    #[arg(long)]
    budget_ms: Option<u64>,
    /// Redis to use instead of starting one.
    #[arg(long)]
    redis_url: Option<String>,
    /// Its pid, to pause it.
    #[arg(long)]
    redis_pid: Option<u32>,
    /// A URL of the `postgres` database of a PostgreSQL to use instead of starting one (each
    /// history creates its own database there).
    #[arg(long)]
    postgres_url: Option<String>,
    /// Its postmaster's pid, to pause it.
    #[arg(long)]
    postgres_pid: Option<u32>,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 5)]
    progress_secs: u64,
    /// Where engine logs go (those of failing histories are kept).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Write every history to `--out`, not only the failing ones.
    #[arg(long)]
    save_histories: bool,
}

fn fault_kind(name: &str) -> anyhow::Result<FaultKind> {
    let all = [
        FaultKind::SlowCommit,
        FaultKind::PauseRedis,
        FaultKind::PausePostgres,
        FaultKind::KillPostgresConnections,
        FaultKind::RestartRedis,
        FaultKind::KillEngine,
        FaultKind::RestartEngine,
        FaultKind::QuietGame,
    ];
    all.into_iter()
        .find(|k| k.name() == name)
        .with_context(|| format!("unknown fault {name:?}"))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let engine = std::fs::canonicalize(&args.engine)
        .with_context(|| format!("the engine binary {:?}", args.engine))?;
    let faults = if args.faults.is_empty() {
        None
    } else {
        Some(
            args.faults
                .iter()
                .map(|f| fault_kind(f))
                .collect::<anyhow::Result<Vec<_>>>()?,
        )
    };
    let work = match &args.work {
        Some(w) => w.clone(),
        None => std::env::temp_dir().join(format!("hotpath-chaos-{}", std::process::id())),
    };
    std::fs::create_dir_all(&work)?;
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out)?;
    }

    let mut embedded = matches!(args.deployment, Deployment::Embedded | Deployment::Both)
        .then_some(Backends::Embedded);
    let mut distributed = if matches!(args.deployment, Deployment::Distributed | Deployment::Both) {
        Some(distributed_backends(&args)?)
    } else {
        None
    };

    let started = Instant::now();
    let total = Duration::from_secs(args.seconds);
    let progress = Arc::new(Progress::default());
    let mut overall = Summary::default();
    let mut by_deployment: std::collections::BTreeMap<&'static str, Summary> = Default::default();
    let mut failures = Vec::new();
    let printer = {
        let progress = progress.clone();
        let every = Duration::from_secs(args.progress_secs.max(1));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                println!(
                    "[{:>5.0} s] requests {}, answered 200 {}, faults {}",
                    started.elapsed().as_secs_f64(),
                    progress.requests.load(Ordering::Relaxed),
                    progress.answered.load(Ordering::Relaxed),
                    progress.faults.load(Ordering::Relaxed),
                );
            }
        })
    };

    let mut i = 0u64;
    while started.elapsed() + Duration::from_secs(5) < total {
        // Alternate when both are asked for.
        let backends = match (&mut embedded, &mut distributed) {
            (Some(e), None) => e,
            (None, Some(d)) => d,
            (Some(e), Some(_)) if i.is_multiple_of(2) => e,
            (_, Some(d)) => d,
            (None, None) => bail!("no deployment"),
        };
        let left = total.saturating_sub(started.elapsed()).as_secs_f64();
        // A history's own overhead (start-up, quiet period, catch-up, reads) is some 15 s.
        let seconds = (args.history_secs as f64).min((left - 15.0).max(5.0));
        let cfg = HistoryConfig {
            seed: args.seed + i,
            seconds,
            games: args.games,
            players: args.players,
            stream_clients: args.stream_clients,
            engines: args.engines,
            worker: args.worker,
            faults: faults.clone(),
            budget_ms: args.budget_ms,
            progress: Some(progress.clone()),
        };
        let name = backends.name();
        println!("==> history {i}: {name}, seed {}, {seconds:.0} s", cfg.seed);
        let r = chaos::run_history(&engine, backends, &cfg, &work)
            .await
            .map_err(|e| anyhow::anyhow!("history {i} ({name}, seed {}): {e}", cfg.seed))?;
        let mut one = Summary::default();
        one.add(&r);
        print!("{}", one.text());
        overall.add(&r);
        by_deployment.entry(name).or_default().add(&r);
        if let Some(out) = &args.out
            && (args.save_histories || !r.anomalies.is_empty())
        {
            let path = out.join(format!("history-{name}-{}.json", cfg.seed));
            std::fs::write(&path, serde_json::to_vec(&r)?)?;
            println!("the whole history: {path:?}");
        }
        if !r.anomalies.is_empty() {
            println!("{}", report::replays(&r, 1));
            failures.push(json!({
                "deployment": name,
                "seed": cfg.seed,
                "anomalies": r.anomalies,
                "replays": r.anomalies.iter().take(20).map(|a| report::replay(&r, a)).collect::<Vec<_>>(),
            }));
        }
        i += 1;
    }
    printer.abort();

    println!("\n==> chaos: {:.0} s", started.elapsed().as_secs_f64());
    print!("{}", overall.text());
    for (name, s) in &by_deployment {
        println!("-- {name}");
        print!("{}", s.text());
    }
    if let Some(out) = &args.out {
        let report = json!({
            "seed": args.seed,
            "seconds": started.elapsed().as_secs_f64(),
            "engine": engine,
            "history_secs": args.history_secs,
            "games": args.games,
            "players": args.players,
            "stream_clients": args.stream_clients,
            "engines": args.engines,
            "worker": args.worker,
            "summary": overall,
            "by_deployment": by_deployment,
            "failures": failures,
        });
        let path = out.join("chaos-report.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
        println!("report: {path:?}");
    }
    if overall.anomaly_count() > 0 {
        std::process::exit(1);
    }
    Ok(())
}

fn distributed_backends(args: &Args) -> anyhow::Result<Backends> {
    Ok(match (&args.redis_url, &args.postgres_url) {
        (None, None) => Backends::owned_distributed(),
        (Some(redis), Some(pg)) => Backends::Distributed {
            redis: Redis::External {
                url: redis.clone(),
                pid: args.redis_pid,
            },
            postgres: Postgres {
                admin_url: pg.clone(),
                pid: args.postgres_pid,
                owned: None,
            },
        },
        _ => bail!("give both --redis-url and --postgres-url, or neither"),
    })
}
