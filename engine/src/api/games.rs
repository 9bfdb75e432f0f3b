//! Scenarios, games, players and a game's state.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use hotpath_cache::GameId;
use hotpath_cache::cache::{CacheExt, keys};
use hotpath_cache::events::LoggedEvent;
use hotpath_cache::state::GameState;
use hotpath_cache::store::hash_token;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use crate::hot::{HotError, HotPath};

/// Longest accepted player name, in characters.
const MAX_NAME_CHARS: usize = 64;

// `name` and an action's `text` must hold something besides white space. Their schemas say so
// with the pattern `[^\t\n\x0b…\u3000]`: some character outside Unicode's `White_Space`,
// which is what `str::trim` removes. Spelled out rather than `\S`, because regex dialects
// disagree on what `\s` holds (Python's adds U+001C..U+001F, ECMA-262's adds U+FEFF).

pub(super) fn parse_game(raw: &str) -> Result<GameId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::NotFound(format!("no game `{raw}`")))
}

#[derive(Serialize, ToSchema)]
pub struct ScenarioList {
    pub scenarios: Vec<String>,
}

/// Names of the scenarios this engine can start games of.
#[utoipa::path(get, path = "/v1/scenarios", tag = "games", responses((status = 200, body = ScenarioList)))]
pub async fn list_scenarios(State(hot): State<HotPath>) -> Json<ScenarioList> {
    Json(ScenarioList {
        scenarios: hot.scenario_names(),
    })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGame {
    /// A name from `GET /v1/scenarios`.
    #[schema(example = "harbor-strike")]
    pub scenario: String,
}

#[derive(Serialize, ToSchema)]
pub struct GameCreated {
    #[schema(format = Uuid)]
    pub game_id: String,
}

/// Starts a game of a scenario (admin token).
#[utoipa::path(post, path = "/v1/games", tag = "games", request_body = CreateGame,
    security(("bearer" = [])),
    responses((status = 201, body = GameCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn create_game(
    State(hot): State<HotPath>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateGame>,
) -> Result<(StatusCode, Json<GameCreated>), ApiError> {
    caller.require_admin()?;
    let scenario = hot.scenario_named(&body.scenario).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no scenario `{}`; see GET /v1/scenarios",
            body.scenario
        ))
    })?;
    let game = GameId::generate();
    tokio::time::timeout(hot.config.budget, hot.store.create_game(game, &scenario))
        .await
        .map_err(|_| ApiError::Unavailable("database timed out".into()))?
        .map_err(HotError::from)?;
    hot.remember_game(game, scenario.clone()).await;
    // Warm the cache so the first action costs no rebuild; a failure only costs that rebuild.
    let state = GameState::new(game, &scenario);
    let _ = tokio::time::timeout(
        hot.config.budget,
        hot.cache
            .set_typed(&keys::snapshot(game), &state, hot.config.snapshot_ttl),
    )
    .await;
    tracing::info!(%game, scenario = %scenario.name, "game created");
    Ok((
        StatusCode::CREATED,
        Json(GameCreated {
            game_id: game.to_string(),
        }),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddPlayer {
    /// Shown to other players; at most 64 characters, not only white space (it is trimmed).
    #[schema(
        example = "Ada",
        min_length = 1,
        max_length = 64,
        pattern = r"[^\t\n\x0b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub name: String,
}

#[derive(Serialize, ToSchema)]
pub struct PlayerAdded {
    #[schema(format = Uuid)]
    pub player_id: String,
    /// The player's bearer token. Shown once; only its hash is stored.
    pub token: String,
}

/// A new bearer token: 256 random bits (two v4 UUIDs' worth of OS randomness).
fn new_token() -> String {
    format!(
        "hp_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Adds a player to a game and returns their token (admin token); 403 when the game has
/// `--max-players-per-game` players already.
#[utoipa::path(post, path = "/v1/games/{game_id}/players", tag = "games", request_body = AddPlayer,
    security(("bearer" = [])),
    params(("game_id" = uuid::Uuid, Path, description = "The game")),
    responses((status = 201, body = PlayerAdded), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn add_player(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(game): ApiPath<String>,
    ApiJson(body): ApiJson<AddPlayer>,
) -> Result<(StatusCode, Json<PlayerAdded>), ApiError> {
    caller.require_admin()?;
    let game = parse_game(&game)?;
    new_player_within(&app, game, &body.name).await
}

/// Adds a player named `raw_name` to `game`.
async fn new_player(
    hot: &HotPath,
    game: GameId,
    raw_name: &str,
) -> Result<(StatusCode, Json<PlayerAdded>), ApiError> {
    let scenario = hot.scenario_of(game).await?;
    let name = raw_name.trim();
    if name.is_empty() || raw_name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::Unprocessable(format!(
            "`name` must be 1 to {MAX_NAME_CHARS} characters, not only white space"
        )));
    }
    let token = new_token();
    let hash = hash_token(&token);
    let player = tokio::time::timeout(hot.config.budget, hot.store.add_player(game, name, &hash))
        .await
        .map_err(|_| ApiError::Unavailable("database timed out".into()))?
        .map_err(HotError::from)?;
    hot.remember_player(hash, player.clone()).await;
    let joined = LoggedEvent::PlayerJoined {
        player_id: player.id,
        name: player.name.clone(),
    };
    hot.writes.append(game, &scenario, joined).await?;
    Ok((
        StatusCode::CREATED,
        Json(PlayerAdded {
            player_id: player.id.to_string(),
            token,
        }),
    ))
}

/// A game's current invite, kept in the cache under the game's keys until it expires: a
/// random nonce and the expiry. Rotating replaces it (revoking the old invite); losing the
/// cache revokes every invite (the admin asks for a new one): invites fail closed.
#[derive(Serialize, Deserialize)]
struct InviteRecord {
    nonce: String,
    expires_at: i64,
}

fn invite_key(game: GameId) -> String {
    format!("{}invite", keys::game_prefix(game))
}

/// The invite a record stands for: `hpi_<expiry ms>_<SHA-256 of the admin token's digest, the
/// game, the nonce and the expiry>`, so it dies with the admin token too.
fn invite_of(state: &AppState, game: GameId, record: &InviteRecord) -> String {
    let digest = Sha256::digest(format!(
        "hotpath-invite\n{}\n{game}\n{}\n{}",
        state.admin_token_hash, record.nonce, record.expires_at
    ));
    format!(
        "hpi_{}_{}",
        record.expires_at,
        hotpath_cache::hex::hex(&digest)
    )
}

async fn current_invite(app: &AppState, game: GameId) -> Result<Option<InviteRecord>, ApiError> {
    let read = tokio::time::timeout(app.hot.config.budget, app.hot.cache.get(&invite_key(game)))
        .await
        .map_err(|_| ApiError::Unavailable("cache timed out reading an invite".into()))?
        .map_err(|e| ApiError::Unavailable(format!("reading an invite: {e}")))?;
    Ok(read
        .and_then(|bytes| serde_json::from_slice::<InviteRecord>(&bytes).ok())
        .filter(|r| r.expires_at > hotpath_cache::time::now_ms()))
}

async fn new_invite(app: &AppState, game: GameId) -> Result<InviteRecord, ApiError> {
    let record = InviteRecord {
        nonce: uuid::Uuid::new_v4().simple().to_string(),
        expires_at: hotpath_cache::time::now_ms() + app.invite_ttl.as_millis() as i64,
    };
    let bytes = serde_json::to_vec(&record).map_err(|e| ApiError::Internal(e.to_string()))?;
    tokio::time::timeout(
        app.hot.config.budget,
        app.hot.cache.set(&invite_key(game), bytes, app.invite_ttl),
    )
    .await
    .map_err(|_| ApiError::Unavailable("cache timed out writing an invite".into()))?
    .map_err(|e| ApiError::Unavailable(format!("writing an invite: {e}")))?;
    Ok(record)
}

fn invite_answer(app: &AppState, game: GameId, record: &InviteRecord) -> Json<Invite> {
    let invite = invite_of(app, game, record);
    Json(Invite {
        join_path: format!("/#game={game}&invite={invite}"),
        invite,
        expires_at: record.expires_at,
    })
}

#[derive(Serialize, ToSchema)]
pub struct Invite {
    /// Lets anyone who holds it join this game as a new player (`POST …/join`) until it
    /// expires or is rotated, while the game has room.
    pub invite: String,
    /// The web page's join link, relative to the server: `/#game=…&invite=…`.
    pub join_path: String,
    /// When the invite stops working, in milliseconds since the Unix epoch.
    pub expires_at: i64,
}

/// A join link for a game (admin token): whoever opens it in the web page (or sends its invite
/// to `POST /v1/games/{game_id}/join`) becomes a new player. The same link until it expires
/// (`--invite-ttl-secs`, a day) or is rotated, then a new one.
#[utoipa::path(get, path = "/v1/games/{game_id}/invite", tag = "games", security(("bearer" = [])),
    params(("game_id" = uuid::Uuid, Path, description = "The game")),
    responses((status = 200, body = Invite), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn invite(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(game): ApiPath<String>,
) -> Result<Json<Invite>, ApiError> {
    caller.require_admin()?;
    let game = parse_game(&game)?;
    app.hot.scenario_of(game).await?;
    let record = match current_invite(&app, game).await? {
        Some(record) => record,
        None => new_invite(&app, game).await?,
    };
    Ok(invite_answer(&app, game, &record))
}

/// Replaces a game's invite with a new one (admin token): the old one stops working at once.
#[utoipa::path(post, path = "/v1/games/{game_id}/invite", tag = "games", security(("bearer" = [])),
    params(("game_id" = uuid::Uuid, Path, description = "The game")),
    responses((status = 200, body = Invite), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn rotate_invite(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(game): ApiPath<String>,
) -> Result<Json<Invite>, ApiError> {
    caller.require_admin()?;
    let game = parse_game(&game)?;
    app.hot.scenario_of(game).await?;
    let record = new_invite(&app, game).await?;
    tracing::info!(%game, "invite rotated");
    Ok(invite_answer(&app, game, &record))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinGame {
    /// Shown to other players; at most 64 characters, not only white space (it is trimmed).
    #[schema(
        example = "Ada",
        min_length = 1,
        max_length = 64,
        pattern = r"[^\t\n\x0b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub name: String,
    /// The invite from `GET /v1/games/{game_id}/invite`.
    #[schema(min_length = 1, max_length = 200)]
    pub invite: String,
}

/// Joins a game with its invite (no token needed): returns the new player's token. Join
/// attempts are limited per game (`--joins-per-minute`), and a game takes at most
/// `--max-players-per-game` players.
#[utoipa::path(post, path = "/v1/games/{game_id}/join", tag = "games", request_body = JoinGame,
    params(("game_id" = uuid::Uuid, Path, description = "The game")),
    responses((status = 201, body = PlayerAdded), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "The invite is not this game's, expired or was rotated, or the game is full"),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait")),
            description = "Too many join attempts for this game lately"),
        (status = 503, body = ErrorBody)))]
pub async fn join(
    State(app): State<AppState>,
    ApiPath(game): ApiPath<String>,
    ApiJson(body): ApiJson<JoinGame>,
) -> Result<(StatusCode, Json<PlayerAdded>), ApiError> {
    let game = parse_game(&game)?;
    app.limits.join(game).await?;
    let refused = || {
        ApiError::Forbidden(
            "this invite is not this game's, has expired or was rotated: ask for a new one".into(),
        )
    };
    let record = current_invite(&app, game).await?.ok_or_else(refused)?;
    // Digests compared, so the comparison's timing says nothing about the invite.
    if Sha256::digest(invite_of(&app, game, &record)) != Sha256::digest(&body.invite) {
        return Err(refused());
    }
    new_player_within(&app, game, &body.name).await
}

/// Adds a player unless the game has `max_players_per_game` already.
async fn new_player_within(
    app: &AppState,
    game: GameId,
    name: &str,
) -> Result<(StatusCode, Json<PlayerAdded>), ApiError> {
    let scenario = app.hot.scenario_of(game).await?;
    let (state, _) = app.hot.current_state(game, &scenario).await?;
    if state.players.len() >= app.max_players_per_game {
        return Err(ApiError::Forbidden(format!(
            "the game is full: it has {} players, the most allowed",
            state.players.len()
        )));
    }
    new_player(&app.hot, game, name).await
}

#[derive(Serialize, ToSchema)]
pub struct StakeholderView {
    pub id: String,
    pub name: String,
    pub role: String,
}

#[derive(Serialize, ToSchema)]
pub struct SceneView {
    pub id: String,
    pub name: String,
    pub description: String,
    pub stakeholders: Vec<StakeholderView>,
    pub conflicts: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ConflictView {
    pub id: String,
    pub name: String,
    pub phase: String,
    pub phase_name: String,
    pub intensity: u32,
    pub resolve_at: u32,
    pub resolved: bool,
}

#[derive(Serialize, ToSchema)]
pub struct GameView {
    pub game_id: String,
    pub scenario: String,
    pub title: String,
    pub turn: u32,
    /// Seq of the last event in the game's log.
    pub seq: u64,
    pub scenes: Vec<SceneView>,
    pub conflicts: Vec<ConflictView>,
    /// The cache could not be read; the state was rebuilt from the log.
    pub degraded: bool,
}

/// A game's state: turn, scenes with their stakeholders, conflicts with phase and intensity
/// (a player of the game, or the admin).
#[utoipa::path(get, path = "/v1/games/{game_id}", tag = "games", security(("bearer" = [])),
    params(("game_id" = uuid::Uuid, Path, description = "The game")),
    responses((status = 200, body = GameView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn get_game(
    State(hot): State<HotPath>,
    caller: Caller,
    ApiPath(game): ApiPath<String>,
) -> Result<Json<GameView>, ApiError> {
    let game = parse_game(&game)?;
    caller.require_game(game)?;
    let scenario = hot.scenario_of(game).await?;
    let (state, degraded) = hot.current_state(game, &scenario).await?;
    let scenes = scenario
        .scenes
        .iter()
        .map(|s| SceneView {
            id: s.id.to_string(),
            name: s.name.clone(),
            description: s.description.clone(),
            stakeholders: s
                .stakeholders
                .iter()
                .filter_map(|id| scenario.stakeholder(id))
                .map(|p| StakeholderView {
                    id: p.id.to_string(),
                    name: p.name.clone(),
                    role: p.role.clone(),
                })
                .collect(),
            conflicts: s.conflicts.iter().map(|c| c.to_string()).collect(),
        })
        .collect();
    let conflicts = scenario
        .conflicts
        .iter()
        .filter_map(|c| {
            let s = state.conflicts.get(&c.id)?;
            Some(ConflictView {
                id: c.id.to_string(),
                name: c.name.clone(),
                phase: s.phase.to_string(),
                phase_name: c
                    .phases
                    .iter()
                    .find(|p| p.id == s.phase)
                    .map(|p| p.name.clone())
                    .unwrap_or_default(),
                intensity: s.intensity,
                resolve_at: c.resolve_at,
                resolved: s.resolved,
            })
        })
        .collect();
    Ok(Json(GameView {
        game_id: game.to_string(),
        scenario: scenario.name.clone(),
        title: scenario.title.clone(),
        turn: state.turn,
        seq: state.seq,
        scenes,
        conflicts,
        degraded,
    }))
}
