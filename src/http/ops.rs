//! Operations: liveness, readiness, metrics, the loaded models and the OpenAPI document.

use actix_web::web::Data;
use actix_web::{HttpResponse, get};
use serde::Serialize;
use utoipa::OpenApi;

use super::error::{ApiError, ErrorBody};
use super::{ApiDoc, AppState, downloads};
use crate::hub;
use crate::model::{BUILTIN_MODEL, EmbeddingDtype};

#[derive(Serialize, utoipa::ToSchema)]
pub struct Status {
    /// `ok` (liveness), `ready`, or `degraded`: serving, but the replicas' Redis is unreachable (each replica goes
    /// on from its own caches).
    pub status: &'static str,
    /// With `--redis`, while Redis is unreachable: the last error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
}

/// Liveness: the process answers.
#[utoipa::path(responses((status = 200, body = Status)))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Status { status: "ok", redis: None })
}

/// Readiness: the models are loaded (503 before).
#[utoipa::path(responses((status = 200, body = Status), (status = 503, description = "loading", body = ErrorBody)))]
#[get("/readyz")]
pub async fn readyz(state: Data<AppState>) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    // Still ready when Redis is down: clicks and uploads go on from this replica's caches.
    Ok(HttpResponse::Ok().json(match engine.shared_store().and_then(|store| store.outage()) {
        Some(error) => Status { status: "degraded", redis: Some(format!("unreachable: {error}")) },
        None => Status { status: "ready", redis: None },
    }))
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(responses((status = 200, content_type = "text/plain; version=0.0.4", body = String)))]
#[get("/metrics")]
pub async fn metrics(state: Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(state.metrics.render())
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ModelInfo {
    pub name: String,
    /// Used when a request names no model.
    pub default: bool,
    /// `sam` (Segment Anything and the models that keep its predictor: MobileSAM, EdgeSAM, SAM-HQ, ...), `sam2`
    /// (SAM 2 and 2.1) or `efficientsam`.
    pub family: &'static str,
    /// S: the encoder's square input side (`sam`: the longest image side after resizing; `sam2`: the image is
    /// resized to S x S).
    pub input_size: usize,
    /// `[C, h, w]` of the image embedding.
    pub embedding_shape: [usize; 3],
    /// Every tensor the encoder gives the decoder, by the decoder input it feeds: one for SAM; two for SAM-HQ (its
    /// ViT's global blocks stacked) and transformers.js SAM (the positional embedding); three for SAM 2 (the image
    /// embedding and two high-resolution feature maps).
    pub embedding_tensors: Vec<EmbeddingTensorInfo>,
    /// How the encoder takes the image: `normalized` (`[1, 3, S, S]`, normalized and padded by samserve),
    /// `rgb_hwc` (`[h, w, 3]` resized RGB; the graph normalizes and pads, as samexporter's `--use-preprocess`) or
    /// `original` (`[1, 3, H, W]` in 0..1 at the image's size; the graph resizes: EfficientSAM).
    pub encoder_input: &'static str,
    /// `[h, w]` of the low-res logits (mask_input).
    pub low_res_size: [usize; 2],
    /// `official` (SamOnnxModel export with orig_im_size) or `lean`.
    pub decoder: &'static str,
    /// Whether the decoder gives one mask per prompt, chosen inside the graph (exported with return_single_mask):
    /// then `multimask` and segment everything are refused with 422. (SAM 2's samexporter decoder gives the three
    /// multimask candidates only: a single-mask request gets the best-scored one.)
    pub single_mask: bool,
    /// Whether prompts may carry `mask_input` (refinement from earlier logits); EdgeSAM's export takes points and
    /// boxes only, and answers `mask_input` with 422.
    pub mask_input: bool,
    /// Whether prompts may have a box; the transformers export takes points only, and answers a box with 422.
    pub boxes: bool,
    /// The most points (clicks, a box counting as 2) a prompt may have, where the decoder limits them
    /// (EfficientSAM: 6); more are refused with 422. `null`: the API's own limit only.
    pub max_points: Option<usize>,
    /// Whether several prompts share one decoder run.
    pub batches_prompts: bool,
    /// Where the encoder sessions run: `cpu` or `cuda:N`.
    pub encoder_device: String,
    /// Where the decoder sessions run.
    pub decoder_device: String,
    /// What a user should know before relying on this model's masks: set for the built-in demo model (trained on
    /// synthetic shapes), with the command that serves a real one. The page shows it.
    pub notice: Option<String>,
    /// Whether a browser can run the decoder as it is (onnxruntime-web), fed from `GET
    /// /v1/images/{image_id}/embedding`: one ONNX file without external data, SamOnnxModel's point inputs
    /// (`point_coords`, `point_labels`), a `sam` or `sam2` decoder, float32 inputs.
    pub browser_decoder: bool,
    /// With `browser_decoder`: where to get the decoder's file, versioned by its hash (`?v=`: the first 16 hex
    /// digits of its SHA-256), so that browsers may keep it for good.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoder_url: Option<String>,
    /// The float type of the values the decoder is fed from the cache: `f16` with `--cache-f16` (widened), unless
    /// the decoder shares the encoder's GPU and takes the float32 copy kept there. A decoder run elsewhere on the
    /// embedding downloaded in this type gives the server's masks.
    pub embedding_dtype: EmbeddingDtype,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EmbeddingTensorInfo {
    pub name: String,
    /// As the decoder takes it: `[1, C, h, w]`, or SAM-HQ's stacked `[G, 1, h, w, D]`.
    pub shape: Vec<usize>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ModelList {
    pub models: Vec<ModelInfo>,
}

/// The loaded models with their input size and embedding shape.
#[utoipa::path(responses((status = 200, body = ModelList), (status = 503, description = "loading", body = ErrorBody)))]
#[get("/v1/models")]
pub async fn models(state: Data<AppState>) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let models = engine
        .models()
        .map(|model| {
            let low_res = model.decoder.low_res_size();
            ModelInfo {
                name: model.name().to_string(),
                default: model.name() == engine.default_model(),
                family: model.encoder.family().name(),
                input_size: model.encoder.input_size(),
                embedding_shape: model.encoder.embedding_shape(),
                embedding_tensors: model
                    .encoder
                    .embedding_tensors()
                    .map(|(name, shape)| EmbeddingTensorInfo { name: name.to_string(), shape: shape.to_vec() })
                    .collect(),
                encoder_input: model.encoder.layout().name(),
                low_res_size: [low_res.height, low_res.width],
                decoder: if model.decoder.takes_orig_im_size() { "official" } else { "lean" },
                single_mask: model.decoder.single_mask(),
                mask_input: model.decoder.takes_mask_input(),
                boxes: model.decoder.takes_boxes(),
                max_points: model.decoder.max_points(),
                batches_prompts: model.decoder.batches_prompts(),
                encoder_device: model.placement.0.to_string(),
                decoder_device: model.placement.1.to_string(),
                notice: (model.name() == BUILTIN_MODEL).then(hub::builtin_model_notice),
                browser_decoder: model.browser_decoder.is_ok(),
                decoder_url: model.browser_decoder.as_ref().ok().map(|file| downloads::decoder_url(model.name(), file)),
                embedding_dtype: engine.embedding_dtype(model),
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(ModelList { models }))
}

/// This document.
#[utoipa::path(responses((status = 200, description = "OpenAPI document", content_type = "application/json")))]
#[get("/openapi.json")]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
