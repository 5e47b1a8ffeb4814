//! The full-size mask straight from the logits at the model's input resolution: exactly what thresholding
//! [`input_to_original`](super::upscale::input_to_original)'s logits gives, with the stability score, as
//! column-major runs (COCO order), without building the full-size logits or mask.
//!
//! Bilinear weights are non-negative and a float lerp is monotone in its inputs, so an output pixel lies between the
//! min and the max of its 2x2 sources, up to a few roundings (relative error below 1e-6). Where all four sources are
//! on the same side of every threshold, with a wide margin, so are all the output pixels between them: they are
//! emitted as one stretch per column. Only pixels whose sources are near a threshold (or not finite) are computed,
//! with the very expression the resize uses, so the result is bit-identical.

use ndarray::ArrayView2;

use super::upscale::taps;
use super::{BinaryMask, MASK_THRESHOLD, rle};
use crate::model::ImageSize;

/// A source value this close to a threshold (relative to 1 + |threshold|) leaves its pixels undecided; far wider
/// than the rounding of two lerps.
const MARGIN: f32 = 1e-3;
/// Larger sources are undecided too: their lerps could overflow (and inf * 0 is NaN).
const LARGEST_DECIDED: f32 = 1e30;
/// The pattern of a source or cell that needs the exact computation.
const UNDECIDED: u8 = u8::MAX;

/// A binary mask at full size as column-major run lengths (COCO's uncompressed RLE), with its area and extent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskRuns {
    pub size: ImageSize,
    /// Column-major run lengths, the first counting zeros (possibly 0).
    pub counts: Vec<u64>,
    pub area: u64,
    /// `[x0, y0, x1, y1]` with the last set column and row (as [`super::extent_xyxy`]); `None` when empty.
    pub extent: Option<[usize; 4]>,
}

impl MaskRuns {
    pub fn rle(&self) -> rle::CocoRle {
        rle::CocoRle { size: [self.size.height, self.size.width], counts: rle::counts_to_string(&self.counts) }
    }

    pub fn binary(&self) -> BinaryMask {
        rle::from_counts(&self.counts, self.size.height, self.size.width).expect("runs cover the mask")
    }

    /// `[x, y, w, h]`, w and h counting pixels (pycocotools `toBbox`); all zeros when empty.
    pub fn bbox_xywh(&self) -> [f64; 4] {
        match self.extent {
            Some([x0, y0, x1, y1]) => [x0 as f64, y0 as f64, (x1 - x0 + 1) as f64, (y1 - y0 + 1) as f64],
            None => [0.0; 4],
        }
    }
}

/// `logits > 0` at the original size (bilinear from `input_logits`, as [`super::upscale::input_to_original`]), and
/// [`super::stability_score`] of those logits with `stability_offset`.
pub fn threshold_at_original(
    input_logits: ArrayView2<f32>,
    original: ImageSize,
    stability_offset: f32,
) -> (MaskRuns, f32) {
    let (rows, cols) = input_logits.dim();
    let source = input_logits.as_standard_layout();
    let source = source.as_slice().expect("standard layout");
    let thresholds = Thresholds::new(stability_offset);
    let column_taps = taps(cols, original.width, original.width);
    let row_taps = taps(rows, original.height, original.height);
    // Output rows by the source row their taps start from: rows row_start[r]..row_start[r + 1].
    let mut row_start = vec![0; rows + 1];
    for tap in &row_taps {
        row_start[tap.lower + 1] += 1;
    }
    for r in 0..rows {
        row_start[r + 1] += row_start[r];
    }
    let cells = cell_patterns(source, rows, cols, &thresholds);
    let changes = changes_by_column(&cells, rows, cols);

    let mut out = Accumulator::default();
    for (x, column) in column_taps.iter().enumerate() {
        let c = column.lower;
        let changes = &changes.rows[changes.start[c]..changes.start[c + 1]];
        for (i, &r) in changes.iter().enumerate() {
            let end = changes.get(i + 1).map_or(rows, |&next| next);
            let (y0, y1) = (row_start[r], row_start[end]);
            if y0 == y1 {
                // Source rows that no output row starts from (downscaling).
                continue;
            }
            match cells[r * cols + c] {
                UNDECIDED => {
                    // The horizontal pass, then the vertical one, as the resize does them.
                    let lerp = |r: usize| {
                        let row = &source[r * cols..];
                        row[column.lower] * (1.0 - column.weight) + row[column.upper] * column.weight
                    };
                    let (top, bottom) = (lerp(r), lerp(row_taps[y0].upper));
                    for (y, row) in (y0..y1).zip(&row_taps[y0..y1]) {
                        let value = top * (1.0 - row.weight) + bottom * row.weight;
                        out.stretch(x, y, 1, thresholds.pattern(value));
                    }
                }
                pattern => out.stretch(x, y0, y1 - y0, pattern),
            }
        }
    }
    out.finish(original)
}

/// The three thresholds of the mask and its stability score; a pattern has bit 0 for `> low`, bit 1 for `> mask`
/// (the mask itself), bit 2 for `> high`.
struct Thresholds {
    values: [f32; 3],
    margins: [f32; 3],
}

impl Thresholds {
    fn new(stability_offset: f32) -> Self {
        let values = [MASK_THRESHOLD - stability_offset, MASK_THRESHOLD, MASK_THRESHOLD + stability_offset];
        Self { values, margins: values.map(|t| MARGIN * (1.0 + t.abs())) }
    }

    fn pattern(&self, value: f32) -> u8 {
        let [low, mask, high] = self.values;
        u8::from(value > low) | u8::from(value > mask) << 1 | u8::from(value > high) << 2
    }

    /// The pattern of every output between sources with this pattern, or [`UNDECIDED`]. Branch-free (`|`, not
    /// `||`) so that it vectorizes.
    fn decided_pattern(&self, value: f32) -> u8 {
        let ([low, mask, high], [low_margin, mask_margin, high_margin]) = (self.values, self.margins);
        let near = value.is_nan()
            | (value.abs() >= LARGEST_DECIDED)
            | ((value - low).abs() <= low_margin)
            | ((value - mask).abs() <= mask_margin)
            | ((value - high).abs() <= high_margin);
        if near { UNDECIDED } else { self.pattern(value) }
    }
}

/// The pattern of each cell (the outputs whose taps start at source row r and column c): that of its 2x2 sources
/// when they all agree, else [`UNDECIDED`]. Row-major, `rows x cols`.
fn cell_patterns(source: &[f32], rows: usize, cols: usize, thresholds: &Thresholds) -> Vec<u8> {
    let agree = |a: u8, b: u8| if a == b { a } else { UNDECIDED };
    let decided: Vec<u8> = source.iter().map(|&v| thresholds.decided_pattern(v)).collect();
    let mut cells = vec![UNDECIDED; rows * cols];
    let mut pairs = vec![UNDECIDED; cols];
    for r in 0..rows {
        let (top, bottom) = (&decided[r * cols..][..cols], &decided[(r + 1).min(rows - 1) * cols..][..cols]);
        for ((pair, &a), &b) in pairs.iter_mut().zip(top).zip(bottom) {
            *pair = agree(a, b);
        }
        // The last column's cells have only one source column.
        let (row, last) = cells[r * cols..][..cols].split_at_mut(cols - 1);
        for ((cell, &left), &right) in row.iter_mut().zip(&pairs).zip(&pairs[1..]) {
            *cell = agree(left, right);
        }
        last[0] = pairs[cols - 1];
    }
    cells
}

/// Per source column c, the source rows where a column of cells needs attention: row 0, every row whose cell
/// differs from the one above, and every undecided cell (so an undecided cell is followed by another entry).
struct Changes {
    /// Column c's rows are `rows[start[c]..start[c + 1]]`, ascending.
    start: Vec<usize>,
    rows: Vec<usize>,
}

fn changes_by_column(cells: &[u8], rows: usize, cols: usize) -> Changes {
    let mut found: Vec<(usize, usize)> = Vec::new();
    for r in 0..rows {
        let row = &cells[r * cols..][..cols];
        if r == 0 {
            found.extend((0..cols).map(|c| (r, c)));
            continue;
        }
        let above = &cells[(r - 1) * cols..][..cols];
        let mut c = 0;
        while c < cols {
            let end = (c + 8).min(cols);
            // Eight cells at a time: most rows repeat the one above, with no undecided cell (the only pattern with
            // the high bit set).
            if let (Ok(now), Ok(before)) = (<[u8; 8]>::try_from(&row[c..end]), <[u8; 8]>::try_from(&above[c..end])) {
                let (now, before) = (u64::from_ne_bytes(now), u64::from_ne_bytes(before));
                if now == before && now & 0x8080_8080_8080_8080 == 0 {
                    c = end;
                    continue;
                }
            }
            found.extend((c..end).filter(|&c| row[c] == UNDECIDED || row[c] != above[c]).map(|c| (r, c)));
            c = end;
        }
    }
    // A counting sort by column keeps each column's rows in order.
    let mut start = vec![0; cols + 1];
    for &(_, c) in &found {
        start[c + 1] += 1;
    }
    for c in 0..cols {
        start[c + 1] += start[c];
    }
    let mut next = start.clone();
    let mut by_column = vec![0; found.len()];
    for (r, c) in found {
        by_column[next[c]] = r;
        next[c] += 1;
    }
    Changes { start, rows: by_column }
}

/// Column-major runs, area, extent and the stability counts, fed stretch by stretch.
#[derive(Default)]
struct Accumulator {
    counts: Vec<u64>,
    set: bool,
    run: u64,
    area: u64,
    extent: Option<[usize; 4]>,
    above_high: u64,
    above_low: u64,
}

impl Accumulator {
    /// `length` pixels of column `x` from row `y`, all with `pattern`.
    fn stretch(&mut self, x: usize, y: usize, length: usize, pattern: u8) {
        if length == 0 {
            return;
        }
        let n = length as u64;
        self.above_low += n * u64::from(pattern & 1);
        self.above_high += n * u64::from(pattern >> 2 & 1);
        let set = pattern & 2 != 0;
        if set != self.set {
            self.counts.push(self.run);
            self.run = 0;
            self.set = set;
        }
        self.run += n;
        if set {
            self.area += n;
            let last = y + length - 1;
            self.extent = Some(match self.extent {
                None => [x, y, x, last],
                Some([x0, y0, _, y1]) => [x0, y0.min(y), x, y1.max(last)],
            });
        }
    }

    fn finish(mut self, size: ImageSize) -> (MaskRuns, f32) {
        self.counts.push(self.run);
        let stability = if self.above_low == 0 { 0.0 } else { self.above_high as f32 / self.above_low as f32 };
        (MaskRuns { size, counts: self.counts, area: self.area, extent: self.extent }, stability)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::upscale::input_to_original;
    use crate::mask::{extent_xyxy, stability_score, threshold};
    use ndarray::Array2;

    /// The reference: full-size logits, then threshold, stability score, runs and extent.
    fn check(input: &Array2<f32>, original: ImageSize, offset: f32) {
        let logits = input_to_original(input.view(), original);
        let binary = threshold(&logits);
        let (runs, stability) = threshold_at_original(input.view(), original, offset);
        let label = format!("{:?} -> {original:?}, offset {offset}", input.dim());
        assert_eq!(runs.counts, rle::run_lengths(&binary), "{label}");
        assert_eq!(runs.area, binary.area(), "{label}");
        assert_eq!(runs.extent, extent_xyxy(&binary), "{label}");
        assert_eq!(stability.to_bits(), stability_score(logits.view(), offset).to_bits(), "{label}");
        assert_eq!(runs.binary(), binary, "{label}");
    }

    /// A blob with a hole, scaled: positive inside a ring, negative elsewhere.
    fn ring(rows: usize, cols: usize, scale: f32) -> Array2<f32> {
        Array2::from_shape_fn((rows, cols), |(y, x)| {
            let dy = (y as f32 - rows as f32 * 0.45) / (rows as f32 * 0.3);
            let dx = (x as f32 - cols as f32 * 0.55) / (cols as f32 * 0.35);
            let r = (dx * dx + dy * dy).sqrt();
            scale * (1.0 - r) * (r - 0.3)
        })
    }

    #[test]
    fn matches_the_full_size_logits_up_and_down() {
        for &(rows, cols) in &[(171, 256), (256, 171), (40, 33), (1, 7), (5, 1), (1, 1)] {
            for &(height, width) in &[(427, 640), (640, 427), (23, 37), (100, 3), (1, 1), (7, 300)] {
                for &scale in &[0.5f32, 3.0, 20.0, 400.0] {
                    check(&ring(rows, cols, scale), ImageSize::new(height, width), 1.0);
                }
            }
        }
    }

    #[test]
    fn matches_on_noise() {
        // A xorshift stream: rough logits of all magnitudes, many of them near a threshold.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        for &scale in &[1.2f32, 3.0, 50.0] {
            let input = Array2::from_shape_fn((43, 61), |_| scale * next());
            check(&input, ImageSize::new(150, 217), 1.0);
            check(&input, ImageSize::new(30, 41), 1.0);
        }
    }

    #[test]
    fn values_at_and_near_the_thresholds_and_not_finite() {
        let specials =
            [0.0f32, -0.0, 1.0, -1.0, 1e-7, -1e-7, 1.0 + 1e-7, -1.0 - 1e-7, 0.999, 1.001, 2.5, -2.5, 1e-40, 7.0];
        let wild = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, -f32::MAX, 1e31];
        let input = Array2::from_shape_fn((37, 29), |(y, x)| {
            let i = y * 29 + x;
            if i % 53 == 0 { wild[i / 53 % wild.len()] } else { specials[(i * 7 + y) % specials.len()] }
        });
        for &offset in &[1.0f32, 0.0, 0.25, 5.0] {
            check(&input, ImageSize::new(97, 81), offset);
            check(&input, ImageSize::new(20, 11), offset);
        }
        for value in [1.0f32, 0.0, -1.0, f32::MAX] {
            check(&Array2::from_elem((9, 9), value), ImageSize::new(30, 30), 1.0);
        }
        // Positive but so small that its lerps round to zero: only the margin keeps these out of the mask.
        check(&Array2::from_elem((10, 10), 1e-45), ImageSize::new(3, 3), 1.0);
    }

    #[test]
    fn empty_and_full_masks() {
        let (runs, stability) =
            threshold_at_original(Array2::from_elem((4, 4), -9.0).view(), ImageSize::new(5, 6), 1.0);
        assert_eq!((&runs.counts[..], runs.area, runs.extent, stability), (&[30][..], 0, None, 0.0));
        assert_eq!(runs.bbox_xywh(), [0.0; 4]);
        let (runs, stability) = threshold_at_original(Array2::from_elem((4, 4), 9.0).view(), ImageSize::new(5, 6), 1.0);
        assert_eq!((&runs.counts[..], runs.area, runs.extent, stability), (&[0, 30][..], 30, Some([0, 0, 5, 4]), 1.0));
        assert_eq!(runs.bbox_xywh(), [0.0, 0.0, 6.0, 5.0]);
    }
}
