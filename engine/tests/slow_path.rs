//! The slow path end to end, on both deployments: an action's jobs run with the `scripted`
//! provider and a later action is served what they wrote; a worker killed with SIGKILL in the
//! middle of a job leaves it to a restarted one, which finishes it once; malformed model output
//! is dead-lettered and never written; a player's words to a stakeholder stream back over SSE
//! and end up in the game's log.
//!
//! Waits are deadlines on polled conditions, never fixed sleeps standing in for an assertion.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use hotpath_background::JobStorage;
use hotpath_background::jobs::JobSettings;
use hotpath_background::llm::LlmConfig;
use hotpath_background::queue::JobRecord;
use hotpath_background::worker::{WorkerConfig, default_name};
use hotpath_cache::cache::{CacheExt, keys};
use hotpath_cache::events::LoggedEvent;
use hotpath_cache::jobs::Job;
use hotpath_cache::state::ContextHash;
use hotpath_cache::store::ClaimQuery;
use hotpath_cache::time::now_ms;
use hotpath_cache::{GameId, RequestId, SceneId, StakeholderId};
use hotpath_engine::api::{self, AppState};
use hotpath_engine::compose::Shutdown;
use hotpath_engine::hot::HotConfig;

use common::{ADMIN, SseReader, TestApp};

/// How long any awaited condition may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(60);

const DOCKS_STAKEHOLDERS: [&str; 3] = ["mara", "brann", "iris"];

// ---------------------------------------------------------------------------------------------
// In-process workers and the deployment under test.

/// The hot path with a generous budget: these tests are about what the slow path does with the
/// jobs, not about the budget (the hot-path suites hold that).
fn patient(mut app: TestApp) -> TestApp {
    let api_config = common::api_config(1000);
    let hot = app.backends.hot_path(
        hotpath_cache::scenario::builtin(),
        HotConfig {
            budget: Duration::from_secs(5),
            ..HotConfig::default()
        },
    );
    app.state = AppState::new(hot, ADMIN, &api_config);
    app.state.queue = Some(std::sync::Arc::new(app.backends.jobs.clone()));
    app.router = api::app(app.state.clone(), &api_config);
    app
}

fn worker_config(tag: &str) -> WorkerConfig {
    WorkerConfig {
        name: format!("slow-path-{tag}-{}", uuid::Uuid::new_v4().simple()),
        concurrency: 4,
        heartbeat: Duration::from_secs(1),
        shutdown_timeout: Duration::from_secs(10),
        jobs: JobSettings {
            timeout: Duration::from_secs(20),
            retry_base: Duration::from_millis(20),
            retry_max: Duration::from_millis(100),
            ..JobSettings::default()
        },
        ..WorkerConfig::default()
    }
}

/// Workers running in this process on the app's job storage.
struct Workers {
    shutdown: Shutdown,
    handle: tokio::task::JoinHandle<Result<(), String>>,
}

impl Workers {
    fn start(app: &TestApp, llm: LlmConfig, tag: &str) -> Workers {
        let shutdown = Shutdown::default();
        let backends = app.backends.clone();
        let config = worker_config(tag);
        let stop = shutdown.wait();
        let handle = tokio::spawn(async move {
            backends
                .run_workers(&llm, config, stop)
                .await
                .map_err(|e| format!("{e:#}"))
        });
        Workers { shutdown, handle }
    }

    async fn stop(self) {
        self.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("the workers stop on shutdown")
            .expect("the worker task does not panic")
            .expect("the workers ran without error");
    }
}

/// Polls the job storage until at least `at_least` jobs exist and every one satisfies `ok`.
async fn wait_jobs(
    jobs: &JobStorage,
    at_least: usize,
    ok: impl Fn(&JobRecord) -> bool,
    what: &str,
) -> Vec<JobRecord> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let all = jobs.jobs(1000).await.expect("jobs list");
        if all.len() >= at_least && all.iter().all(&ok) {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not reached within {DEADLINE:?}: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn dispatched(answer: &Value) -> Vec<Value> {
    answer["dispatched"]
        .as_array()
        .expect("`dispatched` is an array")
        .clone()
}

fn dispatched_kinds(answer: &Value) -> Vec<String> {
    dispatched(answer)
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_owned())
        .collect()
}

fn sources(answer: &Value) -> BTreeMap<String, String> {
    answer["reactions"]
        .as_array()
        .expect("reactions")
        .iter()
        .map(|r| {
            (
                r["stakeholder_id"].as_str().unwrap().to_owned(),
                r["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn docks() -> SceneId {
    SceneId::new("docks").unwrap()
}

fn stakeholders() -> Vec<StakeholderId> {
    DOCKS_STAKEHOLDERS
        .iter()
        .map(|s| StakeholderId::new(*s).unwrap())
        .collect()
}

/// The dialogue replies to `request` recorded beside the game's log.
async fn replies(app: &TestApp, game: GameId, request: RequestId) -> Vec<String> {
    app.backends
        .store
        .dialogue_replies(game, 0)
        .await
        .expect("dialogue replies")
        .into_iter()
        .filter(|r| r.request_id == request)
        .map(|r| r.text)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// SSE over a real socket, with the reader of tests/common.

async fn open_events(client: &reqwest::Client, base: &str, game: &str, token: &str) -> SseReader {
    let (status, reader) = SseReader::open(client, base, game, token, "", None).await;
    assert_eq!(status, 200, "the event stream opens");
    reader
}

async fn http_new_game(client: &reqwest::Client, base: &str) -> (String, String) {
    let r = client
        .post(format!("{base}/v1/games"))
        .bearer_auth(ADMIN)
        .json(&json!({"scenario": "harbor-strike"}))
        .send()
        .await
        .expect("create game");
    assert_eq!(r.status(), 201);
    let game = r.json::<Value>().await.unwrap()["game_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = client
        .post(format!("{base}/v1/games/{game}/players"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "Ada"}))
        .send()
        .await
        .expect("add player");
    assert_eq!(r.status(), 201);
    let token = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    (game, token)
}

async fn http_act(
    client: &reqwest::Client,
    base: &str,
    game: &str,
    token: &str,
    body: Value,
) -> Value {
    let r = client
        .post(format!("{base}/v1/games/{game}/actions"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("act");
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

// ---------------------------------------------------------------------------------------------
// `hotpath` child processes.

/// A `hotpath` process that is SIGKILLed when dropped, whatever the test's outcome.
struct Proc {
    child: Child,
    /// Its stderr (the logs), for failure messages.
    log: PathBuf,
    what: String,
}

impl Proc {
    /// Spawns `hotpath args…` with `env`, and waits for a stdout line starting with `ready`;
    /// returns the process and that line. Stdout is drained to its end by a thread, so that a
    /// later print never meets a closed pipe.
    async fn spawn(
        what: &str,
        args: &[String],
        env: &[(&str, String)],
        log: PathBuf,
        ready: &'static str,
    ) -> (Proc, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hotpath"));
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
        // Only what this test sets: nothing inherited may change the deployment or the model.
        for (var, _) in std::env::vars().filter(|(k, _)| k.starts_with("HOTPATH_")) {
            cmd.env_remove(var);
        }
        cmd.env("HOTPATH_ADMIN_TOKEN", ADMIN)
            .env("RUST_LOG", "info,sqlx=warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn hotpath");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with(ready)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(line);
                }
            }
        });
        let proc = Proc {
            child,
            log,
            what: what.to_owned(),
        };
        let line = match tokio::time::timeout(DEADLINE, rx).await {
            Ok(Ok(line)) => line,
            _ => panic!(
                "{what} never printed `{ready}`; its log:\n{}",
                proc.log_tail()
            ),
        };
        (proc, line)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        let start = (start..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        format!("--- {} ---\n{}", self.what, &text[start..])
    }

    /// SIGKILL, then reap.
    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `hotpath serve` on an ephemeral port; returns the process and its base URL.
async fn spawn_serve(
    what: &str,
    backend: &[String],
    env: &[(&str, String)],
    log: PathBuf,
) -> (Proc, String) {
    let mut args: Vec<String> = vec!["serve".into(), "--listen".into(), "127.0.0.1:0".into()];
    args.extend(backend.iter().cloned());
    let (proc, line) = Proc::spawn(what, &args, env, log, "hotpath listening on ").await;
    let base = line["hotpath listening on ".len()..].trim().to_owned();
    (proc, base)
}

/// `hotpath worker`; returns the process and its worker name.
async fn spawn_worker(
    what: &str,
    backend: &[String],
    env: &[(&str, String)],
    log: PathBuf,
) -> (Proc, String) {
    let mut args: Vec<String> = vec!["worker".into()];
    args.extend(backend.iter().cloned());
    let (proc, line) = Proc::spawn(what, &args, env, log, "hotpath worker ").await;
    let name = line["hotpath worker ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    (proc, name)
}

/// How the worker name of `hotpath serve` with pid `pid` begins (`serve-{hostname}-{pid}-`;
/// a random part follows).
fn serve_worker_name(pid: u32) -> String {
    let mine = default_name("serve");
    let mut parts = mine.rsplitn(3, '-');
    let (_random, _pid) = (parts.next(), parts.next());
    format!("{}-{pid}-", parts.next().unwrap())
}

/// Whether `lock_by` is the worker `name` names: the whole name, or the beginning of it
/// ([`serve_worker_name`]).
fn held_by(lock_by: Option<&str>, name: &str) -> bool {
    lock_by.is_some_and(|l| l.starts_with(name))
}

fn latency(ms: u64) -> Vec<(&'static str, String)> {
    vec![
        ("HOTPATH_LLM_PROVIDER", "scripted".into()),
        ("HOTPATH_LLM_LATENCY_MS", ms.to_string()),
        ("HOTPATH_LLM_ERROR_RATE", "0".into()),
        ("HOTPATH_LLM_MALFORMED_RATE", "0".into()),
    ]
}

/// Every metric a query of `docs/grafana/hotpath.json` names is in `exposition` (histograms by
/// their `_bucket`, summaries by their base name).
fn dashboard_names_exported_metrics(exposition: &str) {
    let dashboard: Value =
        serde_json::from_str(include_str!("../../docs/grafana/hotpath.json")).unwrap();
    let exported: std::collections::BTreeSet<&str> = exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("hotpath_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    exported.contains(name.as_str()),
                    "panel `{}` queries `{name}`, which /metrics does not export; it has: {exported:?}",
                    panel["title"]
                );
                checked += 1;
                rest = &rest[at + name.len()..];
            }
        }
    }
    assert!(checked >= 15, "the dashboard names {checked} metrics");
}

// ---------------------------------------------------------------------------------------------

mod suite {
    use super::*;

    /// Act → the dispatched jobs run with the scripted provider → a later action in the same
    /// scene gets precomputed reactions and narration and social from the cache.
    pub async fn act_then_jobs_run_then_a_later_action_is_precomputed(app: TestApp) {
        let app = patient(app);
        let workers = Workers::start(&app, LlmConfig::default(), "precompute");
        let (game, token) = app.new_game().await;

        let first = app
            .act(
                &game,
                &token,
                json!({"scene_id": "docks", "kind": "say", "text": "Good morning, everyone."}),
            )
            .await;
        assert_eq!(first.status, 200, "{}", first.text);
        // Nothing is precomputed yet: the first answer comes from rules and templates.
        assert!(
            sources(&first.json).values().all(|s| s == "fallback"),
            "{}",
            first.text
        );
        assert_eq!(first.json["narration"]["source"], "fallback");
        assert_eq!(first.json["social"]["source"], "fallback");
        let kinds = dispatched_kinds(&first.json);
        for kind in [
            "prepare_scene_reactions",
            "generate_beat_description",
            "generate_social_bundle",
        ] {
            assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
        }
        let ids: Vec<String> = dispatched(&first.json)
            .iter()
            .map(|d| {
                d["job_id"]
                    .as_str()
                    .expect("acknowledged within the bound")
                    .to_owned()
            })
            .collect();

        let jobs = wait_jobs(
            &app.backends.jobs,
            ids.len(),
            |j| j.status == "Done",
            "every dispatched job done",
        )
        .await;
        for id in &ids {
            assert!(
                jobs.iter().any(|j| &j.id == id),
                "job {id} is in the storage"
            );
        }

        let second = app
            .act(
                &game,
                &token,
                json!({"scene_id": "docks", "kind": "threaten", "text": "Pay up or the cranes burn."}),
            )
            .await;
        assert_eq!(second.status, 200, "{}", second.text);
        let reactions = second.json["reactions"].as_array().unwrap();
        assert_eq!(reactions.len(), DOCKS_STAKEHOLDERS.len(), "{}", second.text);
        // Prepared ahead for the kinds of action to come, not in reply to the first one: a
        // threat finds reactions written for a threat in this very context.
        for r in reactions {
            assert_eq!(r["source"], "precomputed", "{}", second.text);
            assert_eq!(r["provenance"]["made_for"], r["served_for"], "{r}");
            assert!(
                r["served_for"].as_str().unwrap().ends_with("/threaten"),
                "{r}"
            );
            assert!(r["age_ms"].as_i64().is_some_and(|a| a >= 0), "{r}");
            assert!(!r["text"].as_str().unwrap().is_empty(), "{r}");
        }
        assert_eq!(
            second.json["narration"]["source"], "cache",
            "{}",
            second.text
        );
        assert_eq!(second.json["social"]["source"], "cache", "{}", second.text);
        assert_eq!(second.json["degraded"], false);

        // The deployment's own account of it: jobs by state and kind, and the model calls,
        // each of whose answers was written (the scripted provider fails nothing here).
        let report = app
            .call(
                axum::http::Method::GET,
                "/v1/admin/slow-path",
                Some(ADMIN),
                None,
            )
            .await;
        assert_eq!(report.status, 200, "{}", report.text);
        let llm = &report.json["llm"];
        let prepared = &llm["by_kind"]["prepare_scene_reactions"];
        assert!(prepared["calls"].as_u64().unwrap() >= 1, "{}", report.text);
        assert_eq!(prepared["written"], prepared["calls"], "{}", report.text);
        assert!(
            llm["prompt_tokens"].as_u64().unwrap() > 0,
            "{}",
            report.text
        );
        assert!(
            report.json["jobs"]["by_state"]["done"].as_u64().unwrap() >= ids.len() as u64,
            "{}",
            report.text
        );
        let player = app
            .call(
                axum::http::Method::GET,
                "/v1/admin/slow-path",
                Some(&token),
                None,
            )
            .await;
        assert_eq!(player.status, 403, "admin only: {}", player.text);

        // The Grafana dashboard in docs/ reads only metrics this server exports.
        let scraped = app
            .call(axum::http::Method::GET, "/metrics", None, None)
            .await;
        assert_eq!(scraped.status, 200);
        dashboard_names_exported_metrics(&scraped.text);
        workers.stop().await;
    }

    /// A worker SIGKILLed in the middle of a job: the job completes on a restarted worker and
    /// exactly one result exists. Embedded: the workers live in `hotpath serve`, which is
    /// killed and restarted on the same data directory. Distributed: `hotpath worker` is killed
    /// and another one started.
    pub async fn a_worker_killed_mid_job_leaves_it_to_a_restarted_one(app: TestApp) {
        let dir = tempfile::tempdir().unwrap();
        let embedded = app.backends.mode == "embedded";
        let backend: Vec<String> = match (&app.config.redis_url, &app.config.database_url) {
            (Some(redis), Some(database)) => vec![
                "--redis-url".into(),
                redis.clone(),
                "--database-url".into(),
                database.clone(),
            ],
            _ => vec![
                "--data-dir".into(),
                app.config.data_dir.display().to_string(),
            ],
        };
        // Slow enough that the reply is still streaming when the kill lands.
        let slow = latency(4000);
        let log = |name: &str| dir.path().join(format!("{name}.log"));

        let (mut server, mut base) =
            spawn_serve("serve (first)", &backend, &slow, log("serve-1")).await;
        let (mut victim, victim_name) = if embedded {
            (None, serve_worker_name(server.pid()))
        } else {
            let (p, name) = spawn_worker("worker (victim)", &backend, &slow, log("worker-1")).await;
            (Some(p), name)
        };

        let client = reqwest::Client::new();
        let (game, token) = http_new_game(&client, &base).await;
        let game_id: GameId = game.parse().unwrap();
        let mut sse = open_events(&client, &base, &game, &token).await;
        let answer = http_act(
            &client,
            &base,
            &game,
            &token,
            json!({"scene_id": "docks", "kind": "say", "text": "Mara, tell me about the strike.", "target": "mara"}),
        )
        .await;
        let request = answer["dialogue_request_id"]
            .as_str()
            .expect("a dialogue request id")
            .to_owned();
        let request_id: RequestId = request.parse().unwrap();
        let at_least = dispatched(&answer).len();

        // The reply job starts and streams its first words: it is in the middle of its work.
        let mut job_id: Option<String> = None;
        loop {
            let e = sse.next_within(DEADLINE).await;
            match e.event.as_str() {
                "job.started" if e.data["kind"] == "stream_dialogue_reply" => {
                    job_id = Some(e.data["job_id"].as_str().unwrap().to_owned());
                }
                "dialogue.chunk"
                    if e.data["request_id"] == request.as_str()
                        && e.data["index"].as_u64().is_some_and(|i| i >= 1) =>
                {
                    break;
                }
                _ => {}
            }
        }
        let job_id = job_id.expect("job.started comes before the reply's chunks");
        let held = app.backends.jobs.job(&job_id).await.unwrap().unwrap();
        assert!(held_by(held.lock_by.as_deref(), &victim_name), "{held:?}");

        // SIGKILL the process running it.
        match victim.as_mut() {
            Some(worker) => worker.kill(),
            None => server.kill(),
        }
        drop(sse);
        let held = app.backends.jobs.job(&job_id).await.unwrap().unwrap();
        assert_ne!(held.status, "Done", "killed mid-job: {held:?}");
        assert!(
            replies(&app, game_id, request_id).await.is_empty(),
            "killed before the reply was logged"
        );

        // Restart: embedded, `hotpath serve` again on the same data directory; distributed,
        // another `hotpath worker` (another pid, so another name).
        let fast = latency(50);
        let (rescuer, rescuer_name) = if embedded {
            let (p, b) = spawn_serve("serve (restarted)", &backend, &fast, log("serve-2")).await;
            base = b;
            let name = serve_worker_name(p.pid());
            server = p;
            (None, name)
        } else {
            let (p, name) =
                spawn_worker("worker (rescuer)", &backend, &fast, log("worker-2")).await;
            (Some(p), name)
        };
        assert_ne!(rescuer_name, victim_name);

        let logs = || {
            let mut s = server.log_tail();
            if let Some(w) = &rescuer {
                s.push('\n');
                s.push_str(&w.log_tail());
            }
            s
        };
        let deadline = Instant::now() + DEADLINE;
        let done = loop {
            let rec = app.backends.jobs.job(&job_id).await.unwrap().unwrap();
            if rec.status == "Done" {
                break rec;
            }
            assert!(
                Instant::now() < deadline,
                "job {job_id} not finished after the restart: {rec:?}\n{}",
                logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(held_by(done.lock_by.as_deref(), &rescuer_name), "{done:?}");
        assert!(done.attempts >= 2, "delivered again: {done:?}");

        // Exactly one result: one reply in the log...
        let logged = replies(&app, game_id, request_id).await;
        assert_eq!(logged.len(), 1, "{logged:?}");
        assert!(!logged[0].is_empty());

        // ...and, once every job of the action is done, one planned row per dedupe key, even
        // for those the victim was running when it died.
        let jobs = wait_jobs(
            &app.backends.jobs,
            at_least,
            |j| j.status == "Done",
            "every job of the action done after the restart",
        )
        .await;
        let mut context: Option<ContextHash> = None;
        for j in &jobs {
            if let Some(Job::PrepareSceneReactions(a)) = &j.job
                && a.scene_id == docks()
            {
                context = Some(a.context_hash.clone());
            }
        }
        if let Some(context) = context {
            // However many deliveries the preparation took, each (stakeholder, kind) holds
            // exactly the target, never more: the rows' dedupe keys made the writes idempotent.
            let key = hotpath_cache::model::reaction_key(
                &context,
                hotpath_cache::model::ActionKind::Help,
            );
            let counts = app
                .backends
                .store
                .ready_counts(game_id, &docks(), &key, now_ms())
                .await
                .unwrap();
            let target = JobSettings::default().reactions_per_kind;
            assert!(
                counts.values().all(|n| *n == target),
                "one row per prepared reaction: {counts:?}"
            );
        }

        // The restarted deployment still answers.
        if embedded {
            let answer = http_act(
                &client,
                &base,
                &game,
                &token,
                json!({"scene_id": "docks", "kind": "say", "text": "And now?"}),
            )
            .await;
            assert_eq!(answer["turn"], 2);
        }
        drop(server);
    }

    /// Malformed model output never reaches the cache or the table; after the retries the job
    /// is a dead letter with the reason.
    pub async fn malformed_output_is_dead_lettered_and_never_written(app: TestApp) {
        let app = patient(app);
        let llm = LlmConfig {
            malformed_rate: 1.0,
            ..LlmConfig::default()
        };
        let workers = Workers::start(&app, llm, "malformed");
        let (game, token) = app.new_game().await;
        let game_id: GameId = game.parse().unwrap();
        let first = app
            .act(
                &game,
                &token,
                json!({"scene_id": "docks", "kind": "say", "text": "Mara, what do the crews want?", "target": "mara"}),
            )
            .await;
        assert_eq!(first.status, 200, "{}", first.text);
        let ids: Vec<String> = dispatched(&first.json)
            .iter()
            .map(|d| d["job_id"].as_str().expect("acknowledged").to_owned())
            .collect();
        assert!(ids.len() >= 5, "{}", first.text);

        let jobs = wait_jobs(
            &app.backends.jobs,
            ids.len(),
            JobRecord::is_dead,
            "every job dead-lettered",
        )
        .await;
        let dead = app.backends.jobs.dead_letters(1000).await.unwrap();
        assert_eq!(dead.len(), jobs.len(), "{dead:#?}");
        for id in &ids {
            assert!(dead.iter().any(|d| &d.id == id), "{id} is a dead letter");
        }
        workers.stop().await;

        let mut action_context: Option<ContextHash> = None;
        for rec in &dead {
            let job = rec.job.clone().expect("the dead letter keeps its message");
            let kind = job.kind().as_str();
            let reason = rec.reason().expect("a reason");
            assert!(
                reason.contains(kind) && reason.contains("invalid output"),
                "{reason}"
            );
            assert!(
                reason.contains(&format!("attempt {}", JobSettings::default().max_attempts)),
                "after the retries: {reason}"
            );
            let cache = &app.backends.cache;
            let written = match &job {
                Job::NarratePhaseTransition(j) => cache
                    .get_typed(&keys::narration(game_id, &j.conflict_id, &j.phase_id))
                    .await
                    .unwrap()
                    .is_some(),
                Job::GenerateBeatDescription(j) => cache
                    .get_typed(&keys::beat(game_id, &j.conflict_id, &j.phase_id, 0))
                    .await
                    .unwrap()
                    .is_some(),
                Job::GenerateSocialBundle(_) => cache
                    .get_typed(&keys::social(game_id))
                    .await
                    .unwrap()
                    .is_some(),
                Job::GenerateCanonReferences(_) => cache
                    .get_typed(&keys::canon_references(game_id))
                    .await
                    .unwrap()
                    .is_some(),
                Job::PrepareSceneReactions(j) if j.scene_id == docks() => {
                    action_context = Some(hotpath_cache::model::reaction_key(
                        &j.context_hash,
                        hotpath_cache::model::ActionKind::Say,
                    ));
                    false // checked below, for all rows at once
                }
                _ => false,
            };
            assert!(!written, "{kind} wrote to the cache: {rec:?}");
        }

        // The table holds nothing ready for the scene: no action for the context, no reaction.
        let context = action_context.expect("refills were dispatched");
        let counts = app
            .backends
            .store
            .ready_counts(game_id, &docks(), &context, now_ms())
            .await
            .unwrap();
        assert!(counts.is_empty(), "{counts:?}");
        let claimed = app
            .backends
            .store
            .claim(&ClaimQuery {
                game_id,
                scene_id: docks(),
                stakeholders: stakeholders(),
                context_hash: context,
                now: now_ms(),
            })
            .await
            .unwrap();
        assert!(claimed.is_empty(), "{claimed:?}");
        assert!(
            app.backends
                .store
                .dialogue_replies(game_id, 0)
                .await
                .unwrap()
                .is_empty(),
            "no reply recorded"
        );

        // So a later action is served from rules alone.
        let second = app
            .act(
                &game,
                &token,
                json!({"scene_id": "docks", "kind": "say", "text": "Anyone?"}),
            )
            .await;
        assert_eq!(second.status, 200, "{}", second.text);
        assert!(
            sources(&second.json).values().all(|s| s == "fallback"),
            "{}",
            second.text
        );
        assert_eq!(second.json["narration"]["source"], "fallback");
        assert_eq!(second.json["social"]["source"], "fallback");
    }

    /// A player's words to a stakeholder stream back over SSE as `dialogue.chunk` events in
    /// order, then `dialogue.done`, and the reply is in the game's event log.
    pub async fn dialogue_streams_over_sse_and_is_logged(app: TestApp) {
        let app = patient(app);
        let llm = LlmConfig {
            // Spread over the chunks: the reply really streams.
            latency: Duration::from_millis(300),
            ..LlmConfig::default()
        };
        let workers = Workers::start(&app, llm, "dialogue");
        let base = common::serve(&app).await;
        let client = reqwest::Client::new();
        let (game, token) = app.new_game().await;
        let game_id: GameId = game.parse().unwrap();
        let mut sse = open_events(&client, &base, &game, &token).await;
        let answer = http_act(
            &client,
            &base,
            &game,
            &token,
            json!({"scene_id": "docks", "kind": "say", "text": "Mara, will the crews hold out?", "target": "mara"}),
        )
        .await;
        let request = answer["dialogue_request_id"]
            .as_str()
            .expect("a dialogue request id")
            .to_owned();
        assert!(
            dispatched_kinds(&answer)
                .iter()
                .any(|k| k == "stream_dialogue_reply")
        );

        let mut chunks: Vec<String> = Vec::new();
        let done = loop {
            let e = sse.next_within(DEADLINE).await;
            match e.event.as_str() {
                "dialogue.chunk" => {
                    assert_eq!(e.data["request_id"], request.as_str(), "{e:?}");
                    assert_eq!(e.data["stakeholder_id"], "mara");
                    assert_eq!(
                        e.data["index"].as_u64(),
                        Some(chunks.len() as u64),
                        "chunks arrive in order: {e:?}"
                    );
                    chunks.push(e.data["text"].as_str().unwrap().to_owned());
                }
                "dialogue.done" => {
                    assert_eq!(e.data["request_id"], request.as_str(), "{e:?}");
                    assert_eq!(e.data["stakeholder_id"], "mara");
                    break e.data["text"].as_str().unwrap().to_owned();
                }
                _ => {}
            }
        };
        assert!(chunks.len() >= 2, "streamed in pieces: {chunks:?}");
        assert_eq!(chunks.concat(), done, "the chunks make up the reply");
        assert!(!done.trim().is_empty());

        // The reply is logged right after `dialogue.done` is published.
        let request_id: RequestId = request.parse().unwrap();
        let deadline = Instant::now() + DEADLINE;
        let logged = loop {
            let logged = replies(&app, game_id, request_id).await;
            if !logged.is_empty() {
                break logged;
            }
            assert!(Instant::now() < deadline, "the reply never reached the log");
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        assert_eq!(logged, vec![done]);
        let recorded = app
            .backends
            .store
            .dialogue_replies(game_id, 0)
            .await
            .unwrap();
        assert!(recorded.iter().any(|r| r.stakeholder_id.as_str() == "mara"));
        // Not in the log: only the game's writers append there.
        let log = app.backends.store.events(game_id, 0).await.unwrap();
        assert!(
            log.iter()
                .all(|(_, e)| !matches!(e, LoggedEvent::DialogueReplied { .. }))
        );
        workers.stop().await;
    }
}

both_deployments!(
    act_then_jobs_run_then_a_later_action_is_precomputed,
    a_worker_killed_mid_job_leaves_it_to_a_restarted_one,
    malformed_output_is_dead_lettered_and_never_written,
    dialogue_streams_over_sse_and_is_logged,
);
