//! The real `hotpath serve` binary as a child process (embedded deployment in a temp dir, the
//! in-process workers on the offline `scripted` provider), for the clients' tests: the web
//! page in Chromium and `hotpath play` in a pseudo-terminal.

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
        let mut command = Command::new(BIN);
        command
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--rate-per-second",
                "1000",
                "--data-dir",
            ])
            .arg(dir.path())
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
