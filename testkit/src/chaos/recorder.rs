//! What a history did, as the clients saw it: every request with its send and receive times and
//! its answer (status, body, the headers that matter), every event-stream session with the
//! events it got, and every fault with when it started and ended. Times are milliseconds since
//! the history began. The checker reads only this and the store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

/// One HTTP try of an action.
#[derive(Debug, Clone, Serialize)]
pub struct Call {
    /// Unique in the history, in send order.
    pub id: u64,
    /// Index into [`History::games`].
    pub game: usize,
    pub player: usize,
    /// The logical action this try belongs to (unique in the history): its tries share the text
    /// and the `Idempotency-Key`. A retry without a key is a new logical action.
    pub action: u64,
    /// 1 for the first try; a hedged try sent while another is in flight counts too.
    pub attempt: u32,
    /// The action this one repeats without a key (a new logical action with its own text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<u64>,
    pub text: String,
    pub body: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub engine: usize,
    pub timeout_ms: u64,
    pub sent_ms: u64,
    pub done_ms: u64,
    pub outcome: Outcome,
}

/// How a try ended, from the client's side.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Answer {
        status: u16,
        /// `Idempotent-Replayed: true`
        replayed: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        location: Option<String>,
        body: Value,
    },
    /// The client gave up waiting (its own timeout); the request may still be served.
    Timeout,
    /// Connection refused or reset, or a body that could not be read.
    Error {
        error: String,
        /// The connection could not be made: the request never reached a server.
        connect: bool,
    },
}

/// What an answer says about whether its action was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 200 with the full answer (`action_id` and `seq`).
    Applied,
    /// 200 with the full answer and `Idempotent-Replayed: true`: an earlier try applied it.
    Replayed,
    /// 503, 429 or another 4xx: the server says it did not apply it; or the connection was
    /// refused, so no server saw it.
    NotApplied,
    /// A 2xx without the full answer (202 "outcome unknown"), a client timeout or a
    /// transport error: applied or not, at most once.
    Unknown,
    /// A 5xx other than 503: never acceptable.
    ServerError,
}

impl Call {
    pub fn verdict(&self) -> Verdict {
        match &self.outcome {
            Outcome::Answer {
                status,
                replayed,
                body,
                ..
            } => match *status {
                200 if body["action_id"].is_string() && body["seq"].is_u64() => {
                    if *replayed {
                        Verdict::Replayed
                    } else {
                        Verdict::Applied
                    }
                }
                200..=299 => Verdict::Unknown,
                503 | 400..=499 => Verdict::NotApplied,
                _ => Verdict::ServerError,
            },
            Outcome::Error { connect: true, .. } => Verdict::NotApplied,
            Outcome::Timeout | Outcome::Error { .. } => Verdict::Unknown,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match &self.outcome {
            Outcome::Answer { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn answer_body(&self) -> Option<&Value> {
        match &self.outcome {
            Outcome::Answer { body, .. } => Some(body),
            _ => None,
        }
    }

    /// One line for a replay: what was sent and what came back.
    pub fn describe(&self) -> String {
        let key = self.key.as_deref().unwrap_or("-");
        let head = format!(
            "try #{} of action {} ({:?}, attempt {}, key {key}, engine {}, timeout {} ms)",
            self.id, self.action, self.text, self.attempt, self.engine, self.timeout_ms
        );
        let tail = match &self.outcome {
            Outcome::Answer {
                status,
                replayed,
                body,
                ..
            } => {
                let mut s = format!("{status}");
                if *replayed {
                    s.push_str(" replayed");
                }
                if let Some(id) = body["action_id"].as_str() {
                    s.push_str(&format!(" action_id {id}"));
                }
                if let Some(seq) = body["seq"].as_u64() {
                    s.push_str(&format!(" seq {seq}"));
                }
                if let Some(code) = body["error"]["code"].as_str() {
                    s.push_str(&format!(" {code}: {}", body["error"]["message"]));
                }
                s
            }
            Outcome::Timeout => "client timeout".into(),
            Outcome::Error { error, .. } => format!("error: {error}"),
        };
        format!("{head} -> {tail}")
    }
}

/// One event-stream connection.
#[derive(Debug, Clone, Serialize)]
pub struct Session {
    pub id: u64,
    pub game: usize,
    /// The stream client (several sessions each: it disconnects and resumes).
    pub client: usize,
    pub engine: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_event_id: Option<String>,
    /// The last session of its client, opened once the history was quiet: it must reach the end.
    pub catch_up: bool,
    pub opened_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub events: Vec<Seen>,
    pub closed_ms: u64,
    /// Why it ended: `client` (the client hung up on purpose), `idle`, `eof`, or an error.
    pub end: String,
}

/// An event a session received.
#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    pub at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_id: Option<String>,
}

/// A fault as injected.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    pub kind: String,
    pub detail: String,
    pub start_ms: u64,
    pub end_ms: u64,
    /// The game it aimed at, if only one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub game: Option<usize>,
    /// `false` if it could not be injected (e.g. the lock was not granted); the detail says why.
    pub injected: bool,
}

/// Everything a history did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct History {
    pub seed: u64,
    pub deployment: String,
    /// The games' ids, by index.
    pub games: Vec<String>,
    pub calls: Vec<Call>,
    pub sessions: Vec<Session>,
    pub faults: Vec<FaultRecord>,
    /// How long the history ran, in milliseconds.
    pub ran_ms: u64,
}

/// Counters a long run can print while a history runs.
#[derive(Debug, Default)]
pub struct Progress {
    pub requests: AtomicU64,
    /// Tries answered 200 (replays included).
    pub answered: AtomicU64,
    pub faults: AtomicU64,
}

/// Shared by the history's tasks; each pushes whole records when they end.
pub struct Recorder {
    start: Instant,
    history: Mutex<History>,
    next_id: AtomicU64,
    progress: Option<Arc<Progress>>,
}

impl Recorder {
    pub fn new(seed: u64, deployment: &str, progress: Option<Arc<Progress>>) -> Recorder {
        Recorder {
            start: Instant::now(),
            history: Mutex::new(History {
                seed,
                deployment: deployment.to_owned(),
                ..History::default()
            }),
            next_id: AtomicU64::new(1),
            progress,
        }
    }

    /// Milliseconds since the history began.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// A fresh id (tries, sessions, logical actions share the counter).
    pub fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn set_games(&self, games: Vec<String>) {
        self.lock().games = games;
    }

    pub fn call(&self, call: Call) {
        if let Some(p) = &self.progress {
            p.requests.fetch_add(1, Ordering::Relaxed);
            if call.status() == Some(200) {
                p.answered.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.lock().calls.push(call);
    }

    pub fn session(&self, session: Session) {
        self.lock().sessions.push(session);
    }

    pub fn fault(&self, fault: FaultRecord) {
        if let Some(p) = &self.progress {
            p.faults.fetch_add(1, Ordering::Relaxed);
        }
        self.lock().faults.push(fault);
    }

    /// The history so far, sorted by send / open / start time.
    pub fn snapshot(&self) -> History {
        let mut h = self.lock().clone();
        h.ran_ms = self.now_ms();
        h.calls.sort_by_key(|c| (c.sent_ms, c.id));
        h.sessions.sort_by_key(|s| (s.opened_ms, s.id));
        h.faults.sort_by_key(|f| f.start_ms);
        h
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }
}
