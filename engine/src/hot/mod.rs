//! The hot path: everything between a player's action and its answer, in one folder. It reads
//! the cache (one round trip) and the rules, and hands the action to its game's writer, whose
//! committer records it — event, claim, answer, outbox and jobs — in one transaction (see
//! [`crate::write`]). It never waits for an LLM and cannot reach one — `hotpath-lint` checks
//! that on every pull request, and the runtime guard ([`hotpath_cache::guard`]) checks it in
//! production.
//!
//! - [`resolve`]: the steps of an action (ARCHITECTURE.md, "One player action").
//! - [`rules`]: classification and effects (pure).
//! - [`fallback`]: rule-based stakeholder moves, narration, social bundles (pure).
//! - [`dispatch`]: which jobs to enqueue after an action (pure plan) and their guards.
//! - [`reads`]: the keys one action reads from the cache.
//! - [`answer`]: the answer's shape.

pub mod answer;
mod apply;
pub mod dispatch;
pub mod fallback;
mod load;
pub mod reads;
mod reservoir;
pub mod resolve;
pub mod rules;
pub mod writer;
pub mod writers;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hotpath_cache::GameId;
use hotpath_cache::cache::Cache;
use hotpath_cache::scenario::Scenario;
use hotpath_cache::state::GameState;
use hotpath_cache::store::{PlayerRecord, Store, StoreError};
use hotpath_cache::stream::EventStream;

use self::writers::Writers;

/// Knobs of the hot path and its write path.
#[derive(Debug, Clone)]
pub struct HotConfig {
    /// The answer's budget: every read and write of an action has its deadline inside it.
    pub budget: Duration,
    /// Refill a scene's reactions when an action leaves this many or fewer of its kind.
    pub ready_low: u32,
    /// Refresh the social bundle when it is this many events behind.
    pub social_refresh_after: u64,
    /// Serve a cached social bundle at most this many events behind (its age bound).
    pub social_max_lag: u64,
    /// Start narrating the next phase this many intensity points before it is reached.
    pub narration_lookahead: u32,
    /// Past this many jobs queued or running in the deployment, dispatch sheds all but the
    /// acting scene's reactions and dialogue; past twice as many, all but dialogue.
    pub backlog_bound: u64,
    /// At most this many jobs of one game queued or running (dialogue excepted): one busy game
    /// cannot fill the queue.
    pub jobs_per_game: usize,
    /// How long a cached game snapshot lives.
    pub snapshot_ttl: Duration,
    /// Actions one game's writer holds before answering 429.
    pub writer_queue: usize,
    /// Most items in one commit.
    pub max_batch: usize,
    /// A writer with nothing to do for this long retires (its state is dropped).
    pub writer_idle: Duration,
    /// The committed state is written to the cache every this many commits of a game (and when
    /// its writer retires), so another process or a restart loads it without reading the log.
    pub snapshot_every: u32,
    /// On start, republish the recent outbox (for a stream that outlives the process: Redis).
    pub relay_recovery: bool,
}

impl HotConfig {
    /// The share of the budget the cache read may take; the rest is the commit's.
    pub fn cache_budget(&self) -> Duration {
        self.budget / 4
    }
}

impl Default for HotConfig {
    fn default() -> Self {
        HotConfig {
            budget: Duration::from_millis(200),
            ready_low: 1,
            social_refresh_after: 8,
            social_max_lag: 40,
            narration_lookahead: 15,
            backlog_bound: 256,
            jobs_per_game: 12,
            snapshot_ttl: Duration::from_secs(3600),
            writer_queue: 512,
            max_batch: 256,
            writer_idle: Duration::from_secs(10),
            snapshot_every: 64,
            relay_recovery: false,
        }
    }
}

/// What the hot path holds: backend traits, never a backend type and never an LLM client.
#[derive(Clone)]
pub struct HotPath {
    pub cache: Arc<dyn Cache>,
    pub store: Arc<dyn Store>,
    pub stream: Arc<dyn EventStream>,
    /// The per-game writers, the committer and the relay.
    pub writes: Writers,
    pub config: HotConfig,
    scenarios: Arc<BTreeMap<String, Arc<Scenario>>>,
    /// A game's scenario never changes once the game exists.
    games: moka::future::Cache<GameId, Arc<Scenario>>,
    /// Players never change either; this spares a SQL read per authenticated request.
    players: moka::future::Cache<String, PlayerRecord>,
}

/// Why an action (or a read) cannot be answered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HotError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unprocessable(String),
    /// The store cannot record the action: retry (the idempotency key makes it safe).
    #[error("{0}")]
    Unavailable(String),
    /// The game's writer has a full queue: retry after this long.
    #[error("too many actions queued for this game; retry")]
    Busy(Duration),
    /// The action's commit began inside its budget and had not finished one budget later: it
    /// will be in the log once or not at all, and `GET …/actions/{action_id}` tells which.
    #[error("the action is still being recorded; its outcome is not known yet")]
    OutcomeUnknown(hotpath_cache::ids::ActionId),
}

impl From<StoreError> for HotError {
    fn from(e: StoreError) -> Self {
        HotError::Unavailable(e.to_string())
    }
}

impl HotPath {
    pub fn new(
        cache: Arc<dyn Cache>,
        store: Arc<dyn Store>,
        stream: Arc<dyn EventStream>,
        scenarios: BTreeMap<String, Scenario>,
        config: HotConfig,
    ) -> HotPath {
        let writes = Writers::start(store.clone(), cache.clone(), stream.clone(), config.clone());
        HotPath {
            cache,
            store,
            stream,
            writes,
            config,
            scenarios: Arc::new(
                scenarios
                    .into_iter()
                    .map(|(k, v)| (k, Arc::new(v)))
                    .collect(),
            ),
            games: moka::future::Cache::new(10_000),
            players: moka::future::Cache::new(100_000),
        }
    }

    /// Names of the scenarios new games can use.
    pub fn scenario_names(&self) -> Vec<String> {
        self.scenarios.keys().cloned().collect()
    }

    pub fn scenario_named(&self, name: &str) -> Option<Arc<Scenario>> {
        self.scenarios.get(name).cloned()
    }

    /// Remembers the scenario of a game this process just created.
    pub async fn remember_game(&self, game: GameId, scenario: Arc<Scenario>) {
        self.games.insert(game, scenario).await;
    }

    /// The scenario of an existing game (`NotFound` if there is no such game).
    pub async fn scenario_of(&self, game: GameId) -> Result<Arc<Scenario>, HotError> {
        if let Some(s) = self.games.get(&game).await {
            return Ok(s);
        }
        let record = tokio::time::timeout(self.config.budget, self.store.game(game))
            .await
            .map_err(|_| HotError::Unavailable("database timed out".into()))??
            .ok_or_else(|| HotError::NotFound(format!("no game {game}")))?;
        // Games of a scenario this engine knows share its one parsed copy.
        let scenario = match self.scenarios.get(&record.scenario.name) {
            Some(known) if **known == record.scenario => known.clone(),
            _ => Arc::new(record.scenario),
        };
        self.games.insert(game, scenario.clone()).await;
        Ok(scenario)
    }

    /// The player of a token hash, if this process has looked it up lately.
    pub async fn cached_player(&self, hash: &str) -> Option<PlayerRecord> {
        self.players.get(hash).await
    }

    /// Remembers a player this process just added: its first request is then answered from
    /// the cache, not counted as a lookup of an unknown token against its address.
    pub async fn remember_player(&self, hash: String, player: PlayerRecord) {
        self.players.insert(hash, player).await;
    }

    pub async fn player_by_token_hash(&self, hash: &str) -> Result<Option<PlayerRecord>, HotError> {
        if let Some(p) = self.players.get(hash).await {
            return Ok(Some(p));
        }
        let found = tokio::time::timeout(self.config.budget, self.store.player_by_token_hash(hash))
            .await
            .map_err(|_| HotError::Unavailable("database timed out".into()))??;
        if let Some(p) = &found {
            self.players.insert(hash.to_owned(), p.clone()).await;
        }
        Ok(found)
    }

    /// The current state of a game: the cached snapshot brought up to date with the log, or a
    /// rebuild from the log. Returns whether the cache could not be used.
    pub async fn current_state(
        &self,
        game: GameId,
        scenario: &Scenario,
    ) -> Result<(GameState, bool), HotError> {
        let now = tokio::time::Instant::now();
        load::load(
            &*self.cache,
            &*self.store,
            game,
            scenario,
            now + self.config.budget,
            now + self.config.budget * 2,
        )
        .await
    }
}
