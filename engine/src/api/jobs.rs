//! The slow path's jobs, for operators (admin token): list them, show one, read the dead letters
//! with their reasons, run dead letters again, purge finished ones — what `hotpath jobs` does
//! from a shell, through the same [`JobAdmin`] trait, for operators who only reach the API.
//!
//! `GET /v1/admin/jobs`, `GET /v1/admin/jobs/{job_id}`, `GET /v1/admin/dead-letters`,
//! `POST /v1/admin/jobs/requeue`, `POST /v1/admin/jobs/purge`.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type,
};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use hotpath_cache::jobs::{
    DEAD_JOBS_RETAIN_SECS, DONE_JOBS_RETAIN_SECS, JobAdmin, JobFilter, JobKind, JobRecord,
    QueueError, Requeue,
};

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};

/// Jobs listed when the request names no `limit`.
const DEFAULT_LIMIT: u32 = 50;
/// Most jobs one list returns: a list is read by a person or a script, not paged through.
const MAX_LIMIT: u32 = 1000;
/// Most ids one requeue names (a body of ULIDs well under the API's body limit).
const MAX_REQUEUE_IDS: usize = 1000;
/// Longest retention a purge accepts: ten years, which keeps everything; anything longer is a
/// mistake (and past `i64` seconds, the storage's arithmetic).
const MAX_RETAIN_SECS: u64 = 10 * 365 * 24 * 3600;
/// How long a call to the job storage may take before the route answers 503.
const STORAGE_TIMEOUT: Duration = Duration::from_secs(2);

/// The job storage, or 503 when this process has none.
fn storage(state: &AppState) -> Result<Arc<dyn JobAdmin>, ApiError> {
    state
        .queue
        .clone()
        .ok_or_else(|| ApiError::Unavailable("this process has no job storage".into()))
}

/// Runs one storage call under [`STORAGE_TIMEOUT`]; a failure or a timeout is 503.
async fn bounded<T>(call: impl Future<Output = Result<T, QueueError>>) -> Result<T, ApiError> {
    tokio::time::timeout(STORAGE_TIMEOUT, call)
        .await
        .map_err(|_| ApiError::Unavailable("the job storage timed out".into()))?
        .map_err(|e| ApiError::Unavailable(e.to_string()))
}

/// A request body that must be a JSON object. serde also reads a struct from an array of its
/// fields in order (`[null, null]`), which the document does not allow; this reads an object
/// only, then its fields as `T`.
pub struct Object<T>(pub T);

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let fields = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        T::deserialize(serde_json::Value::Object(fields))
            .map(Object)
            .map_err(serde::de::Error::custom)
    }
}

/// A status of the job storage: `Failed` jobs with a delivery left run again, `Killed` ones were
/// given up.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
pub enum JobStatus {
    Pending,
    Queued,
    Running,
    Done,
    Failed,
    Killed,
}

impl JobStatus {
    fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "Pending",
            JobStatus::Queued => "Queued",
            JobStatus::Running => "Running",
            JobStatus::Done => "Done",
            JobStatus::Failed => "Failed",
            JobStatus::Killed => "Killed",
        }
    }
}

/// A job kind (`JobKind`), for the document: the names come from `JobKind::ALL`, so a new kind
/// is documented without touching this module.
pub struct JobKindName;

impl PartialSchema for JobKindName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("A job kind"))
            .enum_values(Some(JobKind::ALL.iter().map(|k| k.as_str())))
            .into()
    }
}

impl ToSchema for JobKindName {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("JobKind")
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobsQuery {
    /// Only jobs in this status (default: every status).
    pub status: Option<JobStatus>,
    /// Only jobs of this kind (default: every kind).
    #[param(value_type = Option<JobKindName>)]
    pub kind: Option<JobKind>,
    /// At most this many jobs, newest first (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadLettersQuery {
    /// At most this many dead letters, newest first (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

fn limit(asked: Option<u32>) -> Result<u32, ApiError> {
    match asked.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(n),
        n => Err(ApiError::BadRequest(format!(
            "`limit` must be between 1 and {MAX_LIMIT}, not {n}"
        ))),
    }
}

/// One job of the storage.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobBody {
    /// The job id (a ULID).
    pub id: String,
    /// The job kind; absent if the stored message no longer decodes.
    pub kind: Option<String>,
    /// The game the job works for, if any.
    pub game_id: Option<String>,
    /// `Pending`, `Queued`, `Running`, `Done`, `Failed` (a delivery failed; it runs again) or
    /// `Killed` (given up).
    pub status: String,
    /// Whether it is a dead letter: given up, or failed with no delivery left.
    pub dead: bool,
    /// Deliveries so far, and how many it may have.
    pub attempts: u32,
    pub max_attempts: u32,
    /// Why it last failed (dead letters and jobs waiting for a retry).
    pub reason: Option<String>,
    /// The worker that holds (or last held) it.
    pub worker: Option<String>,
    /// The job message, as the workers read it.
    #[schema(value_type = Option<Object>)]
    pub message: Option<serde_json::Value>,
}

impl From<JobRecord> for JobBody {
    fn from(r: JobRecord) -> JobBody {
        let reason = r.failure();
        let dead = r.is_dead();
        JobBody {
            kind: r.job.as_ref().map(|j| j.kind().as_str().to_owned()),
            game_id: r
                .job
                .as_ref()
                .and_then(|j| j.game_id())
                .map(|g| g.to_string()),
            message: r.job.as_ref().and_then(|j| serde_json::to_value(j).ok()),
            id: r.id,
            status: r.status,
            dead,
            attempts: r.attempts,
            max_attempts: r.max_attempts,
            reason,
            worker: r.lock_by,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobBody>,
}

fn list_of(records: Vec<JobRecord>) -> Json<JobList> {
    Json(JobList {
        jobs: records.into_iter().map(JobBody::from).collect(),
    })
}

/// The slow path's jobs, newest first, by status and kind (admin token).
#[utoipa::path(get, path = "/v1/admin/jobs", tag = "ops", params(JobsQuery),
    security(("bearer" = [])),
    responses((status = 200, body = JobList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list_jobs(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<JobsQuery>,
) -> Result<Json<JobList>, ApiError> {
    caller.require_admin()?;
    let limit = limit(q.limit)?;
    let filter = JobFilter {
        status: q.status.map(|s| s.as_str().to_owned()),
        kind: q.kind,
    };
    let jobs = storage(&state)?;
    Ok(list_of(bounded(jobs.list(&filter, limit)).await?))
}

/// One job: its message, status, deliveries and last failure (admin token).
#[utoipa::path(get, path = "/v1/admin/jobs/{job_id}", tag = "ops",
    params(("job_id" = String, Path, description = "The job id (a ULID)")),
    security(("bearer" = [])),
    responses((status = 200, body = JobBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn get_job(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(job_id): ApiPath<String>,
) -> Result<Json<JobBody>, ApiError> {
    caller.require_admin()?;
    let jobs = storage(&state)?;
    match bounded(jobs.job(&job_id)).await? {
        Some(r) => Ok(Json(r.into())),
        None => Err(ApiError::NotFound(format!("no job `{job_id}`"))),
    }
}

/// Dead letters, newest first, each with the reason it was given up (admin token).
#[utoipa::path(get, path = "/v1/admin/dead-letters", tag = "ops", params(DeadLettersQuery),
    security(("bearer" = [])),
    responses((status = 200, body = JobList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn dead_letters(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<DeadLettersQuery>,
) -> Result<Json<JobList>, ApiError> {
    caller.require_admin()?;
    let limit = limit(q.limit)?;
    let jobs = storage(&state)?;
    Ok(list_of(bounded(jobs.dead_letters(limit)).await?))
}

/// Which dead letters to run again: `{"ids": [...]}` or `{"all": true}`, nothing else. The
/// document says so with a `oneOf` (see [`PartialSchema`] below); the handler checks the same.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequeueRequest {
    #[serde(default, deserialize_with = "present")]
    ids: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    all: Option<bool>,
}

/// A field that may be absent but not `null`, as the document says (`"ids": null` is no list).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

impl RequeueRequest {
    fn which(self) -> Result<Requeue, ApiError> {
        match (self.ids, self.all) {
            (Some(ids), None) if (1..=MAX_REQUEUE_IDS).contains(&ids.len()) => {
                Ok(Requeue::Ids(ids))
            }
            (None, Some(true)) => Ok(Requeue::All),
            _ => Err(ApiError::BadRequest(format!(
                "give `ids` (1 to {MAX_REQUEUE_IDS} job ids) or `\"all\": true` for every dead \
                 letter, not both"
            ))),
        }
    }
}

impl PartialSchema for RequeueRequest {
    fn schema() -> RefOr<Schema> {
        let closed = || Some(AdditionalProperties::FreeForm(false));
        let ids = ObjectBuilder::new()
            .property(
                "ids",
                ArrayBuilder::new()
                    .items(ObjectBuilder::new().schema_type(Type::String))
                    .min_items(Some(1))
                    .max_items(Some(MAX_REQUEUE_IDS))
                    .description(Some(
                        "These dead letters (ids that are not dead letters are left alone)",
                    )),
            )
            .required("ids")
            .additional_properties(closed());
        let all = ObjectBuilder::new()
            .property(
                "all",
                ObjectBuilder::new()
                    .schema_type(Type::Boolean)
                    .enum_values(Some([true]))
                    .description(Some("Every dead letter")),
            )
            .required("all")
            .additional_properties(closed());
        OneOfBuilder::new()
            .item(ids)
            .item(all)
            .description(Some(
                "Which dead letters to run again: `ids`, or `all: true`",
            ))
            .into()
    }
}

impl ToSchema for RequeueRequest {}

#[derive(Debug, Serialize, ToSchema)]
pub struct Requeued {
    /// Dead letters made pending again (their deliveries reset).
    pub requeued: u64,
}

/// Runs dead letters again: they become pending with their deliveries reset, and a worker
/// picks them up (admin token).
#[utoipa::path(post, path = "/v1/admin/jobs/requeue", tag = "ops", request_body = RequeueRequest,
    security(("bearer" = [])),
    responses((status = 200, body = Requeued), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn requeue(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(Object(body)): ApiJson<Object<RequeueRequest>>,
) -> Result<Json<Requeued>, ApiError> {
    caller.require_admin()?;
    let which = body.which()?;
    let jobs = storage(&state)?;
    let requeued = bounded(jobs.requeue(&which)).await?;
    tracing::info!(requeued, "dead letters queued again");
    Ok(Json(Requeued { requeued }))
}

/// What to delete; each retention defaults to the periodic cleanup's.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    /// Delete finished jobs done more than this many seconds ago (default 3600).
    #[schema(minimum = 0, maximum = 315360000)]
    #[serde(default, deserialize_with = "whole_seconds")]
    pub done_secs: Option<u64>,
    /// Delete dead letters given up more than this many seconds ago (default 604800, a week).
    #[schema(minimum = 0, maximum = 315360000)]
    #[serde(default, deserialize_with = "whole_seconds")]
    pub dead_secs: Option<u64>,
}

/// Seconds as JSON Schema counts integers: `3600` or `3600.0` (a number whose fraction is
/// zero is an integer there, and clients that only have floats send it so), never `1.5`.
fn whole_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(n) = n.as_u64() {
        return Ok(Some(n));
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && (0.0..=MAX_RETAIN_SECS as f64).contains(&f) => {
            Ok(Some(f as u64))
        }
        _ => Err(serde::de::Error::custom(format!(
            "expected whole seconds from 0 to {MAX_RETAIN_SECS}, not {n}"
        ))),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Purged {
    /// Jobs deleted.
    pub deleted: u64,
}

/// Deletes finished jobs and old dead letters, as the periodic cleanup does (admin token).
#[utoipa::path(post, path = "/v1/admin/jobs/purge", tag = "ops", request_body = PurgeRequest,
    security(("bearer" = [])),
    responses((status = 200, body = Purged), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn purge(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(Object(body)): ApiJson<Object<PurgeRequest>>,
) -> Result<Json<Purged>, ApiError> {
    caller.require_admin()?;
    let retain = |asked: Option<u64>, default: u64, field: &str| match asked.unwrap_or(default) {
        n @ 0..=MAX_RETAIN_SECS => Ok(n),
        n => Err(ApiError::BadRequest(format!(
            "`{field}` must be at most {MAX_RETAIN_SECS}, not {n}"
        ))),
    };
    let done = retain(body.done_secs, DONE_JOBS_RETAIN_SECS, "done_secs")?;
    let dead = retain(body.dead_secs, DEAD_JOBS_RETAIN_SECS, "dead_secs")?;
    let jobs = storage(&state)?;
    let deleted = bounded(jobs.purge(done, dead)).await?;
    tracing::info!(deleted, done_secs = done, dead_secs = dead, "jobs purged");
    Ok(Json(Purged { deleted }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn which(body: serde_json::Value) -> Result<Requeue, String> {
        let Object(body): Object<RequeueRequest> =
            serde_json::from_value(body).map_err(|e| e.to_string())?;
        body.which().map_err(|e| e.to_string())
    }

    #[test]
    fn requeue_takes_ids_or_all_and_nothing_else() {
        assert_eq!(
            which(serde_json::json!({"ids": ["a", "b"]})),
            Ok(Requeue::Ids(vec!["a".into(), "b".into()]))
        );
        assert_eq!(which(serde_json::json!({"all": true})), Ok(Requeue::All));
        for refused in [
            serde_json::json!({}),
            serde_json::json!({"ids": []}),
            serde_json::json!({"all": false}),
            serde_json::json!({"ids": ["a"], "all": true}),
            serde_json::json!({"ids": ["a"], "also": 1}),
            serde_json::json!({"ids": null, "all": true}),
            serde_json::json!([["a"], null]),
        ] {
            assert!(which(refused.clone()).is_err(), "{refused}");
        }
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(limit(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(limit(Some(MAX_LIMIT)).unwrap(), MAX_LIMIT);
        assert!(limit(Some(0)).is_err());
        assert!(limit(Some(MAX_LIMIT + 1)).is_err());
    }

    #[test]
    fn bodies_are_objects() {
        let read =
            |v| serde_json::from_value::<Object<PurgeRequest>>(v).map(|Object(p)| p.done_secs);
        assert_eq!(read(serde_json::json!({"done_secs": 5})).unwrap(), Some(5));
        assert!(read(serde_json::json!([null, null])).is_err());
        assert!(read(serde_json::json!({"done": 5})).is_err());
        assert_eq!(
            read(serde_json::json!({"done_secs": 60.0})).unwrap(),
            Some(60)
        );
        assert_eq!(read(serde_json::json!({"done_secs": null})).unwrap(), None);
        assert!(read(serde_json::json!({"done_secs": 1.5})).is_err());
        assert!(read(serde_json::json!({"done_secs": -1})).is_err());
    }
}
