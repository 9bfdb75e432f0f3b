//! Events. Two families:
//!
//! - [`LoggedEvent`]: the durable game event log in SQL (`game_events`, one `seq` per game). It is
//!   the source of truth: folding it over the scenario rebuilds the state ([`crate::GameState::apply`]).
//! - [`GameEvent`]: what clients see on the per-game event stream (SSE), including job progress
//!   and streamed dialogue. Its `type` tag is the SSE event name.

use serde::{Deserialize, Serialize};

use crate::ids::{ActionId, ConflictId, PhaseId, PlayerId, RequestId, SceneId, StakeholderId};
use crate::jobs::JobKind;
use crate::model::ActionKind;

/// A change the rules decided; stored with the event so that replaying the log never depends on
/// the rules of the day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    Intensity {
        conflict_id: ConflictId,
        delta: i32,
    },
    Standing {
        stakeholder_id: StakeholderId,
        delta: i32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedAction {
    pub action_id: ActionId,
    pub player_id: PlayerId,
    pub scene_id: SceneId,
    pub kind: ActionKind,
    pub text: String,
    pub target: Option<StakeholderId>,
    /// The turn this action made.
    pub turn: u32,
    pub effects: Vec<Effect>,
}

/// An entry of the game event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LoggedEvent {
    PlayerJoined {
        player_id: PlayerId,
        name: String,
    },
    ActionApplied(AppliedAction),
    /// A streamed dialogue reply, recorded once complete.
    DialogueReplied {
        request_id: RequestId,
        player_id: PlayerId,
        stakeholder_id: StakeholderId,
        text: String,
    },
    ConflictCanonized {
        conflict_id: ConflictId,
        canon_id: uuid::Uuid,
    },
}

impl LoggedEvent {
    /// The `kind` column of the log.
    pub fn kind(&self) -> &'static str {
        match self {
            LoggedEvent::PlayerJoined { .. } => "player_joined",
            LoggedEvent::ActionApplied(_) => "action_applied",
            LoggedEvent::DialogueReplied { .. } => "dialogue_replied",
            LoggedEvent::ConflictCanonized { .. } => "conflict_canonized",
        }
    }
}

/// A conflict's phase as reported to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictPhase {
    pub conflict_id: ConflictId,
    pub phase_id: PhaseId,
    pub intensity: u32,
    pub resolved: bool,
}

/// An event on a game's stream. The serde tag is the event kind clients see.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum GameEvent {
    #[serde(rename = "action.applied")]
    ActionApplied {
        seq: u64,
        action_id: ActionId,
        player_id: PlayerId,
        scene_id: SceneId,
        kind: ActionKind,
        turn: u32,
    },
    #[serde(rename = "state.updated")]
    StateUpdated {
        seq: u64,
        turn: u32,
        conflicts: Vec<ConflictPhase>,
    },
    #[serde(rename = "job.queued")]
    JobQueued {
        job_id: String,
        kind: JobKind,
        dedupe_key: String,
    },
    #[serde(rename = "job.started")]
    JobStarted {
        job_id: String,
        kind: JobKind,
        attempt: u32,
    },
    #[serde(rename = "job.completed")]
    JobCompleted { job_id: String, kind: JobKind },
    #[serde(rename = "job.failed")]
    JobFailed {
        job_id: String,
        kind: JobKind,
        attempt: u32,
        /// What went wrong, as players may read it: a category, never internal error text.
        error: String,
        /// No retry is left: the job is dead-lettered.
        dead: bool,
    },
    /// The slow path wrote something the hot path will serve: `what` it is and `location` (a
    /// cache key or `table/row id`).
    #[serde(rename = "content.ready")]
    ContentReady {
        what: String,
        location: String,
        /// The job kind that wrote it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        job_kind: Option<crate::jobs::JobKind>,
        /// Milliseconds from the job's dispatch to this content being written: its freshness.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lag_ms: Option<u64>,
    },
    #[serde(rename = "dialogue.chunk")]
    DialogueChunk {
        request_id: RequestId,
        stakeholder_id: StakeholderId,
        /// 0, 1, 2, ... in order within an attempt.
        index: u32,
        /// The try streaming it (1, 2, ...). A retried reply starts again at index 0 with a
        /// higher attempt: a client drops the chunks of earlier attempts.
        attempt: u32,
        text: String,
    },
    #[serde(rename = "dialogue.done")]
    DialogueDone {
        request_id: RequestId,
        stakeholder_id: StakeholderId,
        text: String,
        /// The model that wrote the reply.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<String>,
        /// The version of the prompt it was asked with.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt_version: Option<String>,
    },
}

impl GameEvent {
    /// The kind name (`action.applied`, `dialogue.chunk`, ...): the SSE `event:` field.
    pub fn kind(&self) -> &'static str {
        match self {
            GameEvent::ActionApplied { .. } => "action.applied",
            GameEvent::StateUpdated { .. } => "state.updated",
            GameEvent::JobQueued { .. } => "job.queued",
            GameEvent::JobStarted { .. } => "job.started",
            GameEvent::JobCompleted { .. } => "job.completed",
            GameEvent::JobFailed { .. } => "job.failed",
            GameEvent::ContentReady { .. } => "content.ready",
            GameEvent::DialogueChunk { .. } => "dialogue.chunk",
            GameEvent::DialogueDone { .. } => "dialogue.done",
        }
    }
}

/// The kind name of the stream-level event that tells a client it missed events and must reload.
pub const RESET_EVENT: &str = "reset";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn game_event_tag_is_its_kind() {
        let e = GameEvent::ContentReady {
            what: "narration".into(),
            location: "k".into(),
            job_kind: None,
            lag_ms: None,
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], e.kind());
        assert_eq!(serde_json::from_value::<GameEvent>(v).unwrap(), e);
    }
}
