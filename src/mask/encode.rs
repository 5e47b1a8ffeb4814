//! Small encodings of a binary mask: COCO bbox and an 8-bit PNG.

use image::{GrayImage, ImageEncoder, codecs::png::PngEncoder};

use super::BinaryMask;

/// The inclusive extent `[x0, y0, x1, y1]` of the pixels set (`x1`, `y1` are the last set column and row), as
/// segment_anything `batched_mask_to_box` computes it; `None` for an empty mask.
pub fn extent_xyxy(mask: &BinaryMask) -> Option<[usize; 4]> {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for (y, row) in mask.data.chunks_exact(mask.width.max(1)).enumerate() {
        if let (Some(first), Some(last)) = (row.iter().position(|&v| v != 0), row.iter().rposition(|&v| v != 0)) {
            x0 = x0.min(first);
            x1 = x1.max(last);
            y0 = y0.min(y);
            y1 = y;
        }
    }
    (x0 != usize::MAX).then_some([x0, y0, x1, y1])
}

/// `[x, y, w, h]` of the pixels set, w and h counting pixels (pycocotools `toBbox`); all zeros for an empty mask.
pub fn bbox_xywh(mask: &BinaryMask) -> [f64; 4] {
    match extent_xyxy(mask) {
        Some([x0, y0, x1, y1]) => [x0 as f64, y0 as f64, (x1 - x0 + 1) as f64, (y1 - y0 + 1) as f64],
        None => [0.0; 4],
    }
}

/// The mask as a single-channel 8-bit PNG, 255 = mask.
pub fn png_bytes(mask: &BinaryMask) -> Vec<u8> {
    let pixels: Vec<u8> = mask.data.iter().map(|&v| v * 255).collect();
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(&pixels, mask.width as u32, mask.height as u32, image::ExtendedColorType::L8)
        .expect("writing a PNG to memory cannot fail");
    png
}

/// The mask as a gray image (0 / 255), for image tooling.
pub fn to_gray_image(mask: &BinaryMask) -> GrayImage {
    GrayImage::from_fn(mask.width as u32, mask.height as u32, |x, y| {
        image::Luma([mask.get(x as usize, y as usize) as u8 * 255])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bbox_counts_pixels_like_pycocotools() {
        let mask = BinaryMask::from_fn(10, 8, |x, y| (2..=5).contains(&x) && (3..=3).contains(&y));
        assert_eq!(bbox_xywh(&mask), [2.0, 3.0, 4.0, 1.0]);
        assert_eq!(bbox_xywh(&BinaryMask::from_fn(4, 4, |_, _| false)), [0.0; 4]);
    }

    #[test]
    fn png_decodes_back_to_the_mask() {
        let mask = BinaryMask::from_fn(13, 7, |x, y| (x * y) % 3 == 0);
        let decoded = image::load_from_memory(&png_bytes(&mask)).unwrap();
        assert_eq!(decoded.color(), image::ColorType::L8);
        assert_eq!(decoded.to_luma8(), to_gray_image(&mask));
    }
}
