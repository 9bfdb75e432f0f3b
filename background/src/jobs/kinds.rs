//! One handler per job kind, all the same shape: load the world, skip if there is nothing to
//! do, ask the model, validate, write idempotently, say what was written. What each writes is
//! the contract with the hot path:
//!
//! | kind | writes |
//! |---|---|
//! | scene reactions | `planned_stakeholder_actions` rows, kind `reaction`, one per (present stakeholder, action kind) short of the target, for the job's context (`model::reaction_key`) — one call for the whole scene |
//! | phase narration | cache `keys::narration` |
//! | beat descriptions | cache `keys::beat`, every beat of the phase — one call |
//! | social bundle | cache `keys::social` |
//! | conflict canonization | `canon_events` row, `conflict_canonized` logged; queues canon references |
//! | canon references | cache `keys::canon_references` |
//! | dialogue reply | `dialogue.chunk`… then `dialogue.done` on the stream, `dialogue_replied` logged |
//! | cleanup | expires ready rows past `expires_at`, deletes old spent rows |

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use hotpath_cache::StakeholderId;
use hotpath_cache::cache::{CacheExt, Key, keys};
use hotpath_cache::events::{GameEvent, LoggedEvent};
use hotpath_cache::ids::PlannedActionId;
use hotpath_cache::jobs::*;
use hotpath_cache::model::*;
use hotpath_cache::state::ContextHash;
use hotpath_cache::time::{Millis, now_ms};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::context::{World, context_of};
use super::{Deps, JobSettings, Outcome, Try, TryError};
use crate::output;
use crate::prompts;

/// Reactions are written above every action so the hot path serves them first.
pub const REACTION_PRIORITY: i32 = 100;

pub async fn run(
    job: &Job,
    t: &Try<'_>,
    deps: &Deps,
    s: &JobSettings,
) -> Result<Outcome, TryError> {
    match job {
        Job::PrepareSceneReactions(j) => prepare(j, t, deps, s).await,
        Job::NarratePhaseTransition(j) => narration(j, t, deps, s).await,
        Job::GenerateBeatDescription(j) => beats(j, t, deps, s).await,
        Job::GenerateSocialBundle(j) => social(j, t, deps, s).await,
        Job::CanonizeConflict(j) => canonize(j, t, deps, s).await,
        Job::GenerateCanonReferences(j) => canon_references(j, t, deps, s).await,
        Job::StreamDialogueReply(j) => dialogue(j, t, deps, s).await,
        Job::CleanupExpiredActions(j) => cleanup(j, deps).await,
    }
}

fn provenance(context: ContextHash, world_version: u64, model: &str, kind: JobKind) -> Provenance {
    Provenance {
        context_hash: context,
        world_version,
        produced_at: now_ms(),
        model: model.to_owned(),
        prompt_version: prompts::version(kind),
    }
}

fn expiry(s: &JobSettings) -> Millis {
    now_ms() + s.planned_ttl.as_millis() as Millis
}

/// The cached value under `key` if it was made at `world_version` or later: a job run again
/// finds its own result and does not call the model twice. A cache that does not answer is an
/// error, not a miss: the result would go to that cache.
async fn cached_since<T, F>(
    deps: &Deps,
    key: &Key<T>,
    world_version: u64,
    version_of: F,
) -> Result<Option<T>, TryError>
where
    T: DeserializeOwned + Send,
    F: Fn(&T) -> u64,
{
    let value = match deps.cache.get_typed(key).await {
        Ok(value) => value,
        Err(hotpath_cache::cache::CacheError::Decode { .. }) => None,
        Err(e) => return Err(TryError::Unwritable(format!("cache unavailable: {e}"))),
    };
    Ok(value.filter(|v| version_of(v) >= world_version))
}

async fn put<T: Serialize + Sync>(
    deps: &Deps,
    key: &Key<T>,
    value: &T,
    ttl: Duration,
    what: &str,
) -> Result<Outcome, TryError> {
    deps.cache
        .set_typed(key, value, ttl)
        .await
        .map_err(TryError::infra)?;
    Ok(Outcome::Written(vec![(what.into(), key.as_str().into())]))
}

/// Whether the context `j` prepares for is still worth preparing: it is the scene's context
/// now, or every conflict of the scene is in its current phase or the one after (the context a
/// phase change about to happen will bring).
fn still_ahead(world: &World, j: &PrepareSceneReactions) -> bool {
    if world.state.context_hash(&world.scenario, &j.scene_id) == j.context_hash {
        return true;
    }
    j.conflicts.iter().all(|at| {
        let (Some(c), Some(now)) = (
            world.scenario.conflict(&at.conflict_id),
            world.state.conflicts.get(&at.conflict_id),
        ) else {
            return false;
        };
        if now.resolved {
            return at.resolved;
        }
        let idx = c.phases.iter().position(|p| p.id == now.phase);
        let at_idx = c.phases.iter().position(|p| p.id == at.phase_id);
        matches!((idx, at_idx), (Some(i), Some(a)) if a == i || a == i + 1) && !at.resolved
    })
}

async fn prepare(
    j: &PrepareSceneReactions,
    t: &Try<'_>,
    deps: &Deps,
    s: &JobSettings,
) -> Result<Outcome, TryError> {
    let world = World::load(deps, j.game_id).await?;
    let scene = world
        .scenario
        .scene(&j.scene_id)
        .ok_or_else(|| TryError::Fatal(format!("unknown scene `{}`", j.scene_id)))?;
    if !still_ahead(&world, j) {
        // Claims match the context exactly: reactions for a context that has passed would
        // never be served, so do not pay for them.
        return Ok(Outcome::Skipped(format!(
            "context {} of scene {} has moved on",
            j.context_hash, j.scene_id
        )));
    }
    let now = now_ms();
    let mut wanted: BTreeMap<(StakeholderId, ActionKind), u32> = BTreeMap::new();
    for kind in ActionKind::ALL {
        let key = reaction_key(&j.context_hash, kind);
        let ready = deps
            .store
            .ready_counts(j.game_id, &j.scene_id, &key, now)
            .await
            .map_err(TryError::infra)?;
        for who in &scene.stakeholders {
            let have = ready.get(who).copied().unwrap_or(0);
            if have < s.reactions_per_kind {
                wanted.insert((who.clone(), kind), s.reactions_per_kind - have);
            }
        }
    }
    if wanted.is_empty() {
        return Ok(Outcome::Skipped(
            "every reaction of this context is ready".into(),
        ));
    }
    let mut facts = world.base_facts();
    facts.insert(
        "scene".into(),
        json!({"id": scene.id, "name": scene.name, "description": scene.description}),
    );
    let present: Vec<serde_json::Value> = scene
        .stakeholders
        .iter()
        .filter_map(|id| world.scenario.stakeholder(id))
        .map(|who| {
            let mut v = json!(who);
            v["standing"] = json!(world.state.standing.get(&who.id).copied().unwrap_or(0));
            v
        })
        .collect();
    facts.insert("present".into(), json!(present));
    // The phases of the context being prepared, which may be the next ones.
    let conflicts: Vec<serde_json::Value> = j
        .conflicts
        .iter()
        .filter_map(|at| {
            let c = world.scenario.conflict(&at.conflict_id)?;
            let phase = c.phases.iter().find(|p| p.id == at.phase_id)?;
            let intensity = world
                .state
                .conflicts
                .get(&at.conflict_id)
                .map_or(phase.enter_at, |s| s.intensity.max(phase.enter_at));
            Some(json!({"id": c.id, "name": c.name, "phase": phase.name,
                        "intensity": intensity, "resolved": at.resolved}))
        })
        .collect();
    facts.insert("conflicts".into(), json!(conflicts));
    facts.insert(
        "wanted".into(),
        json!(
            wanted
                .iter()
                .map(|((who, kind), n)| json!({"stakeholder_id": who, "action_kind": kind.as_str(), "count": n}))
                .collect::<Vec<_>>()
        ),
    );
    let (answer, _) = t
        .ask(
            deps,
            s,
            JobKind::PrepareSceneReactions,
            (Some(j.game_id), None),
            facts,
        )
        .await?;
    let moves = output::scene_reactions(&answer.text, &wanted)?;
    let mut rows = Vec::new();
    let mut taken: BTreeMap<(StakeholderId, ActionKind), u32> = BTreeMap::new();
    let created = now_ms();
    for (who, kind, payload) in moves {
        let n = taken.entry((who.clone(), kind)).or_default();
        if *n >= wanted[&(who.clone(), kind)] {
            continue;
        }
        *n += 1;
        let row = PlannedAction {
            id: PlannedActionId::generate(),
            game_id: j.game_id,
            scene_id: j.scene_id.clone(),
            stakeholder_id: who.clone(),
            kind: PlannedKind::Reaction,
            payload,
            priority: REACTION_PRIORITY,
            status: PlannedStatus::Ready,
            expires_at: expiry(s),
            dedupe_key: format!("{}:{}:{}:{}", j.dedupe_key(), who, kind.as_str(), n),
            reacts_to: None,
            provenance: provenance(
                reaction_key(&j.context_hash, kind),
                j.world_version,
                &answer.model,
                JobKind::PrepareSceneReactions,
            ),
            created_at: created,
        };
        rows.push(row);
    }
    let written = deps
        .store
        .insert_planned(&rows)
        .await
        .map_err(TryError::infra)?;
    if written == 0 {
        return Ok(Outcome::Skipped(
            "these reactions were already written".into(),
        ));
    }
    // One announcement for the scene, not one per row: a preparation writes dozens.
    Ok(Outcome::Written(vec![(
        "reactions".to_owned(),
        format!(
            "planned_stakeholder_actions/{}/{} ({written} rows)",
            j.scene_id, j.context_hash
        ),
    )]))
}

async fn narration(
    j: &NarratePhaseTransition,
    t: &Try<'_>,
    deps: &Deps,
    s: &JobSettings,
) -> Result<Outcome, TryError> {
    let key = keys::narration(j.game_id, &j.conflict_id, &j.phase_id);
    if cached_since(deps, &key, j.world_version, |n: &Narration| {
        n.provenance.world_version
    })
    .await?
    .is_some()
    {
        return Ok(Outcome::Skipped("narration already written".into()));
    }
    let world = World::load(deps, j.game_id).await?;
    let mut facts = world.base_facts();
    if j.phase_id.as_str() == hotpath_cache::model::RESOLVED_PHASE {
        // The resolution: the conflict is settled; its scenes show the aftermath.
        let conflict = world
            .scenario
            .conflict(&j.conflict_id)
            .ok_or_else(|| TryError::Fatal(format!("unknown conflict `{}`", j.conflict_id)))?;
        facts.insert("conflict".into(), json!(conflict));
        facts.insert(
            "phase".into(),
            json!({"id": j.phase_id, "name": "Resolution: it is settled", "beats": []}),
        );
        facts.insert("intensity".into(), json!(conflict.resolve_at));
        facts.insert("resolved".into(), json!(true));
        facts.insert("involved".into(), json!(conflict.stakeholders));
    } else {
        let (conflict, phase) = world.conflict_phase(&j.conflict_id, &j.phase_id)?;
        facts.insert("conflict".into(), json!(conflict));
        facts.insert("phase".into(), json!(phase));
        facts.insert(
            "intensity".into(),
            json!(
                world
                    .state
                    .conflicts
                    .get(&conflict.id)
                    .map_or(0, |c| c.intensity)
            ),
        );
        facts.insert("involved".into(), json!(conflict.stakeholders));
    }
    let (answer, _) = t
        .ask(
            deps,
            s,
            JobKind::NarratePhaseTransition,
            (Some(j.game_id), None),
            facts,
        )
        .await?;
    let value = Narration {
        conflict_id: j.conflict_id.clone(),
        phase_id: j.phase_id.clone(),
        text: output::prose(&answer.text)?,
        provenance: provenance(
            narration_key(&j.conflict_id, &j.phase_id),
            j.world_version,
            &answer.model,
            JobKind::NarratePhaseTransition,
        ),
    };
    put(deps, &key, &value, s.cache_ttl, "narration").await
}

async fn beats(
    j: &GenerateBeatDescription,
    t: &Try<'_>,
    deps: &Deps,
    s: &JobSettings,
) -> Result<Outcome, TryError> {
    let world = World::load(deps, j.game_id).await?;
    let (conflict, phase) = world.conflict_phase(&j.conflict_id, &j.phase_id)?;
    let count = phase.beats.len().max(1);
    let mut missing = false;
    for beat in 0..count as u32 {
        let key = keys::beat(j.game_id, &j.conflict_id, &j.phase_id, beat);
        if cached_since(deps, &key, 0, |b: &BeatText| b.provenance.world_version)
            .await?
            .is_none()
        {
            missing = true;
        }
    }
    if !missing {
        return Ok(Outcome::Skipped(
            "every beat of this phase is written".into(),
        ));
    }
    let mut facts = world.base_facts();
    facts.insert("conflict".into(), json!(conflict));
    facts.insert("phase".into(), json!(phase));
    facts.insert("count".into(), json!(count));
    let (answer, _) = t
        .ask(
            deps,
            s,
            JobKind::GenerateBeatDescription,
            (Some(j.game_id), None),
            facts,
        )
        .await?;
    let texts = output::beats(&answer.text, count)?;
    let mut written = Vec::new();
    for (beat, text) in texts.into_iter().enumerate() {
        let beat = beat as u32;
        let key = keys::beat(j.game_id, &j.conflict_id, &j.phase_id, beat);
        let value = BeatText {
            conflict_id: j.conflict_id.clone(),
            phase_id: j.phase_id.clone(),
            beat,
            text,
            provenance: provenance(
                beat_key(&j.conflict_id, &j.phase_id, beat),
                j.world_version,
                &answer.model,
                JobKind::GenerateBeatDescription,
            ),
        };
        deps.cache
            .set_typed(&key, &value, s.cache_ttl)
            .await
            .map_err(TryError::infra)?;
        written.push(("beat".to_owned(), key.as_str().to_owned()));
    }
    Ok(Outcome::Written(written))
}

async fn social(
    j: &GenerateSocialBundle,
    t: &Try<'_>,
    deps: &Deps,
    s: &JobSettings,
) -> Result<Outcome, TryError> {
    let key = keys::social(j.game_id);
    if cached_since(deps, &key, j.world_version, |b: &SocialBundle| {
        b.provenance.world_version
    })
    .await?
    .is_some()
    {
        return Ok(Outcome::Skipped("social bundle already written".into()));
    }
    let world = World::load(deps, j.game_id).await?;
    let facts = world.base_facts();
    let (answer, _) = t
        .ask(
            deps,
            s,
            JobKind::GenerateSocialBundle,
            (Some(j.game_id), None),
            facts,
        )
        .await?;
    let (gossip, reputation) = output::social(&answer.text, &world.scenario)?;
    let value = SocialBundle {
        gossip,
        reputation,
        provenance: provenance(
            context_of(&["social", &j.world_version.to_string()]),
            j.world_version,
            &answer.model,
            JobKind::GenerateSocialBundle,
        ),
    };
    put(deps, &key, &value, s.cache_ttl, "social").await
}

async fn canonize(
    j: &CanonizeConflict,
    t: &Try<'_>,
    deps: &Deps,
    s: &JobSettings,
) -> Result<Outcome, TryError> {
    let dedupe_key = j.dedupe_key();
    let existing = deps
        .store
        .canon_events(j.game_id)
        .await
        .map_err(TryError::infra)?;
    if existing.iter().any(|c| c.dedupe_key == dedupe_key) {
        return Ok(Outcome::Skipped("conflict already canonized".into()));
    }
    let world = World::load(deps, j.game_id).await?;
    let conflict = world
        .scenario
        .conflict(&j.conflict_id)
        .ok_or_else(|| TryError::Fatal(format!("unknown conflict `{}`", j.conflict_id)))?;
    let state = world.state.conflicts.get(&conflict.id);
    let phase = state
        .and_then(|st| conflict.phases.iter().find(|p| p.id == st.phase))
        .unwrap_or(&conflict.phases[0]);
    let mut facts = world.base_facts();
    facts.insert("conflict".into(), json!(conflict));
    facts.insert("phase".into(), json!(phase));
    facts.insert(
        "intensity".into(),
        json!(state.map_or(0, |st| st.intensity)),
    );
    facts.insert("involved".into(), json!(conflict.stakeholders));
    let (answer, _) = t
        .ask(
            deps,
            s,
            JobKind::CanonizeConflict,
            (Some(j.game_id), None),
            facts,
        )
        .await?;
    let c = output::canon(&answer.text)?;
    let now = now_ms();
    let event = CanonEvent {
        id: uuid::Uuid::now_v7(),
        game_id: j.game_id,
        conflict_id: j.conflict_id.clone(),
        title: c.title,
        summary: c.summary,
        dedupe_key,
        provenance: provenance(
            context_of(&["canon", j.conflict_id.as_str()]),
            j.world_version,
            &answer.model,
            JobKind::CanonizeConflict,
        ),
        created_at: now,
    };
    if !deps
        .store
        .insert_canon(&event)
        .await
        .map_err(TryError::infra)?
    {
        return Ok(Outcome::Skipped("conflict already canonized".into()));
    }
    let seq = deps
        .store
        .append_event_next(
            j.game_id,
            &LoggedEvent::ConflictCanonized {
                conflict_id: j.conflict_id.clone(),
                canon_id: event.id,
            },
        )
        .await
        .map_err(TryError::infra)?;
    if let Some(queue) = &deps.queue {
        // New canon makes new references possible; a failed push only delays them until the
        // engine dispatches again.
        let next = GenerateCanonReferences {
            game_id: j.game_id,
            world_version: seq,
        };
        if let Err(e) = queue.push(next.into()).await {
            tracing::warn!(error = %e, "could not queue canon references");
        }
    }
    Ok(Outcome::Written(vec![(
        "canon".into(),
        format!("canon_events/{}", event.id),
    )]))
}

async fn canon_references(
    j: &GenerateCanonReferences,
    t: &Try<'_>,
    deps: &Deps,
    s: &JobSettings,
) -> Result<Outcome, TryError> {
    let key = keys::canon_references(j.game_id);
    if cached_since(deps, &key, j.world_version, |r: &CanonReferences| {
        r.provenance.world_version
    })
    .await?
    .is_some()
    {
        return Ok(Outcome::Skipped("canon references already written".into()));
    }
    let canon = deps
        .store
        .canon_events(j.game_id)
        .await
        .map_err(TryError::infra)?;
    if canon.is_empty() {
        return Ok(Outcome::Skipped("no canon yet".into()));
    }
    let world = World::load(deps, j.game_id).await?;
    let mut facts = world.base_facts();
    facts.insert(
        "canon".into(),
        json!(
            canon
                .iter()
                .map(|c| json!({"id": c.id, "title": c.title, "summary": c.summary}))
                .collect::<Vec<_>>()
        ),
    );
    let ids: BTreeSet<uuid::Uuid> = canon.iter().map(|c| c.id).collect();
    let (answer, _) = t
        .ask(
            deps,
            s,
            JobKind::GenerateCanonReferences,
            (Some(j.game_id), None),
            facts,
        )
        .await?;
    let items = output::canon_references(&answer.text, &world.scenario, &ids)?;
    let value = CanonReferences {
        items,
        provenance: provenance(
            context_of(&["canon-refs", &j.world_version.to_string()]),
            j.world_version,
            &answer.model,
            JobKind::GenerateCanonReferences,
        ),
    };
    put(deps, &key, &value, s.cache_ttl, "canon_references").await
}

async fn dialogue(
    j: &StreamDialogueReply,
    t: &Try<'_>,
    deps: &Deps,
    s: &JobSettings,
) -> Result<Outcome, TryError> {
    // The conversation it continues is within the window before the job's world version: the
    // rest of the log is not read. Replies are kept beside the log (see `DialogueReply`).
    let from = j
        .world_version
        .saturating_sub(super::context::CONVERSATION_WINDOW);
    let log = deps
        .store
        .events(j.game_id, from)
        .await
        .map_err(TryError::infra)?;
    let replies = deps
        .store
        .dialogue_replies(j.game_id, from)
        .await
        .map_err(TryError::infra)?;
    if replies.iter().any(|r| r.request_id == j.request_id) {
        return Ok(Outcome::Skipped("reply already recorded".into()));
    }
    let log = super::context::with_replies(log, replies);
    let world = World::load(deps, j.game_id).await?;
    let who = world.stakeholder(&j.stakeholder_id)?;
    let mut facts = world.stakeholder_facts(who, Some(&j.scene_id));
    facts.insert("topic".into(), json!(j.text));
    facts.insert("player".into(), json!(world.player_name(&j.player_id)));
    facts.insert(
        "conversation".into(),
        world.conversation(&log, &j.player_id, &j.stakeholder_id, j.world_version),
    );
    let request = t.request(
        s,
        JobKind::StreamDialogueReply,
        (Some(j.game_id), Some(j.player_id)),
        facts,
        false,
    )?;
    // A reply streamed by an earlier try whose publish or log failed is not asked again: its
    // chunks were seen; what is left is the done event and the log.
    let full = match deps.answers.get(t.job_id) {
        Some(kept) => {
            metrics::counter!("hotpath_llm_answers_reused_total", "kind" => JobKind::StreamDialogueReply.as_str())
                .increment(1);
            kept.text
        }
        None => {
            super::writable(deps, JobKind::StreamDialogueReply).await?;
            let full = stream_reply(j, t, deps, &request).await?;
            deps.answers.keep(
                t.job_id,
                crate::llm::Completion {
                    text: full.clone(),
                    usage: crate::llm::Usage::default(),
                    model: deps.provider.model().to_owned(),
                    truncated: false,
                },
            );
            full
        }
    };
    let text = output::dialogue(&full)?;
    deps.stream
        .publish(
            j.game_id,
            &GameEvent::DialogueDone {
                request_id: j.request_id,
                stakeholder_id: j.stakeholder_id.clone(),
                text: text.clone(),
                model: Some(deps.provider.model().to_owned()),
                prompt_version: Some(prompts::version(JobKind::StreamDialogueReply)),
            },
        )
        .await
        .map_err(TryError::infra)?;
    // Keyed by the request: two copies of this job running at once record one reply. Not in
    // the game log: only the game's writers append there.
    let recorded = deps
        .store
        .insert_dialogue_reply(&DialogueReply {
            game_id: j.game_id,
            request_id: j.request_id,
            answers_seq: j.world_version,
            player_id: j.player_id,
            stakeholder_id: j.stakeholder_id.clone(),
            text,
            created_at: now_ms(),
        })
        .await
        .map_err(TryError::infra)?;
    if recorded {
        Ok(Outcome::Written(vec![(
            "dialogue".into(),
            format!("dialogue_replies/{}/{}", j.game_id, j.request_id),
        )]))
    } else {
        Ok(Outcome::Skipped("reply already recorded".into()))
    }
}

/// Streams the model's reply to `j` as `dialogue.chunk` events; returns the whole text. The
/// call goes in the ledger however the stream ends: with the usage the provider reported at
/// the end, or else estimated from what was received, marked as an estimate.
async fn stream_reply(
    j: &StreamDialogueReply,
    t: &Try<'_>,
    deps: &Deps,
    request: &crate::llm::LlmRequest,
) -> Result<String, TryError> {
    let mut chunks = deps.provider.stream(request).await?;
    let mut full = String::new();
    let mut index = 0u32;
    let mut reported = None;
    let streamed: Result<(), TryError> = async {
        while let Some(delta) = chunks.next().await {
            let chunk = match delta? {
                crate::llm::Delta::Text(chunk) => chunk,
                crate::llm::Delta::Usage(usage) => {
                    reported = Some(usage);
                    continue;
                }
            };
            if chunk.is_empty() {
                continue;
            }
            full.push_str(&chunk);
            deps.stream
                .publish(
                    j.game_id,
                    &GameEvent::DialogueChunk {
                        request_id: j.request_id,
                        stakeholder_id: j.stakeholder_id.clone(),
                        index,
                        attempt: t.attempt,
                        text: chunk,
                    },
                )
                .await
                .map_err(TryError::infra)?;
            index += 1;
        }
        Ok(())
    }
    .await;
    let usage = reported.unwrap_or_else(|| {
        crate::llm::Usage::estimate(request.system.len() + request.prompt.len(), full.len())
    });
    t.called(deps.provider.model(), usage);
    streamed.map(|()| full)
}

async fn cleanup(j: &CleanupExpiredActions, deps: &Deps) -> Result<Outcome, TryError> {
    let now = now_ms();
    let expired = deps
        .store
        .expire_planned(now)
        .await
        .map_err(TryError::infra)?;
    let deleted = deps
        .store
        .delete_spent_planned(now - (j.retain_secs as Millis) * 1000)
        .await
        .map_err(TryError::infra)?;
    let events = deps
        .store
        .delete_stream_events(now - (j.stream_retain_secs as Millis) * 1000)
        .await
        .map_err(TryError::infra)?;
    let records = deps
        .store
        .delete_idempotency_records(
            now - (hotpath_cache::store::IDEMPOTENCY_RETAIN_SECS as Millis) * 1000,
        )
        .await
        .map_err(TryError::infra)?;
    // The model-call ledger is kept as long as the outbox.
    let calls = deps
        .store
        .delete_llm_calls(now - (j.stream_retain_secs as Millis) * 1000)
        .await
        .map_err(TryError::infra)?;
    let jobs = match &deps.queue {
        Some(q) => q
            .purge(DONE_JOBS_RETAIN_SECS, DEAD_JOBS_RETAIN_SECS)
            .await
            .map_err(TryError::infra)?,
        None => 0,
    };
    tracing::info!(
        expired,
        deleted,
        events,
        calls,
        jobs,
        records,
        "cleaned up planned actions, the outbox, the ledger, finished jobs and idempotency records"
    );
    Ok(Outcome::Skipped(format!(
        "expired {expired}, deleted {deleted} planned actions, {events} committed stream events, \
         {calls} ledger rows, {jobs} finished jobs and {records} idempotency records"
    )))
}
