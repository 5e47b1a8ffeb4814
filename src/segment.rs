//! Prompts against an embedding -> the masks SamPredictor would return, with the API's encodings.

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ndarray::{Array2, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::mask::full_size::{MaskRuns, threshold_at_original};
use crate::mask::regions::fill_holes_and_sprinkles;
use crate::mask::upscale::logits_before_last_resize;
use crate::mask::{self, BinaryMask, rle::CocoRle};
use crate::model::{Embedding, Family, ModelError, Point, PointLabel, Prompt, PromptError, SamModel};

/// The stability score offset of segment-anything (`stability_score_offset = 1.0`).
pub const STABILITY_SCORE_OFFSET: f32 = 1.0;

/// The encodings a caller can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    /// COCO compressed RLE, as pycocotools writes it.
    Rle,
    /// Rings `[x1, y1, ...]`: outer boundaries clockwise on screen, holes counter-clockwise.
    Polygons,
    /// A base64 single-channel 8-bit PNG, 255 = mask.
    Png,
    /// The low-res logits (the decoder's own resolution), base64 of little-endian f32, row-major.
    Logits,
}

/// The most points one prompt may have.
pub const MAX_POINTS_PER_PROMPT: usize = 64;

/// One prompt as the API and job specs write it: points with labels, a box, or both; optionally the `logits_id` of
/// an earlier result as mask_input.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptSpec {
    /// `[[x, y], ...]` in pixels of the original image (after EXIF orientation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(schema_with = point_list_schema)]
    pub points: Vec<[f64; 2]>,
    /// One per point: 1 = foreground, 0 = background.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(schema_with = label_list_schema)]
    pub labels: Vec<i64>,
    /// `[x0, y0, x1, y1]`
    #[serde(rename = "box", skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 4, max_items = 4)]
    pub bbox: Option<[f64; 4]>,
    /// A `logits_id` from an earlier result, for iterative refinement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_input: Option<String>,
}

/// `points` in the spec: up to [`MAX_POINTS_PER_PROMPT`] pairs of numbers.
fn point_list_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    let pair =
        ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::Number)).min_items(Some(2)).max_items(Some(2));
    ArrayBuilder::new()
        .items(pair)
        .max_items(Some(MAX_POINTS_PER_PROMPT))
        .description(Some("`[[x, y], ...]` in pixels of the original image (after EXIF orientation)."))
        .build()
}

/// `labels` in the spec: one 0 or 1 per point.
fn label_list_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    let label = ObjectBuilder::new().schema_type(Type::Integer).enum_values(Some([0, 1]));
    ArrayBuilder::new()
        .items(label)
        .max_items(Some(MAX_POINTS_PER_PROMPT))
        .description(Some("One per point: 1 = foreground, 0 = background."))
        .build()
}

impl PromptSpec {
    /// The prompt without its mask_input (which the caller resolves); checks what needs no image.
    pub fn to_prompt(&self) -> Result<Prompt, PromptError> {
        if self.points.len() != self.labels.len() {
            return Err(PromptError::LabelCount { points: self.points.len(), labels: self.labels.len() });
        }
        if self.points.len() > MAX_POINTS_PER_PROMPT {
            return Err(PromptError::TooManyPoints(MAX_POINTS_PER_PROMPT));
        }
        let points = self
            .points
            .iter()
            .zip(&self.labels)
            .map(|(&[x, y], &code)| Ok(Point { x, y, label: PointLabel::from_code(code)? }))
            .collect::<Result<Vec<Point>, PromptError>>()?;
        Ok(Prompt { points, bbox: self.bbox, mask_input: None })
    }
}

#[derive(Debug, Clone)]
pub struct SegmentOptions {
    /// The 3 candidate masks (SamPredictor `multimask_output=True`) instead of the single-mask output.
    pub multimask: bool,
    pub outputs: Vec<OutputFormat>,
    pub small_regions: SmallRegions,
}

/// SAM2ImagePredictor's `max_hole_area` and `max_sprinkle_area`: holes and islands of at most that many low-res
/// pixels go from the logits before they are upsampled (the returned low-res logits keep them). 0 turns either
/// off; SAM 2 models only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SmallRegions {
    pub max_hole_area: usize,
    pub max_sprinkle_area: usize,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LowResLogits {
    pub size: [usize; 2],
    pub data: String,
}

/// The encodings of a mask that a caller asked for (`output`).
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Encodings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rle: Option<CocoRle>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub polygons: Option<Vec<Vec<f64>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub png: Option<String>,
}

impl Encodings {
    /// Each encoding in `outputs` (`logits` is not a mask encoding and is left to the caller). `rle` and `binary`
    /// are called only when needed, so a caller holding run lengths need not build the mask for RLE alone.
    pub fn new<'a>(
        outputs: &[OutputFormat],
        rle: impl FnOnce() -> CocoRle,
        binary: impl FnOnce() -> Cow<'a, BinaryMask>,
    ) -> Self {
        let wants = |format| outputs.contains(&format);
        let binary = (wants(OutputFormat::Polygons) || wants(OutputFormat::Png)).then(binary);
        let binary = binary.as_deref();
        Self {
            rle: wants(OutputFormat::Rle).then(rle),
            polygons: binary.filter(|_| wants(OutputFormat::Polygons)).map(mask::polygon::polygons),
            png: binary.filter(|_| wants(OutputFormat::Png)).map(|b| BASE64.encode(mask::png_bytes(b))),
        }
    }
}

/// One returned mask, with the fields of the API's `masks` entries.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MaskResult {
    /// Names this mask's low-res logits for `mask_input` (set by the service, which keeps them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logits_id: Option<String>,
    /// Predicted IoU.
    pub score: f32,
    pub stability_score: f32,
    pub area: u64,
    /// `[x, y, w, h]`
    pub bbox: [f64; 4],
    #[serde(flatten)]
    pub encodings: Encodings,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logits: Option<LowResLogits>,
    /// This mask's low-res logits, to feed back as `mask_input`.
    #[serde(skip)]
    pub low_res: Arc<Array2<f32>>,
}

/// The answer to one prompt: masks sorted by score, best first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PromptResult {
    /// The best mask's `logits_id` (set by the service).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logits_id: Option<String>,
    pub masks: Vec<MaskResult>,
}

/// A returned mask before encoding: what SamPredictor gives (score, full-size mask) plus its stability and logits.
#[derive(Debug, Clone)]
pub struct Mask {
    /// Predicted IoU.
    pub score: f32,
    pub stability_score: f32,
    pub runs: MaskRuns,
    pub low_res: Arc<Array2<f32>>,
}

/// Validates and decodes the prompts, then post-processes only the masks that are returned: per prompt, the
/// masks sorted by score, best first.
pub fn segment_masks(
    model: &SamModel,
    embedding: &Embedding,
    prompts: &[Prompt],
    multimask: bool,
    small_regions: SmallRegions,
) -> Result<Vec<Vec<Mask>>, ModelError> {
    if multimask && model.decoder.single_mask() {
        return Err(ModelError::Unsupported(format!(
            "multimask: the decoder of {} gives one mask per prompt (exported with return_single_mask); ask for \
             the single mask",
            model.name()
        )));
    }
    if small_regions != SmallRegions::default() && model.encoder.family() != Family::Sam2 {
        return Err(ModelError::Unsupported(format!(
            "max_hole_area and max_sprinkle_area are SAM 2's (SAM2ImagePredictor); {} is a SAM model",
            model.name()
        )));
    }
    for (index, prompt) in prompts.iter().enumerate() {
        check_supported(model, index, prompt)?;
        prompt
            .validate(embedding.original, model.decoder.low_res_size())
            .map_err(|error| ModelError::Prompt { index, error })?;
    }
    let decoded = model.decoder.decode(embedding, prompts)?;
    let (family, input_size) = (model.encoder.family(), model.encoder.input_size());
    // Prompts in parallel (one prompt runs inline, without waking the pool); a prompt's masks one after the other:
    // a few tens of microseconds each, less than handing them to other threads costs on busy cores.
    Ok(decoded
        .into_par_iter()
        .map(|prompt| {
            let mut masks: Vec<Mask> = model
                .decoder
                .answer_tokens(&prompt.scores, multimask)
                .map(|token| {
                    let low_res = prompt.low_res.index_axis(Axis(0), token).to_owned();
                    let SmallRegions { max_hole_area, max_sprinkle_area } = small_regions;
                    let cleaned = (small_regions != SmallRegions::default())
                        .then(|| fill_holes_and_sprinkles(low_res.view(), max_hole_area, max_sprinkle_area));
                    let logits = cleaned.as_ref().unwrap_or(&low_res).view();
                    let at_input = logits_before_last_resize(family, logits, input_size, embedding.resized);
                    let (runs, stability_score) =
                        threshold_at_original(at_input.view(), embedding.original, STABILITY_SCORE_OFFSET);
                    Mask { score: prompt.scores[token], stability_score, runs, low_res: Arc::new(low_res) }
                })
                .collect();
            masks.sort_by(|a, b| b.score.total_cmp(&a.score));
            masks
        })
        .collect())
}

/// Refuses what the model's decoder cannot take: `mask_input` (EdgeSAM's export, transformers') or a box
/// (transformers').
pub fn check_supported(model: &SamModel, index: usize, prompt: &Prompt) -> Result<(), ModelError> {
    let refuse = |what: &str, why: &str| {
        Err(ModelError::Unsupported(format!("prompt {index}: {what}: the decoder of {} {why}", model.name())))
    };
    if prompt.mask_input.is_some() && !model.decoder.takes_mask_input() {
        return refuse("mask_input", "takes no mask input (points and boxes only)");
    }
    if prompt.bbox.is_some() && !model.decoder.takes_boxes() {
        return refuse("box", "takes points only (its export has no box input)");
    }
    let slots = prompt.points.len() + if prompt.bbox.is_some() { 2 } else { 0 };
    if let Some(max) = model.decoder.max_points().filter(|&max| slots > max) {
        return refuse("points", &format!("takes at most {max} points, a box counting as 2 (this prompt has {slots})"));
    }
    Ok(())
}

/// [`segment_masks`] with the API's encodings of each mask.
pub fn segment(
    model: &SamModel,
    embedding: &Embedding,
    prompts: &[Prompt],
    options: &SegmentOptions,
) -> Result<Vec<PromptResult>, ModelError> {
    let masks = segment_masks(model, embedding, prompts, options.multimask, options.small_regions)?;
    Ok(masks
        .into_par_iter()
        .map(|masks| PromptResult {
            logits_id: None,
            masks: masks.into_iter().map(|mask| encode_mask(mask, &options.outputs)).collect(),
        })
        .collect())
}

fn encode_mask(mask: Mask, outputs: &[OutputFormat]) -> MaskResult {
    let wants = |format| outputs.contains(&format);
    let runs = &mask.runs;
    let low_res = &mask.low_res;
    MaskResult {
        logits_id: None,
        score: mask.score,
        stability_score: mask.stability_score,
        area: runs.area,
        bbox: runs.bbox_xywh(),
        encodings: Encodings::new(outputs, || runs.rle(), || Cow::Owned(runs.binary())),
        logits: wants(OutputFormat::Logits).then(|| LowResLogits {
            size: [low_res.nrows(), low_res.ncols()],
            data: BASE64.encode(low_res.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()),
        }),
        low_res: mask.low_res,
    }
}
