//! `GET /v1/games/{game_id}/events`: the game's event stream as Server-Sent Events. Event ids
//! are stream ids, so `Last-Event-ID` resumes without loss, or gets a `reset` event when the
//! id is older than what the stream still holds. Keep-alive comments every 15 s.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use utoipa::IntoParams;

use hotpath_cache::events::RESET_EVENT;
use hotpath_cache::stream::{Position, StreamId, StreamItem};

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::games::parse_game;
use crate::hot::{HotError, HotPath};

#[derive(Debug, Deserialize, IntoParams)]
pub struct EventsQuery {
    /// `start` to replay everything the stream still holds; default: only new events.
    /// Ignored when `Last-Event-ID` is sent.
    pub from: Option<String>,
}

/// Follows a game's events (a player of the game, or the admin).
#[utoipa::path(get, path = "/v1/games/{game_id}/events", tag = "events", security(("bearer" = [])),
    params(("game_id" = String, Path, description = "The game"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id"),
        EventsQuery),
    responses((status = 200, content_type = "text/event-stream",
            description = "Events named by kind: action.applied, state.updated, job.*, content.ready, dialogue.chunk, dialogue.done, reset"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn events(
    State(hot): State<HotPath>,
    State(app): State<super::AppState>,
    caller: Caller,
    Path(game): Path<String>,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let game = parse_game(&game)?;
    caller.require_game(game)?;
    hot.scenario_of(game).await?;
    let position = match headers.get("last-event-id") {
        Some(v) => {
            let id: StreamId = v
                .to_str()
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    ApiError::BadRequest("Last-Event-ID is not an id this stream gave".into())
                })?;
            Position::After(id)
        }
        None => match query.from.as_deref() {
            None | Some("now") => Position::Live,
            Some("start") => Position::Start,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "`from` must be `start` or `now`, not `{other}`"
                )));
            }
        },
    };
    let subscription = hot
        .stream
        .subscribe(game, position)
        .await
        .map_err(|e| HotError::Unavailable(e.to_string()))?;
    let mut stopping = app.shutdown.subscribe();
    let events = subscription.take_until(async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    });
    let events = events.map(|item| {
        Ok(match item {
            StreamItem::Event { id, event } => Event::default()
                .id(id.to_string())
                .event(event.kind())
                .json_data(&event)
                .unwrap_or_else(|_| Event::default().comment("unencodable event")),
            StreamItem::Reset => Event::default().event(RESET_EVENT).data("{}"),
        })
    });
    Ok(Sse::new(events).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("keep-alive"),
    ))
}
