//! The dispatch policy: after an action, which jobs to enqueue — decided by the world state and
//! the event just applied, never by guessing the player's next words — and pushing them without
//! holding the answer longer than a bounded enqueue.
//!
//! [`plan`] is pure and deterministic. [`queue`] takes each job's dispatch guard (so concurrent
//! actions do not start the same work twice) and names the jobs; the write path inserts them,
//! with their `job.queued` events, in the action's own transaction.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use hotpath_cache::events::GameEvent;
use hotpath_cache::jobs::*;
use hotpath_cache::model::{ActionKind, PlayerAction};
use hotpath_cache::scenario::{Scenario, Scene};
use hotpath_cache::state::GameState;
use hotpath_cache::store::QueuedJob;
use hotpath_cache::{RequestId, StakeholderId};

use super::HotConfig;
use super::answer::Dispatched;
use super::fallback::beat_index;
use super::reads::CachedContent;

/// At most this many stakeholders get a reaction job per action.
const MAX_REACTIONS: usize = 2;

/// What the policy looks at.
pub struct PlanInput<'a> {
    pub scenario: &'a Scenario,
    pub scene: &'a Scene,
    pub before: &'a GameState,
    pub after: &'a GameState,
    pub action: &'a PlayerAction,
    /// Ready actions per stakeholder for the context after the action; `None` if unknown
    /// (then no refill is planned this time).
    pub ready: Option<&'a BTreeMap<StakeholderId, u32>>,
    pub cached: &'a CachedContent,
    pub dialogue: Option<RequestId>,
    pub config: &'a HotConfig,
}

/// The jobs an action calls for, in a stable order.
pub fn plan(input: &PlanInput<'_>) -> Vec<Job> {
    let PlanInput {
        scenario,
        scene,
        before,
        after,
        action,
        ..
    } = *input;
    let game_id = after.game_id;
    let version = after.world_version();
    let context = after.context_hash(scenario, &scene.id);
    let mut jobs: Vec<Job> = Vec::new();

    // The player spoke to someone: their reply streams back, the most urgent job of all.
    if let (ActionKind::Say, Some(target), Some(request_id)) =
        (action.kind, &action.target, input.dialogue)
    {
        jobs.push(
            StreamDialogueReply {
                game_id,
                request_id,
                player_id: action.player_id,
                scene_id: scene.id.clone(),
                stakeholder_id: target.clone(),
                text: action.text.clone(),
                world_version: version,
            }
            .into(),
        );
    }

    // Reactions to the event just applied, served on the stakeholders' next appearance: the
    // target, then the present stakeholders of conflicts this action moved.
    let moved: Vec<_> = scene
        .conflicts
        .iter()
        .filter(|c| {
            before.conflicts.get(*c).map(|s| s.intensity)
                != after.conflicts.get(*c).map(|s| s.intensity)
        })
        .filter_map(|c| scenario.conflict(c))
        .collect();
    let mut reacting: Vec<&StakeholderId> = Vec::new();
    if let Some(t) = action
        .target
        .as_ref()
        .filter(|t| scene.stakeholders.contains(t))
    {
        reacting.push(t);
    }
    for s in &scene.stakeholders {
        if moved.iter().any(|c| c.stakeholders.contains(s)) && !reacting.contains(&s) {
            reacting.push(s);
        }
    }
    for s in reacting.into_iter().take(MAX_REACTIONS) {
        jobs.push(
            GenerateStakeholderReaction {
                game_id,
                scene_id: scene.id.clone(),
                stakeholder_id: s.clone(),
                event_seq: version,
                context_hash: context.clone(),
                world_version: version,
            }
            .into(),
        );
    }

    // Refill the stakeholders whose ready actions for the new context fell below the target.
    if let Some(ready) = input.ready {
        for s in &scene.stakeholders {
            let have = ready.get(s).copied().unwrap_or(0);
            for slot in have..input.config.ready_target {
                jobs.push(
                    GenerateStakeholderAction {
                        game_id,
                        scene_id: scene.id.clone(),
                        stakeholder_id: s.clone(),
                        context_hash: context.clone(),
                        world_version: version,
                        slot,
                    }
                    .into(),
                );
            }
        }
    }

    for conflict in scene.conflicts.iter().filter_map(|c| scenario.conflict(c)) {
        let Some(state) = after.conflicts.get(&conflict.id) else {
            continue;
        };
        if state.resolved {
            // Resolved by this very action: it becomes canon.
            if !before
                .conflicts
                .get(&conflict.id)
                .is_some_and(|b| b.resolved)
            {
                jobs.push(
                    CanonizeConflict {
                        game_id,
                        conflict_id: conflict.id.clone(),
                        world_version: version,
                    }
                    .into(),
                );
            }
            continue;
        }
        // Narrate the next phase before it is reached.
        let idx = conflict
            .phases
            .iter()
            .position(|p| p.id == state.phase)
            .unwrap_or(0);
        if let Some(next) = conflict.phases.get(idx + 1) {
            let near = state.intensity + input.config.narration_lookahead >= next.enter_at;
            let cached = input
                .cached
                .narration
                .contains_key(&(conflict.id.clone(), next.id.clone()));
            if near && !cached {
                jobs.push(
                    NarratePhaseTransition {
                        game_id,
                        conflict_id: conflict.id.clone(),
                        phase_id: next.id.clone(),
                        world_version: version,
                    }
                    .into(),
                );
            }
        }
        // The beat the next turn will show.
        let beat = beat_index(scenario, &conflict.id, &state.phase, after.turn + 1);
        if !input
            .cached
            .beats
            .contains_key(&(conflict.id.clone(), state.phase.clone(), beat))
        {
            jobs.push(
                GenerateBeatDescription {
                    game_id,
                    conflict_id: conflict.id.clone(),
                    phase_id: state.phase.clone(),
                    beat,
                    world_version: version,
                }
                .into(),
            );
        }
    }

    let social_stale = input.cached.social.as_ref().is_none_or(|b| {
        version.saturating_sub(b.provenance.world_version) >= input.config.social_refresh_after
    });
    if social_stale {
        jobs.push(
            GenerateSocialBundle {
                game_id,
                world_version: version,
            }
            .into(),
        );
    }

    let any_canon = after.conflicts.values().any(|c| c.resolved);
    if any_canon && input.cached.canon.is_none() {
        jobs.push(
            GenerateCanonReferences {
                game_id,
                world_version: version,
            }
            .into(),
        );
    }

    for s in &scene.stakeholders {
        if !input.cached.details.contains_key(s) {
            jobs.push(
                PopulateStakeholderDetails {
                    game_id,
                    stakeholder_id: s.clone(),
                }
                .into(),
            );
        }
    }
    jobs
}

/// The key that keeps a job from being dispatched twice while it is in flight. Coarser than the
/// dedupe key where the dedupe key carries the world version, so every action does not start
/// the same refill again.
pub fn guard_key(job: &Job) -> String {
    match job {
        Job::GenerateStakeholderAction(j) => {
            format!(
                "refill:{}:{}:{}:{}",
                j.scene_id, j.stakeholder_id, j.context_hash, j.slot
            )
        }
        Job::GenerateSocialBundle(_) => "social".into(),
        Job::GenerateCanonReferences(_) => "canon-refs".into(),
        other => other.dedupe_key(),
    }
}

/// The dispatch guards of one game: which work is in flight, by [`guard_key`], so that
/// concurrent actions do not start the same work twice. Owned by the game's writer (one per
/// game in each process), so taking a guard costs no round trip.
#[derive(Debug, Default)]
pub struct Guards {
    held: HashMap<String, Instant>,
    /// The size at which expired guards are swept next: doubled past what a sweep leaves, so
    /// a busy game (whose guards rarely expire) pays for sweeps in proportion, not per take.
    sweep_at: usize,
}

/// The least size at which guards are swept for expired ones.
const GUARD_SWEEP_AT: usize = 256;

impl Guards {
    /// Takes the guard for `key` unless it is held and younger than `ttl`.
    fn take(&mut self, key: String, ttl: Duration, now: Instant) -> bool {
        if self.held.len() >= self.sweep_at.max(GUARD_SWEEP_AT) {
            self.held.retain(|_, at| now.duration_since(*at) < ttl);
            self.sweep_at = (self.held.len() * 2).max(GUARD_SWEEP_AT);
        }
        match self.held.get(&key) {
            Some(at) if now.duration_since(*at) < ttl => false,
            _ => {
                self.held.insert(key, now);
                true
            }
        }
    }

    /// Gives back guards whose jobs were not committed.
    pub fn release(&mut self, keys: &[String]) {
        for k in keys {
            self.held.remove(k);
        }
    }
}

/// What an action queues: the jobs (with the ids its answer names) and their `job.queued`
/// events, after the guards dropped work already in flight.
pub struct Queued {
    pub jobs: Vec<QueuedJob>,
    pub dispatched: Vec<Dispatched>,
    pub events: Vec<GameEvent>,
    /// The guards taken, to give back if the action does not commit.
    pub taken: Vec<String>,
}

/// Takes each job's guard and names the jobs that got one. The jobs are inserted in the
/// action's own transaction, so `queued` here means queued once the answer is sent.
pub fn queue(guards: &mut Guards, jobs: Vec<Job>, ttl: Duration) -> Queued {
    let now = Instant::now();
    let mut out = Queued {
        jobs: Vec::new(),
        dispatched: Vec::new(),
        events: Vec::new(),
        taken: Vec::new(),
    };
    for job in jobs {
        let key = guard_key(&job);
        if !guards.take(key.clone(), ttl, now) {
            continue;
        }
        out.taken.push(key);
        let (kind, dedupe_key) = (job.kind(), job.dedupe_key());
        let id = new_job_id();
        out.dispatched.push(Dispatched {
            kind: kind.as_str().to_owned(),
            dedupe_key: dedupe_key.clone(),
            job_id: Some(id.clone()),
            status: "queued".into(),
        });
        out.events.push(GameEvent::JobQueued {
            job_id: id.clone(),
            kind,
            dedupe_key,
        });
        out.jobs.push(QueuedJob { id, job });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotpath_cache::ids::*;
    use hotpath_cache::scenario::builtin;

    use crate::hot::rules;

    fn action(kind: ActionKind, target: Option<&str>) -> PlayerAction {
        PlayerAction {
            id: ActionId::generate(),
            game_id: GameId::generate(),
            player_id: PlayerId::generate(),
            scene_id: SceneId::new("docks").unwrap(),
            kind,
            text: "hello".into(),
            target: target.map(|t| StakeholderId::new(t).unwrap()),
        }
    }

    fn kinds(jobs: &[Job]) -> Vec<&'static str> {
        jobs.iter().map(|j| j.kind().as_str()).collect()
    }

    #[test]
    fn plan_is_deterministic_and_follows_the_state() {
        let scenario = &builtin()["harbor-strike"];
        let scene = scenario.scene(&SceneId::new("docks").unwrap()).unwrap();
        let before = GameState::new(GameId::generate(), scenario);
        let act = action(ActionKind::Say, Some("mara"));
        let mut after = before.clone();
        after.apply(scenario, 1, &rules::apply_action(scenario, &before, &act));
        let ready = BTreeMap::from([(StakeholderId::new("mara").unwrap(), 2)]);
        let cached = CachedContent::default();
        let config = HotConfig::default();
        let request = RequestId::generate();
        let input = PlanInput {
            scenario,
            scene,
            before: &before,
            after: &after,
            action: &act,
            ready: Some(&ready),
            cached: &cached,
            dialogue: Some(request),
            config: &config,
        };
        let jobs = plan(&input);
        assert_eq!(jobs, plan(&input), "same input, same plan");
        let k = kinds(&jobs);
        assert_eq!(k[0], "stream_dialogue_reply");
        assert_eq!(
            k.iter()
                .filter(|k| **k == "generate_stakeholder_reaction")
                .count(),
            2,
            "the target and one more stakeholder of the moved conflict"
        );
        // mara has 2 ready; brann and iris have none: 2 refills each.
        assert_eq!(
            k.iter()
                .filter(|k| **k == "generate_stakeholder_action")
                .count(),
            4
        );
        assert!(
            k.contains(&"generate_social_bundle"),
            "no social bundle cached"
        );
        assert!(k.contains(&"generate_beat_description"));
        assert_eq!(
            k.iter()
                .filter(|k| **k == "populate_stakeholder_details")
                .count(),
            3
        );
        assert!(
            k.contains(&"narrate_phase_transition"),
            "22 is within 15 of the walkout (35)"
        );
        assert!(!k.contains(&"canonize_conflict"));
    }

    #[test]
    fn narration_ahead_and_canonization() {
        let scenario = &builtin()["harbor-strike"];
        let scene = scenario.scene(&SceneId::new("docks").unwrap()).unwrap();
        let strike = ConflictId::new("strike").unwrap();
        let mut before = GameState::new(GameId::generate(), scenario);
        before.conflicts.get_mut(&strike).unwrap().intensity = 50;
        before.conflicts.get_mut(&strike).unwrap().phase = PhaseId::new("walkout").unwrap();
        let act = action(ActionKind::Threaten, None);
        let mut after = before.clone();
        after.apply(scenario, 1, &rules::apply_action(scenario, &before, &act));
        let (cached, config) = (CachedContent::default(), HotConfig::default());
        let input = |before, after| PlanInput {
            scenario,
            scene,
            before,
            after,
            action: &act,
            ready: None,
            cached: &cached,
            dialogue: None,
            config: &config,
        };
        let k = kinds(&plan(&input(&before, &after)));
        assert!(
            k.contains(&"narrate_phase_transition"),
            "62 is within 15 of the standoff (65): {k:?}"
        );
        assert!(
            !k.contains(&"generate_stakeholder_action"),
            "ready counts unknown: no refill"
        );

        let mut resolved = after.clone();
        resolved.apply(
            scenario,
            2,
            &hotpath_cache::events::LoggedEvent::ActionApplied(
                hotpath_cache::events::AppliedAction {
                    action_id: ActionId::generate(),
                    player_id: act.player_id,
                    scene_id: act.scene_id.clone(),
                    kind: ActionKind::Threaten,
                    text: String::new(),
                    target: None,
                    turn: 2,
                    effects: vec![hotpath_cache::events::Effect::Intensity {
                        conflict_id: strike.clone(),
                        delta: 100,
                    }],
                },
            ),
        );
        let k = kinds(&plan(&input(&after, &resolved)));
        assert!(k.contains(&"canonize_conflict"));
        assert!(k.contains(&"generate_canon_references"));
    }

    #[test]
    fn guards_hold_until_released_or_expired_and_sweeps_stay_amortized() {
        let mut g = Guards::default();
        let ttl = Duration::from_secs(60);
        let t0 = Instant::now();
        assert!(g.take("a".into(), ttl, t0));
        assert!(!g.take("a".into(), ttl, t0), "held");
        g.release(&["a".to_owned()]);
        assert!(g.take("a".into(), ttl, t0), "released");
        assert!(g.take("a".into(), ttl, t0 + ttl), "expired");
        // Many live guards: each sweep finds nothing to drop and moves the next one away.
        for i in 0..1000 {
            assert!(g.take(format!("k{i}"), ttl, t0));
        }
        assert!(
            g.sweep_at > 1000 / 2,
            "sweep threshold grew: {}",
            g.sweep_at
        );
        let later = t0 + ttl + Duration::from_secs(1);
        for i in 0..g.sweep_at {
            g.take(format!("n{i}"), ttl, later);
        }
        assert!(
            !g.held.contains_key("k0") && !g.held.contains_key("k999"),
            "expired guards were swept"
        );
        assert!(g.take("k0".into(), ttl, later));
    }
}
