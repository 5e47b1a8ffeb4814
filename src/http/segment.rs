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

#[cfg(test)]
mod tests {
    use ndarray::{Array1, Array2};
    use proptest::collection::vec;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::engine::EngineError;
    use crate::model::{Family, ImageSize};
    use crate::proptest_support::{config, json_value, mutated};

    const MAX_PROMPTS: usize = 8;
    /// SAM's and SAM 2's low-res mask size; mask_input is resolved by the engine, never here.
    const LOW_RES: ImageSize = ImageSize { height: 256, width: 256 };

    /// What the server does with a prompt body up to the model: parse it, check it, check each prompt against
    /// the image and move it into each family's frame (which must be finite and inside the resized image).
    fn prepare(text: &[u8], image: ImageSize) -> Result<Vec<PromptRequest>, ApiError> {
        let (prompts, _) = prompt_requests(body::parse_json(text)?, MAX_PROMPTS)?;
        for (index, request) in prompts.iter().enumerate() {
            let prompt = &request.prompt;
            prompt.validate(image, LOW_RES).map_err(|error| EngineError::Prompt { index, error })?;
            for (family, input_size) in [(Family::Sam, 1024), (Family::Sam2, 1024), (Family::EfficientSam, 0)] {
                let resized = family.resized_size(image, input_size);
                let rows = prompt.points.len() + 2;
                let (mut coords, mut labels) = (Array2::<f32>::zeros((rows, 2)), Array1::<f32>::zeros(rows));
                family.write_points(prompt, true, image, resized, coords.view_mut(), labels.view_mut());
                let (width, height) = (resized.width as f32, resized.height as f32);
                let inside =
                    |(x, y): (f32, f32)| (0.0..=width * 1.0001).contains(&x) && (0.0..=height * 1.0001).contains(&y);
                assert!(
                    coords.rows().into_iter().all(|row| inside((row[0], row[1]))),
                    "{family:?}: {coords} outside {resized:?}"
                );
            }
        }
        Ok(prompts)
    }

    fn check(text: &[u8], image: ImageSize) -> Result<(), TestCaseError> {
        match prepare(text, image) {
            Ok(prompts) => prop_assert!((1..=MAX_PROMPTS).contains(&prompts.len())),
            Err(error) => prop_assert!(error.status.is_client_error(), "{}: {}", error.status, error.message),
        }
        Ok(())
    }

    fn image() -> impl Strategy<Value = ImageSize> {
        prop_oneof![2 => (48usize..200, 48usize..200), 1 => (1usize..64, 1usize..64), 1 => (1usize..10_000, 1usize..10_000)]
            .prop_map(|(height, width)| ImageSize { height, width })
    }

    /// Numbers for coordinates: inside small images mostly, and at every edge of f64 and JSON.
    fn coordinate() -> impl Strategy<Value = Value> {
        prop_oneof![
            60 => (0.0f64..64.0).prop_map(|v| json!(v)),
            10 => (-3i64..70).prop_map(|v| json!(v)),
            2 => prop::sample::select(vec![
                -0.0, 5e-324, -5e-324, 1e300, -1e300, f64::MAX, f64::MIN, 0.9999999999999999, 1e-7,
            ])
            .prop_map(|v| json!(v)),
            1 => prop_oneof![any::<i64>().prop_map(|v| json!(v)), any::<u64>().prop_map(|v| json!(v))],
            1 => json_value(),
        ]
    }

    /// `count` pairs mostly; wrong lengths and non-lists now and then.
    fn points(count: usize) -> impl Strategy<Value = Value> {
        let point = prop_oneof![
            40 => (coordinate(), coordinate()).prop_map(|(x, y)| json!([x, y])),
            1 => vec(coordinate(), 0..4).prop_map(Value::Array),
            1 => json_value(),
        ];
        vec(point, count).prop_map(Value::Array)
    }

    fn labels(count: usize) -> impl Strategy<Value = Value> {
        let label = prop_oneof![
            40 => (0i64..=1).prop_map(|v| json!(v)),
            1 => prop::sample::select(vec![json!(2), json!(-1), json!(1.0), json!(true), json!("1"), json!(i64::MIN)]),
            1 => json_value(),
        ];
        vec(label, count).prop_map(Value::Array)
    }

    fn prompt() -> impl Strategy<Value = Value> {
        // As many labels as points, mostly.
        let counts = prop_oneof![8 => (1usize..5).prop_map(|n| (n, n)), 1 => (0usize..5, 0usize..5)];
        // Boxes with their corners in order, mostly.
        let ordered = |[x0, y0, x1, y1]: [Value; 4]| {
            let order = |a: Value, b: Value| match (a.as_f64(), b.as_f64()) {
                (Some(u), Some(v)) if u > v => (b, a),
                _ => (a, b),
            };
            let ((x0, x1), (y0, y1)) = (order(x0, x1), order(y0, y1));
            json!([x0, y0, x1, y1])
        };
        let bbox = prop_oneof![
            8 => [coordinate(), coordinate(), coordinate(), coordinate()].prop_map(ordered),
            1 => vec(coordinate(), 0..6).prop_map(Value::Array),
        ];
        let mask_input = prop_oneof![4 => Just(json!("abc")), 1 => json_value()];
        counts.prop_flat_map(move |(points_count, labels_count)| {
            (
                // Both or neither, mostly.
                prop::option::weighted(0.8, (points(points_count), labels(labels_count))),
                prop::bool::weighted(0.05),
                prop::option::weighted(0.4, bbox.clone()),
                prop::option::weighted(0.1, mask_input.clone()),
                prop::option::weighted(0.05, ("[a-z]{1,6}", json_value())),
            )
                .prop_map(|(points_and_labels, one_only, bbox, mask_input, extra)| {
                    let (points, labels) = points_and_labels.unzip();
                    let labels = labels.filter(|_| !one_only);
                    let fields = [("points", points), ("labels", labels), ("box", bbox), ("mask_input", mask_input)];
                    let fields = fields.into_iter().filter_map(|(key, value)| Some((key.to_string(), value?)));
                    Value::Object(fields.chain(extra).collect())
                })
        })
    }

    fn request() -> impl Strategy<Value = Value> {
        let output = prop_oneof![
            10 => Just(json!(["rle"])),
            10 => Just(json!(["rle", "polygons", "png", "logits"])),
            1 => Just(json!(["jpeg"])),
            1 => Just(json!([])),
            1 => json_value()
        ];
        let count = prop_oneof![
            20 => (0u64..100).prop_map(|v| json!(v)),
            1 => prop::sample::select(vec![json!(8.0), json!(-1), json!(1e300), json!(u64::MAX)]),
            1 => json_value()
        ];
        let prompts = prop_oneof![20 => 1usize..=3, 4 => 4..=MAX_PROMPTS, 1 => Just(0), 1 => Just(MAX_PROMPTS + 1)];
        (
            prompts.prop_flat_map(|count| vec(prompt(), count)),
            prop::option::of(prop_oneof![20 => any::<bool>().prop_map(Value::Bool), 1 => json_value()]),
            prop::option::of(output),
            prop::option::of(count),
            prop::option::weighted(0.05, ("[a-z_]{1,12}", json_value())),
        )
            .prop_map(|(prompts, multimask, output, max_hole_area, extra)| {
                let mut request = json!({"prompts": prompts});
                let object = request.as_object_mut().unwrap();
                for (key, value) in [("multimask", multimask), ("output", output), ("max_hole_area", max_hole_area)] {
                    if let Some(value) = value {
                        object.insert(key.to_string(), value);
                    }
                }
                object.extend(extra);
                request
            })
    }

    const VALID: &str = r#"{"prompts": [{"points": [[10, 20.5], [3, 4]], "labels": [1, 0], "box": [1, 2, 30, 40]}],
        "multimask": true, "output": ["rle", "png"], "max_hole_area": 8}"#;

    /// What JSON does not take for a number (Python's json.dumps writes the first four).
    const NOT_NUMBERS: &[&str] =
        &["NaN", "-NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "00", "-", "0x10", "+1"];
    /// JSON's syntax and odd values, for the mutations.
    const TOKENS: &[&str] = &["[", "]", "{", "}", ",", ":", "\"", "-", "NaN", "1e308", "null", "\"box\"", "\"labels\""];

    #[test]
    fn the_valid_request_is_prepared() {
        let prompts = prepare(VALID.as_bytes(), ImageSize { height: 64, width: 64 }).unwrap();
        assert_eq!(prompts[0].prompt.points.len(), 2);
        let outside = prepare(VALID.as_bytes(), ImageSize { height: 30, width: 64 }).err().unwrap();
        assert_eq!(outside.status.as_u16(), 422);
    }

    proptest! {
        #![proptest_config(config(256))]

        #[test]
        fn any_bytes_are_prepared_or_refused_with_4xx(text in vec(any::<u8>(), 0..64), image in image()) {
            check(&text, image)?;
        }

        #[test]
        fn any_json_is_prepared_or_refused_with_4xx(value in json_value(), image in image()) {
            check(value.to_string().as_bytes(), image)?;
        }

        #[test]
        fn requests_with_odd_values_are_prepared_or_refused_with_4xx(request in request(), image in image()) {
            check(request.to_string().as_bytes(), image)?;
        }

        #[test]
        fn non_json_numbers_are_refused_with_4xx(
            request in request(),
            number in prop::sample::select(NOT_NUMBERS.to_vec()),
            at in any::<prop::sample::Index>(),
        ) {
            // One number of the text replaced by something that is not a JSON number.
            let text = request.to_string();
            let digits: Vec<usize> = text.match_indices(|c: char| c.is_ascii_digit()).map(|(i, _)| i).collect();
            // (Without a digit there is nothing to replace, and the text is checked as it is.)
            let text = match digits.len() {
                0 => text,
                count => {
                    let start = digits[at.index(count)];
                    let length = text[start..].find(|c: char| !(c.is_ascii_digit() || ".eE+-".contains(c)));
                    let end = length.map_or(text.len(), |n| start + n);
                    format!("{}{number}{}", &text[..start], &text[end..])
                }
            };
            check(text.as_bytes(), ImageSize { height: 64, width: 64 })?;
        }

        #[test]
        fn mutated_requests_are_prepared_or_refused_with_4xx(
            text in mutated(VALID.as_bytes().to_vec(), 4, TOKENS),
            image in image(),
        ) {
            check(&text, image)?;
        }
    }
}
