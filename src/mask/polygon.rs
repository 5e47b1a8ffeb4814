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
