//! Job messages: what the hot path dispatches and the slow path's workers run. One type per job
//! kind; this crate knows no job runner, only the messages (the apalis habit: messages apart from
//! backends). Each has a dedupe key, used by the dispatch guard and by idempotent writes.

use serde::{Deserialize, Serialize};

use crate::ids::ContextHash;
use crate::ids::{ConflictId, GameId, PhaseId, PlayerId, RequestId, SceneId, StakeholderId};

/// The apalis queue name (`job_type` column) every hotpath job is stored under.
pub const QUEUE: &str = "hotpath.jobs";

/// The PostgreSQL schema that holds the job storage's migration history (and the extensions its
/// migrations create). apalis keeps its tables in the `apalis` schema, but sqlx records
/// migrations in an unqualified `_sqlx_migrations`; a schema of its own, first on the job
/// storage's `search_path`, keeps the two histories apart in one database.
pub const JOBS_META_SCHEMA: &str = "hotpath_jobs";

/// How many times a job may be delivered to a worker (the first run plus re-deliveries after a
/// worker died holding it). A handler's own retries happen within one delivery.
pub const MAX_DELIVERIES: u32 = 5;

/// A new job id: a ULID, because apalis decodes task ids as ULIDs when it fetches them.
pub fn new_job_id() -> String {
    ulid::Ulid::generate().to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    PrepareSceneReactions,
    NarratePhaseTransition,
    GenerateBeatDescription,
    GenerateSocialBundle,
    CanonizeConflict,
    GenerateCanonReferences,
    StreamDialogueReply,
    CleanupExpiredActions,
}

impl JobKind {
    pub const ALL: [JobKind; 8] = [
        JobKind::PrepareSceneReactions,
        JobKind::NarratePhaseTransition,
        JobKind::GenerateBeatDescription,
        JobKind::GenerateSocialBundle,
        JobKind::CanonizeConflict,
        JobKind::GenerateCanonReferences,
        JobKind::StreamDialogueReply,
        JobKind::CleanupExpiredActions,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::PrepareSceneReactions => "prepare_scene_reactions",
            JobKind::NarratePhaseTransition => "narrate_phase_transition",
            JobKind::GenerateBeatDescription => "generate_beat_description",
            JobKind::GenerateSocialBundle => "generate_social_bundle",
            JobKind::CanonizeConflict => "canonize_conflict",
            JobKind::GenerateCanonReferences => "generate_canon_references",
            JobKind::StreamDialogueReply => "stream_dialogue_reply",
            JobKind::CleanupExpiredActions => "cleanup_expired_actions",
        }
    }

    /// Higher runs first: a player is waiting on dialogue, reactions are served on the next
    /// action, narration prepares ahead, the rest can wait.
    pub fn priority(self) -> i32 {
        match self {
            JobKind::StreamDialogueReply => 50,
            JobKind::PrepareSceneReactions => 40,
            JobKind::NarratePhaseTransition | JobKind::GenerateBeatDescription => 20,
            _ => 10,
        }
    }

    /// How far ahead of its peers a job of this kind is fetched. The storages fetch by
    /// `run_at`, so a job is stored with `run_at = now - head_start`: the priority becomes a
    /// head start that a job of a lower kind wins back by waiting (aging), instead of an order
    /// a busy queue never lets the low kinds reach.
    pub fn head_start(self) -> std::time::Duration {
        std::time::Duration::from_secs(match self {
            JobKind::StreamDialogueReply => 60,
            JobKind::PrepareSceneReactions => 20,
            JobKind::NarratePhaseTransition | JobKind::GenerateBeatDescription => 10,
            _ => 0,
        })
    }
}

/// How long a job's coalescing guard holds at most: a job that never reports back (its
/// storage row lost) stops blocking its work after this long.
pub const JOB_GUARD_TTL_MS: i64 = 10 * 60 * 1000;

/// A job older than this (from its dispatch) is dropped before the model is called: what it
/// prepares would be served too late to matter. The whole-job deadline.
pub const JOB_DEADLINE_MS: i64 = 5 * 60 * 1000;

/// Common face of every job message.
pub trait JobMessage: Serialize + for<'de> Deserialize<'de> + Send + Sync + 'static {
    const KIND: JobKind;
    /// The game it works for (`None` for maintenance jobs).
    fn game_id(&self) -> Option<GameId>;
    /// Same work, same key: the guard against duplicate dispatch and duplicate writes.
    fn dedupe_key(&self) -> String;
}

macro_rules! job {
    ($name:ident, $kind:ident, |$s:ident| $key:expr, { $($(#[$fdoc:meta])* pub $field:ident : $ty:ty),* $(,)? }) => {
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct $name { $($(#[$fdoc])* pub $field: $ty),* }

        impl JobMessage for $name {
            const KIND: JobKind = JobKind::$kind;
            fn game_id(&self) -> Option<GameId> {
                Some(self.game_id)
            }
            fn dedupe_key(&self) -> String {
                let $s = self;
                $key
            }
        }
    };
}

/// A conflict's phase in the context a job prepares for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictAt {
    pub conflict_id: ConflictId,
    pub phase_id: PhaseId,
    pub resolved: bool,
}

job!(PrepareSceneReactions, PrepareSceneReactions,
|j| format!("prepare:{}:{}:{}:{}", j.game_id, j.scene_id, j.context_hash, j.world_version),
{
    pub game_id: GameId,
    pub scene_id: SceneId,
    /// The scene's context the reactions are for: the current one, or the one a conflict's
    /// next phase will bring (prepared ahead).
    pub context_hash: ContextHash,
    /// The phases of the scene's conflicts in that context.
    pub conflicts: Vec<ConflictAt>,
    pub world_version: u64,
});

job!(NarratePhaseTransition, NarratePhaseTransition,
|j| format!("narration:{}:{}:{}", j.game_id, j.conflict_id, j.phase_id),
{
    pub game_id: GameId,
    pub conflict_id: ConflictId,
    /// The phase being entered.
    pub phase_id: PhaseId,
    pub world_version: u64,
});

job!(GenerateBeatDescription, GenerateBeatDescription,
|j| format!("beats:{}:{}:{}", j.game_id, j.conflict_id, j.phase_id),
{
    pub game_id: GameId,
    pub conflict_id: ConflictId,
    /// Every beat of this phase is described, in one call.
    pub phase_id: PhaseId,
    pub world_version: u64,
});

job!(GenerateSocialBundle, GenerateSocialBundle,
|j| format!("social:{}:{}", j.game_id, j.world_version),
{
    pub game_id: GameId,
    pub world_version: u64,
});

job!(CanonizeConflict, CanonizeConflict,
|j| format!("canon:{}:{}", j.game_id, j.conflict_id),
{
    pub game_id: GameId,
    pub conflict_id: ConflictId,
    pub world_version: u64,
});

job!(GenerateCanonReferences, GenerateCanonReferences,
|j| format!("canon-refs:{}:{}", j.game_id, j.world_version),
{
    pub game_id: GameId,
    pub world_version: u64,
});

job!(StreamDialogueReply, StreamDialogueReply,
|j| format!("dialogue:{}:{}", j.game_id, j.request_id),
{
    pub game_id: GameId,
    pub request_id: RequestId,
    pub player_id: PlayerId,
    pub scene_id: SceneId,
    pub stakeholder_id: StakeholderId,
    /// The player's words.
    pub text: String,
    pub world_version: u64,
});

/// The periodic sweep: expire ready actions past `expires_at`, delete old spent rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleanupExpiredActions {
    /// Spent rows older than this many seconds are deleted.
    pub retain_secs: u64,
    /// Committed stream events (the outbox) older than this many seconds are deleted; a client
    /// resuming from before them gets `reset`.
    #[serde(default = "default_stream_retain_secs")]
    pub stream_retain_secs: u64,
}

/// How long the outbox keeps committed stream events by default: a week.
pub const DEFAULT_STREAM_RETAIN_SECS: u64 = 7 * 24 * 3600;

fn default_stream_retain_secs() -> u64 {
    DEFAULT_STREAM_RETAIN_SECS
}

impl JobMessage for CleanupExpiredActions {
    const KIND: JobKind = JobKind::CleanupExpiredActions;
    fn game_id(&self) -> Option<GameId> {
        None
    }
    fn dedupe_key(&self) -> String {
        "cleanup".into()
    }
}

/// Any job message: what a [`JobQueue`] carries. The tag is the job kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    PrepareSceneReactions(PrepareSceneReactions),
    NarratePhaseTransition(NarratePhaseTransition),
    GenerateBeatDescription(GenerateBeatDescription),
    GenerateSocialBundle(GenerateSocialBundle),
    CanonizeConflict(CanonizeConflict),
    GenerateCanonReferences(GenerateCanonReferences),
    StreamDialogueReply(StreamDialogueReply),
    CleanupExpiredActions(CleanupExpiredActions),
}

macro_rules! job_enum_dispatch {
    ($self:ident, |$j:ident| $body:expr) => {
        match $self {
            Job::PrepareSceneReactions($j) => $body,
            Job::NarratePhaseTransition($j) => $body,
            Job::GenerateBeatDescription($j) => $body,
            Job::GenerateSocialBundle($j) => $body,
            Job::CanonizeConflict($j) => $body,
            Job::GenerateCanonReferences($j) => $body,
            Job::StreamDialogueReply($j) => $body,
            Job::CleanupExpiredActions($j) => $body,
        }
    };
}

impl Job {
    pub fn kind(&self) -> JobKind {
        fn kind_of<J: JobMessage>(_: &J) -> JobKind {
            J::KIND
        }
        job_enum_dispatch!(self, |j| kind_of(j))
    }

    pub fn game_id(&self) -> Option<GameId> {
        job_enum_dispatch!(self, |j| j.game_id())
    }

    pub fn dedupe_key(&self) -> String {
        job_enum_dispatch!(self, |j| j.dedupe_key())
    }

    /// Scheduling priority (higher first); see [`JobKind::priority`].
    pub fn priority(&self) -> i32 {
        self.kind().priority()
    }

    /// What the job produces, without the world version: while a job with this key is queued
    /// or running, another is not dispatched (coalescing). Its guard lives in the store
    /// (`job_guards`), taken in the dispatching action's transaction and released when the job
    /// ends, so it holds across processes.
    /// Whether the job holds a coalescing guard while queued or running. A dialogue reply
    /// answers one request and is never asked for twice; the cleanup belongs to no game.
    pub fn guarded(&self) -> bool {
        !matches!(
            self,
            Job::StreamDialogueReply(_) | Job::CleanupExpiredActions(_)
        )
    }

    pub fn coalesce_key(&self) -> String {
        match self {
            Job::PrepareSceneReactions(j) => format!("prepare:{}:{}", j.scene_id, j.context_hash),
            Job::GenerateSocialBundle(_) => "social".into(),
            Job::GenerateCanonReferences(_) => "canon-refs".into(),
            Job::StreamDialogueReply(j) => format!("dialogue:{}", j.request_id),
            Job::NarratePhaseTransition(j) => format!("narration:{}:{}", j.conflict_id, j.phase_id),
            Job::GenerateBeatDescription(j) => format!("beats:{}:{}", j.conflict_id, j.phase_id),
            Job::CanonizeConflict(j) => format!("canon:{}", j.conflict_id),
            Job::CleanupExpiredActions(_) => "cleanup".into(),
        }
    }
}

macro_rules! job_from {
    ($($name:ident),*) => {
        $(impl From<$name> for Job {
            fn from(j: $name) -> Job {
                Job::$name(j)
            }
        })*
    };
}

job_from!(
    PrepareSceneReactions,
    NarratePhaseTransition,
    GenerateBeatDescription,
    GenerateSocialBundle,
    CanonizeConflict,
    GenerateCanonReferences,
    StreamDialogueReply,
    CleanupExpiredActions
);

/// Jobs by state, then by kind: `counts["pending"]["prepare_scene_reactions"]`.
pub type JobCounts = std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>;

/// How long finished jobs stay in the storage before the cleanup deletes them: an hour.
pub const DONE_JOBS_RETAIN_SECS: u64 = 3600;
/// How long dead letters stay, for operators to read and requeue: a week.
pub const DEAD_JOBS_RETAIN_SECS: u64 = 7 * 24 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("job queue unavailable: {0}")]
    Unavailable(String),
}

/// Where the hot path pushes job messages: the job storage of the deployment (apalis on SQLite
/// or PostgreSQL, implemented in `hotpath-background`). Pushing is the only road from the hot
/// path to the slow path.
#[async_trait::async_trait]
pub trait JobQueue: Send + Sync {
    /// Enqueues `job`; returns its job id.
    async fn push(&self, job: Job) -> Result<String, QueueError>;
    /// Enqueues several jobs, in one write where the storage can; returns their ids in order.
    async fn push_many(&self, jobs: Vec<Job>) -> Result<Vec<String>, QueueError> {
        let mut ids = Vec::with_capacity(jobs.len());
        for job in jobs {
            ids.push(self.push(job).await?);
        }
        Ok(ids)
    }
    /// Jobs waiting to run (for the queue-depth metric).
    async fn pending(&self) -> Result<u64, QueueError>;
    /// Jobs by state (`pending`, `running`, `retrying`, `done`, `dead`), then by kind.
    async fn counts(&self) -> Result<JobCounts, QueueError> {
        Ok(JobCounts::default())
    }
    /// Deletes finished jobs done more than `done_secs` ago and dead letters older than
    /// `dead_secs`; returns how many.
    async fn purge(&self, _done_secs: u64, _dead_secs: u64) -> Result<u64, QueueError> {
        Ok(0)
    }
    /// Checks the storage answers (for `/readyz`).
    async fn ping(&self) -> Result<(), QueueError>;
}

/// A job as the storage holds it, for operators: listed, shown, dead-lettered.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// The storage's task id (a ULID).
    pub id: String,
    /// The message; `None` if the stored bytes no longer decode as a [`Job`].
    pub job: Option<Job>,
    /// The storage's status: `Pending`, `Queued`, `Running`, `Done`, `Failed` or `Killed`.
    pub status: String,
    pub attempts: u32,
    pub max_attempts: u32,
    /// The last result recorded (`{"Err": "reason"}` for failures), as JSON text.
    pub last_result: Option<String>,
    /// Which worker holds (or last held) it.
    pub lock_by: Option<String>,
}

impl JobRecord {
    /// Dead: given up by a handler, or failed with no attempt left.
    pub fn is_dead(&self) -> bool {
        self.status == "Killed" || (self.status == "Failed" && self.attempts >= self.max_attempts)
    }

    /// The reason recorded with the last failure (the `Err` text of `last_result`).
    pub fn reason(&self) -> Option<String> {
        let text = self.last_result.as_deref()?;
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) => match v.get("Err") {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(other) => Some(other.to_string()),
                None => Some(text.to_owned()),
            },
            Err(_) => Some(text.to_owned()),
        }
    }

    /// The reason, for a job that failed (dead or waiting for its retry); `None` otherwise,
    /// where the last result is not a failure.
    pub fn failure(&self) -> Option<String> {
        (self.is_dead() || self.status == "Failed")
            .then(|| self.reason())
            .flatten()
    }
}

/// Which jobs [`JobAdmin::list`] returns; `None` matches all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    /// A storage status (see [`JobRecord::status`]).
    pub status: Option<String>,
    pub kind: Option<JobKind>,
}

/// Which dead letters [`JobAdmin::requeue`] runs again. No "empty list means all": asking
/// for every dead letter is its own variant.
#[derive(Debug, Clone, PartialEq)]
pub enum Requeue {
    All,
    Ids(Vec<String>),
}

/// What operators do with the job storage, besides counting and purging ([`JobQueue`]):
/// list and show jobs, read the dead letters with their reasons, run dead letters again.
/// Implemented by `hotpath-background`'s `JobStorage`; the CLI (`hotpath jobs`) and the admin
/// routes (`/v1/admin/jobs…`) both go through it.
#[async_trait::async_trait]
pub trait JobAdmin: JobQueue {
    /// Jobs matching `filter`, newest first, at most `limit`.
    async fn list(&self, filter: &JobFilter, limit: u32) -> Result<Vec<JobRecord>, QueueError>;
    /// One job by id.
    async fn job(&self, id: &str) -> Result<Option<JobRecord>, QueueError>;
    /// The dead letters, newest first, at most `limit`.
    async fn dead_letters(&self, limit: u32) -> Result<Vec<JobRecord>, QueueError>;
    /// Makes dead letters `Pending` again with their deliveries reset, under the same ids;
    /// returns how many. Their deadline ([`JOB_DEADLINE_MS`]) counts from the requeue, so a
    /// dead letter of any age runs. Ids that are not dead letters are left alone.
    async fn requeue(&self, which: &Requeue) -> Result<u64, QueueError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_distinct_names_and_head_starts_follow_priority() {
        let names: std::collections::BTreeSet<_> =
            JobKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), JobKind::ALL.len());
        for k in JobKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        assert!(
            JobKind::StreamDialogueReply.priority() > JobKind::PrepareSceneReactions.priority()
        );
        assert!(
            JobKind::PrepareSceneReactions.priority() > JobKind::NarratePhaseTransition.priority()
        );
        for k in JobKind::ALL {
            for l in JobKind::ALL {
                if k.priority() > l.priority() {
                    assert!(k.head_start() > l.head_start(), "{k:?} before {l:?}");
                }
            }
        }
        assert!(
            JobKind::NarratePhaseTransition.priority() > JobKind::GenerateSocialBundle.priority()
        );
    }

    #[test]
    fn job_enum_round_trips_with_its_kind_tag() {
        let job: Job = CanonizeConflict {
            game_id: GameId::generate(),
            conflict_id: ConflictId::new("strike").unwrap(),
            world_version: 4,
        }
        .into();
        let v = serde_json::to_value(&job).unwrap();
        assert_eq!(v["kind"], "canonize_conflict");
        assert_eq!(job.kind(), JobKind::CanonizeConflict);
        assert!(job.dedupe_key().starts_with("canon:"));
        assert_eq!(serde_json::from_value::<Job>(v).unwrap(), job);
    }
}
