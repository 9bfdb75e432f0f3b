//! The hot path's answer to an action — what `POST /v1/games/{id}/actions` returns, and what an
//! idempotency record replays. Every piece says where it came from.

pub(crate) mod build;

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

/// What slow-path content was made for, and by what: the freshness contract. A piece is served
/// only where `made_for` equals the answer's `served_for` (social: within its age bound).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PieceProvenance {
    /// The key it was written for: `<context>/<action kind>` for a reaction,
    /// `narration:<conflict>:<phase>`, `beat:<conflict>:<phase>:<n>`, `social`, `canon-refs`.
    pub made_for: String,
    /// The game's log seq it was made at.
    pub world_version: u64,
    pub model: String,
    pub prompt_version: String,
}

impl PieceProvenance {
    pub fn of(p: &hotpath_cache::model::Provenance) -> PieceProvenance {
        PieceProvenance {
            made_for: p.context_hash.0.clone(),
            world_version: p.world_version,
            model: p.model.clone(),
            prompt_version: p.prompt_version.clone(),
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
    /// What this answer needed the piece for (compare with `provenance.made_for`).
    pub served_for: String,
    /// Set when the piece came from the slow path (not for fallbacks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance: Option<PieceProvenance>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NarrationPiece {
    pub text: String,
    pub source: Source,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_ms: Option<i64>,
    /// What this answer needed the piece for (compare with `provenance.made_for`).
    pub served_for: String,
    /// Set when the piece came from the slow path (not for fallbacks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance: Option<PieceProvenance>,
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
    /// What this answer needed the piece for (compare with `provenance.made_for`).
    pub served_for: String,
    /// Set when the piece came from the slow path (not for fallbacks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance: Option<PieceProvenance>,
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
    /// What this answer needed the piece for (compare with `provenance.made_for`).
    pub served_for: String,
    /// Set when the piece came from the slow path (not for fallbacks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance: Option<PieceProvenance>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_ms: Option<i64>,
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
