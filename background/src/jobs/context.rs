//! What a job knows about its game: the scenario (from the store) and the current state (the
//! cached snapshot brought up to date with the log, or the log folded over the scenario), and
//! the facts a prompt is rendered from.

use hotpath_cache::cache::{CacheExt, keys};
use hotpath_cache::events::LoggedEvent;
use hotpath_cache::scenario::{Conflict, Phase, Scenario, Stakeholder};
use hotpath_cache::state::{ContextHash, GameState};
use hotpath_cache::{ConflictId, GameId, PhaseId, SceneId, StakeholderId};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Deps, TryError};

pub struct World {
    pub scenario: Scenario,
    pub state: GameState,
}

impl World {
    pub async fn load(deps: &Deps, game: GameId) -> Result<World, TryError> {
        let record = deps
            .store
            .game(game)
            .await
            .map_err(TryError::infra)?
            .ok_or_else(|| TryError::Fatal(format!("unknown game {game}")))?;
        let scenario = record.scenario;
        // The hot path's snapshot saves folding the whole log; whatever was logged after it
        // (a dialogue reply, an action whose snapshot write was lost) is folded on top.
        let snapshot = deps
            .cache
            .get_typed(&keys::snapshot(game))
            .await
            .ok()
            .flatten()
            .filter(|s: &GameState| s.game_id == game);
        let mut state = snapshot.unwrap_or_else(|| GameState::new(game, &scenario));
        for (seq, event) in deps
            .store
            .events(game, state.seq)
            .await
            .map_err(TryError::infra)?
        {
            state.apply(&scenario, seq, &event);
        }
        Ok(World { scenario, state })
    }

    pub fn stakeholder(&self, id: &StakeholderId) -> Result<&Stakeholder, TryError> {
        self.scenario
            .stakeholder(id)
            .ok_or_else(|| TryError::Fatal(format!("unknown stakeholder `{id}`")))
    }

    /// A conflict of the scenario and one of its phases.
    pub fn conflict_phase(
        &self,
        conflict: &ConflictId,
        phase: &PhaseId,
    ) -> Result<(&Conflict, &Phase), TryError> {
        let c = self
            .scenario
            .conflict(conflict)
            .ok_or_else(|| TryError::Fatal(format!("unknown conflict `{conflict}`")))?;
        let p = c
            .phases
            .iter()
            .find(|p| &p.id == phase)
            .ok_or_else(|| TryError::Fatal(format!("unknown phase `{phase}`")))?;
        Ok((c, p))
    }

    /// The facts every prompt may use: the scenario, its stakeholders with their standing, the
    /// conflicts with their phase, the turn.
    pub fn base_facts(&self) -> serde_json::Map<String, Value> {
        let stakeholders: Vec<Value> = self
            .scenario
            .stakeholders
            .iter()
            .map(|s| {
                json!({"id": s.id, "name": s.name, "role": s.role,
                       "standing": self.state.standing.get(&s.id).copied().unwrap_or(0)})
            })
            .collect();
        let mut map = serde_json::Map::new();
        map.insert(
            "scenario".into(),
            json!({"title": self.scenario.title, "description": self.scenario.description}),
        );
        map.insert("stakeholders".into(), Value::Array(stakeholders));
        map.insert("conflicts".into(), self.conflicts(None));
        map.insert("turn".into(), json!(self.state.turn));
        map
    }

    /// Conflicts with their state (only those of `scene`, if given).
    pub fn conflicts(&self, scene: Option<&SceneId>) -> Value {
        let wanted = scene
            .and_then(|s| self.scenario.scene(s))
            .map(|s| &s.conflicts);
        Value::Array(
            self.scenario
                .conflicts
                .iter()
                .filter(|c| wanted.is_none_or(|w| w.contains(&c.id)))
                .filter_map(|c| {
                    let st = self.state.conflicts.get(&c.id)?;
                    let phase = c.phases.iter().find(|p| p.id == st.phase)?;
                    Some(json!({"id": c.id, "name": c.name, "phase": phase.name,
                                "intensity": st.intensity, "resolved": st.resolved}))
                })
                .collect(),
        )
    }

    /// Facts about one stakeholder in one scene.
    pub fn stakeholder_facts(
        &self,
        who: &Stakeholder,
        scene: Option<&SceneId>,
    ) -> serde_json::Map<String, Value> {
        let mut f = self.base_facts();
        f.insert("stakeholder".into(), json!(who));
        f.insert(
            "standing".into(),
            json!(self.state.standing.get(&who.id).copied().unwrap_or(0)),
        );
        if let Some(scene) = scene.and_then(|s| self.scenario.scene(s)) {
            f.insert(
                "scene".into(),
                json!({"id": scene.id, "name": scene.name, "description": scene.description}),
            );
            f.insert("present".into(), json!(scene.stakeholders));
            f.insert("conflicts".into(), self.conflicts(Some(&scene.id)));
        }
        f
    }
}

/// A context hash for artifacts that belong to no scene: a digest of what they were made for.
pub fn context_of(parts: &[&str]) -> ContextHash {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update(b"|");
    }
    ContextHash(crate::llm::hex(&h.finalize()[..8]))
}

/// One line about a logged event, for a reaction's prompt.
pub fn summarize(event: &LoggedEvent, state: &GameState) -> String {
    match event {
        LoggedEvent::ActionApplied(a) => {
            let who = state
                .players
                .get(&a.player_id)
                .cloned()
                .unwrap_or_else(|| "A player".into());
            let target = a
                .target
                .as_ref()
                .map(|t| format!(" toward {t}"))
                .unwrap_or_default();
            format!("{who} chose to {}{target}: \"{}\"", a.kind.as_str(), a.text)
        }
        LoggedEvent::PlayerJoined { name, .. } => format!("{name} arrived."),
        LoggedEvent::DialogueReplied {
            stakeholder_id,
            text,
            ..
        } => format!("{stakeholder_id} said: \"{text}\""),
        LoggedEvent::ConflictCanonized { conflict_id, .. } => {
            format!("The conflict `{conflict_id}` was settled.")
        }
    }
}
