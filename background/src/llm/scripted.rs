//! The `scripted` provider: offline, free and deterministic. Its answer is a pure function of
//! the seed, the request and the attempt number: it reads the request's facts (the stakeholder,
//! the scene, the conflict and phase, who else exists, the recent events, the conversation, the
//! canon) and writes in-character content with [`voice`], from choices drawn from a ChaCha
//! generator seeded by them. Every noun comes from the facts, so it reads right in any
//! scenario. An answer longer than the request's `max_tokens` (four characters a token) is cut
//! there and reported truncated, as a real model's would be. Latency, an error rate and a
//! malformed-output rate are configurable, so tests, demos and benches can exercise the slow
//! path's retries and dead letters without a model.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use hotpath_cache::guard::assert_off_hot_path;
use hotpath_cache::jobs::JobKind;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::config::LlmConfig;
use super::voice::{self, Setting, Tone, Who, below, name_of, pick};
use super::{Completion, Delta, LlmError, LlmRequest, Provider, TextStream, Usage};

#[derive(Debug, Clone, PartialEq)]
pub struct ScriptedConfig {
    pub seed: u64,
    /// How long each call takes (a stream spreads it over its chunks).
    pub latency: Duration,
    /// Each call's latency is `latency` ± up to this, drawn from the seed and the request.
    pub latency_jitter: Duration,
    /// Share of calls that fail like an overloaded provider (a 503).
    pub error_rate: f64,
    /// Share of answers that are not what was asked for (broken JSON, prose, empty fields).
    pub malformed_rate: f64,
}

impl Default for ScriptedConfig {
    fn default() -> Self {
        ScriptedConfig {
            seed: 0,
            latency: Duration::ZERO,
            latency_jitter: Duration::ZERO,
            error_rate: 0.0,
            malformed_rate: 0.0,
        }
    }
}

impl From<&LlmConfig> for ScriptedConfig {
    fn from(c: &LlmConfig) -> Self {
        ScriptedConfig {
            seed: c.seed,
            latency: c.latency,
            latency_jitter: c.latency_jitter,
            error_rate: c.error_rate,
            malformed_rate: c.malformed_rate,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ScriptedProvider {
    config: ScriptedConfig,
}

impl ScriptedProvider {
    pub fn new(config: ScriptedConfig) -> ScriptedProvider {
        ScriptedProvider { config }
    }

    fn rng(&self, request: &LlmRequest) -> ChaCha8Rng {
        let mut h = Sha256::new();
        h.update(self.config.seed.to_le_bytes());
        h.update(request.canonical_hash().as_bytes());
        h.update(request.attempt.to_le_bytes());
        h.update(request.facts.to_string().as_bytes());
        let digest = h.finalize();
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&digest);
        ChaCha8Rng::from_seed(seed)
    }

    /// How long `request` takes: `latency` ± up to `latency_jitter`, drawn from its own stream
    /// of the request's generator (the answer's draws are unchanged).
    fn latency(&self, request: &LlmRequest) -> Duration {
        let (base, jitter) = (self.config.latency, self.config.latency_jitter);
        if jitter.is_zero() {
            return base;
        }
        let mut rng = self.rng(request);
        rng.set_stream(1);
        let shift: f64 = rng.random_range(-1.0..=1.0);
        Duration::from_secs_f64((base.as_secs_f64() + shift * jitter.as_secs_f64()).max(0.0))
    }

    /// The answer, or the simulated failure, for `request`.
    fn answer(&self, request: &LlmRequest) -> Result<String, LlmError> {
        let mut rng = self.rng(request);
        if rng.random_bool(self.config.error_rate.clamp(0.0, 1.0)) {
            return Err(LlmError::Server {
                status: 503,
                message: "scripted provider: simulated overload".into(),
            });
        }
        if rng.random_bool(self.config.malformed_rate.clamp(0.0, 1.0)) {
            return Ok(malformed(&mut rng, request));
        }
        Ok(write(&mut rng, request))
    }
}

fn s<'a>(facts: &'a Value, pointer: &str) -> Option<&'a str> {
    facts
        .pointer(pointer)
        .and_then(Value::as_str)
        .filter(|v| !v.trim().is_empty())
}

fn ids(facts: &Value, pointer: &str) -> Vec<String> {
    facts
        .pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.get("id").and_then(Value::as_str).or(v.as_str()))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Everyone the facts describe, as [`Who`]s (from `stakeholders`, completed by `present` and
/// `stakeholder`, which carry more).
fn people(facts: &Value) -> Vec<Who> {
    let mut all: Vec<Who> = Vec::new();
    for pointer in ["/stakeholders", "/present"] {
        for v in facts
            .pointer(pointer)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !v.is_object() {
                continue;
            }
            let w = Who::from_facts(v, facts);
            match all.iter_mut().find(|x| x.id == w.id) {
                Some(x) if w.traits.len() + w.bonds.len() > x.traits.len() + x.bonds.len() => {
                    *x = w
                }
                Some(_) => {}
                None => all.push(w),
            }
        }
    }
    if let Some(v) = facts.get("stakeholder") {
        let w = Who::from_facts(v, facts);
        match all.iter_mut().find(|x| x.id == w.id) {
            Some(x) => *x = w,
            None => all.push(w),
        }
    }
    all
}

fn who(facts: &Value) -> Who {
    facts
        .get("stakeholder")
        .map(|v| Who::from_facts(v, facts))
        .unwrap_or_else(|| Who {
            name: "Someone".into(),
            ..Who::default()
        })
}

/// The names of the stakeholders whose ids are under `pointer`.
fn names_at(facts: &Value, pointer: &str) -> Vec<String> {
    ids(facts, pointer)
        .iter()
        .filter_map(|id| name_of(facts, id))
        .collect()
}

/// "A", "A and B", "A, B and C".
fn and_list(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

const MOODS: &[&str] = &[
    "tense", "weary", "restless", "brittle", "bitter", "uneasy", "grim",
];

/// Plausible content of the shape `request.kind` asks for, written from its facts only.
fn write(rng: &mut ChaCha8Rng, request: &LlmRequest) -> String {
    let f = &request.facts;
    match request.kind {
        JobKind::PrepareSceneReactions => voice::scene_reactions(rng, f).to_string(),
        JobKind::NarratePhaseTransition => {
            let conflict = s(f, "/conflict/name").unwrap_or("The trouble");
            let phase = s(f, "/phase/name").unwrap_or("a new turn");
            let names = names_at(f, "/involved");
            let mood = pick(rng, MOODS);
            let c = voice::mid(conflict);
            let settled = f.get("resolved").and_then(Value::as_bool) == Some(true);
            let mut parts = vec![match below(rng, 3) {
                _ if settled => match below(rng, 3) {
                    0 => format!("{conflict} is settled at last, and a {mood} quiet follows."),
                    1 => format!(
                        "It is over: {c} has run its course, and what is left feels {mood}."
                    ),
                    _ => format!(
                        "Nobody says {conflict} aloud any more; the air is {mood} with what it cost."
                    ),
                },
                0 => format!("{conflict} enters {phase}, and the mood turns {mood}."),
                1 => format!("With {phase}, {c} turns {mood}."),
                _ => format!(
                    "Nobody calls it {phase} aloud, but {c} has changed: everything feels {mood}."
                ),
            }];
            if let Some(beat) = f
                .pointer("/phase/beats")
                .and_then(Value::as_array)
                .and_then(|b| {
                    (!b.is_empty())
                        .then(|| b[below(rng, b.len())].as_str())
                        .flatten()
                })
            {
                parts.push(beat.to_owned());
            }
            if names.len() >= 2 {
                let a = &names[below(rng, names.len())];
                let others: Vec<String> = names.iter().filter(|n| *n != a).cloned().collect();
                parts.push(format!(
                    "{a} {} {}.",
                    pick(
                        rng,
                        &[
                            "will not meet the eyes of",
                            "keeps a careful distance from",
                            "has words, low and hard, with",
                            "watches"
                        ]
                    ),
                    and_list(&others)
                ));
            }
            json!({ "text": parts.join(" ") }).to_string()
        }
        JobKind::GenerateBeatDescription => voice::phase_beats(rng, f).to_string(),
        JobKind::GenerateSocialBundle => {
            let all = people(f);
            let mut gossip = Vec::new();
            let mut seen = std::collections::BTreeSet::new();
            let mut used = std::collections::BTreeSet::new();
            let conflict = s(f, "/conflicts/0/name").map(voice::mid);
            if all.len() >= 2 {
                for _ in 0..12 {
                    if gossip.len() >= 4 {
                        break;
                    }
                    let a = below(rng, all.len());
                    let b = (a + 1 + below(rng, all.len() - 1)) % all.len();
                    let about = &all[b];
                    let options = [
                        about
                            .goals
                            .first()
                            .map(|g| format!("They say {} means to {g}.", about.name)),
                        about.ally().map(|x| {
                            format!(
                                "{} and {} are thick as anything these days.",
                                about.name, x.0
                            )
                        }),
                        about.rival().map(|x| {
                            format!(
                                "Keep {} away from {}; there's bad blood there.",
                                about.name, x.0
                            )
                        }),
                        about
                            .traits
                            .first()
                            .map(|t| format!("{} has been more {t} than ever lately.", about.name)),
                        conflict.as_ref().map(|c| {
                            format!(
                                "Whatever happens with {c}, {} comes out ahead. Watch.",
                                about.name
                            )
                        }),
                        (!about.role.is_empty())
                            .then(|| format!("Funny sort of {}, {}.", about.role, about.name)),
                        Some(format!("Nobody knows what to make of {}.", about.name)),
                    ];
                    // Each kind of rumour once per bundle while others fit.
                    let fitting: Vec<(usize, String)> = options
                        .into_iter()
                        .enumerate()
                        .filter_map(|(i, o)| Some((i, o?)))
                        .collect();
                    let fresh: Vec<&(usize, String)> =
                        fitting.iter().filter(|(i, _)| !used.contains(i)).collect();
                    let (i, line) = if fresh.is_empty() {
                        pick(rng, &fitting).clone()
                    } else {
                        (*pick(rng, &fresh)).clone()
                    };
                    used.insert(i);
                    if seen.insert(line.clone()) {
                        gossip.push(json!({"from": all[a].id, "about": about.id, "line": line}));
                    }
                }
            }
            let reputation: serde_json::Map<String, Value> = all
                .iter()
                .map(|w| {
                    (
                        w.id.clone(),
                        json!((w.standing + rng.random_range(-10..=10)).clamp(-100, 100)),
                    )
                })
                .collect();
            json!({ "gossip": gossip, "reputation": reputation }).to_string()
        }
        JobKind::CanonizeConflict => {
            let conflict = s(f, "/conflict/name").unwrap_or("The trouble");
            let bare = voice::mid(conflict);
            let phase = s(f, "/phase/name").unwrap_or("its last phase");
            let names = names_at(f, "/involved");
            let title = match below(rng, 4) {
                0 => format!("The End of {bare}"),
                1 => format!("{conflict}, Remembered"),
                2 => format!("After {bare}"),
                _ => format!("The Last Days of {bare}"),
            };
            let mut summary = format!(
                "{conflict} came to its end during {phase}, at intensity {}.",
                f.get("intensity").and_then(Value::as_u64).unwrap_or(0)
            );
            if let Some(first) = names.first() {
                summary.push_str(&format!(
                    " {} {} at the heart of it, and {first} {}.",
                    and_list(&names),
                    if names.len() > 1 { "were" } else { "was" },
                    pick(
                        rng,
                        &[
                            "came out of it changed",
                            "never spoke of it again",
                            "claimed the victory",
                            "paid the most for it"
                        ]
                    )
                ));
            }
            summary.push_str(&format!(
                " It would be remembered {}.",
                pick(
                    rng,
                    &[
                        "for a generation",
                        "with a shrug",
                        "with shame",
                        "differently in every telling"
                    ]
                )
            ));
            json!({ "title": title, "summary": summary }).to_string()
        }
        JobKind::GenerateCanonReferences => {
            let all = people(f);
            let canon: Vec<(String, String)> = f
                .pointer("/canon")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| {
                    Some((
                        c.get("id")?.as_str()?.to_owned(),
                        c.get("title")?.as_str()?.to_owned(),
                    ))
                })
                .collect();
            let mut items = Vec::new();
            for (id, title) in &canon {
                let mut speakers: Vec<&Who> = all.iter().collect();
                voice::shuffle(rng, &mut speakers);
                for w in speakers.into_iter().take(2) {
                    let line = match (w.tone(), w.traits.first()) {
                        (Tone::Fierce, _) => {
                            format!("Don't talk to me about {title}. I was there.")
                        }
                        (Tone::Careful, _) => format!("We learned something from {title}, I hope."),
                        (Tone::Sly, _) => format!("Some of us did well out of {title}, you know."),
                        (Tone::Warm, _) => {
                            format!("Do you remember {title}? We got through it together.")
                        }
                        (Tone::Plain, Some(t)) => {
                            format!("Call me {t}, but I think of {title} often.")
                        }
                        (Tone::Plain, None) => format!("{title}. Nobody here has forgotten."),
                    };
                    items.push(json!({"canon_id": id, "stakeholder_id": w.id, "line": line}));
                }
            }
            json!({ "items": items }).to_string()
        }
        JobKind::StreamDialogueReply => {
            let w = who(f);
            let setting = Setting::from_facts(f, &w);
            let earlier: Vec<(bool, String)> = f
                .pointer("/conversation")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|l| {
                    Some((
                        l.get("player")?.as_bool()?,
                        l.get("text")?.as_str()?.to_owned(),
                    ))
                })
                .collect();
            voice::reply(
                rng,
                &w,
                &setting,
                s(f, "/player"),
                s(f, "/topic").unwrap_or("..."),
                &earlier,
            )
        }
        JobKind::CleanupExpiredActions => "{}".into(),
    }
}

/// Something a careless model might send back instead.
fn malformed(rng: &mut ChaCha8Rng, request: &LlmRequest) -> String {
    if request.kind == JobKind::StreamDialogueReply {
        // A dialogue reply is plain text; the broken answer is an empty one.
        return String::new();
    }
    match rng.random_range(0..3) {
        0 => {
            let good = write(rng, request);
            good[..good.len() / 2].to_owned()
        }
        1 => "I'm sorry, I can't help with that request.".into(),
        _ => "{\"note\": \"the required fields are missing\"}".into(),
    }
}

#[async_trait]
impl Provider for ScriptedProvider {
    fn model(&self) -> &str {
        "scripted"
    }

    async fn complete(&self, request: &LlmRequest) -> Result<Completion, LlmError> {
        assert_off_hot_path()?;
        let latency = self.latency(request);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut text = self.answer(request)?;
        let limit = (request.max_tokens as usize).saturating_mul(4);
        let truncated = request.max_tokens > 0 && text.len() > limit;
        if truncated {
            text.truncate(text.floor_char_boundary(limit));
        }
        Ok(Completion {
            usage: Usage::estimate(request.system.len() + request.prompt.len(), text.len()),
            text,
            model: request.model.clone().unwrap_or_else(|| "scripted".into()),
            truncated,
        })
    }

    async fn stream(&self, request: &LlmRequest) -> Result<TextStream, LlmError> {
        assert_off_hot_path()?;
        let text = self.answer(request)?;
        // Word by word, keeping the spaces, so the chunks concatenate back to the text.
        let mut chunks: Vec<String> = Vec::new();
        for word in text.split_inclusive(' ') {
            chunks.push(word.to_owned());
        }
        let pause = if chunks.is_empty() {
            Duration::ZERO
        } else {
            self.latency(request) / chunks.len() as u32
        };
        // At the end, the usage, as a real provider reports it (here the same estimate as
        // `complete` gives).
        let usage = Usage::estimate(request.system.len() + request.prompt.len(), text.len());
        Ok(futures::stream::iter(chunks)
            .then(move |chunk| async move {
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                Ok(Delta::Text(chunk))
            })
            .chain(futures::stream::once(
                async move { Ok(Delta::Usage(usage)) },
            ))
            .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompts::MaxTokens as MaxTokensTable;
    use futures::TryStreamExt;

    fn request(kind: JobKind, prompt: &str) -> LlmRequest {
        LlmRequest {
            kind,
            game_id: None,
            player_id: None,
            system: "sys".into(),
            prompt: prompt.into(),
            max_tokens: 200,
            json: kind != JobKind::StreamDialogueReply,
            schema: None,
            model: None,
            attempt: 1,
            facts: json!({
                "stakeholder": {"id": "mara", "name": "Mara", "role": "dock boss"},
                "stakeholders": [{"id": "mara"}, {"id": "brann"}, {"id": "iris"}],
                "canon": [{"id": "00000000-0000-0000-0000-000000000001"}],
            }),
        }
    }

    fn provider(error_rate: f64, malformed_rate: f64) -> ScriptedProvider {
        ScriptedProvider::new(ScriptedConfig {
            seed: 7,
            error_rate,
            malformed_rate,
            ..ScriptedConfig::default()
        })
    }

    #[test]
    fn latency_jitter_stays_in_bounds_and_replays() {
        let p = ScriptedProvider::new(ScriptedConfig {
            latency: Duration::from_millis(2000),
            latency_jitter: Duration::from_millis(500),
            ..ScriptedConfig::default()
        });
        let delays: Vec<Duration> = (0..20)
            .map(|i| p.latency(&request(JobKind::PrepareSceneReactions, &i.to_string())))
            .collect();
        for d in &delays {
            assert!(*d >= Duration::from_millis(1500) && *d <= Duration::from_millis(2500));
        }
        assert!(delays.iter().any(|d| *d != delays[0]), "{delays:?}");
        let again = p.latency(&request(JobKind::PrepareSceneReactions, "0"));
        assert_eq!(again, delays[0]);
    }

    #[tokio::test]
    async fn same_seed_and_request_same_answer() {
        let p = provider(0.0, 0.0);
        for kind in JobKind::ALL {
            let a = p.complete(&request(kind, "x")).await.unwrap();
            let b = p.complete(&request(kind, "x")).await.unwrap();
            assert_eq!(a, b, "{kind:?}");
        }
        let other_seed = ScriptedProvider::new(ScriptedConfig {
            seed: 8,
            ..ScriptedConfig::default()
        });
        let answers: std::collections::BTreeSet<String> = (0..20)
            .map(|i| {
                let mut r = request(JobKind::NarratePhaseTransition, "x");
                r.attempt = i;
                futures::executor::block_on(other_seed.complete(&r))
                    .unwrap()
                    .text
            })
            .collect();
        assert!(answers.len() > 1, "draws vary with the request");
    }

    #[tokio::test]
    async fn well_formed_answers_are_json_of_the_asked_shape() {
        let p = provider(0.0, 0.0);
        let v: Value = serde_json::from_str(
            &p.complete(&request(JobKind::NarratePhaseTransition, "x"))
                .await
                .unwrap()
                .text,
        )
        .unwrap();
        assert!(v["text"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
        let social: Value = serde_json::from_str(
            &p.complete(&request(JobKind::GenerateSocialBundle, "x"))
                .await
                .unwrap()
                .text,
        )
        .unwrap();
        let gossip = social["gossip"].as_array().unwrap();
        assert!((1..=12).contains(&gossip.len()), "{social}");
        for g in gossip {
            assert_ne!(g["from"], g["about"], "{social}");
        }
    }

    #[tokio::test]
    async fn error_and_malformed_rates() {
        let all_errors = provider(1.0, 0.0);
        assert!(matches!(
            all_errors
                .complete(&request(JobKind::NarratePhaseTransition, "x"))
                .await,
            Err(LlmError::Server { status: 503, .. })
        ));
        let all_malformed = provider(0.0, 1.0);
        for i in 0..10 {
            let mut r = request(JobKind::NarratePhaseTransition, "x");
            r.attempt = i;
            let text = all_malformed.complete(&r).await.unwrap().text;
            let parsed: Option<Value> = serde_json::from_str(&text).ok();
            assert!(
                parsed.is_none_or(|v| v.get("text").is_none()),
                "malformed answer looked valid: {text}"
            );
        }
        // About half fail at 0.5, over many requests.
        let half = provider(0.5, 0.0);
        let mut failures = 0;
        for i in 0..200 {
            let mut r = request(JobKind::NarratePhaseTransition, "x");
            r.attempt = i;
            failures += half.complete(&r).await.is_err() as u32;
        }
        assert!((60..=140).contains(&failures), "{failures} of 200");
    }

    #[tokio::test]
    async fn stream_concatenates_to_the_completion() {
        let p = provider(0.0, 0.0);
        let r = request(JobKind::StreamDialogueReply, "what about the strike");
        let whole = p.complete(&r).await.unwrap().text;
        let deltas: Vec<Delta> = p.stream(&r).await.unwrap().try_collect().await.unwrap();
        let chunks: Vec<&str> = deltas.iter().filter_map(Delta::text).collect();
        assert!(chunks.len() > 3);
        assert_eq!(chunks.concat(), whole);
        assert!(
            matches!(deltas.last(), Some(Delta::Usage(u)) if u.output_tokens > 0),
            "the usage comes last: {:?}",
            deltas.last()
        );
    }

    #[tokio::test]
    async fn refuses_on_the_hot_path() {
        let p = provider(0.0, 0.0);
        let r = request(JobKind::NarratePhaseTransition, "x");
        let res = hotpath_cache::guard::hot_path_scope("test", p.complete(&r)).await;
        assert!(matches!(res, Err(LlmError::OnHotPath(_))));
    }

    // ---- reads like a game -------------------------------------------------------------

    use crate::jobs::context::testing::*;
    use crate::llm::voice::{self, Deed, Setting, Who};
    use hotpath_cache::scenario::Scenario;
    use std::collections::BTreeSet;

    /// Everything the scripted provider writes for `played`, over a few seeds and attempts.
    async fn everything(played: &Played) -> Vec<(JobKind, String)> {
        let mut out = Vec::new();
        for seed in 0..4 {
            let p = ScriptedProvider::new(ScriptedConfig {
                seed,
                ..ScriptedConfig::default()
            });
            for kind in JobKind::ALL {
                if kind == JobKind::CleanupExpiredActions {
                    continue;
                }
                for attempt in 1..=3 {
                    let mut r = request(kind, "x");
                    r.facts = facts_for(kind, played);
                    r.attempt = attempt;
                    r.max_tokens = 2000;
                    out.push((kind, p.complete(&r).await.unwrap().text));
                }
            }
        }
        out
    }

    fn words(text: &str) -> BTreeSet<String> {
        text.split(|c: char| !(c.is_alphanumeric() || c == '-'))
            .filter(|w| w.chars().count() >= 4)
            .map(str::to_lowercase)
            .collect()
    }

    /// The nouns a scenario brings: its scene, conflict and phase names, its stakeholders'
    /// names, roles and traits.
    fn nouns(s: &Scenario) -> BTreeSet<String> {
        let mut text = String::new();
        for scene in &s.scenes {
            text += &format!(" {}", scene.name);
        }
        for c in &s.conflicts {
            text += &format!(" {}", c.name);
            for p in &c.phases {
                text += &format!(" {}", p.name);
            }
        }
        for w in &s.stakeholders {
            text += &format!(" {} {} {}", w.name, w.role, w.traits.join(" "));
        }
        words(&text)
    }

    #[tokio::test]
    async fn no_world_leaks_into_another() {
        let (harbor, sky) = (played(harbor()), played(observatory()));
        let (harbor_nouns, sky_nouns) = (nouns(&harbor.0.scenario), nouns(&sky.0.scenario));
        // What only the harbour has, and words any sea-town phrase bank would use.
        let mut harbor_only: BTreeSet<String> =
            harbor_nouns.difference(&sky_nouns).cloned().collect();
        for w in [
            "harbour", "harbor", "dock", "docks", "tide", "quay", "tavern", "ledger", "guild",
            "square", "salt", "ship", "ships", "sailor", "crew", "crews",
        ] {
            harbor_only.insert(w.to_owned());
        }
        let sky_only: BTreeSet<String> = sky_nouns.difference(&harbor_nouns).cloned().collect();
        let sky_text = everything(&sky).await;
        let harbor_text = everything(&harbor).await;
        for (kind, text) in &sky_text {
            let leaked: Vec<_> = words(text).intersection(&harbor_only).cloned().collect();
            assert!(
                leaked.is_empty(),
                "{kind:?} writes {leaked:?} in the observatory: {text}"
            );
        }
        for (kind, text) in &harbor_text {
            let leaked: Vec<_> = words(text).intersection(&sky_only).cloned().collect();
            assert!(
                leaked.is_empty(),
                "{kind:?} writes {leaked:?} at the harbour: {text}"
            );
        }
        // And each world's own nouns do show up.
        let all: String = sky_text
            .iter()
            .map(|(_, t)| t.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        for noun in ["Odile", "Brass", "Telescope", "Fenn"] {
            assert!(all.contains(noun), "the observatory never mentions {noun}");
        }
    }

    #[test]
    fn lines_written_together_differ_and_are_in_character() {
        for scenario in [harbor(), observatory()] {
            let world = played(scenario).0;
            let scene = &world.scenario.scenes[0];
            for id in &scene.stakeholders {
                let card = world.stakeholder_card(world.scenario.stakeholder(id).unwrap());
                let mut facts =
                    serde_json::Value::Object(world.stakeholder_facts(
                        world.scenario.stakeholder(id).unwrap(),
                        Some(&scene.id),
                    ));
                facts["stakeholder"] = card.clone();
                let who = Who::from_facts(&card, &facts);
                let setting = Setting::from_facts(&facts, &who);
                for kind in hotpath_cache::model::ActionKind::ALL {
                    let deed = Deed {
                        kind: kind.as_str().into(),
                        actor: Some("Ada".into()),
                        said: Some("We should settle this tonight, you and I".into()),
                    };
                    let mut rng = ChaCha8Rng::seed_from_u64(3);
                    let lines = voice::reactions(&mut rng, &who, &deed, &setting, 6);
                    assert_eq!(lines.len(), 6, "{kind:?}");
                    let distinct: BTreeSet<&str> = lines.iter().map(|r| r.line.as_str()).collect();
                    assert_eq!(distinct.len(), 6, "{kind:?}: {lines:#?}");
                    for r in &lines {
                        assert!(r.behaviour.starts_with(&who.name), "{r:?}");
                        let line = r.line.to_lowercase();
                        assert!(
                            voice::kind_words(kind.as_str())
                                .iter()
                                .any(|w| line.contains(w))
                                || line.contains("we should settle this tonight"),
                            "{kind:?} is not answered: {}",
                            r.line
                        );
                        assert!(
                            ["support", "oppose", "deflect", "probe", "observe"]
                                .contains(&r.intent.as_str()),
                            "{r:?}"
                        );
                    }
                    // The person shows: a trait, a bond, a goal, the role or the name, in the
                    // lines written together.
                    let mut own: Vec<String> = who.traits.clone();
                    own.extend(who.bonds.iter().map(|b| b.0.clone()));
                    own.extend(who.goals.iter().cloned());
                    own.push(who.role.clone());
                    let all = lines
                        .iter()
                        .map(|r| r.line.as_str())
                        .collect::<Vec<_>>()
                        .join(" ");
                    assert!(
                        own.iter()
                            .any(|o| !o.is_empty() && all.contains(o.as_str())),
                        "{} never sounds like themselves: {all}",
                        who.name
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn prepared_reactions_answer_each_kind_and_vary_across_requests() {
        let played = played(harbor());
        let facts = facts_for(JobKind::PrepareSceneReactions, &played);
        let names: std::collections::BTreeMap<&str, &str> = played
            .0
            .scenario
            .stakeholders
            .iter()
            .map(|s| (s.id.as_str(), s.name.as_str()))
            .collect();
        let mut lines = Vec::new();
        for seed in 0..20 {
            let p = ScriptedProvider::new(ScriptedConfig {
                seed,
                ..ScriptedConfig::default()
            });
            let mut r = request(JobKind::PrepareSceneReactions, "x");
            r.facts = facts.clone();
            r.max_tokens = MaxTokensTable::default().of(r.kind, &r.facts);
            let c = p.complete(&r).await.unwrap();
            assert!(!c.truncated, "fits its budget");
            let v: Value = serde_json::from_str(&c.text).unwrap();
            let reactions = v["reactions"].as_array().unwrap();
            // Three of each of the nine pairs asked for, all different within a pair.
            assert_eq!(reactions.len(), 27, "{v}");
            for w in facts["wanted"].as_array().unwrap() {
                let (id, kind) = (
                    w["stakeholder_id"].as_str().unwrap(),
                    w["action_kind"].as_str().unwrap(),
                );
                let mine: Vec<&Value> = reactions
                    .iter()
                    .filter(|r| r["stakeholder_id"] == id && r["action_kind"] == kind)
                    .collect();
                let distinct: BTreeSet<&str> =
                    mine.iter().map(|r| r["line"].as_str().unwrap()).collect();
                assert_eq!(distinct.len(), 3, "{id} to {kind}: {mine:#?}");
                for r in mine {
                    let line = r["line"].as_str().unwrap().to_lowercase();
                    assert!(
                        voice::kind_words(kind).iter().any(|w| line.contains(w)),
                        "{id} does not answer `{kind}`: {line}"
                    );
                    assert!(
                        r["behaviour"].as_str().unwrap().starts_with(names[id]),
                        "{r}"
                    );
                    // Prepared for any player: none is named.
                    assert!(!line.contains("ada"), "{line}");
                }
            }
            lines.extend(
                reactions
                    .iter()
                    .filter(|r| r["stakeholder_id"] == "mara" && r["action_kind"] == "threaten")
                    .map(|r| r["line"].as_str().unwrap().to_owned()),
            );
        }
        let distinct: BTreeSet<&String> = lines.iter().collect();
        assert!(
            distinct.len() * 4 >= lines.len() * 3,
            "only {} distinct of {}: {lines:#?}",
            distinct.len(),
            lines.len()
        );
        // No stock phrase: no sentence in more than a quarter of the lines.
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for l in &lines {
            for sentence in l.split_inclusive(['.', '?', '!']) {
                *counts.entry(sentence.trim().to_owned()).or_default() += 1;
            }
        }
        let (worst, n) = counts.iter().max_by_key(|(_, n)| **n).unwrap();
        assert!(
            *n * 4 <= lines.len(),
            "`{worst}` in {n} of {} lines",
            lines.len()
        );
    }

    #[tokio::test]
    async fn dialogue_replies_carry_the_conversation_on() {
        let played = played(observatory());
        let p = provider(0.0, 0.0);
        let mut r = request(JobKind::StreamDialogueReply, "x");
        r.facts = facts_for(JobKind::StreamDialogueReply, &played);
        let reply = p.complete(&r).await.unwrap().text;
        assert!(reply.contains("Where were you the night"), "{reply}");
        r.facts["conversation"] = json!([]);
        let fresh = p.complete(&r).await.unwrap().text;
        assert!(!fresh.contains("Where were you"), "{fresh}");
    }

    #[tokio::test]
    async fn an_answer_over_max_tokens_is_cut_and_flagged() {
        let played = played(harbor());
        let p = provider(0.0, 0.0);
        let mut r = request(JobKind::GenerateSocialBundle, "x");
        r.facts = facts_for(JobKind::GenerateSocialBundle, &played);
        r.max_tokens = MaxTokensTable::default().of(r.kind, &r.facts);
        let whole = p.complete(&r).await.unwrap();
        assert!(!whole.truncated, "the default table fits: {}", whole.text);
        r.max_tokens = 20;
        let cut = p.complete(&r).await.unwrap();
        assert!(cut.truncated);
        assert_eq!(cut.text.len(), 80);
    }

    /// Prints a few lines of each world (`cargo test -p hotpath-background --lib
    /// scripted::tests::sample -- --nocapture`).
    #[tokio::test]
    async fn sample() {
        for scenario in [harbor(), observatory()] {
            let played = played(scenario);
            println!("== {}", played.0.scenario.title);
            for kind in [
                JobKind::PrepareSceneReactions,
                JobKind::GenerateBeatDescription,
                JobKind::StreamDialogueReply,
                JobKind::NarratePhaseTransition,
                JobKind::GenerateSocialBundle,
                JobKind::CanonizeConflict,
            ] {
                let mut r = request(kind, "x");
                r.facts = facts_for(kind, &played);
                println!(
                    "{kind:?}: {}",
                    provider(0.0, 0.0).complete(&r).await.unwrap().text
                );
            }
        }
    }
}
