//! The hot path's answer to an action — what `POST /v1/games/{id}/actions` returns, and what an
//! idempotency record replays. Every piece says where it came from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a piece of the answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A stakeholder action the slow path planned ahead, claimed from the table.
    Precomputed,
    /// Content the slow path left in the cache.
    Cache,
    /// Deterministic rules and templates.
    Fallback,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Precomputed => "precomputed",
            Source::Cache => "cache",
            Source::Fallback => "fallback",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Reaction {
    pub stakeholder_id: String,
    /// What the stakeholder says.
    pub text: String,
    /// `support`, `oppose`, `deflect`, `probe`, `observe`, ...
    pub intent: String,
    /// What the stakeholder does.
    pub behaviour: String,
    pub source: Source,
    /// Age of slow-path content, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NarrationPiece {
    pub text: String,
    pub source: Source,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GossipLine {
    pub from: String,
    pub about: String,
    pub line: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SocialPiece {
    pub gossip: Vec<GossipLine>,
    /// Reputation per stakeholder, -100..=100.
    pub reputation: BTreeMap<String, i32>,
    pub source: Source,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CanonLine {
    pub stakeholder_id: String,
    pub line: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CanonPiece {
    pub references: Vec<CanonLine>,
    pub source: Source,
}

/// A job this action dispatched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Dispatched {
    /// The job kind, e.g. `generate_stakeholder_action`.
    pub kind: String,
    pub dedupe_key: String,
    /// Set once the storage acknowledged the push.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// `queued` (acknowledged within the enqueue bound) or `pending` (still being pushed).
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ActionAnswer {
    pub action_id: String,
    /// The action's kind, as given or as classified from the text.
    pub kind: String,
    pub turn: u32,
    /// Seq of the action in the game's event log.
    pub seq: u64,
    pub reactions: Vec<Reaction>,
    pub narration: NarrationPiece,
    pub social: SocialPiece,
    pub canon: CanonPiece,
    /// Some backend was slow or down and a piece fell back to rules.
    pub degraded: bool,
    /// Jobs dispatched by this action (empty when the answer is an idempotent replay).
    pub dispatched: Vec<Dispatched>,
    /// For `say` with a `target`: the id of the streamed reply (`dialogue.*` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dialogue_request_id: Option<String>,
}
