//! The `hotpath` binary itself: `serve` stops cleanly on SIGTERM (exit 0, event streams
//! ended), `scenario check` names the bad field, `worker` refuses to run without the
//! distributed backends.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/process.rs"]
mod process;

use process::BIN;

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

#[test]
fn a_worker_name_is_checked_before_anything_connects() {
    let out = Command::new(BIN)
        .args(["worker", "--worker-name", "two words"])
        .env_remove("HOTPATH_REDIS_URL")
        .env_remove("HOTPATH_DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "bad usage");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--worker-name"), "{err}");
}

#[test]
fn distributed_serve_refuses_traps_with_a_message_that_says_what_to_add() {
    // Without an admin token every process would invent its own.
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--redis-url", "redis://:s3cret@127.0.0.1:1/"])
        .args(["--database-url", "postgres://u:s3cret@127.0.0.1:1/db"])
        .env_remove("HOTPATH_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HOTPATH_ADMIN_TOKEN"), "{err}");

    // Redis alone: the jobs would go where no worker reads them.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--redis-url", "redis://:s3cret@127.0.0.1:1/"])
        .env_remove("HOTPATH_DATABASE_URL")
        .env("HOTPATH_ADMIN_TOKEN", "admin")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--database-url"), "{err}");
    assert!(!err.contains("s3cret"), "no secret in messages: {err}");

    // A server that cannot be reached: the message names it without its password.
    let out = Command::new(BIN)
        .args(["jobs", "--redis-url", "redis://:s3cret@127.0.0.1:1/"])
        .args([
            "--database-url",
            "postgres://u:s3cret@127.0.0.1:1/db",
            "stats",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(!err.contains("s3cret"), "no secret in messages: {err}");

    // Help shows which variables are read, not their values.
    for command in ["serve", "worker", "jobs"] {
        let out = Command::new(BIN)
            .args([command, "--help"])
            .env("HOTPATH_REDIS_URL", "redis://:s3cret@127.0.0.1:1/")
            .env("HOTPATH_DATABASE_URL", "postgres://u:s3cret@127.0.0.1:1/db")
            .env("HOTPATH_ADMIN_TOKEN", "s3cret")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("HOTPATH_DATABASE_URL"), "{help}");
        assert!(
            !help.contains("s3cret"),
            "{command} --help shows a secret: {help}"
        );
    }
}

fn jobs(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("jobs")
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("HOTPATH_REDIS_URL")
        .env_remove("HOTPATH_DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "jobs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn jobs_dead_lists_what_a_failing_model_left_and_requeue_runs_it_again() {
    // Every model call fails like an overloaded provider: the jobs retry from the storage,
    // then are given up.
    let mut served = process::Served::start_with(
        "admin",
        &[
            ("HOTPATH_LLM_PROVIDER", "scripted"),
            ("HOTPATH_LLM_ERROR_RATE", "1"),
        ],
    );
    let base = served.base.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let admin = |r: reqwest::RequestBuilder| r.bearer_auth("admin");
        let (game, token) = served.new_game("Ada").await;
        let act = client
            .post(format!("{base}/v1/games/{game}/actions"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"scene_id": "docks", "kind": "threaten", "text": "Pay up."}))
            .send()
            .await
            .unwrap();
        assert_eq!(act.status(), 200);
        // Wait until the slow path gave up on something.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let report: serde_json::Value = admin(client.get(format!("{base}/v1/admin/slow-path")))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let state = |k: &str| report["jobs"]["by_state"][k].as_u64().unwrap_or(0);
            // Every job has run out of tries (the model never answers).
            if state("dead") > 0 && state("pending") + state("running") + state("retrying") == 0 {
                assert_eq!(
                    report["llm"]["calls"].as_u64().unwrap_or(0),
                    0,
                    "a failed call answers nothing to record: {report}"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no dead letter after 60 s: {report}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    assert_eq!(served.terminate(Duration::from_secs(30)).code(), Some(0));

    let dir = served.data_dir();
    let dead = jobs(dir, &["dead"]);
    assert!(
        dead.contains("Killed") && dead.contains("prepare_scene_reactions"),
        "{dead}"
    );
    assert!(dead.contains("503"), "the reason is listed: {dead}");
    let n = dead.lines().count();
    let requeued = jobs(dir, &["requeue", "--all"]);
    assert!(
        requeued.starts_with(&format!("{n} dead letter")),
        "{requeued}"
    );
    assert_eq!(jobs(dir, &["dead"]).trim(), "no dead letters");
    let pending = jobs(dir, &["list", "--status", "Pending"]);
    assert_eq!(pending.lines().count(), n, "{pending}");
    let stats = jobs(dir, &["stats"]);
    assert!(stats.contains("pending"), "{stats}");
}

/// Finding 12: no help text prints a secret an environment variable holds.
#[test]
fn help_never_prints_a_secret_from_the_environment() {
    let secrets = [
        ("HOTPATH_TOKEN", "tok-secret-0123"),
        ("HOTPATH_ADMIN_TOKEN", "admin-secret-0123"),
        ("HOTPATH_REDIS_URL", "redis://:redis-secret-0123@h:6379/"),
        ("HOTPATH_DATABASE_URL", "postgres://u:db-secret-0123@h/db"),
    ];
    for command in [
        &["play", "--help"][..],
        &["serve", "--help"],
        &["worker", "--help"],
        &["migrate", "--help"],
        &["jobs", "--help"],
    ] {
        let out = Command::new(BIN)
            .args(command)
            .envs(secrets)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.is_empty());
        for (var, value) in secrets {
            let secret = value.split("secret").next().unwrap();
            assert!(
                !text.contains(&format!("{secret}secret")),
                "`hotpath {}` prints {var}'s value:\n{text}",
                command.join(" ")
            );
        }
    }
}

/// Finding 12: a URL's password is hidden wherever it is written, in the user info or as a
/// query parameter (`?password=`, as PostgreSQL and Redis clients accept it).
#[test]
fn urls_in_messages_hide_every_password() {
    use hotpath_engine::compose::redact;
    for (url, shown) in [
        (
            "postgres://u:secret@h:5432/db",
            "postgres://u:***@h:5432/db",
        ),
        (
            "postgres://u@h/db?password=secret",
            "postgres://u@h/db?password=***",
        ),
        (
            "postgres://h/db?sslmode=require&password=secret&user=u",
            "postgres://h/db?sslmode=require&password=***&user=u",
        ),
        ("redis://:secret@h:6379/", "redis://:***@h:6379/"),
        (
            "postgresql://h/db?PassWord=secret",
            "postgresql://h/db?PassWord=***",
        ),
        ("redis://h:6379/", "redis://h:6379/"),
    ] {
        assert_eq!(redact(url), shown, "{url}");
    }
}
