//! The API's half of one player action — ARCHITECTURE.md, "One player action":
//!
//! 1. validate; a replayed `Idempotency-Key` returns the stored answer;
//! 2. one cache round trip for the content the scene may need, inside its share of the budget
//!    (a slow or failed read degrades those pieces to fallbacks);
//! 3. hand it to the game's writer ([`super::writer`]), which applies the rules to the state it
//!    owns ([`super::apply`]) and has the committer ([`crate::write`]) write it; the answer is
//!    built inside the commit ([`super::answer::build`]);
//! 4. answer, once committed — every piece with its source —, 503 when it was not applied, or
//!    202 when its commit began and had not ended one budget after the deadline.

use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};

use hotpath_cache::GameId;
use hotpath_cache::cache::CacheError;
use hotpath_cache::ids::{ActionId, RequestId, SceneId, StakeholderId};
use hotpath_cache::model::{ActionKind, PlayerAction};
use hotpath_cache::scenario::{Scenario, Scene};
use hotpath_cache::store::{IdempotencyKey, PlayerRecord};

use super::reads::{ActionReads, CachedContent};
use super::rules;
use super::writer::Act;
use super::{HotError, HotPath};

/// Longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY: usize = 200;

/// An action as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ActionInput {
    pub scene_id: String,
    pub kind: Option<String>,
    pub text: String,
    pub target: Option<String>,
}

/// The answer, and whether it is a replay of a stored one.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub answer: serde_json::Value,
    pub replayed: bool,
}

/// A validated action: the scene exists, the kind is known, the target is present.
struct Valid<'s> {
    scene: &'s Scene,
    kind: ActionKind,
    target: Option<StakeholderId>,
}

fn validate<'s>(scenario: &'s Scenario, input: &ActionInput) -> Result<Valid<'s>, HotError> {
    let scene = SceneId::new(input.scene_id.clone())
        .ok()
        .and_then(|id| scenario.scene(&id))
        .ok_or_else(|| HotError::NotFound(format!("no scene `{}` in this game", input.scene_id)))?;
    let explicit = match &input.kind {
        None => None,
        Some(k) => Some(ActionKind::parse(k).ok_or_else(|| {
            let known: Vec<_> = ActionKind::ALL.iter().map(|k| k.as_str()).collect();
            HotError::Unprocessable(format!(
                "unknown action kind `{k}`; expected one of: {}",
                known.join(", ")
            ))
        })?),
    };
    let chars = input.text.chars().count();
    if input.text.trim().is_empty() {
        return Err(HotError::Unprocessable("`text` must not be empty".into()));
    }
    if chars > rules::MAX_TEXT_CHARS {
        return Err(HotError::Unprocessable(format!(
            "`text` is {chars} characters; at most {} are accepted",
            rules::MAX_TEXT_CHARS
        )));
    }
    let target = match &input.target {
        None => None,
        Some(t) => {
            let id = StakeholderId::new(t.clone())
                .ok()
                .filter(|id| scenario.stakeholder(id).is_some())
                .ok_or_else(|| HotError::NotFound(format!("no stakeholder `{t}` in this game")))?;
            if !scene.stakeholders.contains(&id) {
                return Err(HotError::Unprocessable(format!(
                    "stakeholder `{t}` is not in scene `{}`",
                    scene.id
                )));
            }
            Some(id)
        }
    };
    Ok(Valid {
        scene,
        kind: rules::classify(explicit, &input.text),
        target,
    })
}

fn request_hash(game: GameId, input: &ActionInput) -> String {
    let canonical = serde_json::to_vec(&(game, input)).unwrap_or_default();
    hotpath_cache::hex::hex(&Sha256::digest(&canonical))
}

/// Resolves `input` by `player` in `game`.
pub async fn resolve(
    hot: &HotPath,
    player: &PlayerRecord,
    game: GameId,
    input: ActionInput,
    idempotency_key: Option<String>,
) -> Result<Resolved, HotError> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + hot.config.budget;
    let scenario = hot.scenario_of(game).await?;
    let valid = validate(&scenario, &input)?;

    // 1. A replayed key returns the stored answer; the same key with another request is refused.
    let idempotency = match idempotency_key {
        Some(key) => {
            if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
                return Err(HotError::Unprocessable(format!(
                    "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} bytes"
                )));
            }
            let hash = request_hash(game, &input);
            if let Some(replay) = replay(hot, player, &key, &hash, deadline).await? {
                return Ok(replay);
            }
            Some(IdempotencyKey {
                player_id: player.id,
                key,
                request_hash: hash,
            })
        }
        None => None,
    };

    // 2. One round trip for the content the scene may need, within its share of the budget.
    let (batch, reads) = ActionReads::plan(game, &scenario, valid.scene);
    let read_deadline = tokio::time::Instant::now() + hot.config.cache_budget();
    let mut degraded = false;
    let cached = match tokio::time::timeout_at(read_deadline, batch.fetch(&*hot.cache)).await {
        Ok(Ok(fetched)) => reads.take(fetched),
        Ok(Err(CacheError::Backend(e))) | Ok(Err(CacheError::Decode { message: e, .. })) => {
            tracing::warn!(%game, error = %e, "cache read failed; answering from fallbacks");
            degraded = true;
            CachedContent::default()
        }
        Err(_) => {
            tracing::warn!(%game, "cache read timed out; answering from fallbacks");
            degraded = true;
            CachedContent::default()
        }
    };

    let action = PlayerAction {
        id: ActionId::generate(),
        game_id: game,
        player_id: player.id,
        scene_id: valid.scene.id.clone(),
        kind: valid.kind,
        text: input.text.clone(),
        target: valid.target.clone(),
    };
    let dialogue =
        (valid.kind == ActionKind::Say && valid.target.is_some()).then(RequestId::generate);

    // 3–5. The game's writer applies it; the committer makes it durable.
    let answer = hot
        .writes
        .act(
            &scenario,
            Act {
                action,
                dialogue,
                cached: Arc::new(cached),
                degraded,
                idempotency,
                deadline,
                reply: None,
                fate: Default::default(),
                joined: Vec::new(),
            },
        )
        .await?;
    metrics::histogram!("hotpath_action_seconds").record(started.elapsed().as_secs_f64());
    if degraded {
        metrics::counter!("hotpath_degraded_answers_total").increment(1);
    }
    Ok(Resolved {
        answer,
        replayed: false,
    })
}

/// The stored answer of `key`, if it was recorded for this very request.
pub(crate) async fn replay(
    hot: &HotPath,
    player: &PlayerRecord,
    key: &str,
    hash: &str,
    deadline: tokio::time::Instant,
) -> Result<Option<Resolved>, HotError> {
    let stored = tokio::time::timeout_at(deadline, hot.store.idempotent_response(player.id, key))
        .await
        .map_err(|_| HotError::Unavailable("database timed out".into()))??;
    match stored {
        None => Ok(None),
        Some(s) => Ok(Some(Resolved {
            answer: same_request(&s.request_hash, hash, s.response)?,
            replayed: true,
        })),
    }
}

/// The answer recorded under an `Idempotency-Key` (`recorded` is the hash of the request it
/// was first used for), if `request` is that same request; else 422. One key, one action.
pub(crate) fn same_request(
    recorded: &str,
    request: &str,
    answer: serde_json::Value,
) -> Result<serde_json::Value, HotError> {
    if recorded == request {
        Ok(answer)
    } else {
        Err(HotError::Unprocessable(
            "this Idempotency-Key was already used for a different request".into(),
        ))
    }
}
