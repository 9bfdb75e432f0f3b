//! `GET /v1/admin/slow-path`: what the slow path is doing and what it cost, read from the
//! deployment's own storage (the job tables, the coalescing guards and the `llm_calls` ledger),
//! so every process of a deployment reports the same figures.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiQuery, ErrorBody};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SlowPathQuery {
    /// Count model calls made at or after this time (milliseconds since the epoch; default 0).
    pub since_ms: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct LlmUsageBody {
    pub calls: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Calls whose answer was written.
    pub written: u64,
    /// Calls whose token counts are estimates (the provider reported none).
    pub estimated: u64,
}

#[derive(Serialize, ToSchema)]
pub struct LlmBody {
    pub calls: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub by_kind: BTreeMap<String, LlmUsageBody>,
}

#[derive(Serialize, ToSchema)]
pub struct JobsBody {
    /// Jobs per state: `pending`, `running`, `retrying`, `done`, `dead`.
    pub by_state: BTreeMap<String, u64>,
    /// Jobs per state, then per kind.
    pub by_kind: BTreeMap<String, BTreeMap<String, u64>>,
    /// Coalescing guards held: work queued or running that actions will not ask for again.
    pub guards: u64,
}

#[derive(Serialize, ToSchema)]
pub struct SlowPathBody {
    pub jobs: JobsBody,
    pub llm: LlmBody,
}

/// The slow path's jobs and model calls (admin token).
#[utoipa::path(get, path = "/v1/admin/slow-path", tag = "ops", params(SlowPathQuery),
    security(("bearer" = [])),
    responses((status = 200, body = SlowPathBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn slow_path(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<SlowPathQuery>,
) -> Result<Json<SlowPathBody>, ApiError> {
    caller.require_admin()?;
    const T: Duration = Duration::from_secs(2);
    let unavailable = |what: &str| ApiError::Unavailable(format!("{what} timed out"));
    let store = &state.hot.store;
    let by_kind = match &state.queue {
        Some(queue) => tokio::time::timeout(T, queue.counts())
            .await
            .map_err(|_| unavailable("the job storage"))?
            .map_err(|e| ApiError::Unavailable(e.to_string()))?,
        None => BTreeMap::new(),
    };
    let guards = tokio::time::timeout(T, store.job_guards())
        .await
        .map_err(|_| unavailable("the database"))?
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let usage = tokio::time::timeout(T, store.llm_usage(q.since_ms.unwrap_or(0)))
        .await
        .map_err(|_| unavailable("the database"))?
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let by_state = by_kind
        .iter()
        .map(|(state, kinds)| (state.clone(), kinds.values().sum()))
        .collect();
    let llm = LlmBody {
        calls: usage.values().map(|u| u.calls).sum(),
        prompt_tokens: usage.values().map(|u| u.prompt_tokens).sum(),
        completion_tokens: usage.values().map(|u| u.completion_tokens).sum(),
        by_kind: usage
            .into_iter()
            .map(|(k, u)| {
                (
                    k,
                    LlmUsageBody {
                        calls: u.calls,
                        prompt_tokens: u.prompt_tokens,
                        completion_tokens: u.completion_tokens,
                        written: u.written,
                        estimated: u.estimated,
                    },
                )
            })
            .collect(),
    };
    Ok(Json(SlowPathBody {
        jobs: JobsBody {
            by_state,
            by_kind,
            guards,
        },
        llm,
    }))
}
