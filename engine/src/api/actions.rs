//! `POST /v1/games/{game_id}/actions`: the hot path's front door.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use super::games::parse_game;
use hotpath_cache::events::LoggedEvent;
use hotpath_cache::ids::ActionId;

use crate::hot::HotError;
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

/// An action whose outcome is not known yet: its commit is under way.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ActionPending {
    #[schema(format = Uuid)]
    pub action_id: String,
    /// Always `pending`.
    #[schema(example = "pending")]
    pub status: String,
    /// Where to learn the outcome.
    pub location: String,
    pub message: String,
}

fn pending(game: hotpath_cache::GameId, action_id: ActionId) -> Response {
    let location = format!("/v1/games/{game}/actions/{action_id}");
    let mut response = (
        StatusCode::ACCEPTED,
        Json(ActionPending {
            action_id: action_id.to_string(),
            status: "pending".into(),
            location: location.clone(),
            message: "the action is still being recorded: it will be applied once or not at all; \
                      ask `location` (or retry with the same Idempotency-Key) to learn which"
                .into(),
        }),
    )
        .into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, value);
    }
    headers.insert(header::RETRY_AFTER, HeaderValue::from(1u64));
    response
}

/// Where an action is in its game's log.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ActionRecord {
    #[schema(format = Uuid)]
    pub action_id: String,
    /// Always `applied`: an action not in the log is a 404.
    #[schema(example = "applied")]
    pub status: String,
    /// Its event's seq in the game's log.
    pub seq: u64,
    pub turn: u32,
    pub kind: String,
    pub scene_id: String,
    #[schema(format = Uuid)]
    pub player_id: String,
}

/// Whether an action is in the game's log (a player of the game, or the admin): the way to
/// learn the outcome of an action answered 202. A 404 means it is not in the log; once its
/// commit has ended (the database's statement timeout, 5 s, after the 202), it never will be.
#[utoipa::path(get, path = "/v1/games/{game_id}/actions/{action_id}", tag = "actions",
    security(("bearer" = [])),
    params(("game_id" = uuid::Uuid, Path, description = "The game"),
        ("action_id" = uuid::Uuid, Path, description = "The action, as a 200 or 202 answer named it")),
    responses((status = 200, body = ActionRecord), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn get_action(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((game, action)): ApiPath<(String, String)>,
) -> Result<Json<ActionRecord>, ApiError> {
    let game = parse_game(&game)?;
    caller.require_game(game)?;
    let not_found = || ApiError::NotFound(format!("no action `{action}` in this game's log"));
    let action_id: ActionId = action.parse().map_err(|_| not_found())?;
    let deadline = tokio::time::Instant::now() + state.hot.config.budget * 5;
    let events = tokio::time::timeout_at(deadline, state.hot.store.events(game, 0))
        .await
        .map_err(|_| ApiError::Unavailable("database timed out".into()))?
        .map_err(|e| ApiError::from(HotError::from(e)))?;
    events
        .into_iter()
        .find_map(|(seq, event)| match event {
            LoggedEvent::ActionApplied(a) if a.action_id == action_id => Some(ActionRecord {
                action_id: a.action_id.to_string(),
                status: "applied".into(),
                seq,
                turn: a.turn,
                kind: a.kind.as_str().to_owned(),
                scene_id: a.scene_id.to_string(),
                player_id: a.player_id.to_string(),
            }),
            _ => None,
        })
        .map(Json)
        .ok_or_else(not_found)
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
        (status = 202, body = ActionPending, description = "The action's commit began inside the budget and had not finished one budget later: it is applied once or not at all. Ask `Location` (or retry with the same `Idempotency-Key`) to learn which",
            headers(("Location" = String, description = "`/v1/games/{game_id}/actions/{action_id}`"),
                ("Retry-After" = u64, description = "Seconds to wait before asking"))),
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
    let resolved = match resolve::resolve(&state.hot, player, game, input, key).await {
        Ok(resolved) => resolved,
        Err(HotError::OutcomeUnknown(action_id)) => return Ok(pending(game, action_id)),
        Err(e) => return Err(e.into()),
    };
    let mut response = Json(resolved.answer).into_response();
    if resolved.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}
