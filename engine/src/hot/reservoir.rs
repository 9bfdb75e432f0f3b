//! A writer's reservoir of precomputed rows: the best ready rows of its game for the claim keys
//! (scene, context and action kind) its actions meet, loaded from the store in bulk and picked
//! in memory. An action's claim then costs no statement of its own: the commit marks the
//! picked rows consumed by id, one statement for the whole batch, and an action one of whose
//! rows another engine took first fails that commit and is applied again after a reload (see
//! [`hotpath_cache::store::ItemError::ClaimTaken`]).
//!
//! A stock is read again when a stakeholder runs below [`KEEP`] rows while the store may hold
//! more; when it is below [`KEEP`] and was read more than [`RECHECK_LOW`] ago, or ran dry and was
//! read more than [`RECHECK`] ago (the slow path may have written since). A context whose stock
//! is full costs no read at all. At most [`MAX_STOCKS`] keys are kept per writer, the least recently used going first;
//! a retiring writer drops them all.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use hotpath_cache::ids::{ContextHash, PlannedActionId, SceneId, StakeholderId};
use hotpath_cache::model::PlannedAction;
use hotpath_cache::store::batch::READY_COUNT_CAP;
use hotpath_cache::time::Millis;

/// Rows loaded per stakeholder: a reload every couple of dozen actions of a busy context.
pub(crate) const ROWS_PER_STAKEHOLDER: u32 = 32;
/// Below this many in memory, a stakeholder whose store holds more is reloaded: the ready count
/// handed to dispatch stops at the same cap, so a count from memory is exact below it.
const KEEP: usize = READY_COUNT_CAP as usize;
/// How long a stock that ran dry is trusted before the store is asked again: short, so that
/// rows the slow path wrote meanwhile are served from the next action on, and long enough that
/// a burst on a dry context reads once, not once per action.
const RECHECK: Duration = Duration::from_millis(20);
/// How long a low stock (below [`KEEP`], all the store held when read) is trusted: the count
/// dispatch reads from it decides whether to prepare more, and a refill the slow path wrote
/// meanwhile must show within this, or the same preparation is asked for again (measured in
/// the play simulator: 27 % more scene preparations when low stocks were trusted until dry).
const RECHECK_LOW: Duration = Duration::from_millis(250);
/// Claim keys kept per writer.
const MAX_STOCKS: usize = 8;

/// A claim key: the scene and the context (with the action kind, see
/// [`hotpath_cache::model::reaction_key`]).
pub(crate) type ClaimKey = (SceneId, ContextHash);

#[derive(Default)]
pub(crate) struct Reservoir {
    stocks: HashMap<ClaimKey, Stock>,
    clock: u64,
    /// Rows a commit found no longer ready: never picked again, even if a read still shows
    /// them ready (a read racing the commit that took them, or a row the claim cannot match),
    /// so that an action is never applied again and again on the same row.
    refused: HashSet<PlannedActionId>,
}

/// Refused rows remembered per writer; past this, the oldest knowledge is dropped at once.
const MAX_REFUSED: usize = 4_096;

struct Stock {
    /// Each stakeholder's ready rows, best first.
    rows: HashMap<StakeholderId, VecDeque<PlannedAction>>,
    /// Stakeholders whose load came back full: the store may hold more than memory does.
    more: HashSet<StakeholderId>,
    /// Stakeholders this stock was loaded for.
    loaded_for: HashSet<StakeholderId>,
    loaded_at: Instant,
    used: u64,
}

impl Reservoir {
    /// Whether `key` must be read from the store before an action of these stakeholders
    /// picks from it.
    pub fn wants(&self, key: &ClaimKey, stakeholders: &[StakeholderId], now: Millis) -> bool {
        let Some(stock) = self.stocks.get(key) else {
            return true;
        };
        stakeholders.iter().any(|who| {
            if !stock.loaded_for.contains(who) {
                return true;
            }
            let live = stock.live(who, now);
            let age = stock.loaded_at.elapsed();
            (live < KEEP && (stock.more.contains(who) || age >= RECHECK_LOW))
                || (live == 0 && age >= RECHECK)
        })
    }

    /// Replaces `key`'s stock with `rows`, loaded for `stakeholders` at most
    /// [`ROWS_PER_STAKEHOLDER`] each, best first. A failed load is an empty stock: the actions
    /// fall back to rules until [`RECHECK`] has passed.
    pub fn fill(
        &mut self,
        key: ClaimKey,
        stakeholders: &[StakeholderId],
        rows: Vec<PlannedAction>,
    ) {
        let mut by_who: HashMap<StakeholderId, VecDeque<PlannedAction>> = HashMap::new();
        for row in rows.into_iter().filter(|r| !self.refused.contains(&r.id)) {
            by_who
                .entry(row.stakeholder_id.clone())
                .or_default()
                .push_back(row);
        }
        let more = by_who
            .iter()
            .filter(|(_, rows)| rows.len() >= ROWS_PER_STAKEHOLDER as usize)
            .map(|(who, _)| who.clone())
            .collect();
        if !self.stocks.contains_key(&key) && self.stocks.len() >= MAX_STOCKS {
            let oldest = self
                .stocks
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.stocks.remove(&oldest);
            }
        }
        self.clock += 1;
        self.stocks.insert(
            key,
            Stock {
                rows: by_who,
                more,
                loaded_for: stakeholders.iter().cloned().collect(),
                loaded_at: Instant::now(),
                used: self.clock,
            },
        );
    }

    /// Takes the best live row of each stakeholder for `key` (none where none is left).
    pub fn pick(
        &mut self,
        key: &ClaimKey,
        stakeholders: &[StakeholderId],
        now: Millis,
    ) -> Vec<PlannedAction> {
        self.clock += 1;
        let Some(stock) = self.stocks.get_mut(key) else {
            return Vec::new();
        };
        stock.used = self.clock;
        let mut picked = Vec::new();
        for who in stakeholders {
            let Some(rows) = stock.rows.get_mut(who) else {
                continue;
            };
            while let Some(row) = rows.pop_front() {
                if row.expires_at > now {
                    picked.push(row);
                    break;
                }
            }
        }
        picked
    }

    /// Live rows per stakeholder for `key`, each counted up to [`READY_COUNT_CAP`] (what
    /// dispatch compares with its low-water mark); stakeholders with none are left out.
    pub fn count(
        &self,
        key: &ClaimKey,
        stakeholders: &[StakeholderId],
        now: Millis,
    ) -> BTreeMap<StakeholderId, u32> {
        let Some(stock) = self.stocks.get(key) else {
            return BTreeMap::new();
        };
        stakeholders
            .iter()
            .filter_map(|who| {
                let n = stock.live(who, now).min(KEEP);
                (n > 0).then(|| (who.clone(), n as u32))
            })
            .collect()
    }

    /// Forgets every stock: after a commit found a picked row gone, or failed (its picks are
    /// still ready in the store, but no longer in memory).
    pub fn forget(&mut self) {
        self.stocks.clear();
    }

    /// Rows a commit found no longer ready: never picked again.
    pub fn refuse(&mut self, rows: Vec<PlannedActionId>) {
        if self.refused.len() + rows.len() > MAX_REFUSED {
            self.refused.clear();
        }
        self.refused.extend(rows);
    }
}

impl Stock {
    fn live(&self, who: &StakeholderId, now: Millis) -> usize {
        self.rows
            .get(who)
            .map_or(0, |rows| rows.iter().filter(|r| r.expires_at > now).count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotpath_cache::GameId;
    use hotpath_cache::model::{PlannedKind, PlannedStatus, Provenance, StakeholderMove};

    fn who(s: &str) -> StakeholderId {
        StakeholderId::new(s).unwrap()
    }

    fn key() -> ClaimKey {
        (SceneId::new("docks").unwrap(), ContextHash("c/say".into()))
    }

    fn row(stakeholder: &str, n: usize, expires_at: Millis) -> PlannedAction {
        PlannedAction {
            id: PlannedActionId::generate(),
            game_id: GameId::generate(),
            scene_id: SceneId::new("docks").unwrap(),
            stakeholder_id: who(stakeholder),
            kind: PlannedKind::Reaction,
            payload: StakeholderMove {
                behaviour: format!("{stakeholder} {n}"),
                intent: "i".into(),
                line: "l".into(),
            },
            priority: 0,
            status: PlannedStatus::Ready,
            expires_at,
            dedupe_key: format!("{stakeholder}-{n}"),
            reacts_to: None,
            provenance: Provenance {
                context_hash: ContextHash("c/say".into()),
                world_version: 0,
                produced_at: 0,
                model: "m".into(),
                prompt_version: "p".into(),
            },
            created_at: 0,
        }
    }

    #[test]
    fn picks_the_best_live_row_of_each_stakeholder_once() {
        let mut r = Reservoir::default();
        let both = [who("mara"), who("brann")];
        assert!(r.wants(&key(), &both, 1_000));
        r.fill(
            key(),
            &both,
            vec![
                row("mara", 0, 500),
                row("mara", 1, 5_000),
                row("mara", 2, 5_000),
            ],
        );
        // Brann has none, and was loaded a moment ago: no read yet; a moment later, one.
        assert!(!r.wants(&key(), &both, 1_000));
        std::thread::sleep(RECHECK);
        assert!(r.wants(&key(), &both, 1_000));
        let picked = r.pick(&key(), &both, 1_000);
        assert_eq!(picked.len(), 1);
        assert_eq!(
            picked[0].dedupe_key, "mara-1",
            "the expired best row is skipped"
        );
        assert_eq!(
            r.count(&key(), &both, 1_000),
            BTreeMap::from([(who("mara"), 1)])
        );
        assert_eq!(r.pick(&key(), &both, 1_000)[0].dedupe_key, "mara-2");
        assert!(r.pick(&key(), &both, 1_000).is_empty());
        // A stakeholder the stock was not loaded for needs a read.
        assert!(r.wants(&key(), &[who("iris")], 1_000));
    }

    #[test]
    fn a_full_load_is_read_again_before_memory_runs_below_the_cap() {
        let mut r = Reservoir::default();
        let mara = [who("mara")];
        let rows = (0..ROWS_PER_STAKEHOLDER as usize)
            .map(|n| row("mara", n, 5_000))
            .collect();
        r.fill(key(), &mara, rows);
        let mut picks = 0;
        while !r.wants(&key(), &mara, 1_000) {
            assert_eq!(r.pick(&key(), &mara, 1_000).len(), 1);
            picks += 1;
        }
        assert_eq!(picks, ROWS_PER_STAKEHOLDER as usize - KEEP + 1);
        assert_eq!(r.count(&key(), &mara, 1_000)[&who("mara")], KEEP as u32 - 1);
    }

    /// A low stock that held all the store had is read again once it is a moment old: a refill
    /// may have landed, and dispatch reads its count.
    #[test]
    fn a_low_stock_is_read_again_after_a_moment() {
        let mut r = Reservoir::default();
        let mara = [who("mara")];
        r.fill(
            key(),
            &mara,
            vec![row("mara", 0, 5_000), row("mara", 1, 5_000)],
        );
        assert!(!r.wants(&key(), &mara, 1_000));
        std::thread::sleep(RECHECK_LOW);
        assert!(r.wants(&key(), &mara, 1_000));
    }

    /// A row a commit refused is not picked again, even when a later read returns it.
    #[test]
    fn a_refused_row_is_never_picked_again() {
        let mut r = Reservoir::default();
        let mara = [who("mara")];
        let (bad, good) = (row("mara", 0, 5_000), row("mara", 1, 5_000));
        r.fill(key(), &mara, vec![bad.clone(), good.clone()]);
        assert_eq!(r.pick(&key(), &mara, 1_000)[0].id, bad.id);
        r.refuse(vec![bad.id]);
        r.forget();
        r.fill(key(), &mara, vec![bad, good.clone()]);
        assert_eq!(r.pick(&key(), &mara, 1_000)[0].id, good.id);
    }

    #[test]
    fn keeps_a_bounded_number_of_keys() {
        let mut r = Reservoir::default();
        let mara = [who("mara")];
        for n in 0..MAX_STOCKS + 3 {
            let k = (SceneId::new("docks").unwrap(), ContextHash(format!("c{n}")));
            r.fill(k, &mara, vec![row("mara", n, 5_000)]);
        }
        assert_eq!(r.stocks.len(), MAX_STOCKS);
        r.forget();
        assert!(r.wants(&key(), &mara, 0));
    }
}
