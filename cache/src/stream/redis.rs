//! The event stream on Redis Streams: `XADD MAXLEN ~` to publish, `XRANGE` to replay, and per
//! game one reader task per process blocking in `XREAD` on its own connection (a blocking read
//! on the shared multiplexed connection would stall every other command), fanning out to the
//! process's subscribers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncConnectionConfig;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamRangeReply, StreamReadReply};
use tokio::sync::broadcast;

use super::fanout::{self, BROADCAST_CAPACITY, Live, Replay, Replayed};
use super::{
    Bounds, DEFAULT_MAX_LEN, EventStream, LastSeq, Position, Published, StreamError, StreamId,
    Subscription,
};
use crate::cache::keys;
use crate::events::GameEvent;
use crate::ids::GameId;

/// The field holding an entry's JSON (the publish script writes it).
const FIELD: &str = "e";
/// How long one `XREAD` blocks before the reader checks whether anyone still listens.
const BLOCK: Duration = Duration::from_secs(2);

struct Inner {
    client: redis::Client,
    conn: ConnectionManager,
    max_len: usize,
    publish: redis::Script,
    publish_committed: redis::Script,
    /// One broadcast sender per game that has a reader task in this process.
    readers: Mutex<HashMap<GameId, broadcast::Sender<Live>>>,
    /// Where a game's first transient event learns the game's log seq.
    last_seq: std::sync::OnceLock<Arc<dyn LastSeq>>,
}

/// The Redis [`EventStream`]. Cloning shares the connection and the readers.
#[derive(Clone)]
pub struct RedisStream {
    inner: Arc<Inner>,
}

fn stream_key(game: GameId) -> String {
    format!("{}events", keys::game_prefix(game))
}

/// Where the newest trimmed-away id is kept, so a resume can tell "missed events" (reset) from
/// "exactly caught up". Redis's own `max-deleted-entry-id` is only moved by XDEL, not by trimming.
fn trimmed_key(game: GameId) -> String {
    format!("{}events:trimmed", keys::game_prefix(game))
}

/// How long a game's stream outlives its last publish (its events stay in the SQL outbox).
const STREAM_TTL_MS: u64 = 24 * 3600 * 1000;

/// Where the stream's [`super::Bounds::lost`] is kept: set to the first id a new stream holds
/// (anything before was lost: a flush, a TTL) and raised to each transient id trimmed away.
fn lost_key(game: GameId) -> String {
    format!("{}events:lost", keys::game_prefix(game))
}

/// Shared by both publish scripts (KEYS: stream, trimmed, lost; ARGV[1] the bound, ARGV[2] the
/// TTL): `add(id, json)` appends with an exact length bound, records the newest id the trim
/// removes and raises `lost` to each transient id trimmed; the first entry of a new stream sets
/// `lost`. Exact trimming because the bound is what clients are promised (approximate `~`
/// trimming only drops whole radix-tree nodes, so small bounds would never trim). `top()` is
/// the newest entry's id, or the newest trimmed one. `touch()` renews the TTL of all three.
const PRELUDE: &str = r#"
local max = tonumber(ARGV[1])
local TRANSIENT = 1099511627776
local function split(id)
  local ms, seq = string.match(id, "^(%d+)-(%d+)$")
  return tonumber(ms), tonumber(seq)
end
local function below(a, b)
  local ams, aseq = split(a)
  local bms, bseq = split(b)
  return ams < bms or (ams == bms and aseq < bseq)
end
local function add(id, json)
  if redis.call("EXISTS", KEYS[3]) == 0 then
    local first = redis.call("XRANGE", KEYS[1], "-", "+", "COUNT", 1)
    local id0 = id
    if #first > 0 then id0 = first[1][1] end
    redis.call("SET", KEYS[3], id0)
  end
  local len = redis.call("XLEN", KEYS[1])
  if len >= max then
    local gone = redis.call("XRANGE", KEYS[1], "-", "+", "COUNT", len - max + 1)
    redis.call("SET", KEYS[2], gone[#gone][1])
    local lost = redis.call("GET", KEYS[3])
    for i = 1, #gone do
      local _, seq = split(gone[i][1])
      if seq >= TRANSIENT and (not lost or below(lost, gone[i][1])) then
        lost = gone[i][1]
        redis.call("SET", KEYS[3], lost)
      end
    end
  end
  return redis.call("XADD", KEYS[1], "MAXLEN", max, id, "e", json)
end
local function top()
  local last = redis.call("XREVRANGE", KEYS[1], "+", "-", "COUNT", 1)
  if #last > 0 then return last[1][1] end
  return redis.call("GET", KEYS[2])
end
local function touch()
  for i = 1, 3 do redis.call("PEXPIRE", KEYS[i], ARGV[2]) end
end
"#;

/// A transient event (ARGV[3]: the game's log seq, or empty; ARGV[4]: the JSON): `<seq>-<n>`
/// after the newest entry with `n` at least the server's time in microseconds (see
/// [`super::TRANSIENT_BASE`]). On a stream that holds nothing it needs the log seq: without
/// one it answers `?` and the caller asks the store.
const PUBLISH: &str = r#"
local t = top()
local now = redis.call("TIME")
local us = tonumber(now[1]) * 1000000 + tonumber(now[2])
if us < TRANSIENT then us = TRANSIENT end
local id
if t then
  local ms, seq = split(t)
  local n = seq + 1
  if n < us then n = us end
  id = string.format("%.0f-%.0f", ms, n)
elseif ARGV[3] == "" then
  return "?"
else
  id = ARGV[3] .. "-" .. string.format("%.0f", us)
end
local added = add(id, ARGV[4])
touch()
return added
"#;

/// Committed events at their own ids: ARGV[3] is 1 to check for a gap, then (id, json) pairs.
/// An id not above the newest is skipped (already published).
const PUBLISH_COMMITTED: &str = r#"
local t = top()
if ARGV[3] == "1" and t and #ARGV >= 5 then
  local tms = split(t)
  local fms = split(ARGV[4])
  if fms > tms + 1 then return "gap:" .. t end
end
for i = 4, #ARGV, 2 do
  if not t or below(t, ARGV[i]) then
    add(ARGV[i], ARGV[i + 1])
    t = ARGV[i]
  end
end
touch()
return "ok"
"#;

fn parse_id(s: &str) -> Result<StreamId, StreamError> {
    s.parse()
        .map_err(|e: super::BadStreamId| StreamError::Decode(e.to_string()))
}

fn decode(entry: &redis::streams::StreamId) -> Result<Live, StreamError> {
    let id = parse_id(&entry.id)?;
    let json: Vec<u8> = entry
        .get(FIELD)
        .ok_or_else(|| StreamError::Decode(format!("entry {id} has no `{FIELD}` field")))?;
    let event: GameEvent = serde_json::from_slice(&json)
        .map_err(|e| StreamError::Decode(format!("entry {id}: {e}")))?;
    Ok((id, Arc::new(event)))
}

impl RedisStream {
    /// Connects to `url`, keeping the last `max_len` events of each game.
    pub async fn connect(
        url: &str,
        timeout: Duration,
        max_len: usize,
    ) -> Result<RedisStream, StreamError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(timeout))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        Ok(RedisStream {
            inner: Arc::new(Inner {
                client,
                conn,
                max_len: max_len.max(1),
                publish: redis::Script::new(&format!("{PRELUDE}{PUBLISH}")),
                publish_committed: redis::Script::new(&format!("{PRELUDE}{PUBLISH_COMMITTED}")),
                readers: Mutex::new(HashMap::new()),
                last_seq: Default::default(),
            }),
        })
    }

    /// Where a transient event published into an empty game stream learns the game's newest
    /// log seq (the store). Without it such an event's id starts at seq 0.
    pub fn set_last_seq(&self, source: Arc<dyn LastSeq>) {
        let _ = self.inner.last_seq.set(source);
    }

    /// How many games this process currently runs a reader for.
    pub fn reader_count(&self) -> usize {
        self.inner.readers.lock().expect("readers lock").len()
    }

    pub async fn connect_default(url: &str) -> Result<RedisStream, StreamError> {
        RedisStream::connect(url, Duration::from_secs(1), DEFAULT_MAX_LEN).await
    }
}

impl Inner {
    async fn tail(&self, game: GameId) -> Result<Option<StreamId>, StreamError> {
        let mut conn = self.conn.clone();
        let reply: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(stream_key(game))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await?;
        reply.ids.first().map(|e| parse_id(&e.id)).transpose()
    }

    /// The game's broadcast sender, starting its reader if this process has none. Holding the
    /// registry lock while subscribing means a reader cannot retire between lookup and subscribe.
    async fn listen(
        self: &Arc<Self>,
        game: GameId,
    ) -> Result<broadcast::Receiver<Live>, StreamError> {
        if let Some(tx) = self.readers.lock().expect("readers lock").get(&game) {
            return Ok(tx.subscribe());
        }
        // Read from the current tail: later events reach the channel, earlier ones the replay.
        let start = self.tail(game).await?.unwrap_or(StreamId { ms: 0, seq: 0 });
        let mut readers = self.readers.lock().expect("readers lock");
        if let Some(tx) = readers.get(&game) {
            return Ok(tx.subscribe());
        }
        let (tx, rx) = broadcast::channel(BROADCAST_CAPACITY);
        readers.insert(game, tx.clone());
        tokio::spawn(read_game(self.clone(), game, start, tx));
        Ok(rx)
    }
}

/// The one reader of `game` in this process. Retires when its last subscriber is gone.
async fn read_game(
    inner: Arc<Inner>,
    game: GameId,
    mut last: StreamId,
    tx: broadcast::Sender<Live>,
) {
    let key = stream_key(game);
    let mut conn = None;
    loop {
        {
            let mut readers = inner.readers.lock().expect("readers lock");
            if tx.receiver_count() == 0 {
                readers.remove(&game);
                return;
            }
        }
        if conn.is_none() {
            let config = AsyncConnectionConfig::new()
                .set_response_timeout(Some(BLOCK + Duration::from_secs(3)));
            match inner
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await
            {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::warn!(%game, error = %e, "event stream reader cannot connect; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        let reply: Result<Option<StreamReadReply>, _> = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("COUNT")
            .arg(256)
            .arg("STREAMS")
            .arg(&key)
            .arg(last.to_string())
            .query_async(c)
            .await;
        match reply {
            Ok(Some(reply)) => {
                for entry in reply.keys.iter().flat_map(|k| &k.ids) {
                    match decode(entry) {
                        Ok(live) => {
                            last = live.0;
                            let _ = tx.send(live);
                        }
                        Err(e) => {
                            tracing::warn!(%game, error = %e, "skipping an undecodable stream entry");
                            if let Ok(id) = parse_id(&entry.id) {
                                last = id;
                            }
                        }
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(%game, error = %e, "event stream reader failed; reconnecting");
                conn = None;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

#[async_trait]
impl Replay for Inner {
    async fn replay(&self, game: GameId, after: Option<StreamId>) -> Result<Replayed, StreamError> {
        let mut conn = self.conn.clone();
        let start = after.map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        let (range, trimmed, lost): (StreamRangeReply, Option<String>, Option<String>) =
            redis::pipe()
                .cmd("XRANGE")
                .arg(stream_key(game))
                .arg(start)
                .arg("+")
                .cmd("GET")
                .arg(trimmed_key(game))
                .cmd("GET")
                .arg(lost_key(game))
                .query_async(&mut conn)
                .await?;
        let events = range
            .ids
            .iter()
            .map(decode)
            .collect::<Result<Vec<_>, _>>()?;
        let bounds = Bounds {
            top: None,
            trimmed: trimmed.as_deref().map(parse_id).transpose()?,
            lost: lost.as_deref().map(parse_id).transpose()?,
        };
        Ok(Replayed {
            events,
            missed: bounds.missed(after),
        })
    }
}

impl Inner {
    async fn bounds(&self, game: GameId) -> Result<Bounds, StreamError> {
        let mut conn = self.conn.clone();
        let (last, trimmed, lost): (StreamRangeReply, Option<String>, Option<String>) =
            redis::pipe()
                .cmd("XREVRANGE")
                .arg(stream_key(game))
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .cmd("GET")
                .arg(trimmed_key(game))
                .cmd("GET")
                .arg(lost_key(game))
                .query_async(&mut conn)
                .await?;
        let trimmed = trimmed.as_deref().map(parse_id).transpose()?;
        let newest = last.ids.first().map(|e| parse_id(&e.id)).transpose()?;
        Ok(Bounds {
            top: newest.or(trimmed),
            trimmed,
            lost: lost.as_deref().map(parse_id).transpose()?,
        })
    }
}

#[async_trait]
impl EventStream for RedisStream {
    async fn publish(&self, game: GameId, event: &GameEvent) -> Result<StreamId, StreamError> {
        let json = serde_json::to_vec(event).map_err(|e| StreamError::Decode(e.to_string()))?;
        let mut conn = self.inner.conn.clone();
        let mut log_seq = String::new();
        loop {
            let id: String = self
                .inner
                .publish
                .key(stream_key(game))
                .key(trimmed_key(game))
                .key(lost_key(game))
                .arg(self.inner.max_len)
                .arg(STREAM_TTL_MS)
                .arg(&log_seq)
                .arg(&json)
                .invoke_async(&mut conn)
                .await?;
            if id != "?" {
                return parse_id(&id);
            }
            // The stream holds nothing for the game: the id follows its log.
            let seq = match self.inner.last_seq.get() {
                Some(source) => source.last_seq(game).await?,
                None => 0,
            };
            log_seq = seq.to_string();
        }
    }

    async fn publish_committed(
        &self,
        game: GameId,
        entries: &[(StreamId, GameEvent)],
        check_gap: bool,
    ) -> Result<Published, StreamError> {
        if entries.is_empty() {
            return Ok(Published::Done);
        }
        let mut invocation = self.inner.publish_committed.key(stream_key(game));
        invocation
            .key(trimmed_key(game))
            .key(lost_key(game))
            .arg(self.inner.max_len)
            .arg(STREAM_TTL_MS)
            .arg(if check_gap { "1" } else { "0" });
        for (id, event) in entries {
            let json = serde_json::to_vec(event).map_err(|e| StreamError::Decode(e.to_string()))?;
            invocation.arg(id.to_string()).arg(json);
        }
        let mut conn = self.inner.conn.clone();
        let reply: String = invocation.invoke_async(&mut conn).await?;
        match reply.strip_prefix("gap:") {
            Some(top) => Ok(Published::Gap {
                top: parse_id(top)?,
            }),
            None => Ok(Published::Done),
        }
    }

    async fn subscribe(&self, game: GameId, from: Position) -> Result<Subscription, StreamError> {
        let rx = self.inner.listen(game).await?;
        let tail = match from {
            Position::Live => self.inner.tail(game).await?,
            _ => None,
        };
        Ok(fanout::subscribe(self.inner.clone(), game, from, tail, rx))
    }

    async fn bounds(&self, game: GameId) -> Result<Bounds, StreamError> {
        self.inner.bounds(game).await
    }

    async fn ping(&self) -> Result<(), StreamError> {
        let mut conn = self.inner.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }
}
