//! Decoding uploads: formats, pixel types, EXIF orientation and limits; mutated files of every format
//! (property tests).

mod common;

use std::io::Cursor;
use std::sync::OnceLock;

use common::proptest_support::{self, Edit, apply};
use image::codecs::gif::GifEncoder;
use image::{DynamicImage, Frame, ImageBuffer, ImageFormat, Luma, LumaA, Rgb, RgbImage, Rgba, RgbaImage};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use samserve::image_input::{ImageError, ImageLimits, decode_image};

fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, format).unwrap();
    bytes.into_inner()
}

fn gradient() -> RgbImage {
    RgbImage::from_fn(40, 24, |x, y| Rgb([x as u8 * 6, y as u8 * 10, 200]))
}

#[test]
fn every_accepted_format_decodes_losslessly_where_the_format_is_lossless() {
    let image = DynamicImage::ImageRgb8(gradient());
    for format in [ImageFormat::Png, ImageFormat::Bmp, ImageFormat::Tiff, ImageFormat::WebP] {
        let decoded = decode_image(&encode(&image, format), &ImageLimits::default()).unwrap();
        assert_eq!(decoded, gradient(), "{format:?}");
    }
    let jpeg = decode_image(&encode(&image, ImageFormat::Jpeg), &ImageLimits::default()).unwrap();
    assert_eq!(jpeg.dimensions(), (40, 24));
}

#[test]
fn gif_gives_its_first_frame() {
    let red = RgbaImage::from_pixel(8, 6, Rgba([255, 0, 0, 255]));
    let blue = RgbaImage::from_pixel(8, 6, Rgba([0, 0, 255, 255]));
    let mut bytes = Vec::new();
    GifEncoder::new(&mut bytes).encode_frames([Frame::new(red), Frame::new(blue)]).unwrap();
    let decoded = decode_image(&bytes, &ImageLimits::default()).unwrap();
    assert_eq!(decoded.get_pixel(3, 3), &Rgb([255, 0, 0]));
}

#[test]
fn gray_alpha_and_16_bit_images_become_rgb8_as_users_expect() {
    let gray = DynamicImage::ImageLuma8(ImageBuffer::from_fn(4, 3, |x, _| Luma([x as u8 * 50])));
    let decoded = decode_image(&encode(&gray, ImageFormat::Png), &ImageLimits::default()).unwrap();
    assert_eq!(decoded.get_pixel(2, 1), &Rgb([100, 100, 100]));

    let gray_alpha = DynamicImage::ImageLumaA8(ImageBuffer::from_fn(4, 3, |x, _| LumaA([x as u8 * 50, 7])));
    let decoded = decode_image(&encode(&gray_alpha, ImageFormat::Png), &ImageLimits::default()).unwrap();
    assert_eq!(decoded.get_pixel(3, 0), &Rgb([150, 150, 150]));

    // Alpha is dropped, not composited: a transparent pixel keeps its colour (PIL's convert("RGB")).
    let rgba = DynamicImage::ImageRgba8(ImageBuffer::from_fn(4, 3, |x, _| Rgba([10, 20, x as u8, 0])));
    let decoded = decode_image(&encode(&rgba, ImageFormat::Png), &ImageLimits::default()).unwrap();
    assert_eq!(decoded.get_pixel(3, 2), &Rgb([10, 20, 3]));

    // 16-bit samples round to the nearest 8-bit value: round(v * 255 / 65535).
    let deep =
        DynamicImage::ImageRgb16(ImageBuffer::from_fn(3, 1, |x, _| Rgb([[0u16, 128, 65535][x as usize], 32896, 385])));
    let decoded = decode_image(&encode(&deep, ImageFormat::Png), &ImageLimits::default()).unwrap();
    assert_eq!(decoded.get_pixel(0, 0), &Rgb([0, 128, 1]));
    assert_eq!(decoded.get_pixel(1, 0), &Rgb([0, 128, 1]));
    assert_eq!(decoded.get_pixel(2, 0), &Rgb([255, 128, 1]));
}

/// A JPEG of a 32x16 image in four coloured quadrants, with an EXIF APP1 segment carrying `orientation`.
fn jpeg_with_orientation(orientation: u16) -> Vec<u8> {
    let colours = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]];
    let stored = RgbImage::from_fn(32, 16, |x, y| Rgb(colours[(x / 16 + 2 * (y / 8)) as usize]));
    let jpeg = encode(&DynamicImage::ImageRgb8(stored), ImageFormat::Jpeg);
    // TIFF header (big endian), one IFD entry: tag 0x0112 Orientation, type SHORT, count 1.
    let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01".to_vec();
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut app1 = b"Exif\x00\x00".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

fn colour_at(image: &RgbImage, x: u32, y: u32) -> usize {
    let p = image.get_pixel(x, y).0;
    let colours = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]];
    let distance = |c: &[i32; 3]| (0..3).map(|i| (i32::from(p[i]) - c[i]).abs()).sum::<i32>();
    (0..4).min_by_key(|&i| distance(&colours[i])).unwrap()
}

#[test]
fn exif_orientation_is_applied() {
    // Quadrant colours as seen top-left, top-right, bottom-left, bottom-right after orientation.
    // Stored: 0 1 / 2 3 (red green / blue white).
    let expected: [(u16, (u32, u32), [usize; 4]); 8] = [
        (1, (32, 16), [0, 1, 2, 3]),
        (2, (32, 16), [1, 0, 3, 2]),
        (3, (32, 16), [3, 2, 1, 0]),
        (4, (32, 16), [2, 3, 0, 1]),
        (5, (16, 32), [0, 2, 1, 3]),
        (6, (16, 32), [2, 0, 3, 1]),
        (7, (16, 32), [3, 1, 2, 0]),
        (8, (16, 32), [1, 3, 0, 2]),
    ];
    for (orientation, size, quadrants) in expected {
        let decoded = decode_image(&jpeg_with_orientation(orientation), &ImageLimits::default()).unwrap();
        assert_eq!(decoded.dimensions(), size, "orientation {orientation}");
        let (w, h) = size;
        let seen = [
            colour_at(&decoded, w / 4, h / 4),
            colour_at(&decoded, 3 * w / 4, h / 4),
            colour_at(&decoded, w / 4, 3 * h / 4),
            colour_at(&decoded, 3 * w / 4, 3 * h / 4),
        ];
        assert_eq!(seen, quadrants, "orientation {orientation}");
    }
}

/// A valid 1x1 PNG whose header is rewritten to claim `width` x `height` pixels.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut png = encode(&DynamicImage::ImageLuma8(ImageBuffer::from_pixel(1, 1, Luma([0]))), ImageFormat::Png);
    // 8-byte signature, then the IHDR chunk: length (4), "IHDR" (4), width (4), height (4), ... CRC.
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32fast::hash(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

#[test]
fn decompression_bombs_are_refused_from_the_header() {
    let error = decode_image(&png_claiming(60_000, 60_000), &ImageLimits::default()).unwrap_err();
    assert!(matches!(error, ImageError::TooManyPixels { width: 60_000, height: 60_000, .. }), "{error}");
    let small_limit = ImageLimits { max_pixels: 100, ..ImageLimits::default() };
    let image = DynamicImage::ImageRgb8(gradient());
    let error = decode_image(&encode(&image, ImageFormat::Png), &small_limit).unwrap_err();
    assert!(matches!(error, ImageError::TooManyPixels { width: 40, height: 24, limit: 100 }));
}

#[test]
fn bad_bytes_get_typed_errors() {
    let limits = ImageLimits::default();
    assert!(matches!(decode_image(&[], &limits), Err(ImageError::Empty)));
    assert!(matches!(decode_image(b"definitely not an image", &limits), Err(ImageError::UnsupportedFormat)));
    let png = encode(&DynamicImage::ImageRgb8(gradient()), ImageFormat::Png);
    assert!(matches!(decode_image(&png[..png.len() / 2], &limits), Err(ImageError::Undecodable(_))));
    let mut corrupt = png.clone();
    corrupt[60..80].fill(0xAB);
    assert!(matches!(decode_image(&corrupt, &limits), Err(ImageError::Undecodable(_))));
    let tight = ImageLimits { max_bytes: 10, ..limits };
    assert!(matches!(decode_image(&png, &tight), Err(ImageError::TooManyBytes { limit: 10, .. })));
    // A real image format that samserve does not accept (PPM) is refused as unsupported.
    let pnm = b"P6\n2 2\n255\n\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
    assert!(matches!(decode_image(pnm, &limits), Err(ImageError::UnsupportedFormat)));
}

/// Small files of every accepted format, the fixture PNG and a JPEG with EXIF: what the property tests mutate.
fn samples() -> &'static [(ImageFormat, Vec<u8>)] {
    static SAMPLES: OnceLock<Vec<(ImageFormat, Vec<u8>)>> = OnceLock::new();
    SAMPLES.get_or_init(|| {
        let rgb = DynamicImage::ImageRgb8(RgbImage::from_fn(7, 5, |x, y| Rgb([x as u8 * 30, y as u8 * 50, 90])));
        let rgba = DynamicImage::ImageRgba8(RgbaImage::from_fn(6, 4, |x, y| Rgba([x as u8 * 40, 7, y as u8, 128])));
        let deep = DynamicImage::ImageRgb16(ImageBuffer::from_fn(5, 3, |x, y| Rgb([x as u16 * 9000, y as u16, 385])));
        let mut gif = Vec::new();
        let frame = |colour| Frame::new(RgbaImage::from_pixel(5, 4, Rgba(colour)));
        GifEncoder::new(&mut gif).encode_frames([frame([255, 0, 0, 255]), frame([0, 0, 255, 255])]).unwrap();
        let mut samples: Vec<(ImageFormat, Vec<u8>)> =
            [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::WebP, ImageFormat::Bmp, ImageFormat::Tiff]
                .into_iter()
                .map(|format| (format, encode(&rgb, format)))
                .collect();
        samples.push((ImageFormat::Png, encode(&rgba, ImageFormat::Png)));
        samples.push((ImageFormat::Png, encode(&deep, ImageFormat::Png)));
        samples.push((ImageFormat::Tiff, encode(&rgba, ImageFormat::Tiff)));
        samples.push((ImageFormat::Gif, gif));
        samples.push((ImageFormat::Png, std::fs::read(common::fixtures().join("images/tiny.png")).unwrap()));
        samples.push((ImageFormat::Jpeg, jpeg_with_orientation(6)));
        samples
    })
}

/// Where a file states its width and height: (offset, bytes, big endian) of each field. WebP's lossless header
/// packs both into 28 bits and is rewritten apart (see [`rewrite_size`]).
fn size_fields(format: ImageFormat, bytes: &[u8]) -> Vec<(usize, usize, bool)> {
    match format {
        // IHDR: width, height (the CRC is fixed up afterwards).
        ImageFormat::Png => vec![(16, 4, true), (20, 4, true)],
        // BITMAPINFOHEADER: width, height (signed; negative is top-down).
        ImageFormat::Bmp => vec![(18, 4, false), (22, 4, false)],
        // Every start of frame: height, width.
        ImageFormat::Jpeg => (0..bytes.len().saturating_sub(9))
            .filter(|&i| bytes[i] == 0xFF && (0xC0..=0xC2).contains(&bytes[i + 1]))
            .flat_map(|i| [(i + 7, 2, true), (i + 5, 2, true)])
            .collect(),
        // Logical screen, then each image descriptor.
        ImageFormat::Gif => {
            let mut fields = vec![(6, 2, false), (8, 2, false)];
            let mut at = 13 + if bytes[10] & 0x80 != 0 { 3 << ((bytes[10] & 7) + 1) } else { 0 };
            while at < bytes.len() {
                match bytes[at] {
                    0x2C => {
                        fields.extend([(at + 5, 2, false), (at + 7, 2, false)]);
                        let flags = bytes[at + 9];
                        at += 10 + if flags & 0x80 != 0 { 3 << ((flags & 7) + 1) } else { 0 } + 1;
                    }
                    0x21 => at += 2,
                    _ => break,
                }
                // Skip sub-blocks up to the terminator.
                while at < bytes.len() && bytes[at] != 0 {
                    at += usize::from(bytes[at]) + 1;
                }
                at += 1;
            }
            fields
        }
        // The first IFD's ImageWidth (256) and ImageLength (257), rewritten as LONG values.
        ImageFormat::Tiff => {
            let le = &bytes[..2] == b"II";
            let u16_at = |i: usize| {
                if le {
                    u16::from_le_bytes([bytes[i], bytes[i + 1]])
                } else {
                    u16::from_be_bytes([bytes[i], bytes[i + 1]])
                }
            };
            let ifd = if le {
                u32::from_le_bytes(bytes[4..8].try_into().unwrap())
            } else {
                u32::from_be_bytes(bytes[4..8].try_into().unwrap())
            } as usize;
            (0..usize::from(u16_at(ifd)))
                .map(|k| ifd + 2 + 12 * k)
                .filter(|&entry| matches!(u16_at(entry), 256 | 257))
                .map(|entry| (entry + 8, 4, !le))
                .collect()
        }
        _ => vec![],
    }
}

/// Writes `value` into every size field of the file (or only widths or heights: `which` 1 or 2), as a header of a
/// huge, zero or odd size would state it.
fn rewrite_size(format: ImageFormat, bytes: &mut [u8], value: u32, which: u8) {
    if format == ImageFormat::WebP {
        // VP8L at 12, its signature byte at 20, then width - 1 and height - 1 in 14 bits each.
        if &bytes[12..16] == b"VP8L" {
            let mut bits = u32::from_le_bytes(bytes[21..25].try_into().unwrap());
            let value = value.saturating_sub(1) & 0x3FFF;
            if which & 1 != 0 {
                bits = (bits & !0x3FFF) | value;
            }
            if which & 2 != 0 {
                bits = (bits & !(0x3FFF << 14)) | (value << 14);
            }
            bytes[21..25].copy_from_slice(&bits.to_le_bytes());
        }
        return;
    }
    for (k, (at, size, big_endian)) in size_fields(format, bytes).into_iter().enumerate() {
        if which & (1 << (k % 2)) == 0 || at + size > bytes.len() {
            continue;
        }
        let field = if big_endian { value.to_be_bytes() } else { value.to_le_bytes() };
        let field = if big_endian { &field[4 - size..] } else { &field[..size] };
        bytes[at..at + size].copy_from_slice(field);
        if format == ImageFormat::Tiff {
            // Type LONG, so that all four bytes count.
            let long = if big_endian { [0, 4] } else { [4, 0] };
            bytes[at - 6..at - 4].copy_from_slice(&long);
        }
    }
    if format == ImageFormat::Png {
        let crc = crc32fast::hash(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    }
}

/// Pieces of the formats' syntax that the edits insert beside random bytes: chunk names and magic numbers.
const FORMAT_TOKENS: &[&str] = &["IHDR", "IDAT", "IEND", "PLTE", "GIF89a", "RIFF", "WEBP", "VP8L", "II*\0", "BM"];

fn edit() -> impl Strategy<Value = Edit> {
    proptest_support::edit(FORMAT_TOKENS)
}

/// Limits around the samples' sizes (35 pixels and so on) and the default.
fn limits() -> impl Strategy<Value = ImageLimits> {
    prop::sample::select(vec![24u64, 35, 851, 4096, 1 << 16])
        .prop_map(|max_pixels| ImageLimits { max_pixels, ..ImageLimits::default() })
}

fn check_decoded(bytes: &[u8], limits: &ImageLimits) -> Result<(), TestCaseError> {
    match decode_image(bytes, limits) {
        Ok(image) => {
            let (width, height) = image.dimensions();
            prop_assert!(width > 0 && height > 0);
            prop_assert!(u64::from(width) * u64::from(height) <= limits.max_pixels, "{width}x{height}");
        }
        Err(ImageError::TooManyPixels { width, height, limit }) => {
            prop_assert_eq!(limit, limits.max_pixels);
            prop_assert!(u64::from(width) * u64::from(height) > limit);
        }
        Err(ImageError::Empty) => prop_assert!(bytes.is_empty()),
        Err(ImageError::TooManyBytes { .. }) => prop_assert!(false, "the samples are far below max_bytes"),
        Err(ImageError::UnsupportedFormat | ImageError::Undecodable(_)) => {}
    }
    Ok(())
}

proptest! {
    // Each case decodes a file of a few hundred bytes: cheap, but the image codecs are many.
    #![proptest_config(proptest_support::config(384))]

    #[test]
    fn mutated_files_decode_within_the_limits_or_fail_with_a_known_error(
        sample in any::<Index>(), edits in vec(edit(), 1..5), limits in limits(),
    ) {
        let (_, original) = &samples()[sample.index(samples().len())];
        let mut bytes = original.clone();
        for edit in &edits {
            apply(&mut bytes, edit);
        }
        check_decoded(&bytes, &limits)?;
    }

    #[test]
    fn rewritten_header_sizes_are_refused_or_decoded_within_the_limits(
        sample in any::<Index>(),
        size in prop_oneof![
            Just(0u32), Just(1), 2u32..300, Just(u32::from(u16::MAX)), Just(1 << 20), Just(i32::MAX as u32),
            Just(u32::MAX), any::<u32>(),
        ],
        which in 1u8..=3,
        edits in vec(edit(), 0..2),
        limits in limits(),
    ) {
        let (format, original) = &samples()[sample.index(samples().len())];
        let mut bytes = original.clone();
        rewrite_size(*format, &mut bytes, size, which);
        for edit in &edits {
            apply(&mut bytes, edit);
        }
        check_decoded(&bytes, &limits)?;
    }
}

#[test]
fn the_size_rewrites_reach_every_format() {
    // Without the edits, a size past the limit is refused from each format's header.
    for (format, original) in samples() {
        let mut bytes = original.clone();
        rewrite_size(*format, &mut bytes, 3000, 3);
        let error = decode_image(&bytes, &ImageLimits { max_pixels: 4096, ..ImageLimits::default() }).unwrap_err();
        assert!(matches!(error, ImageError::TooManyPixels { .. }), "{format:?}: {error}");
    }
}
