//! The system under test: `hotpath serve` processes on one deployment, the servers under them,
//! and how to kill, restart and read them. Embedded: one engine on a data dir (SQLite, in-process
//! workers). Distributed: one or more engines (`--workers false`) on Redis and PostgreSQL, each
//! request sent to the next engine in turn (round-robin), optionally with a `hotpath worker`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hotpath_cache::GameId;
use hotpath_cache::events::LoggedEvent;
use hotpath_cache::store::{PostgresStore, SqliteStore, Store};
use hotpath_cache::stream::StreamId;

use crate::{PostgresServer, RedisServer};

/// The Redis of a distributed history.
pub enum Redis {
    /// Started by the harness: it can also be killed and restarted (its data is lost).
    Owned(RedisServer),
    /// Started by someone else; paused through its pid if given.
    External { url: String, pid: Option<u32> },
}

impl Redis {
    pub fn url(&self) -> String {
        match self {
            Redis::Owned(r) => r.url(),
            Redis::External { url, .. } => url.clone(),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        match self {
            Redis::Owned(r) => r.pid(),
            Redis::External { pid, .. } => *pid,
        }
    }
}

/// The PostgreSQL of a distributed history: each history gets a fresh database on it.
pub struct Postgres {
    /// A URL of the server's `postgres` database, for `CREATE DATABASE`.
    pub admin_url: String,
    /// The postmaster's pid, to pause the server (it and its backends).
    pub pid: Option<u32>,
    pub owned: Option<PostgresServer>,
}

/// The servers a deployment runs on, kept across histories.
// One or two of these live per run: their size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Backends {
    /// A data dir per history, under the history's work dir.
    Embedded,
    Distributed {
        redis: Redis,
        postgres: Postgres,
    },
}

impl Backends {
    /// A throwaway `redis-server` and PostgreSQL cluster, owned by the harness.
    pub fn owned_distributed() -> Backends {
        let postgres = PostgresServer::start();
        Backends::Distributed {
            redis: Redis::Owned(RedisServer::start()),
            postgres: Postgres {
                admin_url: postgres.url(),
                pid: Some(postgres.pid()),
                owned: Some(postgres),
            },
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backends::Embedded => "embedded",
            Backends::Distributed { .. } => "distributed",
        }
    }
}

/// The engines' base URLs by index, read by every client at each request (a restarted engine
/// listens on a new port).
#[derive(Clone, Default)]
pub struct Endpoints(Arc<RwLock<Vec<String>>>);

impl Endpoints {
    pub fn get(&self, i: usize) -> String {
        let v = self.0.read().unwrap_or_else(|e| e.into_inner());
        v[i % v.len()].clone()
    }

    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn set(&self, i: usize, base: String) {
        let mut v = self.0.write().unwrap_or_else(|e| e.into_inner());
        if v.len() <= i {
            v.resize(i + 1, String::new());
        }
        v[i] = base;
    }
}

/// Where one history's engines keep their state.
#[derive(Clone)]
pub enum Place {
    Embedded {
        dir: PathBuf,
    },
    Distributed {
        redis_url: String,
        database_url: String,
    },
}

/// A running `hotpath serve`.
pub struct Engine {
    child: Child,
    pub base: String,
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One history's processes.
pub struct Cluster {
    pub bin: PathBuf,
    pub admin: String,
    pub place: Place,
    /// Where the engines' logs go (`engine-N.log`, appended across restarts).
    pub logs: PathBuf,
    pub extra_args: Vec<String>,
    engines: Vec<Option<Engine>>,
    worker: Option<Child>,
    pub endpoints: Endpoints,
}

impl Cluster {
    /// Starts `engines` engines (and a worker if asked, distributed only).
    pub async fn start(
        bin: &Path,
        admin: &str,
        place: Place,
        logs: &Path,
        engines: usize,
        worker: bool,
        extra_args: &[String],
    ) -> Result<Cluster, String> {
        std::fs::create_dir_all(logs).map_err(|e| format!("{logs:?}: {e}"))?;
        let mut cluster = Cluster {
            bin: bin.to_owned(),
            admin: admin.to_owned(),
            place,
            logs: logs.to_owned(),
            extra_args: extra_args.to_vec(),
            engines: Vec::new(),
            worker: None,
            endpoints: Endpoints::default(),
        };
        for i in 0..engines {
            cluster.engines.push(None);
            cluster.start_engine(i).await?;
        }
        if worker && let Place::Distributed { .. } = cluster.place {
            cluster.worker = Some(cluster.spawn_worker()?);
        }
        Ok(cluster)
    }

    pub fn engines(&self) -> usize {
        self.engines.len()
    }

    /// Starts engine `i` (again), on a new port.
    pub async fn start_engine(&mut self, i: usize) -> Result<(), String> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .args(&self.extra_args)
            .env("HOTPATH_ADMIN_TOKEN", &self.admin)
            .env("RUST_LOG", "warn,hotpath_engine=info")
            .env_remove("HOTPATH_REDIS_URL")
            .env_remove("HOTPATH_DATABASE_URL")
            .env_remove("HOTPATH_DATA_DIR")
            .env_remove("HOTPATH_LLM_PROVIDER")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(self.log_file(&format!("engine-{i}.log"))?);
        match &self.place {
            Place::Embedded { dir } => {
                cmd.arg("--data-dir").arg(dir);
            }
            Place::Distributed {
                redis_url,
                database_url,
            } => {
                cmd.args(["--redis-url", redis_url, "--database-url", database_url])
                    .args(["--workers", "false"]);
            }
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", self.bin))?;
        let stdout = child.stdout.take().expect("piped");
        let found = tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stdout).lines();
            let addr = loop {
                match lines.next() {
                    Some(Ok(line)) => {
                        if let Some(a) = line.strip_prefix("hotpath listening on http://") {
                            break Some(a.to_owned());
                        }
                    }
                    _ => break None,
                }
            };
            // Keep draining stdout so the child never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            addr
        });
        let addr = match tokio::time::timeout(Duration::from_secs(60), found).await {
            Ok(Ok(Some(addr))) => addr,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "engine {i} did not start; its log {:?} ends:\n{}",
                    self.logs.join(format!("engine-{i}.log")),
                    tail(&self.logs.join(format!("engine-{i}.log")), 30)
                ));
            }
        };
        let base = format!("http://{addr}");
        self.endpoints.set(i, base.clone());
        self.engines[i] = Some(Engine { child, base });
        Ok(())
    }

    /// SIGKILL, at once.
    pub fn kill_engine(&mut self, i: usize) {
        drop(self.engines[i].take());
    }

    /// SIGTERM, then SIGKILL if it is still running after `within`.
    pub async fn stop_engine(&mut self, i: usize, within: Duration) {
        if let Some(mut engine) = self.engines[i].take() {
            let _ = Command::new("kill")
                .args(["-TERM", &engine.child.id().to_string()])
                .status();
            let deadline = tokio::time::Instant::now() + within;
            while tokio::time::Instant::now() < deadline {
                if let Ok(Some(_)) = engine.child.try_wait() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Stops every process (SIGKILL).
    pub fn stop(&mut self) {
        for e in &mut self.engines {
            drop(e.take());
        }
        if let Some(mut w) = self.worker.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }

    fn spawn_worker(&self) -> Result<Child, String> {
        let Place::Distributed {
            redis_url,
            database_url,
        } = &self.place
        else {
            return Err("a worker needs the distributed deployment".into());
        };
        Command::new(&self.bin)
            .args([
                "worker",
                "--redis-url",
                redis_url,
                "--database-url",
                database_url,
            ])
            .env("RUST_LOG", "warn")
            .env_remove("HOTPATH_LLM_PROVIDER")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.log_file("worker.log")?)
            .spawn()
            .map_err(|e| format!("cannot start the worker: {e}"))
    }

    fn log_file(&self, name: &str) -> Result<std::fs::File, String> {
        let path = self.logs.join(name);
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("{path:?}: {e}"))
    }

    /// The store the engines write, opened beside them.
    pub async fn store(&self) -> Result<Box<dyn Store>, String> {
        match &self.place {
            Place::Embedded { dir } => SqliteStore::open(&dir.join("hotpath.sqlite"))
                .await
                .map(|s| Box::new(s) as Box<dyn Store>)
                .map_err(|e| format!("open the SQLite store: {e}")),
            Place::Distributed { database_url, .. } => PostgresStore::connect(database_url)
                .await
                .map(|s| Box::new(s) as Box<dyn Store>)
                .map_err(|e| format!("connect to the PostgreSQL store: {e}")),
        }
    }

    /// Each game's log and committed stream events, straight from the store.
    pub async fn read_logs(&self, games: &[String]) -> Result<Vec<GameLog>, String> {
        let store = self.store().await?;
        let mut out = Vec::new();
        for g in games {
            let id: GameId = g.parse().map_err(|e| format!("game id {g}: {e:?}"))?;
            let events = store
                .events(id, 0)
                .await
                .map_err(|e| format!("read the log of {g}: {e}"))?;
            let entries = events
                .into_iter()
                .map(|(seq, e)| match e {
                    LoggedEvent::ActionApplied(a) => LogEntry {
                        seq,
                        kind: "action_applied".into(),
                        action_id: Some(a.action_id.to_string()),
                        text: Some(a.text),
                    },
                    other => LogEntry {
                        seq,
                        kind: other.kind().into(),
                        action_id: None,
                        text: None,
                    },
                })
                .collect();
            let mut outbox = Vec::new();
            let mut after = StreamId { ms: 0, seq: 0 };
            loop {
                let page = store
                    .stream_events_after(id, after, 1_000)
                    .await
                    .map_err(|e| format!("read the outbox of {g}: {e}"))?;
                let n = page.events.len();
                for (sid, ev) in page.events {
                    let kind = serde_json::to_value(&ev)
                        .ok()
                        .and_then(|v| v["type"].as_str().map(str::to_owned))
                        .unwrap_or_default();
                    outbox.push(((sid.ms, sid.seq), kind));
                    after = sid;
                }
                if n < 1_000 {
                    break;
                }
            }
            out.push(GameLog { entries, outbox });
        }
        store.close().await;
        Ok(out)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One game's log, as the store holds it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GameLog {
    pub entries: Vec<LogEntry>,
    /// The committed stream events (the outbox): ids `(seq, n)` and kinds, in id order.
    pub outbox: Vec<((u64, u64), String)>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LogEntry {
    pub seq: u64,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Creates database `name` on the server of `admin_url` and returns its URL.
pub async fn create_database(admin_url: &str, name: &str) -> Result<String, String> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .map_err(|e| format!("connect to {admin_url}: {e}"))?;
    // `name` is ours: a plain identifier made of the seed and a timestamp.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await
        .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
    let _ = conn.close().await;
    let (base, _) = admin_url
        .rsplit_once('/')
        .ok_or_else(|| format!("{admin_url} has no database part"))?;
    Ok(format!("{base}/{name}"))
}

/// Which dispatched jobs the job storage holds (admin API `GET /v1/admin/jobs/{id}`):
/// id → found. An id whose lookup kept failing is left out.
pub async fn jobs_present(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    admin: &str,
    ids: impl IntoIterator<Item = String>,
) -> BTreeMap<String, bool> {
    let mut out = BTreeMap::new();
    for id in ids {
        for attempt in 0..5 {
            let base = endpoints.get(attempt);
            let r = http
                .get(format!("{base}/v1/admin/jobs/{id}"))
                .bearer_auth(admin)
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            match r.map(|r| r.status().as_u16()) {
                Ok(200) => {
                    out.insert(id.clone(), true);
                    break;
                }
                Ok(404) => {
                    out.insert(id.clone(), false);
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    }
    out
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
