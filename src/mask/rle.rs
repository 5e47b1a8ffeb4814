//! COCO compressed RLE, byte-identical to pycocotools `mask.encode` (and readable by `mask.decode`).

use serde::{Deserialize, Serialize};

use super::BinaryMask;

/// `{"size": [h, w], "counts": "..."}`: column-major run lengths, starting with a run of zeros.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CocoRle {
    pub size: [usize; 2],
    pub counts: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RleError {
    #[error("malformed RLE counts string")]
    Malformed,
    #[error("RLE runs cover {covered} pixels, the size says {expected}")]
    WrongLength { covered: u64, expected: u64 },
}

/// Run lengths in column-major (Fortran) order, the first one counting zeros (possibly 0).
pub fn run_lengths(mask: &BinaryMask) -> Vec<u64> {
    let mut counts = Vec::new();
    let mut current = 0u8;
    let mut run = 0u64;
    for x in 0..mask.width {
        for y in 0..mask.height {
            let value = mask.data[y * mask.width + x];
            if value != current {
                counts.push(run);
                run = 0;
                current = value;
            }
            run += 1;
        }
    }
    counts.push(run);
    counts
}

/// pycocotools `rleToString`: each count (after the third, as the difference to the count two before) in
/// little-endian groups of 5 bits, 0x20 marking "more follows", offset by 48 into printable ASCII.
pub fn counts_to_string(counts: &[u64]) -> String {
    let mut out = String::new();
    for (i, &count) in counts.iter().enumerate() {
        let mut x = count as i64;
        if i > 2 {
            x -= counts[i - 2] as i64;
        }
        loop {
            let mut c = (x & 0x1f) as u8;
            x >>= 5;
            let more = if c & 0x10 != 0 { x != -1 } else { x != 0 };
            if more {
                c |= 0x20;
            }
            out.push(char::from(c + 48));
            if !more {
                break;
            }
        }
    }
    out
}

/// pycocotools `rleFrString`, the inverse of [`counts_to_string`].
pub fn counts_from_string(text: &str) -> Result<Vec<u64>, RleError> {
    let bytes = text.as_bytes();
    let mut counts: Vec<u64> = Vec::new();
    let mut p = 0;
    while p < bytes.len() {
        let (mut x, mut k) = (0i64, 0u32);
        loop {
            let c = i64::from(bytes.get(p).ok_or(RleError::Malformed)?.checked_sub(48).ok_or(RleError::Malformed)?);
            if c > 0x3f || k > 12 {
                return Err(RleError::Malformed);
            }
            x |= (c & 0x1f) << (5 * k);
            p += 1;
            k += 1;
            if c & 0x20 == 0 {
                if c & 0x10 != 0 {
                    x |= -1i64 << (5 * k);
                }
                break;
            }
        }
        if counts.len() > 2 {
            x += counts[counts.len() - 2] as i64;
        }
        counts.push(u64::try_from(x).map_err(|_| RleError::Malformed)?);
    }
    Ok(counts)
}

pub fn encode(mask: &BinaryMask) -> CocoRle {
    CocoRle { size: [mask.height, mask.width], counts: counts_to_string(&run_lengths(mask)) }
}

pub fn decode(rle: &CocoRle) -> Result<BinaryMask, RleError> {
    let [height, width] = rle.size;
    from_counts(&counts_from_string(&rle.counts)?, height, width)
}

/// A mask from column-major run lengths (the first counting zeros), as in uncompressed COCO RLE.
pub fn from_counts(counts: &[u64], height: usize, width: usize) -> Result<BinaryMask, RleError> {
    let covered: u64 = counts.iter().sum();
    let expected = (height * width) as u64;
    if covered != expected {
        return Err(RleError::WrongLength { covered, expected });
    }
    let mut data = vec![0u8; height * width];
    let mut position = 0usize;
    for (i, &count) in counts.iter().enumerate() {
        if i % 2 == 1 {
            for index in position..position + count as usize {
                // column-major index -> row-major
                data[(index % height) * width + index / height] = 1;
            }
        }
        position += count as usize;
    }
    Ok(BinaryMask { width, height, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_strings_from_pycocotools() {
        // pycocotools.mask.encode(np.asfortranarray(np.array([[0, 1], [1, 1]], np.uint8)))["counts"] == b"13"
        let mask = BinaryMask::from_fn(2, 2, |x, y| x + y > 0);
        assert_eq!(run_lengths(&mask), vec![1, 3]);
        assert_eq!(encode(&mask).counts, "13");
        let empty = BinaryMask::from_fn(3, 2, |_, _| false);
        assert_eq!(encode(&empty).counts, "6");
    }

    #[test]
    fn round_trip_with_long_runs_and_negative_differences() {
        let mask = BinaryMask::from_fn(300, 200, |x, y| (x / 7 + y / 50) % 3 == 0 || (x > 250 && y > 10));
        let rle = encode(&mask);
        assert_eq!(decode(&rle).unwrap(), mask);
    }

    #[test]
    fn decoding_rejects_garbage_and_wrong_sizes() {
        assert_eq!(counts_from_string("\u{1}"), Err(RleError::Malformed));
        assert_eq!(counts_from_string("0`"), Err(RleError::Malformed));
        let wrong = CocoRle { size: [2, 2], counts: "5".into() };
        assert!(matches!(decode(&wrong), Err(RleError::WrongLength { .. })));
    }
}
