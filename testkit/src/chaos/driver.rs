//! Runs one history: creates the games and players, lets the players act (with timeouts,
//! retries with and without a key, hedged tries), the stream clients follow and resume, and
//! the fault lane inject faults until the time is up; then lets the system go quiet, opens one
//! last catch-up session per stream client, looks the dispatched jobs up and reads the logs.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::cluster::{Cluster, Endpoints, GameLog, jobs_present};
use super::faults::{self, FaultKind, Quiet};
use super::recorder::{Call, Outcome, Recorder, Seen, Session, Verdict};
use super::schedule::{self, ActionPlan, Stream};
use super::{Backends, HistoryConfig};

/// What the store and the job storage hold after the history: the checker's other input.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Evidence {
    pub logs: Vec<GameLog>,
    /// Dispatched job id → found in the job storage.
    pub jobs: std::collections::BTreeMap<String, bool>,
    /// Per game, the line of each precomputed row the history seeded → whether the store has
    /// it consumed afterwards.
    pub seeded: Vec<std::collections::BTreeMap<String, bool>>,
}

/// Precomputed rows seeded per game, stakeholder and kind of action, for the context a game
/// starts in: enough that the first actions of every game claim, and that two engines acting
/// on one game pick the same rows.
const SEEDED_PER_KIND: usize = 4;

/// Seeds ready rows with lines unique in the history for the docks' first context, every kind
/// of action; returns each game's rows.
async fn seed_rows(
    cluster: &Cluster,
    games: &[String],
) -> Result<Vec<Vec<hotpath_cache::model::PlannedAction>>, String> {
    use hotpath_cache::model::{
        ActionKind, PlannedAction, PlannedKind, PlannedStatus, Provenance, StakeholderMove,
        reaction_key,
    };
    let store = cluster.store().await?;
    let scenario = &hotpath_cache::scenario::builtin()["harbor-strike"];
    let docks = hotpath_cache::SceneId::new("docks").map_err(|e| e.to_string())?;
    let who = scenario
        .scene(&docks)
        .ok_or("no docks")?
        .stakeholders
        .clone();
    let now = hotpath_cache::time::now_ms();
    let mut out = Vec::new();
    for (g, game) in games.iter().enumerate() {
        let game_id: hotpath_cache::GameId = game.parse().map_err(|e| format!("{e}"))?;
        let context =
            hotpath_cache::state::GameState::new(game_id, scenario).context_hash(scenario, &docks);
        let mut rows = Vec::new();
        for kind in ActionKind::ALL {
            for s in &who {
                for n in 0..SEEDED_PER_KIND {
                    let line = format!("seeded g{g} {s} {} {n}", kind.as_str());
                    rows.push(PlannedAction {
                        id: hotpath_cache::ids::PlannedActionId::generate(),
                        game_id,
                        scene_id: docks.clone(),
                        stakeholder_id: s.clone(),
                        kind: PlannedKind::Reaction,
                        payload: StakeholderMove {
                            behaviour: "listens".into(),
                            intent: "probe".into(),
                            line: line.clone(),
                        },
                        priority: 1,
                        status: PlannedStatus::Ready,
                        expires_at: now + 3_600_000,
                        dedupe_key: format!("chaos:{game}:{line}"),
                        reacts_to: None,
                        provenance: Provenance {
                            context_hash: reaction_key(&context, kind),
                            world_version: 0,
                            produced_at: now,
                            model: "chaos".into(),
                            prompt_version: "chaos".into(),
                        },
                        created_at: now,
                    });
                }
            }
        }
        store
            .insert_planned(&rows)
            .await
            .map_err(|e| format!("seeding rows: {e}"))?;
        out.push(rows);
    }
    Ok(out)
}

struct Ctx {
    seed: u64,
    rec: Arc<Recorder>,
    http: reqwest::Client,
    endpoints: Endpoints,
    next_engine: AtomicUsize,
    games: Vec<String>,
    quiet: Quiet,
    end_ms: u64,
}

impl Ctx {
    /// Round-robin over the engines.
    fn engine(&self) -> (usize, String) {
        let n = self.endpoints.len().max(1);
        let i = self.next_engine.fetch_add(1, Ordering::Relaxed) % n;
        (i, self.endpoints.get(i))
    }
}

/// Runs the history on `cluster`; the recorded history and the evidence.
pub async fn run(
    cfg: &HistoryConfig,
    cluster: &mut Cluster,
    backends: &mut Backends,
    rec: Arc<Recorder>,
) -> Result<Evidence, String> {
    let http = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;

    // Games and players, through the API with the admin token.
    let mut games = Vec::new();
    let mut tokens = Vec::new();
    for g in 0..cfg.games {
        let game = admin_post(
            &http,
            &cluster.endpoints,
            &cluster.admin,
            "/v1/games",
            json!({"scenario": "harbor-strike"}),
        )
        .await?["game_id"]
            .as_str()
            .ok_or("no game_id")?
            .to_owned();
        let mut players = Vec::new();
        for p in 0..cfg.players {
            let v = admin_post(
                &http,
                &cluster.endpoints,
                &cluster.admin,
                &format!("/v1/games/{game}/players"),
                json!({"name": format!("chaos g{g} p{p}")}),
            )
            .await?;
            players.push(v["token"].as_str().ok_or("no token")?.to_owned());
        }
        games.push(game);
        tokens.push(players);
    }
    rec.set_games(games.clone());
    let seeded_rows = seed_rows(cluster, &games).await?;

    let end_ms = rec.now_ms() + (cfg.seconds * 1000.0) as u64;
    let ctx = Arc::new(Ctx {
        seed: cfg.seed,
        rec: rec.clone(),
        http: http.clone(),
        endpoints: cluster.endpoints.clone(),
        next_engine: AtomicUsize::new(0),
        games: games.clone(),
        quiet: Quiet::new(cfg.games),
        end_ms,
    });

    let mut players = Vec::new();
    for (g, game_tokens) in tokens.iter().enumerate() {
        for (p, token) in game_tokens.iter().enumerate() {
            let (ctx, token) = (ctx.clone(), token.clone());
            players.push(tokio::spawn(async move { player(ctx, g, p, token).await }));
        }
    }
    let mut followers = Vec::new();
    for (g, game_tokens) in tokens.iter().enumerate() {
        for c in 0..cfg.stream_clients {
            let (ctx, token) = (ctx.clone(), game_tokens[c % game_tokens.len()].clone());
            followers.push(tokio::spawn(async move {
                let last = follower(&ctx, g, c, &token).await;
                (g, c, token, last)
            }));
        }
    }

    // The fault lane, here, with the processes in hand.
    let kinds: Vec<(FaultKind, u32)> = FaultKind::available(backends)
        .into_iter()
        .filter(|(k, _)| cfg.faults.as_ref().is_none_or(|only| only.contains(k)))
        .collect();
    let mut frng = schedule::rng(cfg.seed, Stream::Faults);
    let mut fault_error = None;
    let mut bag = Vec::new();
    while !kinds.is_empty() {
        let (gap, fault) = faults::draw(&mut frng, &kinds, &mut bag, cluster.engines(), cfg.games);
        tokio::time::sleep(Duration::from_millis(gap)).await;
        if rec.now_ms() + fault.ms + 500 >= end_ms {
            break;
        }
        match faults::inject(&fault, cluster, backends, &ctx.quiet, &rec).await {
            Ok(record) => rec.fault(record),
            Err(e) => {
                fault_error = Some(e);
                break;
            }
        }
    }

    for p in players {
        let _ = tokio::time::timeout(Duration::from_secs(60), p).await;
    }
    let mut lasts = Vec::new();
    for f in followers {
        if let Ok(Ok(last)) = tokio::time::timeout(Duration::from_secs(30), f).await {
            lasts.push(last);
        }
    }
    if let Some(e) = fault_error {
        return Err(e);
    }

    // Quiet: every try has ended; commits and the relay settle.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for (g, c, token, last) in lasts {
        let (engine, base) = ctx.engine();
        let session = session(
            &ctx,
            g,
            c,
            engine,
            &base,
            &token,
            Some(last.unwrap_or_else(|| "0-0".into())),
            None,
            true,
        )
        .await;
        rec.session(session);
    }

    let mut job_ids = BTreeSet::new();
    for call in rec.snapshot().calls {
        if call.verdict() == Verdict::Applied
            && let Some(d) = call.answer_body().and_then(|b| b["dispatched"].as_array())
        {
            job_ids.extend(
                d.iter()
                    .filter_map(|j| j["job_id"].as_str().map(str::to_owned)),
            );
        }
    }
    let jobs = jobs_present(&http, &cluster.endpoints, &cluster.admin, job_ids).await;
    let logs = cluster.read_logs(&games).await?;
    let store = cluster.store().await?;
    let mut seeded = Vec::new();
    for rows in &seeded_rows {
        let mut consumed = std::collections::BTreeMap::new();
        for row in rows {
            let status = store
                .planned(row.id)
                .await
                .map_err(|e| format!("reading seeded rows: {e}"))?
                .map(|p| p.status);
            consumed.insert(
                row.payload.line.clone(),
                status == Some(hotpath_cache::model::PlannedStatus::Consumed),
            );
        }
        seeded.push(consumed);
    }
    Ok(Evidence { logs, jobs, seeded })
}

async fn admin_post(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    admin: &str,
    path: &str,
    body: Value,
) -> Result<Value, String> {
    let mut last = String::new();
    for attempt in 0..10 {
        let r = http
            .post(format!("{}{path}", endpoints.get(attempt)))
            .bearer_auth(admin)
            .json(&body)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match r {
            Ok(r) if r.status().as_u16() == 201 => {
                return r.json().await.map_err(|e| e.to_string());
            }
            Ok(r) => last = format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(format!("POST {path}: {last}"))
}

/// One player: acts until the end, pausing between actions and while its game is quiet.
async fn player(ctx: Arc<Ctx>, game: usize, player: usize, token: String) {
    let mut rng = schedule::rng(ctx.seed, Stream::Player { game, player });
    let mut n = 0u64;
    let mut retry_of = None;
    loop {
        let think = schedule::think_ms(&mut rng);
        tokio::time::sleep(Duration::from_millis(think)).await;
        let quiet = ctx.quiet.until(game);
        let now = ctx.rec.now_ms();
        if quiet > now {
            tokio::time::sleep(Duration::from_millis(quiet - now)).await;
        }
        if ctx.rec.now_ms() >= ctx.end_ms {
            return;
        }
        n += 1;
        let plan = schedule::action(&mut rng, ctx.seed, game, player, n);
        let done = act(&ctx, game, player, &token, &plan, retry_of).await;
        retry_of = match done {
            Done::Failed(action) if plan.again_without_key => Some(action),
            _ => None,
        };
    }
}

enum Done {
    Answered,
    Failed(u64),
}

/// One logical action: its tries, until one is answered or the plan's tries run out.
async fn act(
    ctx: &Arc<Ctx>,
    game: usize,
    player: usize,
    token: &str,
    plan: &ActionPlan,
    retry_of: Option<u64>,
) -> Done {
    let action = ctx.rec.id();
    let mut attempt = 0u32;
    let mut verdicts = Vec::new();
    if let Some(after) = plan.hedge_after_ms {
        // The first try, and a second with the same key while the first is in flight.
        attempt = 2;
        let first = {
            let (ctx, token, plan) = (ctx.clone(), token.to_owned(), plan.clone());
            tokio::spawn(async move {
                send(
                    &ctx,
                    game,
                    player,
                    &token,
                    &plan,
                    action,
                    1,
                    retry_of,
                    plan.timeouts_ms[0],
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(after)).await;
        let second = send(
            ctx,
            game,
            player,
            token,
            plan,
            action,
            2,
            retry_of,
            plan.timeouts_ms[0],
        )
        .await;
        verdicts.push(second);
        if let Ok(v) = first.await {
            verdicts.push(v);
        }
    }
    loop {
        if verdicts
            .iter()
            .any(|v| matches!(v, Verdict::Applied | Verdict::Replayed))
        {
            return Done::Answered;
        }
        let i = attempt as usize;
        if i >= plan.timeouts_ms.len() || ctx.rec.now_ms() >= ctx.end_ms + 5_000 {
            return Done::Failed(action);
        }
        // A 202 without a key, or a refusal that a retry will not change, ends the action.
        if plan.key.is_none() && verdicts.contains(&Verdict::Unknown) {
            return Done::Answered;
        }
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(plan.backoff_ms[i])).await;
        }
        attempt += 1;
        let v = send(
            ctx,
            game,
            player,
            token,
            plan,
            action,
            attempt,
            retry_of,
            plan.timeouts_ms[i],
        )
        .await;
        verdicts.push(v);
    }
}

/// One try; recorded; its verdict.
#[allow(clippy::too_many_arguments)]
async fn send(
    ctx: &Ctx,
    game: usize,
    player: usize,
    token: &str,
    plan: &ActionPlan,
    action: u64,
    attempt: u32,
    retry_of: Option<u64>,
    timeout_ms: u64,
) -> Verdict {
    let (engine, base) = ctx.engine();
    let mut req = ctx
        .http
        .post(format!("{base}/v1/games/{}/actions", ctx.games[game]))
        .bearer_auth(token)
        .json(&plan.body);
    if let Some(key) = &plan.key {
        req = req.header("idempotency-key", key);
    }
    let id = ctx.rec.id();
    let sent_ms = ctx.rec.now_ms();
    let sent = async {
        let r = req.send().await?;
        let status = r.status().as_u16();
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let replayed = header("idempotent-replayed").is_some_and(|v| v == "true");
        let location = header("location");
        let bytes = r.bytes().await?;
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok::<_, reqwest::Error>(Outcome::Answer {
            status,
            replayed,
            location,
            body,
        })
    };
    let outcome = match tokio::time::timeout(Duration::from_millis(timeout_ms), sent).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => Outcome::Error {
            connect: e.is_connect(),
            error: error_chain(&e.without_url()),
        },
        Err(_) => Outcome::Timeout,
    };
    let call = Call {
        id,
        game,
        player,
        action,
        attempt,
        retry_of,
        text: plan.text.clone(),
        body: plan.body.clone(),
        key: plan.key.clone(),
        engine,
        timeout_ms,
        sent_ms,
        done_ms: ctx.rec.now_ms(),
        outcome,
    };
    let v = call.verdict();
    ctx.rec.call(call);
    v
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// One stream client: sessions of random length, each resuming after the last id it saw, until
/// the end. Returns that last id.
async fn follower(ctx: &Ctx, game: usize, client: usize, token: &str) -> Option<String> {
    let mut rng: ChaCha8Rng = schedule::rng(ctx.seed, Stream::Events { game, client });
    let mut last: Option<String> = None;
    while ctx.rec.now_ms() < ctx.end_ms {
        let (length, away) = schedule::session_ms(&mut rng);
        let until = (ctx.rec.now_ms() + length).min(ctx.end_ms);
        let (engine, base) = ctx.engine();
        let s = session(
            ctx,
            game,
            client,
            engine,
            &base,
            token,
            last.clone(),
            Some(until),
            false,
        )
        .await;
        if let Some(id) = s.events.iter().rev().find_map(|e| e.id.clone()) {
            last = Some(id);
        }
        ctx.rec.session(s);
        tokio::time::sleep(Duration::from_millis(away)).await;
    }
    last
}

/// One event-stream connection: until `until` (history ms), or, for a catch-up session, until
/// no event came for 2 s.
#[allow(clippy::too_many_arguments)]
async fn session(
    ctx: &Ctx,
    game: usize,
    client: usize,
    engine: usize,
    base: &str,
    token: &str,
    last_event_id: Option<String>,
    until: Option<u64>,
    catch_up: bool,
) -> Session {
    let mut s = Session {
        id: ctx.rec.id(),
        game,
        client,
        engine,
        last_event_id: last_event_id.clone(),
        catch_up,
        opened_ms: ctx.rec.now_ms(),
        status: None,
        events: Vec::new(),
        closed_ms: 0,
        end: String::new(),
    };
    let mut req = ctx
        .http
        .get(format!("{base}/v1/games/{}/events", ctx.games[game]))
        .bearer_auth(token);
    if let Some(id) = &last_event_id {
        req = req.header("last-event-id", id);
    }
    // A catch-up session waits 2 s for each next chunk; the others end at `until`.
    let left = || -> Duration {
        match until {
            Some(u) => Duration::from_millis(u.saturating_sub(ctx.rec.now_ms())),
            None => Duration::from_secs(2),
        }
    };
    let response = match tokio::time::timeout(
        Duration::from_secs(5).min(left() + Duration::from_secs(1)),
        req.send(),
    )
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            s.end = format!("error: {}", error_chain(&e.without_url()));
            s.closed_ms = ctx.rec.now_ms();
            return s;
        }
        Err(_) => {
            s.end = "connect timeout".into();
            s.closed_ms = ctx.rec.now_ms();
            return s;
        }
    };
    s.status = Some(response.status().as_u16());
    if !response.status().is_success() {
        s.end = format!("status {}", response.status());
        s.closed_ms = ctx.rec.now_ms();
        return s;
    }
    let mut body = response.bytes_stream();
    let mut buf = String::new();
    let hard_stop = ctx.rec.now_ms() + 30_000;
    loop {
        let wait = left();
        if wait.is_zero() || ctx.rec.now_ms() > hard_stop {
            s.end = if catch_up {
                "idle".into()
            } else {
                "client".into()
            };
            break;
        }
        match tokio::time::timeout(wait, body.next()).await {
            Err(_) => {
                s.end = if catch_up {
                    "idle".into()
                } else {
                    "client".into()
                };
                break;
            }
            Ok(None) => {
                s.end = "eof".into();
                break;
            }
            Ok(Some(Err(e))) => {
                s.end = format!("error: {}", error_chain(&e.without_url()));
                break;
            }
            Ok(Some(Ok(chunk))) => {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let frame: String = buf.drain(..end + 2).collect();
                    if let Some(seen) = parse_frame(&frame, ctx.rec.now_ms()) {
                        s.events.push(seen);
                    }
                }
            }
        }
    }
    s.closed_ms = ctx.rec.now_ms();
    s
}

/// An SSE frame as an event; `None` for a comment (keep-alive).
fn parse_frame(frame: &str, at_ms: u64) -> Option<Seen> {
    let mut id = None;
    let mut kind = None;
    let mut data = String::new();
    for line in frame.lines() {
        if let Some(v) = line.strip_prefix("id:") {
            id = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("event:") {
            kind = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim());
        }
    }
    if id.is_none() && kind.is_none() && data.is_empty() {
        return None;
    }
    let v: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
    Some(Seen {
        at_ms,
        id,
        kind: kind
            .or_else(|| v["type"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "message".into()),
        seq: v["seq"].as_u64(),
        action_id: v["action_id"].as_str().map(str::to_owned),
    })
}
