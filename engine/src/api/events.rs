//! `GET /v1/games/{game_id}/events`: the game's event stream as Server-Sent Events. Event ids
//! are stream ids, so `Last-Event-ID` resumes without loss, or gets a `reset` event when events
//! after the id are gone (see [`resume`]). Keep-alive comments every 15 s.

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
        (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait")),
            description = "The player has the most event streams open already (8 by default), or the client address sent too many unknown tokens lately"),
        (status = 503, body = ErrorBody)))]
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
    // Held while the stream is open (the admin's streams are not counted).
    let slot = match &caller {
        Caller::Player(p) => Some(app.streams.take(p.id)?),
        Caller::Admin => None,
    };
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
    let (subscription, last) = match headers.get("last-event-id") {
        Some(v) => {
            let last = v.to_str().ok().and_then(|s| s.parse().ok());
            (resume(&hot, game, last).await?, last)
        }
        None => (
            hot.stream
                .subscribe(game, position)
                .await
                .map_err(|e| HotError::Unavailable(e.to_string()))?,
            None,
        ),
    };
    let subscription = fill_holes(&hot, game, last, subscription);
    let mut stopping = app.shutdown.subscribe();
    let events = subscription.take_until(async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    });
    let events = events.map(move |item| {
        let _held = &slot;
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

/// Committed events the stream never got, filled in from the outbox as they are noticed: a
/// publish that failed while the stream was down (a Redis restart that also lost its data, so
/// the stream starts again after the hole and its readers see nothing amiss). Every committed
/// event's id is `<seq>-<idx>` and a game's next committed event has the next seq, unless the
/// log holds entries without events between (a player joining, a dialogue reply); a transient
/// event's seq is the newest one before it. So when an event skips seqs after the last one the
/// client got, the outbox is asked for what lies between, and that goes first, in order. A
/// committed event the client already got is not sent again. If the outbox cannot be read, the
/// response ends (the client resumes with its last id, and [`resume`] serves it).
fn fill_holes(
    hot: &HotPath,
    game: GameId,
    last: Option<StreamId>,
    events: Subscription,
) -> Subscription {
    let state = Holes {
        events,
        last,
        queue: std::collections::VecDeque::new(),
    };
    let store = hot.store.clone();
    let budget = hot.config.budget;
    futures::stream::unfold(state, move |mut st| {
        let store = store.clone();
        async move {
            loop {
                if let Some(item) = st.queue.pop_front() {
                    return Some((item, st));
                }
                let (id, event) = match st.events.next().await? {
                    StreamItem::Reset => {
                        // The client reloads; what follows starts afresh.
                        st.last = None;
                        return Some((StreamItem::Reset, st));
                    }
                    StreamItem::Event { id, event } => (id, event),
                };
                if let Some(last) = st.last {
                    if !id.is_transient() && id <= last {
                        continue;
                    }
                    let hole = if id.is_transient() {
                        id.ms > last.ms
                    } else {
                        id.ms > last.ms.saturating_add(1)
                    };
                    if hole {
                        match committed_between(&*store, budget, game, last, id).await {
                            Ok(missing) => {
                                if !missing.is_empty() {
                                    metrics::counter!("hotpath_events_holes_filled_total")
                                        .increment(1);
                                    tracing::info!(%game, after = %last, before = %id, events = missing.len(),
                                        "event stream: committed events the stream missed, sent from the outbox");
                                }
                                st.queue.extend(
                                    missing
                                        .into_iter()
                                        .map(|(id, event)| StreamItem::Event { id, event }),
                                );
                            }
                            Err(error) => {
                                tracing::warn!(%game, %error, "event stream: the outbox cannot fill a hole; ending the stream");
                                return None;
                            }
                        }
                    }
                }
                st.last = Some(st.last.map_or(id, |last| last.max(id)));
                st.queue.push_back(StreamItem::Event { id, event });
            }
        }
    })
    .boxed()
}

/// A subscription being checked for holes (see [`fill_holes`]).
struct Holes {
    events: Subscription,
    /// The newest id sent.
    last: Option<StreamId>,
    queue: std::collections::VecDeque<StreamItem>,
}

/// The committed events strictly between `after` and `before`, from the outbox.
async fn committed_between(
    store: &dyn hotpath_cache::store::Store,
    budget: Duration,
    game: GameId,
    after: StreamId,
    before: StreamId,
) -> Result<Vec<(StreamId, GameEvent)>, String> {
    let mut found = Vec::new();
    let mut cursor = after;
    loop {
        let page =
            tokio::time::timeout(budget, store.stream_events_after(game, cursor, REPLAY_PAGE))
                .await
                .map_err(|_| "database timed out".to_owned())?
                .map_err(|e| e.to_string())?;
        let full = page.events.len() == REPLAY_PAGE as usize;
        for (id, event) in page.events {
            if id >= before {
                return Ok(found);
            }
            cursor = id;
            found.push((id, event));
        }
        if !full {
            return Ok(found);
        }
    }
}

/// Most committed events replayed from the outbox per query.
const REPLAY_PAGE: u32 = 1000;

/// Resumes after a client's `Last-Event-ID`: every event after it once, in id order, or a
/// `reset` first. The stream holds the transient events (job progress, content, dialogue) and
/// the recent committed ones; the outbox (the SQL truth) holds every committed one. So:
///
/// - an id the stream cannot place gets `reset` and the live stream: unparsable, or above
///   anything the stream holds (another database, a stream from before a loss);
/// - an id below [`Bounds::lost`] — the stream lost its data (an embedded restart, a Redis
///   flush or TTL) or trimmed a transient event after it, which nothing can replay — gets
///   `reset`, then the committed events after it from the outbox, then what the stream holds;
/// - committed events the stream trimmed after the id come from the outbox, a page at a time
///   as the client reads them, then the stream takes over after them; if the outbox was pruned
///   there too, `reset`;
/// - committed events the stream does not have yet (its relay is behind, or a publish failed)
///   are published to it first, as the relay would, so they come in order.
///
/// [`Bounds::lost`]: hotpath_cache::stream::Bounds::lost
async fn resume(
    hot: &HotPath,
    game: GameId,
    last: Option<StreamId>,
) -> Result<Subscription, ApiError> {
    let unavailable = |e: &dyn std::fmt::Display| {
        tracing::warn!(%game, error = %e, "event resume: a backend failed");
        ApiError::from(HotError::Unavailable(e.to_string()))
    };
    let Some(after) = last else {
        return reset_then_live(hot, game).await;
    };
    let bounds = hot.stream.bounds(game).await.map_err(|e| unavailable(&e))?;
    let Some(top) = bounds.top else {
        // The stream holds nothing for the game (lost with a restart, a flush, a TTL).
        return reset_then_replay(hot, game, after, Upto::All).await;
    };
    if after > top {
        return reset_then_live(hot, game).await;
    }
    if bounds.lost.is_none_or(|lost| after < lost) {
        // Transient events after the id are gone: `reset`, then the committed events up to
        // what the stream holds (from the outbox), then what it holds.
        let upto = match (bounds.trimmed, bounds.lost) {
            (Some(trimmed), _) => Upto::Through(trimmed),
            (None, Some(first)) => Upto::Before(first),
            (None, None) => Upto::All,
        };
        return reset_then_replay(hot, game, after, upto).await;
    }
    let ahead = tokio::time::timeout(
        hot.config.budget,
        hot.store.stream_events_after(game, top, REPLAY_PAGE),
    )
    .await
    .map_err(|_| unavailable(&"database timed out"))?
    .map_err(|e| unavailable(&e))?;
    if !ahead.events.is_empty() {
        hot.stream
            .publish_committed(game, &ahead.events, false)
            .await
            .map_err(|e| unavailable(&e))?;
    }
    let trimmed = match bounds.trimmed {
        Some(trimmed) if trimmed > after => trimmed,
        _ => {
            return hot
                .stream
                .subscribe(game, Position::After(after))
                .await
                .map_err(|e| unavailable(&e));
        }
    };
    // The stream trimmed committed events after the client's id: the outbox has them.
    let first = page_after(hot, game, after).await?;
    // A seq gap right after the client's id is fine where the log holds no action (a player
    // joining, a dialogue reply), but an action there means its events were pruned from the
    // outbox (after `stream_retain_secs`).
    let next = first
        .events
        .first()
        .map_or(u64::MAX, |(id, _)| id.ms)
        .min(trimmed.ms + 1);
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
    let live = hot
        .stream
        .subscribe(game, Position::After(trimmed))
        .await
        .map_err(|e| unavailable(&e))?;
    let (replayed, _) = outbox_pages(hot, game, after, first, Upto::Through(trimmed));
    Ok(replayed
        .chain(live.map(Some))
        .take_while(|item| std::future::ready(item.is_some()))
        .filter_map(std::future::ready)
        .boxed())
}

/// How far an outbox replay goes.
#[derive(Clone, Copy)]
enum Upto {
    Through(StreamId),
    Before(StreamId),
    All,
}

impl Upto {
    fn admits(self, id: StreamId) -> bool {
        match self {
            Upto::Through(last) => id <= last,
            Upto::Before(end) => id < end,
            Upto::All => true,
        }
    }
}

async fn page_after(
    hot: &HotPath,
    game: GameId,
    after: StreamId,
) -> Result<CommittedEvents, ApiError> {
    tokio::time::timeout(
        hot.config.budget,
        hot.store.stream_events_after(game, after, REPLAY_PAGE),
    )
    .await
    .map_err(|_| ApiError::from(HotError::Unavailable("database timed out".into())))?
    .map_err(|e| {
        tracing::warn!(%game, error = %e, "event resume: the outbox cannot be read");
        ApiError::from(HotError::Unavailable(e.to_string()))
    })
}

/// `reset`, then the committed events after `after` (up to `upto`) from the outbox, then
/// everything the stream holds and live — without the committed events already sent.
async fn reset_then_replay(
    hot: &HotPath,
    game: GameId,
    after: StreamId,
    upto: Upto,
) -> Result<Subscription, ApiError> {
    let held = hot
        .stream
        .subscribe(game, Position::Start)
        .await
        .map_err(|e| ApiError::from(HotError::Unavailable(e.to_string())))?;
    let first = page_after(hot, game, after).await?;
    let (replayed, sent) = outbox_pages(hot, game, after, first, upto);
    let held = held.filter(move |item| {
        let again = match item {
            StreamItem::Event { id, .. } => {
                !id.is_transient() && sent.lock().expect("sent lock").is_some_and(|s| *id <= s)
            }
            StreamItem::Reset => false,
        };
        std::future::ready(!again)
    });
    Ok(futures::stream::iter([Some(StreamItem::Reset)])
        .chain(replayed)
        .chain(held.map(Some))
        .take_while(|item| std::future::ready(item.is_some()))
        .filter_map(std::future::ready)
        .boxed())
}

/// The committed events after `after` within `upto`, from the outbox, a page at a time as the
/// client reads them (`first` is the first page); `None` ends the response (a page failed:
/// the client resumes from the last id it got). Also the newest id sent.
fn outbox_pages(
    hot: &HotPath,
    game: GameId,
    after: StreamId,
    first: CommittedEvents,
    upto: Upto,
) -> (
    futures::stream::BoxStream<'static, Option<StreamItem>>,
    std::sync::Arc<std::sync::Mutex<Option<StreamId>>>,
) {
    let sent = std::sync::Arc::new(std::sync::Mutex::new(None));
    let paging = Paging {
        more: first.events.len() == REPLAY_PAGE as usize,
        buf: first.events.into(),
        cursor: after,
    };
    let store = hot.store.clone();
    let budget = hot.config.budget;
    let record = sent.clone();
    let pages = futures::stream::unfold(paging, move |mut st| {
        let store = store.clone();
        let record = record.clone();
        async move {
            loop {
                if let Some((id, event)) = st.buf.pop_front() {
                    if !upto.admits(id) {
                        return None;
                    }
                    st.cursor = id;
                    *record.lock().expect("sent lock") = Some(id);
                    return Some((Some(StreamItem::Event { id, event }), st));
                }
                if !st.more {
                    return None;
                }
                match tokio::time::timeout(
                    budget,
                    store.stream_events_after(game, st.cursor, REPLAY_PAGE),
                )
                .await
                {
                    Ok(Ok(page)) => {
                        st.more = page.events.len() == REPLAY_PAGE as usize;
                        st.buf = page.events.into();
                    }
                    failed => {
                        let error = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => "database timed out".to_owned(),
                        };
                        tracing::warn!(%game, %error, "event resume: an outbox page failed; ending the stream");
                        st.more = false;
                        return Some((None, st));
                    }
                }
            }
        }
    });
    (pages.boxed(), sent)
}

/// The outbox pages of a resume, read as the client reads them.
struct Paging {
    buf: std::collections::VecDeque<(StreamId, GameEvent)>,
    cursor: StreamId,
    more: bool,
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
