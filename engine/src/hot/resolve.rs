//! Resolving one player action — steps 1–6 of ARCHITECTURE.md:
//!
//! 1. validate; a replayed `Idempotency-Key` returns the stored answer;
//! 2. one cache round trip for everything the action needs (snapshot, content); on a snapshot
//!    miss, fold the event log;
//! 3. apply the rules;
//! 4. in one transaction: append the event at the next seq, claim the scene's precomputed
//!    actions (one statement), record the answer under the idempotency key; a lost seq race
//!    reloads and retries;
//! 5. dispatch the jobs the new state calls for (bounded enqueue);
//! 6. answer — every piece with its source; a slow or failed read degrades that piece.

use std::time::Instant;

use sha2::{Digest, Sha256};

use hotpath_cache::GameId;
use hotpath_cache::cache::CacheError;
use hotpath_cache::events::{ConflictPhase, GameEvent, LoggedEvent};
use hotpath_cache::ids::{ActionId, RequestId, SceneId, StakeholderId};
use hotpath_cache::model::{ActionKind, PlannedAction, PlayerAction};
use hotpath_cache::scenario::{Scenario, Scene};
use hotpath_cache::state::GameState;
use hotpath_cache::store::{ActionCommit, ClaimQuery, IdempotencyKey, PlayerRecord, StoreError};
use hotpath_cache::time::now_ms;

use super::answer::*;
use super::dispatch::{self, PlanInput};
use super::fallback;
use super::reads::{ActionReads, CachedContent};
use super::rules;
use super::{HotError, HotPath};

/// How often a lost race for the next seq is retried before the client is told to retry.
const SEQ_ATTEMPTS: usize = 4;
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
    Sha256::digest(&canonical)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
            if let Some(replay) = replay(hot, player, &key, &hash).await? {
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

    // 2. One round trip for everything the action reads.
    let (batch, reads) = ActionReads::plan(game, &scenario, valid.scene);
    let mut degraded = false;
    let cached = match tokio::time::timeout_at(deadline, batch.fetch(&*hot.cache)).await {
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
    let mut before = hot
        .catch_up(game, &scenario, cached.snapshot.clone())
        .await?;

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

    // 3–4. Rules, then the one write; a lost seq race folds the newer events in and retries.
    let mut attempt = 0;
    let (after, committed) = loop {
        attempt += 1;
        let event = rules::apply_action(&scenario, &before, &action);
        let mut after = before.clone();
        after.apply(&scenario, before.seq + 1, &event);
        let now = now_ms();
        let claim = ClaimQuery {
            game_id: game,
            scene_id: valid.scene.id.clone(),
            stakeholders: valid.scene.stakeholders.clone(),
            context_hash: before.context_hash(&scenario, &valid.scene.id),
            now,
        };
        let pieces = Pieces::build(&scenario, valid.scene, &before, &after, &cached, now);
        let respond = |claimed: &[PlannedAction]| {
            let answer = pieces.answer(
                &scenario,
                valid.scene,
                &after,
                &action,
                claimed,
                now,
                degraded,
                dialogue,
            );
            serde_json::to_value(answer).unwrap_or_default()
        };
        let commit = ActionCommit {
            game_id: game,
            seq: before.seq + 1,
            event: &event,
            claim: Some(&claim),
            idempotency: idempotency.as_ref(),
            respond: &respond,
        };
        match tokio::time::timeout(hot.config.write_timeout, hot.store.commit_action(commit)).await
        {
            Ok(Ok(committed)) => break (after, committed),
            Ok(Err(StoreError::SeqTaken { .. })) if attempt < SEQ_ATTEMPTS => {
                before = hot.catch_up(game, &scenario, Some(before)).await?;
            }
            Ok(Err(StoreError::SeqTaken { .. })) => {
                return Err(HotError::Unavailable(
                    "too many concurrent actions in this game; retry".into(),
                ));
            }
            Ok(Err(StoreError::IdempotencyKeyTaken)) => {
                // A concurrent request with the same key won: answer what it recorded.
                let key = idempotency.as_ref().expect("only raised with a key");
                return replay(hot, player, &key.key, &key.request_hash)
                    .await?
                    .ok_or_else(|| {
                        HotError::Unavailable("idempotency record vanished; retry".into())
                    });
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                return Err(HotError::Unavailable(
                    "database timed out recording the action".into(),
                ));
            }
        }
    };

    hot.store_snapshot(after.clone());
    publish_applied(hot, &scenario, &action, &after);

    // 5. Dispatch what the new state calls for.
    let context = after.context_hash(&scenario, &valid.scene.id);
    let ready = tokio::time::timeout(
        hot.config.enqueue_timeout,
        hot.store
            .ready_counts(game, &valid.scene.id, &context, now_ms()),
    )
    .await
    .ok()
    .and_then(Result::ok);
    let jobs = dispatch::plan(&PlanInput {
        scenario: &scenario,
        scene: valid.scene,
        before: &before,
        after: &after,
        action: &action,
        ready: ready.as_ref(),
        cached: &cached,
        dialogue,
        config: &hot.config,
    });
    let dispatched = dispatch::push(hot, jobs).await;

    // 6. Answer.
    let mut answer = committed.response;
    answer["dispatched"] = serde_json::to_value(&dispatched).unwrap_or_default();
    metrics::histogram!("hotpath_action_seconds").record(started.elapsed().as_secs_f64());
    if degraded {
        metrics::counter!("hotpath_degraded_answers_total").increment(1);
    }
    Ok(Resolved {
        answer,
        replayed: false,
    })
}

async fn replay(
    hot: &HotPath,
    player: &PlayerRecord,
    key: &str,
    hash: &str,
) -> Result<Option<Resolved>, HotError> {
    let stored = tokio::time::timeout(
        hot.config.write_timeout,
        hot.store.idempotent_response(player.id, key),
    )
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

/// `action.applied` and `state.updated` go out after the answer is decided; a failing stream
/// costs clients a live update, never the action.
fn publish_applied(hot: &HotPath, scenario: &Scenario, action: &PlayerAction, after: &GameState) {
    let events = [
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
    let (stream, game) = (hot.stream.clone(), action.game_id);
    tokio::spawn(async move {
        for e in &events {
            if let Err(err) = stream.publish(game, e).await {
                tracing::warn!(%game, error = %err, "event not published");
                return;
            }
        }
    });
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
    ) -> Pieces {
        let age = |produced_at: i64| Some((now - produced_at).max(0));
        // A phase change in this scene is narrated; otherwise the current beat is described.
        let transition = rules::transitions(scenario, before, after)
            .into_iter()
            .find(|t| scene.conflicts.contains(&t.conflict_id));
        let narration = if let Some(t) = transition {
            match cached.narration.get(&(t.conflict_id.clone(), t.to.clone())) {
                Some(n) if !t.resolved => NarrationPiece {
                    text: n.text.clone(),
                    source: Source::Cache,
                    age_ms: age(n.provenance.produced_at),
                },
                _ => NarrationPiece {
                    text: fallback::phase_narration(scenario, &t.conflict_id, &t.to, t.resolved),
                    source: Source::Fallback,
                    age_ms: None,
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
            match cached
                .beats
                .get(&(conflict.clone(), state.phase.clone(), beat))
            {
                Some(b) => NarrationPiece {
                    text: b.text.clone(),
                    source: Source::Cache,
                    age_ms: age(b.provenance.produced_at),
                },
                None => NarrationPiece {
                    text: fallback::beat_text(scenario, conflict, &state.phase, beat),
                    source: Source::Fallback,
                    age_ms: None,
                },
            }
        } else {
            NarrationPiece {
                text: fallback::scene_line(scenario, &scene.id),
                source: Source::Fallback,
                age_ms: None,
            }
        };

        let (bundle, source) = match &cached.social {
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
            },
            None => CanonPiece {
                references: Vec::new(),
                source: Source::Fallback,
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

/// Logs an event the hot path appends outside an action (a player joining).
pub(crate) async fn append_outside_action(
    hot: &HotPath,
    game: GameId,
    event: &LoggedEvent,
) -> Result<u64, HotError> {
    tokio::time::timeout(
        hot.config.write_timeout,
        hot.store.append_event_next(game, event),
    )
    .await
    .map_err(|_| HotError::Unavailable("database timed out".into()))?
    .map_err(HotError::from)
}
