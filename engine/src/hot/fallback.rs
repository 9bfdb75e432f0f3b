//! Rule-based fallbacks: what the hot path answers with when the slow path has not (yet)
//! prepared anything. Stakeholder behaviour from traits × relationship × conflict phase × action
//! kind; template narration for phase transitions and beats; a social bundle from standings.
//! Deterministic: every choice is a stable hash of its inputs, never an unseeded random number.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use hotpath_cache::model::{ActionKind, Gossip, Provenance, SocialBundle, StakeholderMove};
use hotpath_cache::scenario::{Scenario, Stakeholder};
use hotpath_cache::state::{ContextHash, GameState};
use hotpath_cache::time::Millis;
use hotpath_cache::{ConflictId, PhaseId, SceneId};

/// The model name stamped on rule-made content.
pub const RULES_MODEL: &str = "rules";
pub const RULES_VERSION: &str = "rules-v1";

/// A stable index into `n` choices from some parts.
fn pick(n: usize, parts: &[&str]) -> usize {
    if n == 0 {
        return 0;
    }
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    (u64::from_le_bytes(d[..8].try_into().expect("8 bytes")) % n as u64) as usize
}

fn trait_bias(t: &str) -> i32 {
    match t {
        "friendly" | "loyal" | "honest" => 8,
        "curious" => 4,
        "cautious" => -2,
        "greedy" | "cunning" => -4,
        "proud" | "stubborn" => -6,
        "hot-headed" => -8,
        _ => 0,
    }
}

fn kind_bias(kind: ActionKind, traits: &[String]) -> i32 {
    let has = |t: &str| traits.iter().any(|x| x == t);
    match kind {
        ActionKind::Help => 15,
        ActionKind::Persuade if has("stubborn") => -5,
        ActionKind::Persuade => 6,
        ActionKind::Trade if has("greedy") => 15,
        ActionKind::Trade => 2,
        ActionKind::Threaten if has("bold") || has("hot-headed") => -30,
        ActionKind::Threaten => -20,
        ActionKind::Investigate if has("cunning") => -10,
        ActionKind::Ask | ActionKind::Say | ActionKind::Observe | ActionKind::Investigate => 0,
    }
}

/// How a stakeholder is disposed toward the player right now (-100..100-ish).
pub fn disposition(
    scenario: &Scenario,
    state: &GameState,
    who: &Stakeholder,
    kind: ActionKind,
) -> i32 {
    let standing = state.standing.get(&who.id).copied().unwrap_or(0);
    let traits: i32 = who.traits.iter().map(|t| trait_bias(t)).sum();
    // Tension: the later the phases of this stakeholder's conflicts, the shorter the temper.
    let tension: i32 = scenario
        .conflicts
        .iter()
        .filter(|c| c.stakeholders.contains(&who.id))
        .filter_map(|c| {
            let s = state.conflicts.get(&c.id)?;
            let idx = c.phases.iter().position(|p| p.id == s.phase)?;
            Some(idx as i32 * 4)
        })
        .sum();
    standing + traits + kind_bias(kind, &who.traits) - tension
}

fn intent(score: i32, who: &Stakeholder, kind: ActionKind) -> &'static str {
    let has = |t: &str| who.traits.iter().any(|x| x == t);
    if kind == ActionKind::Threaten && has("cautious") {
        return "deflect";
    }
    if matches!(kind, ActionKind::Ask | ActionKind::Investigate) && has("curious") {
        return "probe";
    }
    match score {
        s if s >= 15 => "support",
        s if s <= -15 => "oppose",
        s if s < 0 => "deflect",
        _ => "observe",
    }
}

const BEHAVIOUR: &[(&str, &[&str])] = &[
    (
        "support",
        &[
            "steps closer, nodding",
            "puts a steadying hand on your shoulder",
            "leans in, ready to help",
        ],
    ),
    (
        "oppose",
        &[
            "folds their arms and blocks your way",
            "turns away with a scowl",
            "squares up to you",
        ],
    ),
    (
        "deflect",
        &[
            "glances toward the door",
            "changes the subject",
            "busies themself with something else",
        ],
    ),
    (
        "probe",
        &[
            "studies you with narrowed eyes",
            "tilts their head, curious",
            "asks a question of their own",
        ],
    ),
    (
        "observe",
        &[
            "watches you without a word",
            "waits to see what you do next",
            "keeps their distance",
        ],
    ),
];

const LINES: &[(&str, &[&str])] = &[
    (
        "support",
        &[
            "I'm with you. {goal} — that's what matters.",
            "Say the word and I'll stand beside you.",
            "You may be what {conflict} needed.",
        ],
    ),
    (
        "oppose",
        &[
            "Try that again and you'll answer to me.",
            "You don't know what you're meddling in.",
            "Not while I'm breathing. I still mean to {goal}.",
        ],
    ),
    (
        "deflect",
        &[
            "This isn't the time. Not with {conflict} as it is.",
            "Ask someone else. I have my own troubles.",
            "Perhaps. Perhaps not.",
        ],
    ),
    (
        "probe",
        &[
            "And why would you want to know that?",
            "Interesting. Who sent you?",
            "Tell me more — what's your stake in {conflict}?",
        ],
    ),
    (
        "observe",
        &[
            "Hm.",
            "We'll see where this goes.",
            "{conflict} will decide more than words will.",
        ],
    ),
];

fn table<'a>(t: &'a [(&str, &'a [&'a str])], key: &str) -> &'a [&'a str] {
    t.iter()
        .find(|(k, _)| *k == key)
        .map_or(&[][..], |(_, v)| v)
}

/// The rule-based move of `who` in answer to an action of `kind` at `turn`.
pub fn stakeholder_move(
    scenario: &Scenario,
    state: &GameState,
    who: &Stakeholder,
    kind: ActionKind,
    turn: u32,
) -> StakeholderMove {
    let score = disposition(scenario, state, who, kind);
    let intent = intent(score, who, kind);
    let seed = [who.id.as_str(), kind.as_str(), &turn.to_string()];
    let behaviours = table(BEHAVIOUR, intent);
    let lines = table(LINES, intent);
    let conflict = scenario
        .conflicts
        .iter()
        .find(|c| c.stakeholders.contains(&who.id))
        .map_or("all this", |c| c.name.as_str());
    let goal = who.goals.first().map_or("see this through", String::as_str);
    let line = lines[pick(lines.len(), &seed)]
        .replace("{conflict}", conflict)
        .replace("{goal}", goal);
    StakeholderMove {
        behaviour: format!("{} {}", who.name, behaviours[pick(behaviours.len(), &seed)]),
        intent: intent.to_owned(),
        line,
    }
}

/// Template narration of a conflict entering a phase.
pub fn phase_narration(
    scenario: &Scenario,
    conflict: &ConflictId,
    phase: &PhaseId,
    resolved: bool,
) -> String {
    let Some(c) = scenario.conflict(conflict) else {
        return String::new();
    };
    let name = c
        .phases
        .iter()
        .find(|p| &p.id == phase)
        .map_or(phase.as_str(), |p| p.name.as_str());
    if resolved {
        return format!(
            "{} comes to an end. Whatever happens next, Saltmere will remember it.",
            c.name
        )
        .replace("Saltmere", &scenario.title);
    }
    const TEMPLATES: &[&str] = &[
        "{conflict} turns: {phase}. The air itself seems to tighten.",
        "Word spreads fast — {conflict} has reached a new stage: {phase}.",
        "Nothing is as it was an hour ago. {conflict}: {phase}.",
    ];
    TEMPLATES[pick(TEMPLATES.len(), &[conflict.as_str(), phase.as_str()])]
        .replace("{conflict}", &c.name)
        .replace("{phase}", name)
}

/// The authored text of a beat, or a scene line when the phase has no beats.
pub fn beat_text(scenario: &Scenario, conflict: &ConflictId, phase: &PhaseId, beat: u32) -> String {
    let Some(c) = scenario.conflict(conflict) else {
        return String::new();
    };
    let Some(p) = c.phases.iter().find(|p| &p.id == phase) else {
        return String::new();
    };
    if p.beats.is_empty() {
        return format!("{} — {}.", c.name, p.name);
    }
    p.beats[beat as usize % p.beats.len()].clone()
}

/// The beat a phase is on at `turn`: beats cycle as turns pass.
pub fn beat_index(scenario: &Scenario, conflict: &ConflictId, phase: &PhaseId, turn: u32) -> u32 {
    let n = scenario
        .conflict(conflict)
        .and_then(|c| c.phases.iter().find(|p| &p.id == phase))
        .map_or(0, |p| p.beats.len());
    if n == 0 { 0 } else { turn % n as u32 }
}

/// Scene text for a scene without conflicts.
pub fn scene_line(scenario: &Scenario, scene: &SceneId) -> String {
    scenario
        .scene(scene)
        .map(|s| format!("{}. {}", s.name, s.description))
        .unwrap_or_default()
}

/// A social bundle from the rules: reputation is the standing, gossip comes from relationships.
pub fn social_bundle(
    scenario: &Scenario,
    state: &GameState,
    context: &ContextHash,
    now: Millis,
) -> SocialBundle {
    let reputation: BTreeMap<_, _> = state.standing.clone();
    // The two stakeholders the players affected most, each gossiped about by whoever knows them.
    let mut notable: Vec<_> = scenario.stakeholders.iter().collect();
    notable.sort_by_key(|s| {
        (
            -(state.standing.get(&s.id).copied().unwrap_or(0)).abs(),
            s.id.clone(),
        )
    });
    let mut gossip = Vec::new();
    for about in notable.into_iter().take(2) {
        let Some(from) = scenario
            .stakeholders
            .iter()
            .find(|s| s.relationships.iter().any(|r| r.with == about.id.as_str()))
        else {
            continue;
        };
        let standing = state.standing.get(&about.id).copied().unwrap_or(0);
        let opinion = match standing {
            s if s >= 20 => "has taken a shine to the newcomers",
            s if s <= -20 => "wants the newcomers gone",
            _ => "hasn't made up their mind about the newcomers",
        };
        gossip.push(Gossip {
            from: from.id.clone(),
            about: about.id.clone(),
            line: format!("{} says {} {opinion}.", from.name, about.name),
        });
    }
    SocialBundle {
        gossip,
        reputation,
        provenance: Provenance {
            context_hash: context.clone(),
            world_version: state.world_version(),
            produced_at: now,
            model: RULES_MODEL.into(),
            prompt_version: RULES_VERSION.into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotpath_cache::GameId;
    use hotpath_cache::scenario::builtin;

    #[test]
    fn moves_are_deterministic_and_follow_traits() {
        let scenario = &builtin()["harbor-strike"];
        let state = GameState::new(GameId::generate(), scenario);
        let brann = scenario.stakeholder(&"brann".parse().unwrap()).unwrap();
        let a = stakeholder_move(scenario, &state, brann, ActionKind::Threaten, 3);
        let b = stakeholder_move(scenario, &state, brann, ActionKind::Threaten, 3);
        assert_eq!(a, b);
        assert_eq!(
            a.intent, "oppose",
            "a hot-headed crane operator does not take threats"
        );
        let kest = scenario.stakeholder(&"kest".parse().unwrap()).unwrap();
        assert_eq!(
            stakeholder_move(scenario, &state, kest, ActionKind::Help, 1).intent,
            "support"
        );
        let iris = scenario.stakeholder(&"iris".parse().unwrap()).unwrap();
        assert_eq!(
            stakeholder_move(scenario, &state, iris, ActionKind::Threaten, 1).intent,
            "deflect"
        );
    }

    #[test]
    fn narration_and_beats() {
        let scenario = &builtin()["harbor-strike"];
        let strike: ConflictId = "strike".parse().unwrap();
        let walkout: PhaseId = "walkout".parse().unwrap();
        let text = phase_narration(scenario, &strike, &walkout, false);
        assert!(
            text.contains("The Dock Strike") && text.contains("Walkout"),
            "{text}"
        );
        assert_eq!(
            beat_text(scenario, &strike, &walkout, 3),
            scenario.conflicts[0].phases[1].beats[1]
        );
        assert_eq!(beat_index(scenario, &strike, &walkout, 5), 1);
    }

    #[test]
    fn social_bundle_from_standings() {
        let scenario = &builtin()["harbor-strike"];
        let mut state = GameState::new(GameId::generate(), scenario);
        state.standing.insert("voss".parse().unwrap(), -40);
        let bundle = social_bundle(scenario, &state, &ContextHash("c".into()), 0);
        assert_eq!(bundle.reputation["voss"], -40);
        assert_eq!(bundle.gossip[0].about.as_str(), "voss");
        assert!(bundle.gossip[0].line.contains("wants the newcomers gone"));
    }
}
