//! Everything one action reads from the cache, planned as one [`Batch`]: one round trip.

use std::collections::BTreeMap;

use hotpath_cache::cache::{Batch, CacheError, Fetched, Slot, keys};
use hotpath_cache::model::{BeatText, CanonReferences, Narration, SocialBundle};
use hotpath_cache::scenario::{Scenario, Scene};
use hotpath_cache::{ConflictId, GameId, PhaseId};

/// The slots of one action's batch.
pub struct ActionReads {
    pub social: Slot<SocialBundle>,
    pub canon: Slot<CanonReferences>,
    pub narration: BTreeMap<(ConflictId, PhaseId), Slot<Narration>>,
    pub beats: BTreeMap<(ConflictId, PhaseId, u32), Slot<BeatText>>,
}

/// What came back: a value per slot, or nothing if the cache could not be read.
#[derive(Default)]
pub struct CachedContent {
    pub social: Option<SocialBundle>,
    pub canon: Option<CanonReferences>,
    pub narration: BTreeMap<(ConflictId, PhaseId), Narration>,
    pub beats: BTreeMap<(ConflictId, PhaseId, u32), BeatText>,
}

impl ActionReads {
    /// Plans the keys of an action in `scene`: the snapshot, the social bundle, canon
    /// references, the narration and beats of every phase of the scene's conflicts and the
    /// narration of their resolution (the phase after the action is not known before the
    /// snapshot is).
    pub fn plan(game: GameId, scenario: &Scenario, scene: &Scene) -> (Batch, ActionReads) {
        let mut batch = Batch::default();
        let social = batch.add(&keys::social(game));
        let canon = batch.add(&keys::canon_references(game));
        let mut narration = BTreeMap::new();
        let mut beats = BTreeMap::new();
        for conflict in scene.conflicts.iter().filter_map(|c| scenario.conflict(c)) {
            let resolved = hotpath_cache::model::resolved_phase();
            let slot = batch.add(&keys::narration(game, &conflict.id, &resolved));
            narration.insert((conflict.id.clone(), resolved), slot);
            for phase in &conflict.phases {
                let slot = batch.add(&keys::narration(game, &conflict.id, &phase.id));
                narration.insert((conflict.id.clone(), phase.id.clone()), slot);
                for beat in 0..phase.beats.len().max(1) as u32 {
                    let slot = batch.add(&keys::beat(game, &conflict.id, &phase.id, beat));
                    beats.insert((conflict.id.clone(), phase.id.clone(), beat), slot);
                }
            }
        }
        let reads = ActionReads {
            social,
            canon,
            narration,
            beats,
        };
        (batch, reads)
    }

    /// Takes every value out; a value that does not decode counts as a miss (and is logged),
    /// because the slow path will write it again.
    pub fn take(self, mut fetched: Fetched) -> CachedContent {
        fn get<T: serde::de::DeserializeOwned>(f: &mut Fetched, slot: Slot<T>) -> Option<T> {
            f.take(slot).unwrap_or_else(|e: CacheError| {
                tracing::warn!(error = %e, "ignoring an undecodable cache value");
                None
            })
        }
        let f = &mut fetched;
        CachedContent {
            social: get(f, self.social),
            canon: get(f, self.canon),
            narration: self
                .narration
                .into_iter()
                .filter_map(|(k, s)| Some((k, get(f, s)?)))
                .collect(),
            beats: self
                .beats
                .into_iter()
                .filter_map(|(k, s)| Some((k, get(f, s)?)))
                .collect(),
        }
    }
}
