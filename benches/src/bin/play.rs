//! `play` — the play simulator: N games × M players acting on a running `hotpath serve` like
//! people do, then a report of what was served ahead of time (see `hotpath_benches::play`).
//!
//! ```sh
//! cargo run --release -p hotpath-benches --bin play -- \
//!     --url http://127.0.0.1:8080 --games 4 --players 2 --period-secs 5 \
//!     --warmup-secs 60 --seconds 240 --json play.json --plot play.svg
//! ```
//!
//! Progress goes to stderr every few seconds, the one-line summary to stdout, the JSON report to
//! `--json` and the SVG plot to `--plot`. `scripts/bench-play` starts the engine (embedded and
//! distributed) and runs this with the issue's setting.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use hotpath_benches::play::{self, PlayConfig};

#[derive(Parser, Debug)]
#[command(about = "Play games on a running hotpath server and report what was served ahead")]
struct Args {
    /// The engine's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The admin token of the engine.
    #[arg(long, env = "HOTPATH_ADMIN_TOKEN")]
    admin_token: String,
    #[arg(long, default_value = "harbor-strike")]
    scenario: String,
    /// Games to play at once.
    #[arg(long, default_value_t = 4)]
    games: usize,
    /// Players per game.
    #[arg(long, default_value_t = 2)]
    players: usize,
    /// Each player acts about this often, in seconds.
    #[arg(long, default_value_t = 5.0)]
    period_secs: f64,
    /// Each delay is the period × (1 ± this), uniformly.
    #[arg(long, default_value_t = 0.3)]
    jitter: f64,
    /// Seconds of play not counted, first.
    #[arg(long, default_value_t = 60)]
    warmup_secs: u64,
    /// Seconds of play counted, after the warm-up.
    #[arg(long, default_value_t = 240)]
    seconds: u64,
    /// Seed of the players' choices (scenes, kinds, targets, texts, delays).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Share of `say` actions with a `target` (a streamed dialogue reply).
    #[arg(long, default_value_t = 0.35)]
    target_share: f64,
    /// Chance that a player moves to another scene after an action.
    #[arg(long, default_value_t = 0.2)]
    move_share: f64,
    /// Progress on stderr every this many seconds (0: none).
    #[arg(long, default_value_t = 5)]
    progress_secs: u64,
    /// Width of the hit-ratio windows, in seconds.
    #[arg(long, default_value_t = 10)]
    window_secs: u64,
    /// Write the JSON report here (default: not written).
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Write the SVG plot here (default: not drawn).
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
    /// A label for the report (e.g. the deployment).
    #[arg(long, default_value = "")]
    label: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    anyhow::ensure!(
        a.games > 0 && a.players > 0,
        "--games and --players must be > 0"
    );
    anyhow::ensure!(a.period_secs > 0.0, "--period-secs must be > 0");
    let config = PlayConfig {
        url: a.url,
        admin_token: a.admin_token,
        scenario: a.scenario,
        games: a.games,
        players: a.players,
        period: Duration::from_secs_f64(a.period_secs),
        jitter: a.jitter,
        warmup: Duration::from_secs(a.warmup_secs),
        seconds: Duration::from_secs(a.seconds),
        seed: a.seed,
        target_share: a.target_share,
        move_share: a.move_share,
        progress_every: Duration::from_secs(a.progress_secs),
        window: Duration::from_secs(a.window_secs.max(1)),
        label: a.label,
    };
    let report = play::run(&config).await?;
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("play: report written to {}", path.display());
    }
    if let Some(path) = &a.plot {
        play::plot(&report, path)?;
        eprintln!("play: plot written to {}", path.display());
    }
    for note in &report.notes {
        eprintln!("play: note: {note}");
    }
    println!("{}", report.summary());
    Ok(())
}
