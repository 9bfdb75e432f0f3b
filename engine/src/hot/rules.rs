//! The rules: deterministic, pure functions from a scenario, a state and a player's action to
//! what changes. No I/O, no clock, no randomness — the same input always gives the same output,
//! which is what makes a rebuilt state equal to the cached one.

use hotpath_cache::events::{AppliedAction, Effect, LoggedEvent};
use hotpath_cache::model::{ActionKind, PlayerAction};
use hotpath_cache::scenario::Scenario;
use hotpath_cache::state::GameState;

/// Longest accepted action text, in characters.
pub const MAX_TEXT_CHARS: usize = 2000;

/// Words that mark each kind, checked in this order (the first kind with a match wins).
const KEYWORDS: &[(ActionKind, &[&str])] = &[
    (
        ActionKind::Threaten,
        &[
            "threat", "or else", "kill", "hurt", "burn", "destroy", "punch", "attack", "warn you",
            "regret",
        ],
    ),
    (
        ActionKind::Help,
        &[
            "help", "assist", "protect", "carry", "heal", "support", "lend", "give you", "offer to",
        ],
    ),
    (
        ActionKind::Trade,
        &[
            "buy", "sell", "trade", "pay", "coin", "price", "bargain", "deal", "bribe",
        ],
    ),
    (
        ActionKind::Investigate,
        &[
            "search",
            "examine",
            "inspect",
            "investigate",
            "look for",
            "find",
            "dig into",
            "check the",
            "read the",
        ],
    ),
    (
        ActionKind::Persuade,
        &[
            "convince",
            "persuade",
            "please",
            "reason with",
            "you should",
            "let's",
            "trust me",
            "consider",
            "appeal",
        ],
    ),
    (
        ActionKind::Observe,
        &[
            "watch",
            "observe",
            "listen",
            "wait",
            "look around",
            "keep an eye",
            "eavesdrop",
        ],
    ),
];

const QUESTION_WORDS: &[&str] = &[
    "who", "what", "where", "when", "why", "how", "which", "is", "are", "do", "does", "can", "will",
];

/// The kind of an action: the explicit one if given, else read from the player's text.
pub fn classify(explicit: Option<ActionKind>, text: &str) -> ActionKind {
    if let Some(kind) = explicit {
        return kind;
    }
    let lower = text.to_lowercase();
    for (kind, words) in KEYWORDS {
        if words.iter().any(|w| lower.contains(w)) {
            return *kind;
        }
    }
    let first = lower.split_whitespace().next().unwrap_or("");
    if lower.trim_end().ends_with('?') || QUESTION_WORDS.contains(&first) {
        return ActionKind::Ask;
    }
    ActionKind::Say
}

/// How much an action of `kind` moves each conflict of its scene, and the target's standing.
fn weights(kind: ActionKind) -> (i32, i32) {
    match kind {
        ActionKind::Threaten => (12, -15),
        ActionKind::Investigate => (6, -2),
        ActionKind::Say => (2, 1),
        ActionKind::Ask => (1, 1),
        ActionKind::Observe => (1, 0),
        ActionKind::Trade => (-2, 4),
        ActionKind::Help => (-4, 10),
        ActionKind::Persuade => (-6, 5),
    }
}

/// The effects of `action` in `state`: intensity changes for the open conflicts of the scene and
/// a standing change for the target. An unknown scene has no effect.
pub fn effects(scenario: &Scenario, state: &GameState, action: &PlayerAction) -> Vec<Effect> {
    let Some(scene) = scenario.scene(&action.scene_id) else {
        return Vec::new();
    };
    let (intensity, standing) = weights(action.kind);
    let mut out = Vec::new();
    for conflict_id in &scene.conflicts {
        let open = state
            .conflicts
            .get(conflict_id)
            .is_some_and(|c| !c.resolved);
        if open && intensity != 0 {
            out.push(Effect::Intensity {
                conflict_id: conflict_id.clone(),
                delta: intensity,
            });
        }
    }
    if let Some(target) = &action.target
        && standing != 0
    {
        out.push(Effect::Standing {
            stakeholder_id: target.clone(),
            delta: standing,
        });
    }
    out
}

/// The logged event of `action` applied to `state`.
pub fn apply_action(scenario: &Scenario, state: &GameState, action: &PlayerAction) -> LoggedEvent {
    LoggedEvent::ActionApplied(AppliedAction {
        action_id: action.id,
        player_id: action.player_id,
        scene_id: action.scene_id.clone(),
        kind: action.kind,
        text: action.text.clone(),
        target: action.target.clone(),
        turn: state.turn + 1,
        effects: effects(scenario, state, action),
    })
}

/// Folds a whole log over a fresh state: the rebuild the hot path does on a cache miss.
pub fn fold<'a>(
    scenario: &Scenario,
    game: hotpath_cache::GameId,
    events: impl IntoIterator<Item = &'a (u64, LoggedEvent)>,
) -> GameState {
    let mut state = GameState::new(game, scenario);
    for (seq, event) in events {
        state.apply(scenario, *seq, event);
    }
    state
}

/// A conflict whose phase or resolution changed between two states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub conflict_id: hotpath_cache::ConflictId,
    pub from: hotpath_cache::PhaseId,
    pub to: hotpath_cache::PhaseId,
    pub resolved: bool,
}

/// What changed phase (or resolved) from `before` to `after`, in scenario order.
pub fn transitions(scenario: &Scenario, before: &GameState, after: &GameState) -> Vec<Transition> {
    scenario
        .conflicts
        .iter()
        .filter_map(|c| {
            let (b, a) = (before.conflicts.get(&c.id)?, after.conflicts.get(&c.id)?);
            (b.phase != a.phase || b.resolved != a.resolved).then(|| Transition {
                conflict_id: c.id.clone(),
                from: b.phase.clone(),
                to: a.phase.clone(),
                resolved: a.resolved && !b.resolved,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotpath_cache::ids::*;
    use hotpath_cache::scenario::builtin;

    fn check(text: &str, expected: ActionKind) {
        assert_eq!(classify(None, text), expected, "{text:?}");
    }

    #[test]
    fn classifies_text() {
        check("Pay the crews or else the docks burn", ActionKind::Threaten);
        check("I'll help you carry the crates", ActionKind::Help);
        check("How much to buy your silence?", ActionKind::Trade);
        check("I search the harbormaster's desk", ActionKind::Investigate);
        check("You should talk to Voss, trust me", ActionKind::Persuade);
        check("I wait by the door and listen", ActionKind::Observe);
        check("Where is the ledger?", ActionKind::Ask);
        check("Good evening, everyone.", ActionKind::Say);
        assert_eq!(
            classify(Some(ActionKind::Help), "I will burn it all"),
            ActionKind::Help,
            "explicit wins"
        );
    }

    #[test]
    fn threats_raise_intensity_and_lower_standing() {
        let scenario = &builtin()["harbor-strike"];
        let state = GameState::new(GameId::generate(), scenario);
        let action = PlayerAction {
            id: ActionId::generate(),
            game_id: state.game_id,
            player_id: PlayerId::generate(),
            scene_id: SceneId::new("docks").unwrap(),
            kind: ActionKind::Threaten,
            text: "Back to work or else".into(),
            target: Some(StakeholderId::new("mara").unwrap()),
        };
        let fx = effects(scenario, &state, &action);
        assert_eq!(
            fx,
            vec![
                Effect::Intensity {
                    conflict_id: ConflictId::new("strike").unwrap(),
                    delta: 12
                },
                Effect::Standing {
                    stakeholder_id: StakeholderId::new("mara").unwrap(),
                    delta: -15
                },
            ]
        );
        let event = apply_action(scenario, &state, &action);
        let mut after = state.clone();
        after.apply(scenario, 1, &event);
        assert_eq!(after.turn, 1);
        let t = transitions(scenario, &state, &after);
        assert!(
            t.is_empty(),
            "20 + 12 stays below the walkout threshold (35)"
        );
    }
}
