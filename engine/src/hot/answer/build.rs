//! Building the answer to an action: the pieces decided before the write (narration, social,
//! canon: from the cache or the rules) and, inside the commit, the reactions from what the
//! claim got, the jobs dispatch plans against the guards the transaction found, and the
//! stream events. [`Answering::finish`] is the one place an answer is assembled; it is pure,
//! since a batch that rolls back runs it again.

use std::collections::HashSet;
use std::sync::Arc;

use hotpath_cache::events::{ConflictPhase, GameEvent};
use hotpath_cache::ids::RequestId;
use hotpath_cache::model::{PlannedAction, PlayerAction, beat_key, narration_key};
use hotpath_cache::scenario::{Scenario, Scene};
use hotpath_cache::state::GameState;
use hotpath_cache::store::{Claimed, Finished};

use super::*;
use crate::hot::HotConfig;
use crate::hot::dispatch::{self, Admission, PlanInput};
use crate::hot::fallback;
use crate::hot::reads::CachedContent;
use crate::hot::rules;

/// Everything an action's answer is built from besides what its commit finds.
pub(crate) struct Answering {
    pub scenario: Arc<Scenario>,
    pub before: GameState,
    pub after: GameState,
    pub action: PlayerAction,
    pub cached: Arc<CachedContent>,
    pub degraded: bool,
    pub dialogue: Option<RequestId>,
    pub config: HotConfig,
    /// What this game's writer has already had queued.
    pub asked: Arc<HashSet<String>>,
    /// The context the claimed reactions were made for.
    pub served_for: String,
    pub now: i64,
    pieces: Pieces,
}

impl Answering {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        scenario: Arc<Scenario>,
        before: GameState,
        after: GameState,
        action: PlayerAction,
        cached: Arc<CachedContent>,
        degraded: bool,
        dialogue: Option<RequestId>,
        config: HotConfig,
        asked: Arc<HashSet<String>>,
        served_for: String,
        now: i64,
    ) -> Answering {
        let scene = scenario
            .scene(&action.scene_id)
            .expect("the scene was validated against this scenario");
        let pieces = Pieces::build(&scenario, scene, &before, &after, &cached, now, &config);
        Answering {
            scenario,
            before,
            after,
            action,
            cached,
            degraded,
            dialogue,
            config,
            asked,
            served_for,
            now,
            pieces,
        }
    }

    /// The answer, jobs and stream events of the action, given what its claim got.
    pub fn finish(&self, claimed: Claimed) -> Finished {
        let (scenario, action, after) = (&self.scenario, &self.action, &self.after);
        let scene = scenario
            .scene(&action.scene_id)
            .expect("the scene was validated against this scenario");
        let mut answer = self.pieces.answer(
            scenario,
            scene,
            after,
            action,
            &claimed.claimed,
            &self.served_for,
            self.now,
            self.degraded,
            self.dialogue,
        );
        let jobs = dispatch::plan(&PlanInput {
            scenario,
            scene,
            before: &self.before,
            after,
            action,
            ready: claimed.ready.as_ref(),
            cached: &self.cached,
            dialogue: self.dialogue,
            config: &self.config,
            asked: &self.asked,
        });
        let queued = dispatch::queue(
            jobs,
            &scene.id,
            &Admission {
                held: &claimed.held,
                backlog: claimed.backlog,
                now_secs: (self.now / 1000).max(0) as u64,
            },
            &self.config,
        );
        answer.dispatched = queued.dispatched;
        let mut events = vec![
            GameEvent::ActionApplied {
                seq: after.seq,
                action_id: action.id,
                player_id: action.player_id,
                scene_id: action.scene_id.clone(),
                kind: action.kind,
                turn: after.turn,
            },
            state_updated(scenario, after),
        ];
        events.extend(queued.events);
        Finished {
            response: serde_json::to_value(answer).unwrap_or_default(),
            jobs: queued.jobs,
            events,
        }
    }
}

fn record_piece(piece: &'static str, source: Source) {
    metrics::counter!("hotpath_answer_pieces_total", "piece" => piece, "source" => source.as_str())
        .increment(1);
}

pub(crate) fn state_updated(scenario: &Scenario, state: &GameState) -> GameEvent {
    GameEvent::StateUpdated {
        seq: state.seq,
        turn: state.turn,
        conflicts: scenario
            .conflicts
            .iter()
            .filter_map(|c| {
                let s = state.conflicts.get(&c.id)?;
                Some(ConflictPhase {
                    conflict_id: c.id.clone(),
                    phase_id: s.phase.clone(),
                    intensity: s.intensity,
                    resolved: s.resolved,
                })
            })
            .collect(),
    }
}
pub const SOCIAL_KEY: &str = "social";
pub const CANON_REFS_KEY: &str = "canon-refs";

/// The pieces of the answer that do not depend on the claim, decided before the write.
struct Pieces {
    narration: NarrationPiece,
    social: SocialPiece,
    canon: CanonPiece,
}

impl Pieces {
    fn build(
        scenario: &Scenario,
        scene: &Scene,
        before: &GameState,
        after: &GameState,
        cached: &CachedContent,
        now: i64,
        config: &HotConfig,
    ) -> Pieces {
        let age = |produced_at: i64| Some((now - produced_at).max(0));
        // A phase change in this scene is narrated; otherwise the current beat is described.
        // Cached text is served only under the key it was written for.
        let transition = rules::transitions(scenario, before, after)
            .into_iter()
            .find(|t| scene.conflicts.contains(&t.conflict_id));
        let resolved = hotpath_cache::model::resolved_phase();
        let narration = if let Some(t) = transition {
            // A resolution is narrated under its own key, written ahead as it nears.
            let phase = if t.resolved { &resolved } else { &t.to };
            let key = narration_key(&t.conflict_id, phase).0;
            match cached
                .narration
                .get(&(t.conflict_id.clone(), phase.clone()))
            {
                Some(n) if n.provenance.context_hash.0 == key => NarrationPiece {
                    text: n.text.clone(),
                    source: Source::Cache,
                    age_ms: age(n.provenance.produced_at),
                    provenance: Some(PieceProvenance::of(&n.provenance)),
                    served_for: key,
                },
                _ => NarrationPiece {
                    text: fallback::phase_narration(scenario, &t.conflict_id, &t.to, t.resolved),
                    source: Source::Fallback,
                    age_ms: None,
                    provenance: None,
                    served_for: key,
                },
            }
        } else if let Some((conflict, state)) = scene.conflicts.iter().find_map(|c| {
            after
                .conflicts
                .get(c)
                .filter(|s| !s.resolved)
                .map(|s| (c, s))
        }) {
            let beat = fallback::beat_index(scenario, conflict, &state.phase, after.turn);
            let key = beat_key(conflict, &state.phase, beat).0;
            match cached
                .beats
                .get(&(conflict.clone(), state.phase.clone(), beat))
                .filter(|b| b.provenance.context_hash.0 == key)
            {
                Some(b) => NarrationPiece {
                    text: b.text.clone(),
                    source: Source::Cache,
                    age_ms: age(b.provenance.produced_at),
                    provenance: Some(PieceProvenance::of(&b.provenance)),
                    served_for: key,
                },
                None => NarrationPiece {
                    text: fallback::beat_text(scenario, conflict, &state.phase, beat),
                    source: Source::Fallback,
                    age_ms: None,
                    provenance: None,
                    served_for: key,
                },
            }
        } else if let Some((conflict, n)) = scene.conflicts.iter().find_map(|c| {
            // Every conflict here is settled: its resolution's narration tells the aftermath.
            let n = cached.narration.get(&(c.clone(), resolved.clone()))?;
            (n.provenance.context_hash == narration_key(c, &resolved)).then_some((c, n))
        }) {
            NarrationPiece {
                text: n.text.clone(),
                source: Source::Cache,
                age_ms: age(n.provenance.produced_at),
                provenance: Some(PieceProvenance::of(&n.provenance)),
                served_for: narration_key(conflict, &resolved).0,
            }
        } else {
            NarrationPiece {
                text: fallback::scene_line(scenario, &scene.id),
                source: Source::Fallback,
                age_ms: None,
                provenance: None,
                served_for: format!("scene:{}", scene.id),
            }
        };

        // The social bundle is game-wide: served while it is at most `social_max_lag` events
        // behind the world (its age bound), else the rules' bundle.
        let fresh_social = cached.social.as_ref().filter(|b| {
            after
                .world_version()
                .saturating_sub(b.provenance.world_version)
                <= config.social_max_lag
        });
        let (bundle, source) = match fresh_social {
            Some(b) => (b.clone(), Source::Cache),
            None => {
                let context = after.context_hash(scenario, &scene.id);
                (
                    fallback::social_bundle(scenario, after, &context, now),
                    Source::Fallback,
                )
            }
        };
        let social = SocialPiece {
            gossip: bundle
                .gossip
                .iter()
                .map(|g| GossipLine {
                    from: g.from.to_string(),
                    about: g.about.to_string(),
                    line: g.line.clone(),
                })
                .collect(),
            reputation: bundle
                .reputation
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            source,
            age_ms: (source == Source::Cache).then(|| (now - bundle.provenance.produced_at).max(0)),
            provenance: (source == Source::Cache).then(|| PieceProvenance {
                made_for: SOCIAL_KEY.into(),
                ..PieceProvenance::of(&bundle.provenance)
            }),
            served_for: SOCIAL_KEY.into(),
        };

        let canon = match &cached.canon {
            Some(refs) => CanonPiece {
                references: refs
                    .items
                    .iter()
                    .filter(|r| scene.stakeholders.contains(&r.stakeholder_id))
                    .map(|r| CanonLine {
                        stakeholder_id: r.stakeholder_id.to_string(),
                        line: r.line.clone(),
                    })
                    .collect(),
                source: Source::Cache,
                age_ms: age(refs.provenance.produced_at),
                provenance: Some(PieceProvenance {
                    made_for: CANON_REFS_KEY.into(),
                    ..PieceProvenance::of(&refs.provenance)
                }),
                served_for: CANON_REFS_KEY.into(),
            },
            None => CanonPiece {
                references: Vec::new(),
                source: Source::Fallback,
                age_ms: None,
                provenance: None,
                served_for: CANON_REFS_KEY.into(),
            },
        };
        Pieces {
            narration,
            social,
            canon,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn answer(
        &self,
        scenario: &Scenario,
        scene: &Scene,
        after: &GameState,
        action: &PlayerAction,
        claimed: &[PlannedAction],
        served_for: &str,
        now: i64,
        degraded: bool,
        dialogue: Option<RequestId>,
    ) -> ActionAnswer {
        let reactions: Vec<Reaction> = scene
            .stakeholders
            .iter()
            .filter_map(|id| scenario.stakeholder(id))
            .map(
                |who| match claimed.iter().find(|c| c.stakeholder_id == who.id) {
                    Some(p) => Reaction {
                        stakeholder_id: who.id.to_string(),
                        text: p.payload.line.clone(),
                        intent: p.payload.intent.clone(),
                        behaviour: p.payload.behaviour.clone(),
                        source: Source::Precomputed,
                        age_ms: Some((now - p.provenance.produced_at).max(0)),
                        provenance: Some(PieceProvenance::of(&p.provenance)),
                        served_for: served_for.to_owned(),
                    },
                    None => {
                        let m = fallback::stakeholder_move(
                            scenario,
                            after,
                            who,
                            action.kind,
                            after.turn,
                        );
                        Reaction {
                            stakeholder_id: who.id.to_string(),
                            text: m.line,
                            intent: m.intent,
                            behaviour: m.behaviour,
                            source: Source::Fallback,
                            age_ms: None,
                            provenance: None,
                            served_for: served_for.to_owned(),
                        }
                    }
                },
            )
            .collect();
        for r in &reactions {
            record_piece("reaction", r.source);
        }
        record_piece("narration", self.narration.source);
        record_piece("social", self.social.source);
        record_piece("canon", self.canon.source);
        ActionAnswer {
            action_id: action.id.to_string(),
            kind: action.kind.as_str().to_owned(),
            turn: after.turn,
            seq: after.seq,
            reactions,
            narration: self.narration.clone(),
            social: self.social.clone(),
            canon: self.canon.clone(),
            degraded,
            dispatched: Vec::new(),
            dialogue_request_id: dialogue.map(|r| r.to_string()),
        }
    }
}
