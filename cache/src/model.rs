//! What flows between the paths: a player's action, the stakeholder actions the slow path plans
//! ahead, and the content it writes (narration, beats, social bundles, canon). Everything the slow
//! path produces carries its [`Provenance`], so the hot path can tell fresh from stale.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::ContextHash;
use crate::ids::{
    ActionId, ConflictId, GameId, PhaseId, PlannedActionId, PlayerId, SceneId, StakeholderId,
};
use crate::time::Millis;

/// What a player does, as classified by the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Say,
    Ask,
    Persuade,
    Threaten,
    Help,
    Investigate,
    Trade,
    Observe,
}

impl ActionKind {
    pub const ALL: [ActionKind; 8] = [
        ActionKind::Say,
        ActionKind::Ask,
        ActionKind::Persuade,
        ActionKind::Threaten,
        ActionKind::Help,
        ActionKind::Investigate,
        ActionKind::Trade,
        ActionKind::Observe,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Say => "say",
            ActionKind::Ask => "ask",
            ActionKind::Persuade => "persuade",
            ActionKind::Threaten => "threaten",
            ActionKind::Help => "help",
            ActionKind::Investigate => "investigate",
            ActionKind::Trade => "trade",
            ActionKind::Observe => "observe",
        }
    }

    pub fn parse(s: &str) -> Option<ActionKind> {
        ActionKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// What a prepared reaction is made for, and what an action claims by: the scene's context
/// (scene, who is present, the phases of its conflicts) and the kind of the player's action.
/// Stored as the row's `context_hash`, so a reaction is only ever served for what it was
/// written for.
pub fn reaction_key(context: &ContextHash, kind: ActionKind) -> ContextHash {
    ContextHash(format!("{}/{}", context.0, kind.as_str()))
}

/// The pseudo-phase whose narration tells a conflict's resolution (and, after it, its
/// aftermath in the scenes of the conflict).
pub const RESOLVED_PHASE: &str = "resolved";

/// [`RESOLVED_PHASE`] as a phase id.
pub fn resolved_phase() -> PhaseId {
    PhaseId::new(RESOLVED_PHASE).expect("a valid id")
}

/// The key a phase's narration is written for and served under.
pub fn narration_key(conflict: &ConflictId, phase: &PhaseId) -> ContextHash {
    ContextHash(format!("narration:{conflict}:{phase}"))
}

/// The key a beat description is written for and served under.
pub fn beat_key(conflict: &ConflictId, phase: &PhaseId, beat: u32) -> ContextHash {
    ContextHash(format!("beat:{conflict}:{phase}:{beat}"))
}

/// A player's action as the hot path received and classified it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlayerAction {
    pub id: ActionId,
    pub game_id: GameId,
    pub player_id: PlayerId,
    pub scene_id: SceneId,
    pub kind: ActionKind,
    pub text: String,
    pub target: Option<StakeholderId>,
}

/// What the slow path made an artifact for, and how: the freshness contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The context (scene, phases, who is present) it was made for.
    pub context_hash: ContextHash,
    /// The game's event-log seq it was made at.
    pub world_version: u64,
    pub produced_at: Millis,
    /// The model that wrote it (`scripted`, `gpt-4o-mini`, ...; `rules` for fallbacks).
    pub model: String,
    pub prompt_version: String,
}

/// A stakeholder's planned move: their own next action in a context, or a reaction to an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlannedKind {
    Action,
    Reaction,
}

impl PlannedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PlannedKind::Action => "action",
            PlannedKind::Reaction => "reaction",
        }
    }

    pub fn parse(s: &str) -> Option<PlannedKind> {
        match s {
            "action" => Some(PlannedKind::Action),
            "reaction" => Some(PlannedKind::Reaction),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlannedStatus {
    Ready,
    Consumed,
    Expired,
    Failed,
}

impl PlannedStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PlannedStatus::Ready => "ready",
            PlannedStatus::Consumed => "consumed",
            PlannedStatus::Expired => "expired",
            PlannedStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<PlannedStatus> {
        match s {
            "ready" => Some(PlannedStatus::Ready),
            "consumed" => Some(PlannedStatus::Consumed),
            "expired" => Some(PlannedStatus::Expired),
            "failed" => Some(PlannedStatus::Failed),
            _ => None,
        }
    }
}

/// What a stakeholder does and says: the payload of a planned action and of a rule fallback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StakeholderMove {
    /// A short verb phrase: `steps between you and the crowd`.
    pub behaviour: String,
    /// `support`, `oppose`, `deflect`, `probe`, ...
    pub intent: String,
    /// A line of dialogue.
    pub line: String,
}

/// A row of `planned_stakeholder_actions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedAction {
    pub id: PlannedActionId,
    pub game_id: GameId,
    pub scene_id: SceneId,
    pub stakeholder_id: StakeholderId,
    pub kind: PlannedKind,
    pub payload: StakeholderMove,
    /// Higher first. Reactions are written above actions so they are served first.
    pub priority: i32,
    pub status: PlannedStatus,
    pub expires_at: Millis,
    /// Unique: a job that runs twice writes one row.
    pub dedupe_key: String,
    /// For reactions: the seq of the event reacted to.
    pub reacts_to: Option<u64>,
    pub provenance: Provenance,
    pub created_at: Millis,
}

/// Narration of a conflict entering a phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Narration {
    pub conflict_id: ConflictId,
    pub phase_id: PhaseId,
    pub text: String,
    pub provenance: Provenance,
}

/// The description of one beat of a phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BeatText {
    pub conflict_id: ConflictId,
    pub phase_id: PhaseId,
    pub beat: u32,
    pub text: String,
    pub provenance: Provenance,
}

/// A line of gossip: who says what about whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gossip {
    pub from: StakeholderId,
    pub about: StakeholderId,
    pub line: String,
}

/// What the town says: gossip lines and each stakeholder's reputation (-100..=100).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SocialBundle {
    pub gossip: Vec<Gossip>,
    pub reputation: BTreeMap<StakeholderId, i32>,
    pub provenance: Provenance,
}

/// A stakeholder's finished reply to a player's `say`, kept beside the game log (see
/// `migrations/*/0006_dialogue_replies.sql`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialogueReply {
    pub game_id: GameId,
    pub request_id: crate::ids::RequestId,
    /// The seq of the action it answers.
    pub answers_seq: u64,
    pub player_id: crate::ids::PlayerId,
    pub stakeholder_id: StakeholderId,
    pub text: String,
    pub created_at: Millis,
}

/// A resolved conflict turned into lore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanonEvent {
    pub id: uuid::Uuid,
    pub game_id: GameId,
    pub conflict_id: ConflictId,
    pub title: String,
    pub summary: String,
    /// Unique: canonizing a conflict twice writes one row.
    pub dedupe_key: String,
    pub provenance: Provenance,
    pub created_at: Millis,
}

/// A line a stakeholder may drop that refers to canon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanonReference {
    pub canon_id: uuid::Uuid,
    pub stakeholder_id: StakeholderId,
    pub line: String,
}

/// The canon references of a game, as cached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanonReferences {
    pub items: Vec<CanonReference>,
    pub provenance: Provenance,
}
