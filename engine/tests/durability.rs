//! What the write path promises, checked on real `hotpath serve` processes: an engine killed
//! with SIGKILL right after answering loses none of the events and jobs it answered with, and
//! two engines acting on one game keep its log whole (no gap, no duplicate, every answered
//! action exactly once) while each one's event stream carries the other's actions.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use hotpath_background::JobStorage;
use hotpath_cache::GameId;
use hotpath_cache::store::{PostgresStore, SqliteStore, Store};

const BIN: &str = env!("CARGO_BIN_EXE_hotpath");
const ADMIN: &str = "durability-admin";

/// A running `hotpath serve`; killed (SIGKILL) when dropped.
struct Engine {
    child: std::process::Child,
    base: String,
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where an engine keeps its state: a data dir (embedded) or Redis + PostgreSQL.
#[derive(Clone)]
enum Deployment {
    Embedded(std::path::PathBuf),
    Distributed { redis: String, database: String },
}

impl Deployment {
    fn start(&self) -> Engine {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--workers", "false"])
            .args(["--rate-per-second", "100000", "--budget-ms", "5000"])
            .env("HOTPATH_ADMIN_TOKEN", ADMIN)
            .env_remove("HOTPATH_REDIS_URL")
            .env_remove("HOTPATH_DATABASE_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        match self {
            Deployment::Embedded(dir) => {
                cmd.arg("--data-dir").arg(dir);
            }
            Deployment::Distributed { redis, database } => {
                cmd.args(["--redis-url", redis, "--database-url", database]);
            }
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines.next().expect("serve prints its address").unwrap();
            if let Some(url) = line.strip_prefix("hotpath listening on http://") {
                break url.to_owned();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Engine {
            child,
            base: format!("http://{addr}"),
        }
    }

    async fn store(&self) -> Box<dyn Store> {
        match self {
            Deployment::Embedded(dir) => Box::new(
                SqliteStore::open(&dir.join("hotpath.sqlite"))
                    .await
                    .unwrap(),
            ),
            Deployment::Distributed { database, .. } => {
                Box::new(PostgresStore::connect(database).await.unwrap())
            }
        }
    }

    async fn jobs(&self) -> JobStorage {
        match self {
            Deployment::Embedded(dir) => JobStorage::sqlite(&dir.join("hotpath.sqlite"))
                .await
                .unwrap(),
            Deployment::Distributed { database, .. } => {
                JobStorage::postgres(database).await.unwrap()
            }
        }
    }
}

fn distributed() -> Deployment {
    Deployment::Distributed {
        redis: hotpath_testkit::shared_redis().url(),
        database: hotpath_testkit::fresh_postgres_database(),
    }
}

async fn post(client: &reqwest::Client, url: String, token: &str, body: Value) -> (u16, Value) {
    let r = client
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn new_game(client: &reqwest::Client, base: &str) -> (String, String) {
    let (s, game) = post(
        client,
        format!("{base}/v1/games"),
        ADMIN,
        json!({"scenario": "harbor-strike"}),
    )
    .await;
    assert_eq!(s, 201, "{game}");
    let game = game["game_id"].as_str().unwrap().to_owned();
    let (s, player) = post(
        client,
        format!("{base}/v1/games/{game}/players"),
        ADMIN,
        json!({"name": "Ada"}),
    )
    .await;
    assert_eq!(s, 201, "{player}");
    (game, player["token"].as_str().unwrap().to_owned())
}

fn say(n: usize) -> Value {
    json!({"scene_id": "docks", "kind": "say", "target": "mara", "text": format!("Mara, listen: {n}")})
}

/// Every event of the game's stream from the very start (`Last-Event-ID: 0-0`), read until
/// `want` action ids and `want_jobs` job ids were seen, or nothing came for a while.
async fn applied_since_start(
    client: &reqwest::Client,
    base: &str,
    game: &str,
    token: &str,
    want: usize,
    want_jobs: usize,
) -> (Vec<String>, BTreeSet<String>) {
    let response = client
        .get(format!("{base}/v1/games/{game}/events"))
        .bearer_auth(token)
        .header("last-event-id", "0-0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let (mut actions, mut jobs) = (Vec::new(), BTreeSet::new());
    let mut buffer = String::new();
    while actions.len() < want || jobs.len() < want_jobs {
        let chunk = match tokio::time::timeout(Duration::from_secs(5), body.next()).await {
            Ok(Some(Ok(c))) => c,
            _ => break,
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let data = frame
                .lines()
                .find_map(|l| l.strip_prefix("data:"))
                .unwrap_or("null");
            let v: Value = serde_json::from_str(data.trim()).unwrap_or(Value::Null);
            match v["type"].as_str() {
                Some("action.applied") => actions.push(v["action_id"].as_str().unwrap().to_owned()),
                Some("job.queued") => {
                    jobs.insert(v["job_id"].as_str().unwrap().to_owned());
                }
                _ => {}
            }
        }
    }
    (actions, jobs)
}

/// Actions answered by an engine that is then SIGKILLed at once: after a restart, every
/// answered action is in the log and its events are served, and every job it named is in the
/// job storage.
async fn sigkill_after_answering(deployment: Deployment) {
    let client = reqwest::Client::new();
    let engine = deployment.start();
    let (game, token) = new_game(&client, &engine.base).await;
    let url = format!("{}/v1/games/{game}/actions", engine.base);
    let answers: Vec<(u16, Value)> =
        futures::future::join_all((0..24).map(|n| post(&client, url.clone(), &token, say(n))))
            .await;
    drop(engine); // SIGKILL, right after the last answer

    let mut answered = BTreeSet::new();
    let mut named_jobs = BTreeSet::new();
    for (status, a) in &answers {
        assert_eq!(*status, 200, "{a}");
        answered.insert(a["action_id"].as_str().unwrap().to_owned());
        for d in a["dispatched"].as_array().unwrap() {
            named_jobs.insert(d["job_id"].as_str().unwrap().to_owned());
        }
    }
    assert!(!named_jobs.is_empty(), "a say to mara queues jobs");

    let engine = deployment.start();
    let (actions, queued) = applied_since_start(
        &client,
        &engine.base,
        &game,
        &token,
        answered.len(),
        named_jobs.len(),
    )
    .await;
    let served: BTreeSet<String> = actions.iter().cloned().collect();
    assert_eq!(
        served, answered,
        "every answered action's events are delivered"
    );
    assert_eq!(actions.len(), answered.len(), "each once");
    assert!(named_jobs.is_subset(&queued), "and its job.queued events");

    let jobs = deployment.jobs().await;
    for id in &named_jobs {
        assert!(jobs.job(id).await.unwrap().is_some(), "job {id} is stored");
    }
    let log = deployment
        .store()
        .await
        .events(game.parse::<GameId>().unwrap(), 0)
        .await
        .unwrap();
    let seqs: Vec<u64> = log.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=answered.len() as u64 + 1).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_sigkill_after_answering_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    sigkill_after_answering(Deployment::Embedded(dir.path().join("data"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_sigkill_after_answering_loses_nothing() {
    sigkill_after_answering(distributed()).await;
}

/// Two engines acting on one game pick precomputed rows from their own reservoirs, so both
/// hold the same rows: each row is still served once — the commit that marks it consumed
/// serves it, and the other engine's action is applied again with other rows (`ClaimTaken`).
/// Every answer is 200, no row's line appears in two answers, and every row served is
/// consumed in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_serve_each_precomputed_row_once() {
    use hotpath_cache::model::{
        ActionKind, PlannedAction, PlannedKind, PlannedStatus, Provenance, StakeholderMove,
        reaction_key,
    };
    let deployment = distributed();
    let client = reqwest::Client::new();
    let (a, b) = (deployment.start(), deployment.start());
    let (game, token) = new_game(&client, &a.base).await;
    let game_id: GameId = game.parse().unwrap();
    // `trade` lowers intensity, so the docks stay in their first phase: one context, one key.
    let scenario = &hotpath_cache::scenario::builtin()["harbor-strike"];
    let docks = hotpath_cache::SceneId::new("docks").unwrap();
    let state = hotpath_cache::state::GameState::new(game_id, scenario);
    let key = reaction_key(&state.context_hash(scenario, &docks), ActionKind::Trade);
    let stakeholders = scenario.scene(&docks).unwrap().stakeholders.clone();
    let now = hotpath_cache::time::now_ms();
    let rows: Vec<PlannedAction> = stakeholders
        .iter()
        .flat_map(|who| (0..10).map(move |n| (who.clone(), n)))
        .map(|(who, n)| PlannedAction {
            id: hotpath_cache::ids::PlannedActionId::generate(),
            game_id,
            scene_id: docks.clone(),
            stakeholder_id: who.clone(),
            kind: PlannedKind::Reaction,
            payload: StakeholderMove {
                behaviour: "weighs the offer".into(),
                intent: "probe".into(),
                line: format!("row {who} {n}"),
            },
            priority: 1,
            status: PlannedStatus::Ready,
            expires_at: now + 3_600_000,
            dedupe_key: format!("test:{game}:{who}:{n}"),
            reacts_to: None,
            provenance: Provenance {
                context_hash: key.clone(),
                world_version: 0,
                produced_at: now,
                model: "test".into(),
                prompt_version: "test".into(),
            },
            created_at: now,
        })
        .collect();
    let store = deployment.store().await;
    assert_eq!(
        store.insert_planned(&rows).await.unwrap(),
        rows.len() as u64
    );

    // Eight clients on each engine, more actions than rows.
    let runs = (0..16).map(|c| {
        let (client, token) = (client.clone(), token.clone());
        let base = if c % 2 == 0 { &a.base } else { &b.base };
        let url = format!("{base}/v1/games/{game}/actions");
        async move {
            let mut out = Vec::new();
            for n in 0..4 {
                let body = json!({"scene_id": "docks", "kind": "trade",
                    "text": format!("A fair price, {c}-{n}?")});
                out.push(post(&client, url.clone(), &token, body).await);
            }
            out
        }
    });
    let answers: Vec<(u16, Value)> = futures::future::join_all(runs)
        .await
        .into_iter()
        .flatten()
        .collect();
    let mut served = Vec::new();
    for (status, answer) in &answers {
        assert_eq!(*status, 200, "{answer}");
        for r in answer["reactions"].as_array().unwrap() {
            if r["source"] == "precomputed" {
                served.push(r["text"].as_str().unwrap().to_owned());
            }
        }
    }
    let distinct: BTreeSet<&String> = served.iter().collect();
    assert_eq!(
        distinct.len(),
        served.len(),
        "a row served twice: {served:?}"
    );
    assert_eq!(served.len(), rows.len(), "64 actions take all 30 rows");
    for row in &rows {
        let stored = store.planned(row.id).await.unwrap().unwrap();
        assert_eq!(
            stored.status,
            PlannedStatus::Consumed,
            "{}",
            row.payload.line
        );
        assert!(served.contains(&row.payload.line));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_on_one_game_keep_the_log_whole() {
    let deployment = distributed();
    let client = reqwest::Client::new();
    let (a, b) = (deployment.start(), deployment.start());
    let (game, token) = new_game(&client, &a.base).await;

    // Engine A's live stream, opened before anyone acts.
    let live = client
        .get(format!("{}/v1/games/{game}/events", a.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);

    // Eight clients on each engine, acting at once.
    let per_client = 12;
    let runs = (0..16).map(|c| {
        let (client, token) = (client.clone(), token.clone());
        let base = if c % 2 == 0 {
            a.base.clone()
        } else {
            b.base.clone()
        };
        let url = format!("{base}/v1/games/{game}/actions");
        async move {
            let mut out = Vec::new();
            for n in 0..per_client {
                out.push((
                    c % 2,
                    post(&client, url.clone(), &token, say(c * 100 + n)).await,
                ));
            }
            out
        }
    });
    let results: Vec<(usize, (u16, Value))> = futures::future::join_all(runs)
        .await
        .into_iter()
        .flatten()
        .collect();
    let mut answered: BTreeMap<String, usize> = BTreeMap::new();
    for (engine, (status, a)) in &results {
        assert_eq!(*status, 200, "engine {engine}: {a}");
        answered.insert(a["action_id"].as_str().unwrap().to_owned(), *engine);
    }
    assert_eq!(answered.len(), 16 * per_client);

    // The log: one join, then every answered action exactly once, seqs without a gap.
    let log = deployment
        .store()
        .await
        .events(game.parse::<GameId>().unwrap(), 0)
        .await
        .unwrap();
    let seqs: Vec<u64> = log.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=answered.len() as u64 + 1).collect::<Vec<_>>());
    let logged: Vec<String> = log
        .iter()
        .filter_map(|(_, e)| match e {
            hotpath_cache::events::LoggedEvent::ActionApplied(a) => Some(a.action_id.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(logged.len(), answered.len());
    assert_eq!(
        logged.iter().cloned().collect::<BTreeSet<_>>(),
        answered.keys().cloned().collect::<BTreeSet<_>>()
    );

    // Engine A's live stream carried the actions answered by B too, in commit (seq) order.
    let mut body = live.bytes_stream();
    let mut seen: Vec<(u64, String)> = Vec::new();
    let mut buffer = String::new();
    while seen.len() < answered.len() {
        let chunk = match tokio::time::timeout(Duration::from_secs(5), body.next()).await {
            Ok(Some(Ok(c))) => c,
            _ => break,
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data:")) {
                let v: Value = serde_json::from_str(data.trim()).unwrap_or(Value::Null);
                if v["type"] == "action.applied" {
                    seen.push((
                        v["seq"].as_u64().unwrap(),
                        v["action_id"].as_str().unwrap().to_owned(),
                    ));
                }
            }
        }
    }
    let from_b = seen.iter().filter(|(_, id)| answered[id] == 1).count();
    assert!(from_b > 0, "A's stream shows B's actions");
    assert_eq!(
        seen.len(),
        answered.len(),
        "every action reached A's stream"
    );
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "in commit order");
}
