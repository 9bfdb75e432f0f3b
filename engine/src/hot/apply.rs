//! The writer's half of an action: the rules applied to the state the game's writer owns, and
//! the batch item that commits it — the event at the next seq, the claim of precomputed
//! reactions, what is still ready after it, the idempotency record — with the answer built
//! inside the commit by [`Answering::finish`].

use std::collections::HashSet;
use std::sync::Arc;

use hotpath_cache::events::LoggedEvent;
use hotpath_cache::model::reaction_key;
use hotpath_cache::scenario::Scenario;
use hotpath_cache::state::GameState;
use hotpath_cache::store::{BatchItem, ClaimQuery, Finish, Finished, ReadyQuery};
use hotpath_cache::time::now_ms;

use super::HotConfig;
use super::answer::build::Answering;
use super::rules;
use super::writer::Act;

/// Applies `act` to `before`; returns the state after it and the batch item that commits it.
/// `asked` is what this game's writer has already had queued.
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
    let answering = Answering::new(
        scenario.clone(),
        before.clone(),
        after.clone(),
        action,
        act.cached.clone(),
        act.degraded,
        act.dialogue,
        config.clone(),
        asked,
        claim.context_hash.0.clone(),
        now,
    );
    let item = BatchItem {
        game_id: act.action.game_id,
        seq: before.seq + 1,
        event,
        claim: Some(claim),
        ready: Some(ready),
        idempotency: act.idempotency.clone(),
        finish: Box::new(move |claimed| answering.finish(claimed)),
    };
    (after, item)
}

/// An event appended outside an action (a player joining): no claim, no jobs, no stream
/// events; the answer is its seq.
pub(crate) fn append(
    scenario: &Scenario,
    before: &GameState,
    event: LoggedEvent,
) -> (GameState, BatchItem) {
    let seq = before.seq + 1;
    let mut after = before.clone();
    after.apply(scenario, seq, &event);
    let finish: Finish = Box::new(move |_| Finished {
        response: serde_json::json!({ "seq": seq }),
        jobs: Vec::new(),
        events: Vec::new(),
    });
    let item = BatchItem {
        game_id: before.game_id,
        seq,
        event,
        claim: None,
        ready: None,
        idempotency: None,
        finish,
    };
    (after, item)
}
