//! The official image preprocessing (segment_anything `ResizeLongestSide.apply_image` + `Sam.preprocess`):
//! resize so the longest side is S with PIL-equivalent bilinear (antialiased) resampling, normalize per channel,
//! zero-pad bottom/right to S x S, NCHW float32. SAM 2 resizes to S x S in float and normalizes alike (see
//! [`super::Family`]).

use image::RgbImage;
use ndarray::{Array3, Array4};

/// A height and width in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageSize {
    pub height: usize,
    pub width: usize,
}

impl ImageSize {
    pub fn new(height: usize, width: usize) -> Self {
        Self { height, width }
    }
}

/// ResizeLongestSide.get_preprocess_shape: scale so the longest side is `target`, each side rounded half up. A
/// side that would round to 0 (an image over 2 x `target` times longer than wide, where the official code fails)
/// is kept at 1 pixel, so that such images segment instead of breaking the resize.
pub fn resized_size(original: ImageSize, target: usize) -> ImageSize {
    let scale = target as f64 / original.height.max(original.width) as f64;
    let round = |side: usize| ((side as f64 * scale + 0.5) as usize).max(1);
    ImageSize::new(round(original.height), round(original.width))
}

/// Resizes with PIL's bilinear `Image.resize`, which torchvision's `resize` runs inside ResizeLongestSide.
pub fn resize_bilinear(image: &RgbImage, size: ImageSize) -> RgbImage {
    let (width, height) = (image.width() as usize, image.height() as usize);
    let pixels = super::resample::resize_rgb8(image.as_raw(), width, height, size.width, size.height);
    RgbImage::from_raw(size.width as u32, size.height as u32, pixels).expect("the resampler fills the new size")
}

/// Resizes without rounding, as torchvision's antialiased `Resize` does a float image: interleaved RGB in 0..255.
pub fn resize_bilinear_f32(image: &RgbImage, size: ImageSize) -> Vec<f32> {
    let (width, height) = (image.width() as usize, image.height() as usize);
    super::resample::resize_rgb_f32(image.as_raw(), width, height, size.width, size.height)
}

/// `(x - mean) / std` per channel of interleaved RGB `pixels` (`width` wide) into a zeroed [1, 3, S, S] tensor;
/// the unused bottom/right part stays zero.
pub fn normalize_and_pad<T: Copy + Into<f32>>(
    pixels: &[T],
    width: usize,
    input_size: usize,
    mean: [f32; 3],
    std: [f32; 3],
) -> Array4<f32> {
    let mut tensor = Array4::<f32>::zeros((1, 3, input_size, input_size));
    let inverse_std = std.map(|s| 1.0 / s);
    for (channel, mut plane) in tensor.outer_iter_mut().next().expect("batch of one").outer_iter_mut().enumerate() {
        for (y, source_row) in pixels.chunks_exact(width * 3).enumerate() {
            let mut row = plane.row_mut(y);
            let row = row.as_slice_mut().expect("standard layout");
            for (x, pixel) in source_row.chunks_exact(3).enumerate() {
                row[x] = (pixel[channel].into() - mean[channel]) * inverse_std[channel];
            }
        }
    }
    tensor
}

/// The resized image as [h, w, 3] float32 in 0..255: what encoders with the preprocessing in the graph take.
pub fn to_hwc_f32(resized: &RgbImage) -> Array3<f32> {
    let (width, height) = (resized.width() as usize, resized.height() as usize);
    let pixels = resized.as_raw().iter().map(|&v| f32::from(v)).collect();
    Array3::from_shape_vec((height, width, 3), pixels).expect("an RGB8 buffer holds h x w x 3 samples")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resized_size_rounds_half_up_like_the_official_transform() {
        // Values computed with segment_anything.utils.transforms.ResizeLongestSide.get_preprocess_shape.
        assert_eq!(resized_size(ImageSize::new(1500, 2250), 1024), ImageSize::new(683, 1024));
        assert_eq!(resized_size(ImageSize::new(427, 640), 1024), ImageSize::new(683, 1024));
        assert_eq!(resized_size(ImageSize::new(520, 300), 256), ImageSize::new(256, 148));
        assert_eq!(resized_size(ImageSize::new(23, 37), 256), ImageSize::new(159, 256));
        assert_eq!(resized_size(ImageSize::new(1, 3), 1024), ImageSize::new(341, 1024));
        assert_eq!(resized_size(ImageSize::new(2, 3), 1024), ImageSize::new(683, 1024));
        assert_eq!(resized_size(ImageSize::new(1024, 1024), 1024), ImageSize::new(1024, 1024));
        assert_eq!(resized_size(ImageSize::new(1, 600), 256), ImageSize::new(1, 256));
    }

    #[test]
    fn normalize_and_pad_puts_channels_first_and_zeros_the_padding() {
        let image = RgbImage::from_fn(3, 2, |x, y| image::Rgb([x as u8 * 10, y as u8 * 20, 100]));
        let tensor = normalize_and_pad(image.as_raw(), 3, 4, [1.0, 2.0, 3.0], [2.0, 4.0, 0.5]);
        assert_eq!(tensor.shape(), &[1, 3, 4, 4]);
        assert_eq!(tensor[[0, 0, 1, 2]], (20.0 - 1.0) / 2.0);
        assert_eq!(tensor[[0, 1, 1, 2]], (20.0 - 2.0) / 4.0);
        assert_eq!(tensor[[0, 2, 0, 0]], (100.0 - 3.0) / 0.5);
        assert_eq!(tensor[[0, 0, 3, 0]], 0.0);
        assert_eq!(tensor[[0, 2, 0, 3]], 0.0);
        let hwc = to_hwc_f32(&image);
        assert_eq!(hwc.shape(), &[2, 3, 3]);
        assert_eq!((hwc[[1, 2, 0]], hwc[[1, 2, 1]], hwc[[0, 0, 2]]), (20.0, 20.0, 100.0));
    }
}
