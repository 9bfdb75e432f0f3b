//! The play simulator (issue 9): N games × M players acting on a running `hotpath serve` the way
//! people play — every P seconds with jitter, moving between the scenes of the scenario, every
//! action kind, `say` to a stakeholder now and then — while it follows each game's event stream
//! and the server's counters. After a warm-up it reports, per piece of the answer (reactions,
//! narration, social, canon), the share served precomputed / cache / fallback, pieces served for
//! another context than they were made for, freshness, jobs and LLM calls per action, queue depth
//! over time and dead letters. [`run`] returns the [`Report`]; [`plot`] draws it; the `play`
//! binary is the command line.
//!
//! Everything the players do is a pure function of `--seed` (which scene, kind, target, text and
//! delay comes next), so two runs send the same actions in the same order per player; what the
//! engine answers depends on its timing.
//!
//! Fields the engine may not have yet are read when present and counted as absent otherwise:
//! `provenance` / `served_for` on the answer's pieces, `lag_ms` on `content.ready` events, and the
//! admin route `GET /v1/admin/slow-path` (LLM calls and tokens, jobs by state). Without the route
//! the jobs come from `/metrics` and the answers' `dispatched`; the report's `notes` say which
//! source was used.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::{Value, json};

/// The answer's pieces, in report order.
pub const PIECES: [&str; 4] = ["reactions", "narration", "social", "canon"];

/// The action kinds the engine accepts, with how often a player picks each (say most).
pub const KINDS: [(&str, u32); 8] = [
    ("say", 3),
    ("ask", 2),
    ("persuade", 1),
    ("threaten", 1),
    ("help", 1),
    ("investigate", 1),
    ("trade", 1),
    ("observe", 1),
];

/// What to run.
#[derive(Debug, Clone)]
pub struct PlayConfig {
    /// The engine's base URL.
    pub url: String,
    pub admin_token: String,
    pub scenario: String,
    pub games: usize,
    pub players: usize,
    /// Each player acts about this often.
    pub period: Duration,
    /// Each delay is `period × (1 ± jitter)`, uniformly.
    pub jitter: f64,
    /// Not counted, first.
    pub warmup: Duration,
    /// Counted, after the warm-up.
    pub seconds: Duration,
    pub seed: u64,
    /// Share of `say` actions that name a `target` (a streamed dialogue reply).
    pub target_share: f64,
    /// Chance that a player moves to another scene after an action.
    pub move_share: f64,
    /// Progress on stderr this often (zero: none).
    pub progress_every: Duration,
    /// Width of the hit-ratio windows of the report and the plot.
    pub window: Duration,
    pub label: String,
}

impl Default for PlayConfig {
    fn default() -> Self {
        PlayConfig {
            url: "http://127.0.0.1:8080".into(),
            admin_token: String::new(),
            scenario: "harbor-strike".into(),
            games: 4,
            players: 2,
            period: Duration::from_secs(5),
            jitter: 0.3,
            warmup: Duration::from_secs(60),
            seconds: Duration::from_secs(240),
            seed: 1,
            target_share: 0.35,
            move_share: 0.2,
            progress_every: Duration::from_secs(5),
            window: Duration::from_secs(10),
            label: String::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The players: a deterministic script per player
// ---------------------------------------------------------------------------------------------

/// SplitMix64: small, fast and the same on every platform, so a seed replays the same play.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> SimRng {
        SimRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// A stakeholder as the game's state names it.
#[derive(Debug, Clone, PartialEq)]
pub struct Person {
    pub id: String,
    pub name: String,
}

/// A scene of the scenario, read from `GET /v1/games/{id}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    pub id: String,
    pub name: String,
    pub stakeholders: Vec<Person>,
    /// Names of the scene's conflicts.
    pub conflicts: Vec<String>,
}

/// The scenes of a game's scenario, from its state (`GET /v1/games/{id}`).
pub fn scenes_of(state: &Value) -> anyhow::Result<Vec<Scene>> {
    let conflict_names: HashMap<&str, &str> = state["conflicts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| Some((c["id"].as_str()?, c["name"].as_str()?)))
        .collect();
    let scenes: Vec<Scene> = state["scenes"]
        .as_array()
        .context("the game's state has no `scenes`")?
        .iter()
        .filter_map(|s| {
            Some(Scene {
                id: s["id"].as_str()?.to_owned(),
                name: s["name"].as_str().unwrap_or_default().to_owned(),
                stakeholders: s["stakeholders"]
                    .as_array()?
                    .iter()
                    .filter_map(|p| {
                        Some(Person {
                            id: p["id"].as_str()?.to_owned(),
                            name: p["name"].as_str().or(p["id"].as_str())?.to_owned(),
                        })
                    })
                    .collect(),
                conflicts: s["conflicts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.as_str())
                    .map(|c| conflict_names.get(c).copied().unwrap_or(c).to_owned())
                    .collect(),
            })
        })
        .filter(|s: &Scene| !s.stakeholders.is_empty())
        .collect();
    if scenes.is_empty() {
        bail!("the game's scenario has no scene with stakeholders");
    }
    Ok(scenes)
}

/// Lines a player may write, per kind. `{name}` is a stakeholder of the scene (the target of a
/// targeted `say`), `{other}` any stakeholder of the scenario, `{scene}` the scene's name and
/// `{conflict}` one of its conflicts: no scenario's own words, so any scenario reads right.
const TEXTS: [(&str, &[&str]); 8] = [
    (
        "say",
        &[
            "{name}, I'm with you on this, whatever the others say.",
            "{name}, word is that {other} knows more than they let on.",
            "{name}, I didn't come to {scene} to make trouble.",
            "{name}, I've been asking around about {conflict}; nobody wants to talk.",
            "{name}, nobody leaves until we've heard everyone out.",
            "{name}, you look like you haven't slept. What's going on?",
        ],
    ),
    (
        "ask",
        &[
            "{name}, what happened the night this all started?",
            "Who stands to gain from {conflict}?",
            "{name}, where can I find {other}?",
            "What would it take to settle this, {name}?",
            "{name}, who else was in {scene} that night?",
        ],
    ),
    (
        "persuade",
        &[
            "{name}, think of the families: a fair deal helps everyone.",
            "If you stand with us, {name}, the others will follow.",
            "Let me carry your terms to {other}. You have my word.",
            "There's a way out of {conflict} that costs you nothing, {name}.",
        ],
    ),
    (
        "threaten",
        &[
            "{name}, tell me the truth or I tell {other} what I saw.",
            "Keep lying and all of {scene} will hear about it.",
            "One more delay, {name}, and I stop being polite.",
            "I know your part in {conflict}, {name}. Choose your next words carefully.",
        ],
    ),
    (
        "help",
        &[
            "Let me carry that for you, {name}.",
            "I brought bread and coin for the ones who need it most.",
            "{name}, I'll keep watch tonight so you can rest.",
            "Tell me what you need, {name}, and I'll see it done.",
        ],
    ),
    (
        "investigate",
        &[
            "I search {scene} for anything out of place.",
            "I look over the papers on the table for names and dates.",
            "I follow {other} at a distance to see where they go.",
            "I check the back door and the floor for fresh marks.",
        ],
    ),
    (
        "trade",
        &[
            "I'll trade this lantern for what you know about {conflict}, {name}.",
            "Ten silver for a name, {name}. Fair?",
            "I have rope and tar to spare; what can you give me, {name}?",
            "Your secret for my silence, {name}.",
        ],
    ),
    (
        "observe",
        &[
            "I watch {name} closely while the others talk.",
            "I take a seat in a corner of {scene} and listen.",
            "I watch who comes and goes.",
            "I study {name}'s hands while {other} is talking.",
        ],
    ),
];

/// One action a player sends.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedAction {
    pub scene_id: String,
    pub kind: &'static str,
    pub text: String,
    pub target: Option<String>,
    /// How long after this action the player acts again.
    pub then_wait: Duration,
}

impl PlannedAction {
    pub fn body(&self) -> Value {
        let mut b = json!({"scene_id": self.scene_id, "kind": self.kind, "text": self.text});
        if let Some(t) = &self.target {
            b["target"] = json!(t);
        }
        b
    }
}

/// One player's script: a pure function of the seed, the game and the player.
#[derive(Debug, Clone)]
pub struct PlayerScript {
    rng: SimRng,
    scenes: Vec<Scene>,
    everyone: Vec<Person>,
    scene: usize,
    period: Duration,
    jitter: f64,
    target_share: f64,
    move_share: f64,
}

impl PlayerScript {
    pub fn new(config: &PlayConfig, scenes: Vec<Scene>, game: usize, player: usize) -> Self {
        let mut rng = SimRng::new(
            config.seed ^ (game as u64).wrapping_mul(0x1000_0001) ^ ((player as u64) << 40),
        );
        rng.next_u64();
        let mut everyone: Vec<Person> = Vec::new();
        for p in scenes.iter().flat_map(|s| &s.stakeholders) {
            if !everyone.contains(p) {
                everyone.push(p.clone());
            }
        }
        PlayerScript {
            scene: (game + player) % scenes.len(),
            rng,
            scenes,
            everyone,
            period: config.period,
            jitter: config.jitter.clamp(0.0, 1.0),
            target_share: config.target_share,
            move_share: config.move_share,
        }
    }

    /// Delay before the first action: anywhere in one period, so players are spread out.
    pub fn first_delay(&mut self) -> Duration {
        self.period.mul_f64(self.rng.unit())
    }

    pub fn next_action(&mut self) -> PlannedAction {
        let scene = self.scenes[self.scene].clone();
        let total: u32 = KINDS.iter().map(|(_, w)| w).sum();
        let mut roll = self.rng.below(total as usize) as u32;
        let kind = KINDS
            .iter()
            .find(|(_, w)| {
                if roll < *w {
                    true
                } else {
                    roll -= w;
                    false
                }
            })
            .map(|(k, _)| *k)
            .unwrap_or("say");
        let who = self.rng.pick(scene.stakeholders.as_slice()).clone();
        let target = (kind == "say" && self.rng.chance(self.target_share)).then(|| who.id.clone());
        let others: Vec<&Person> = self.everyone.iter().filter(|p| p.id != who.id).collect();
        let other = if others.is_empty() {
            who.name.clone()
        } else {
            self.rng.pick(others.as_slice()).name.clone()
        };
        let conflict = if scene.conflicts.is_empty() {
            "all this".to_owned()
        } else {
            lower_article(self.rng.pick::<String>(&scene.conflicts))
        };
        let templates = TEXTS
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, t)| *t)
            .unwrap_or(&[]);
        let text = self
            .rng
            .pick(templates)
            .replace("{name}", &who.name)
            .replace("{other}", &other)
            .replace("{scene}", &lower_article(&scene.name))
            .replace("{conflict}", &conflict);
        let then_wait = self
            .period
            .mul_f64(1.0 + self.jitter * (2.0 * self.rng.unit() - 1.0));
        if self.scenes.len() > 1 && self.rng.chance(self.move_share) {
            let step = 1 + self.rng.below(self.scenes.len() - 1);
            self.scene = (self.scene + step) % self.scenes.len();
        }
        PlannedAction {
            scene_id: scene.id,
            kind,
            text,
            target,
            then_wait,
        }
    }
}

/// "The Docks" reads "the Docks" inside a sentence.
fn lower_article(name: &str) -> String {
    match name.strip_prefix("The ") {
        Some(rest) => format!("the {rest}"),
        None => name.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// What is recorded while it runs
// ---------------------------------------------------------------------------------------------

/// How a piece of an answer stands on provenance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// A fallback: made by the rules for this very answer.
    NotApplicable,
    /// `provenance.made_for` equals `served_for`.
    Matches,
    /// Made for another context than the one it was served for.
    MisServed,
    /// Slow-path content without `provenance` or `served_for`.
    Absent,
}

/// One piece of an answer.
#[derive(Debug, Clone)]
pub struct PieceRecord {
    pub piece: &'static str,
    pub source: String,
    pub age_ms: Option<f64>,
    pub provenance: Provenance,
    pub stakeholder: Option<String>,
    pub made_for: Option<String>,
    pub served_for: Option<String>,
}

/// One action sent.
#[derive(Debug, Clone)]
pub struct ActionRecord {
    /// Seconds since play began, when it was sent.
    pub t: f64,
    pub latency_ms: f64,
    /// HTTP status, or `timeout` / `error`.
    pub status: String,
    pub kind: &'static str,
    pub pieces: Vec<PieceRecord>,
    pub dispatched: Vec<String>,
    pub dialogue_request: Option<String>,
}

/// The pieces of an answer (reactions each count as one piece).
pub fn pieces_of(answer: &Value) -> Vec<PieceRecord> {
    let mut out = Vec::new();
    let mut push = |piece: &'static str, v: &Value| {
        let source = v["source"].as_str().unwrap_or("missing").to_owned();
        let made_for = v.pointer("/provenance/made_for").map(|m| {
            m.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| m.to_string())
        });
        let served_for = v.get("served_for").map(|m| {
            m.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| m.to_string())
        });
        let provenance = if source == "fallback" {
            Provenance::NotApplicable
        } else {
            match (&made_for, &served_for) {
                (Some(m), Some(s)) if m == s => Provenance::Matches,
                (Some(_), Some(_)) => Provenance::MisServed,
                _ => Provenance::Absent,
            }
        };
        out.push(PieceRecord {
            piece,
            source,
            age_ms: v["age_ms"].as_f64(),
            provenance,
            stakeholder: v["stakeholder_id"].as_str().map(str::to_owned),
            made_for,
            served_for,
        });
    };
    for r in answer["reactions"].as_array().into_iter().flatten() {
        push("reactions", r);
    }
    for piece in ["narration", "social", "canon"] {
        if answer.get(piece).is_some_and(Value::is_object) {
            push(piece, &answer[piece]);
        }
    }
    out
}

/// One event of a game's stream, as much of it as the report needs.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub t: f64,
    pub kind: String,
    pub job_id: Option<String>,
    pub job_kind: Option<String>,
    pub lag_ms: Option<f64>,
    pub dead: bool,
    pub request_id: Option<String>,
}

impl EventRecord {
    fn from_data(t: f64, name: &str, data: &Value) -> EventRecord {
        let kind = data["type"].as_str().unwrap_or(name).to_owned();
        let s = |k: &str| data[k].as_str().map(str::to_owned);
        EventRecord {
            job_id: s("job_id"),
            // `kind` on job events; `content.ready` may say `kind` or `job_kind`, else `what`.
            job_kind: s("kind").or_else(|| s("job_kind")).or_else(|| s("what")),
            lag_ms: data["lag_ms"].as_f64(),
            dead: data["dead"].as_bool().unwrap_or(false),
            request_id: s("request_id"),
            t,
            kind,
        }
    }
}

/// A sample of the queue, every second.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct QueueSample {
    pub t: f64,
    pub depth: f64,
}

#[derive(Default)]
struct Shared {
    actions: Vec<ActionRecord>,
    events: Vec<EventRecord>,
    queue: Vec<QueueSample>,
    sse_errors: u64,
}

// ---------------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct Percentiles {
    pub n: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(mut values: Vec<f64>) -> Option<Percentiles> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let at = |p: f64| values[((values.len() as f64 - 1.0) * p).round() as usize];
        Some(Percentiles {
            n: values.len(),
            p50: at(0.5),
            p99: at(0.99),
            max: at(1.0),
        })
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct PieceStats {
    pub served: u64,
    pub precomputed: u64,
    pub cache: u64,
    pub fallback: u64,
    /// Shares of `served`, 0..=1.
    pub precomputed_share: f64,
    pub cache_share: f64,
    pub fallback_share: f64,
    /// Precomputed or cache: written ahead by the slow path.
    pub ahead_share: f64,
    /// Slow-path pieces whose `provenance.made_for` and `served_for` were both given …
    pub provenance_checked: u64,
    /// … of which made for another context.
    pub mis_served: u64,
    /// Slow-path pieces without `provenance` or `served_for`.
    pub no_provenance: u64,
    /// `age_ms` of the pieces that carry it.
    pub age_ms: Option<Percentiles>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Actions {
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    pub per_second: f64,
    pub status: BTreeMap<String, u64>,
    pub by_kind: BTreeMap<String, u64>,
    pub latency_ms: Option<Percentiles>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Freshness {
    /// `content.ready lag_ms`, or `job.queued→job.completed` seen on the stream when the events
    /// carry no `lag_ms`, or `none`.
    pub source: String,
    pub ms: Option<Percentiles>,
    pub by_kind: BTreeMap<String, Percentiles>,
    pub content_ready_events: u64,
    pub content_ready_with_lag: u64,
    /// Job queued → completed as the stream showed it, per kind (always measured).
    pub job_queued_to_completed_ms: Option<Percentiles>,
    pub job_queued_to_completed_by_kind: BTreeMap<String, Percentiles>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Dialogue {
    pub requested: u64,
    pub done: u64,
    /// Answer sent → first `dialogue.chunk` / `dialogue.done`, for replies requested in the window.
    pub first_chunk_ms: Option<Percentiles>,
    pub done_ms: Option<Percentiles>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Jobs {
    /// From the answers' `dispatched` lists, per counted action.
    pub dispatched_per_action: f64,
    pub dispatched_by_kind: BTreeMap<String, u64>,
    /// `hotpath_dispatched_jobs_total` difference over the counted window, per counted action.
    pub metrics_dispatched_per_action: Option<f64>,
    /// `job.started` seen on the streams in the window (each attempt counts): while the engine
    /// has no admin route, an upper bound of LLM calls, as a game job asks the model at most
    /// once per attempt.
    pub started: u64,
    pub started_per_action: f64,
    pub completed: u64,
    pub failed: u64,
    /// `job.failed` with `dead: true` on the streams in the window.
    pub dead_letters_seen: u64,
    /// The admin route's `jobs.dead` at the end (all time), when the route exists.
    pub dead_letters_total: Option<f64>,
    /// The admin route's jobs counts, end minus end of warm-up, when the route exists.
    pub admin_delta: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Llm {
    pub calls: f64,
    pub prompt_tokens: f64,
    pub completion_tokens: f64,
    pub calls_per_action: f64,
    pub tokens_per_action: f64,
    pub by_kind: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Queue {
    /// `admin` (`jobs.pending` of the admin route) or `metrics` (`hotpath_queue_depth`).
    pub source: String,
    pub at_warmup_end: Option<f64>,
    pub at_end: Option<f64>,
    pub max: Option<f64>,
    /// Least-squares slope of the depth over the last 3 minutes of the counted window (or all
    /// of it when shorter), in jobs per minute.
    pub growth_per_minute_last_3min: Option<f64>,
    /// Every sample, seconds since play began (the warm-up included).
    pub samples: Vec<QueueSample>,
}

/// One window of the hit-ratio plot: the share of each piece served ahead.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub t_start: f64,
    pub t_end: f64,
    pub actions: u64,
    /// Piece → share served precomputed or cache (absent when no piece was served).
    pub ahead_share: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub label: String,
    pub url: String,
    pub scenario: String,
    pub games: usize,
    pub players: usize,
    pub period_secs: f64,
    pub jitter: f64,
    pub seed: u64,
    pub warmup_secs: f64,
    /// The counted window.
    pub seconds: f64,
    pub actions: Actions,
    pub pieces: BTreeMap<String, PieceStats>,
    /// All pieces together: provenance checked, mis-served, without provenance.
    pub provenance_checked: u64,
    pub mis_served: u64,
    pub no_provenance: u64,
    /// A few mis-served pieces, to look at.
    pub mis_served_examples: Vec<Value>,
    pub freshness: Freshness,
    pub dialogue: Dialogue,
    pub jobs: Jobs,
    /// From the admin route; `None` without it.
    pub llm: Option<Llm>,
    pub queue: Queue,
    pub windows: Vec<Window>,
    /// Stream events by kind in the counted window.
    pub events: BTreeMap<String, u64>,
    pub sse_errors: u64,
    /// What could not be measured, and what was used instead.
    pub notes: Vec<String>,
}

impl Report {
    /// The one-line summary.
    pub fn summary(&self) -> String {
        let pct = |p: &str| {
            self.pieces
                .get(p)
                .filter(|s| s.served > 0)
                .map(|s| format!("{:.0}%", 100.0 * s.ahead_share))
                .unwrap_or_else(|| "–".into())
        };
        let reactions = self.pieces.get("reactions");
        let fresh = match &self.freshness.ms {
            Some(p) => format!(
                "{:.0}/{:.0} ms ({})",
                p.p50,
                p.p99,
                if self.freshness.source.starts_with("content.ready") {
                    "content.ready"
                } else {
                    "job queued→completed"
                }
            ),
            None => "–".into(),
        };
        let llm = match &self.llm {
            Some(l) => format!("{:.2}", l.calls_per_action),
            None => "–".into(),
        };
        let queue = match (
            self.queue.at_warmup_end,
            self.queue.at_end,
            self.queue.growth_per_minute_last_3min,
        ) {
            (Some(a), Some(b), Some(g)) => format!("{a:.0}→{b:.0} ({g:+.1}/min)"),
            (_, Some(b), _) => format!("{b:.0}"),
            _ => "–".into(),
        };
        format!(
            "play{}: {}×{} players, {} actions in {:.0} s ({} failed); served ahead: reactions {} \
             (precomputed {:.0}%), narration {}, social {}, canon {}; mis-served {} of {} checked \
             ({} without provenance); freshness p50/p99 {}; jobs/action {:.2} dispatched, {:.2} run; \
             LLM calls/action {}; queue {}; dead letters {}",
            if self.label.is_empty() {
                String::new()
            } else {
                format!(" {}", self.label)
            },
            self.games,
            self.players,
            self.actions.sent,
            self.seconds,
            self.actions.failed,
            pct("reactions"),
            100.0 * reactions.map(|r| r.precomputed_share).unwrap_or(0.0),
            pct("narration"),
            pct("social"),
            pct("canon"),
            self.mis_served,
            self.provenance_checked,
            self.no_provenance,
            fresh,
            self.jobs.dispatched_per_action,
            self.jobs.started_per_action,
            llm,
            queue,
            self.jobs
                .dead_letters_total
                .map(|d| format!("{d:.0} (all time)"))
                .unwrap_or_else(|| format!("{} seen", self.jobs.dead_letters_seen)),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The server's counters
// ---------------------------------------------------------------------------------------------

/// A Prometheus text sample: name, labels, value.
pub type Sample = (String, BTreeMap<String, String>, f64);

/// Parses Prometheus text format (the subset the engine writes).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (head, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match head.split_once('{') {
            Some((n, rest)) => {
                let mut labels = BTreeMap::new();
                for pair in rest.trim_end_matches('}').split(',') {
                    if let Some((k, v)) = pair.split_once('=') {
                        labels.insert(k.trim().to_owned(), v.trim().trim_matches('"').to_owned());
                    }
                }
                (n.to_owned(), labels)
            }
            None => (head.to_owned(), BTreeMap::new()),
        };
        out.push((name, labels, value));
    }
    out
}

fn metric_sum(samples: &[Sample], name: &str) -> Option<f64> {
    let mut found = false;
    let mut sum = 0.0;
    for (n, _, v) in samples {
        if n == name {
            found = true;
            sum += v;
        }
    }
    found.then_some(sum)
}

struct Client {
    http: reqwest::Client,
    url: String,
    admin: String,
}

impl Client {
    async fn post(&self, path: &str, token: &str, body: Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.url);
        let r = self
            .http
            .post(&url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?;
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("POST {url}: {status}: {body}");
        }
        Ok(body)
    }

    async fn get_json(&self, path: &str, token: &str) -> anyhow::Result<Option<Value>> {
        let url = format!("{}{path}", self.url);
        let r = self
            .http
            .get(&url)
            .bearer_auth(token)
            .timeout(Duration::from_secs(3))
            .send()
            .await?;
        if r.status() == reqwest::StatusCode::NOT_FOUND
            || r.status() == reqwest::StatusCode::METHOD_NOT_ALLOWED
        {
            return Ok(None);
        }
        let status = r.status();
        if !status.is_success() {
            bail!("GET {url}: {status}");
        }
        Ok(Some(r.json().await?))
    }

    async fn metrics(&self) -> anyhow::Result<Vec<Sample>> {
        let text = self
            .http
            .get(format!("{}/metrics", self.url))
            .timeout(Duration::from_secs(3))
            .send()
            .await?
            .text()
            .await?;
        Ok(parse_metrics(&text))
    }

    /// `GET /v1/admin/slow-path`, `None` while the engine has no such route.
    async fn slow_path(&self) -> Option<Value> {
        self.get_json("/v1/admin/slow-path", &self.admin)
            .await
            .ok()
            .flatten()
            .filter(Value::is_object)
    }
}

/// Jobs in `state` from the admin route's answer: `jobs.by_state.<state>` (a state it does not
/// list has none), or `jobs.<state>`.
pub fn jobs_in_state(slow_path: &Value, state: &str) -> Option<f64> {
    if let Some(by_state) = slow_path
        .pointer("/jobs/by_state")
        .and_then(Value::as_object)
    {
        return Some(by_state.get(state).and_then(Value::as_f64).unwrap_or(0.0));
    }
    slow_path
        .pointer(&format!("/jobs/{state}"))
        .and_then(Value::as_f64)
}

/// `after - before` for every number of `after` (recursively); other values as they are.
pub fn delta(before: &Value, after: &Value) -> Value {
    match after {
        Value::Number(n) => {
            let a = n.as_f64().unwrap_or(0.0);
            let b = before.as_f64().unwrap_or(0.0);
            json!(a - b)
        }
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), delta(&before[k.as_str()], v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Counters read at the end of the warm-up and at the end.
struct Snapshot {
    metrics: Vec<Sample>,
    slow_path: Option<Value>,
}

async fn snapshot(client: &Client) -> Snapshot {
    Snapshot {
        metrics: client.metrics().await.unwrap_or_default(),
        slow_path: client.slow_path().await,
    }
}

// ---------------------------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------------------------

struct Game {
    id: String,
    tokens: Vec<String>,
    scenes: Vec<Scene>,
}

async fn setup(config: &PlayConfig, client: &Client) -> anyhow::Result<Vec<Game>> {
    let mut games = Vec::with_capacity(config.games);
    for g in 0..config.games {
        let game = client
            .post(
                "/v1/games",
                &client.admin,
                json!({"scenario": config.scenario}),
            )
            .await
            .context("creating a game (is the server up, and the admin token right?)")?;
        let id = game["game_id"].as_str().context("game_id")?.to_owned();
        let mut tokens = Vec::with_capacity(config.players);
        for p in 0..config.players {
            let player = client
                .post(
                    &format!("/v1/games/{id}/players"),
                    &client.admin,
                    json!({"name": format!("Player {} of game {}", p + 1, g + 1)}),
                )
                .await?;
            tokens.push(player["token"].as_str().context("token")?.to_owned());
        }
        let state = client
            .get_json(&format!("/v1/games/{id}"), &client.admin)
            .await?
            .context("the game's state")?;
        games.push(Game {
            scenes: scenes_of(&state)?,
            id,
            tokens,
        });
    }
    Ok(games)
}

/// Follows one game's event stream until the task is aborted; signals `ready` once connected.
async fn follow(
    http: reqwest::Client,
    url: String,
    token: String,
    t0: Arc<std::sync::OnceLock<Instant>>,
    shared: Arc<Mutex<Shared>>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    loop {
        let response = http
            .get(&url)
            .bearer_auth(&token)
            .header("accept", "text/event-stream")
            .send()
            .await;
        let mut response = match response {
            Ok(r) if r.status().is_success() => r,
            _ => {
                shared.lock().unwrap().sse_errors += 1;
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if let Some(r) = ready.take() {
            let _ = r.send(());
        }
        let mut buffer = String::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            if buffer.contains('\r') {
                buffer = buffer.replace("\r\n", "\n");
            }
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let mut name = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() {
                    continue;
                }
                let Ok(value) = serde_json::from_str::<Value>(&data) else {
                    continue;
                };
                // Events before play began are not kept.
                if let Some(t0) = t0.get() {
                    let record = EventRecord::from_data(t0.elapsed().as_secs_f64(), &name, &value);
                    shared.lock().unwrap().events.push(record);
                }
            }
        }
        // The stream ended (server restart, shutdown): reconnect, counting it.
        shared.lock().unwrap().sse_errors += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Plays as configured and returns the report.
pub async fn run(config: &PlayConfig) -> anyhow::Result<Report> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(config.games * config.players + 4)
        .build()?;
    let client = Arc::new(Client {
        http: http.clone(),
        url: config.url.trim_end_matches('/').to_owned(),
        admin: config.admin_token.clone(),
    });
    eprintln!(
        "play: creating {} game(s) × {} player(s) of `{}` at {}",
        config.games, config.players, config.scenario, client.url
    );
    let games = setup(config, &client).await?;
    let shared = Arc::new(Mutex::new(Shared::default()));
    let origin = Arc::new(std::sync::OnceLock::new());

    // Follow every game's stream before anyone acts.
    let sse_http = reqwest::Client::builder().build()?;
    let mut background = Vec::new();
    for game in &games {
        let (tx, rx) = tokio::sync::oneshot::channel();
        background.push(tokio::spawn(follow(
            sse_http.clone(),
            format!("{}/v1/games/{}/events", client.url, game.id),
            game.tokens[0].clone(),
            origin.clone(),
            shared.clone(),
            tx,
        )));
        let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
    }
    // Play begins: every time in the report is seconds since now.
    let t0 = Instant::now();
    let _ = origin.set(t0);

    // Queue depth every second (the admin route's `jobs.pending` when it exists).
    let admin_route = client.slow_path().await.is_some();
    {
        let (client, shared) = (client.clone(), shared.clone());
        background.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let t = t0.elapsed().as_secs_f64();
                let depth = if admin_route {
                    client
                        .slow_path()
                        .await
                        .and_then(|v| jobs_in_state(&v, "pending"))
                } else {
                    None
                };
                let depth = match depth {
                    Some(d) => Some(d),
                    None => client
                        .metrics()
                        .await
                        .ok()
                        .and_then(|m| metric_sum(&m, "hotpath_queue_depth")),
                };
                if let Some(depth) = depth {
                    shared.lock().unwrap().queue.push(QueueSample { t, depth });
                }
            }
        }));
    }

    let warmup = config.warmup.as_secs_f64();
    let end = warmup + config.seconds.as_secs_f64();
    let deadline = t0 + config.warmup + config.seconds;
    let mut players = Vec::new();
    for (g, game) in games.iter().enumerate() {
        for (p, token) in game.tokens.iter().enumerate() {
            let mut script = PlayerScript::new(config, game.scenes.clone(), g, p);
            let (http, shared) = (http.clone(), shared.clone());
            let url = format!("{}/v1/games/{}/actions", client.url, game.id);
            let token = token.clone();
            players.push(tokio::spawn(async move {
                let mut next = t0 + script.first_delay();
                loop {
                    if next >= deadline {
                        return;
                    }
                    tokio::time::sleep_until(next.into()).await;
                    let action = script.next_action();
                    next += action.then_wait;
                    let t = t0.elapsed().as_secs_f64();
                    let started = Instant::now();
                    let sent = http
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&action.body())
                        .send()
                        .await;
                    let (status, answer) = match sent {
                        Ok(r) => {
                            let s = r.status().as_u16().to_string();
                            (s, r.json::<Value>().await.ok())
                        }
                        Err(e) if e.is_timeout() => ("timeout".to_owned(), None),
                        Err(_) => ("error".to_owned(), None),
                    };
                    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
                    let answer = answer.unwrap_or(Value::Null);
                    let record = ActionRecord {
                        t,
                        latency_ms,
                        kind: action.kind,
                        pieces: if status.starts_with('2') {
                            pieces_of(&answer)
                        } else {
                            Vec::new()
                        },
                        dispatched: answer["dispatched"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|d| d["kind"].as_str().map(str::to_owned))
                            .collect(),
                        dialogue_request: answer["dialogue_request_id"].as_str().map(str::to_owned),
                        status,
                    };
                    shared.lock().unwrap().actions.push(record);
                }
            }));
        }
    }

    // Warm-up, then the counted window, with progress.
    let mut start_snapshot = None;
    let progress = config.progress_every;
    let mut next_progress = if progress.is_zero() {
        None
    } else {
        Some(t0 + progress)
    };
    let warmup_end = t0 + config.warmup;
    loop {
        let now = Instant::now();
        if start_snapshot.is_none() && now >= warmup_end {
            start_snapshot = Some(snapshot(&client).await);
            eprintln!(
                "play: warm-up over, counting for {:.0} s",
                config.seconds.as_secs_f64()
            );
            continue;
        }
        if now >= deadline {
            break;
        }
        let mut wake = deadline;
        if start_snapshot.is_none() {
            wake = wake.min(warmup_end);
        }
        if let Some(p) = next_progress {
            wake = wake.min(p);
        }
        tokio::time::sleep_until(wake.into()).await;
        if let Some(p) = next_progress
            && Instant::now() >= p
        {
            eprintln!("{}", progress_line(&shared, t0, warmup));
            next_progress = Some(p + progress);
        }
    }
    let start_snapshot = match start_snapshot {
        Some(s) => s,
        None => snapshot(&client).await,
    };
    let end_snapshot = snapshot(&client).await;
    // Actions still in flight finish (their timeout bounds this).
    for p in players {
        let _ = p.await;
    }
    // Let the streams deliver what followed the last actions' commits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for b in &background {
        b.abort();
    }
    let shared = std::mem::take(&mut *shared.lock().unwrap());
    Ok(build_report(
        config,
        shared,
        warmup,
        end,
        &start_snapshot,
        &end_snapshot,
    ))
}

fn progress_line(shared: &Mutex<Shared>, t0: Instant, warmup: f64) -> String {
    let s = shared.lock().unwrap();
    let t = t0.elapsed().as_secs_f64();
    let ok = s
        .actions
        .iter()
        .filter(|a| a.status.starts_with('2'))
        .count();
    let failed = s.actions.len() - ok;
    let recent: Vec<&ActionRecord> = s.actions.iter().filter(|a| a.t >= t - 30.0).collect();
    let mut shares = String::new();
    for piece in PIECES {
        let (mut n, mut ahead) = (0, 0);
        for p in recent
            .iter()
            .flat_map(|a| &a.pieces)
            .filter(|p| p.piece == piece)
        {
            n += 1;
            ahead += usize::from(p.source != "fallback");
        }
        if n > 0 {
            shares.push_str(&format!(" {piece} {:.0}%", 100.0 * ahead as f64 / n as f64));
        } else {
            shares.push_str(&format!(" {piece} –"));
        }
    }
    let queue = s
        .queue
        .last()
        .map(|q| format!("{:.0}", q.depth))
        .unwrap_or_else(|| "–".into());
    let ready = s
        .events
        .iter()
        .filter(|e| e.kind == "content.ready")
        .count();
    format!(
        "play: {t:>5.0} s{} {} ok, {failed} failed; ahead (last 30 s):{shares}; queue {queue}; content.ready {ready}",
        if t < warmup { " (warm-up)" } else { "" },
        ok
    )
}

fn build_report(
    config: &PlayConfig,
    shared: Shared,
    warmup: f64,
    end: f64,
    start: &Snapshot,
    finish: &Snapshot,
) -> Report {
    let mut notes = Vec::new();
    let in_window = |t: f64| t >= warmup && t < end;
    let counted: Vec<&ActionRecord> = shared.actions.iter().filter(|a| in_window(a.t)).collect();
    let n_actions = counted.len() as u64;
    let per_action = |x: f64| {
        if n_actions == 0 {
            0.0
        } else {
            x / n_actions as f64
        }
    };

    // Actions.
    let mut actions = Actions {
        sent: n_actions,
        per_second: n_actions as f64 / (end - warmup).max(1e-9),
        latency_ms: Percentiles::of(counted.iter().map(|a| a.latency_ms).collect()),
        ..Actions::default()
    };
    for a in &counted {
        *actions.status.entry(a.status.clone()).or_default() += 1;
        *actions.by_kind.entry(a.kind.to_owned()).or_default() += 1;
        if a.status.starts_with('2') {
            actions.ok += 1;
        } else {
            actions.failed += 1;
        }
    }

    // Pieces.
    let mut pieces: BTreeMap<String, PieceStats> = BTreeMap::new();
    let mut ages: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut mis_served_examples = Vec::new();
    for piece in PIECES {
        pieces.insert(piece.to_owned(), PieceStats::default());
    }
    for p in counted.iter().flat_map(|a| &a.pieces) {
        let s = pieces.entry(p.piece.to_owned()).or_default();
        s.served += 1;
        match p.source.as_str() {
            "precomputed" => s.precomputed += 1,
            "cache" => s.cache += 1,
            _ => s.fallback += 1,
        }
        match p.provenance {
            Provenance::Matches => s.provenance_checked += 1,
            Provenance::MisServed => {
                s.provenance_checked += 1;
                s.mis_served += 1;
                if mis_served_examples.len() < 5 {
                    mis_served_examples.push(json!({
                        "piece": p.piece, "stakeholder_id": p.stakeholder,
                        "made_for": p.made_for, "served_for": p.served_for, "age_ms": p.age_ms,
                    }));
                }
            }
            Provenance::Absent => s.no_provenance += 1,
            Provenance::NotApplicable => {}
        }
        if let Some(age) = p.age_ms {
            ages.entry(p.piece).or_default().push(age);
        }
    }
    for (name, s) in pieces.iter_mut() {
        if s.served > 0 {
            let n = s.served as f64;
            s.precomputed_share = s.precomputed as f64 / n;
            s.cache_share = s.cache as f64 / n;
            s.fallback_share = s.fallback as f64 / n;
            s.ahead_share = (s.precomputed + s.cache) as f64 / n;
        }
        s.age_ms = ages.remove(name.as_str()).and_then(Percentiles::of);
    }
    let provenance_checked = pieces.values().map(|s| s.provenance_checked).sum();
    let mis_served = pieces.values().map(|s| s.mis_served).sum();
    let no_provenance: u64 = pieces.values().map(|s| s.no_provenance).sum();
    if no_provenance > 0 {
        notes.push(format!(
            "{no_provenance} slow-path pieces carried no `provenance`/`served_for`: they are not counted as mis-served or not"
        ));
    }

    // Stream events.
    let events_in: Vec<&EventRecord> = shared.events.iter().filter(|e| in_window(e.t)).collect();
    let mut events: BTreeMap<String, u64> = BTreeMap::new();
    for e in &events_in {
        *events.entry(e.kind.clone()).or_default() += 1;
    }

    // Freshness.
    let mut freshness = Freshness::default();
    let mut lag_by_kind: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut lags = Vec::new();
    for e in events_in.iter().filter(|e| e.kind == "content.ready") {
        freshness.content_ready_events += 1;
        if let Some(l) = e.lag_ms {
            freshness.content_ready_with_lag += 1;
            lags.push(l);
            lag_by_kind
                .entry(e.job_kind.clone().unwrap_or_else(|| "unknown".into()))
                .or_default()
                .push(l);
        }
    }
    let mut queued_at: HashMap<&str, (f64, Option<&str>)> = HashMap::new();
    for e in shared.events.iter().filter(|e| e.kind == "job.queued") {
        if let Some(id) = &e.job_id {
            queued_at
                .entry(id.as_str())
                .or_insert((e.t, e.job_kind.as_deref()));
        }
    }
    let mut job_times = Vec::new();
    let mut job_by_kind: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for e in events_in.iter().filter(|e| e.kind == "job.completed") {
        if let Some((q, kind)) = e.job_id.as_deref().and_then(|id| queued_at.get(id)) {
            let ms = (e.t - q) * 1000.0;
            job_times.push(ms);
            job_by_kind
                .entry(
                    kind.or(e.job_kind.as_deref())
                        .unwrap_or("unknown")
                        .to_owned(),
                )
                .or_default()
                .push(ms);
        }
    }
    freshness.job_queued_to_completed_ms = Percentiles::of(job_times.clone());
    freshness.job_queued_to_completed_by_kind = job_by_kind
        .into_iter()
        .filter_map(|(k, v)| Some((k, Percentiles::of(v)?)))
        .collect();
    if !lags.is_empty() {
        freshness.source = "content.ready lag_ms".into();
        freshness.ms = Percentiles::of(lags);
        freshness.by_kind = lag_by_kind
            .into_iter()
            .filter_map(|(k, v)| Some((k, Percentiles::of(v)?)))
            .collect();
    } else if !job_times.is_empty() {
        freshness.source = "job.queued→job.completed on the stream".into();
        freshness.ms = freshness.job_queued_to_completed_ms.clone();
        freshness.by_kind = freshness.job_queued_to_completed_by_kind.clone();
        notes.push(
            "`content.ready` events carry no `lag_ms`: freshness is job queued → completed as the stream showed it".into(),
        );
    } else {
        freshness.source = "none".into();
        notes
            .push("no freshness measured: no `content.ready` lag and no completed job seen".into());
    }

    // Dialogue.
    let mut dialogue = Dialogue::default();
    let mut first_chunk: HashMap<&str, f64> = HashMap::new();
    let mut done: HashMap<&str, f64> = HashMap::new();
    for e in &shared.events {
        if let Some(id) = e.request_id.as_deref() {
            match e.kind.as_str() {
                "dialogue.chunk" | "dialogue.done" => {
                    first_chunk.entry(id).or_insert(e.t);
                    if e.kind == "dialogue.done" {
                        done.entry(id).or_insert(e.t);
                    }
                }
                _ => {}
            }
        }
    }
    let (mut firsts, mut dones) = (Vec::new(), Vec::new());
    for a in &counted {
        if let Some(id) = a.dialogue_request.as_deref() {
            dialogue.requested += 1;
            if let Some(t) = first_chunk.get(id) {
                firsts.push((t - a.t) * 1000.0);
            }
            if let Some(t) = done.get(id) {
                dialogue.done += 1;
                dones.push((t - a.t) * 1000.0);
            }
        }
    }
    dialogue.first_chunk_ms = Percentiles::of(firsts);
    dialogue.done_ms = Percentiles::of(dones);

    // Jobs.
    let mut jobs = Jobs::default();
    for k in counted.iter().flat_map(|a| &a.dispatched) {
        *jobs.dispatched_by_kind.entry(k.clone()).or_default() += 1;
    }
    jobs.dispatched_per_action = per_action(jobs.dispatched_by_kind.values().sum::<u64>() as f64);
    jobs.metrics_dispatched_per_action = match (
        metric_sum(&start.metrics, "hotpath_dispatched_jobs_total"),
        metric_sum(&finish.metrics, "hotpath_dispatched_jobs_total"),
    ) {
        (b, Some(a)) if n_actions > 0 => Some(per_action(a - b.unwrap_or(0.0))),
        _ => None,
    };
    jobs.started = events.get("job.started").copied().unwrap_or(0);
    jobs.started_per_action = per_action(jobs.started as f64);
    jobs.completed = events.get("job.completed").copied().unwrap_or(0);
    jobs.failed = events.get("job.failed").copied().unwrap_or(0);
    jobs.dead_letters_seen = events_in
        .iter()
        .filter(|e| e.kind == "job.failed" && e.dead)
        .count() as u64;

    // LLM and the admin route.
    let llm = match (&start.slow_path, &finish.slow_path) {
        (Some(b), Some(a)) => {
            let d = delta(b, a);
            jobs.dead_letters_total = jobs_in_state(a, "dead");
            jobs.admin_delta = d.get("jobs").cloned();
            let num = |p: &str| d.pointer(p).and_then(Value::as_f64).unwrap_or(0.0);
            let (calls, prompt, completion) = (
                num("/llm/calls"),
                num("/llm/prompt_tokens"),
                num("/llm/completion_tokens"),
            );
            Some(Llm {
                calls,
                prompt_tokens: prompt,
                completion_tokens: completion,
                calls_per_action: per_action(calls),
                tokens_per_action: per_action(prompt + completion),
                by_kind: d
                    .pointer("/llm/by_kind")
                    .and_then(Value::as_object)
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default(),
            })
        }
        _ => {
            notes.push(
                "no `GET /v1/admin/slow-path` on this engine: LLM calls and tokens unknown; jobs from the answers' `dispatched` and /metrics, dead letters from the streams' `job.failed`".into(),
            );
            None
        }
    };

    // Queue.
    let samples = shared.queue;
    let near = |t: f64| {
        samples
            .iter()
            .min_by(|a, b| (a.t - t).abs().total_cmp(&(b.t - t).abs()))
            .map(|s| s.depth)
    };
    let tail: Vec<&QueueSample> = samples
        .iter()
        .filter(|s| s.t >= (end - 180.0).max(warmup) && s.t <= end)
        .collect();
    let queue = Queue {
        source: if finish.slow_path.is_some() {
            "admin route, jobs pending".into()
        } else {
            "metrics hotpath_queue_depth".into()
        },
        at_warmup_end: near(warmup),
        at_end: near(end),
        max: samples.iter().map(|s| s.depth).reduce(f64::max),
        growth_per_minute_last_3min: slope(&tail).map(|s| s * 60.0),
        samples: samples.clone(),
    };

    // Windows over the whole run, the warm-up included.
    let width = config.window.as_secs_f64().max(1.0);
    let mut windows = Vec::new();
    let mut t = 0.0;
    while t < end - 1e-9 {
        let t_end = (t + width).min(end);
        let here: Vec<&ActionRecord> = shared
            .actions
            .iter()
            .filter(|a| a.t >= t && a.t < t_end)
            .collect();
        let mut ahead_share = BTreeMap::new();
        for piece in PIECES {
            let (mut n, mut ahead) = (0u64, 0u64);
            for p in here
                .iter()
                .flat_map(|a| &a.pieces)
                .filter(|p| p.piece == piece)
            {
                n += 1;
                ahead += u64::from(p.source != "fallback");
            }
            if n > 0 {
                ahead_share.insert(piece.to_owned(), ahead as f64 / n as f64);
            }
        }
        windows.push(Window {
            t_start: t,
            t_end,
            actions: here.len() as u64,
            ahead_share,
        });
        t = t_end;
    }

    Report {
        label: config.label.clone(),
        url: config.url.clone(),
        scenario: config.scenario.clone(),
        games: config.games,
        players: config.players,
        period_secs: config.period.as_secs_f64(),
        jitter: config.jitter,
        seed: config.seed,
        warmup_secs: warmup,
        seconds: end - warmup,
        actions,
        pieces,
        provenance_checked,
        mis_served,
        no_provenance,
        mis_served_examples,
        freshness,
        dialogue,
        jobs,
        llm,
        queue,
        windows,
        events,
        sse_errors: shared.sse_errors,
        notes,
    }
}

/// Least-squares slope of depth over time, per second.
fn slope(samples: &[&QueueSample]) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let n = samples.len() as f64;
    let mt = samples.iter().map(|s| s.t).sum::<f64>() / n;
    let md = samples.iter().map(|s| s.depth).sum::<f64>() / n;
    let num: f64 = samples.iter().map(|s| (s.t - mt) * (s.depth - md)).sum();
    let den: f64 = samples.iter().map(|s| (s.t - mt).powi(2)).sum();
    (den > 0.0).then(|| num / den)
}

// ---------------------------------------------------------------------------------------------
// The plot
// ---------------------------------------------------------------------------------------------

/// An SVG of the report: served-ahead share per piece per window (top) and queue depth (bottom)
/// over the whole run, the end of the warm-up marked.
pub fn plot(report: &Report, path: &std::path::Path) -> anyhow::Result<()> {
    use crate::plot::{PALETTE, Panel, panels};

    let end = report.warmup_secs + report.seconds;
    let title = if report.label.is_empty() {
        "play".to_owned()
    } else {
        format!("play: {}", report.label)
    };
    let x = "seconds since play began";
    let mut top = Panel::new(
        format!(
            "{title} — share served ahead (precomputed or cache), per {:.0} s",
            report
                .windows
                .first()
                .map(|w| w.t_end - w.t_start)
                .unwrap_or(10.0)
        ),
        x,
        "% served ahead",
        400,
    );
    top.y_range = Some((0.0, 100.0));
    top.legend = plotters::prelude::SeriesLabelPosition::LowerRight;
    for (piece, color) in PIECES.iter().zip(PALETTE) {
        let points: Vec<(f64, f64)> = report
            .windows
            .iter()
            .filter_map(|w| {
                Some((
                    (w.t_start + w.t_end) / 2.0,
                    100.0 * w.ahead_share.get(*piece)?,
                ))
            })
            .collect();
        top = top.series(*piece, color, points);
    }
    top.markers
        .push((report.warmup_secs, "end of warm-up".to_owned()));
    let mut bottom = Panel::new(
        format!("queue depth ({})", report.queue.source),
        x,
        "jobs waiting",
        320,
    )
    .series(
        "",
        PALETTE[1],
        report
            .queue
            .samples
            .iter()
            .map(|s| (s.t, s.depth))
            .collect(),
    );
    bottom.markers.push((report.warmup_secs, String::new()));
    panels(path, 1000, end, &[top, bottom])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenes() -> Vec<Scene> {
        let state = json!({
            "scenes": [
                {"id": "docks", "name": "The Docks", "conflicts": ["strike"],
                 "stakeholders": [{"id": "mara", "name": "Mara Quill"}, {"id": "brann", "name": "Brann Holt"}]},
                {"id": "office", "name": "The Office", "conflicts": [],
                 "stakeholders": [{"id": "voss", "name": "Harbormaster Voss"}]},
            ],
            "conflicts": [{"id": "strike", "name": "The Dock Strike"}],
        });
        scenes_of(&state).unwrap()
    }

    #[test]
    fn a_seed_replays_the_same_play_and_covers_every_kind_and_scene() {
        let config = PlayConfig::default();
        let run = |seed: u64| {
            let config = PlayConfig {
                seed,
                ..config.clone()
            };
            let mut s = PlayerScript::new(&config, scenes(), 1, 0);
            (0..200).map(|_| s.next_action()).collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7));
        assert_ne!(a, run(8));
        for (kind, _) in KINDS {
            assert!(a.iter().any(|x| x.kind == kind), "{kind}");
        }
        assert!(a.iter().any(|x| x.scene_id == "docks"));
        assert!(a.iter().any(|x| x.scene_id == "office"));
        assert!(a.iter().any(|x| x.target.is_some()));
        assert!(a.iter().all(|x| x.target.is_none() || x.kind == "say"));
        assert!(
            a.iter().all(|x| !x.text.contains('{')),
            "placeholders filled"
        );
        for x in &a {
            let d = x.then_wait.as_secs_f64();
            assert!((3.5..=6.5).contains(&d), "{d}");
        }
        // A target is a stakeholder of the scene acted in.
        for x in a.iter().filter(|x| x.target.is_some()) {
            let scene = scenes().into_iter().find(|s| s.id == x.scene_id).unwrap();
            assert!(
                scene
                    .stakeholders
                    .iter()
                    .any(|p| Some(&p.id) == x.target.as_ref())
            );
        }
    }

    #[test]
    fn pieces_read_provenance_when_present() {
        let answer = json!({
            "reactions": [
                {"stakeholder_id": "mara", "source": "precomputed", "age_ms": 1200,
                 "provenance": {"made_for": "ctx-a"}, "served_for": "ctx-a"},
                {"stakeholder_id": "brann", "source": "precomputed",
                 "provenance": {"made_for": "ctx-b"}, "served_for": "ctx-a"},
                {"stakeholder_id": "iris", "source": "fallback"},
            ],
            "narration": {"source": "cache", "age_ms": 10},
            "social": {"source": "fallback"},
            "canon": {"source": "fallback"},
        });
        let p = pieces_of(&answer);
        let prov: Vec<Provenance> = p.iter().map(|p| p.provenance).collect();
        assert_eq!(
            prov,
            [
                Provenance::Matches,
                Provenance::MisServed,
                Provenance::NotApplicable,
                Provenance::Absent,
                Provenance::NotApplicable,
                Provenance::NotApplicable
            ]
        );
        assert_eq!(p[0].age_ms, Some(1200.0));
    }

    #[test]
    fn metrics_and_deltas() {
        let m = parse_metrics(
            "# TYPE x counter\nhotpath_dispatched_jobs_total{kind=\"a\"} 3\nhotpath_dispatched_jobs_total{kind=\"b\"} 4\nhotpath_queue_depth 7\n",
        );
        assert_eq!(metric_sum(&m, "hotpath_dispatched_jobs_total"), Some(7.0));
        assert_eq!(metric_sum(&m, "hotpath_queue_depth"), Some(7.0));
        assert_eq!(metric_sum(&m, "nope"), None);
        let d = delta(
            &json!({"llm": {"calls": 2, "by_kind": {"x": {"calls": 1}}}}),
            &json!({"llm": {"calls": 5, "by_kind": {"x": {"calls": 3}, "y": {"calls": 1}}}}),
        );
        assert_eq!(
            d,
            json!({"llm": {"calls": 3.0, "by_kind": {"x": {"calls": 2.0}, "y": {"calls": 1.0}}}})
        );
    }

    #[test]
    fn jobs_by_state_from_the_admin_route() {
        let v = json!({"jobs": {"by_state": {"pending": 3, "dead": 1}}});
        assert_eq!(jobs_in_state(&v, "pending"), Some(3.0));
        assert_eq!(jobs_in_state(&v, "running"), Some(0.0));
        assert_eq!(
            jobs_in_state(&json!({"jobs": {"dead": 2}}), "dead"),
            Some(2.0)
        );
        assert_eq!(jobs_in_state(&json!({}), "dead"), None);
    }

    #[test]
    fn slope_per_second() {
        let s: Vec<QueueSample> = (0..10)
            .map(|i| QueueSample {
                t: i as f64,
                depth: 2.0 * i as f64 + 1.0,
            })
            .collect();
        let r: Vec<&QueueSample> = s.iter().collect();
        assert!((slope(&r).unwrap() - 2.0).abs() < 1e-9);
    }
}
