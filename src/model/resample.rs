//! PIL's `Image.resize(size, BILINEAR)` for RGB8, reproduced to the bit.
//!
//! The official ResizeLongestSide resizes a PIL image, and SAM's masks react to single-level pixel differences
//! near a mask's edge, so this follows Pillow's `ImagingResample` exactly: a triangle filter whose support widens
//! with the downscale factor, coefficients normalized per output pixel then fixed to 22 fractional bits, a
//! horizontal pass rounded to 8 bits, then a vertical pass. Rows are independent, so both passes run on rayon. The
//! same weights without the rounding give torchvision's antialiased resize of a float image.

use rayon::prelude::*;

/// Pillow's PRECISION_BITS for 8-bit images: 32 - 8 - 2.
const PRECISION_BITS: u32 = 22;

/// For each output index: the first input index and the normalized weights of the inputs from there.
struct Coefficients<W> {
    first: Vec<usize>,
    weights: Vec<Vec<W>>,
}

/// Pillow's `precompute_coeffs` with the bilinear filter (torch's antialiased bilinear computes the same weights):
/// a triangle whose support widens with the downscale factor, normalized per output pixel.
fn coefficients(input_len: usize, output_len: usize) -> Coefficients<f64> {
    let scale = input_len as f64 / output_len as f64;
    let filter_scale = scale.max(1.0);
    let support = filter_scale; // the triangle filter's support is 1.0
    let mut first = Vec::with_capacity(output_len);
    let mut weights = Vec::with_capacity(output_len);
    for out in 0..output_len {
        let center = (out as f64 + 0.5) * scale;
        let min = ((center - support + 0.5) as i64).max(0) as usize;
        let max = ((center + support + 0.5) as i64).min(input_len as i64) as usize;
        let raw: Vec<f64> =
            (min..max).map(|x| (1.0 - ((x as f64 - center + 0.5) / filter_scale).abs()).max(0.0)).collect();
        let total: f64 = raw.iter().sum();
        first.push(min);
        weights.push(raw.iter().map(|w| if total != 0.0 { w / total } else { *w }).collect());
    }
    Coefficients { first, weights }
}

/// Pillow's `normalize_coeffs_8bpc`: the weights in fixed point with [`PRECISION_BITS`] fractional bits.
fn fixed_point(coefficients: Coefficients<f64>) -> Coefficients<i32> {
    let fix = |w: f64| {
        let w = w * f64::from(1u32 << PRECISION_BITS);
        (if w < 0.0 { w - 0.5 } else { w + 0.5 }) as i32
    };
    let weights = coefficients.weights.into_iter().map(|ws| ws.into_iter().map(fix).collect()).collect();
    Coefficients { first: coefficients.first, weights }
}

/// Pillow's `clip8`: drop the fractional bits (the 0.5 was added up front) and clamp.
fn clip8(accumulator: i32) -> u8 {
    (accumulator >> PRECISION_BITS).clamp(0, 255) as u8
}

const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Resizes interleaved RGB8 `input` (`width` x `height`) to `new_width` x `new_height`.
pub fn resize_rgb8(input: &[u8], width: usize, height: usize, new_width: usize, new_height: usize) -> Vec<u8> {
    let horizontal = if new_width == width {
        input.to_vec()
    } else {
        let columns = fixed_point(coefficients(width, new_width));
        let mut out = vec![0u8; new_width * 3 * height];
        out.par_chunks_mut(new_width * 3).zip(input.par_chunks(width * 3)).for_each(|(target, source)| {
            for (x, pixel) in target.chunks_exact_mut(3).enumerate() {
                let start = columns.first[x];
                let mut sums = [HALF; 3];
                for (i, &w) in columns.weights[x].iter().enumerate() {
                    let p = &source[(start + i) * 3..][..3];
                    for c in 0..3 {
                        sums[c] += i32::from(p[c]) * w;
                    }
                }
                for c in 0..3 {
                    pixel[c] = clip8(sums[c]);
                }
            }
        });
        out
    };
    if new_height == height {
        return horizontal;
    }
    let rows = fixed_point(coefficients(height, new_height));
    let stride = new_width * 3;
    let mut out = vec![0u8; stride * new_height];
    out.par_chunks_mut(stride).enumerate().for_each(|(y, target)| {
        let start = rows.first[y];
        let mut sums = vec![HALF; stride];
        for (i, &w) in rows.weights[y].iter().enumerate() {
            let source = &horizontal[(start + i) * stride..][..stride];
            for (sum, &v) in sums.iter_mut().zip(source) {
                *sum += i32::from(v) * w;
            }
        }
        for (value, sum) in target.iter_mut().zip(sums) {
            *value = clip8(sum);
        }
    });
    out
}

/// Resizes interleaved RGB8 `input` (`width` x `height`) to `new_width` x `new_height` without rounding, in
/// 0..255: torchvision's antialiased bilinear `Resize` of a float image (SAM 2's transform), both passes in f32.
pub fn resize_rgb_f32(input: &[u8], width: usize, height: usize, new_width: usize, new_height: usize) -> Vec<f32> {
    let columns = coefficients(width, new_width);
    let mut horizontal = vec![0f32; new_width * 3 * height];
    horizontal.par_chunks_mut(new_width * 3).zip(input.par_chunks(width * 3)).for_each(|(target, source)| {
        for (x, pixel) in target.chunks_exact_mut(3).enumerate() {
            let start = columns.first[x];
            for (i, &w) in columns.weights[x].iter().enumerate() {
                let p = &source[(start + i) * 3..][..3];
                for c in 0..3 {
                    pixel[c] += f32::from(p[c]) * w as f32;
                }
            }
        }
    });
    let rows = coefficients(height, new_height);
    let stride = new_width * 3;
    let mut out = vec![0f32; stride * new_height];
    out.par_chunks_mut(stride).enumerate().for_each(|(y, target)| {
        let start = rows.first[y];
        for (i, &w) in rows.weights[y].iter().enumerate() {
            let source = &horizontal[(start + i) * stride..][..stride];
            for (value, &v) in target.iter_mut().zip(source) {
                *value += v * w as f32;
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_the_identity() {
        let input: Vec<u8> = (0..4 * 3 * 3).map(|v| (v * 7) as u8).collect();
        assert_eq!(resize_rgb8(&input, 4, 3, 4, 3), input);
    }

    #[test]
    fn matches_pillow_on_a_small_gradient() {
        // PIL: Image.fromarray(a).resize((3, 2), Image.BILINEAR) for a = the 5x4 image below.
        let input: Vec<u8> = (0..4usize)
            .flat_map(|y| (0..5usize).flat_map(move |x| [(x * 50) as u8, (y * 80) as u8, ((x * y * 17) % 256) as u8]))
            .collect();
        let output = resize_rgb8(&input, 5, 4, 3, 2);
        let expected: [u8; 18] = [21, 57, 5, 100, 57, 24, 179, 57, 43, 21, 183, 17, 100, 183, 78, 179, 183, 139];
        assert_eq!(output, expected);
    }

    #[test]
    fn float_resize_is_the_unrounded_8_bit_one() {
        let input: Vec<u8> = (0..7usize * 6 * 3).map(|v| ((v * 37) % 256) as u8).collect();
        for (w, h) in [(3, 2), (7, 6), (12, 9), (5, 11)] {
            let rounded = resize_rgb8(&input, 7, 6, w, h);
            let float = resize_rgb_f32(&input, 7, 6, w, h);
            // Only the 8-bit path rounds (twice): within one level of each other.
            for (&r, &f) in rounded.iter().zip(&float) {
                assert!((f32::from(r) - f).abs() <= 1.0, "{w}x{h}: {r} vs {f}");
            }
        }
        let same: Vec<f32> = input.iter().map(|&v| f32::from(v)).collect();
        assert_eq!(resize_rgb_f32(&input, 7, 6, 7, 6), same);
    }
}
