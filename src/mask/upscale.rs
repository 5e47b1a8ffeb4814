//! SamPredictor.postprocess_masks in Rust: low-res logits -> bilinear to S x S -> crop to the resized image ->
//! bilinear to the original size. Both resizes are `F.interpolate(mode="bilinear", align_corners=False)`, done
//! separably; the first one only computes the part the crop keeps. SAM 2's predictor has the last resize only.

use ndarray::{Array2, ArrayView2, CowArray, Ix2};

use crate::model::{Family, ImageSize};

/// One output sample of a 1-D linear interpolation: the two source indices and the weight of the second.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tap {
    pub lower: usize,
    pub upper: usize,
    pub weight: f32,
}

/// PyTorch's source index for align_corners=False: `max((dst + 0.5) * in / out - 0.5, 0)`, for the first `keep`
/// of `output_len` outputs.
pub(super) fn taps(input_len: usize, output_len: usize, keep: usize) -> Vec<Tap> {
    let scale = input_len as f32 / output_len as f32;
    (0..keep)
        .map(|dst| {
            let source = ((dst as f32 + 0.5) * scale - 0.5).max(0.0);
            let lower = (source as usize).min(input_len - 1);
            let upper = (lower + 1).min(input_len - 1);
            Tap { lower, upper, weight: source - lower as f32 }
        })
        .collect()
}

/// Bilinear resize of `input` onto an `output_size` grid, computing only the top-left `keep` part of it.
fn resize(input: ArrayView2<f32>, output_size: ImageSize, keep: ImageSize) -> Array2<f32> {
    let (input_height, input_width) = input.dim();
    let columns = taps(input_width, output_size.width, keep.width);
    let rows = taps(input_height, output_size.height, keep.height);
    // Horizontal pass over the input rows that the kept output rows read, then the vertical pass per output row.
    let rows_read = rows.last().map_or(0, |tap| tap.upper + 1);
    let mut horizontal = Array2::<f32>::zeros((rows_read, keep.width));
    for (source, mut target) in input.outer_iter().zip(horizontal.outer_iter_mut()) {
        for (out, tap) in target.iter_mut().zip(&columns) {
            *out = source[tap.lower] * (1.0 - tap.weight) + source[tap.upper] * tap.weight;
        }
    }
    let mut output = Array2::<f32>::zeros((keep.height, keep.width));
    let horizontal = horizontal.as_slice().expect("standard layout");
    for (out_row, tap) in output.as_slice_mut().expect("standard layout").chunks_mut(keep.width).zip(&rows) {
        let lower = &horizontal[tap.lower * keep.width..][..keep.width];
        let upper = &horizontal[tap.upper * keep.width..][..keep.width];
        for ((out, &a), &b) in out_row.iter_mut().zip(lower).zip(upper) {
            *out = a * (1.0 - tap.weight) + b * tap.weight;
        }
    }
    output
}

/// First half of [`upscale_logits`]: low-res logits to the resized image at the model's input resolution (bilinear
/// to S x S, cropped to `resized`). Cheap next to the full-size step, so filters can look at it first.
pub fn upscale_to_input(low_res: ArrayView2<f32>, input_size: usize, resized: ImageSize) -> Array2<f32> {
    resize(low_res, ImageSize::new(input_size, input_size), resized)
}

/// The logits that the last resize takes to the original size (see [`input_to_original`]): for SAM, the low-res
/// logits upsampled to S x S and cropped to the resized image ([`upscale_to_input`]); for SAM 2, the low-res logits
/// themselves; for EfficientSAM, whose decoder gives full-size logits, those (the last resize is the identity).
pub fn logits_before_last_resize<'a>(
    family: Family,
    low_res: ArrayView2<'a, f32>,
    input_size: usize,
    resized: ImageSize,
) -> CowArray<'a, f32, Ix2> {
    match family {
        Family::Sam => upscale_to_input(low_res, input_size, resized).into(),
        Family::Sam2 | Family::EfficientSam => low_res.into(),
    }
}

/// Second half of [`upscale_logits`]: logits of the resized image to the original size.
pub fn input_to_original(input_logits: ArrayView2<f32>, original: ImageSize) -> Array2<f32> {
    resize(input_logits, original, original)
}

/// Low-res logits of one mask to logits at the original image size (SamPredictor.postprocess_masks).
pub fn upscale_logits(
    low_res: ArrayView2<f32>,
    input_size: usize,
    resized: ImageSize,
    original: ImageSize,
) -> Array2<f32> {
    input_to_original(upscale_to_input(low_res, input_size, resized).view(), original)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn matches_torch_bilinear_align_corners_false() {
        // torch.nn.functional.interpolate(x[None, None], size=(3, 5), mode="bilinear", align_corners=False)
        let input = array![[0.0f32, 1.0], [2.0, 4.0]];
        let output = resize(input.view(), ImageSize::new(3, 5), ImageSize::new(3, 5));
        let expected = array![[0.0f32, 0.1, 0.5, 0.9, 1.0], [1.0, 1.15, 1.75, 2.35, 2.5], [2.0, 2.2, 3.0, 3.8, 4.0]];
        for (a, b) in output.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-5, "{output:?}");
        }
    }

    #[test]
    fn keeping_a_corner_computes_the_same_values_as_the_full_resize() {
        let input = Array2::from_shape_fn((4, 4), |(y, x)| (y * 4 + x) as f32 * 0.37 - 2.0);
        let full = resize(input.view(), ImageSize::new(16, 16), ImageSize::new(16, 16));
        let corner = resize(input.view(), ImageSize::new(16, 16), ImageSize::new(11, 7));
        assert_eq!(corner, full.slice(ndarray::s![..11, ..7]));
    }

    #[test]
    fn downscaling_takes_the_two_nearest_inputs() {
        // 4 -> 2 with align_corners=False samples at 0.5 and 2.5: the means of pairs.
        let input = array![[0.0f32, 2.0, 4.0, 8.0]];
        let output = resize(input.view(), ImageSize::new(1, 2), ImageSize::new(1, 2));
        assert_eq!(output, array![[1.0f32, 6.0]]);
    }
}
