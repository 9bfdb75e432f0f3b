//! `hotpath play`: a console client of the HTTP API (part of the binary, not of the engine
//! library). It prints the game's events as they arrive (Server-Sent Events, resumed with
//! `Last-Event-ID` after a dropped connection) and sends each line typed as an action:
//! `/kind [target] text`, or plain text whose kind the engine classifies. Every piece of an
//! answer is printed with its source (`precomputed`, `cache`, `fallback`) and age.
//!
//! It reads answers and events as JSON values, not as the engine's types, so that it keeps
//! working — and shows new fields such as `provenance` — as the API grows.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

const KINDS: [&str; 8] = [
    "say",
    "ask",
    "persuade",
    "threaten",
    "help",
    "investigate",
    "trade",
    "observe",
];

/// How to reach a game.
pub struct PlayArgs {
    pub url: String,
    pub game: Option<String>,
    pub token: Option<String>,
    /// Start a new game (needs the admin token) instead of joining one.
    pub new: bool,
    pub admin_token: Option<String>,
    pub scenario: String,
    pub name: String,
    pub scene: Option<String>,
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = req.send().await.context("the server did not answer")?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "{} {}: {}",
                status.as_u16(),
                body["error"]["code"].as_str().unwrap_or("error"),
                body["error"]["message"].as_str().unwrap_or("")
            );
        }
        Ok(body)
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> anyhow::Result<Value> {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body);
        self.send(req).await
    }

    async fn get(&self, path: &str, token: &str) -> anyhow::Result<Value> {
        let req = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token);
        self.send(req).await
    }
}

/// Prints a line now (stdout is line-buffered only when it is a terminal).
fn say(line: impl AsRef<str>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.as_ref());
    let _ = out.flush();
}

fn age(piece: &Value) -> String {
    match piece["age_ms"].as_i64() {
        None => String::new(),
        Some(ms) if ms < 1000 => format!(", {ms} ms old"),
        Some(ms) if ms < 60_000 => format!(", {:.1} s old", ms as f64 / 1000.0),
        Some(ms) => format!(", {} min old", ms / 60_000),
    }
}

/// `[source, age, made for …]` of a piece.
fn badge(piece: &Value) -> String {
    let mut parts = vec![format!(
        "{}{}",
        piece["source"].as_str().unwrap_or("?"),
        age(piece)
    )];
    let p = &piece["provenance"];
    for (key, label) in [
        ("made_for", "made for"),
        ("model", "model"),
        ("prompt_version", "prompt"),
        ("world_version", "world v"),
    ] {
        match &p[key] {
            Value::String(s) => parts.push(format!("{label} {s}")),
            Value::Number(n) => parts.push(format!("{label}{n}")),
            _ => {}
        }
    }
    if let Some(s) = piece["served_for"].as_str() {
        parts.push(format!("served for {s}"));
    }
    format!("[{}]", parts.join(", "))
}

struct Game {
    view: Value,
}

impl Game {
    fn name_of(&self, id: &str) -> String {
        self.view["scenes"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["stakeholders"].as_array().into_iter().flatten())
            .find(|s| s["id"] == id)
            .and_then(|s| s["name"].as_str())
            .unwrap_or(id)
            .to_owned()
    }

    fn scene(&self, id: &str) -> Option<&Value> {
        self.view["scenes"]
            .as_array()?
            .iter()
            .find(|s| s["id"] == id)
    }

    fn print_scene(&self, id: &str) {
        let Some(scene) = self.scene(id) else {
            return;
        };
        let who: Vec<String> = scene["stakeholders"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                format!(
                    "{} ({}, {})",
                    s["id"].as_str().unwrap_or(""),
                    s["name"].as_str().unwrap_or(""),
                    s["role"].as_str().unwrap_or("")
                )
            })
            .collect();
        say(format!(
            "scene {} — {}: {}\n  here: {}",
            id,
            scene["name"].as_str().unwrap_or(""),
            scene["description"].as_str().unwrap_or(""),
            who.join("; ")
        ));
    }

    fn print_conflicts(&self) {
        for c in self.view["conflicts"].as_array().into_iter().flatten() {
            say(format!(
                "conflict {}: phase {} ({}), intensity {}/{}{}",
                c["name"].as_str().unwrap_or(""),
                c["phase"].as_str().unwrap_or(""),
                c["phase_name"].as_str().unwrap_or(""),
                c["intensity"],
                c["resolve_at"],
                if c["resolved"] == true {
                    ", resolved"
                } else {
                    ""
                }
            ));
        }
    }

    fn print_answer(&self, a: &Value) {
        say(format!(
            "== turn {} · {} (seq {}){}",
            a["turn"],
            a["kind"].as_str().unwrap_or(""),
            a["seq"],
            if a["degraded"] == true {
                " · DEGRADED: a backend was slow, pieces fell back to rules"
            } else {
                ""
            }
        ));
        for r in a["reactions"].as_array().into_iter().flatten() {
            say(format!(
                "  {} {}: \"{}\" — {} ({})",
                self.name_of(r["stakeholder_id"].as_str().unwrap_or("")),
                badge(r),
                r["text"].as_str().unwrap_or(""),
                r["behaviour"].as_str().unwrap_or(""),
                r["intent"].as_str().unwrap_or("")
            ));
        }
        let n = &a["narration"];
        say(format!(
            "  narration {}: {}",
            badge(n),
            n["text"].as_str().unwrap_or("")
        ));
        let s = &a["social"];
        say(format!("  social {}:", badge(s)));
        for g in s["gossip"].as_array().into_iter().flatten() {
            say(format!(
                "    {} about {}: \"{}\"",
                self.name_of(g["from"].as_str().unwrap_or("")),
                self.name_of(g["about"].as_str().unwrap_or("")),
                g["line"].as_str().unwrap_or("")
            ));
        }
        if let Some(rep) = s["reputation"].as_object().filter(|r| !r.is_empty()) {
            let rep: Vec<String> = rep
                .iter()
                .map(|(who, v)| format!("{} {v}", self.name_of(who)))
                .collect();
            say(format!("    reputation: {}", rep.join(", ")));
        }
        let c = &a["canon"];
        let refs: Vec<String> = c["references"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                format!(
                    "{}: {}",
                    self.name_of(r["stakeholder_id"].as_str().unwrap_or("")),
                    r["line"].as_str().unwrap_or("")
                )
            })
            .collect();
        say(format!(
            "  canon {}: {}",
            badge(c),
            if refs.is_empty() {
                "(none yet)".to_owned()
            } else {
                refs.join("; ")
            }
        ));
        let jobs: Vec<&str> = a["dispatched"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["kind"].as_str())
            .collect();
        if !jobs.is_empty() {
            say(format!("  queued for the slow path: {}", jobs.join(", ")));
        }
        if let Some(id) = a["dialogue_request_id"].as_str() {
            say(format!("  (a reply streams as dialogue {id})"));
        }
    }
}

/// One line of an event, or `None` for those printed another way.
fn describe(kind: &str, d: &Value) -> String {
    let s = |k: &str| d[k].as_str().unwrap_or("").to_owned();
    match kind {
        "action.applied" => format!(
            "turn {}: {} in {} (player {})",
            d["turn"],
            s("kind"),
            s("scene_id"),
            s("player_id")
        ),
        "state.updated" => d["conflicts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                format!(
                    "{} phase {} intensity {}{}",
                    c["conflict_id"].as_str().unwrap_or(""),
                    c["phase_id"].as_str().unwrap_or(""),
                    c["intensity"],
                    if c["resolved"] == true {
                        " resolved"
                    } else {
                        ""
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        "job.queued" | "job.started" | "job.completed" => s("kind"),
        "job.failed" => format!("{}: {} (dead: {})", s("kind"), s("error"), d["dead"]),
        "content.ready" => format!("{} at {}", s("what"), s("location")),
        "reset" => "the stream could not resume from the last id: reload the state".into(),
        _ => d.to_string(),
    }
}

/// The reply being printed word by word, if any.
#[derive(Default)]
struct Replies {
    open: Option<(String, u64)>,
}

impl Replies {
    fn chunk(&mut self, d: &Value, name: &str) {
        let id = d["request_id"].as_str().unwrap_or("").to_owned();
        let attempt = d["attempt"].as_u64().unwrap_or(1);
        let mut out = std::io::stdout().lock();
        match &self.open {
            Some((open, a)) if *open == id && *a == attempt => {}
            Some((open, a)) if *open == id && *a > attempt => return, // an older attempt
            _ => {
                let _ = write!(out, "{name} replies: ");
            }
        }
        let _ = write!(out, "{}", d["text"].as_str().unwrap_or(""));
        let _ = out.flush();
        self.open = Some((id, attempt));
    }

    fn done(&mut self, d: &Value, name: &str) {
        let id = d["request_id"].as_str().unwrap_or("");
        if self.open.as_ref().is_some_and(|(open, _)| open == id) {
            say("");
        } else {
            say(format!(
                "{name} replies: {}",
                d["text"].as_str().unwrap_or("")
            ));
        }
        say(format!("[reply {id} complete]"));
        self.open = None;
    }

    /// Ends a half-printed reply's line before another line is printed.
    fn interrupt(&mut self) {
        if self.open.is_some() {
            say(" …");
            self.open = None;
        }
    }
}

/// Follows the game's events until the process ends, reconnecting with `Last-Event-ID`.
async fn follow(api: &Api, game: &str, token: &str, names: Game) {
    let mut last: Option<String> = None;
    let mut replies = Replies::default();
    let mut delay = Duration::from_millis(250);
    loop {
        let mut req = api
            .http
            .get(format!("{}/v1/games/{game}/events?from=now", api.base))
            .bearer_auth(token)
            .header("accept", "text/event-stream");
        if let Some(id) = &last {
            // Resuming: the server ignores `from` and replays what followed this id.
            req = req.header("last-event-id", id);
        }
        match req.send().await {
            Ok(resp) if resp.status().is_success() => {
                if let Some(id) = &last {
                    say(format!("[events: resumed after {id}]"));
                } else {
                    say("[events: following]");
                }
                delay = Duration::from_millis(250);
                let mut body = resp.bytes_stream();
                let mut buf = String::new();
                while let Some(Ok(chunk)) = body.next().await {
                    buf.push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
                    while let Some(end) = buf.find("\n\n") {
                        let block: String = buf.drain(..end + 2).collect();
                        let (mut id, mut kind, mut data) =
                            (None, "message".to_owned(), String::new());
                        for line in block.lines() {
                            if let Some(v) = line.strip_prefix("id:") {
                                id = Some(v.trim().to_owned());
                            } else if let Some(v) = line.strip_prefix("event:") {
                                kind = v.trim().to_owned();
                            } else if let Some(v) = line.strip_prefix("data:") {
                                data.push_str(v.strip_prefix(' ').unwrap_or(v));
                            }
                        }
                        if id.is_none() && data.is_empty() {
                            continue; // keep-alive
                        }
                        let d: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                        let name = names.name_of(d["stakeholder_id"].as_str().unwrap_or(""));
                        match kind.as_str() {
                            "dialogue.chunk" => replies.chunk(&d, &name),
                            "dialogue.done" => replies.done(&d, &name),
                            _ => {
                                replies.interrupt();
                                say(format!(
                                    "[event {}] {kind}: {}",
                                    id.as_deref().unwrap_or("-"),
                                    describe(&kind, &d)
                                ));
                            }
                        }
                        if id.is_some() {
                            last = id;
                        }
                    }
                }
                replies.interrupt();
                say("[events: connection dropped; reconnecting]");
            }
            Ok(resp) => say(format!("[events: HTTP {}; retrying]", resp.status())),
            Err(e) => say(format!("[events: {e}; retrying]")),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// What a typed line asks for.
#[derive(Debug, PartialEq)]
enum Line {
    Act {
        kind: Option<String>,
        target: Option<String>,
        text: String,
    },
    Scene(String),
    State,
    Help,
    Quit,
    Nothing,
    Unknown(String),
}

/// `/kind [target] text`, `/scene ID`, `/state`, `/help`, `/quit`, or plain text. The second
/// word of `/kind` is the target when it names someone in `present`.
fn parse_line(line: &str, present: &[String]) -> Line {
    let line = line.trim();
    if line.is_empty() {
        return Line::Nothing;
    }
    let Some(command) = line.strip_prefix('/') else {
        return Line::Act {
            kind: None,
            target: None,
            text: line.to_owned(),
        };
    };
    let (word, rest) = command.split_once(' ').unwrap_or((command, ""));
    let rest = rest.trim();
    match word {
        "quit" | "exit" => Line::Quit,
        "help" => Line::Help,
        "state" => Line::State,
        "scene" if !rest.is_empty() => Line::Scene(rest.to_owned()),
        kind if KINDS.contains(&kind) => {
            let (first, after) = rest.split_once(' ').unwrap_or((rest, ""));
            let (target, text) = if present.iter().any(|p| p == first) {
                (Some(first.to_owned()), after.trim().to_owned())
            } else {
                (None, rest.to_owned())
            };
            Line::Act {
                kind: Some(kind.to_owned()),
                target,
                text,
            }
        }
        _ => Line::Unknown(word.to_owned()),
    }
}

const HELP: &str = "type what you do or say, or:
  /KIND [TARGET] TEXT   act with a kind: say ask persuade threaten help investigate trade observe
                        (TARGET: someone in the scene, e.g. /say mara Where are the wages?)
  /scene ID             move to another scene
  /state                the conflicts now
  /quit                 leave (Ctrl-D too)";

pub async fn run(args: PlayArgs) -> anyhow::Result<()> {
    let api = Api {
        http: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()?,
        base: args.url.trim_end_matches('/').to_owned(),
    };
    let (game, token) = if args.new {
        let admin = args
            .admin_token
            .context("--new needs the admin token: --admin-token or HOTPATH_ADMIN_TOKEN")?;
        let created = api
            .post("/v1/games", &admin, json!({"scenario": args.scenario}))
            .await
            .context("starting a game")?;
        let game = created["game_id"].as_str().unwrap_or("").to_owned();
        let player = api
            .post(
                &format!("/v1/games/{game}/players"),
                &admin,
                json!({"name": args.name}),
            )
            .await
            .context("adding you to the game")?;
        let token = player["token"].as_str().unwrap_or("").to_owned();
        say(format!("new game {game}; your token: {token}"));
        if let Ok(invite) = api.get(&format!("/v1/games/{game}/invite"), &admin).await {
            say(format!(
                "others join with: {}{}",
                api.base,
                invite["join_path"].as_str().unwrap_or("")
            ));
        }
        (game, token)
    } else {
        match (args.game, args.token) {
            (Some(g), Some(t)) => (g, t),
            _ => bail!("give --game and --token, or --new (with the admin token)"),
        }
    };
    let view = api
        .get(&format!("/v1/games/{game}"), &token)
        .await
        .context("reading the game")?;
    let state = Game { view: view.clone() };
    say(format!(
        "{} — game {game}, turn {}",
        view["title"].as_str().unwrap_or(""),
        view["turn"]
    ));
    state.print_conflicts();
    let mut scene = args
        .scene
        .or_else(|| view["scenes"][0]["id"].as_str().map(str::to_owned))
        .context("the scenario has no scene")?;
    if state.scene(&scene).is_none() {
        bail!("no scene `{scene}` in this game");
    }
    state.print_scene(&scene);
    say("type /help for commands");

    let follower = {
        let api = Api {
            http: api.http.clone(),
            base: api.base.clone(),
        };
        let (game, token) = (game.clone(), token.clone());
        let names = Game { view: view.clone() };
        tokio::spawn(async move { follow(&api, &game, &token, names).await })
    };

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut state = state;
    while let Some(line) = lines.next_line().await? {
        let present: Vec<String> = state
            .scene(&scene)
            .and_then(|s| s["stakeholders"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|s| s["id"].as_str().map(str::to_owned))
            .collect();
        match parse_line(&line, &present) {
            Line::Nothing => {}
            Line::Quit => break,
            Line::Help => say(HELP),
            Line::Unknown(w) => say(format!("unknown command /{w}; /help lists them")),
            Line::State => match api.get(&format!("/v1/games/{game}"), &token).await {
                Ok(v) => {
                    state = Game { view: v };
                    state.print_conflicts();
                }
                Err(e) => say(format!("error: {e:#}")),
            },
            Line::Scene(id) => {
                if state.scene(&id).is_some() {
                    scene = id;
                    state.print_scene(&scene);
                } else {
                    say(format!("no scene `{id}`"));
                }
            }
            Line::Act { kind, target, text } => {
                let mut body = json!({"scene_id": scene, "text": text});
                if let Some(k) = kind {
                    body["kind"] = k.into();
                }
                if let Some(t) = target {
                    body["target"] = t.into();
                }
                match api
                    .post(&format!("/v1/games/{game}/actions"), &token, body)
                    .await
                {
                    Ok(answer) => state.print_answer(&answer),
                    Err(e) => say(format!("error: {e:#}")),
                }
            }
        }
    }
    follower.abort();
    say("bye");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_actions_or_commands() {
        let here = vec!["mara".to_owned(), "brann".to_owned()];
        assert_eq!(
            parse_line("/say mara Where are the wages?", &here),
            Line::Act {
                kind: Some("say".into()),
                target: Some("mara".into()),
                text: "Where are the wages?".into()
            }
        );
        assert_eq!(
            parse_line("/ask where is the ledger", &here),
            Line::Act {
                kind: Some("ask".into()),
                target: None,
                text: "where is the ledger".into()
            }
        );
        assert_eq!(
            parse_line("  Pay the crews  ", &here),
            Line::Act {
                kind: None,
                target: None,
                text: "Pay the crews".into()
            }
        );
        assert_eq!(
            parse_line("/scene docks", &here),
            Line::Scene("docks".into())
        );
        assert_eq!(parse_line("/dance", &here), Line::Unknown("dance".into()));
        assert_eq!(parse_line("", &here), Line::Nothing);
        assert_eq!(parse_line("/quit", &here), Line::Quit);
    }

    #[test]
    fn badges_show_source_age_and_provenance_when_present() {
        assert_eq!(badge(&json!({"source": "fallback"})), "[fallback]");
        assert_eq!(
            badge(&json!({"source": "cache", "age_ms": 2500,
                "provenance": {"model": "m1", "prompt_version": "v2", "world_version": 3},
                "served_for": "ctx"})),
            "[cache, 2.5 s old, model m1, prompt v2, world v3, served for ctx]"
        );
    }
}
