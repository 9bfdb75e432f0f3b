//! The `scripted` provider: offline, free and deterministic. Its answer is a pure function of
//! the seed, the request and the attempt number: it reads the request's facts (the stakeholder,
//! the scene, the conflict and phase, who else exists, the canon) and fills phrase templates with
//! choices drawn from a ChaCha generator seeded by them. Latency, an error rate and a
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
use super::{Completion, LlmError, LlmRequest, Provider, TextStream, Usage};

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

fn pick<'a>(rng: &mut ChaCha8Rng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

fn s<'a>(facts: &'a Value, pointer: &str, default: &'a str) -> &'a str {
    facts
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or(default)
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

const BEHAVIOURS: &[&str] = &[
    "steps closer, arms folded",
    "glances toward the harbour and lowers their voice",
    "sets down what they were holding and squares up",
    "laughs, a little too loudly",
    "takes a slow breath before answering",
    "turns to the crowd, as if to make them witnesses",
    "leans on the rail and studies you",
];
const INTENTS: &[&str] = &["support", "oppose", "deflect", "probe", "bargain", "warn"];
const OPENERS: &[&str] = &[
    "Listen",
    "Mark my words",
    "Between you and me",
    "You want the truth",
    "Don't mistake me",
];
const CLOSERS: &[&str] = &[
    "and that is all I'll say on it.",
    "before this gets worse.",
    "while there is still time.",
    "or we will all regret it.",
    "and you know it.",
];
const MOODS: &[&str] = &["tense", "weary", "restless", "hopeful", "bitter", "uneasy"];

/// Plausible content of the shape `request.kind` asks for.
fn write(rng: &mut ChaCha8Rng, request: &LlmRequest) -> String {
    let f = &request.facts;
    let scene = s(f, "/scene/name", "the square");
    let conflict = s(f, "/conflict/name", "the trouble");
    let phase = s(f, "/phase/name", "a turn");
    let topic = s(f, "/topic", conflict);
    match request.kind {
        JobKind::PrepareSceneReactions => {
            // `wanted`: which stakeholder, to which kind of action, how many lines.
            let names: std::collections::BTreeMap<String, String> = f
                .pointer("/present")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| {
                            Some((
                                v.get("id")?.as_str()?.to_owned(),
                                v.get("name")?.as_str()?.to_owned(),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let mut reactions = Vec::new();
            for w in f
                .pointer("/wanted")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let who = w.get("stakeholder_id").and_then(Value::as_str).unwrap_or("");
                let kind = w.get("action_kind").and_then(Value::as_str).unwrap_or("say");
                let count = w.get("count").and_then(Value::as_u64).unwrap_or(1);
                let name = names.get(who).map_or(who, String::as_str);
                for n in 0..count {
                    reactions.push(json!({
                        "stakeholder_id": who,
                        "action_kind": kind,
                        "behaviour": format!("{name} {}", pick(rng, BEHAVIOURS)),
                        "intent": pick(rng, INTENTS),
                        "line": format!("{}: you {kind} at {scene}? {} ({})", pick(rng, OPENERS), pick(rng, CLOSERS), n + 1),
                    }));
                }
            }
            json!({ "reactions": reactions }).to_string()
        }
        JobKind::NarratePhaseTransition => json!({
            "text": format!("The mood at {scene} turns {}: {conflict} enters {phase}. {}", pick(rng, MOODS), pick(rng, &["Nobody meets anyone's eye.", "Voices rise and fall like the tide.", "Doors close early tonight."])),
        })
        .to_string(),
        JobKind::GenerateBeatDescription => {
            let count = f.get("count").and_then(Value::as_u64).unwrap_or(1).max(1);
            let authored: Vec<&str> = f
                .pointer("/phase/beats")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let beats: Vec<String> = (0..count as usize)
                .map(|i| match authored.get(i) {
                    Some(b) => format!("{b} The air feels {}.", pick(rng, MOODS)),
                    None => format!("In {phase}, {conflict} tightens another notch."),
                })
                .collect();
            json!({ "beats": beats }).to_string()
        }
        JobKind::GenerateSocialBundle => {
            let all = ids(f, "/stakeholders");
            let mut gossip = Vec::new();
            if all.len() >= 2 {
                for _ in 0..3 {
                    let a = rng.random_range(0..all.len());
                    let mut b = rng.random_range(0..all.len());
                    if b == a {
                        b = (a + 1) % all.len();
                    }
                    gossip.push(json!({
                        "from": all[a], "about": all[b],
                        "line": format!("They say {} has been {}.", all[b], pick(rng, &["seen at the docks after dark", "counting coins twice", "avoiding the guild hall", "making promises"])),
                    }));
                }
            }
            let reputation: serde_json::Map<String, Value> = all
                .iter()
                .map(|id| (id.clone(), json!(rng.random_range(-40..=60))))
                .collect();
            json!({ "gossip": gossip, "reputation": reputation }).to_string()
        }
        JobKind::CanonizeConflict => json!({
            "title": format!("The {} of {}", pick(rng, &["Reckoning", "Settlement", "Long Night", "Turning"]), conflict),
            "summary": format!("When {conflict} came to a head at {scene}, the town chose a side, and it would be remembered {}.", pick(rng, &["for a generation", "in every tavern song", "with a shrug", "with shame"])),
        })
        .to_string(),
        JobKind::GenerateCanonReferences => {
            let canon = ids(f, "/canon");
            let people = ids(f, "/stakeholders");
            let items: Vec<Value> = canon
                .iter()
                .flat_map(|c| people.iter().take(2).map(move |p| (c.clone(), p.clone())))
                .map(|(c, p)| {
                    json!({
                        "canon_id": c, "stakeholder_id": p,
                        "line": format!("{} Remember how that ended.", pick(rng, OPENERS)),
                    })
                })
                .collect();
            json!({ "items": items }).to_string()
        }
        JobKind::StreamDialogueReply => format!(
            "{}, {topic}? {} I have said what I know {}",
            pick(rng, &["Ah", "Hm", "Well", "So"]),
            pick(rng, &[
                "You ask a lot for someone new here.",
                "Keep your voice down when you say that.",
                "I have thought of little else.",
            ]),
            pick(rng, CLOSERS)
        ),
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
        let text = self.answer(request)?;
        Ok(Completion {
            usage: Usage::estimate(request.system.len() + request.prompt.len(), text.len()),
            text,
            model: request.model.clone().unwrap_or_else(|| "scripted".into()),
            truncated: false,
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
        Ok(futures::stream::iter(chunks)
            .then(move |chunk| async move {
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                Ok(chunk)
            })
            .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            .map(|i| p.latency(&request(JobKind::GenerateStakeholderAction, &i.to_string())))
            .collect();
        for d in &delays {
            assert!(*d >= Duration::from_millis(1500) && *d <= Duration::from_millis(2500));
        }
        assert!(delays.iter().any(|d| *d != delays[0]), "{delays:?}");
        let again = p.latency(&request(JobKind::GenerateStakeholderAction, "0"));
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
        assert_eq!(social["gossip"].as_array().unwrap().len(), 3);
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
        let chunks: Vec<String> = p.stream(&r).await.unwrap().try_collect().await.unwrap();
        assert!(chunks.len() > 3);
        assert_eq!(chunks.concat(), whole);
    }

    #[tokio::test]
    async fn refuses_on_the_hot_path() {
        let p = provider(0.0, 0.0);
        let r = request(JobKind::NarratePhaseTransition, "x");
        let res = hotpath_cache::guard::hot_path_scope("test", p.complete(&r)).await;
        assert!(matches!(res, Err(LlmError::OnHotPath(_))));
    }
}
