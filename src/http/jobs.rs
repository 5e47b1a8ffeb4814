//! Batch jobs: `/v1/jobs` (submit), `/v1/jobs/{job_id}` (status, cancel/delete), `/v1/jobs/{job_id}/results`.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::Arc;

use actix_multipart::Multipart;
use actix_web::http::StatusCode;
use actix_web::web::{Data, Path, Payload, Query};
use actix_web::{HttpRequest, HttpResponse, delete, get, post};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ErrorBody};
use super::images::ModelQuery;
use super::{AppState, body};
use crate::amg::AmgParams;
use crate::batch::{BatchTask, CocoResults};
use crate::jobs::{JobStatus, JobSummary, Jobs, JobsError, Removal, StagedUpload};
use crate::segment::{OutputFormat, PromptSpec};
use crate::tenant::Tenant;

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobMode {
    Prompts,
    Everything,
}

/// The optional `spec` field of a job submission.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Default: `prompts` when prompts are given, else `everything`.
    pub mode: Option<JobMode>,
    /// The prompts of each file, by its file name in the upload; one mask per prompt.
    #[serde(default)]
    pub prompts: HashMap<String, Vec<PromptSpec>>,
    /// Generator parameters for `everything` (SamAutomaticMaskGenerator's, all optional, crop layers included).
    #[serde(default)]
    pub everything: AmgParams,
    /// Must be `["rle"]` (the results are COCO RLE).
    pub output: Option<Vec<OutputFormat>>,
}

/// The form of `POST /v1/jobs`, for the spec (the handler streams the files to disk as they come).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct JobForm {
    /// The image files, each with its file name (unique within the job).
    #[schema(value_type = Vec<String>, format = Binary, min_items = 1)]
    image: Vec<Vec<u8>>,
    /// Mode, prompts and parameters, as JSON text (default: everything with the generator's defaults).
    #[schema(required = false)]
    spec: JobSpec,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct JobAccepted {
    pub job_id: String,
    pub status: JobStatus,
    pub total: usize,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct JobError {
    pub file: String,
    pub message: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct JobStatusResponse {
    pub job_id: String,
    pub model: String,
    pub status: JobStatus,
    pub total: usize,
    /// Images finished, successfully or not.
    pub done: usize,
    /// Images that failed (see `errors`).
    pub failed: usize,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub updated_at: String,
    pub errors: Vec<JobError>,
}

impl From<JobSummary> for JobStatusResponse {
    fn from(summary: JobSummary) -> Self {
        Self {
            job_id: summary.id,
            model: summary.model,
            status: summary.status,
            total: summary.total,
            done: summary.done,
            failed: summary.failed,
            created_at: humantime::format_rfc3339_seconds(summary.created_at).to_string(),
            updated_at: humantime::format_rfc3339_seconds(summary.updated_at).to_string(),
            errors: summary.errors.into_iter().map(|(file, message)| JobError { file, message }).collect(),
        }
    }
}

/// The 503 of job routes when replicas share jobs (`--redis`).
const UNAVAILABLE: &str = "the shared job store (Redis) is unreachable";

fn store_failed(error: JobsError) -> ApiError {
    match error {
        JobsError::Unavailable(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "job_store_unavailable", error.to_string())
        }
        JobsError::NoRoom(_) => no_room(error.to_string()),
        JobsError::TooManyJobs(_) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_jobs", error.to_string()),
        JobsError::OverStorageQuota(_) => {
            ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "storage_quota_exceeded", error.to_string())
        }
        _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "job_store_failed", error.to_string()),
    }
}

fn no_room(message: String) -> ApiError {
    ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage", message)
}

fn job_not_found(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "job_not_found", format!("no job {id:?} (never created, or deleted)"))
}

/// Runs blocking job-store work off the async executor.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

/// Runs `query` on the job store off the executor; `None` from it is 404 `job_not_found`.
async fn query_job<T: Send + 'static>(
    state: &AppState,
    tenant: Tenant,
    id: String,
    query: impl FnOnce(&Jobs, &Tenant, &str) -> Result<Option<T>, JobsError> + Send + 'static,
) -> Result<T, ApiError> {
    let jobs = state.jobs()?;
    let lookup = id.clone();
    blocking(move || query(&jobs, &tenant, &lookup)).await?.map_err(store_failed)?.ok_or_else(|| job_not_found(&id))
}

/// The task a spec asks for, checked against the uploaded file names.
fn task_from_spec(spec: JobSpec, files: &[String]) -> Result<BatchTask, ApiError> {
    if spec.output.as_ref().is_some_and(|output| output.iter().any(|&format| format != OutputFormat::Rle)) {
        return Err(ApiError::invalid_request("job results are COCO RLE: `output` can only be [\"rle\"]"));
    }
    let mode = spec.mode.unwrap_or(if spec.prompts.is_empty() { JobMode::Everything } else { JobMode::Prompts });
    let task = match mode {
        JobMode::Everything => BatchTask::Everything { params: spec.everything },
        JobMode::Prompts => {
            if let Some(file) = files.iter().find(|f| spec.prompts.get(*f).is_none_or(Vec::is_empty)) {
                return Err(ApiError::invalid_request(format!("no prompts for the file {file:?}")));
            }
            BatchTask::Prompts { prompts: spec.prompts }
        }
    };
    task.validate().map_err(ApiError::invalid_request)?;
    Ok(task)
}

/// Receives the form: each `image` file straight to disk, the `spec` JSON in memory; limits on the total size, the
/// number of files and the disk space (`room` bytes; a disk that fills anyway is 507 too).
async fn receive(
    request: &HttpRequest,
    payload: Payload,
    jobs: &Arc<Jobs>,
    state: &AppState,
    room: u64,
) -> Result<(StagedUpload, Option<Vec<u8>>), ApiError> {
    let internal = |e: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "job_store_failed", e);
    let write_failed = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::StorageFull => no_room(format!("the server's disk is full: {e}")),
        _ => internal(e.to_string()),
    };
    let mut upload = {
        let jobs = Arc::clone(jobs);
        blocking(move || jobs.stage()).await?.map_err(internal)?
    };
    let limits = &state.limits;
    let mut spec = None;
    let mut total = 0usize;
    let mut multipart = Multipart::new(request.headers(), payload);
    while let Some(field) = multipart.next().await {
        let mut field = field.map_err(|e| ApiError::malformed_body(format!("malformed multipart body: {e}")))?;
        match field.name().unwrap_or_default() {
            "image" => {
                if upload.file_names().len() == limits.max_job_images {
                    let max = limits.max_job_images;
                    return Err(ApiError::invalid_request(format!("more than {max} images in one job")));
                }
                let position = upload.file_names().len();
                let name = field
                    .content_disposition()
                    .and_then(|d| d.get_filename())
                    .map(str::to_string)
                    .filter(|name| !name.is_empty())
                    .unwrap_or_else(|| format!("image-{position}"));
                let path = upload.next_path();
                let mut file = std::fs::File::create(&path).map_err(|e| internal(e.to_string()))?;
                while let Some(chunk) = field.next().await {
                    let chunk = chunk.map_err(|e| ApiError::malformed_body(format!("could not read the body: {e}")))?;
                    total += chunk.len();
                    if total > limits.max_job_bytes {
                        return Err(ApiError::payload_too_large(limits.max_job_bytes));
                    }
                    if total as u64 > room {
                        return Err(no_room("the upload outgrew the room left on the server's disk".to_string()));
                    }
                    file.write_all(&chunk).map_err(write_failed)?;
                }
                blocking(move || file.sync_all()).await?.map_err(write_failed)?;
                upload.added(name);
            }
            "spec" => spec = Some(body::read_limited(field, limits.max_json_bytes).await?),
            other => return Err(body::unknown_field(other, &["image", "spec"])),
        }
    }
    Ok((upload, spec))
}

/// Submit a batch job: `multipart/form-data` with one or more files `image` and an optional JSON field `spec`.
/// Answers 202 once the images and the job are on disk: from then on the job survives a crash or restart.
#[utoipa::path(
    params(ModelQuery),
    request_body(content = JobForm, content_type = "multipart/form-data"),
    responses(
        (status = 202, body = JobAccepted),
        (status = 400, description = "malformed body or spec JSON", body = ErrorBody),
        (status = 404, description = "unknown model", body = ErrorBody),
        (status = 413, description = "the upload is too large", body = ErrorBody),
        (status = 415, description = "not multipart/form-data", body = ErrorBody),
        (status = 422, description = "no images, duplicate file names, missing prompts or invalid parameters", body = ErrorBody),
        (status = 503, description = "not ready, or the shared job store (Redis) is unreachable", body = ErrorBody),
        (status = 507, description = "the server's disk is nearly full (--min-free-disk-mb), or the tenant's jobs in flight would hold more than --tenant-max-job-mb", body = ErrorBody),
    )
)]
#[post("/v1/jobs")]
pub async fn submit(
    state: Data<AppState>,
    request: HttpRequest,
    payload: Payload,
    query: Query<ModelQuery>,
    tenant: Tenant,
) -> Result<HttpResponse, ApiError> {
    let (engine, jobs) = (state.engine()?, state.jobs()?);
    if !body::is_multipart(&request) {
        return Err(ApiError::unsupported_media_type("send multipart/form-data with `image` files and a `spec` field"));
    }
    let model = query.model.clone().unwrap_or_else(|| engine.default_model().to_string());
    if !engine.model_map().contains_key(&model) {
        return Err(crate::engine::EngineError::ModelNotFound(model).into());
    }
    // Refused before the images are received: a shared job store that cannot be reached would lose them, and a
    // full disk would fail them half-written.
    let room = jobs.accepting().map_err(store_failed)?;
    if body::declared_length(&request).is_some_and(|length| length as u64 > room) {
        return Err(no_room(format!(
            "the upload is larger than the {} MiB the server's disk has room for",
            room >> 20
        )));
    }
    let (upload, spec) = receive(&request, payload, &jobs, &state, room).await?;
    let files = upload.file_names().to_vec();
    if files.is_empty() {
        return Err(ApiError::invalid_request("the job has no `image` files"));
    }
    let mut seen = HashSet::new();
    if let Some(duplicate) = files.iter().find(|name| !seen.insert(name.as_str())) {
        return Err(ApiError::invalid_request(format!("two files are named {duplicate:?}; names must be unique")));
    }
    let spec: JobSpec = match spec {
        Some(text) => body::parse_json(&text)?,
        None => JobSpec::default(),
    };
    let task = task_from_spec(spec, &files)?;
    task.check_model(&engine.model_map()[&model]).map_err(ApiError::invalid_request)?;
    let job_id = {
        let (jobs, model) = (Arc::clone(&jobs), model.clone());
        blocking(move || jobs.submit(&tenant, &model, &task, upload)).await?
    }
    .map_err(store_failed)?;
    tracing::info!(job = job_id, images = files.len(), %model, "job accepted");
    Ok(HttpResponse::Accepted().json(JobAccepted { job_id, status: JobStatus::Queued, total: files.len() }))
}

/// A job's status and progress.
#[utoipa::path(
    params(("job_id" = String, Path, description = "From the submission")),
    responses(
        (status = 200, body = JobStatusResponse),
        (status = 404, description = "unknown job", body = ErrorBody),
        (status = 503, description = UNAVAILABLE, body = ErrorBody),
    )
)]
#[get("/v1/jobs/{job_id}")]
pub async fn status(state: Data<AppState>, job_id: Path<String>, tenant: Tenant) -> Result<HttpResponse, ApiError> {
    let summary = query_job(&state, tenant, job_id.into_inner(), |jobs, tenant, id| jobs.summary(tenant, id)).await?;
    Ok(HttpResponse::Ok().json(JobStatusResponse::from(summary)))
}

/// The COCO results of the images done so far (all of them once the job has succeeded).
#[utoipa::path(
    params(("job_id" = String, Path, description = "From the submission")),
    responses(
        (status = 200, description = "COCO-style `images` and `annotations` (RLE)"),
        (status = 404, description = "unknown job", body = ErrorBody),
        (status = 503, description = UNAVAILABLE, body = ErrorBody),
    )
)]
#[get("/v1/jobs/{job_id}/results")]
pub async fn results(state: Data<AppState>, job_id: Path<String>, tenant: Tenant) -> Result<HttpResponse, ApiError> {
    let results: CocoResults =
        query_job(&state, tenant, job_id.into_inner(), |jobs, tenant, id| jobs.results(tenant, id)).await?;
    Ok(HttpResponse::Ok().json(results))
}

/// Cancels a queued or running job (200 with its status; results so far stay readable); deletes a job that has
/// ended, results included (204).
#[utoipa::path(
    operation_id = "remove_job",
    params(("job_id" = String, Path, description = "From the submission")),
    responses(
        (status = 200, description = "cancelled", body = JobStatusResponse),
        (status = 204, description = "deleted"),
        (status = 404, description = "unknown job", body = ErrorBody),
        (status = 503, description = UNAVAILABLE, body = ErrorBody),
    )
)]
#[delete("/v1/jobs/{job_id}")]
pub async fn remove(state: Data<AppState>, job_id: Path<String>, tenant: Tenant) -> Result<HttpResponse, ApiError> {
    let (removal, summary) =
        query_job(&state, tenant, job_id.into_inner(), |jobs, tenant, id| match jobs.remove(tenant, id)? {
            Removal::NotFound => Ok(None),
            removal => Ok(Some((removal, jobs.summary(tenant, id)?))),
        })
        .await?;
    match (removal, summary) {
        (Removal::Cancelled, Some(summary)) => Ok(HttpResponse::Ok().json(JobStatusResponse::from(summary))),
        _ => Ok(HttpResponse::NoContent().finish()),
    }
}
