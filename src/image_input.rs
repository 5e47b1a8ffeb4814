//! Turning uploaded bytes into the RGB8 image the model sees: format sniffing, size limits checked before any pixel
//! is allocated, EXIF orientation, and conversion of gray, alpha and 16-bit images to RGB8.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

/// Limits on what one upload may cost.
#[derive(Debug, Clone, Copy)]
pub struct ImageLimits {
    /// Largest accepted encoded size, in bytes.
    pub max_bytes: usize,
    /// Largest accepted decoded size, in pixels (width x height).
    pub max_pixels: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self { max_bytes: 50 * 1024 * 1024, max_pixels: 50_000_000 }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ImageError {
    #[error("the image is empty (zero bytes)")]
    Empty,
    #[error("the image is {bytes} bytes, more than the limit of {limit} bytes")]
    TooManyBytes { bytes: usize, limit: usize },
    #[error("the image is {width}x{height} pixels, more than the limit of {limit} pixels")]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("unsupported image format (accepted: PNG, JPEG, WebP, BMP, TIFF, GIF)")]
    UnsupportedFormat,
    #[error("the image could not be decoded: {0}")]
    Undecodable(String),
}

const ACCEPTED_FORMATS: [ImageFormat; 6] =
    [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::WebP, ImageFormat::Bmp, ImageFormat::Tiff, ImageFormat::Gif];

/// Decodes an uploaded image to upright RGB8.
///
/// EXIF orientation is applied, so that coordinates refer to the image as viewers show it. Alpha is dropped
/// (not composited), gray is replicated to three channels and 16-bit samples are rounded to the nearest 8-bit value,
/// which is what `PIL.Image.open(f).convert("RGB")` gives users of the official predictor.
pub fn decode_image(bytes: &[u8], limits: &ImageLimits) -> Result<RgbImage, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(ImageError::TooManyBytes { bytes: bytes.len(), limit: limits.max_bytes });
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Undecodable(e.to_string()))?;
    // Room for the largest pixel type (RGBA, 16 bits per sample) at the pixel limit, plus decoder scratch.
    let mut decoder_limits = Limits::default();
    decoder_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(decoder_limits);
    match reader.format() {
        Some(format) if ACCEPTED_FORMATS.contains(&format) => {}
        _ => return Err(ImageError::UnsupportedFormat),
    }
    let mut decoder = reader.into_decoder().map_err(|e| ImageError::Undecodable(e.to_string()))?;
    // The header tells the size: refuse decompression bombs before a single pixel buffer exists.
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(ImageError::Undecodable(format!("the image has no pixels ({width}x{height})")));
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(ImageError::TooManyPixels { width, height, limit: limits.max_pixels });
    }
    let orientation = decoder.orientation().map_err(|e| ImageError::Undecodable(e.to_string()))?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| ImageError::Undecodable(e.to_string()))?;
    image.apply_orientation(orientation);
    Ok(match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    })
}
