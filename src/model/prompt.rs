//! Prompts in the original image's pixel frame and their validation; [`super::Family::write_points`] moves them
//! into the decoder's frame.

use std::sync::Arc;

use ndarray::Array2;

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

    pub(super) fn code(self) -> f32 {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn point(x: f64, y: f64, label: PointLabel) -> Point {
        Point { x, y, label }
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
