//! The game-state snapshot — what the hot path loads (from the cache, or by folding the event log
//! over the scenario) before applying an action — and the context hash that keys precomputed
//! content to the situation it was made for.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::events::{Effect, LoggedEvent};
use crate::ids::{ConflictId, GameId, PhaseId, PlayerId, SceneId, StakeholderId};
use crate::scenario::{Conflict, Scenario};

/// Reputation and standing are clamped to this range.
pub const STANDING_LIMIT: i32 = 100;

/// The state of one game after folding its event log up to `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GameState {
    pub game_id: GameId,
    pub scenario: String,
    /// Seq of the last event folded in; 0 before any. Also the world version.
    pub seq: u64,
    /// Player actions applied so far.
    pub turn: u32,
    pub conflicts: BTreeMap<ConflictId, ConflictState>,
    /// How each stakeholder regards the players (-100..=100).
    pub standing: BTreeMap<StakeholderId, i32>,
    pub players: BTreeMap<PlayerId, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictState {
    pub intensity: u32,
    pub phase: PhaseId,
    pub resolved: bool,
}

// Where it lives since it is shared below `state`, `model`, `jobs` and the store; kept here
// for the crates that import it from `state`.
pub use crate::ids::ContextHash;

impl GameState {
    /// A game before any event: initial intensities, their phases, neutral standings.
    pub fn new(game_id: GameId, scenario: &Scenario) -> GameState {
        let conflicts = scenario
            .conflicts
            .iter()
            .map(|c| {
                let state = ConflictState {
                    intensity: c.initial_intensity,
                    phase: phase_at(c, c.initial_intensity).clone(),
                    resolved: false,
                };
                (c.id.clone(), state)
            })
            .collect();
        let standing = scenario
            .stakeholders
            .iter()
            .map(|s| {
                let toward_player = s
                    .relationships
                    .iter()
                    .find(|r| r.with == "player")
                    .map_or(0.0, |r| r.affinity);
                (s.id.clone(), (toward_player * 50.0).round() as i32)
            })
            .collect();
        GameState {
            game_id,
            scenario: scenario.name.clone(),
            seq: 0,
            turn: 0,
            conflicts,
            standing,
            players: BTreeMap::new(),
        }
    }

    /// The world version artifacts are stamped with.
    pub fn world_version(&self) -> u64 {
        self.seq
    }

    /// Folds one logged event in. Events carry their effects, so folding is mechanical and the
    /// same events over the same scenario always give the same state.
    pub fn apply(&mut self, scenario: &Scenario, seq: u64, event: &LoggedEvent) {
        self.seq = seq;
        match event {
            LoggedEvent::PlayerJoined { player_id, name } => {
                self.players.insert(*player_id, name.clone());
            }
            LoggedEvent::ActionApplied(applied) => {
                self.turn = applied.turn;
                for effect in &applied.effects {
                    self.apply_effect(scenario, effect);
                }
            }
            LoggedEvent::DialogueReplied { .. } | LoggedEvent::ConflictCanonized { .. } => {}
        }
    }

    fn apply_effect(&mut self, scenario: &Scenario, effect: &Effect) {
        match effect {
            Effect::Intensity { conflict_id, delta } => {
                let (Some(conflict), Some(state)) = (
                    scenario.conflict(conflict_id),
                    self.conflicts.get_mut(conflict_id),
                ) else {
                    return;
                };
                if state.resolved {
                    return;
                }
                let next = (state.intensity as i64 + *delta as i64)
                    .clamp(0, conflict.resolve_at as i64) as u32;
                state.intensity = next;
                state.phase = phase_at(conflict, next).clone();
                state.resolved = next >= conflict.resolve_at;
            }
            Effect::Standing {
                stakeholder_id,
                delta,
            } => {
                if let Some(s) = self.standing.get_mut(stakeholder_id) {
                    *s = (*s + delta).clamp(-STANDING_LIMIT, STANDING_LIMIT);
                }
            }
        }
    }

    /// The context hash of `scene` in this state. Unknown scenes hash their id alone.
    pub fn context_hash(&self, scenario: &Scenario, scene: &SceneId) -> ContextHash {
        let mut h = Sha256::new();
        h.update(scene.as_str().as_bytes());
        if let Some(scene) = scenario.scene(scene) {
            let mut present: Vec<&str> = scene.stakeholders.iter().map(|s| s.as_str()).collect();
            present.sort_unstable();
            for s in present {
                h.update(b"|p:");
                h.update(s.as_bytes());
            }
            for c in &scene.conflicts {
                if let Some(state) = self.conflicts.get(c) {
                    h.update(b"|c:");
                    h.update(c.as_str().as_bytes());
                    h.update(b":");
                    h.update(state.phase.as_str().as_bytes());
                    h.update(if state.resolved { b":r" } else { b":o" });
                }
            }
        }
        let digest = h.finalize();
        ContextHash(crate::hex::hex(&digest[..8]))
    }
}

/// The phase a conflict is in at `intensity`.
pub fn phase_at(conflict: &Conflict, intensity: u32) -> &PhaseId {
    let mut phase = &conflict.phases[0].id;
    for p in &conflict.phases {
        if intensity >= p.enter_at {
            phase = &p.id;
        }
    }
    phase
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::AppliedAction;
    use crate::ids::ActionId;
    use crate::model::ActionKind;
    use crate::scenario::builtin;

    fn strike_event(turn: u32, delta: i32) -> LoggedEvent {
        LoggedEvent::ActionApplied(AppliedAction {
            action_id: ActionId::generate(),
            player_id: PlayerId::generate(),
            scene_id: SceneId::new("docks").unwrap(),
            kind: ActionKind::Threaten,
            text: "Pay them or else".into(),
            target: None,
            turn,
            effects: vec![Effect::Intensity {
                conflict_id: ConflictId::new("strike").unwrap(),
                delta,
            }],
        })
    }

    #[test]
    fn intensity_moves_phases_and_resolves() {
        let scenario = &builtin()["harbor-strike"];
        let mut state = GameState::new(GameId::generate(), scenario);
        let strike = ConflictId::new("strike").unwrap();
        assert_eq!(state.conflicts[&strike].phase.as_str(), "simmering");
        let before = state.context_hash(scenario, &SceneId::new("docks").unwrap());
        state.apply(scenario, 1, &strike_event(1, 20));
        assert_eq!(state.conflicts[&strike].phase.as_str(), "walkout");
        let after = state.context_hash(scenario, &SceneId::new("docks").unwrap());
        assert_ne!(before, after, "a phase change changes the context");
        state.apply(scenario, 2, &strike_event(2, 500));
        assert!(state.conflicts[&strike].resolved);
        assert_eq!(state.conflicts[&strike].intensity, 90);
        state.apply(scenario, 3, &strike_event(3, -80));
        assert_eq!(
            state.conflicts[&strike].intensity, 90,
            "a resolved conflict stays resolved"
        );
        assert_eq!((state.seq, state.turn), (3, 3));
    }

    #[test]
    fn context_hash_is_stable() {
        let scenario = &builtin()["harbor-strike"];
        let a = GameState::new(GameId::generate(), scenario);
        let b = GameState::new(GameId::generate(), scenario);
        let docks = SceneId::new("docks").unwrap();
        assert_eq!(
            a.context_hash(scenario, &docks),
            b.context_hash(scenario, &docks)
        );
        assert_ne!(
            a.context_hash(scenario, &docks),
            a.context_hash(scenario, &SceneId::new("lantern-tavern").unwrap())
        );
        assert_eq!(a.context_hash(scenario, &docks).0.len(), 16);
    }
}
