//! Decoding uploads: formats, pixel types, EXIF orientation and limits.

use std::io::Cursor;

use image::codecs::gif::GifEncoder;
use image::{DynamicImage, Frame, ImageBuffer, ImageFormat, Luma, LumaA, Rgb, RgbImage, Rgba, RgbaImage};
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
