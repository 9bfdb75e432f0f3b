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
    /// Connections kept busy; connection `i` acts in game `i % games`.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// How long to drive load, after the warm-up.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Seconds of load not counted, first.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// The action sent: scene, kind, target and text.
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
    /// Memory mode: touch this many games (one player, one action each), then report RSS.
    #[arg(long)]
    touch_games: Option<usize>,
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
    rss_kib: BTreeMap<u32, u64>,
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
    let report = drive(&args, players).await?;
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
    const SQLITE: &str = "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < $6) \
        INSERT INTO planned_stakeholder_actions (id, game_id, scene_id, stakeholder_id, kind, payload, \
        priority, status, expires_at, dedupe_key, reacts_to, context_hash, world_version, produced_at, model, \
        prompt_version, created_at) \
        SELECT lower(hex(randomblob(16))), $1, $2, $3, 'reaction', \
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

struct Counters {
    counting: std::sync::atomic::AtomicBool,
    done: AtomicU64,
    failed: AtomicU64,
}

/// One connection's results.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    status: BTreeMap<String, u64>,
    reactions: u64,
    precomputed: u64,
}

async fn drive(args: &Args, players: Vec<Vec<Player>>) -> anyhow::Result<Report> {
    let flat: Vec<Player> = players.into_iter().flatten().collect();
    let per_game = args.players.max(1);
    let counters = Arc::new(Counters {
        counting: false.into(),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let body = json!({
        "scene_id": args.scene, "kind": args.kind, "target": args.target, "text": args.text,
    })
    .to_string();
    let mut tasks = Vec::new();
    for c in 0..args.concurrency.max(1) {
        // Connection c acts in game c % games, as player (c / games) % players.
        let games = flat.len() / per_game;
        let p = &flat[(c % games) * per_game + (c / games) % per_game];
        let url = format!("{}/v1/games/{}/actions", args.url, p.game);
        let token = p.token.clone();
        let (counters, stop, body) = (counters.clone(), stop.clone(), body.clone());
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(10))
            .build()?;
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let sent = client
                    .post(&url)
                    .bearer_auth(&token)
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
                } else {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
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
    counters.counting.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let mut last = 0;
    for second in 1..=args.seconds {
        tokio::time::sleep_until((started + Duration::from_secs(second)).into()).await;
        let done = counters.done.load(Ordering::Relaxed);
        let failed = counters.failed.load(Ordering::Relaxed);
        eprintln!(
            "load: {second:>3} s  {:>7} req/s  {done} ok  {failed} non-2xx",
            done - last
        );
        last = done;
    }
    counters.counting.store(false, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut all = Tally::default();
    for t in tasks {
        let t = t.await?;
        all.latencies_us.extend(t.latencies_us);
        for (k, v) in t.status {
            *all.status.entry(k).or_default() += v;
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
    let per_action = |before: Option<i64>, after: Option<i64>| match (before, after) {
        (Some(b), Some(a)) if requests > 0 => Some((a - b) as f64 / requests as f64),
        _ => None,
    };
    Ok(Report {
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
        rss_kib: args
            .server_pid
            .iter()
            .filter_map(|p| Some((*p, rss_kib(*p)?)))
            .collect(),
    })
}

/// Memory mode: `n` games touched once each.
async fn touch(args: &Args, client: &reqwest::Client, n: usize) -> anyhow::Result<()> {
    let before: BTreeMap<u32, u64> = args
        .server_pid
        .iter()
        .filter_map(|p| Some((*p, rss_kib(*p)?)))
        .collect();
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
    let after: BTreeMap<u32, u64> = args
        .server_pid
        .iter()
        .filter_map(|p| Some((*p, rss_kib(*p)?)))
        .collect();
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
