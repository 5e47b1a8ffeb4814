//! Pure mask math: upsampling logits to the image, thresholds and scores, and the output encodings.

mod encode;
pub mod full_size;
pub mod nms;
pub mod polygon;
pub mod regions;
pub mod rle;
pub mod upscale;

pub use encode::{bbox_xywh, extent_xyxy, png_bytes, to_gray_image};

/// A binary mask, row-major, one byte per pixel (0 or 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryMask {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl BinaryMask {
    pub fn from_fn(width: usize, height: usize, f: impl Fn(usize, usize) -> bool) -> Self {
        let data = (0..height).flat_map(|y| (0..width).map(move |x| (x, y))).map(|(x, y)| f(x, y) as u8).collect();
        Self { width, height, data }
    }

    pub fn get(&self, x: usize, y: usize) -> bool {
        self.data[y * self.width + x] != 0
    }

    pub fn area(&self) -> u64 {
        self.data.iter().map(|&v| u64::from(v)).sum()
    }

    /// Intersection over union with another mask of the same size (1.0 when both are empty).
    pub fn iou(&self, other: &BinaryMask) -> f64 {
        let (mut intersection, mut union) = (0u64, 0u64);
        for (&a, &b) in self.data.iter().zip(&other.data) {
            intersection += u64::from(a & b);
            union += u64::from(a | b);
        }
        if union == 0 { 1.0 } else { intersection as f64 / union as f64 }
    }
}

/// SAM's mask threshold on logits (`Sam.mask_threshold`).
pub const MASK_THRESHOLD: f32 = 0.0;

fn standard_slice(logits: &ndarray::Array2<f32>) -> &[f32] {
    logits.as_slice().expect("logits are built in standard layout")
}

/// `logits > 0.0`, as SamPredictor thresholds its upsampled logits.
pub fn threshold(logits: &ndarray::Array2<f32>) -> BinaryMask {
    let (height, width) = logits.dim();
    let data = standard_slice(logits).iter().map(|&v| (v > MASK_THRESHOLD) as u8).collect();
    BinaryMask { width, height, data }
}

/// segment_anything `calculate_stability_score`: IoU of the masks thresholded at `threshold + offset` and
/// `threshold - offset`. Where both are empty the official code divides 0 by 0 (NaN, which fails every
/// `> thresh` filter); 0.0 keeps that outcome and stays valid JSON.
pub fn stability_score(logits: ndarray::ArrayView2<f32>, offset: f32) -> f32 {
    let (high, low) = (MASK_THRESHOLD + offset, MASK_THRESHOLD - offset);
    let (mut intersections, mut unions) = (0u64, 0u64);
    // u32 counters per chunk vectorize well; chunks keep them from overflowing.
    for chunk in logits.to_slice().expect("logits are built in standard layout").chunks(1 << 30) {
        let (mut above_high, mut above_low) = (0u32, 0u32);
        for &v in chunk {
            above_high += u32::from(v > high);
            above_low += u32::from(v > low);
        }
        intersections += u64::from(above_high);
        unions += u64::from(above_low);
    }
    if unions == 0 { 0.0 } else { intersections as f32 / unions as f32 }
}
