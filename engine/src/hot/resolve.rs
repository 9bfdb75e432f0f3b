//! Resolving one player action — ARCHITECTURE.md, "One player action":
//!
//! 1. validate; a replayed `Idempotency-Key` returns the stored answer;
//! 2. one cache round trip for the content the scene may need, inside its share of the budget
//!    (a slow or failed read degrades those pieces to fallbacks);
//! 3. the game's writer ([`crate::write`]) applies the rules to the state it owns ([`apply`]);
//! 4. the committer writes the event, the claim, the idempotency record, the outbox and the
//!    jobs in one transaction, and the answer is built from what was claimed ([`Finish`]);
//! 5. answer, once committed — every piece with its source — or 503 when the budget ran out.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};

use hotpath_cache::GameId;
use hotpath_cache::cache::CacheError;
use hotpath_cache::events::{ConflictPhase, GameEvent};
use hotpath_cache::ids::{ActionId, RequestId, SceneId, StakeholderId};
use hotpath_cache::model::{
    ActionKind, PlannedAction, PlayerAction, beat_key, narration_key, reaction_key,
};
use hotpath_cache::scenario::{Scenario, Scene};
use hotpath_cache::state::GameState;
use hotpath_cache::store::{
    BatchItem, ClaimQuery, Claimed, Finish, Finished, IdempotencyKey, PlayerRecord, ReadyQuery,
};
use hotpath_cache::time::now_ms;

use super::answer::*;
use super::dispatch::{self, Admission, PlanInput};
use super::fallback;
use super::reads::{ActionReads, CachedContent};
use super::rules;
use super::{HotConfig, HotError, HotPath};
use crate::write::Act;

/// Longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY: usize = 200;

/// An action as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ActionInput {
    pub scene_id: String,
    pub kind: Option<String>,
    pub text: String,
    pub target: Option<String>,
}

/// The answer, and whether it is a replay of a stored one.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub answer: serde_json::Value,
    pub replayed: bool,
}

/// A validated action: the scene exists, the kind is known, the target is present.
struct Valid<'s> {
    scene: &'s Scene,
    kind: ActionKind,
    target: Option<StakeholderId>,
}

fn validate<'s>(scenario: &'s Scenario, input: &ActionInput) -> Result<Valid<'s>, HotError> {
    let scene = SceneId::new(input.scene_id.clone())
        .ok()
        .and_then(|id| scenario.scene(&id))
        .ok_or_else(|| HotError::NotFound(format!("no scene `{}` in this game", input.scene_id)))?;
    let explicit = match &input.kind {
        None => None,
        Some(k) => Some(ActionKind::parse(k).ok_or_else(|| {
            let known: Vec<_> = ActionKind::ALL.iter().map(|k| k.as_str()).collect();
            HotError::Unprocessable(format!(
                "unknown action kind `{k}`; expected one of: {}",
                known.join(", ")
            ))
        })?),
    };
    let chars = input.text.chars().count();
    if input.text.trim().is_empty() {
        return Err(HotError::Unprocessable("`text` must not be empty".into()));
    }
    if chars > rules::MAX_TEXT_CHARS {
        return Err(HotError::Unprocessable(format!(
            "`text` is {chars} characters; at most {} are accepted",
            rules::MAX_TEXT_CHARS
        )));
    }
    let target = match &input.target {
        None => None,
        Some(t) => {
            let id = StakeholderId::new(t.clone())
                .ok()
                .filter(|id| scenario.stakeholder(id).is_some())
                .ok_or_else(|| HotError::NotFound(format!("no stakeholder `{t}` in this game")))?;
            if !scene.stakeholders.contains(&id) {
                return Err(HotError::Unprocessable(format!(
                    "stakeholder `{t}` is not in scene `{}`",
                    scene.id
                )));
            }
            Some(id)
        }
    };
    Ok(Valid {
        scene,
        kind: rules::classify(explicit, &input.text),
        target,
    })
}

fn request_hash(game: GameId, input: &ActionInput) -> String {
    let canonical = serde_json::to_vec(&(game, input)).unwrap_or_default();
    hotpath_cache::hex::hex(&Sha256::digest(&canonical))
}

fn record_piece(piece: &'static str, source: Source) {
    metrics::counter!("hotpath_answer_pieces_total", "piece" => piece, "source" => source.as_str())
        .increment(1);
}

/// Resolves `input` by `player` in `game`.
pub async fn resolve(
    hot: &HotPath,
    player: &PlayerRecord,
    game: GameId,
    input: ActionInput,
    idempotency_key: Option<String>,
) -> Result<Resolved, HotError> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + hot.config.budget;
    let scenario = hot.scenario_of(game).await?;
    let valid = validate(&scenario, &input)?;

    // 1. A replayed key returns the stored answer; the same key with another request is refused.
    let idempotency = match idempotency_key {
        Some(key) => {
            if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
                return Err(HotError::Unprocessable(format!(
                    "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} bytes"
                )));
            }
            let hash = request_hash(game, &input);
            if let Some(replay) = replay(hot, player, &key, &hash, deadline).await? {
                return Ok(replay);
            }
            Some(IdempotencyKey {
                player_id: player.id,
                key,
                request_hash: hash,
            })
        }
        None => None,
    };

    // 2. One round trip for the content the scene may need, within its share of the budget.
    let (batch, reads) = ActionReads::plan(game, &scenario, valid.scene);
    let read_deadline = tokio::time::Instant::now() + hot.config.cache_budget();
    let mut degraded = false;
    let cached = match tokio::time::timeout_at(read_deadline, batch.fetch(&*hot.cache)).await {
        Ok(Ok(fetched)) => reads.take(fetched),
        Ok(Err(CacheError::Backend(e))) | Ok(Err(CacheError::Decode { message: e, .. })) => {
            tracing::warn!(%game, error = %e, "cache read failed; answering from fallbacks");
            degraded = true;
            CachedContent::default()
        }
        Err(_) => {
            tracing::warn!(%game, "cache read timed out; answering from fallbacks");
            degraded = true;
            CachedContent::default()
        }
    };

    let action = PlayerAction {
        id: ActionId::generate(),
        game_id: game,
        player_id: player.id,
        scene_id: valid.scene.id.clone(),
        kind: valid.kind,
        text: input.text.clone(),
        target: valid.target.clone(),
    };
    let dialogue =
        (valid.kind == ActionKind::Say && valid.target.is_some()).then(RequestId::generate);

    // 3–5. The game's writer applies it; the committer makes it durable.
    let answer = hot
        .writes
        .act(
            &scenario,
            Act {
                action,
                dialogue,
                cached: Arc::new(cached),
                degraded,
                idempotency,
                deadline,
                reply: None,
            },
        )
        .await?;
    metrics::histogram!("hotpath_action_seconds").record(started.elapsed().as_secs_f64());
    if degraded {
        metrics::counter!("hotpath_degraded_answers_total").increment(1);
    }
    Ok(Resolved {
        answer,
        replayed: false,
    })
}

/// The stored answer of `key`, if it was recorded for this very request.
pub(crate) async fn replay(
    hot: &HotPath,
    player: &PlayerRecord,
    key: &str,
    hash: &str,
    deadline: tokio::time::Instant,
) -> Result<Option<Resolved>, HotError> {
    let stored = tokio::time::timeout_at(deadline, hot.store.idempotent_response(player.id, key))
        .await
        .map_err(|_| HotError::Unavailable("database timed out".into()))??;
    match stored {
        None => Ok(None),
        Some(s) if s.request_hash == hash => Ok(Some(Resolved {
            answer: s.response,
            replayed: true,
        })),
        Some(_) => Err(HotError::Unprocessable(
            "this Idempotency-Key was already used for a different request".into(),
        )),
    }
}

/// The writer's half of an action: applies `act` to `before` and returns the state after it and
/// the batch item that commits it. Its [`Finish`] builds the answer from what the claim got and
/// plans the jobs against the guards the transaction found; it is pure, since a batch that
/// rolls back runs it again. `asked` is what this game's writer has already had queued.
pub(crate) fn apply(
    scenario: &Arc<Scenario>,
    before: &GameState,
    act: &Act,
    config: &HotConfig,
    asked: Arc<HashSet<String>>,
) -> (GameState, BatchItem) {
    let action = act.action.clone();
    let scene = scenario
        .scene(&action.scene_id)
        .expect("the scene was validated against this scenario");
    let event = rules::apply_action(scenario, before, &action);
    let mut after = before.clone();
    after.apply(scenario, before.seq + 1, &event);
    let now = now_ms();
    let claim = ClaimQuery {
        game_id: action.game_id,
        scene_id: scene.id.clone(),
        stakeholders: scene.stakeholders.clone(),
        context_hash: reaction_key(&before.context_hash(scenario, &scene.id), action.kind),
        now,
    };
    let ready = ReadyQuery {
        scene_id: scene.id.clone(),
        stakeholders: scene.stakeholders.clone(),
        context_hash: reaction_key(&after.context_hash(scenario, &scene.id), action.kind),
    };
    let served_for = claim.context_hash.0.clone();
    let pieces = Pieces::build(scenario, scene, before, &after, &act.cached, now, config);
    let finish: Finish = {
        let (scenario, before, after) = (scenario.clone(), before.clone(), after.clone());
        let (cached, degraded, dialogue) = (act.cached.clone(), act.degraded, act.dialogue);
        let config = config.clone();
        Box::new(move |claimed: Claimed| {
            let scene = scenario
                .scene(&action.scene_id)
                .expect("the scene was validated against this scenario");
            let mut answer = pieces.answer(
                &scenario,
                scene,
                &after,
                &action,
                &claimed.claimed,
                &served_for,
                now,
                degraded,
                dialogue,
            );
            let jobs = dispatch::plan(&PlanInput {
                scenario: &scenario,
                scene,
                before: &before,
                after: &after,
                action: &action,
                ready: claimed.ready.as_ref(),
                cached: &cached,
                dialogue,
                config: &config,
                asked: &asked,
            });
            let queued = dispatch::queue(
                jobs,
                &scene.id,
                &Admission {
                    held: &claimed.held,
                    backlog: claimed.backlog,
                    now_secs: (now / 1000).max(0) as u64,
                },
                &config,
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
                state_updated(&scenario, &after),
            ];
            events.extend(queued.events);
            Finished {
                response: serde_json::to_value(answer).unwrap_or_default(),
                jobs: queued.jobs,
                events,
            }
        })
    };
    let item = BatchItem {
        game_id: act.action.game_id,
        seq: before.seq + 1,
        event,
        claim: Some(claim),
        ready: Some(ready),
        idempotency: act.idempotency.clone(),
        finish,
    };
    (after, item)
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
