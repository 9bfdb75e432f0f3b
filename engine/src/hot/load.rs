//! The one loader of a game's state: the cached snapshot, brought up to date with the log.
//! Used by the game's writer when it starts or reloads, and by reads of the game's state.

use hotpath_cache::GameId;
use hotpath_cache::cache::{Cache, CacheExt, keys};
use hotpath_cache::scenario::Scenario;
use hotpath_cache::state::GameState;
use hotpath_cache::store::Store;

use super::HotError;

/// The game's state: its snapshot (read until `cache_deadline`; a failed or slow read starts
/// from the beginning and reports `degraded`) with what the log holds after it (read until
/// `deadline`).
pub(crate) async fn load(
    cache: &dyn Cache,
    store: &dyn Store,
    game: GameId,
    scenario: &Scenario,
    cache_deadline: tokio::time::Instant,
    deadline: tokio::time::Instant,
) -> Result<(GameState, bool), HotError> {
    let (snapshot, degraded) =
        match tokio::time::timeout_at(cache_deadline, cache.get_typed(&keys::snapshot(game))).await
        {
            Ok(Ok(s)) => (s, false),
            Ok(Err(e)) => {
                tracing::warn!(%game, error = %e, "snapshot read failed; rebuilding from the log");
                (None, true)
            }
            Err(_) => (None, true),
        };
    let base = snapshot.unwrap_or_else(|| GameState::new(game, scenario));
    Ok((catch_up(store, scenario, base, deadline).await?, degraded))
}

/// Folds whatever the log holds after `state` into it.
pub(crate) async fn catch_up(
    store: &dyn Store,
    scenario: &Scenario,
    mut state: GameState,
    deadline: tokio::time::Instant,
) -> Result<GameState, HotError> {
    let events = tokio::time::timeout_at(deadline, store.events(state.game_id, state.seq))
        .await
        .map_err(|_| HotError::Unavailable("database timed out loading the game".into()))??;
    for (seq, event) in &events {
        state.apply(scenario, *seq, event);
    }
    Ok(state)
}
