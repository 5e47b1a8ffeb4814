//! Generated masks in the API's JSON shape, with the encodings a caller asked for.

use std::borrow::Cow;

use rayon::prelude::*;
use serde::Serialize;

use super::GeneratedMask;
use crate::segment::{Encodings, OutputFormat};

/// One mask of `everything`: the fields of SamAutomaticMaskGenerator's records.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EverythingMask {
    /// Predicted IoU (the official `predicted_iou`).
    pub score: f32,
    pub stability_score: f32,
    pub area: u64,
    /// `[x, y, w, h]` as the official generator gives it: w and h are last minus first column and row.
    pub bbox: [f64; 4],
    /// `[[x, y]]`: the grid point that prompted the mask.
    pub point_coords: Vec<[f64; 2]>,
    /// `[x, y, w, h]` of the crop the mask came from.
    pub crop_box: [f64; 4],
    #[serde(flatten)]
    pub encodings: Encodings,
}

/// Encodes every mask (in parallel); `logits` has no meaning here and is ignored.
pub fn encode_all(masks: &[GeneratedMask], outputs: &[OutputFormat]) -> Vec<EverythingMask> {
    masks.par_iter().map(|generated| encode(generated, outputs)).collect()
}

fn encode(generated: &GeneratedMask, outputs: &[OutputFormat]) -> EverythingMask {
    let crop = generated.crop_box;
    EverythingMask {
        score: generated.predicted_iou,
        stability_score: generated.stability_score,
        area: generated.area,
        bbox: generated.bbox_xywh(),
        point_coords: vec![generated.point],
        crop_box: [crop.x0 as f64, crop.y0 as f64, crop.width() as f64, crop.height() as f64],
        encodings: Encodings::new(outputs, || generated.rle(), || Cow::Owned(generated.binary())),
    }
}
