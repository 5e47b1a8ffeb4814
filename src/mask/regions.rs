//! Small holes and islands (segment_anything `remove_small_regions`, and SAM 2's hole and sprinkle filling of
//! low-res logits), on 8-connected components as OpenCV's `connectedComponentsWithStats` and SAM 2's
//! `get_connected_components` find them.

use ndarray::{Array2, ArrayView2};

use super::{BinaryMask, MASK_THRESHOLD};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionKind {
    /// Background components enclosed by or beside the mask.
    Holes,
    /// Components of the mask itself.
    Islands,
}

/// 8-connected components of the `members` of a row-major `width`-wide grid: a label per pixel (0 for the other
/// pixels, components numbered from 1 in raster order of their first pixel) and the size of each component
/// (index = label - 1).
fn components(members: &[bool], width: usize) -> (Vec<u32>, Vec<usize>) {
    let height = members.len() / width.max(1);
    let mut labels = vec![0u32; members.len()];
    let mut sizes = Vec::new();
    let mut stack = Vec::new();
    for start in 0..members.len() {
        if !members[start] || labels[start] != 0 {
            continue;
        }
        sizes.push(0usize);
        let label = sizes.len() as u32;
        labels[start] = label;
        stack.push(start);
        while let Some(index) = stack.pop() {
            sizes[label as usize - 1] += 1;
            let (x, y) = (index % width, index / width);
            for ny in y.saturating_sub(1)..=(y + 1).min(height - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(width - 1) {
                    let neighbour = ny * width + nx;
                    if members[neighbour] && labels[neighbour] == 0 {
                        labels[neighbour] = label;
                        stack.push(neighbour);
                    }
                }
            }
        }
    }
    (labels, sizes)
}

/// Fills holes or removes islands smaller than `min_area` pixels; returns whether any was found. When every island
/// is small, the largest one stays (as in segment_anything).
pub fn remove_small_regions(mask: &mut BinaryMask, min_area: usize, kind: RegionKind) -> bool {
    let value = match kind {
        RegionKind::Holes => 0,
        RegionKind::Islands => 1,
    };
    let members: Vec<bool> = mask.data.iter().map(|&v| v == value).collect();
    let (labels, sizes) = components(&members, mask.width);
    let small: Vec<bool> = sizes.iter().map(|&size| size < min_area).collect();
    if !small.contains(&true) {
        return false;
    }
    match kind {
        RegionKind::Holes => {
            for (pixel, &label) in mask.data.iter_mut().zip(&labels) {
                if label != 0 && small[label as usize - 1] {
                    *pixel = 1;
                }
            }
        }
        RegionKind::Islands => {
            let keep_largest_only = small.iter().all(|&s| s);
            // The first largest, as numpy's argmax picks it.
            let largest = sizes.iter().enumerate().fold(0, |best, (i, &s)| if s > sizes[best] { i } else { best });
            for (pixel, &label) in mask.data.iter_mut().zip(&labels) {
                let keep = label != 0
                    && if keep_largest_only { label as usize - 1 == largest } else { !small[label as usize - 1] };
                *pixel = u8::from(keep);
            }
        }
    }
    true
}

/// SAM 2's post-processing of low-res logits (`SAM2Transforms.postprocess_masks`, applied before upsampling):
/// background components (logit <= 0) of at most `max_hole_area` pixels are set to 10, and mask components
/// (logit > 0, of the logits as they came) of at most `max_sprinkle_area` pixels to -10. 0 turns either off.
pub fn fill_holes_and_sprinkles(
    logits: ArrayView2<f32>,
    max_hole_area: usize,
    max_sprinkle_area: usize,
) -> Array2<f32> {
    let mut filled = logits.to_owned();
    let width = logits.ncols();
    let standard = logits.as_standard_layout();
    let values = standard.as_slice().expect("standard layout");
    let mut set_small = |foreground: bool, max_area: usize, value: f32| {
        if max_area == 0 {
            return;
        }
        let members: Vec<bool> = values.iter().map(|&v| (v > MASK_THRESHOLD) == foreground).collect();
        let (labels, sizes) = components(&members, width);
        let out = filled.as_slice_mut().expect("owned arrays are standard");
        for (pixel, &label) in out.iter_mut().zip(&labels) {
            if label != 0 && sizes[label as usize - 1] <= max_area {
                *pixel = MASK_THRESHOLD + value;
            }
        }
    };
    set_small(false, max_hole_area, 10.0);
    set_small(true, max_sprinkle_area, -10.0);
    filled
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(rows: &[&str]) -> BinaryMask {
        let width = rows[0].len();
        BinaryMask::from_fn(width, rows.len(), |x, y| rows[y].as_bytes()[x] == b'#')
    }

    #[test]
    fn fills_small_holes_only() {
        let mut m = mask(&["#######", "#.#...#", "###...#", "#######"]);
        assert!(remove_small_regions(&mut m, 2, RegionKind::Holes));
        assert_eq!(m, mask(&["#######", "###...#", "###...#", "#######"]));
        assert!(!remove_small_regions(&mut m, 2, RegionKind::Holes));
    }

    #[test]
    fn removes_small_islands_with_diagonal_neighbours_joined() {
        let mut m = mask(&["##....#", "##...#.", ".......", "#......"]);
        // The diagonal pair at the top right is one component of 2; the lone corner pixel is 1.
        assert!(remove_small_regions(&mut m, 2, RegionKind::Islands));
        assert_eq!(m, mask(&["##....#", "##...#.", ".......", "......."]));
    }

    #[test]
    fn keeps_the_largest_island_when_all_are_small() {
        let mut m = mask(&["#..##", ".....", "..###"]);
        assert!(remove_small_regions(&mut m, 10, RegionKind::Islands));
        assert_eq!(m, mask(&[".....", ".....", "..###"]));
    }

    #[test]
    fn sam2_fills_small_holes_and_clears_small_sprinkles_of_the_logits() {
        let logits = ndarray::array![
            [5.0f32, 5.0, 5.0, -1.0, -1.0, -1.0],
            [5.0, -2.0, 5.0, -1.0, 3.0, -1.0],
            [5.0, 5.0, 5.0, -1.0, -1.0, -1.0],
        ];
        let filled = fill_holes_and_sprinkles(logits.view(), 1, 1);
        // The one-pixel hole is filled; the one-pixel island is cleared; the border background (9 pixels) stays.
        assert_eq!(filled[[1, 1]], 10.0);
        assert_eq!(filled[[1, 4]], -10.0);
        assert_eq!((filled[[0, 3]], filled[[0, 0]]), (-1.0, 5.0));
        assert_eq!(fill_holes_and_sprinkles(logits.view(), 0, 0), logits);
    }
}
