//! `POST /v1/games/{game_id}/actions`: the hot path's front door.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use super::games::parse_game;
use crate::hot::answer::ActionAnswer;
use crate::hot::resolve::{self, ActionInput};

/// The kinds of action (documentation only: the handler reads a string, so that an unknown
/// kind is a 422 that names the known ones).
#[derive(serde::Serialize, ToSchema)]
#[schema(as = ActionKind)]
#[allow(dead_code)]
#[serde(rename_all = "snake_case")]
pub enum ActionKindDoc {
    Say,
    Ask,
    Persuade,
    Threaten,
    Help,
    Investigate,
    Trade,
    Observe,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    /// Where the player acts: a scene id of the game's scenario (`GET /v1/games/{game_id}`).
    #[schema(example = "docks")]
    pub scene_id: String,
    /// Classified from `text` when absent.
    #[schema(value_type = Option<ActionKindDoc>)]
    pub kind: Option<String>,
    /// What the player does or says: at most 2000 characters, not only white space.
    #[schema(
        example = "Where did the wages go?",
        min_length = 1,
        max_length = 2000,
        pattern = r"[^\t\n\x0b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub text: String,
    /// A stakeholder present in the scene the action is aimed at. `say` with a target also
    /// streams that stakeholder's reply as `dialogue.*` events.
    #[schema(example = "mara")]
    pub target: Option<String>,
}

/// Resolves a player's action from caches, precomputed actions and rules (player token). Send
/// an `Idempotency-Key` to make retries safe: the same key and body replay the stored answer.
#[utoipa::path(post, path = "/v1/games/{game_id}/actions", tag = "actions", request_body = ActionRequest,
    security(("bearer" = [])),
    params(("game_id" = uuid::Uuid, Path, description = "The game"),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 200,
            pattern = "^[!-~]([ -~]*[!-~])?$",
            description = "Makes a retry replay the first answer: 1 to 200 visible ASCII characters")),
    responses((status = 200, body = ActionAnswer, description = "The answer",
            headers(("Idempotent-Replayed" = String, description = "`true` when the answer is a replay"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait")))))]
pub async fn act(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(game): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ActionRequest>,
) -> Result<Response, ApiError> {
    let game = parse_game(&game)?;
    let player = caller.player_of(game)?;
    state.limits.action(&player.id).await?;
    let key = match headers.get("idempotency-key") {
        None => None,
        // Visible ASCII and spaces (`HeaderValue::to_str` also lets tabs through).
        Some(v) => match v.to_str() {
            Ok(k) if k.bytes().all(|b| (b' '..=b'~').contains(&b)) => Some(k.to_owned()),
            _ => {
                return Err(ApiError::BadRequest(
                    "Idempotency-Key must be visible ASCII".into(),
                ));
            }
        },
    };
    let input = ActionInput {
        scene_id: body.scene_id,
        kind: body.kind,
        text: body.text,
        target: body.target,
    };
    let resolved = resolve::resolve(&state.hot, player, game, input, key).await?;
    let mut response = Json(resolved.answer).into_response();
    if resolved.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}
