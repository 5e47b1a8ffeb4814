//! Prompts in the original image's pixel frame, their validation, and the official transform into the decoder's
//! input tensors (segment_anything `ResizeLongestSide.apply_coords` + the SamOnnxModel point/label conventions).

use std::sync::Arc;

use ndarray::{Array2, ArrayViewMut1, ArrayViewMut2};

use super::preprocess::ImageSize;

/// SAM's point labels: 1 = foreground (include), 0 = background (exclude).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointLabel {
    Background,
    Foreground,
}

impl PointLabel {
    pub fn from_code(code: i64) -> Result<Self, PromptError> {
        match code {
            0 => Ok(Self::Background),
            1 => Ok(Self::Foreground),
            other => Err(PromptError::UnknownLabel(other)),
        }
    }

    fn code(self) -> f32 {
        match self {
            Self::Background => 0.0,
            Self::Foreground => 1.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    pub label: PointLabel,
}

/// One prompt: points, a box `[x0, y0, x1, y1]`, or both, optionally with the low-res logits of an earlier
/// prediction as `mask_input` (iterative refinement).
#[derive(Debug, Clone, Default)]
pub struct Prompt {
    pub points: Vec<Point>,
    pub bbox: Option<[f64; 4]>,
    pub mask_input: Option<Arc<Array2<f32>>>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PromptError {
    #[error("the prompt is empty: give at least one point or a box")]
    Empty,
    #[error("unknown point label {0} (use 1 for foreground, 0 for background)")]
    UnknownLabel(i64),
    #[error("{points} points but {labels} labels")]
    LabelCount { points: usize, labels: usize },
    #[error("more than {0} points")]
    TooManyPoints(usize),
    #[error("coordinates must be finite numbers")]
    NotFinite,
    #[error("point ({x}, {y}) is outside the {width}x{height} image")]
    PointOutside { x: f64, y: f64, width: usize, height: usize },
    #[error("box [{0}, {1}, {2}, {3}] is invalid: it needs x0 <= x1 and y0 <= y1 inside the image")]
    BadBox(f64, f64, f64, f64),
    #[error("mask_input is {got_height}x{got_width}, the model expects {height}x{width} low-res logits")]
    MaskInputShape { got_height: usize, got_width: usize, height: usize, width: usize },
}

impl Prompt {
    /// Checks the prompt against the image it targets (original pixel frame) and the decoder's low-res mask size.
    pub fn validate(&self, image: ImageSize, low_res: ImageSize) -> Result<(), PromptError> {
        if self.points.is_empty() && self.bbox.is_none() {
            return Err(PromptError::Empty);
        }
        let (width, height) = (image.width as f64, image.height as f64);
        for point in &self.points {
            if !point.x.is_finite() || !point.y.is_finite() {
                return Err(PromptError::NotFinite);
            }
            if !(0.0..=width).contains(&point.x) || !(0.0..=height).contains(&point.y) {
                return Err(PromptError::PointOutside {
                    x: point.x,
                    y: point.y,
                    width: image.width,
                    height: image.height,
                });
            }
        }
        if let Some([x0, y0, x1, y1]) = self.bbox {
            if [x0, y0, x1, y1].iter().any(|v| !v.is_finite()) {
                return Err(PromptError::NotFinite);
            }
            if !(0.0 <= x0 && x0 <= x1 && x1 <= width && 0.0 <= y0 && y0 <= y1 && y1 <= height) {
                return Err(PromptError::BadBox(x0, y0, x1, y1));
            }
        }
        if let Some(mask) = &self.mask_input {
            let (got_height, got_width) = mask.dim();
            if (got_height, got_width) != (low_res.height, low_res.width) {
                return Err(PromptError::MaskInputShape {
                    got_height,
                    got_width,
                    height: low_res.height,
                    width: low_res.width,
                });
            }
        }
        Ok(())
    }

    /// The number of point slots the decoder sees: the points, then the box corners or the padding point.
    pub fn decoder_point_count(&self) -> usize {
        self.points.len() + if self.bbox.is_some() { 2 } else { 1 }
    }

    /// Writes the official decoder inputs for this prompt: coordinates scaled into the resized frame
    /// (`apply_coords`, in f64 as numpy does), box corners as labels 2 and 3, and without a box the (0, 0) point
    /// with label -1 that SamPredictor's prompt encoder pads with.
    pub fn write_decoder_points(
        &self,
        original: ImageSize,
        resized: ImageSize,
        mut coords: ArrayViewMut2<f32>,
        mut labels: ArrayViewMut1<f32>,
    ) {
        let scale_x = resized.width as f64 / original.width as f64;
        let scale_y = resized.height as f64 / original.height as f64;
        let mut slots: Vec<(f64, f64, f32)> = self.points.iter().map(|p| (p.x, p.y, p.label.code())).collect();
        match self.bbox {
            Some([x0, y0, x1, y1]) => slots.extend([(x0, y0, 2.0), (x1, y1, 3.0)]),
            None => slots.push((0.0, 0.0, -1.0)),
        }
        for (i, (x, y, label)) in slots.into_iter().enumerate() {
            let transformed = if label < 0.0 { (0.0, 0.0) } else { (x * scale_x, y * scale_y) };
            coords[[i, 0]] = transformed.0 as f32;
            coords[[i, 1]] = transformed.1 as f32;
            labels[i] = label;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Array2};

    fn point(x: f64, y: f64, label: PointLabel) -> Point {
        Point { x, y, label }
    }

    fn decoder_inputs(prompt: &Prompt, original: ImageSize, resized: ImageSize) -> (Array2<f32>, Array1<f32>) {
        let n = prompt.decoder_point_count();
        let mut coords = Array2::zeros((n, 2));
        let mut labels = Array1::zeros(n);
        prompt.write_decoder_points(original, resized, coords.view_mut(), labels.view_mut());
        (coords, labels)
    }

    #[test]
    fn points_without_box_get_the_padding_point() {
        let prompt = Prompt {
            points: vec![point(100.0, 50.0, PointLabel::Foreground), point(10.5, 20.25, PointLabel::Background)],
            ..Prompt::default()
        };
        // 1500x2250 -> 683x1024, as ResizeLongestSide(1024).apply_coords scales x by 1024/2250 and y by 683/1500.
        let (coords, labels) = decoder_inputs(&prompt, ImageSize::new(1500, 2250), ImageSize::new(683, 1024));
        assert_eq!(labels.to_vec(), vec![1.0, 0.0, -1.0]);
        assert_eq!(coords[[0, 0]], (100.0f64 * (1024.0 / 2250.0)) as f32);
        assert_eq!(coords[[0, 1]], (50.0f64 * (683.0 / 1500.0)) as f32);
        assert_eq!(coords[[1, 0]], (10.5f64 * (1024.0 / 2250.0)) as f32);
        assert_eq!((coords[[2, 0]], coords[[2, 1]]), (0.0, 0.0));
    }

    #[test]
    fn box_becomes_two_corner_points_labelled_2_and_3_after_the_points() {
        let prompt = Prompt {
            points: vec![point(4.0, 6.0, PointLabel::Foreground)],
            bbox: Some([2.0, 3.0, 8.0, 9.0]),
            ..Prompt::default()
        };
        let (coords, labels) = decoder_inputs(&prompt, ImageSize::new(10, 20), ImageSize::new(512, 1024));
        assert_eq!(labels.to_vec(), vec![1.0, 2.0, 3.0]);
        let scaled = |v: f64| (v * 51.2) as f32;
        assert_eq!(coords.row(1).to_vec(), vec![scaled(2.0), scaled(3.0)]);
        assert_eq!(coords.row(2).to_vec(), vec![scaled(8.0), scaled(9.0)]);
    }

    #[test]
    fn validation_rejects_bad_prompts_with_specific_errors() {
        let image = ImageSize::new(100, 200);
        let low_res = ImageSize::new(64, 64);
        let check = |prompt: Prompt| prompt.validate(image, low_res);
        assert_eq!(check(Prompt::default()), Err(PromptError::Empty));
        let outside = Prompt { points: vec![point(201.0, 5.0, PointLabel::Foreground)], ..Prompt::default() };
        assert!(matches!(check(outside), Err(PromptError::PointOutside { .. })));
        let nan = Prompt { points: vec![point(f64::NAN, 5.0, PointLabel::Foreground)], ..Prompt::default() };
        assert_eq!(check(nan), Err(PromptError::NotFinite));
        let flipped = Prompt { bbox: Some([50.0, 10.0, 40.0, 20.0]), ..Prompt::default() };
        assert!(matches!(check(flipped), Err(PromptError::BadBox(..))));
        let wrong_mask = Prompt {
            bbox: Some([0.0, 0.0, 200.0, 100.0]),
            mask_input: Some(Arc::new(Array2::zeros((256, 256)))),
            ..Prompt::default()
        };
        assert!(matches!(check(wrong_mask), Err(PromptError::MaskInputShape { .. })));
        let edge = Prompt { points: vec![point(200.0, 100.0, PointLabel::Background)], ..Prompt::default() };
        assert_eq!(check(edge), Ok(()));
        assert_eq!(PointLabel::from_code(2), Err(PromptError::UnknownLabel(2)));
    }
}
