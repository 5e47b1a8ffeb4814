//! What differs between model families in the frames around the networks: how an image becomes the encoder's
//! pixels, how prompt coordinates reach the decoder, and how low-res logits come back to the image. The networks'
//! tensors (names, shapes, how many) are read from the graphs; these rules are the official predictors'.

use image::RgbImage;
use ndarray::{ArrayViewMut1, ArrayViewMut2};

use super::preprocess::{ImageSize, resize_bilinear, resize_bilinear_f32, resized_size};
use super::prompt::Prompt;

/// Inputs that only SAM 2 mask decoders take (the first of the high-resolution features): samexporter's name,
/// transformers'.
const SAM2_DECODER_INPUTS: [&str; 2] = ["high_res_feats_0", "image_embeddings.0"];
/// EfficientSAM's decoder input of points (in original pixels).
const EFFICIENT_SAM_DECODER_INPUT: &str = "batched_point_coords";

/// The encoder input of transformers' exports, whose processors resize the 8-bit image (SAM 2's too).
const TRANSFORMERS_ENCODER_INPUT: &str = "pixel_values";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Segment Anything (ViT-B/L/H) and the models that keep its predictor: MobileSAM, EdgeSAM, SAM-HQ, SlimSAM.
    Sam,
    /// SAM 2 and SAM 2.1 (`SAM2ImagePredictor`).
    Sam2,
    /// EfficientSAM as its `export_to_onnx.py` exports it: the graphs take the image and the prompts at the
    /// original size and give full-size masks (`EfficientSam.forward`).
    EfficientSam,
}

/// The encoder's pixels for one image, RGB interleaved, before normalization.
pub enum ResizedPixels {
    /// Rounded to 8 bits, as PIL resizes a uint8 image (SAM's ResizeLongestSide).
    Rgb8(RgbImage),
    /// In 0..255 without rounding, as torchvision resizes a float tensor (SAM 2's transforms).
    Float { pixels: Vec<f32>, size: ImageSize },
}

impl Family {
    /// The name `model.toml` and `GET /v1/models` use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sam => "sam",
            Self::Sam2 => "sam2",
            Self::EfficientSam => "efficientsam",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Sam, Self::Sam2, Self::EfficientSam].into_iter().find(|family| family.name() == name)
    }

    /// The family a decoder graph belongs to, from its input names.
    pub fn of_decoder<'a>(input_names: impl Iterator<Item = &'a str>) -> Self {
        let names: Vec<&str> = input_names.collect();
        if names.iter().any(|name| SAM2_DECODER_INPUTS.contains(name)) {
            Self::Sam2
        } else if names.contains(&EFFICIENT_SAM_DECODER_INPUT) {
            Self::EfficientSam
        } else {
            Self::Sam
        }
    }

    /// The image size the encoder is given, within its S x S input: SAM keeps the aspect ratio (longest side S,
    /// padded bottom/right), SAM 2 stretches the image to the whole square, EfficientSAM takes the original (its
    /// graph resizes).
    pub fn resized_size(self, original: ImageSize, input_size: usize) -> ImageSize {
        match self {
            Self::Sam => resized_size(original, input_size),
            Self::Sam2 => ImageSize::new(input_size, input_size),
            Self::EfficientSam => original,
        }
    }

    /// The image resized as the official predictor of an encoder taking `encoder_input` does (antialiased bilinear
    /// either way): SAM2ImagePredictor resizes the float image; SamPredictor and transformers' processors (for
    /// SAM 2 too) the 8-bit one.
    pub fn resize(self, image: &RgbImage, size: ImageSize, encoder_input: &str) -> ResizedPixels {
        if self == Self::Sam2 && encoder_input != TRANSFORMERS_ENCODER_INPUT {
            ResizedPixels::Float { pixels: resize_bilinear_f32(image, size), size }
        } else {
            ResizedPixels::Rgb8(resize_bilinear(image, size))
        }
    }

    /// Writes the prompt's points, and its box corners (labelled 2 and 3) unless the decoder takes the box apart
    /// (`corners: false`), as the official predictor prepares them, coordinates moved into the resized frame, into
    /// the first rows of `coords` and `labels`. (The padding point is the decoder layout's business: see
    /// `PointInputs::caller_pads`.)
    ///
    /// SAM: the points, then the box corners; coordinates scaled by resized / original in f64
    /// (`ResizeLongestSide.apply_coords`, numpy). SAM 2: the box corners first, then the points
    /// (`SAM2ImagePredictor._predict` concatenates them so); coordinates divided by the original size and
    /// multiplied by S in f32 (`SAM2Transforms.transform_coords`, torch). EfficientSAM: the points, then the box
    /// corners, in original pixels (its graph scales them).
    pub fn write_points(
        self,
        prompt: &Prompt,
        corners: bool,
        original: ImageSize,
        resized: ImageSize,
        mut coords: ArrayViewMut2<f32>,
        mut labels: ArrayViewMut1<f32>,
    ) {
        let points = prompt.points.iter().map(|p| (p.x, p.y, p.label.code()));
        let bbox = prompt.bbox.filter(|_| corners);
        let corners = bbox.into_iter().flat_map(|[x0, y0, x1, y1]| [(x0, y0, 2.0), (x1, y1, 3.0)]);
        let slots: Vec<(f32, f32, f32)> = match self {
            Self::EfficientSam => points.chain(corners).map(|(x, y, label)| (x as f32, y as f32, label)).collect(),
            Self::Sam => {
                let scale_x = resized.width as f64 / original.width as f64;
                let scale_y = resized.height as f64 / original.height as f64;
                points.chain(corners).map(|(x, y, label)| ((x * scale_x) as f32, (y * scale_y) as f32, label)).collect()
            }
            Self::Sam2 => {
                let scale = |v: f64, side: usize, size: usize| v as f32 / side as f32 * size as f32;
                corners
                    .chain(points)
                    .map(|(x, y, label)| {
                        (scale(x, original.width, resized.width), scale(y, original.height, resized.height), label)
                    })
                    .collect()
            }
        };
        for (i, (x, y, label)) in slots.into_iter().enumerate() {
            coords[[i, 0]] = x;
            coords[[i, 1]] = y;
            labels[i] = label;
        }
    }

    /// The prompt's box `[x0, y0, x1, y1]` moved into the resized frame as [`Self::write_points`] moves its
    /// corners, for decoders that take boxes apart.
    pub fn resized_box(self, prompt: &Prompt, original: ImageSize, resized: ImageSize) -> Option<[f32; 4]> {
        let mut coords = ndarray::Array2::zeros((2, 2));
        let mut labels = ndarray::Array1::zeros(2);
        let corners_only = Prompt { points: Vec::new(), bbox: prompt.bbox, mask_input: None };
        prompt.bbox?;
        self.write_points(&corners_only, true, original, resized, coords.view_mut(), labels.view_mut());
        Some([coords[[0, 0]], coords[[0, 1]], coords[[1, 0]], coords[[1, 1]]])
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{Array1, Array2};

    use super::*;
    use crate::model::{Point, PointLabel};

    fn point(x: f64, y: f64, label: PointLabel) -> Point {
        Point { x, y, label }
    }

    fn written(family: Family, prompt: &Prompt, original: ImageSize, resized: ImageSize) -> (Array2<f32>, Array1<f32>) {
        let n = prompt.points.len() + if prompt.bbox.is_some() { 2 } else { 0 };
        let mut coords = Array2::zeros((n, 2));
        let mut labels = Array1::zeros(n);
        family.write_points(prompt, true, original, resized, coords.view_mut(), labels.view_mut());
        (coords, labels)
    }

    #[test]
    fn sam_scales_points_by_the_resized_over_the_original_size_in_f64() {
        let prompt = Prompt {
            points: vec![point(100.0, 50.0, PointLabel::Foreground), point(10.5, 20.25, PointLabel::Background)],
            ..Prompt::default()
        };
        // 1500x2250 -> 683x1024, as ResizeLongestSide(1024).apply_coords scales x by 1024/2250 and y by 683/1500.
        let (coords, labels) = written(Family::Sam, &prompt, ImageSize::new(1500, 2250), ImageSize::new(683, 1024));
        assert_eq!(labels.to_vec(), vec![1.0, 0.0]);
        assert_eq!(coords[[0, 0]], (100.0f64 * (1024.0 / 2250.0)) as f32);
        assert_eq!(coords[[0, 1]], (50.0f64 * (683.0 / 1500.0)) as f32);
        assert_eq!(coords[[1, 0]], (10.5f64 * (1024.0 / 2250.0)) as f32);
    }

    #[test]
    fn sam_box_becomes_two_corner_points_labelled_2_and_3_after_the_points() {
        let prompt = Prompt {
            points: vec![point(4.0, 6.0, PointLabel::Foreground)],
            bbox: Some([2.0, 3.0, 8.0, 9.0]),
            ..Prompt::default()
        };
        let (coords, labels) = written(Family::Sam, &prompt, ImageSize::new(10, 20), ImageSize::new(512, 1024));
        assert_eq!(labels.to_vec(), vec![1.0, 2.0, 3.0]);
        let scaled = |v: f64| (v * 51.2) as f32;
        assert_eq!(coords.row(1).to_vec(), vec![scaled(2.0), scaled(3.0)]);
        assert_eq!(coords.row(2).to_vec(), vec![scaled(8.0), scaled(9.0)]);
    }

    #[test]
    fn sam2_puts_the_box_first_and_scales_to_the_square_in_f32() {
        let prompt = Prompt {
            points: vec![point(4.0, 6.0, PointLabel::Background)],
            bbox: Some([2.0, 3.0, 8.0, 9.0]),
            ..Prompt::default()
        };
        let (original, square) = (ImageSize::new(10, 20), ImageSize::new(512, 512));
        assert_eq!(Family::Sam2.resized_size(original, 512), square);
        let (coords, labels) = written(Family::Sam2, &prompt, original, square);
        assert_eq!(labels.to_vec(), vec![2.0, 3.0, 0.0]);
        // torch: coords / [w, h] * 512 in float32.
        let (x, y) = (|v: f32| v / 20.0 * 512.0, |v: f32| v / 10.0 * 512.0);
        assert_eq!(coords.row(0).to_vec(), vec![x(2.0), y(3.0)]);
        assert_eq!(coords.row(2).to_vec(), vec![x(4.0), y(6.0)]);
    }
}
