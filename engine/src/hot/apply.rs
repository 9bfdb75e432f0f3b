//! The writer's half of an action: the rules applied to the state the game's writer owns
//! ([`rules`]), then, once the writer has picked its precomputed rows, the batch item that
//! commits it ([`item`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use hotpath_cache::events::LoggedEvent;
use hotpath_cache::ids::StakeholderId;
use hotpath_cache::model::PlannedAction;
use hotpath_cache::model::reaction_key;
use hotpath_cache::scenario::Scenario;
use hotpath_cache::state::GameState;
use hotpath_cache::store::{BatchItem, Finish, Finished};
use hotpath_cache::time::now_ms;

use super::HotConfig;
use super::answer::build::Answering;
use super::reservoir::ClaimKey;
use super::rules;
use super::writer::Act;

/// An action applied by the rules, before its claim: the state after it and the claim keys
/// the writer's reservoir must hold.
pub(crate) struct Applied {
    pub event: LoggedEvent,
    pub after: GameState,
    /// Where the action's reactions come from: the context it was taken in.
    pub claim_key: ClaimKey,
    /// Where dispatch looks for what is left: the context it leads to.
    pub ready_key: ClaimKey,
    pub stakeholders: Vec<StakeholderId>,
}

/// Applies `act`'s rules to `before`.
pub(crate) fn rules(scenario: &Scenario, before: &GameState, act: &Act) -> Applied {
    let action = &act.action;
    let scene = scenario
        .scene(&action.scene_id)
        .expect("the scene was validated against this scenario");
    let event = rules::apply_action(scenario, before, action);
    let mut after = before.clone();
    after.apply(scenario, before.seq + 1, &event);
    Applied {
        claim_key: (
            scene.id.clone(),
            reaction_key(&before.context_hash(scenario, &scene.id), action.kind),
        ),
        ready_key: (
            scene.id.clone(),
            reaction_key(&after.context_hash(scenario, &scene.id), action.kind),
        ),
        stakeholders: scene.stakeholders.clone(),
        event,
        after,
    }
}

/// The batch item that commits `applied`: the event at the next seq, the rows picked for it,
/// what is still ready after it, the idempotency record — with the answer built inside the
/// commit by [`Answering::finish`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn item(
    scenario: &Arc<Scenario>,
    before: &GameState,
    act: &Act,
    applied: Applied,
    claim: Vec<PlannedAction>,
    ready: BTreeMap<StakeholderId, u32>,
    config: &HotConfig,
    asked: Arc<HashSet<String>>,
) -> (GameState, BatchItem) {
    let answering = Answering::new(
        scenario.clone(),
        before.clone(),
        applied.after.clone(),
        act.action.clone(),
        act.cached.clone(),
        act.degraded,
        act.dialogue,
        config.clone(),
        asked,
        applied.claim_key.1.0.clone(),
        now_ms(),
    );
    let item = BatchItem {
        game_id: act.action.game_id,
        seq: before.seq + 1,
        event: applied.event,
        claim,
        ready: Some(ready),
        idempotency: act.idempotency.clone(),
        finish: Box::new(move |claimed| answering.finish(claimed)),
    };
    (applied.after, item)
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
        claim: Vec::new(),
        ready: None,
        idempotency: None,
        finish,
    };
    (after, item)
}
