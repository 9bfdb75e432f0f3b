//! The `hotpath` binary itself: `serve` stops cleanly on SIGTERM (exit 0, event streams
//! ended), `scenario check` names the bad field, `worker` refuses to run without the
//! distributed backends.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hotpath");

/// Kills the child if the test fails before it exits.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "still running after {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_stops_on_sigterm_with_exit_0_even_with_an_open_event_stream() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Child(
        Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env("HOTPATH_ADMIN_TOKEN", "admin")
            .env_remove("HOTPATH_REDIS_URL")
            .env_remove("HOTPATH_DATABASE_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines.next().expect("serve prints its address").unwrap();
        if let Some(url) = line.strip_prefix("hotpath listening on http://") {
            break url.to_owned();
        }
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let base = format!("http://{addr}");
        let game: serde_json::Value = client
            .post(format!("{base}/v1/games"))
            .bearer_auth("admin")
            .json(&serde_json::json!({"scenario": "harbor-strike"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let game = game["game_id"].as_str().unwrap().to_owned();
        // An open event stream must not keep the server from stopping.
        let events = client
            .get(format!("{base}/v1/games/{game}/events"))
            .bearer_auth("admin")
            .send()
            .await
            .unwrap();
        assert_eq!(events.status(), 200);
        let status = Command::new("kill")
            .args(["-TERM", &child.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        // The stream ends rather than hanging.
        let body = tokio::time::timeout(Duration::from_secs(20), events.bytes()).await;
        assert!(body.is_ok(), "the event stream ended on shutdown");
    });
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "exit 0 after a graceful stop");
}

#[test]
fn scenario_check_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    let text = include_str!("../../cache/scenarios/harbor-strike.toml");
    std::fs::write(&good, text).unwrap();
    let out = Command::new(BIN)
        .args(["scenario", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        text.replacen("enter_at = 35", "enter_at = \"soon\"", 1),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["scenario", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("conflicts[0].phases[1].enter_at"),
        "{err}"
    );
}

#[test]
fn worker_needs_the_distributed_backends() {
    let out = Command::new(BIN)
        .arg("worker")
        .env_remove("HOTPATH_REDIS_URL")
        .env_remove("HOTPATH_DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--redis-url") && err.contains("--database-url"),
        "{err}"
    );
}
