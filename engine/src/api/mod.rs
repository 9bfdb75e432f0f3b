//! The HTTP API (axum 0.8, JSON). [`app`] builds the router from an [`AppState`]; `main` only
//! binds it, so tests drive it with `oneshot` or a socket on port 0.
//!
//! Every handler runs inside the hot-path scope of the runtime guard. Layers: request ids,
//! tracing, a body limit, a timeout to the response head, gzip (never on the event stream), and
//! a per-player rate limit on actions.

mod actions;
mod auth;
mod error;
mod events;
mod games;
mod jobs;
mod limits;
mod ops;
mod slow_path;
mod web;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef, Request};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use self::error::{ApiError, ErrorBody};
pub use self::limits::ApiLimits;
pub use self::ops::metrics_handle;

use hotpath_cache::limits::Rate;
use hotpath_cache::store::hash_token;

use crate::hot::HotPath;

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Knobs of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Actions per second a player may sustain.
    pub rate_per_second: NonZeroU32,
    /// Actions a player may send at once.
    pub burst: NonZeroU32,
    /// Unknown bearer tokens per second a client address may sustain (each costs a database
    /// lookup); over it, its token lookups answer 429.
    pub unknown_tokens_per_second: NonZeroU32,
    /// Unknown bearer tokens a client address may send at once.
    pub unknown_tokens_burst: NonZeroU32,
    /// Whole-request timeout (not applied to the event stream).
    pub request_timeout: Duration,
    /// Event streams one player may hold open at once in this process; one more answers 429.
    pub max_streams_per_player: usize,
    /// How often `/metrics` may read its figures from the storage (in the background).
    pub metrics_refresh: Duration,
    /// How long an invite (`GET /v1/games/{game}/invite`) lets players join.
    pub invite_ttl: Duration,
    /// Players a game may have; joining (or adding) one more is refused.
    pub max_players_per_game: usize,
    /// Join attempts per game per minute (sustained), counted for the whole deployment.
    pub joins_per_minute: NonZeroU32,
    /// Join attempts one game may take at once.
    pub joins_burst: NonZeroU32,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            rate_per_second: NonZeroU32::new(10).expect("non-zero"),
            burst: NonZeroU32::new(20).expect("non-zero"),
            unknown_tokens_per_second: NonZeroU32::new(10).expect("non-zero"),
            unknown_tokens_burst: NonZeroU32::new(100).expect("non-zero"),
            request_timeout: Duration::from_secs(10),
            max_streams_per_player: 8,
            metrics_refresh: Duration::from_secs(5),
            invite_ttl: Duration::from_secs(24 * 3600),
            max_players_per_game: 64,
            joins_per_minute: NonZeroU32::new(10).expect("non-zero"),
            joins_burst: NonZeroU32::new(10).expect("non-zero"),
        }
    }
}

/// What handlers share. Handlers extract only the part they need (`State<HotPath>`).
#[derive(Clone)]
pub struct AppState {
    pub hot: HotPath,
    /// SHA-256 of the admin token.
    pub admin_token_hash: Arc<str>,
    /// Per-player action and per-address unknown-token limits (shared by every engine process
    /// once [`ApiLimits::shared`] is set).
    pub limits: ApiLimits,
    /// Event streams open per player in this process.
    pub streams: limits::StreamSlots,
    /// How long an invite lives, and how many players a game may have.
    pub invite_ttl: Duration,
    pub max_players_per_game: usize,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The storage's figures on `/metrics`, refreshed in the background.
    pub figures: Arc<ops::StoreFigures>,
    /// The job storage, for readiness, the queue metrics and the admin job routes (never for
    /// pushing: the write path inserts jobs in the action's transaction).
    pub queue: Option<Arc<dyn hotpath_cache::jobs::JobAdmin>>,
    /// Flips to `true` when the server shuts down, ending event streams so that in-flight
    /// requests can finish and connections close.
    pub shutdown: tokio::sync::watch::Sender<bool>,
}

impl FromRef<AppState> for HotPath {
    fn from_ref(state: &AppState) -> HotPath {
        state.hot.clone()
    }
}

impl AppState {
    pub fn new(hot: HotPath, admin_token: &str, config: &ApiConfig) -> AppState {
        AppState {
            hot,
            admin_token_hash: hash_token(admin_token).into(),
            limits: ApiLimits::local(
                Rate {
                    per_second: f64::from(config.rate_per_second.get()),
                    burst: config.burst.get(),
                },
                Rate {
                    per_second: f64::from(config.unknown_tokens_per_second.get()),
                    burst: config.unknown_tokens_burst.get(),
                },
            )
            .joins(Rate {
                per_second: f64::from(config.joins_per_minute.get()) / 60.0,
                burst: config.joins_burst.get(),
            }),
            streams: limits::StreamSlots::new(config.max_streams_per_player),
            invite_ttl: config.invite_ttl,
            max_players_per_game: config.max_players_per_game.max(1),
            metrics: Some(ops::metrics_handle()),
            figures: Arc::new(ops::StoreFigures::new(config.metrics_refresh)),
            queue: None,
            shutdown: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Ends every event stream of this server.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hotpath",
        description = "An engine for LLM-driven narrative games that answers every action from caches, precomputed actions and rules.",
        version = env!("CARGO_PKG_VERSION")
    ),
    components(schemas(ErrorBody, events::EventsFrom, jobs::RequeueRequest, jobs::JobKindName, jobs::JobStatus)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// What the route macros cannot say: every operation's 405 (another method on its path), a
/// description for every response (OpenAPI requires one), and the links from the operations
/// that create ids to those that take them (so that tools such as schemathesis can chain
/// calls). Applied to the whole document, once the routes are in.
struct Contract;

impl utoipa::Modify for Contract {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::link::LinkBuilder;
        use utoipa::openapi::{Ref, RefOr, ResponseBuilder};

        // An error answer with the error body and one documented header.
        let error_with_header = |description: &str, header: &str, schema, about: &str| {
            ResponseBuilder::new()
                .description(description)
                .header(
                    header,
                    utoipa::openapi::HeaderBuilder::new()
                        .schema(Some(schema))
                        .description(Some(about))
                        .build(),
                )
                .content(
                    "application/json",
                    utoipa::openapi::ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        let method_not_allowed = error_with_header(
            "Another method on this path: the methods it has are in `Allow` (OpenAPI cannot \
             list the methods a path does not have, so every operation names this answer)",
            "Allow",
            <String as utoipa::PartialSchema>::schema(),
            "The path's methods",
        );
        let unknown_tokens = error_with_header(
            "Too many unknown bearer tokens from this client address lately: wait \
             `Retry-After` seconds",
            "Retry-After",
            <u64 as utoipa::PartialSchema>::schema(),
            "Seconds to wait",
        );
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                op.responses
                    .responses
                    .insert("405".into(), RefOr::T(method_not_allowed.clone()));
                // A bearer token the server has not seen lately is looked up in the database,
                // and a client address sending many unknown ones is held back.
                if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    op.responses
                        .responses
                        .entry("429".into())
                        .or_insert_with(|| RefOr::T(unknown_tokens.clone()));
                }
                for (status, response) in op.responses.responses.iter_mut() {
                    // Typed bindings and path calls: hotpath-lint cannot infer these receivers.
                    let status: &str = status;
                    if let RefOr::T(response) = response
                        && String::is_empty(&response.description)
                    {
                        let reason = <u16 as std::str::FromStr>::from_str(status)
                            .ok()
                            .and_then(|s| StatusCode::from_u16(s).ok())
                            .and_then(|s| s.canonical_reason());
                        response.description = reason.unwrap_or("").to_owned();
                    }
                }
            }
        }

        // (path, method, status) of a creating operation -> links to the operations using its id.
        let game_from_body = "$response.body#/game_id";
        let game_from_path = "$request.path.game_id";
        /// (link name, target operation id)
        type Targets = &'static [(&'static str, &'static str)];
        let links: [(&str, &str, &str, Targets); 4] = [
            (
                "/v1/games",
                "post",
                "201",
                &[
                    ("AddPlayer", "add_player"),
                    ("GetGame", "get_game"),
                    ("Invite", "invite"),
                    ("Act", "act"),
                    ("Events", "events"),
                ],
            ),
            (
                "/v1/games/{game_id}/players",
                "post",
                "201",
                &[("Act", "act"), ("GetGame", "get_game")],
            ),
            (
                "/v1/games/{game_id}/invite",
                "get",
                "200",
                &[("Join", "join")],
            ),
            (
                "/v1/games/{game_id}/invite",
                "post",
                "200",
                &[("Join", "join")],
            ),
        ];
        for (path, method, status, targets) in links {
            let Some(item) = openapi.paths.paths.get_mut(path) else {
                continue;
            };
            let op = match method {
                "post" => item.post.as_mut(),
                _ => item.get.as_mut(),
            };
            let Some(RefOr::T(response)) = op.and_then(|op| op.responses.responses.get_mut(status))
            else {
                continue;
            };
            let source = if path == "/v1/games" {
                game_from_body
            } else {
                game_from_path
            };
            for (name, operation_id) in targets {
                let mut link = LinkBuilder::new()
                    .operation_id(*operation_id)
                    .parameter("game_id", source);
                if *operation_id == "join" {
                    link = link.request_body(Some(serde_json::json!({
                        "name": "Joiner",
                        "invite": "$response.body#/invite"
                    })));
                }
                response
                    .links
                    .insert((*name).to_owned(), RefOr::T(link.build()));
            }
        }
    }
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Runs the handler as hot-path code: an LLM call inside it fails (panics in strict mode).
async fn hot_path_scope(request: Request, next: Next) -> Response {
    hotpath_cache::guard::hot_path_scope("hotpath_engine::api", next.run(request)).await
}

/// The router and its OpenAPI document.
pub fn router() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(games::list_scenarios))
        .routes(routes!(games::create_game))
        .routes(routes!(games::add_player))
        .routes(routes!(games::get_game))
        .routes(routes!(games::invite, games::rotate_invite))
        .routes(routes!(games::join))
        .routes(routes!(actions::act))
        .routes(routes!(actions::get_action))
        .routes(routes!(events::events))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(slow_path::slow_path))
        .routes(routes!(jobs::list_jobs))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::dead_letters))
        .routes(routes!(jobs::requeue))
        .routes(routes!(jobs::purge))
        .split_for_parts();
    let mut api = api;
    utoipa::Modify::modify(&Contract, &mut api);
    (router, api)
}

/// The whole application: routes, `/openapi.json` and the layers.
pub fn app(state: AppState, config: &ApiConfig) -> Router {
    let (routes, api) = router();
    // The document never changes: render it once.
    let document: Arc<str> = serde_json::to_string(&api)
        .expect("the OpenAPI document serializes")
        .into();
    let request_id = HeaderName::from_static("x-request-id");
    routes
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let document = document.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        document.to_string(),
                    )
                }
            }),
        )
        .route("/", axum::routing::get(web::index))
        .route("/app.js", axum::routing::get(web::app_js))
        .route("/style.css", axum::routing::get(web::style_css))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        // axum adds the `Allow` header; this gives the 405 the API's error body.
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("this path does not take this method; see `Allow`".into())
        })
        .layer(middleware::from_fn(hot_path_scope))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CompressionLayer::new())
        // Bounds the time to a response's head; an event stream answers at once and is not cut.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            config.request_timeout,
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http())
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}
