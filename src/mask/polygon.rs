//! Mask outlines as COCO-style polygons, from imageproc's border following (Suzuki-Abe), holes kept.
//!
//! Each ring is `[x1, y1, x2, y2, ...]` through the centres of the mask's border pixels. Outer boundaries and hole
//! boundaries are separate rings told apart by orientation: in image coordinates (y down), the shoelace area of an
//! outer ring is positive and that of a hole negative. Points in the middle of straight runs are dropped (lossless);
//! rings of fewer than three points (one- or two-pixel specks) cannot be polygons and are left out: RLE is exact.

use imageproc::contours::{BorderType, find_contours};
use imageproc::point::Point;

use super::BinaryMask;
use super::encode::to_gray_image;

pub fn polygons(mask: &BinaryMask) -> Vec<Vec<f64>> {
    find_contours::<i32>(&to_gray_image(mask))
        .into_iter()
        .filter_map(|contour| {
            let mut points = drop_collinear(&contour.points);
            if points.len() < 3 {
                return None;
            }
            let outer = contour.border_type == BorderType::Outer;
            if (signed_area(&points) > 0.0) != outer {
                points.reverse();
            }
            Some(points.iter().flat_map(|p| [f64::from(p.x), f64::from(p.y)]).collect())
        })
        .collect()
}

/// Shoelace area, positive for clockwise rings on screen (y pointing down).
pub fn signed_area(points: &[Point<i32>]) -> f64 {
    let n = points.len();
    (0..n)
        .map(|i| {
            let (a, b) = (points[i], points[(i + 1) % n]);
            f64::from(a.x) * f64::from(b.y) - f64::from(b.x) * f64::from(a.y)
        })
        .sum::<f64>()
        / 2.0
}

fn drop_collinear(points: &[Point<i32>]) -> Vec<Point<i32>> {
    let n = points.len();
    if n < 3 {
        return points.to_vec();
    }
    (0..n)
        .filter(|&i| {
            let (prev, here, next) = (points[(i + n - 1) % n], points[i], points[(i + 1) % n]);
            (here.x - prev.x) * (next.y - here.y) != (here.y - prev.y) * (next.x - here.x)
        })
        .map(|i| points[i])
        .collect()
}

/// COCO polygon rings (`[x1, y1, x2, y2, ...]`, at least three points each) to a mask, exactly as pycocotools'
/// `frPyObjects` + `merge` rasterize them: each ring by `rleFrPoly`, the rings united.
pub fn rasterize(rings: &[Vec<f64>], height: usize, width: usize) -> BinaryMask {
    let mut mask = BinaryMask { width, height, data: vec![0; width * height] };
    for ring in rings {
        let ring_mask = super::rle::from_counts(&ring_run_lengths(ring, height, width), height, width)
            .expect("the boundary runs cover the image by construction");
        for (pixel, &inside) in mask.data.iter_mut().zip(&ring_mask.data) {
            *pixel |= inside;
        }
    }
    mask
}

/// pycocotools `rleFrPoly`: walk the ring upsampled 5x, keep where it crosses pixel columns, and turn those
/// y-boundaries into column-major run lengths.
fn ring_run_lengths(xy: &[f64], height: usize, width: usize) -> Vec<u64> {
    const SCALE: f64 = 5.0;
    let (h, w) = (height as i64, width as i64);
    let corners = xy.len() / 2;
    // C's (int)(v + .5) truncates toward zero, as `as i64` does.
    let mut x: Vec<i64> = (0..corners).map(|j| (SCALE * xy[2 * j] + 0.5) as i64).collect();
    let mut y: Vec<i64> = (0..corners).map(|j| (SCALE * xy[2 * j + 1] + 0.5) as i64).collect();
    x.push(x[0]);
    y.push(y[0]);
    let (mut u, mut v) = (Vec::new(), Vec::new());
    for j in 0..corners {
        let (mut xs, mut xe, mut ys, mut ye) = (x[j], x[j + 1], y[j], y[j + 1]);
        let (dx, dy) = ((xe - xs).abs(), (ys - ye).abs());
        let flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
        if flip {
            std::mem::swap(&mut xs, &mut xe);
            std::mem::swap(&mut ys, &mut ye);
        }
        // A repeated corner (dx = dy = 0) would divide 0 by 0; its one point lies on the corner either way.
        let slope = match (dx >= dy, dx.max(dy)) {
            (_, 0) => 0.0,
            (true, _) => (ye - ys) as f64 / dx as f64,
            (false, _) => (xe - xs) as f64 / dy as f64,
        };
        let steps = dx.max(dy);
        for d in 0..=steps {
            let t = if flip { steps - d } else { d };
            if dx >= dy {
                u.push(t + xs);
                v.push(((ys as f64) + slope * t as f64 + 0.5) as i64);
            } else {
                v.push(t + ys);
                u.push(((xs as f64) + slope * t as f64 + 0.5) as i64);
            }
        }
    }
    let mut starts: Vec<u64> = Vec::new();
    for j in 1..u.len() {
        if u[j] == u[j - 1] {
            continue;
        }
        let column = (if u[j] < u[j - 1] { u[j] } else { u[j] - 1 }) as f64;
        let column = (column + 0.5) / SCALE - 0.5;
        if column.floor() != column || column < 0.0 || column > (w - 1) as f64 {
            continue;
        }
        let row = v[j].min(v[j - 1]) as f64;
        let row = ((row + 0.5) / SCALE - 0.5).clamp(0.0, h as f64).ceil();
        starts.push((column as i64 * h + row as i64) as u64);
    }
    starts.push((h * w) as u64);
    starts.sort_unstable();
    let mut previous = 0;
    for start in &mut starts {
        let at = *start;
        *start -= previous;
        previous = at;
    }
    // Merge zero-length runs, as pycocotools does, so that runs alternate.
    let mut runs = vec![starts[0]];
    let mut j = 1;
    while j < starts.len() {
        if starts[j] > 0 {
            runs.push(starts[j]);
            j += 1;
        } else {
            j += 1;
            if j < starts.len() {
                *runs.last_mut().expect("runs start non-empty") += starts[j];
                j += 1;
            }
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_area(ring: &[f64]) -> f64 {
        let points: Vec<Point<i32>> = ring.chunks(2).map(|p| Point::new(p[0] as i32, p[1] as i32)).collect();
        signed_area(&points)
    }

    #[test]
    fn square_with_a_hole_gives_an_outer_ring_and_a_hole_ring() {
        // A 10x10 square (pixels 2..=11) with a 4x4 hole (pixels 5..=8).
        let mask = BinaryMask::from_fn(14, 14, |x, y| {
            let inside = (2..=11).contains(&x) && (2..=11).contains(&y);
            let hole = (5..=8).contains(&x) && (5..=8).contains(&y);
            inside && !hole
        });
        let rings = polygons(&mask);
        assert_eq!(rings.len(), 2, "{rings:?}");
        let areas: Vec<f64> = rings.iter().map(|r| ring_area(r)).collect();
        let outer = rings.iter().zip(&areas).find(|(_, a)| **a > 0.0).expect("an outer ring").0;
        let hole = rings.iter().zip(&areas).find(|(_, a)| **a < 0.0).expect("a hole ring").0;
        // The outer ring runs through the corner pixel centres of the square: 4 corners after dropping collinear points.
        let mut corners: Vec<(i32, i32)> = outer.chunks(2).map(|p| (p[0] as i32, p[1] as i32)).collect();
        corners.sort();
        assert_eq!(corners, vec![(2, 2), (2, 11), (11, 2), (11, 11)]);
        assert_eq!(ring_area(outer), 81.0);
        // The hole's border runs through the mask pixels around the hole.
        assert!(hole.chunks(2).all(|p| (4.0..=9.0).contains(&p[0]) && (4.0..=9.0).contains(&p[1])));
    }

    #[test]
    fn specks_are_left_out_and_empty_masks_have_no_rings() {
        let speck = BinaryMask::from_fn(5, 5, |x, y| x == 2 && y == 2);
        assert!(polygons(&speck).is_empty());
        assert!(polygons(&BinaryMask::from_fn(5, 5, |_, _| false)).is_empty());
    }
}
