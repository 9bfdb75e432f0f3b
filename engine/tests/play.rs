//! `hotpath play`, the console client, driven through a pseudo-terminal (`expectrl`) as a
//! person would use it, against the real `hotpath serve`: it starts a game, prints each piece
//! of an answer with its source, streams a reply, prints another player's action as an event,
//! and joins an existing game with its token.

#[path = "common/process.rs"]
mod process;

use std::process::Command;
use std::time::{Duration, Instant};

use expectrl::session::OsSession;
use expectrl::{Expect, Session};

use process::{BIN, Served};

const ADMIN: &str = "play-test-admin";

/// `hotpath play` in a pseudo-terminal, and everything it printed so far.
struct Term {
    session: OsSession,
    seen: String,
}

fn play(args: &[&str]) -> Term {
    let mut cmd = Command::new(BIN);
    cmd.arg("play").args(args).env_remove("HOTPATH_ADMIN_TOKEN");
    let session = Session::spawn(cmd).expect("spawn hotpath play in a pty");
    Term {
        session,
        seen: String::new(),
    }
}

impl Term {
    /// Waits until the output holds a match of `pattern` (anywhere: events and answers print
    /// concurrently, so their order is not fixed) and returns it.
    fn wait(&mut self, pattern: &str) -> String {
        let re = regex::Regex::new(pattern).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(m) = re.find(&self.seen) {
                return m.as_str().to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no /{pattern}/ in the output:\n{}",
                self.seen
            );
            let mut buf = [0u8; 8192];
            match self.session.try_read(&mut buf) {
                Ok(n) if n > 0 => self.seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                Ok(_) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("reading the terminal: {e}; so far:\n{}", self.seen),
            }
        }
    }

    fn send_line(&mut self, line: &str) {
        self.session.send_line(line).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn play_starts_a_game_acts_and_prints_every_piece_with_its_source() {
    let served = Served::start(ADMIN);
    let mut p = play(&[
        "--url",
        &served.base,
        "--new",
        "--admin-token",
        ADMIN,
        "--name",
        "Ada",
    ]);
    let game = p.wait(r"new game [0-9a-f-]{36}");
    let game = game.trim_start_matches("new game ").to_owned();
    p.wait(r"others join with: http://\S+/#game=\S+&invite=hpi_[0-9a-f]+");
    p.wait(r"conflict The Dock Strike: phase \S+ \(.*\), intensity 20/\d+");
    p.wait(r"scene docks — The Docks");
    p.wait(r"\[events: following\]");

    p.send_line("/say mara Mara, the guild trusts you.");
    p.wait(r"== turn 1 · say \(seq \d+\)");
    for who in ["Mara Quill", "Brann Holt", "Iris Fenwick"] {
        p.wait(&format!(
            r#"{who} \[(precomputed|cache|fallback)[^\]]*\]: "[^"]+" — "#
        ));
    }
    p.wait(r"narration \[(precomputed|cache|fallback)[^\]]*\]: \S");
    p.wait(r"social \[(precomputed|cache|fallback)[^\]]*\]:");
    p.wait(r"canon \[(precomputed|cache|fallback)[^\]]*\]: ");
    p.wait(r"queued for the slow path: .*generate_");
    p.wait(r"\[event \d+-\d+\] action\.applied: turn 1: say in docks");
    p.wait(r"\[event \d+-\d+\] state\.updated: strike phase \S+ intensity \d+");
    // Mara's reply, word by word on one line, then its end.
    p.wait(r"Mara Quill replies: \S+");
    p.wait(r"\[reply \S+ complete\]");

    // Another player acts: their action arrives as an event.
    let client = reqwest::Client::new();
    let other: serde_json::Value = client
        .post(format!("{}/v1/games/{game}/players", served.base))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"name": "Bo"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = client
        .post(format!("{}/v1/games/{game}/actions", served.base))
        .bearer_auth(other["token"].as_str().unwrap())
        .json(&serde_json::json!({"scene_id": "lantern-tavern", "kind": "trade", "text": "Rum for news"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    p.wait(&format!(
        r"action\.applied: turn 2: trade in lantern-tavern \(player {}\)",
        other["player_id"].as_str().unwrap()
    ));

    // Plain text (the kind is classified), another scene, a refusal printed readably.
    p.send_line("/scene harbor-office");
    p.wait(r"scene harbor-office — The Harbormaster's Office");
    p.send_line("Where did the wages go?");
    p.wait(r"== turn 3 · \w+");
    p.wait(r"Harbormaster Voss \[");
    p.send_line("/threaten voss");
    p.wait(r"error: 422 unprocessable: `text` must not be empty");
    p.send_line("/quit");
    p.wait(r"bye");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn play_joins_a_game_with_its_token() {
    let served = Served::start(ADMIN);
    let (game, token) = served.new_game("Cy").await;
    let mut p = play(&[
        "--url",
        &served.base,
        "--game",
        &game,
        "--token",
        &token,
        "--scene",
        "lantern-tavern",
    ]);
    p.wait(r"The Harbor Strike — game \S+, turn 0");
    p.wait(r"scene lantern-tavern — The Lantern Tavern");
    p.wait(r"\[events: following\]");
    p.send_line("/ask kest Who drinks here on paydays?");
    p.wait(r"== turn 1 · ask");
    p.wait(r#"Kest\S* [^\[]*\[(precomputed|cache|fallback)"#);
    // Ctrl-D ends it like /quit.
    p.session
        .send(expectrl::ControlCode::EndOfTransmission)
        .unwrap();
    p.wait(r"bye");
}

#[test]
fn play_without_a_game_or_new_is_a_usage_error() {
    let out = Command::new(BIN)
        .args(["play", "--url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--game"), "{err}");
}
