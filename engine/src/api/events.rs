//! `GET /v1/games/{game_id}/events`: the game's event stream as Server-Sent Events. Event ids
//! are stream ids, so `Last-Event-ID` resumes without loss, or gets a `reset` event when the
//! id is older than what the stream still holds. Keep-alive comments every 15 s.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use utoipa::IntoParams;

use hotpath_cache::GameId;
use hotpath_cache::events::{GameEvent, RESET_EVENT};
use hotpath_cache::store::CommittedEvents;
use hotpath_cache::stream::{Position, StreamId, StreamItem, Subscription};

use super::auth::Caller;
use super::error::{ApiError, ApiPath, ApiQuery, ErrorBody};
use super::games::parse_game;
use crate::hot::{HotError, HotPath};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// `start` to replay everything the stream still holds; `now` (the default): only new
    /// events. Ignored when `Last-Event-ID` is sent.
    #[param(value_type = Option<EventsFrom>)]
    pub from: Option<String>,
}

/// Where a new event stream starts (documentation only: the handler names the accepted
/// values in its 400).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
#[serde(rename_all = "snake_case")]
pub enum EventsFrom {
    Start,
    Now,
}

/// Follows a game's events (a player of the game, or the admin).
#[utoipa::path(get, path = "/v1/games/{game_id}/events", tag = "events", security(("bearer" = [])),
    params(("game_id" = uuid::Uuid, Path, description = "The game"),
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
    ApiPath(game): ApiPath<String>,
    ApiQuery(query): ApiQuery<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let game = parse_game(&game)?;
    caller.require_game(game)?;
    hot.scenario_of(game).await?;
    // `from` is checked even when `Last-Event-ID` makes it moot: a bad value is always a 400.
    let position = match query.from.as_deref() {
        None | Some("now") => Position::Live,
        Some("start") => Position::Start,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "`from` must be `start` or `now`, not `{other}`"
            )));
        }
    };
    let subscription = match headers.get("last-event-id") {
        Some(v) => resume(&hot, game, v.to_str().ok().and_then(|s| s.parse().ok())).await?,
        None => hot
            .stream
            .subscribe(game, position)
            .await
            .map_err(|e| HotError::Unavailable(e.to_string()))?,
    };
    let mut stopping = app.shutdown.subscribe();
    let events = subscription.take_until(async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    });
    let events = events.map(|item| {
        Ok(match item {
            StreamItem::Event { id, event } => Event::default()
                .id(id.to_string())
                .event(event.kind())
                .json_data(with_seq(&event, id))
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

/// The event's JSON with `seq`: the log seq it follows, so a client can tell where it is
/// (the SSE id, `<seq>-<n>`, is what identifies it and drops a duplicate).
fn with_seq(event: &GameEvent, id: StreamId) -> serde_json::Value {
    let mut json = serde_json::to_value(event).unwrap_or_default();
    if let Some(obj) = json.as_object_mut() {
        obj.entry("seq").or_insert(id.ms.into());
    }
    json
}

/// Most committed events replayed from the outbox per query.
const REPLAY_PAGE: u32 = 1000;

/// Resumes after a client's `Last-Event-ID`. Committed events after it come from the outbox
/// (the SQL truth: they survive restarts and lost stream data), then the stream takes over
/// after the last of them. An id that cannot be placed — unparsable, or above anything this
/// game's log holds (another database, or a stream from before a reset) — gets `reset` and the
/// live stream: never silence.
async fn resume(
    hot: &HotPath,
    game: GameId,
    last: Option<StreamId>,
) -> Result<Subscription, ApiError> {
    let unavailable =
        |e: &dyn std::fmt::Display| ApiError::from(HotError::Unavailable(e.to_string()));
    let Some(mut after) = last else {
        return reset_then_live(hot, game).await;
    };
    let mut replayed: Vec<StreamItem> = Vec::new();
    loop {
        let page: CommittedEvents = tokio::time::timeout(
            hot.config.budget,
            hot.store.stream_events_after(game, after, REPLAY_PAGE),
        )
        .await
        .map_err(|_| unavailable(&"database timed out"))?
        .map_err(|e| unavailable(&e))?;
        if replayed.is_empty() && after.ms > page.last_seq {
            return reset_then_live(hot, game).await;
        }
        // A seq gap right after the client's id is fine where the log holds no action (a
        // player joining, a dialogue reply), but an action there means its events were
        // pruned from the outbox (after `stream_retain_secs`).
        if replayed.is_empty() {
            let next = page
                .events
                .first()
                .map_or(page.last_seq + 1, |(id, _)| id.ms);
            if next > after.ms + 1 {
                let pruned = tokio::time::timeout(
                    hot.config.budget,
                    hot.store.actions_between(game, after.ms, next),
                )
                .await
                .map_err(|_| unavailable(&"database timed out"))?
                .map_err(|e| unavailable(&e))?;
                if pruned > 0 {
                    return reset_then_live(hot, game).await;
                }
            }
        }
        let full = page.events.len() as u32 == REPLAY_PAGE;
        for (id, event) in page.events {
            after = id;
            replayed.push(StreamItem::Event { id, event });
        }
        if !full {
            break;
        }
    }
    // The stream's own `reset` after this point is real: it trimmed transient events (job
    // progress, dialogue chunks) the outbox never held.
    let live = hot
        .stream
        .subscribe(game, Position::After(after))
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(futures::stream::iter(replayed).chain(live).boxed())
}

async fn reset_then_live(hot: &HotPath, game: GameId) -> Result<Subscription, ApiError> {
    let live = hot
        .stream
        .subscribe(game, Position::Live)
        .await
        .map_err(|e| ApiError::from(HotError::Unavailable(e.to_string())))?;
    Ok(futures::stream::iter([StreamItem::Reset])
        .chain(live)
        .boxed())
}
