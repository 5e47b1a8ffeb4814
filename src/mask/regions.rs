//! Small holes and islands (segment_anything `remove_small_regions`), on 8-connected components as OpenCV's
//! `connectedComponentsWithStats` finds them.

use super::BinaryMask;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionKind {
    /// Background components enclosed by or beside the mask.
    Holes,
    /// Components of the mask itself.
    Islands,
}

/// 8-connected components of the pixels equal to `value`: a label per pixel (0 for the other pixels, components
/// numbered from 1 in raster order of their first pixel) and the size of each component (index = label - 1).
fn components(mask: &BinaryMask, value: u8) -> (Vec<u32>, Vec<usize>) {
    let (width, height) = (mask.width, mask.height);
    let mut labels = vec![0u32; mask.data.len()];
    let mut sizes = Vec::new();
    let mut stack = Vec::new();
    for start in 0..mask.data.len() {
        if mask.data[start] != value || labels[start] != 0 {
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
                    if mask.data[neighbour] == value && labels[neighbour] == 0 {
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
    let (labels, sizes) = components(mask, value);
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
}
