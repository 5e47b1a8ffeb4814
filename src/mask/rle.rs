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
    #[error("RLE runs cover more than 2^64 pixels, the size says {expected}")]
    RunsOverflow { expected: u64 },
    #[error("an RLE size of {height}x{width} pixels is more than this machine can address")]
    SizeOverflow { height: usize, width: usize },
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
        // i128, so that any u64 count and difference is written exactly; the counts of real masks fit in i64,
        // and their text is pycocotools'.
        let mut x = i128::from(count);
        if i > 2 {
            x -= i128::from(counts[i - 2]);
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
        // i128: at most 13 groups of 5 bits (65 bits) plus a u64 count cannot overflow it, where i64 overflowed on
        // such garbage; counts that fit in i64 come out as before.
        let (mut x, mut k) = (0i128, 0u32);
        loop {
            let c = i128::from(bytes.get(p).ok_or(RleError::Malformed)?.checked_sub(48).ok_or(RleError::Malformed)?);
            if c > 0x3f || k > 12 {
                return Err(RleError::Malformed);
            }
            x |= (c & 0x1f) << (5 * k);
            p += 1;
            k += 1;
            if c & 0x20 == 0 {
                if c & 0x10 != 0 {
                    x |= -1i128 << (5 * k);
                }
                break;
            }
        }
        if counts.len() > 2 {
            x += i128::from(counts[counts.len() - 2]);
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
    let pixels = height.checked_mul(width).ok_or(RleError::SizeOverflow { height, width })?;
    let expected = pixels as u64;
    // Counts from a file may add up past u64.
    let covered = counts
        .iter()
        .try_fold(0u64, |sum, &count| sum.checked_add(count))
        .ok_or(RleError::RunsOverflow { expected })?;
    if covered != expected {
        return Err(RleError::WrongLength { covered, expected });
    }
    let mut data = vec![0u8; pixels];
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

    // Inputs the property tests below found: each overflowed 64-bit arithmetic (a panic in debug builds, garbage
    // counts in release ones).
    #[test]
    fn absurd_counts_are_errors_not_overflows() {
        // 13 groups, the last with the sign bit: the sign extension shifted -1 by 65 bits.
        assert_eq!(counts_from_string("PPPPPPPPPPPP@"), Err(RleError::Malformed));
        // The 4th count is the 2nd (0x6 << 60) plus a difference (0x3 << 60): the sum passed i64. (Counts this
        // large cover no real image; they are read as they are, and from_counts finds they cover too much.)
        let huge = [0, 0x6 << 60, 0, 0x9 << 60];
        assert_eq!(counts_from_string("0PPPPPPPPPPPP60PPPPPPPPPPPP3"), Ok(huge.to_vec()));
        assert_eq!(counts_to_string(&huge), "0PPPPPPPPPPPP60PPPPPPPPPPPP3");
        // A count of 2^63 was written as i64::MIN, and reading that back shifted -1 by 65 bits.
        assert_eq!(counts_from_string(&counts_to_string(&[1 << 63])), Ok(vec![1 << 63]));
        assert_eq!(from_counts(&[u64::MAX, 1], 1, 1), Err(RleError::RunsOverflow { expected: 1 }));
        let [height, width] = [usize::MAX, 2];
        assert_eq!(from_counts(&[0], height, width), Err(RleError::SizeOverflow { height, width }));
        let absurd = CocoRle { size: [usize::MAX, usize::MAX], counts: "0".into() };
        assert!(matches!(decode(&absurd), Err(RleError::SizeOverflow { .. })));
    }

    mod properties {
        use proptest::collection::vec;
        use proptest::prelude::*;

        use super::super::*;

        /// Run lengths as they come from files: mostly small, some at the ends of u64.
        fn count() -> impl Strategy<Value = u64> {
            prop_oneof![4 => 0u64..50, 1 => any::<u64>(), 1 => (u64::MAX - 3)..=u64::MAX, 1 => Just(1 << 63)]
        }

        /// Sizes of masks that fit in memory, and sizes whose pixel count overflows usize.
        fn size() -> impl Strategy<Value = (usize, usize)> {
            prop_oneof![3 => (0usize..12, 0usize..12), 1 => ((1usize << 33).., (1usize << 33)..)]
        }

        fn mask() -> impl Strategy<Value = BinaryMask> {
            (1usize..24, 1usize..24).prop_flat_map(|(width, height)| {
                vec(0u8..=1, width * height).prop_map(move |data| BinaryMask { width, height, data })
            })
        }

        proptest! {
            #![proptest_config(crate::proptest_support::config(256))]

            #[test]
            fn any_text_parses_or_is_malformed(text in any::<String>()) {
                let _ = counts_from_string(&text);
            }

            #[test]
            fn text_of_the_rle_alphabet_parses_or_is_malformed(bytes in vec(48u8..=111, 0..40)) {
                let text = String::from_utf8(bytes).unwrap();
                match counts_from_string(&text) {
                    // What parses writes back to the same text when it is written as pycocotools writes it
                    // (no superfluous groups).
                    Ok(counts) if counts_to_string(&counts) == text => {}
                    Ok(counts) => prop_assert_eq!(counts_from_string(&counts_to_string(&counts)), Ok(counts)),
                    Err(error) => prop_assert_eq!(error, RleError::Malformed),
                }
            }

            #[test]
            fn any_counts_round_trip_through_text(counts in vec(count(), 0..12)) {
                prop_assert_eq!(counts_from_string(&counts_to_string(&counts)), Ok(counts));
            }

            #[test]
            fn counts_give_a_mask_exactly_when_they_cover_the_size(
                counts in vec(count(), 0..8),
                (height, width) in size(),
            ) {
                match from_counts(&counts, height, width) {
                    Ok(mask) => {
                        prop_assert_eq!(counts.iter().sum::<u64>(), (height * width) as u64);
                        let ones: u64 = counts.iter().skip(1).step_by(2).sum();
                        prop_assert_eq!(mask.area(), ones);
                        prop_assert_eq!(run_lengths(&mask).iter().sum::<u64>(), (height * width) as u64);
                    }
                    Err(RleError::Malformed) => prop_assert!(false, "from_counts does not parse text"),
                    Err(_) => {}
                }
            }

            #[test]
            fn exact_counts_of_a_size_give_a_mask(
                runs in vec(0u64..6, 0..30),
                (height, width) in (1usize..12, 1usize..12),
            ) {
                // Cut the runs so that they cover the size exactly.
                let mut counts = Vec::new();
                let mut left = (height * width) as u64;
                for run in runs {
                    let run = run.min(left);
                    counts.push(run);
                    left -= run;
                }
                counts.push(left);
                let mask = from_counts(&counts, height, width).unwrap();
                prop_assert_eq!(decode(&encode(&mask)), Ok(mask));
            }

            #[test]
            fn masks_round_trip(mask in mask()) {
                let rle = encode(&mask);
                prop_assert_eq!(rle.size, [mask.height, mask.width]);
                prop_assert_eq!(decode(&rle), Ok(mask));
            }

            #[test]
            fn any_rle_decodes_or_is_an_error(text in "[0-o]{0,30}", (height, width) in size()) {
                let _ = decode(&CocoRle { size: [height, width], counts: text });
            }
        }
    }
}
