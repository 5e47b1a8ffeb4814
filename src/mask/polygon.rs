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

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolygonError {
    #[error("a polygon needs at least 3 points, as [x1, y1, x2, y2, x3, y3, ...]")]
    TooFewPoints,
    #[error("polygon coordinates must be finite numbers")]
    NotFinite,
    #[error(
        "polygon point ({x}, {y}) is far outside the {width}x{height} image (more than the image's size past an edge)"
    )]
    FarOutside { x: f64, y: f64, width: usize, height: usize },
    #[error("an image of {height}x{width} pixels is more than this machine can address")]
    SizeOverflow { height: usize, width: usize },
}

/// COCO polygon rings (`[x1, y1, x2, y2, ...]`, at least three points each) to a mask, exactly as pycocotools'
/// `frPyObjects` + `merge` rasterize them: each ring by `rleFrPoly`, the rings united.
///
/// Points may lie outside the image (what is outside is cut off), but not more than the image's width (x) or
/// height (y) past an edge: pycocotools walks every 1/5 pixel of each edge, so a point at 1e300 would never
/// finish (and overflows its integers). The caller bounds the size: the mask is allocated whole.
pub fn rasterize(rings: &[Vec<f64>], height: usize, width: usize) -> Result<BinaryMask, PolygonError> {
    // Sides within u32 (as images' are) and a pixel count an allocation can have keep the i64 arithmetic of
    // `ring_run_lengths` from overflowing.
    let pixels = height
        .checked_mul(width)
        .filter(|&pixels| pixels <= isize::MAX as usize && height.max(width) <= u32::MAX as usize)
        .ok_or(PolygonError::SizeOverflow { height, width })?;
    for ring in rings {
        check_ring(ring, height, width)?;
    }
    let mut mask = BinaryMask { width, height, data: vec![0; pixels] };
    for ring in rings {
        let ring_mask = super::rle::from_counts(&ring_run_lengths(ring, height, width), height, width)
            .expect("the boundary runs cover the image by construction");
        for (pixel, &inside) in mask.data.iter_mut().zip(&ring_mask.data) {
            *pixel |= inside;
        }
    }
    Ok(mask)
}

fn check_ring(ring: &[f64], height: usize, width: usize) -> Result<(), PolygonError> {
    if ring.len() < 6 || !ring.len().is_multiple_of(2) {
        return Err(PolygonError::TooFewPoints);
    }
    let (w, h) = (width as f64, height as f64);
    for point in ring.chunks_exact(2) {
        let (x, y) = (point[0], point[1]);
        if !x.is_finite() || !y.is_finite() {
            return Err(PolygonError::NotFinite);
        }
        if !(-w..=2.0 * w).contains(&x) || !(-h..=2.0 * h).contains(&y) {
            return Err(PolygonError::FarOutside { x, y, width, height });
        }
    }
    Ok(())
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

    // Found by the property tests below: rings that pycocotools' walk cannot finish.
    #[test]
    fn points_far_outside_the_image_are_errors() {
        // 1e300 saturated to i64::MAX, and the walk along the edge took i64::MAX steps (memory ran out first).
        let far = rasterize(&[vec![0.0, 0.0, 1e300, 0.0, 0.0, 1.0]], 4, 4);
        assert!(matches!(far, Err(PolygonError::FarOutside { x: 1e300, .. })), "{far:?}");
        // i64::MAX - i64::MIN overflowed.
        let both = rasterize(&[vec![-1e300, 0.0, 1e300, 0.0, 0.0, 1.0]], 4, 4);
        assert!(matches!(both, Err(PolygonError::FarOutside { .. })), "{both:?}");
        // Up to one image size past an edge is still rasterized (and cut off).
        let mask = rasterize(&[vec![-4.0, -4.0, 8.0, -4.0, 8.0, 8.0, -4.0, 8.0]], 4, 4).unwrap();
        assert_eq!(mask.area(), 16);
        let [height, width] = [1 << 40, 1 << 40];
        assert_eq!(rasterize(&[], height, width), Err(PolygonError::SizeOverflow { height, width }));
    }

    mod properties {
        use proptest::collection::vec;
        use proptest::prelude::*;

        use super::super::*;

        /// Coordinates of a `side`-pixel axis: inside, near the edges, far outside, huge, tiny, not finite.
        fn coordinate(side: usize) -> impl Strategy<Value = f64> {
            let side = side as f64;
            prop_oneof![
                6 => -1.0..side + 1.0,
                1 => -2.0 * side..3.0 * side,
                1 => prop::sample::select(vec![-side, 2.0 * side, -side - 1e-9, 2.0 * side + 1e-9, 5e-324, -0.0]),
                1 => prop::sample::select(vec![
                    1e300, -1e300, f64::MAX, f64::MIN, 1e18, -1e18, f64::NAN, f64::INFINITY,
                ]),
            ]
        }

        fn ring(height: usize, width: usize) -> impl Strategy<Value = Vec<f64>> {
            // Mostly whole points; odd lengths and fewer than three points now and then.
            prop_oneof![
                8 => vec((coordinate(width), coordinate(height)), 3..9)
                    .prop_map(|points| points.into_iter().flat_map(|(x, y)| [x, y]).collect()),
                1 => vec(coordinate(width), 0..8),
            ]
        }

        fn polygon() -> impl Strategy<Value = (usize, usize, Vec<Vec<f64>>)> {
            (1usize..20, 1usize..20)
                .prop_flat_map(|(height, width)| (Just(height), Just(width), vec(ring(height, width), 0..4)))
        }

        fn valid(ring: &[f64], height: usize, width: usize) -> bool {
            let (w, h) = (width as f64, height as f64);
            ring.len() >= 6
                && ring.len().is_multiple_of(2)
                && ring.chunks(2).all(|p| (-w..=2.0 * w).contains(&p[0]) && (-h..=2.0 * h).contains(&p[1]))
        }

        proptest! {
            #![proptest_config(crate::proptest_support::config(256))]

            #[test]
            fn rings_rasterize_or_are_refused((height, width, rings) in polygon()) {
                let all_valid = rings.iter().all(|ring| valid(ring, height, width));
                match rasterize(&rings, height, width) {
                    Ok(mask) => {
                        prop_assert!(all_valid);
                        prop_assert_eq!((mask.width, mask.height), (width, height));
                        prop_assert!(mask.data.iter().all(|&v| v <= 1));
                    }
                    Err(error) => prop_assert!(!all_valid, "{error}"),
                }
            }

            #[test]
            fn rings_left_of_the_image_cover_nothing(
                (height, width, ring) in (1usize..20, 1usize..20).prop_flat_map(|(h, w)| {
                    let x = -(w as f64)..=-1.0;
                    (Just(h), Just(w), vec((x, -(h as f64)..2.0 * h as f64), 3..8))
                })
            ) {
                let ring: Vec<f64> = ring.into_iter().flat_map(|(x, y)| [x, y]).collect();
                prop_assert_eq!(rasterize(&[ring], height, width).unwrap().area(), 0);
            }

            #[test]
            fn sizes_past_u32_are_refused_before_any_allocation(
                long in (1usize << 32)..,
                short in 1usize..,
                tall: bool,
            ) {
                let (height, width) = if tall { (long, short) } else { (short, long) };
                let refused = PolygonError::SizeOverflow { height, width };
                prop_assert_eq!(rasterize(&[vec![0.0; 6]], height, width), Err(refused));
            }
        }
    }
}
