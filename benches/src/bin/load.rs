//! `load` — drives a running `hotpath serve` over HTTP and reports what it measured.
//!
//! ```sh
//! cargo run --release -p hotpath-benches --bin load -- \
//!     --url http://127.0.0.1:8080 --games 64 --players 1 --concurrency 64 --seconds 20
//! ```
//!
//! It creates the games and players (admin token from `HOTPATH_ADMIN_TOKEN`), optionally seeds
//! ready reactions so that answers claim from the planned table, then keeps `--concurrency`
//! keep-alive connections busy for `--seconds`, printing progress every second. The JSON report
//! (stdout, or `--json FILE`) has req/s, latency percentiles, status codes and, when given the
//! servers' addresses, PostgreSQL transactions and Redis commands per action (read from their
//! own statistics) and the engine's RSS (`--server-pid`).
//!
//! For a soak (`scripts/bench-soak`): `--rate` paces the connections, `--rss-every N` samples
//! every server's RSS (and, with `--database-url`, the apalis jobs by status) every N seconds
//! into the report, which also keeps 2xx, non-2xx and transport errors per second; `--plot`
//! draws them as an SVG. The report's `rss_summary` has, per process, the first and last
//! sample and the maximum of each half of the run.
//!
//! `--touch-games N` is the memory mode: N games with one player and one action each, then the
//! engine's RSS.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde::Serialize;
use serde_json::{Value, json};

#[derive(Parser, Debug, Clone)]
#[command(about = "Drive a running hotpath server and report throughput, latency and costs")]
struct Args {
    /// The engine's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The admin token of the engine.
    #[arg(long, env = "HOTPATH_ADMIN_TOKEN")]
    admin_token: String,
    /// Games to create.
    #[arg(long, default_value_t = 1)]
    games: usize,
    /// Players per game.
    #[arg(long, default_value_t = 1)]
    players: usize,
    /// Connections kept busy; connection `i` acts in game `i % games` (with fewer connections
    /// than players, each connection takes its share of the players in turn).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// How long to drive load, after the warm-up.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Seconds of load not counted, first.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// The action sent: scene, kind, target (`""`: none, so no dialogue reply is queued) and
    /// text.
    #[arg(long, default_value = "docks")]
    scene: String,
    #[arg(long, default_value = "say")]
    kind: String,
    #[arg(long, default_value = "mara")]
    target: String,
    #[arg(long, default_value = "Mara, the guild trusts you.")]
    text: String,
    /// Ready reactions to seed per stakeholder of the scene, per game, before the run (needs
    /// `--database-url` or `--sqlite`): every answer then claims from the planned table.
    #[arg(long, default_value_t = 0)]
    seed_reactions: u64,
    /// The engine's PostgreSQL (for seeding and transactions per action).
    #[arg(long)]
    database_url: Option<String>,
    /// The embedded engine's SQLite file (for seeding).
    #[arg(long)]
    sqlite: Option<std::path::PathBuf>,
    /// The engine's Redis (for commands per action).
    #[arg(long)]
    redis_url: Option<String>,
    /// The engine's process id (for its RSS); repeat for several engines.
    #[arg(long)]
    server_pid: Vec<u32>,
    /// A name for each `--server-pid`, in the same order (e.g. `serve`, `worker`).
    #[arg(long)]
    server_name: Vec<String>,
    /// Sample the RSS of every `--server-pid` every this many seconds of the counted run (and at
    /// its start), with the apalis jobs by status when `--database-url` is given; 0: RSS at the
    /// end only.
    #[arg(long, default_value_t = 0)]
    rss_every: u64,
    /// At most this many requests per second in all, shared evenly by the connections; 0: each
    /// connection sends its next request as soon as the last is answered.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Draw RSS per process, req/s and errors per second (and the job backlog) over the run as
    /// an SVG here.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
    /// Memory mode: touch this many games (one player, one action each), then report RSS.
    #[arg(long)]
    touch_games: Option<usize>,
    /// Create the games and players (and seed), write them here as JSON
    /// (`[{"game": …, "token": …}, …]`, one per player) and stop: for driving the engine with
    /// another load generator (`scripts/bench-peer` drives it with oha).
    #[arg(long)]
    prepare_only: Option<std::path::PathBuf>,
    /// Write the JSON report here instead of stdout.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// A label for the report (e.g. the deployment).
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Debug, Clone)]
struct Player {
    game: String,
    token: String,
}

#[derive(Serialize)]
struct Report {
    label: String,
    url: String,
    games: usize,
    players: usize,
    concurrency: usize,
    seconds: f64,
    requests: u64,
    requests_per_second: f64,
    latency_ms: Latency,
    status: BTreeMap<String, u64>,
    non_2xx_percent: f64,
    /// PostgreSQL `xact_commit` delta over the counted run, per request.
    db_transactions_per_action: Option<f64>,
    /// Redis `total_commands_processed` delta over the counted run, per request.
    redis_commands_per_action: Option<f64>,
    /// Share of answered reactions whose source was `precomputed`.
    precomputed_reaction_share: f64,
    /// Answers that were not 2xx plus transport errors (timeouts, connection errors).
    errors: u64,
    /// The run's answers (warm-up included) against the games' logs afterwards.
    accounting: Accounting,
    transport_errors: u64,
    rss_kib: BTreeMap<u32, u64>,
    /// `--server-name`s by process id.
    server_names: BTreeMap<u32, String>,
    /// Paced at this many requests per second in all (`--rate`); 0: unpaced.
    rate: f64,
    /// Per counted second.
    timeline: Vec<Second>,
    /// Every `--rss-every` seconds, from the start of the counted run.
    rss_samples: Vec<RssSample>,
    /// Per process (its name, or its id): how its RSS moved over the samples.
    rss_summary: BTreeMap<String, RssSummary>,
    /// apalis jobs by status, sampled with the RSS (needs `--database-url`).
    jobs_samples: Vec<JobsSample>,
}

/// Every action sent in the run (warm-up included) against what the games' logs hold once it
/// is over: an action answered 503 must not be in the log.
#[derive(Serialize, Default, Debug)]
struct Accounting {
    /// Actions in the logs of the run's games (their turns).
    logged: u64,
    answered_200: u64,
    /// Outcome unknown when answered (the commit had begun): each may or may not be logged.
    answered_202: u64,
    answered_503: u64,
    /// Other statuses and transport errors.
    other: u64,
    /// Logged actions beyond the 200s, the 202s and the transport errors: actions applied
    /// although their client was told 503 (0 unless the engine broke its word).
    applied_after_503: u64,
}

/// Reads every game's log length once the run is over (after a moment for commits that had
/// begun) and checks the answers against it.
async fn account(
    args: &Args,
    games: &[Player],
    answers: &BTreeMap<String, u64>,
) -> anyhow::Result<Accounting> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let client = reqwest::Client::new();
    let mut logged = 0;
    for p in games {
        let url = format!("{}/v1/games/{}", args.url, p.game);
        let state: Value = client
            .get(&url)
            .bearer_auth(&p.token)
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("reading {url}"))?
            .json()
            .await?;
        // Every applied action is one turn (joins and canon events are not).
        logged += state["turn"].as_u64().context("the game's turn")?;
    }
    let count = |s: &str| answers.get(s).copied().unwrap_or(0);
    let (ok, unknown, refused) = (count("200"), count("202"), count("503"));
    let other = answers.values().sum::<u64>() - ok - unknown - refused;
    let transport: u64 = answers
        .iter()
        .filter(|(k, _)| !k.as_bytes()[0].is_ascii_digit())
        .map(|(_, v)| v)
        .sum();
    Ok(Accounting {
        logged,
        answered_200: ok,
        answered_202: unknown,
        answered_503: refused,
        other,
        applied_after_503: logged.saturating_sub(ok + unknown + transport),
    })
}

/// One counted second: requests answered 2xx, answered otherwise, not answered.
#[derive(Serialize, Clone, Debug, PartialEq)]
struct Second {
    t: u64,
    ok: u64,
    non_2xx: u64,
    transport_errors: u64,
}

#[derive(Serialize, Clone, Debug)]
struct RssSample {
    /// Seconds since the counted run began.
    t: f64,
    rss_kib: BTreeMap<u32, u64>,
}

#[derive(Serialize, Clone, Debug)]
struct JobsSample {
    t: f64,
    by_status: BTreeMap<String, i64>,
}

/// How one process's RSS moved over a run's samples.
#[derive(Serialize, Clone, Debug, PartialEq)]
struct RssSummary {
    samples: usize,
    first_kib: u64,
    last_kib: u64,
    /// Last against first, in percent.
    growth_percent: f64,
    /// Largest sample with `t` at most half the run, and after it.
    first_half_max_kib: u64,
    second_half_max_kib: u64,
    /// Second half's maximum against the first half's, in percent.
    halves_growth_percent: f64,
}

/// The summary of one process's `(t, kib)` samples over a run of `seconds`; `None` without a
/// sample in each half.
fn rss_summary(samples: &[(f64, u64)], seconds: f64) -> Option<RssSummary> {
    let half = seconds / 2.0;
    let max = |keep: &dyn Fn(f64) -> bool| {
        samples
            .iter()
            .filter(|(t, _)| keep(*t))
            .map(|(_, k)| *k)
            .max()
    };
    let first_half_max_kib = max(&|t| t <= half)?;
    let second_half_max_kib = max(&|t| t > half)?;
    let (first, last) = (samples.first()?.1, samples.last()?.1);
    let percent = |to: u64, from: u64| 100.0 * (to as f64 - from as f64) / from.max(1) as f64;
    Some(RssSummary {
        samples: samples.len(),
        first_kib: first,
        last_kib: last,
        growth_percent: percent(last, first),
        first_half_max_kib,
        second_half_max_kib,
        halves_growth_percent: percent(second_half_max_kib, first_half_max_kib),
    })
}

#[derive(Serialize, Default)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency.max(1))
        .timeout(Duration::from_secs(10))
        .build()?;
    if let Some(n) = args.touch_games {
        return touch(&args, &client, n).await;
    }
    eprintln!(
        "load: creating {} game(s) × {} player(s) at {}",
        args.games, args.players, args.url
    );
    let players = setup(&args, &client, args.games, args.players).await?;
    if args.seed_reactions > 0 {
        seed(&args, &players).await?;
    }
    if let Some(path) = &args.prepare_only {
        let list: Vec<Value> = players
            .iter()
            .flatten()
            .map(|p| json!({"game": p.game, "token": p.token}))
            .collect();
        std::fs::write(path, serde_json::to_string_pretty(&list)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "load: {} player(s) written to {}",
            list.len(),
            path.display()
        );
        return Ok(());
    }
    let report = drive(&args, players).await?;
    if let Some(path) = &args.plot {
        plot(&report, path)?;
        eprintln!("load: plot written to {}", path.display());
    }
    let text = serde_json::to_string_pretty(&report)?;
    match &args.json {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("load: report written to {}", path.display());
        }
        None => println!("{text}"),
    }
    Ok(())
}

async fn post(
    client: &reqwest::Client,
    url: String,
    token: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let r = client
        .post(&url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?;
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("POST {url}: {status}: {body}");
    }
    Ok(body)
}

/// Creates `games` games with `players` players each.
async fn setup(
    args: &Args,
    client: &reqwest::Client,
    games: usize,
    players: usize,
) -> anyhow::Result<Vec<Vec<Player>>> {
    let mut out = Vec::with_capacity(games);
    for _ in 0..games {
        let game = post(
            client,
            format!("{}/v1/games", args.url),
            &args.admin_token,
            json!({"scenario": "harbor-strike"}),
        )
        .await
        .context("creating a game (is the server up, and the admin token right?)")?;
        let game = game["game_id"].as_str().context("game_id")?.to_owned();
        let mut ps = Vec::with_capacity(players);
        for p in 0..players {
            let player = post(
                client,
                format!("{}/v1/games/{game}/players", args.url),
                &args.admin_token,
                json!({"name": format!("player {p}")}),
            )
            .await?;
            ps.push(Player {
                game: game.clone(),
                token: player["token"].as_str().context("token")?.to_owned(),
            });
        }
        out.push(ps);
    }
    Ok(out)
}

/// The claim keys the run's actions will use, in order, with how many rows each gets. A
/// reaction is claimed only for the context and kind it was made for, and the generator's
/// actions move the scene's conflicts through their phases (a `say` raises intensity), so the
/// rules are run ahead to list the contexts: each passing one gets as many rows as its actions
/// can take, the last (where the conflicts stay once resolved) gets `n`.
fn seed_keys(args: &Args, n: i64) -> anyhow::Result<Vec<(String, i64)>> {
    use hotpath_cache::model::{ActionKind, PlayerAction, reaction_key};
    let scenario = &hotpath_cache::scenario::builtin()["harbor-strike"];
    let kind = ActionKind::parse(&args.kind)
        .with_context(|| format!("unknown action kind `{}`", args.kind))?;
    let scene = hotpath_cache::SceneId::new(args.scene.clone())
        .map_err(|e| anyhow::anyhow!("scene `{}`: {e}", args.scene))?;
    let mut state =
        hotpath_cache::state::GameState::new(hotpath_cache::GameId::generate(), scenario);
    let action = PlayerAction {
        id: hotpath_cache::ids::ActionId::generate(),
        game_id: state.game_id,
        player_id: hotpath_cache::PlayerId::generate(),
        scene_id: scene.clone(),
        kind,
        text: args.text.clone(),
        target: hotpath_cache::StakeholderId::new(args.target.clone()).ok(),
    };
    let mut keys: Vec<(String, i64)> = Vec::new();
    for seq in 1..=1_000u64 {
        let key = reaction_key(&state.context_hash(scenario, &scene), kind).0;
        match keys.last_mut() {
            Some((last, count)) if *last == key => *count += 1,
            _ => keys.push((key, 1)),
        }
        let event = hotpath_engine::hot::rules::apply_action(scenario, &state, &action);
        state.apply(scenario, seq, &event);
    }
    if let Some(last) = keys.last_mut() {
        last.1 = n;
    }
    Ok(keys)
}

/// Inserts ready reactions straight into the planned table (as the slow path would), made for
/// what the run's actions will claim (see [`seed_keys`]).
async fn seed(args: &Args, players: &[Vec<Player>]) -> anyhow::Result<()> {
    let stakeholders = ["mara", "brann", "iris"];
    let keys = seed_keys(args, args.seed_reactions as i64)?;
    let now = hotpath_cache::time::now_ms();
    let per_game: i64 = keys.iter().map(|(_, n)| n).sum();
    let rows = players.len() as i64 * per_game * stakeholders.len() as i64;
    eprintln!(
        "load: seeding {rows} ready reactions for {} contexts",
        keys.len()
    );
    // One statement per game and stakeholder, rows generated by the database.
    const PG: &str = "INSERT INTO planned_stakeholder_actions (id, game_id, scene_id, stakeholder_id, kind, payload, \
        priority, status, expires_at, dedupe_key, reacts_to, context_hash, world_version, produced_at, model, \
        prompt_version, created_at) \
        SELECT gen_random_uuid()::text, $1, $2, $3, 'reaction', \
        '{\"behaviour\":\"nods\",\"intent\":\"support\",\"line\":\"Aye, I heard you.\"}', 1, 'ready', $5, \
        'seed:' || $1 || ':' || $3 || ':' || $7 || ':' || g, NULL, $7, 0, $4, 'seed', 'seed', $4 \
        FROM generate_series(1, $6) g";
    // Ids in the store's own form (a hyphenated UUID): a claim matches rows by id as the
    // store wrote them.
    const SQLITE: &str = "WITH RECURSIVE g(n, h) AS (SELECT 1, lower(hex(randomblob(16))) \
        UNION ALL SELECT n + 1, lower(hex(randomblob(16))) FROM g WHERE n < $6) \
        INSERT INTO planned_stakeholder_actions (id, game_id, scene_id, stakeholder_id, kind, payload, \
        priority, status, expires_at, dedupe_key, reacts_to, context_hash, world_version, produced_at, model, \
        prompt_version, created_at) \
        SELECT substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-' || substr(h, 13, 4) || '-' || \
        substr(h, 17, 4) || '-' || substr(h, 21), $1, $2, $3, 'reaction', \
        '{\"behaviour\":\"nods\",\"intent\":\"support\",\"line\":\"Aye, I heard you.\"}', 1, 'ready', $5, \
        'seed:' || $1 || ':' || $3 || ':' || $7 || ':' || n, NULL, $7, 0, $4, 'seed', 'seed', $4 FROM g";
    let expires = now + 24 * 3600 * 1000;
    if let Some(url) = &args.database_url {
        let pool = sqlx::PgPool::connect(url).await?;
        for game in players.iter().map(|p| &p[0].game) {
            for s in stakeholders {
                for (key, n) in &keys {
                    sqlx::query(PG)
                        .bind(game)
                        .bind(&args.scene)
                        .bind(s)
                        .bind(now)
                        .bind(expires)
                        .bind(n)
                        .bind(key)
                        .execute(&pool)
                        .await?;
                }
            }
        }
        sqlx::query("ANALYZE planned_stakeholder_actions")
            .execute(&pool)
            .await?;
    } else if let Some(path) = &args.sqlite {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(Duration::from_secs(10));
        let pool = sqlx::SqlitePool::connect_with(options).await?;
        for game in players.iter().map(|p| &p[0].game) {
            for s in stakeholders {
                for (key, n) in &keys {
                    sqlx::query(SQLITE)
                        .bind(game)
                        .bind(&args.scene)
                        .bind(s)
                        .bind(now)
                        .bind(expires)
                        .bind(n)
                        .bind(key)
                        .execute(&pool)
                        .await?;
                }
            }
        }
        // Leave no seeding WAL for the engine's next commit to checkpoint.
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&pool)
            .await?;
        pool.close().await;
    } else {
        bail!("--seed-reactions needs --database-url or --sqlite");
    }
    Ok(())
}

async fn pg_transactions(url: &str) -> anyhow::Result<i64> {
    let pool = sqlx::PgPool::connect(url).await?;
    // Statistics reach the shared counters up to a second after a transaction ends.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let n: i64 = sqlx::query_scalar(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&pool)
    .await?;
    pool.close().await;
    Ok(n)
}

async fn redis_commands(url: &str) -> anyhow::Result<u64> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut conn)
        .await?;
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .context("total_commands_processed in INFO stats")
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn rss_all(pids: &[u32]) -> BTreeMap<u32, u64> {
    pids.iter()
        .filter_map(|p| Some((*p, rss_kib(*p)?)))
        .collect()
}

/// apalis jobs by status.
async fn jobs_by_status(pool: &sqlx::PgPool) -> anyhow::Result<BTreeMap<String, i64>> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, COUNT(*) FROM apalis.jobs GROUP BY status")
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().collect())
}

struct Counters {
    counting: std::sync::atomic::AtomicBool,
    done: AtomicU64,
    non_2xx: AtomicU64,
    transport: AtomicU64,
}

/// One connection's results.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    status: BTreeMap<String, u64>,
    reactions: u64,
    precomputed: u64,
    /// Every answer of the run, warm-up included, by status: what the log is checked against.
    all_status: BTreeMap<String, u64>,
}

async fn drive(args: &Args, players: Vec<Vec<Player>>) -> anyhow::Result<Report> {
    let logs: Vec<Player> = players.iter().filter_map(|g| g.first().cloned()).collect();
    let flat: Vec<Player> = players.into_iter().flatten().collect();
    let per_game = args.players.max(1);
    let counters = Arc::new(Counters {
        counting: false.into(),
        done: AtomicU64::new(0),
        non_2xx: AtomicU64::new(0),
        transport: AtomicU64::new(0),
    });
    // Each connection's share of `--rate`: one request per this.
    let pace = (args.rate > 0.0)
        .then(|| Duration::from_secs_f64(args.concurrency.max(1) as f64 / args.rate));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut body = json!({"scene_id": args.scene, "kind": args.kind, "text": args.text});
    if !args.target.is_empty() {
        body["target"] = json!(args.target);
    }
    let body = body.to_string();
    let mut tasks = Vec::new();
    let concurrency = args.concurrency.max(1);
    let games = flat.len() / per_game;
    for c in 0..concurrency {
        // Connection c acts as the players j = c, c + concurrency, … (below the number of
        // players, or just c): player j is player (j / games) % players of game j % games. With
        // at least as many connections as players, that is one player per connection; with
        // fewer, each player has one connection, which takes its players in turn.
        let mine: Vec<(String, String)> = (c..concurrency.max(flat.len()))
            .step_by(concurrency)
            .map(|j| {
                let p = &flat[(j % games) * per_game + (j / games) % per_game];
                (
                    format!("{}/v1/games/{}/actions", args.url, p.game),
                    p.token.clone(),
                )
            })
            .collect();
        let (counters, stop, body) = (counters.clone(), stop.clone(), body.clone());
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(10))
            .build()?;
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut tick = pace.map(|p| {
                let mut i = tokio::time::interval(p);
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                i
            });
            for (url, token) in mine.iter().cycle() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Some(tick) = &mut tick {
                    tick.tick().await;
                }
                let started = Instant::now();
                let sent = client
                    .post(url)
                    .bearer_auth(token)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let (status, answer) = match sent {
                    Ok(r) => {
                        let s = r.status().as_u16().to_string();
                        (s, r.bytes().await.ok())
                    }
                    Err(e) if e.is_timeout() => ("timeout".to_owned(), None),
                    Err(_) => ("error".to_owned(), None),
                };
                let elapsed = started.elapsed();
                *tally.all_status.entry(status.clone()).or_default() += 1;
                if !counters.counting.load(Ordering::Relaxed) {
                    continue;
                }
                let ok = status.starts_with('2');
                if ok {
                    counters.done.fetch_add(1, Ordering::Relaxed);
                    if let Some(v) = answer.and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                        && let Some(rs) = v["reactions"].as_array()
                    {
                        tally.reactions += rs.len() as u64;
                        tally.precomputed +=
                            rs.iter().filter(|r| r["source"] == "precomputed").count() as u64;
                    }
                } else if status.as_bytes()[0].is_ascii_digit() {
                    counters.non_2xx.fetch_add(1, Ordering::Relaxed);
                } else {
                    counters.transport.fetch_add(1, Ordering::Relaxed);
                }
                tally
                    .latencies_us
                    .push(elapsed.as_micros().min(u32::MAX as u128) as u32);
                *tally.status.entry(status).or_default() += 1;
            }
            tally
        }));
    }

    eprintln!("load: warming up for {} s", args.warmup);
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let db_before = match &args.database_url {
        Some(u) => Some(pg_transactions(u).await?),
        None => None,
    };
    let redis_before = match &args.redis_url {
        Some(u) => Some(redis_commands(u).await?),
        None => None,
    };
    let jobs_pool = match &args.database_url {
        Some(u) if args.rss_every > 0 => Some(sqlx::PgPool::connect(u).await?),
        _ => None,
    };
    let mut rss_samples = Vec::new();
    let mut jobs_samples = Vec::new();
    let mut jobs_failed = false;
    counters.counting.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let mut timeline: Vec<Second> = Vec::with_capacity(args.seconds as usize);
    let mut last = (0, 0, 0);
    for second in 0..=args.seconds {
        if second > 0 {
            tokio::time::sleep_until((started + Duration::from_secs(second)).into()).await;
            let now = (
                counters.done.load(Ordering::Relaxed),
                counters.non_2xx.load(Ordering::Relaxed),
                counters.transport.load(Ordering::Relaxed),
            );
            let s = Second {
                t: second,
                ok: now.0 - last.0,
                non_2xx: now.1 - last.1,
                transport_errors: now.2 - last.2,
            };
            eprintln!(
                "load: {second:>3} s  {:>7} req/s  {} ok  {} non-2xx  {} transport errors",
                s.ok, now.0, now.1, now.2
            );
            timeline.push(s);
            last = now;
        }
        if args.rss_every > 0 && second.is_multiple_of(args.rss_every) {
            let t = started.elapsed().as_secs_f64();
            let rss = rss_all(&args.server_pid);
            let mut line: Vec<String> = rss
                .iter()
                .map(|(p, k)| format!("{} {} MiB", name_of(args, *p), k / 1024))
                .collect();
            if let Some(pool) = &jobs_pool
                && !jobs_failed
            {
                match jobs_by_status(pool).await {
                    Ok(by_status) => {
                        line.push(format!("jobs {by_status:?}"));
                        jobs_samples.push(JobsSample { t, by_status });
                    }
                    Err(e) => {
                        eprintln!("load: not sampling apalis.jobs: {e:#}");
                        jobs_failed = true;
                    }
                }
            }
            eprintln!("load: {second:>3} s  RSS {}", line.join(", "));
            rss_samples.push(RssSample { t, rss_kib: rss });
        }
    }
    counters.counting.store(false, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    if let Some(pool) = jobs_pool {
        pool.close().await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut all = Tally::default();
    for t in tasks {
        let t = t.await?;
        all.latencies_us.extend(t.latencies_us);
        for (k, v) in t.status {
            *all.status.entry(k).or_default() += v;
        }
        for (k, v) in t.all_status {
            *all.all_status.entry(k).or_default() += v;
        }
        all.reactions += t.reactions;
        all.precomputed += t.precomputed;
    }
    let requests = all.latencies_us.len() as u64;
    let db_after = match &args.database_url {
        Some(u) => Some(pg_transactions(u).await?),
        None => None,
    };
    let redis_after = match &args.redis_url {
        Some(u) => Some(redis_commands(u).await?),
        None => None,
    };
    all.latencies_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((all.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        f64::from(all.latencies_us[i]) / 1000.0
    };
    let non_2xx: u64 = all
        .status
        .iter()
        .filter(|(k, _)| !k.starts_with('2'))
        .map(|(_, v)| v)
        .sum();
    let transport_errors: u64 = all
        .status
        .iter()
        .filter(|(k, _)| !k.as_bytes()[0].is_ascii_digit())
        .map(|(_, v)| v)
        .sum();
    let rss_summary = args
        .server_pid
        .iter()
        .filter_map(|pid| {
            let samples: Vec<(f64, u64)> = rss_samples
                .iter()
                .filter_map(|s| Some((s.t, *s.rss_kib.get(pid)?)))
                .collect();
            Some((name_of(args, *pid), rss_summary(&samples, seconds)?))
        })
        .collect();
    let per_action = |before: Option<i64>, after: Option<i64>| match (before, after) {
        (Some(b), Some(a)) if requests > 0 => Some((a - b) as f64 / requests as f64),
        _ => None,
    };
    let accounting = account(args, &logs, &all.all_status).await?;
    if accounting.applied_after_503 > 0 {
        eprintln!(
            "load: {} action(s) answered 503 are in the log",
            accounting.applied_after_503
        );
    }
    Ok(Report {
        accounting,
        label: args.label.clone(),
        url: args.url.clone(),
        games: args.games,
        players: args.players,
        concurrency: args.concurrency,
        seconds,
        requests,
        requests_per_second: requests as f64 / seconds,
        latency_ms: Latency {
            p50: pct(0.50),
            p90: pct(0.90),
            p99: pct(0.99),
            max: pct(1.0),
        },
        non_2xx_percent: if requests == 0 {
            0.0
        } else {
            100.0 * non_2xx as f64 / requests as f64
        },
        status: all.status,
        db_transactions_per_action: per_action(db_before, db_after),
        redis_commands_per_action: per_action(
            redis_before.map(|v| v as i64),
            redis_after.map(|v| v as i64),
        ),
        precomputed_reaction_share: if all.reactions == 0 {
            0.0
        } else {
            all.precomputed as f64 / all.reactions as f64
        },
        errors: non_2xx,
        transport_errors,
        rss_kib: rss_all(&args.server_pid),
        server_names: args
            .server_pid
            .iter()
            .zip(&args.server_name)
            .map(|(p, n)| (*p, n.clone()))
            .collect(),
        rate: args.rate,
        timeline,
        rss_samples,
        rss_summary,
        jobs_samples,
    })
}

/// A server's `--server-name`, or its process id.
fn name_of(args: &Args, pid: u32) -> String {
    args.server_pid
        .iter()
        .position(|p| *p == pid)
        .and_then(|i| args.server_name.get(i))
        .cloned()
        .unwrap_or_else(|| pid.to_string())
}

/// The report's SVG: RSS per process (top), req/s and errors per second (middle) and, when
/// sampled, the apalis jobs pending and running (bottom), over the counted run.
fn plot(report: &Report, path: &std::path::Path) -> anyhow::Result<()> {
    use hotpath_benches::plot::{PALETTE, Panel, panels};
    let x = "seconds since the counted run began";
    let title = if report.label.is_empty() {
        "load".to_owned()
    } else {
        format!("load: {}", report.label)
    };
    let mut rss = Panel::new(format!("{title} — RSS per process"), x, "MiB", 300);
    for (pid, color) in report.rss_kib.keys().zip(PALETTE) {
        let name = report
            .server_names
            .get(pid)
            .cloned()
            .unwrap_or_else(|| pid.to_string());
        let points = report
            .rss_samples
            .iter()
            .filter_map(|s| Some((s.t, *s.rss_kib.get(pid)? as f64 / 1024.0)))
            .collect();
        rss = rss.series(format!("{name} (pid {pid})"), color, points);
    }
    rss.legend = plotters::prelude::SeriesLabelPosition::LowerRight;
    rss.markers
        .push((report.seconds / 2.0, "halves of the run".to_owned()));
    let per_second = |f: fn(&Second) -> u64| -> Vec<(f64, f64)> {
        report
            .timeline
            .iter()
            .map(|s| (s.t as f64, f(s) as f64))
            .collect()
    };
    let mut rate = Panel::new(
        format!("requests per second ({} connections)", report.concurrency),
        x,
        "per second",
        260,
    )
    .series("2xx", PALETTE[1], per_second(|s| s.ok))
    .series(
        "errors (non-2xx + transport)",
        PALETTE[0],
        per_second(|s| s.non_2xx + s.transport_errors),
    );
    rate.legend = plotters::prelude::SeriesLabelPosition::LowerRight;
    let mut all = vec![rss, rate];
    if !report.jobs_samples.is_empty() {
        let status = |name: &'static str| -> Vec<(f64, f64)> {
            report
                .jobs_samples
                .iter()
                .map(|s| (s.t, s.by_status.get(name).copied().unwrap_or(0) as f64))
                .collect()
        };
        all.push(
            Panel::new("apalis jobs", x, "jobs", 260)
                .series("Pending", PALETTE[3], status("Pending"))
                .series("Running", PALETTE[2], status("Running")),
        );
    }
    panels(path, 1000, report.seconds, &all)
}

/// Memory mode: `n` games touched once each.
async fn touch(args: &Args, client: &reqwest::Client, n: usize) -> anyhow::Result<()> {
    let before = rss_all(&args.server_pid);
    eprintln!("load: touching {n} games (one player, one action each)");
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (next, errors, client, args) =
            (next.clone(), errors.clone(), client.clone(), args.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= n {
                    return;
                }
                if i > 0 && i.is_multiple_of(1000) {
                    eprintln!("load: {i} games touched");
                }
                let run = async {
                    let players = setup(&args, &client, 1, 1).await?;
                    let p = &players[0][0];
                    post(
                        &client,
                        format!("{}/v1/games/{}/actions", args.url, p.game),
                        &p.token,
                        json!({"scene_id": args.scene, "text": args.text}),
                    )
                    .await
                };
                if run.await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let after = rss_all(&args.server_pid);
    let report = json!({
        "label": args.label,
        "games_touched": n,
        "errors": errors.load(Ordering::Relaxed),
        "seconds": started.elapsed().as_secs_f64(),
        "rss_kib_before": before,
        "rss_kib_after": after,
    });
    let text = serde_json::to_string_pretty(&report)?;
    match &args.json {
        Some(path) => std::fs::write(path, &text)?,
        None => println!("{text}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_summary_compares_the_ends_and_the_halves() {
        let samples = [
            (0.0, 100),
            (50.0, 120),
            (100.0, 110),
            (150.0, 125),
            (200.0, 121),
        ];
        let s = rss_summary(&samples, 200.0).unwrap();
        assert_eq!((s.first_kib, s.last_kib), (100, 121));
        assert!((s.growth_percent - 21.0).abs() < 1e-9);
        assert_eq!((s.first_half_max_kib, s.second_half_max_kib), (120, 125));
        assert!((s.halves_growth_percent - 100.0 * 5.0 / 120.0).abs() < 1e-9);
        // A sample in each half is needed.
        assert_eq!(rss_summary(&samples[..2], 200.0), None);
    }
}
