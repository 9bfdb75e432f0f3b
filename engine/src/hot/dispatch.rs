//! The dispatch policy: after an action, what to prepare for the actions that will follow —
//! decided from the world state, never by guessing the player's next words — and which of it
//! to queue now.
//!
//! [`plan`] is pure and deterministic: it lists what the game will need (reactions for each
//! scene's current context and for the context a conflict's next phase will bring, the beats
//! of the current phases, the narration of a phase about to begin, a social bundle when the
//! world moved on, canon when a conflict resolves, a streamed reply for a `say`). [`queue`]
//! drops what is already queued or running (the coalescing guards the transaction read), sheds
//! the least valuable work when the backlog is past its bound, and gives each job its place in
//! the fetch order (kind head start, then per-game spacing so one busy game cannot starve the
//! others). The write path inserts the jobs, their guards and `job.queued` events in the
//! action's own transaction.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use hotpath_cache::events::GameEvent;
use hotpath_cache::jobs::*;
use hotpath_cache::model::{ActionKind, PlayerAction};
use hotpath_cache::scenario::{Scenario, Scene};
use hotpath_cache::state::GameState;
use hotpath_cache::store::QueuedJob;
use hotpath_cache::{RequestId, SceneId, StakeholderId};

use super::HotConfig;
use super::answer::Dispatched;
use super::fallback::beat_index;
use super::reads::CachedContent;

/// What the policy looks at.
pub struct PlanInput<'a> {
    pub scenario: &'a Scenario,
    pub scene: &'a Scene,
    pub before: &'a GameState,
    pub after: &'a GameState,
    pub action: &'a PlayerAction,
    /// Ready reactions per stakeholder of the acting scene, for this action's kind in the
    /// context after it; `None` if unknown (then the acting scene is prepared only if its
    /// context is new to this writer).
    pub ready: Option<&'a BTreeMap<StakeholderId, u32>>,
    pub cached: &'a CachedContent,
    pub dialogue: Option<RequestId>,
    pub config: &'a HotConfig,
    /// Coalesce keys this game's writer has already had committed (prepared or being
    /// prepared): other scenes are prepared once per context, not on every action.
    pub asked: &'a HashSet<String>,
}

/// The conflicts of `scene` as `state` has them.
fn conflicts_at(scenario: &Scenario, scene: &Scene, state: &GameState) -> Vec<ConflictAt> {
    scene
        .conflicts
        .iter()
        .filter_map(|c| {
            let s = state.conflicts.get(c)?;
            scenario.conflict(c)?;
            Some(ConflictAt {
                conflict_id: c.clone(),
                phase_id: s.phase.clone(),
                resolved: s.resolved,
            })
        })
        .collect()
}

fn prepare(scenario: &Scenario, scene: &Scene, state: &GameState) -> PrepareSceneReactions {
    PrepareSceneReactions {
        game_id: state.game_id,
        scene_id: scene.id.clone(),
        context_hash: state.context_hash(scenario, &scene.id),
        conflicts: conflicts_at(scenario, scene, state),
        world_version: state.world_version(),
    }
}

/// `state` with `conflict` moved into its next phase, if it has one and is near it.
fn next_phase_state(
    scenario: &Scenario,
    state: &GameState,
    conflict: &hotpath_cache::ConflictId,
    lookahead: u32,
) -> Option<GameState> {
    let c = scenario.conflict(conflict)?;
    let s = state.conflicts.get(conflict).filter(|s| !s.resolved)?;
    let idx = c.phases.iter().position(|p| p.id == s.phase)?;
    let next = c.phases.get(idx + 1)?;
    if s.intensity + lookahead < next.enter_at {
        return None;
    }
    let mut ahead = state.clone();
    let at = ahead.conflicts.get_mut(conflict)?;
    at.phase = next.id.clone();
    at.intensity = next.enter_at;
    Some(ahead)
}

/// Everything the game will need next, most valuable first.
pub fn plan(input: &PlanInput<'_>) -> Vec<Job> {
    let PlanInput {
        scenario,
        scene,
        before,
        after,
        action,
        config,
        ..
    } = *input;
    let game_id = after.game_id;
    let version = after.world_version();
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

    // Reactions for the acting scene: refill when this kind's stock for the context after the
    // action ran low (the job tops up every kind in one call).
    let here = prepare(scenario, scene, after);
    let low = match input.ready {
        Some(ready) => scene
            .stakeholders
            .iter()
            .any(|s| ready.get(s).copied().unwrap_or(0) <= config.ready_low),
        None => true,
    };
    let here_key = Job::from(here.clone()).coalesce_key();
    if low || !input.asked.contains(&here_key) {
        jobs.push(here.into());
    }
    // Every other scene at its current context, once per context: a player who walks in
    // finds its reactions ready.
    let mut ahead: Vec<Job> = Vec::new();
    for other in scenario.scenes.iter().filter(|s| s.id != scene.id) {
        ahead.push(prepare(scenario, other, after).into());
    }
    // The context a conflict's next phase will bring, for every scene it is in, before the
    // phase begins; and that phase's narration and beats.
    for conflict in &scenario.conflicts {
        let Some(next) =
            next_phase_state(scenario, after, &conflict.id, config.narration_lookahead)
        else {
            continue;
        };
        for s in scenario
            .scenes
            .iter()
            .filter(|s| s.conflicts.contains(&conflict.id))
        {
            ahead.push(prepare(scenario, s, &next).into());
        }
        let phase = next.conflicts[&conflict.id].phase.clone();
        let cached = input
            .cached
            .narration
            .contains_key(&(conflict.id.clone(), phase.clone()));
        if !cached {
            ahead.push(
                NarratePhaseTransition {
                    game_id,
                    conflict_id: conflict.id.clone(),
                    phase_id: phase.clone(),
                    world_version: version,
                }
                .into(),
            );
        }
        ahead.push(
            GenerateBeatDescription {
                game_id,
                conflict_id: conflict.id.clone(),
                phase_id: phase,
                world_version: version,
            }
            .into(),
        );
    }
    // The narration of a resolution, as a conflict nears it (and, if it was missed, after).
    let resolved = hotpath_cache::model::resolved_phase();
    for conflict in &scenario.conflicts {
        let Some(state) = after.conflicts.get(&conflict.id) else {
            continue;
        };
        if !state.resolved && state.intensity + config.narration_lookahead < conflict.resolve_at {
            continue;
        }
        let cached = input
            .cached
            .narration
            .contains_key(&(conflict.id.clone(), resolved.clone()));
        if !cached {
            ahead.push(
                NarratePhaseTransition {
                    game_id,
                    conflict_id: conflict.id.clone(),
                    phase_id: resolved.clone(),
                    world_version: version,
                }
                .into(),
            );
        }
    }
    // The beats of every conflict's current phase.
    for conflict in &scenario.conflicts {
        let Some(state) = after.conflicts.get(&conflict.id).filter(|s| !s.resolved) else {
            continue;
        };
        let in_scene = scene.conflicts.contains(&conflict.id);
        let beat = beat_index(scenario, &conflict.id, &state.phase, after.turn + 1);
        let cached =
            input
                .cached
                .beats
                .contains_key(&(conflict.id.clone(), state.phase.clone(), beat));
        if in_scene && cached {
            continue;
        }
        ahead.push(
            GenerateBeatDescription {
                game_id,
                conflict_id: conflict.id.clone(),
                phase_id: state.phase.clone(),
                world_version: version,
            }
            .into(),
        );
    }
    // What was asked before is prepared or being prepared; the job itself skips what exists.
    jobs.extend(
        ahead
            .into_iter()
            .filter(|j| !input.asked.contains(&j.coalesce_key())),
    );

    for conflict in scene.conflicts.iter().filter_map(|c| scenario.conflict(c)) {
        let resolved_now = after
            .conflicts
            .get(&conflict.id)
            .is_some_and(|s| s.resolved)
            && !before
                .conflicts
                .get(&conflict.id)
                .is_some_and(|b| b.resolved);
        if resolved_now {
            jobs.push(
                CanonizeConflict {
                    game_id,
                    conflict_id: conflict.id.clone(),
                    world_version: version,
                }
                .into(),
            );
        }
    }

    let social_stale = input.cached.social.as_ref().is_none_or(|b| {
        version.saturating_sub(b.provenance.world_version) >= config.social_refresh_after
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
    jobs
}

/// How valuable a job is when the backlog is past its bound: 0 is kept longest.
fn shed_rank(job: &Job, acting_scene: &SceneId) -> u32 {
    match job {
        Job::StreamDialogueReply(_) => 0,
        Job::PrepareSceneReactions(j) if &j.scene_id == acting_scene => 1,
        Job::CanonizeConflict(_) => 1,
        Job::PrepareSceneReactions(_) => 2,
        _ => 3,
    }
}

/// What an action queues: the jobs (with the ids its answer names) and their `job.queued`
/// events.
pub struct Queued {
    pub jobs: Vec<QueuedJob>,
    pub dispatched: Vec<Dispatched>,
    pub events: Vec<GameEvent>,
}

/// The backlog and per-game state [`queue`] decides against.
pub struct Admission<'a> {
    /// Coalesce keys of this game's jobs queued or running (read in the transaction).
    pub held: &'a BTreeSet<String>,
    /// Jobs queued or running in the whole deployment.
    pub backlog: u64,
    /// Seconds since the epoch.
    pub now_secs: u64,
}

/// Keeps the jobs worth queueing: not already queued or running (coalescing); past the
/// backlog bound only the most valuable; at most `jobs_per_game` of one game in flight. Each
/// gets its `run_at`: its kind's head start, pushed back one second per job its game already
/// has in flight, so games interleave.
pub fn queue(
    jobs: Vec<Job>,
    acting_scene: &SceneId,
    admission: &Admission<'_>,
    config: &HotConfig,
) -> Queued {
    let mut out = Queued {
        jobs: Vec::new(),
        dispatched: Vec::new(),
        events: Vec::new(),
    };
    let bound = config.backlog_bound.max(1);
    let keep_rank = match admission.backlog {
        b if b >= 2 * bound => 0,
        b if b >= bound => 1,
        _ => u32::MAX,
    };
    let mut in_flight = admission.held.len();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for job in jobs {
        let key = job.coalesce_key();
        if admission.held.contains(&key) || !seen.insert(key) {
            continue;
        }
        let rank = shed_rank(&job, acting_scene);
        if rank > keep_rank || (rank > 0 && in_flight >= config.jobs_per_game) {
            metrics::counter!("hotpath_shed_jobs_total", "kind" => job.kind().as_str())
                .increment(1);
            continue;
        }
        let run_at = (admission.now_secs + in_flight as u64)
            .saturating_sub(job.kind().head_start().as_secs());
        in_flight += 1;
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
        out.jobs.push(QueuedJob { id, job, run_at });
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
    fn plan_prepares_every_scene_once_and_the_acting_one_when_low() {
        let scenario = &builtin()["harbor-strike"];
        let scene = scenario.scene(&SceneId::new("docks").unwrap()).unwrap();
        let before = GameState::new(GameId::generate(), scenario);
        let act = action(ActionKind::Say, Some("mara"));
        let mut after = before.clone();
        after.apply(scenario, 1, &rules::apply_action(scenario, &before, &act));
        let stocked = BTreeMap::from([
            (StakeholderId::new("mara").unwrap(), 3),
            (StakeholderId::new("brann").unwrap(), 3),
            (StakeholderId::new("iris").unwrap(), 3),
        ]);
        let cached = CachedContent::default();
        let config = HotConfig::default();
        let request = RequestId::generate();
        let asked = HashSet::new();
        let input = PlanInput {
            scenario,
            scene,
            before: &before,
            after: &after,
            action: &act,
            ready: Some(&stocked),
            cached: &cached,
            dialogue: Some(request),
            config: &config,
            asked: &asked,
        };
        let jobs = plan(&input);
        assert_eq!(jobs, plan(&input), "same input, same plan");
        let k = kinds(&jobs);
        assert_eq!(k[0], "stream_dialogue_reply");
        let prepared: BTreeSet<&str> = jobs
            .iter()
            .filter_map(|j| match j {
                Job::PrepareSceneReactions(p) => Some(p.scene_id.as_str()),
                _ => None,
            })
            .collect();
        let all: BTreeSet<&str> = scenario.scenes.iter().map(|s| s.id.as_str()).collect();
        assert!(
            prepared.is_superset(&all),
            "every scene is prepared at its context: {prepared:?}"
        );
        assert!(
            k.contains(&"generate_social_bundle"),
            "no social bundle cached"
        );
        assert!(k.contains(&"generate_beat_description"));
        assert!(
            k.contains(&"narrate_phase_transition"),
            "22 is within 15 of the walkout (35)"
        );

        // Once asked, only the acting scene's stock decides, and it is full.
        let asked: HashSet<String> = jobs.iter().map(Job::coalesce_key).collect();
        let again = plan(&PlanInput {
            asked: &asked,
            ..input
        });
        assert!(
            !kinds(&again).contains(&"prepare_scene_reactions"),
            "nothing prepared twice: {:?}",
            kinds(&again)
        );
        // A kind running low refills the acting scene.
        let low = BTreeMap::from([(StakeholderId::new("mara").unwrap(), 1)]);
        let refill = plan(&PlanInput {
            asked: &asked,
            ready: Some(&low),
            ..input
        });
        let scenes: Vec<_> = refill
            .iter()
            .filter_map(|j| match j {
                Job::PrepareSceneReactions(p) => Some(p.scene_id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(scenes, vec!["docks"]);
    }

    #[test]
    fn next_phase_context_is_prepared_ahead_and_canonization_follows_resolution() {
        let scenario = &builtin()["harbor-strike"];
        let scene = scenario.scene(&SceneId::new("docks").unwrap()).unwrap();
        let strike = ConflictId::new("strike").unwrap();
        let mut before = GameState::new(GameId::generate(), scenario);
        before.conflicts.get_mut(&strike).unwrap().intensity = 50;
        before.conflicts.get_mut(&strike).unwrap().phase = PhaseId::new("walkout").unwrap();
        let act = action(ActionKind::Threaten, None);
        let mut after = before.clone();
        after.apply(scenario, 1, &rules::apply_action(scenario, &before, &act));
        let (cached, config, asked) = (
            CachedContent::default(),
            HotConfig::default(),
            HashSet::new(),
        );
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
            asked: &asked,
        };
        let jobs = plan(&input(&before, &after));
        let standoff = jobs.iter().any(|j| {
            matches!(j,
            Job::PrepareSceneReactions(p) if p.scene_id == scene.id
                && p.conflicts.iter().any(|c| c.phase_id.as_str() == "standoff"))
        });
        assert!(
            standoff,
            "62 is within 15 of the standoff (65): {:?}",
            kinds(&jobs)
        );
        assert!(kinds(&jobs).contains(&"narrate_phase_transition"));

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

        // Near its end, the resolution's narration is written ahead.
        let mut near = before.clone();
        let resolve_at = scenario.conflict(&strike).unwrap().resolve_at;
        near.conflicts.get_mut(&strike).unwrap().intensity = resolve_at - 5;
        let jobs = plan(&input(&before, &near));
        assert!(
            jobs.iter().any(|j| matches!(j, Job::NarratePhaseTransition(n)
                if n.conflict_id == strike && n.phase_id.as_str() == hotpath_cache::model::RESOLVED_PHASE)),
            "{:?}",
            kinds(&jobs)
        );
    }

    fn social(v: u64) -> Job {
        GenerateSocialBundle {
            game_id: GameId::generate(),
            world_version: v,
        }
        .into()
    }

    fn dialogue() -> Job {
        StreamDialogueReply {
            game_id: GameId::generate(),
            request_id: RequestId::generate(),
            player_id: PlayerId::generate(),
            scene_id: SceneId::new("docks").unwrap(),
            stakeholder_id: StakeholderId::new("mara").unwrap(),
            text: "hi".into(),
            world_version: 1,
        }
        .into()
    }

    #[test]
    fn queue_coalesces_sheds_past_the_bound_caps_a_game_and_ages_by_run_at() {
        let config = HotConfig::default();
        let docks = SceneId::new("docks").unwrap();
        let none = BTreeSet::new();
        let at = |held, backlog| Admission {
            held,
            backlog,
            now_secs: 1_000_000,
        };
        // Two of the same work in one plan, or work already held: queued once, or not at all.
        let q = queue(vec![social(1), social(2)], &docks, &at(&none, 0), &config);
        assert_eq!(q.jobs.len(), 1);
        let held = BTreeSet::from(["social".to_owned()]);
        assert!(
            queue(vec![social(3)], &docks, &at(&held, 1), &config)
                .jobs
                .is_empty()
        );
        // Past the bound only the valuable work; dialogue always.
        let q = queue(
            vec![social(1), dialogue()],
            &docks,
            &at(&none, config.backlog_bound),
            &config,
        );
        assert_eq!(
            kinds(&q.jobs.iter().map(|j| j.job.clone()).collect::<Vec<_>>()),
            vec!["stream_dialogue_reply"]
        );
        // One game cannot hold more than its share.
        let full: BTreeSet<String> = (0..config.jobs_per_game).map(|i| format!("k{i}")).collect();
        let q = queue(vec![social(1), dialogue()], &docks, &at(&full, 0), &config);
        assert_eq!(q.jobs.len(), 1, "only the dialogue");
        // Dialogue is fetched before a social bundle queued at the same time, and a game with
        // jobs in flight gets later places than one without.
        let q = queue(vec![social(1), dialogue()], &docks, &at(&none, 0), &config);
        let run_at = |kind: &str| {
            q.jobs
                .iter()
                .find(|j| j.job.kind().as_str() == kind)
                .unwrap()
                .run_at
        };
        assert!(run_at("stream_dialogue_reply") < run_at("generate_social_bundle"));
        let busy: BTreeSet<String> = (0..5).map(|i| format!("k{i}")).collect();
        let later = queue(vec![social(1)], &docks, &at(&busy, 0), &config);
        assert!(later.jobs[0].run_at > run_at("generate_social_bundle"));
        assert_eq!(q.events.len(), q.jobs.len());
    }
}
