//! Prompts: `/v1/images/{image_id}/segment` against a cached image, and the one-shot `/v1/segment`.

use actix_web::web::{Data, Path, Payload, Query};
use actix_web::{HttpRequest, HttpResponse, post};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ErrorBody};
use super::images::ModelQuery;
use super::{AppState, body};
use crate::engine::{PromptRequest, Segmentation};
use crate::segment::{OutputFormat, PromptResult, PromptSpec, SegmentOptions, SmallRegions};
use crate::tenant::Tenant;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SegmentRequest {
    /// At most `--max-prompts` (256 by default).
    #[schema(min_items = 1)]
    pub prompts: Vec<PromptSpec>,
    /// The 3 candidate masks per prompt instead of the single-mask output.
    #[serde(default)]
    pub multimask: bool,
    /// Encodings of each mask; `["rle"]` when absent.
    #[serde(default = "default_output")]
    pub output: Vec<OutputFormat>,
    /// SAM 2 models only (SAM2ImagePredictor's option): fill holes of at most this many low-res pixels before
    /// upsampling; 0 = off.
    #[serde(default, deserialize_with = "crate::whole_number::whole_number")]
    pub max_hole_area: usize,
    /// SAM 2 models only: remove islands of at most this many low-res pixels before upsampling; 0 = off.
    #[serde(default, deserialize_with = "crate::whole_number::whole_number")]
    pub max_sprinkle_area: usize,
}

/// The form of `POST /v1/segment`, for the spec (the handler reads the parts as they come).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct SegmentForm {
    /// The image file.
    #[schema(value_type = String, format = Binary, min_length = 1)]
    image: Vec<u8>,
    /// The prompts, as JSON text.
    request: SegmentRequest,
}

fn default_output() -> Vec<OutputFormat> {
    vec![OutputFormat::Rle]
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SegmentResponse {
    pub image_id: String,
    pub model: String,
    pub width: usize,
    pub height: usize,
    pub decode_ms: f64,
    /// One per prompt, in request order; masks sorted by score, best first.
    pub results: Vec<PromptResult>,
}

impl From<Segmentation> for SegmentResponse {
    fn from(done: Segmentation) -> Self {
        Self {
            image_id: done.record.image_id.clone(),
            model: done.record.model.clone(),
            width: done.record.width,
            height: done.record.height,
            decode_ms: done.decode_ms,
            results: done.results,
        }
    }
}

/// Checks what can be checked without the image and turns the request into engine prompts.
fn prompt_requests(
    request: SegmentRequest,
    max_prompts: usize,
) -> Result<(Vec<PromptRequest>, SegmentOptions), ApiError> {
    if request.prompts.is_empty() {
        return Err(ApiError::invalid_request("`prompts` is empty: give at least one prompt"));
    }
    if request.prompts.len() > max_prompts {
        let count = request.prompts.len();
        return Err(ApiError::invalid_request(format!("{count} prompts; at most {max_prompts} per request")));
    }
    let prompts = request
        .prompts
        .into_iter()
        .enumerate()
        .map(|(index, spec)| {
            let prompt = spec.to_prompt().map_err(|e| ApiError::invalid_prompt(format!("prompt {index}: {e}")))?;
            Ok(PromptRequest { prompt, mask_input: spec.mask_input })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let small_regions =
        SmallRegions { max_hole_area: request.max_hole_area, max_sprinkle_area: request.max_sprinkle_area };
    Ok((prompts, SegmentOptions { multimask: request.multimask, outputs: request.output, small_regions }))
}

/// Segment a cached image with one or more prompts, decoded together.
#[utoipa::path(
    params(("image_id" = String, Path, description = "From the upload")),
    request_body = SegmentRequest,
    responses(
        (status = 200, body = SegmentResponse),
        (status = 400, description = "malformed JSON", body = ErrorBody),
        (status = 404, description = "unknown image or logits_id", body = ErrorBody),
        (status = 413, description = "body too large", body = ErrorBody),
        (status = 422, description = "invalid prompt (outside the image, NaN, empty, unknown label, bad box)", body = ErrorBody),
        (status = 503, description = "not ready or timed out", body = ErrorBody),
    )
)]
#[post("/v1/images/{image_id}/segment")]
pub async fn segment_image(
    state: Data<AppState>,
    request: HttpRequest,
    payload: Payload,
    image_id: Path<String>,
    tenant: Tenant,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let text = body::read_body(&request, payload, state.limits.max_json_bytes).await?;
    let (prompts, options) = prompt_requests(body::parse_json(&text)?, state.limits.max_prompts)?;
    let done = state.within_time_limit(engine.segment(&tenant, &image_id, prompts, options)).await??;
    Ok(HttpResponse::Ok().json(SegmentResponse::from(done)))
}

/// One shot: upload and segment in one request (`multipart/form-data` with the file `image` and the JSON field
/// `request`, the body of `/v1/images/{image_id}/segment`). Uses and fills the embedding cache.
#[utoipa::path(
    params(ModelQuery),
    request_body(content = SegmentForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, body = SegmentResponse),
        (status = 400, description = "malformed body or JSON, missing field", body = ErrorBody),
        (status = 404, description = "unknown model or logits_id", body = ErrorBody),
        (status = 413, description = "body or decoded image too large", body = ErrorBody),
        (status = 415, description = "not multipart, or the image is undecodable", body = ErrorBody),
        (status = 422, description = "invalid prompt", body = ErrorBody),
        (status = 503, description = "not ready, encoder queue full or timed out", body = ErrorBody),
    )
)]
#[post("/v1/segment")]
pub async fn segment_once(
    state: Data<AppState>,
    request: HttpRequest,
    payload: Payload,
    query: Query<ModelQuery>,
    tenant: Tenant,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    if !body::is_multipart(&request) {
        return Err(ApiError::unsupported_media_type("send multipart/form-data with the fields `image` and `request`"));
    }
    let form = body::read_form(&request, payload, state.limits.max_body_bytes, &["image", "request"]).await?;
    let missing = |field: &str| ApiError::malformed_body(format!("the multipart form has no field `{field}`"));
    let request_json = form.request.ok_or_else(|| missing("request"))?;
    let image = form.image.ok_or_else(|| missing("image"))?;
    let (prompts, options) = prompt_requests(body::parse_json(&request_json)?, state.limits.max_prompts)?;
    let done = state
        .within_time_limit(async {
            let upload = engine.add_image(&tenant, query.model.as_deref(), image).await?;
            engine.segment_record(&tenant, upload.record, prompts, options).await
        })
        .await??;
    Ok(HttpResponse::Ok().json(SegmentResponse::from(done)))
}
