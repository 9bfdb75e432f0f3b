//! An item's fate: refused or committed, decided once.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use hotpath_cache::ids::ActionId;

/// Whether an item may still be refused. Decided once, by whichever comes first: the committer
/// beginning the batch that holds it ([`Fate::begin_commit`]), or the client's deadline
/// ([`Fate::abandon`]). So a 503 always means "not applied", and a commit that has begun is
/// waited for or answered "outcome unknown" — never 503. A retry that joins an item in flight
/// ([`Fate::follow`]) shares that item's fate.
#[derive(Clone, Debug)]
pub(crate) struct Fate(Arc<FateInner>);

#[derive(Debug)]
struct FateInner {
    state: AtomicU8,
    action_id: Option<ActionId>,
    leader: OnceLock<Fate>,
}

const PENDING: u8 = 0;
const COMMITTING: u8 = 1;
const ABANDONED: u8 = 2;
const FOLLOWING: u8 = 3;

impl Default for Fate {
    fn default() -> Self {
        Fate::new(None)
    }
}

impl Fate {
    pub fn new(action_id: Option<ActionId>) -> Fate {
        Fate(Arc::new(FateInner {
            state: AtomicU8::new(PENDING),
            action_id,
            leader: OnceLock::new(),
        }))
    }

    fn swap(&self, to: u8) -> Result<u8, u8> {
        self.0
            .state
            .compare_exchange(PENDING, to, Ordering::AcqRel, Ordering::Acquire)
    }

    /// The committer, as a batch begins: `true` if the item may commit.
    pub fn begin_commit(&self) -> bool {
        matches!(self.swap(COMMITTING), Ok(_) | Err(COMMITTING))
    }

    /// The client's deadline: `true` if the item will never be applied.
    pub fn abandon(&self) -> bool {
        match self.swap(ABANDONED) {
            Ok(_) | Err(ABANDONED) => true,
            Err(FOLLOWING) => self.0.leader.get().is_some_and(Fate::abandon),
            Err(_) => false,
        }
    }

    /// A retry joins `leader`, the item in flight with its key: `false` if this retry was
    /// answered already (abandoned at its deadline).
    pub fn follow(&self, leader: &Fate) -> bool {
        let _ = self.0.leader.set(leader.clone());
        self.swap(FOLLOWING).is_ok()
    }

    pub fn is_abandoned(&self) -> bool {
        match self.0.state.load(Ordering::Acquire) {
            ABANDONED => true,
            FOLLOWING => self.0.leader.get().is_some_and(Fate::is_abandoned),
            _ => false,
        }
    }

    /// The action whose outcome this is (the leader's, for a retry that joined it).
    pub fn action_id(&self) -> Option<ActionId> {
        match self.0.leader.get() {
            Some(leader) if self.0.state.load(Ordering::Acquire) == FOLLOWING => leader.action_id(),
            _ => self.0.action_id,
        }
    }
}
