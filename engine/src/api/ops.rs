//! Operations: liveness, readiness (every backend answers), Prometheus metrics.

use std::sync::OnceLock;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;

/// Latency buckets, in seconds: the hot path lives in the first few, the slow path (model calls,
/// queue waits) in the last.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The process's Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .expect("valid buckets");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding application's): then
            // ours still renders, it just sees nothing recorded through the global macros.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        })
        .clone()
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    pub status: String,
    /// Per backend (cache, store, stream, queue): `ok`, `unavailable` or `timed out` (the
    /// error itself is in the log).
    pub checks: std::collections::BTreeMap<String, String>,
}

/// Every backend answers (cache, SQL store, event stream, job storage).
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let hot = &state.hot;
    const T: Duration = Duration::from_secs(1);
    // The answer says which backend is out; why (its error text, which names hosts, users
    // and files) goes to the log only: anyone may call this.
    async fn check<E: std::fmt::Display>(
        backend: &'static str,
        f: impl std::future::Future<Output = Result<(), E>>,
    ) -> String {
        match tokio::time::timeout(T, f).await {
            Ok(Ok(())) => "ok".into(),
            Ok(Err(e)) => {
                tracing::warn!(backend, error = %e, "readiness check failed");
                "unavailable".into()
            }
            Err(_) => {
                tracing::warn!(backend, "readiness check timed out");
                "timed out".into()
            }
        }
    }
    let (cache, store, stream, queue) = tokio::join!(
        check("cache", hot.cache.ping()),
        check("store", hot.store.ping()),
        check("stream", hot.stream.ping()),
        async {
            match &state.queue {
                Some(q) => check("queue", q.ping()).await,
                None => "ok".to_owned(),
            }
        },
    );
    let checks: std::collections::BTreeMap<_, _> = [
        ("cache", cache),
        ("store", store),
        ("stream", stream),
        ("queue", queue),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let ready = checks.values().all(|v| v == "ok");
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        status: if ready { "ready" } else { "unavailable" }.into(),
        checks,
    };
    (status, Json(body))
}

/// Prometheus metrics: `hotpath_action_seconds` (histogram), `hotpath_answer_pieces_total`
/// {piece, source}, `hotpath_degraded_answers_total`, `hotpath_commit_seconds` and
/// `hotpath_commit_batch_size` (histograms), `hotpath_writers`, `hotpath_relay_published_total`,
/// `hotpath_relay_failures_total`, `hotpath_queue_depth`; the slow path, from the deployment's
/// storage (the same in every process): `hotpath_jobs` {state, kind}, `hotpath_job_guards`,
/// `hotpath_llm_calls_last_hour` / `hotpath_llm_written_last_hour` {kind},
/// `hotpath_llm_tokens_last_hour` {kind, direction}, `hotpath_llm_budget_tokens` {scope =
/// global, state = used | reserved} (today's spend in the global scope, 0 before any); and
/// where workers run in this process,
/// `hotpath_llm_calls_total` {kind, written}, `hotpath_llm_tokens_total` {kind},
/// `hotpath_content_lag_seconds` {kind}, `hotpath_job_pickup_seconds` {kind},
/// `hotpath_shed_jobs_total` {kind}. The figures from the storage are read in the background at
/// most every `--metrics-refresh-secs` (5 s), not by the scrape: a scrape shows the last read.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> (StatusCode, String) {
    if let Some(first) = state.figures.refresh_if_due(&state) {
        // The process' first scrape waits for the first read, so that the page is whole.
        let _ = first.await;
    }
    match &state.metrics {
        Some(handle) => (StatusCode::OK, handle.render()),
        None => (StatusCode::OK, String::new()),
    }
}

/// The metrics read from the deployment's storage (job counts, guards, model calls, spend):
/// refreshed in the background at most once per interval, never by the scrape itself, so a
/// flood of scrapes (the route needs no token) costs the store nothing more.
#[derive(Debug)]
pub struct StoreFigures {
    every: Duration,
    state: std::sync::Mutex<Refresh>,
}

#[derive(Debug, Default)]
struct Refresh {
    last: Option<std::time::Instant>,
    running: bool,
}

impl StoreFigures {
    pub fn new(every: Duration) -> StoreFigures {
        StoreFigures {
            every,
            state: Default::default(),
        }
    }

    /// Starts a refresh unless one runs or the last began within the interval; the handle of
    /// the first one.
    fn refresh_if_due(&self, app: &AppState) -> Option<tokio::task::JoinHandle<()>> {
        let first = {
            let mut st = self.state.lock().expect("metrics refresh lock");
            if st.running || st.last.is_some_and(|l| l.elapsed() < self.every) {
                return None;
            }
            st.running = true;
            st.last.replace(std::time::Instant::now()).is_none()
        };
        let app = app.clone();
        let refresh = tokio::spawn(async move {
            read_store_figures(&app).await;
            app.figures
                .state
                .lock()
                .expect("metrics refresh lock")
                .running = false;
        });
        first.then_some(refresh)
    }
}

async fn read_store_figures(state: &AppState) {
    const T: Duration = Duration::from_millis(500);
    if let Some(queue) = &state.queue {
        if let Ok(Ok(depth)) = tokio::time::timeout(T, queue.pending()).await {
            metrics::gauge!("hotpath_queue_depth").set(depth as f64);
        }
        if let Ok(Ok(counts)) = tokio::time::timeout(T, queue.counts()).await {
            // Every (state, kind) is set, so a count that fell to nothing reads 0, not its
            // last value.
            for st in ["pending", "running", "retrying", "done", "dead"] {
                for kind in hotpath_cache::jobs::JobKind::ALL {
                    let n = counts
                        .get(st)
                        .and_then(|k| k.get(kind.as_str()))
                        .copied()
                        .unwrap_or(0);
                    metrics::gauge!("hotpath_jobs", "state" => st, "kind" => kind.as_str())
                        .set(n as f64);
                }
            }
        }
    }
    let store = &state.hot.store;
    if let Ok(Ok(n)) = tokio::time::timeout(T, store.job_guards()).await {
        metrics::gauge!("hotpath_job_guards").set(n as f64);
    }
    let hour_ago = hotpath_cache::time::now_ms() - 3_600_000;
    if let Ok(Ok(usage)) = tokio::time::timeout(T, store.llm_usage(hour_ago)).await {
        for kind in hotpath_cache::jobs::JobKind::ALL {
            let u = usage.get(kind.as_str()).cloned().unwrap_or_default();
            let k = kind.as_str();
            metrics::gauge!("hotpath_llm_calls_last_hour", "kind" => k).set(u.calls as f64);
            metrics::gauge!("hotpath_llm_written_last_hour", "kind" => k).set(u.written as f64);
            metrics::gauge!("hotpath_llm_tokens_last_hour", "kind" => k, "direction" => "prompt")
                .set(u.prompt_tokens as f64);
            metrics::gauge!("hotpath_llm_tokens_last_hour", "kind" => k, "direction" => "completion")
                .set(u.completion_tokens as f64);
        }
    }
    let today = hotpath_cache::spend::day_of(hotpath_cache::time::now_ms());
    // The global scope counts every call, so when a global budget is set it is the largest.
    if let Ok(Ok(spent)) = tokio::time::timeout(T, store.tokens_spent(today, 1)).await {
        // Nothing charged yet today reads as zero, so the series exists from the start.
        let (used, reserved) = spent
            .iter()
            .find(|s| s.scope == "global")
            .map_or((0, 0), |g| (g.used, g.reserved));
        metrics::gauge!("hotpath_llm_budget_tokens", "scope" => "global", "state" => "used")
            .set(used as f64);
        metrics::gauge!("hotpath_llm_budget_tokens", "scope" => "global", "state" => "reserved")
            .set(reserved as f64);
    }
}
