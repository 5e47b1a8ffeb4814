//! `/v1/images`: upload (encode once, cache), metadata, delete.

use actix_web::web::{Data, Path, Payload, Query};
use actix_web::{HttpRequest, HttpResponse, delete, get, post};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ErrorBody};
use super::{AppState, body};
use crate::engine::ImageRecord;
use crate::tenant::Tenant;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ModelQuery {
    /// A loaded model's name; the default model when absent.
    pub model: Option<String>,
}

/// An encoded image.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ImageInfo {
    /// Derived from the image bytes, the model, the tenant and a server secret: the same tenant uploading the same
    /// image for the same model gets the same id; nobody can compute it from the image.
    pub image_id: String,
    pub model: String,
    /// Width after EXIF orientation, in pixels.
    pub width: usize,
    pub height: usize,
    /// True when this request found the image already encoded (cache hit, or another upload of the same image
    /// was encoding it) and so ran no encoder itself.
    pub cached: bool,
    /// Decode + preprocess + encoder time of the run that encoded the image, in milliseconds.
    pub encode_ms: f64,
}

impl ImageInfo {
    pub fn new(record: &ImageRecord, cached: bool) -> Self {
        Self {
            image_id: record.image_id.clone(),
            model: record.model.clone(),
            width: record.width,
            height: record.height,
            cached,
            encode_ms: record.encode_ms,
        }
    }
}

/// Upload an image: it is decoded and encoded once, and its embedding cached.
///
/// The body is the image itself (`Content-Type: image/png`, `image/jpeg`, ... or `application/octet-stream`), or
/// `multipart/form-data` with the file field `image`.
#[utoipa::path(
    params(ModelQuery),
    request_body(
        content = ImageBytes,
        content_type = "image/*",
        description = "The image bytes with their image/* type (or application/octet-stream), or multipart/form-data with the file field `image`"
    ),
    responses(
        (status = 200, body = ImageInfo),
        (status = 400, description = "empty or malformed body", body = ErrorBody),
        (status = 404, description = "unknown model", body = ErrorBody),
        (status = 413, description = "body or decoded image too large", body = ErrorBody),
        (status = 415, description = "not an image, or undecodable", body = ErrorBody),
        (status = 422, description = "an unknown query parameter", body = ErrorBody),
        (status = 503, description = "not ready, encoder queue full or timed out", body = ErrorBody),
    )
)]
#[post("/v1/images")]
pub async fn upload(
    state: Data<AppState>,
    request: HttpRequest,
    payload: Payload,
    query: Query<ModelQuery>,
    tenant: Tenant,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let bytes = body::read_image_upload(&request, payload, state.limits.max_body_bytes).await?;
    let upload = state.within_time_limit(engine.add_image(&tenant, query.model.as_deref(), bytes)).await??;
    Ok(HttpResponse::Ok().json(ImageInfo::new(&upload.record, upload.cached)))
}

/// An upload's body in the spec: the image file's bytes.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary, min_length = 1)]
#[allow(dead_code)]
pub struct ImageBytes(Vec<u8>);

/// The metadata of a cached image.
#[utoipa::path(
    params(("image_id" = String, Path, description = "From the upload")),
    responses((status = 200, body = ImageInfo), (status = 404, description = "unknown or evicted", body = ErrorBody))
)]
#[get("/v1/images/{image_id}")]
pub async fn metadata(state: Data<AppState>, image_id: Path<String>, tenant: Tenant) -> Result<HttpResponse, ApiError> {
    let record = state.engine()?.image(&tenant, &image_id).await.ok_or_else(|| image_not_found(&image_id))?;
    Ok(HttpResponse::Ok().json(ImageInfo::new(&record, true)))
}

/// Free a cached image's embedding.
#[utoipa::path(
    params(("image_id" = String, Path, description = "From the upload")),
    operation_id = "remove_image",
    responses((status = 204, description = "deleted"), (status = 404, description = "unknown or evicted", body = ErrorBody))
)]
#[delete("/v1/images/{image_id}")]
pub async fn remove(state: Data<AppState>, image_id: Path<String>, tenant: Tenant) -> Result<HttpResponse, ApiError> {
    if state.engine()?.remove_image(&tenant, &image_id).await {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(image_not_found(&image_id))
    }
}

fn image_not_found(image_id: &str) -> ApiError {
    crate::engine::EngineError::ImageNotFound(image_id.to_string()).into()
}
