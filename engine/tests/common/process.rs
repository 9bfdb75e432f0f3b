//! The real `hotpath` binary as child processes: `serve` (embedded in a temp dir with its
//! in-process workers on the offline `scripted` provider, or distributed), and `worker`. For the
//! clients' tests (the web page in Chromium, `hotpath play` in a pseudo-terminal) and the
//! multi-process ones.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_hotpath");

/// A running `hotpath serve`; killed on drop.
pub struct Served {
    child: Child,
    pub base: String,
    pub admin: String,
    _dir: tempfile::TempDir,
}

impl Served {
    pub fn start(admin: &str) -> Served {
        Served::start_with(admin, &[])
    }

    /// [`Served::start`] with these environment variables set (e.g. the scripted provider's
    /// error rate).
    pub fn start_with(admin: &str, env: &[(&str, &str)]) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_str().unwrap().to_owned();
        let args = ["--rate-per-second", "1000", "--data-dir", &data];
        Served::launch(admin, dir, &args, env)
    }

    /// A distributed `serve` (no workers in it) on `redis_url` and `database_url`, with these
    /// extra arguments (e.g. `--rate-per-second`).
    pub fn distributed(admin: &str, redis_url: &str, database_url: &str, args: &[&str]) -> Served {
        let mut all = vec![
            "--redis-url",
            redis_url,
            "--database-url",
            database_url,
            "--workers",
            "false",
        ];
        all.extend_from_slice(args);
        Served::launch(admin, tempfile::tempdir().unwrap(), &all, &[])
    }

    fn launch(admin: &str, dir: tempfile::TempDir, args: &[&str], env: &[(&str, &str)]) -> Served {
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("HOTPATH_ADMIN_TOKEN", admin)
            .env_remove("HOTPATH_REDIS_URL")
            .env_remove("HOTPATH_DATABASE_URL")
            .env_remove("HOTPATH_LLM_PROVIDER")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start hotpath serve");
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
        Served {
            child,
            base: format!("http://{addr}"),
            admin: admin.to_owned(),
            _dir: dir,
        }
    }

    /// The data directory (its SQLite file outlives the process until `self` is dropped).
    pub fn data_dir(&self) -> &Path {
        self._dir.path()
    }

    /// Stops the server with SIGTERM and waits (at most `within`) for it to exit.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "still running after {within:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Creates a game of the sample scenario with one player: (game id, player token).
    pub async fn new_game(&self, name: &str) -> (String, String) {
        let client = reqwest::Client::new();
        let game: serde_json::Value = client
            .post(format!("{}/v1/games", self.base))
            .bearer_auth(&self.admin)
            .json(&serde_json::json!({"scenario": "harbor-strike"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let game = game["game_id"].as_str().expect("a game id").to_owned();
        let player: serde_json::Value = client
            .post(format!("{}/v1/games/{game}/players", self.base))
            .bearer_auth(&self.admin)
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (game, player["token"].as_str().expect("a token").to_owned())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `hotpath worker` on a distributed deployment; killed on drop. Its log (stderr)
/// goes to a file, read with [`Worker::log`].
pub struct Worker {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Worker {
    /// Starts a worker on `redis_url` and `database_url` with these environment variables (and
    /// no other `HOTPATH_*`), and waits until it says it runs.
    pub fn start(redis_url: &str, database_url: &str, env: &[(&str, String)]) -> Worker {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut command = Command::new(BIN);
        command
            .args([
                "worker",
                "--redis-url",
                redis_url,
                "--database-url",
                database_url,
            ])
            .env("RUST_LOG", "info,hotpath_background=debug,sqlx=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log.reopen().unwrap()));
        for (var, _) in std::env::vars().filter(|(k, _)| k.starts_with("HOTPATH_")) {
            command.env_remove(var);
        }
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start hotpath worker");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.starts_with("hotpath worker ") => break,
                Some(_) => {}
                None => panic!(
                    "hotpath worker exited before it ran: {}",
                    std::fs::read_to_string(log.path()).unwrap_or_default()
                ),
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Worker { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Posts `text` as an action in the docks on `base`: (status, body).
pub async fn act(
    client: &reqwest::Client,
    base: &str,
    game: &str,
    token: &str,
    text: &str,
) -> (u16, serde_json::Value) {
    let r = client
        .post(format!("{base}/v1/games/{game}/actions"))
        .bearer_auth(token)
        .json(&serde_json::json!({"scene_id": "docks", "text": text}))
        .send()
        .await
        .expect("act");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// Jobs by id, with their status, from a distributed deployment's storage (PostgreSQL).
pub fn jobs(db: &str) -> Vec<(String, String)> {
    let out = hotpath_testkit::shared_postgres().psql(
        db,
        "SELECT id || ' ' || status FROM apalis.jobs ORDER BY id",
    );
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(id, st)| (id.to_owned(), st.to_owned()))
        .collect()
}

/// Waits (at most `within`) until every job in `db` has ended; returns them all.
pub async fn jobs_settled(db: &str, within: Duration) -> Vec<(String, String)> {
    let deadline = Instant::now() + within;
    loop {
        let all = jobs(db);
        let open = all
            .iter()
            .filter(|(_, st)| matches!(st.as_str(), "Pending" | "Queued" | "Running" | "Failed"))
            .count();
        if open == 0 {
            return all;
        }
        assert!(Instant::now() < deadline, "jobs still open: {all:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
