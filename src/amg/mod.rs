//! Automatic mask generation ("segment everything") with the semantics and defaults of segment_anything's
//! `SamAutomaticMaskGenerator`: a grid of single-point prompts per crop, multimask outputs, filters on predicted
//! IoU, stability and crop edges, box NMS within and across crops, optional small-region clean-up.
//!
//! Where it is faster than the official code: the grid's points go through the decoder in batches
//! (`points_per_batch` prompts per run with a lean decoder), the predicted-IoU filter runs before any mask is
//! upsampled, the stability filter first looks at the logits at the model's input resolution and only upsamples to
//! full size the masks that could pass (the final decision uses the exact full-size score, as the official code),
//! and the candidates of a batch are post-processed in parallel.

mod grid;
mod output;

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};

use image::RgbImage;
use ndarray::Axis;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::mask::full_size::{MaskRuns, threshold_at_original};
use crate::mask::nms::{BoxXyxy, nms};
use crate::mask::regions::{RegionKind, fill_holes_and_sprinkles, remove_small_regions};
use crate::mask::upscale::logits_before_last_resize;
use crate::mask::{self, BinaryMask, rle};
use crate::model::{Embedding, Family, ImageSize, ModelError, Point, PointLabel, Prompt, SamModel};
pub use grid::CropBox;
pub use output::{EverythingMask, encode_all};

/// A mask whose stability at the model's input resolution is this far below the threshold is dropped without
/// computing it at full size; the two resolutions differ by a fraction of a pixel along the boundary.
const STABILITY_PREFILTER_MARGIN: f32 = 0.05;
/// `is_box_near_crop_edge`'s tolerance, in pixels.
const CROP_EDGE_TOLERANCE: f32 = 20.0;

/// SamAutomaticMaskGenerator's parameters and defaults (also the flags of `samserve everything` and `batch`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct AmgParams {
    /// Grid points along each side of a crop.
    #[arg(long, default_value_t = DEFAULTS.points_per_side)]
    #[schema(minimum = 1, maximum = 128)]
    #[serde(deserialize_with = "crate::whole_number::whole_number")]
    pub points_per_side: usize,
    /// Points decoded together in one decoder run.
    #[arg(long, default_value_t = DEFAULTS.points_per_batch)]
    #[schema(minimum = 1, maximum = 1024)]
    #[serde(deserialize_with = "crate::whole_number::whole_number")]
    pub points_per_batch: usize,
    /// Keep masks whose predicted IoU is above this [default: the official generator's for the model's family:
    /// 0.88 for SAM, 0.8 for SAM 2]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1)]
    pub pred_iou_thresh: Option<f32>,
    /// Keep masks whose stability score is at least this.
    #[arg(long, default_value_t = DEFAULTS.stability_score_thresh)]
    #[schema(minimum = 0, maximum = 1)]
    pub stability_score_thresh: f32,
    /// The logit offset of the stability score.
    #[arg(long, default_value_t = DEFAULTS.stability_score_offset)]
    #[schema(minimum = 0, maximum = 1000)]
    pub stability_score_offset: f32,
    /// Box IoU above which the lower-scored of two masks of a crop is dropped.
    #[arg(long, default_value_t = DEFAULTS.box_nms_thresh)]
    #[schema(minimum = 0, maximum = 1)]
    pub box_nms_thresh: f64,
    /// Crop layers: layer i runs the grid again on (2^i)^2 overlapping crops (needs the pixels).
    #[arg(long, default_value_t = DEFAULTS.crop_n_layers)]
    #[schema(maximum = 3)]
    #[serde(deserialize_with = "crate::whole_number::whole_number")]
    pub crop_n_layers: usize,
    /// Box IoU above which duplicates across crops are dropped (smaller crops win).
    #[arg(long, default_value_t = DEFAULTS.crop_nms_thresh)]
    #[schema(minimum = 0, maximum = 1)]
    pub crop_nms_thresh: f64,
    /// Overlap of neighbouring crops, as a fraction of the image's shorter side (layer 1).
    #[arg(long, default_value_t = DEFAULTS.crop_overlap_ratio)]
    #[schema(minimum = 0, exclusive_maximum = 1)]
    pub crop_overlap_ratio: f64,
    /// Points per side are divided by this on each further crop layer.
    #[arg(long, default_value_t = DEFAULTS.crop_n_points_downscale_factor)]
    #[schema(minimum = 1)]
    #[serde(deserialize_with = "crate::whole_number::whole_number")]
    pub crop_n_points_downscale_factor: usize,
    /// Fill holes and remove islands smaller than this many pixels (0: off).
    #[arg(long, default_value_t = DEFAULTS.min_mask_region_area)]
    #[serde(deserialize_with = "crate::whole_number::whole_number")]
    pub min_mask_region_area: usize,
}

const DEFAULTS: AmgParams = AmgParams {
    points_per_side: 32,
    points_per_batch: 64,
    pred_iou_thresh: None,
    stability_score_thresh: 0.95,
    stability_score_offset: 1.0,
    box_nms_thresh: 0.7,
    crop_n_layers: 0,
    crop_nms_thresh: 0.7,
    crop_overlap_ratio: 512.0 / 1500.0,
    crop_n_points_downscale_factor: 1,
    min_mask_region_area: 0,
};

impl Default for AmgParams {
    fn default() -> Self {
        DEFAULTS
    }
}

impl AmgParams {
    /// Bounds that keep one request's work reasonable and every value meaningful.
    pub fn validate(&self) -> Result<(), AmgError> {
        let invalid = |message: &str| Err(AmgError::InvalidParams(message.to_string()));
        let unit = |v: f64| v.is_finite() && (0.0..=1.0).contains(&v);
        if !(1..=128).contains(&self.points_per_side) {
            return invalid("points_per_side must be between 1 and 128");
        }
        if !(1..=1024).contains(&self.points_per_batch) {
            return invalid("points_per_batch must be between 1 and 1024");
        }
        let thresholds = [self.pred_iou_thresh.unwrap_or_default(), self.stability_score_thresh].map(f64::from);
        if !thresholds.into_iter().chain([self.box_nms_thresh, self.crop_nms_thresh]).all(unit) {
            return invalid(
                "pred_iou_thresh, stability_score_thresh, box_nms_thresh and crop_nms_thresh must be in [0, 1]",
            );
        }
        if !(0.0..=1000.0).contains(&self.stability_score_offset) {
            return invalid("stability_score_offset must be in [0, 1000]");
        }
        if self.crop_n_layers > 3 {
            return invalid("crop_n_layers must be at most 3");
        }
        if !(self.crop_overlap_ratio.is_finite() && (0.0..1.0).contains(&self.crop_overlap_ratio)) {
            return invalid("crop_overlap_ratio must be in [0, 1)");
        }
        if self.crop_n_points_downscale_factor == 0 {
            return invalid("crop_n_points_downscale_factor must be at least 1");
        }
        Ok(())
    }

    /// `pred_iou_thresh`, or the default of the official generator of the model's family
    /// (SamAutomaticMaskGenerator: 0.88; SAM2AutomaticMaskGenerator: 0.8).
    pub fn pred_iou_thresh_for(&self, family: Family) -> f32 {
        self.pred_iou_thresh.unwrap_or(match family {
            // EfficientSAM has no generator of its own: SAM's.
            Family::Sam | Family::EfficientSam => 0.88,
            Family::Sam2 => 0.8,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AmgError {
    #[error("invalid parameters: {0}")]
    InvalidParams(String),
    #[error(
        "crop_n_layers > 0 re-encodes crops of the image, which needs its pixels: use a batch job or `samserve everything`"
    )]
    CropsNeedPixels,
    #[error(
        "segment everything needs the three candidate masks of each point, and the decoder of {0} gives one mask \
         per prompt (exported with return_single_mask)"
    )]
    SingleMaskDecoder(String),
    #[error("stopped before the end: the request that asked for it has ended")]
    Stopped,
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Whether `model` can segment everything: it needs the multimask candidates.
pub fn check_model(model: &SamModel) -> Result<(), AmgError> {
    if model.decoder.single_mask() {
        return Err(AmgError::SingleMaskDecoder(model.name().to_string()));
    }
    Ok(())
}

/// What the generator runs on: an image already encoded (one crop only), or the pixels (any crop layers).
pub enum AmgInput<'a> {
    Embedding(&'a Embedding),
    Image(&'a RgbImage),
}

/// One generated mask, in the original image's frame.
#[derive(Debug, Clone)]
pub struct GeneratedMask {
    /// Column-major run lengths (COCO uncompressed RLE) of the mask at the original size.
    pub counts: Vec<u64>,
    pub size: ImageSize,
    pub area: u64,
    /// `[x0, y0, x1, y1]` with the last set column and row (`batched_mask_to_box`); zeros for an empty mask.
    pub extent: [f32; 4],
    pub predicted_iou: f32,
    pub stability_score: f32,
    /// The grid point that prompted it.
    pub point: [f64; 2],
    pub crop_box: CropBox,
}

impl GeneratedMask {
    /// The official generator's `bbox`: `[x0, y0, x1 - x0, y1 - y0]` of the extent.
    pub fn bbox_xywh(&self) -> [f64; 4] {
        let [x0, y0, x1, y1] = self.extent.map(f64::from);
        [x0, y0, x1 - x0, y1 - y0]
    }

    pub fn binary(&self) -> BinaryMask {
        rle::from_counts(&self.counts, self.size.height, self.size.width).expect("counts cover the image")
    }

    pub fn rle(&self) -> rle::CocoRle {
        rle::CocoRle { size: [self.size.height, self.size.width], counts: rle::counts_to_string(&self.counts) }
    }
}

/// Runs the generator; masks in the official output order.
pub fn generate(model: &SamModel, input: AmgInput, params: &AmgParams) -> Result<Vec<GeneratedMask>, AmgError> {
    generate_unless_stopped(model, input, params, &AtomicBool::new(false))
}

/// [`generate`], which gives up with [`AmgError::Stopped`] at the next batch once `stop` is set: a request that
/// timed out must not keep the decoder busy for seconds or minutes.
pub fn generate_unless_stopped(
    model: &SamModel,
    input: AmgInput,
    params: &AmgParams,
    stop: &AtomicBool,
) -> Result<Vec<GeneratedMask>, AmgError> {
    params.validate()?;
    check_model(model)?;
    let image_size = match &input {
        AmgInput::Embedding(_) if params.crop_n_layers > 0 => return Err(AmgError::CropsNeedPixels),
        AmgInput::Embedding(embedding) => embedding.original,
        AmgInput::Image(image) => ImageSize::new(image.height() as usize, image.width() as usize),
    };
    let crops = grid::crop_boxes(image_size, params.crop_n_layers, params.crop_overlap_ratio);
    let mut masks = Vec::new();
    for &(crop, layer) in &crops {
        let embedding = match &input {
            AmgInput::Embedding(embedding) => Cow::Borrowed(*embedding),
            AmgInput::Image(image) => Cow::Owned(encode_crop(model, image, crop, image_size)?),
        };
        masks.extend(process_crop(model, &embedding, crop, layer, image_size, params, stop)?);
    }
    if crops.len() > 1 {
        // Across crops, prefer the masks of smaller crops.
        let boxes: Vec<BoxXyxy> = masks.iter().map(|m| m.extent).collect();
        let scores: Vec<f32> = masks.iter().map(|m| 1.0 / m.crop_box.area() as f32).collect();
        masks = select(masks, &nms(&boxes, &scores, params.crop_nms_thresh));
    }
    // SAM 2's generator hands min_mask_region_area to its predictor instead (see `process_batch`).
    if params.min_mask_region_area > 0 && model.encoder.family() != Family::Sam2 {
        masks = remove_small_regions_and_duplicates(
            masks,
            params.min_mask_region_area,
            params.box_nms_thresh.max(params.crop_nms_thresh),
        );
    }
    Ok(masks)
}

fn encode_crop(
    model: &SamModel,
    image: &RgbImage,
    crop: CropBox,
    image_size: ImageSize,
) -> Result<Embedding, ModelError> {
    if crop.is_whole(image_size) {
        return model.encoder.encode(image);
    }
    let (x, y, width, height) = (crop.x0 as u32, crop.y0 as u32, crop.width() as u32, crop.height() as u32);
    model.encoder.encode(&image::imageops::crop_imm(image, x, y, width, height).to_image())
}

fn select(masks: Vec<GeneratedMask>, keep: &[usize]) -> Vec<GeneratedMask> {
    let mut slots: Vec<Option<GeneratedMask>> = masks.into_iter().map(Some).collect();
    keep.iter().map(|&i| slots[i].take().expect("nms returns distinct indices")).collect()
}

/// `_process_crop`: the crop's grid in batches, then NMS within the crop.
fn process_crop(
    model: &SamModel,
    embedding: &Embedding,
    crop: CropBox,
    layer: usize,
    image_size: ImageSize,
    params: &AmgParams,
    stop: &AtomicBool,
) -> Result<Vec<GeneratedMask>, AmgError> {
    let per_side = grid::points_per_side_on_layer(params.points_per_side, params.crop_n_points_downscale_factor, layer);
    let (width, height) = (crop.width() as f64, crop.height() as f64);
    let points: Vec<[f64; 2]> = grid::point_grid(per_side).into_iter().map(|[x, y]| [x * width, y * height]).collect();
    let mut masks = Vec::new();
    for batch in points.chunks(params.points_per_batch) {
        if stop.load(Ordering::Relaxed) {
            return Err(AmgError::Stopped);
        }
        masks.extend(process_batch(model, embedding, batch, crop, image_size, params)?);
    }
    let boxes: Vec<BoxXyxy> = masks.iter().map(|m| m.extent).collect();
    let scores: Vec<f32> = masks.iter().map(|m| m.predicted_iou).collect();
    Ok(select(masks, &nms(&boxes, &scores, params.box_nms_thresh)))
}

/// `_process_batch`: decode one batch of points (in the crop's frame), filter, and keep the survivors as RLE in the
/// image's frame.
fn process_batch(
    model: &SamModel,
    embedding: &Embedding,
    points: &[[f64; 2]],
    crop: CropBox,
    image_size: ImageSize,
    params: &AmgParams,
) -> Result<Vec<GeneratedMask>, AmgError> {
    let prompts: Vec<Prompt> = points
        .iter()
        .map(|&[x, y]| Prompt { points: vec![Point { x, y, label: PointLabel::Foreground }], ..Prompt::default() })
        .collect();
    let decoded = model.decoder.decode(embedding, &prompts)?;
    let pred_iou_thresh = params.pred_iou_thresh_for(model.encoder.family());
    // Prompt-major, then token, as the official `flatten(0, 1)`: the multimask candidates.
    let candidates: Vec<(usize, usize)> = decoded
        .iter()
        .enumerate()
        .flat_map(|(p, answer)| model.decoder.answer_tokens(&answer.scores, true).map(move |t| (p, t)))
        .filter(|&(p, t)| pred_iou_thresh <= 0.0 || decoded[p].scores[t] > pred_iou_thresh)
        .collect();
    let (family, input_size) = (model.encoder.family(), model.encoder.input_size());
    let filters_stability = params.stability_score_thresh > 0.0;
    let offset = params.stability_score_offset;
    Ok(candidates
        .into_par_iter()
        .filter_map(|(p, t)| {
            let low_res = decoded[p].low_res.index_axis(Axis(0), t);
            // SAM2AutomaticMaskGenerator makes min_mask_region_area its predictor's max_hole_area and
            // max_sprinkle_area: small holes and islands go from the low-res logits, before any filter.
            let area = params.min_mask_region_area;
            let filled = (family == Family::Sam2 && area > 0).then(|| fill_holes_and_sprinkles(low_res, area, area));
            let low_res = filled.as_ref().map_or(low_res, |filled| filled.view());
            let at_input = logits_before_last_resize(family, low_res, input_size, embedding.resized);
            // For SAM the logits at the input resolution tell the stability closely enough to skip the full-size
            // work; SAM 2's low-res logits are too coarse for that.
            if filters_stability
                && family == Family::Sam
                && mask::stability_score(at_input.view(), offset)
                    < params.stability_score_thresh - STABILITY_PREFILTER_MARGIN
            {
                return None;
            }
            let (runs, stability_score) = threshold_at_original(at_input.view(), embedding.original, offset);
            if filters_stability && stability_score < params.stability_score_thresh {
                return None;
            }
            let extent = extent_in_image(runs.extent, crop);
            if is_near_crop_edge(&extent, crop, image_size) {
                return None;
            }
            let (counts, area) = runs_in_image(runs, crop, image_size);
            Some(GeneratedMask {
                area,
                counts,
                size: image_size,
                extent,
                predicted_iou: decoded[p].scores[t],
                stability_score,
                point: [points[p][0] + crop.x0 as f64, points[p][1] + crop.y0 as f64],
                crop_box: crop,
            })
        })
        .collect())
}

/// The mask's extent moved from the crop's frame to the image's (an empty mask keeps [0, 0, 0, 0] + the offset, as
/// `uncrop_boxes_xyxy` does).
fn extent_in_image(extent: Option<[usize; 4]>, crop: CropBox) -> [f32; 4] {
    let [x0, y0, x1, y1] = extent.unwrap_or([0; 4]);
    [(x0 + crop.x0) as f32, (y0 + crop.y0) as f32, (x1 + crop.x0) as f32, (y1 + crop.y0) as f32]
}

/// `is_box_near_crop_edge`: a side within 20 px of the crop's edge that is not also the image's edge.
fn is_near_crop_edge(extent: &[f32; 4], crop: CropBox, image: ImageSize) -> bool {
    let image_box = [0.0, 0.0, image.width as f32, image.height as f32];
    let crop_box = crop.xyxy();
    (0..4).any(|i| {
        (extent[i] - crop_box[i]).abs() <= CROP_EDGE_TOLERANCE && (extent[i] - image_box[i]).abs() > CROP_EDGE_TOLERANCE
    })
}

/// The crop's mask as run lengths in the image's frame, and its area. A whole-image crop's runs already are.
fn runs_in_image(runs: MaskRuns, crop: CropBox, image: ImageSize) -> (Vec<u64>, u64) {
    if crop.is_whole(image) {
        return (runs.counts, runs.area);
    }
    (rle::run_lengths(&uncrop(runs.binary(), crop, image)), runs.area)
}

/// The crop's mask placed in an image-sized mask.
fn uncrop(mask: BinaryMask, crop: CropBox, image: ImageSize) -> BinaryMask {
    let mut full = BinaryMask { width: image.width, height: image.height, data: vec![0; image.width * image.height] };
    for (y, row) in mask.data.chunks_exact(mask.width).enumerate() {
        let start = (y + crop.y0) * image.width + crop.x0;
        full.data[start..start + mask.width].copy_from_slice(row);
    }
    full
}

/// `postprocess_small_regions`: fill small holes, drop small islands, then NMS preferring untouched masks.
fn remove_small_regions_and_duplicates(
    masks: Vec<GeneratedMask>,
    min_area: usize,
    nms_thresh: f64,
) -> Vec<GeneratedMask> {
    let cleaned: Vec<(BinaryMask, bool)> = masks
        .par_iter()
        .map(|generated| {
            let mut binary = generated.binary();
            let holes = remove_small_regions(&mut binary, min_area, RegionKind::Holes);
            let islands = remove_small_regions(&mut binary, min_area, RegionKind::Islands);
            (binary, holes || islands)
        })
        .collect();
    let boxes: Vec<BoxXyxy> =
        cleaned.iter().map(|(binary, _)| mask::extent_xyxy(binary).unwrap_or([0; 4]).map(|v| v as f32)).collect();
    let scores: Vec<f32> = cleaned.iter().map(|&(_, changed)| if changed { 0.0 } else { 1.0 }).collect();
    let keep = nms(&boxes, &scores, nms_thresh);
    let mut slots: Vec<Option<(GeneratedMask, BinaryMask, bool)>> =
        masks.into_iter().zip(cleaned).map(|(m, (binary, changed))| Some((m, binary, changed))).collect();
    keep.iter()
        .map(|&i| {
            let (mut generated, binary, changed) = slots[i].take().expect("nms returns distinct indices");
            if changed {
                generated.counts = rle::run_lengths(&binary);
                generated.area = binary.area();
                generated.extent = boxes[i];
            }
            generated
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_official_ones_and_validate() {
        let params = AmgParams::default();
        assert_eq!((params.points_per_side, params.points_per_batch), (32, 64));
        assert!(params.validate().is_ok());
        let parsed: AmgParams = serde_json::from_str(r#"{"points_per_side": 8}"#).unwrap();
        assert_eq!(parsed, AmgParams { points_per_side: 8, ..AmgParams::default() });
        assert!(serde_json::from_str::<AmgParams>(r#"{"points_per_sid": 8}"#).is_err());
        assert!(AmgParams { points_per_side: 0, ..params.clone() }.validate().is_err());
        assert!(AmgParams { pred_iou_thresh: Some(f32::NAN), ..params.clone() }.validate().is_err());
        assert!(AmgParams { crop_overlap_ratio: 1.0, ..params }.validate().is_err());
    }

    #[test]
    fn crop_edge_filter_spares_image_edges() {
        let image = ImageSize::new(100, 200);
        let crop = CropBox { x0: 0, y0: 0, x1: 120, y1: 60 };
        // Touches the crop's right edge (120), not the image's: dropped.
        assert!(is_near_crop_edge(&[10.0, 10.0, 110.0, 30.0], crop, image));
        // Touches the crop's left and top edges, which are the image's too: kept.
        assert!(!is_near_crop_edge(&[0.0, 0.0, 50.0, 30.0], crop, image));
    }

    #[test]
    fn uncrop_places_the_mask() {
        let mask = BinaryMask::from_fn(2, 2, |x, y| x == y);
        let full = uncrop(mask, CropBox { x0: 1, y0: 2, x1: 3, y1: 4 }, ImageSize::new(4, 4));
        assert_eq!(full.data, vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]);
    }
}
