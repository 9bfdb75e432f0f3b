//! The seeded schedule: every random choice of a history comes from one `u64` seed, through
//! ChaCha8 streams (one per player, per stream client and for the faults), so a seed names the
//! same decisions on any machine. What the servers do with them still depends on timing; the
//! recorded history is what happened.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

/// Which stream of the seed a task draws from.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    Setup,
    Faults,
    Player { game: usize, player: usize },
    Events { game: usize, client: usize },
}

/// The random source of one task of the history.
pub fn rng(seed: u64, stream: Stream) -> ChaCha8Rng {
    let n = match stream {
        Stream::Setup => 0,
        Stream::Faults => 1,
        Stream::Player { game, player } => 1_000 + (game as u64) * 100 + player as u64,
        Stream::Events { game, client } => 1_000_000 + (game as u64) * 100 + client as u64,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(n);
    rng
}

/// How one logical action is sent: its body, its key and its tries.
#[derive(Debug, Clone)]
pub struct ActionPlan {
    pub text: String,
    pub body: Value,
    /// Tries with the same key replay or join each other; without a key every try is sent once.
    pub key: Option<String>,
    /// The client's timeout for each try, in order; at most this many tries.
    pub timeouts_ms: Vec<u64>,
    /// Send a second try with the same key this long after the first, while it is in flight.
    pub hedge_after_ms: Option<u64>,
    /// Pause before each retry.
    pub backoff_ms: Vec<u64>,
    /// If every try fails, act again without a key (a new logical action with its own text).
    pub again_without_key: bool,
}

/// The `n`th logical action of a player. Its text is unique in the history (and across seeds),
/// so it can be found in a log even when no answer named its `action_id`.
pub fn action(rng: &mut ChaCha8Rng, seed: u64, game: usize, player: usize, n: u64) -> ActionPlan {
    let text = format!("chaos s{seed} g{game} p{player} a{n}");
    let body = match rng.random_range(0..10) {
        // A `say` to a stakeholder queues the dialogue job: answers name jobs.
        0..=3 => {
            let target = ["mara", "brann", "iris"][rng.random_range(0..3)];
            json!({"scene_id": "docks", "kind": "say", "target": target, "text": text})
        }
        4..=6 => json!({"scene_id": "docks", "kind": "observe", "text": text}),
        _ => json!({"scene_id": "docks", "text": text}),
    };
    let keyed = rng.random_bool(0.7);
    let tries = if keyed { rng.random_range(1..=4) } else { 1 };
    let timeouts_ms = (0..tries).map(|_| timeout_ms(rng)).collect();
    let backoff_ms = (0..tries).map(|_| rng.random_range(0..400)).collect();
    let hedge_after_ms = (keyed && rng.random_bool(0.25)).then(|| rng.random_range(5..400));
    ActionPlan {
        key: keyed.then(|| format!("chaos-s{seed}-g{game}-p{player}-a{n}")),
        text,
        body,
        timeouts_ms,
        hedge_after_ms,
        backoff_ms,
        again_without_key: rng.random_bool(0.5),
    }
}

/// A client's patience: mostly long, a third of the time shorter than a slow commit.
fn timeout_ms(rng: &mut ChaCha8Rng) -> u64 {
    if rng.random_bool(0.35) {
        rng.random_range(30..1_500)
    } else {
        10_000
    }
}

/// The pause of a player between two actions.
pub fn think_ms(rng: &mut ChaCha8Rng) -> u64 {
    match rng.random_range(0..20) {
        0 => rng.random_range(500..1_500),
        1..=9 => rng.random_range(0..60),
        _ => rng.random_range(60..400),
    }
}

/// How a stream client follows its game: how long each session lasts before it hangs up, and
/// how long it stays away before it resumes.
pub fn session_ms(rng: &mut ChaCha8Rng) -> (u64, u64) {
    (rng.random_range(200..4_000), rng.random_range(0..800))
}
