//! `samserve eval`: interactive-segmentation mIoU of a model on a COCO dataset, through the real pipeline.
//!
//! Simulated clicks follow the SAM paper: the first click is the point of the object farthest from its boundary;
//! each corrective click is the point of the error region (prediction XOR truth) farthest from that region's
//! boundary, foreground where the object is missed and background where the mask spills over, with the previous
//! mask's low-res logits as `mask_input`. Distances are chessboard distances (ties: the first pixel in row order).
//! Boxes are the object's tight box `[x0, y0, x1, y1]` with x1, y1 the last pixel column and row.
//! A decoder exported with a single mask output offers one mask per click, its own choice: then both one-point rows
//! measure that mask (the report says so with `masks_per_click`).

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::coco::CocoImage;
use crate::image_input::{ImageLimits, decode_image};
use crate::mask::BinaryMask;
use crate::model::{Embedding, ModelError, Point, PointLabel, Prompt, SamModel};
use crate::segment::{Mask, SmallRegions, segment_masks};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{file}: {message}")]
    Image { file: String, message: String },
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Mean IoU per prompting mode.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MeanIou {
    /// One click; the mask with the highest predicted IoU of the three.
    pub point_top: f64,
    /// One click; the best of the three masks (an oracle choice).
    pub point_best_of_3: f64,
    /// One click and two corrective clicks.
    pub points_3: f64,
    /// The object's box (`None` for a model that takes no boxes).
    #[serde(rename = "box")]
    pub bbox: Option<f64>,
    /// The box and the first click.
    pub box_point: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub model: String,
    pub images: usize,
    pub instances: usize,
    pub miou: MeanIou,
    /// Masks a first click offers: 3, or 1 for a single-mask decoder (the two one-point rows are then equal).
    pub masks_per_click: usize,
    pub seconds: f64,
}

impl EvalReport {
    /// A plain-text table.
    pub fn table(&self) -> String {
        let m = &self.miou;
        let rows = [
            ("1 point (top score)", Some(m.point_top)),
            (
                if self.masks_per_click == 1 { "1 point (best of 1)" } else { "1 point (best of 3)" },
                Some(m.point_best_of_3),
            ),
            ("3 points", Some(m.points_3)),
            ("box", m.bbox),
            ("box + point", m.box_point),
        ];
        let mut text = format!(
            "model {}: {} images, {} instances, {:.1} s\n{:<22}{:>8}\n",
            self.model, self.images, self.instances, self.seconds, "prompt", "mIoU"
        );
        for (name, value) in rows {
            let value = value.map_or_else(|| "n/a".to_string(), |v| format!("{v:.4}"));
            text.push_str(&format!("{name:<22}{value:>8}\n"));
        }
        text
    }
}

/// For every pixel of `region`, its chessboard distance to the nearest pixel outside (the border counts as
/// outside); returns the pixel with the largest, or None for an empty region.
pub fn deepest_point(region: &BinaryMask) -> Option<(usize, usize)> {
    let (w, h) = (region.width, region.height);
    let mut depth: Vec<u32> = region.data.iter().map(|&v| if v != 0 { u32::MAX } else { 0 }).collect();
    let at = |depth: &Vec<u32>, x: isize, y: isize| -> u32 {
        if x < 0 || y < 0 || x >= w as isize || y >= h as isize { 0 } else { depth[y as usize * w + x as usize] }
    };
    for y in 0..h as isize {
        for x in 0..w as isize {
            let i = y as usize * w + x as usize;
            if depth[i] != 0 {
                let nearest =
                    [(-1, -1), (0, -1), (1, -1), (-1, 0)].iter().map(|(dx, dy)| at(&depth, x + dx, y + dy)).min();
                depth[i] = nearest.unwrap_or(0).saturating_add(1);
            }
        }
    }
    for y in (0..h as isize).rev() {
        for x in (0..w as isize).rev() {
            let i = y as usize * w + x as usize;
            if depth[i] != 0 {
                let nearest = [(1, 1), (0, 1), (-1, 1), (1, 0)].iter().map(|(dx, dy)| at(&depth, x + dx, y + dy)).min();
                depth[i] = depth[i].min(nearest.unwrap_or(0).saturating_add(1));
            }
        }
    }
    let (index, &best) = depth.iter().enumerate().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))?;
    (best > 0).then_some((index % w, index / w))
}

/// `[x0, y0, x1, y1]` of the pixels set (x1, y1 inclusive).
fn tight_box(mask: &BinaryMask) -> [f64; 4] {
    let [x, y, w, h] = crate::mask::bbox_xywh(mask);
    [x, y, x + w - 1.0, y + h - 1.0]
}

fn click((x, y): (usize, usize), label: PointLabel) -> Point {
    Point { x: x as f64, y: y as f64, label }
}

fn xor(a: &BinaryMask, b: &BinaryMask) -> BinaryMask {
    BinaryMask { width: a.width, height: a.height, data: a.data.iter().zip(&b.data).map(|(p, q)| p ^ q).collect() }
}

/// One decoder call for one prompt; the masks sorted by score.
fn masks_for(
    model: &SamModel,
    embedding: &Embedding,
    prompt: Prompt,
    multimask: bool,
) -> Result<Vec<Mask>, ModelError> {
    Ok(segment_masks(model, embedding, &[prompt], multimask, SmallRegions::default())?.remove(0))
}

/// The five IoUs of one instance (the two with a box are `None` for a model that takes no boxes).
fn instance_ious(model: &SamModel, embedding: &Embedding, truth: &BinaryMask) -> Result<[Option<f64>; 5], ModelError> {
    let first = click(deepest_point(truth).expect("instances are not empty"), PointLabel::Foreground);
    let multimask = !model.decoder.single_mask();
    let one = masks_for(model, embedding, Prompt { points: vec![first], ..Prompt::default() }, multimask)?;
    let point_top = one[0].runs.binary().iou(truth);
    let point_best = one.iter().map(|m| m.runs.binary().iou(truth)).fold(0.0, f64::max);

    let mut points = vec![first];
    let mut current = one[0].clone();
    for _ in 0..2 {
        let Some(spot) = deepest_point(&xor(&current.runs.binary(), truth)) else { break };
        let label = if truth.get(spot.0, spot.1) { PointLabel::Foreground } else { PointLabel::Background };
        points.push(click(spot, label));
        let mask_input = model.decoder.takes_mask_input().then(|| current.low_res.clone());
        let prompt = Prompt { points: points.clone(), bbox: None, mask_input };
        current = masks_for(model, embedding, prompt, false)?.remove(0);
    }
    let points_3 = current.runs.binary().iou(truth);

    if !model.decoder.takes_boxes() {
        return Ok([Some(point_top), Some(point_best), Some(points_3), None, None]);
    }
    let bbox = Some(tight_box(truth));
    let boxed = masks_for(model, embedding, Prompt { bbox, ..Prompt::default() }, false)?;
    let box_point = masks_for(model, embedding, Prompt { points: vec![first], bbox, mask_input: None }, false)?;
    let (boxed, box_point) = (boxed[0].runs.binary().iou(truth), box_point[0].runs.binary().iou(truth));
    Ok([Some(point_top), Some(point_best), Some(points_3), Some(boxed), Some(box_point)])
}

/// Evaluates `model` on the dataset; images are read from `images_dir`.
pub fn evaluate(model: &SamModel, dataset: &[CocoImage], images_dir: &Path) -> Result<EvalReport, EvalError> {
    let started = Instant::now();
    let mut sums = [0.0f64; 5];
    let mut instances = 0usize;
    for image in dataset.iter().filter(|image| !image.instances.is_empty()) {
        let path = images_dir.join(&image.file_name);
        let failure = |message: String| EvalError::Image { file: path.display().to_string(), message };
        let bytes = std::fs::read(&path).map_err(|e| failure(e.to_string()))?;
        let pixels = decode_image(&bytes, &ImageLimits::default()).map_err(|e| failure(e.to_string()))?;
        if (pixels.width() as usize, pixels.height() as usize) != (image.width, image.height) {
            let (w, h) = (pixels.width(), pixels.height());
            return Err(failure(format!("it is {w}x{h}, the annotations say {}x{}", image.width, image.height)));
        }
        let embedding = model.encoder.encode(&pixels)?;
        for truth in &image.instances {
            for (sum, iou) in sums.iter_mut().zip(instance_ious(model, &embedding, truth)?) {
                *sum += iou.unwrap_or_default();
            }
            instances += 1;
        }
    }
    let mean = |i: usize| if instances == 0 { 0.0 } else { sums[i] / instances as f64 };
    Ok(EvalReport {
        model: model.name().to_string(),
        images: dataset.iter().filter(|image| !image.instances.is_empty()).count(),
        instances,
        miou: MeanIou {
            point_top: mean(0),
            point_best_of_3: mean(1),
            points_3: mean(2),
            bbox: model.decoder.takes_boxes().then(|| mean(3)),
            box_point: model.decoder.takes_boxes().then(|| mean(4)),
        },
        masks_per_click: if model.decoder.single_mask() { 1 } else { 3 },
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deepest_point_is_the_centre_and_ties_go_to_the_first() {
        let square = BinaryMask::from_fn(9, 9, |x, y| (2..=6).contains(&x) && (2..=6).contains(&y));
        assert_eq!(deepest_point(&square), Some((4, 4)));
        let bar = BinaryMask::from_fn(10, 5, |x, y| (1..=8).contains(&x) && (1..=3).contains(&y));
        assert_eq!(deepest_point(&bar), Some((2, 2)));
        assert_eq!(deepest_point(&BinaryMask::from_fn(4, 4, |_, _| false)), None);
        let edge = BinaryMask::from_fn(3, 3, |_, _| true);
        assert_eq!(deepest_point(&edge), Some((1, 1)));
    }

    #[test]
    fn tight_boxes_end_on_the_last_pixel() {
        let mask = BinaryMask::from_fn(10, 10, |x, y| (3..=5).contains(&x) && y == 7);
        assert_eq!(tight_box(&mask), [3.0, 7.0, 5.0, 7.0]);
    }
}
