//! Property tests of the rules over generated scenarios: folding the same events always gives
//! the same state, and no rule panics on any scenario that loads.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;

use hotpath_cache::GameId;
use hotpath_cache::ids::*;
use hotpath_cache::model::{ActionKind, PlayerAction};
use hotpath_cache::scenario::Scenario;
use hotpath_engine::hot::dispatch::{PlanInput, plan};
use hotpath_engine::hot::reads::CachedContent;
use hotpath_engine::hot::{HotConfig, fallback, rules};

const TRAITS: &[&str] = &[
    "bold",
    "loyal",
    "cautious",
    "honest",
    "proud",
    "cunning",
    "greedy",
    "curious",
    "friendly",
    "stubborn",
    "hot-headed",
    "whimsical",
];

/// A scenario as TOML text, built from generated numbers; only ones that load are used.
fn scenario_toml() -> impl Strategy<Value = String> {
    let stakeholders = prop::collection::vec(
        (
            prop::collection::vec(0..TRAITS.len(), 0..4),
            prop::collection::vec((0..6usize, -1.0f32..=1.0), 0..3),
        ),
        1..7,
    );
    let conflicts = prop::collection::vec(
        (
            prop::collection::vec(0..6usize, 1..4),
            prop::collection::vec(1..40u32, 0..4),
            0..100u32,
            1..60u32,
            0..3usize,
        ),
        0..3,
    );
    let scenes = prop::collection::vec(
        (
            prop::collection::vec(0..6usize, 1..4),
            prop::collection::vec(0..3usize, 0..3),
        ),
        1..4,
    );
    (stakeholders, conflicts, scenes).prop_map(|(stakeholders, conflicts, scenes)| {
        let n = stakeholders.len();
        let mut t = String::from("name = \"gen\"\ntitle = \"Generated\"\n");
        for (i, (members, cs)) in scenes.iter().enumerate() {
            let mut who: Vec<_> = members.iter().map(|m| format!("\"s{}\"", m % n)).collect();
            who.dedup();
            let mut cids: Vec<_> = cs.iter().filter(|c| **c < conflicts.len()).map(|c| format!("\"c{c}\"")).collect();
            cids.sort();
            cids.dedup();
            t += &format!("[[scenes]]\nid = \"scene{i}\"\nname = \"Scene {i}\"\nstakeholders = [{}]\nconflicts = [{}]\n", who.join(", "), cids.join(", "));
        }
        for (i, (traits, rels)) in stakeholders.iter().enumerate() {
            let traits: Vec<_> = traits.iter().map(|x| format!("\"{}\"", TRAITS[*x])).collect();
            t += &format!("[[stakeholders]]\nid = \"s{i}\"\nname = \"S{i}\"\ntraits = [{}]\ngoals = [\"endure\"]\n", traits.join(", "));
            for (with, affinity) in rels {
                let with = if *with >= n { "player".to_owned() } else { format!("s{with}") };
                t += &format!("[[stakeholders.relationships]]\nwith = \"{with}\"\naffinity = {affinity}\n");
            }
        }
        for (i, (members, steps, initial, resolve_gap, beats)) in conflicts.iter().enumerate() {
            let mut who: Vec<_> = members.iter().map(|m| format!("\"s{}\"", m % n)).collect();
            who.dedup();
            let mut enter = 0;
            let mut phases = vec![0];
            for s in steps {
                enter += s;
                phases.push(enter);
            }
            let resolve_at = (enter + resolve_gap).min(100);
            t += &format!(
                "[[conflicts]]\nid = \"c{i}\"\nname = \"C{i}\"\nstakeholders = [{}]\ninitial_intensity = {}\nresolve_at = {resolve_at}\n",
                who.join(", "),
                initial % resolve_at.max(1)
            );
            for (j, at) in phases.iter().enumerate() {
                let b: Vec<_> = (0..*beats).map(|k| format!("\"beat {k}\"")).collect();
                t += &format!("[[conflicts.phases]]\nid = \"p{j}\"\nname = \"P{j}\"\nenter_at = {at}\nbeats = [{}]\n", b.join(", "));
            }
        }
        t
    })
}

fn actions() -> impl Strategy<Value = Vec<(usize, usize, usize, Option<usize>)>> {
    prop::collection::vec(
        (
            0..4usize,
            0..ActionKind::ALL.len(),
            0..6usize,
            prop::option::of(0..6usize),
        ),
        0..25,
    )
}

const TEXTS: &[&str] = &[
    "Pay up or else",
    "Can I help?",
    "Where is it?",
    "Let's trade",
    "I watch",
    "Hello",
    "",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn folding_is_deterministic_and_rules_never_panic(toml in scenario_toml(), script in actions()) {
        let Ok(scenario) = Scenario::parse(Path::new("generated.toml"), &toml) else {
            // Only scenarios that load are in scope.
            return Ok(());
        };
        let game = GameId::generate();
        let player = PlayerId::generate();
        let mut state = hotpath_cache::GameState::new(game, &scenario);
        let mut log = Vec::new();
        let config = HotConfig::default();
        for (scene_i, kind_i, text_i, target_i) in script {
            let scene = &scenario.scenes[scene_i % scenario.scenes.len()];
            let target = target_i.map(|t| scene.stakeholders[t % scene.stakeholders.len()].clone());
            let text = TEXTS[text_i % TEXTS.len()];
            let kind = rules::classify((kind_i % 2 == 0).then(|| ActionKind::ALL[kind_i]), text);
            let action = PlayerAction {
                id: ActionId::generate(),
                game_id: game,
                player_id: player,
                scene_id: scene.id.clone(),
                kind,
                text: text.into(),
                target,
            };
            let event = rules::apply_action(&scenario, &state, &action);
            let before = state.clone();
            state.apply(&scenario, before.seq + 1, &event);
            log.push((state.seq, event));

            // Every rule and template, on every stakeholder, conflict and phase: no panic.
            for who in &scenario.stakeholders {
                for k in ActionKind::ALL {
                    let m = fallback::stakeholder_move(&scenario, &state, who, k, state.turn);
                    prop_assert!(!m.intent.is_empty());
                }
            }
            for c in &scenario.conflicts {
                for p in &c.phases {
                    let _ = fallback::phase_narration(&scenario, &c.id, &p.id, false);
                    let _ = fallback::beat_text(&scenario, &c.id, &p.id, state.turn);
                }
            }
            let _ = fallback::social_bundle(&scenario, &state, &state.context_hash(&scenario, &scene.id), 0);
            let _ = rules::transitions(&scenario, &before, &state);
            let ready = BTreeMap::new();
            let cached = CachedContent::default();
            let jobs = plan(&PlanInput {
                scenario: &scenario,
                scene,
                before: &before,
                after: &state,
                action: &action,
                ready: Some(&ready),
                cached: &cached,
                dialogue: Some(RequestId::generate()),
                config: &config,
                asked: &Default::default(),
            });
            prop_assert!(jobs.iter().all(|j| j.game_id() == Some(game)));
            for c in state.conflicts.values() {
                prop_assert!(c.intensity <= hotpath_cache::scenario::MAX_INTENSITY);
            }
        }
        let a = rules::fold(&scenario, game, &log);
        let b = rules::fold(&scenario, game, &log);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(&a, &state, "a rebuild equals the state built action by action");
    }
}
