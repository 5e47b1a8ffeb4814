//! Where the generator looks: point grids and crop boxes, as segment_anything.utils.amg builds them.

use crate::model::ImageSize;

/// A crop of the image, `[x0, y0, x1, y1]` in pixels (x1, y1 exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    pub x0: usize,
    pub y0: usize,
    pub x1: usize,
    pub y1: usize,
}

impl CropBox {
    pub fn width(&self) -> usize {
        self.x1 - self.x0
    }

    pub fn height(&self) -> usize {
        self.y1 - self.y0
    }

    pub fn area(&self) -> usize {
        self.width() * self.height()
    }

    pub fn size(&self) -> ImageSize {
        ImageSize::new(self.height(), self.width())
    }

    pub fn xyxy(&self) -> [f32; 4] {
        [self.x0 as f32, self.y0 as f32, self.x1 as f32, self.y1 as f32]
    }

    pub fn is_whole(&self, image: ImageSize) -> bool {
        self.x0 == 0 && self.y0 == 0 && self.x1 == image.width && self.y1 == image.height
    }
}

/// `build_point_grid`: n x n points in [0, 1]^2, cell centres, row by row (x varies fastest).
pub fn point_grid(points_per_side: usize) -> Vec<[f64; 2]> {
    let n = points_per_side;
    let offset = 1.0 / (2 * n) as f64;
    // np.linspace(offset, 1 - offset, n)
    let side: Vec<f64> = (0..n)
        .map(|i| if n == 1 { offset } else { offset + (1.0 - 2.0 * offset) * i as f64 / (n - 1) as f64 })
        .collect();
    side.iter().flat_map(|&y| side.iter().map(move |&x| [x, y])).collect()
}

/// Points per side on crop layer `layer` (`build_all_layer_point_grids`).
pub fn points_per_side_on_layer(points_per_side: usize, downscale_factor: usize, layer: usize) -> usize {
    (points_per_side as f64 / (downscale_factor as f64).powi(layer as i32)) as usize
}

/// `generate_crop_boxes`: the whole image (layer 0), then for layer i >= 1 a (2^i x 2^i) grid of overlapping crops.
pub fn crop_boxes(image: ImageSize, layers: usize, overlap_ratio: f64) -> Vec<(CropBox, usize)> {
    let (width, height) = (image.width, image.height);
    let mut boxes = vec![(CropBox { x0: 0, y0: 0, x1: width, y1: height }, 0)];
    let short_side = width.min(height) as f64;
    let crop_len = |len: usize, n: usize, overlap: usize| ((overlap * (n - 1) + len) as f64 / n as f64).ceil() as usize;
    for layer in 0..layers {
        let per_side = 1usize << (layer + 1);
        let overlap = (overlap_ratio * short_side * (2.0 / per_side as f64)) as usize;
        let (crop_width, crop_height) = (crop_len(width, per_side, overlap), crop_len(height, per_side, overlap));
        // itertools.product(x0s, y0s): x outer, y inner.
        for i in 0..per_side {
            for j in 0..per_side {
                let (x0, y0) = ((crop_width - overlap) * i, (crop_height - overlap) * j);
                let crop = CropBox { x0, y0, x1: (x0 + crop_width).min(width), y1: (y0 + crop_height).min(height) };
                boxes.push((crop, layer + 1));
            }
        }
    }
    boxes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_is_cell_centres_row_by_row() {
        assert_eq!(point_grid(2), vec![[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]);
        assert_eq!(point_grid(1), vec![[0.5, 0.5]]);
        assert_eq!(point_grid(32).len(), 1024);
    }

    #[test]
    fn crop_boxes_match_segment_anything() {
        // generate_crop_boxes((427, 640), 1, 512 / 1500) in segment_anything.utils.amg
        let boxes = crop_boxes(ImageSize::new(427, 640), 1, 512.0 / 1500.0);
        let expected = [
            ([0, 0, 640, 427], 0),
            ([0, 0, 393, 286], 1),
            ([0, 141, 393, 427], 1),
            ([248, 0, 640, 286], 1),
            ([248, 141, 640, 427], 1),
        ];
        let got: Vec<([usize; 4], usize)> = boxes.iter().map(|(c, l)| ([c.x0, c.y0, c.x1, c.y1], *l)).collect();
        assert_eq!(got, expected);
    }
}
