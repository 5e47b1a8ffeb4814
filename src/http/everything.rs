//! `/v1/images/{image_id}/everything`: automatic mask generation on a cached image.

use actix_web::web::{Data, Path, Payload};
use actix_web::{HttpRequest, HttpResponse, post};
use serde::Serialize;

use super::error::{ApiError, ErrorBody};
use super::{AppState, body};
use crate::amg::{AmgParams, EverythingMask, encode_all};
use crate::segment::OutputFormat;
use crate::tenant::Tenant;

#[derive(Serialize, utoipa::ToSchema)]
pub struct EverythingResponse {
    pub image_id: String,
    pub model: String,
    pub width: usize,
    pub height: usize,
    /// Generation time (decoding the grid, filtering, NMS), in milliseconds.
    pub elapsed_ms: f64,
    /// In the official generator's order.
    pub masks: Vec<EverythingMask>,
}

/// The body: SamAutomaticMaskGenerator's parameters (all optional) and `output` (default `["rle"]`). No body
/// means all defaults (a body of spaces is malformed JSON, as anywhere else).
fn parse_request(text: &[u8]) -> Result<(AmgParams, Vec<OutputFormat>), ApiError> {
    if text.is_empty() {
        return Ok((AmgParams::default(), vec![OutputFormat::Rle]));
    }
    let mut fields: serde_json::Map<String, serde_json::Value> = body::parse_json(text)?;
    let output = match fields.remove("output") {
        Some(value) => serde_json::from_value(value).map_err(|e| ApiError::invalid_request(format!("output: {e}")))?,
        None => vec![OutputFormat::Rle],
    };
    let params = serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|e| ApiError::invalid_request(e.to_string()))?;
    Ok((params, output))
}

/// The request body as the handler reads it: optional (all defaults), AmgParams' fields plus `output`. (The route
/// is declared with AmgParams, which jobs share; this makes its own schema, `EverythingRequest`, from it.)
pub struct EverythingRequestSpec;

impl utoipa::Modify for EverythingRequestSpec {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{ArrayBuilder, Schema};
        use utoipa::openapi::{Ref, RefOr, Required};
        let Some(components) = openapi.components.as_mut() else { return };
        let Some(RefOr::T(Schema::Object(params))) = components.schemas.get("AmgParams") else { return };
        let mut request = params.clone();
        let output = ArrayBuilder::new()
            .items(Ref::from_schema_name("OutputFormat"))
            .description(Some("Encodings of each mask; `[\"rle\"]` when absent."));
        request.properties.insert("output".to_string(), output.into());
        // Crops need the pixels, which a cached image no longer has.
        if let Some(RefOr::T(Schema::Object(crop_layers))) = request.properties.get_mut("crop_n_layers") {
            crop_layers.maximum = Some(0.into());
            crop_layers.description = Some("0 here: crop layers need the pixels (use a batch job)".to_string());
        }
        request.description = Some("SamAutomaticMaskGenerator's parameters (all optional) and `output`.".to_string());
        components.schemas.insert("EverythingRequest".to_string(), Schema::Object(request).into());
        let route = openapi.paths.paths.get_mut("/v1/images/{image_id}/everything");
        let body = route.and_then(|item| item.post.as_mut()).and_then(|post| post.request_body.as_mut());
        if let Some(RefOr::T(body)) = body {
            body.required = Some(Required::False);
            for content in body.content.values_mut() {
                if let RefOr::T(content) = content {
                    content.schema = Some(Ref::from_schema_name("EverythingRequest").into());
                }
            }
        }
    }
}

/// Segment everything in a cached image (SamAutomaticMaskGenerator's semantics and defaults). `crop_n_layers`
/// above 0 needs the pixels and is refused here: use a batch job or `samserve everything`.
#[utoipa::path(
    params(("image_id" = String, Path, description = "From the upload")),
    request_body = AmgParams,
    responses(
        (status = 200, body = EverythingResponse),
        (status = 400, description = "malformed JSON", body = ErrorBody),
        (status = 404, description = "unknown image", body = ErrorBody),
        (status = 413, description = "body too large", body = ErrorBody),
        (status = 422, description = "invalid parameters", body = ErrorBody),
        (status = 503, description = "not ready or timed out", body = ErrorBody),
    )
)]
#[post("/v1/images/{image_id}/everything")]
pub async fn everything(
    state: Data<AppState>,
    request: HttpRequest,
    payload: Payload,
    image_id: Path<String>,
    tenant: Tenant,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let text = body::read_body(&request, payload, state.limits.max_json_bytes).await?;
    let (params, output) = parse_request(&text)?;
    let done = state.within_time_limit(engine.everything(&tenant, &image_id, params)).await??;
    let masks = encode_all(&done.masks, &output);
    Ok(HttpResponse::Ok().json(EverythingResponse {
        image_id: done.record.image_id.clone(),
        model: done.record.model.clone(),
        width: done.record.width,
        height: done.record.height,
        elapsed_ms: done.elapsed_ms,
        masks,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_and_output_are_read_apart() {
        let (params, output) = parse_request(br#"{"points_per_side": 8, "output": ["rle", "png"]}"#).unwrap();
        assert_eq!(params.points_per_side, 8);
        assert_eq!(output, vec![OutputFormat::Rle, OutputFormat::Png]);
        assert_eq!(parse_request(b"").unwrap().0, AmgParams::default());
        assert_eq!(parse_request(b"\n").unwrap_err().status.as_u16(), 400);
        assert_eq!(parse_request(br#"{"points_per_side": 8.0}"#).unwrap().0.points_per_side, 8);
        assert_eq!(parse_request(br#"{"points_per_sde": 8}"#).unwrap_err().status.as_u16(), 422);
        assert_eq!(parse_request(br#"{"output": ["jpeg"]}"#).unwrap_err().status.as_u16(), 422);
        assert_eq!(parse_request(br#"[1]"#).unwrap_err().status.as_u16(), 422);
        assert_eq!(parse_request(br#"{"points_per_side": "#).unwrap_err().status.as_u16(), 400);
    }
}
