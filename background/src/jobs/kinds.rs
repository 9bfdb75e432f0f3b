//! One handler per job kind, all the same shape: load the world, skip if there is nothing to
//! do, ask the model, validate, write idempotently, say what was written. What each writes is
//! the contract with the hot path:
//!
//! | kind | writes |
//! |---|---|
//! | stakeholder action | `planned_stakeholder_actions` row, kind `action`, for the job's context |
//! | stakeholder reaction | row, kind `reaction`, `reacts_to` the event, priority above actions |
//! | stakeholder details | cache `keys::stakeholder_details` |
//! | phase narration | cache `keys::narration` |
//! | beat description | cache `keys::beat` |
//! | social bundle | cache `keys::social` |
//! | conflict canonization | `canon_events` row, `conflict_canonized` logged; queues canon references |
//! | canon references | cache `keys::canon_references` |
//! | dialogue reply | `dialogue.chunk`… then `dialogue.done` on the stream, `dialogue_replied` logged |
//! | cleanup | expires ready rows past `expires_at`, deletes old spent rows |

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
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

use super::context::{World, context_of, summarize};
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
        Job::GenerateStakeholderAction(j) => action(j, t, deps, s).await,
        Job::GenerateStakeholderReaction(j) => reaction(j, t, deps, s).await,
        Job::PopulateStakeholderDetails(j) => details(j, t, deps, s).await,
        Job::NarratePhaseTransition(j) => narration(j, t, deps, s).await,
        Job::GenerateBeatDescription(j) => beat(j, t, deps, s).await,
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
/// finds its own result and does not call the model twice.
async fn cached_since<T, F>(
    deps: &Deps,
    key: &Key<T>,
    world_version: u64,
    version_of: F,
) -> Option<T>
where
    T: DeserializeOwned + Send,
    F: Fn(&T) -> u64,
{
    let value = deps.cache.get_typed(key).await.ok().flatten()?;
    (version_of(&value) >= world_version).then_some(value)
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

async fn planned(deps: &Deps, row: PlannedAction, what: &str) -> Result<Outcome, TryError> {
    let id = row.id;
    if deps
        .store
        .insert_planned(&row)
        .await
        .map_err(TryError::infra)?
    {
        Ok(Outcome::Written(vec![(
            what.into(),
            format!("planned_stakeholder_actions/{id}"),
        )]))
    } else {
        Ok(Outcome::Skipped(format!(
            "a row with dedupe key `{}` already exists",
            row.dedupe_key
        )))
    }
}

/// A job that ran before (a redelivery, a duplicate) finds its row and does not pay the model
/// again; the unique dedupe key would drop its second row anyway.
async fn already_planned(deps: &Deps, dedupe_key: &str) -> Result<Option<Outcome>, TryError> {
    let exists = deps
        .store
        .planned_exists(dedupe_key)
        .await
        .map_err(TryError::infra)?;
    Ok(exists.then(|| {
        Outcome::Skipped(format!(
            "a row with dedupe key `{dedupe_key}` already exists"
        ))
    }))
}

async fn action(
    j: &GenerateStakeholderAction,
    t: &Try<'_>,
    deps: &Deps,
    s: &JobSettings,
) -> Result<Outcome, TryError> {
    if let Some(done) = already_planned(deps, &j.dedupe_key()).await? {
        return Ok(done);
    }
    let world = World::load(deps, j.game_id).await?;
    let who = world.stakeholder(&j.stakeholder_id)?;
    let now_context = world.state.context_hash(&world.scenario, &j.scene_id);
    if now_context != j.context_hash {
        // The hot path claims by context: an action for a context that has passed would never
        // be served, so do not pay for it.
        return Ok(Outcome::Skipped(format!(
            "context {} has moved on to {now_context}",
            j.context_hash
        )));
    }
    let facts = world.stakeholder_facts(who, Some(&j.scene_id));
    let (answer, _) = t
        .ask(
            deps,
            s,
            JobKind::GenerateStakeholderAction,
            (Some(j.game_id), None),
            facts,
        )
        .await?;
    let payload = output::stakeholder_move(&answer.text)?;
    let now = now_ms();
    let row = PlannedAction {
        id: PlannedActionId::generate(),
        game_id: j.game_id,
        scene_id: j.scene_id.clone(),
        stakeholder_id: j.stakeholder_id.clone(),
        kind: PlannedKind::Action,
        payload,
        // Earlier slots first; every action stays below every reaction.
        priority: 10 - j.slot.min(10) as i32,
        status: PlannedStatus::Ready,
        expires_at: expiry(s),
        dedupe_key: j.dedupe_key(),
        reacts_to: None,
        provenance: provenance(
            j.context_hash.clone(),
            j.world_version,
            &answer.model,
            JobKind::GenerateStakeholderAction,
        ),
        created_at: now,
    };
    planned(deps, row, "planned_action").await
}

async fn reaction(
    j: &GenerateStakeholderReaction,
    t: &Try<'_>,
    deps: &Deps,
    s: &JobSettings,
) -> Result<Outcome, TryError> {
    if let Some(done) = already_planned(deps, &j.dedupe_key()).await? {
        return Ok(done);
    }
    let world = World::load(deps, j.game_id).await?;
    let who = world.stakeholder(&j.stakeholder_id)?;
    let event = deps
        .store
        .events(j.game_id, j.event_seq.saturating_sub(1))
        .await
        .map_err(TryError::infra)?
        .into_iter()
        .find(|(seq, _)| *seq == j.event_seq)
        .ok_or_else(|| TryError::Fatal(format!("event {} is not in the log", j.event_seq)))?;
    let mut facts = world.stakeholder_facts(who, Some(&j.scene_id));
    facts.insert(
        "event".into(),
        json!({"seq": j.event_seq, "summary": summarize(&event.1, &world.state)}),
    );
    let (answer, _) = t
        .ask(
            deps,
            s,
            JobKind::GenerateStakeholderReaction,
            (Some(j.game_id), None),
            facts,
        )
        .await?;
    let payload = output::stakeholder_move(&answer.text)?;
    let row = PlannedAction {
        id: PlannedActionId::generate(),
        game_id: j.game_id,
        scene_id: j.scene_id.clone(),
        stakeholder_id: j.stakeholder_id.clone(),
        kind: PlannedKind::Reaction,
        payload,
        priority: REACTION_PRIORITY,
        status: PlannedStatus::Ready,
        expires_at: expiry(s),
        dedupe_key: j.dedupe_key(),
        reacts_to: Some(j.event_seq),
        provenance: provenance(
            j.context_hash.clone(),
            j.world_version,
            &answer.model,
            JobKind::GenerateStakeholderReaction,
        ),
        created_at: now_ms(),
    };
    planned(deps, row, "planned_reaction").await
}

async fn details(
    j: &PopulateStakeholderDetails,
    t: &Try<'_>,
    deps: &Deps,
    s: &JobSettings,
) -> Result<Outcome, TryError> {
    let key = keys::stakeholder_details(j.game_id, &j.stakeholder_id);
    if cached_since(deps, &key, 0, |d: &StakeholderDetails| {
        d.provenance.world_version
    })
    .await
    .is_some()
    {
        return Ok(Outcome::Skipped("details already written".into()));
    }
    let world = World::load(deps, j.game_id).await?;
    let who = world.stakeholder(&j.stakeholder_id)?;
    let facts = world.stakeholder_facts(who, None);
    let (answer, _) = t
        .ask(
            deps,
            s,
            JobKind::PopulateStakeholderDetails,
            (Some(j.game_id), None),
            facts,
        )
        .await?;
    let d = output::details(&answer.text)?;
    let value = StakeholderDetails {
        stakeholder_id: j.stakeholder_id.clone(),
        appearance: d.appearance,
        voice: d.voice,
        secret: d.secret,
        provenance: provenance(
            context_of(&["details", j.stakeholder_id.as_str()]),
            world.state.seq,
            &answer.model,
            JobKind::PopulateStakeholderDetails,
        ),
    };
    put(deps, &key, &value, s.cache_ttl, "stakeholder_details").await
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
    .await
    .is_some()
    {
        return Ok(Outcome::Skipped("narration already written".into()));
    }
    let world = World::load(deps, j.game_id).await?;
    let (conflict, phase) = world.conflict_phase(&j.conflict_id, &j.phase_id)?;
    let mut facts = world.base_facts();
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
            context_of(&["narration", j.conflict_id.as_str(), j.phase_id.as_str()]),
            j.world_version,
            &answer.model,
            JobKind::NarratePhaseTransition,
        ),
    };
    put(deps, &key, &value, s.cache_ttl, "narration").await
}

async fn beat(
    j: &GenerateBeatDescription,
    t: &Try<'_>,
    deps: &Deps,
    s: &JobSettings,
) -> Result<Outcome, TryError> {
    let key = keys::beat(j.game_id, &j.conflict_id, &j.phase_id, j.beat);
    if cached_since(deps, &key, j.world_version, |b: &BeatText| {
        b.provenance.world_version
    })
    .await
    .is_some()
    {
        return Ok(Outcome::Skipped("beat already written".into()));
    }
    let world = World::load(deps, j.game_id).await?;
    let (conflict, phase) = world.conflict_phase(&j.conflict_id, &j.phase_id)?;
    let mut facts = world.base_facts();
    facts.insert("conflict".into(), json!(conflict));
    facts.insert("phase".into(), json!(phase));
    facts.insert("beat".into(), json!(j.beat));
    facts.insert(
        "beat_text".into(),
        json!(
            phase
                .beats
                .get(j.beat as usize)
                .cloned()
                .unwrap_or_default()
        ),
    );
    let (answer, _) = t
        .ask(
            deps,
            s,
            JobKind::GenerateBeatDescription,
            (Some(j.game_id), None),
            facts,
        )
        .await?;
    let value = BeatText {
        conflict_id: j.conflict_id.clone(),
        phase_id: j.phase_id.clone(),
        beat: j.beat,
        text: output::prose(&answer.text)?,
        provenance: provenance(
            context_of(&["beat", j.conflict_id.as_str(), j.phase_id.as_str()]),
            j.world_version,
            &answer.model,
            JobKind::GenerateBeatDescription,
        ),
    };
    put(deps, &key, &value, s.cache_ttl, "beat").await
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
    .await
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
    .await
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
    let log = deps
        .store
        .events(j.game_id, 0)
        .await
        .map_err(TryError::infra)?;
    let replied = |e: &LoggedEvent| matches!(e, LoggedEvent::DialogueReplied { request_id, .. } if *request_id == j.request_id);
    if log.iter().any(|(_, e)| replied(e)) {
        return Ok(Outcome::Skipped("reply already logged".into()));
    }
    let world = World::load(deps, j.game_id).await?;
    let who = world.stakeholder(&j.stakeholder_id)?;
    let mut facts = world.stakeholder_facts(who, Some(&j.scene_id));
    facts.insert("topic".into(), json!(j.text));
    let request = t.request(
        s,
        JobKind::StreamDialogueReply,
        (Some(j.game_id), Some(j.player_id)),
        facts,
        false,
    )?;
    let mut chunks = deps.provider.stream(&request).await?;
    let mut full = String::new();
    let mut index = 0u32;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
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
    let text = output::dialogue(&full)?;
    deps.stream
        .publish(
            j.game_id,
            &GameEvent::DialogueDone {
                request_id: j.request_id,
                stakeholder_id: j.stakeholder_id.clone(),
                text: text.clone(),
            },
        )
        .await
        .map_err(TryError::infra)?;
    // Keyed by the request: two copies of this job running at once log one reply.
    let seq = deps
        .store
        .append_event_once(
            j.game_id,
            &LoggedEvent::DialogueReplied {
                request_id: j.request_id,
                player_id: j.player_id,
                stakeholder_id: j.stakeholder_id.clone(),
                text,
            },
            &j.dedupe_key(),
        )
        .await
        .map_err(TryError::infra)?;
    match seq {
        Some(seq) => Ok(Outcome::Written(vec![(
            "dialogue".into(),
            format!("game_events/{}/{seq}", j.game_id),
        )])),
        None => Ok(Outcome::Skipped("reply already logged".into())),
    }
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
    tracing::info!(
        expired,
        deleted,
        events,
        "cleaned up planned actions and the outbox"
    );
    Ok(Outcome::Skipped(format!(
        "expired {expired}, deleted {deleted} planned actions and {events} committed stream events"
    )))
}
