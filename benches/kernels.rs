//! Criterion micro-benchmarks of the hot pure-Rust pieces, so that regressions show:
//! `cargo bench --bench kernels`. Inputs are the sizes of a 1024-px SAM model on a 2304x1536 photo.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use image::RgbImage;
use ndarray::Array2;
use samserve::mask::full_size::threshold_at_original;
use samserve::mask::upscale::{upscale_logits, upscale_to_input};
use samserve::mask::{self, BinaryMask, polygon, rle};
use samserve::model::preprocess::{ImageSize, normalize_and_pad, resize_bilinear, resized_size};

const MEAN: [f32; 3] = [123.675, 116.28, 103.53];
const STD: [f32; 3] = [58.395, 57.12, 57.375];

fn photo() -> RgbImage {
    RgbImage::from_fn(2304, 1536, |x, y| image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x * y) % 239) as u8]))
}

/// Low-res logits of a blob with a hole: positive inside an ellipse ring, negative outside.
fn logits() -> Array2<f32> {
    Array2::from_shape_fn((256, 256), |(y, x)| {
        let r = (((x as f32 - 120.0) / 70.0).powi(2) + ((y as f32 - 110.0) / 50.0).powi(2)).sqrt();
        8.0 * (1.0 - r) * (r - 0.3)
    })
}

fn kernels(c: &mut Criterion) {
    let image = photo();
    let original = ImageSize::new(1536, 2304);
    let resized = resized_size(original, 1024);
    c.bench_function("resize 2304x1536 -> 1024", |b| b.iter(|| resize_bilinear(black_box(&image), resized)));
    let small = resize_bilinear(&image, resized);
    c.bench_function("normalize and pad to 1024", |b| {
        b.iter(|| normalize_and_pad(black_box(small.as_raw()), small.width() as usize, 1024, MEAN, STD))
    });

    let low_res = logits();
    c.bench_function("upsample 256 -> 2304x1536", |b| {
        b.iter(|| upscale_logits(black_box(low_res.view()), 1024, resized, original))
    });
    let at_input = upscale_to_input(low_res.view(), 1024, resized);
    c.bench_function("threshold + stability + runs at 2304x1536, from 1024", |b| {
        b.iter(|| threshold_at_original(black_box(at_input.view()), original, 1.0))
    });
    let full = upscale_logits(low_res.view(), 1024, resized, original);
    c.bench_function("threshold 2304x1536", |b| b.iter(|| mask::threshold(black_box(&full))));
    c.bench_function("stability score 2304x1536", |b| b.iter(|| mask::stability_score(black_box(full.view()), 1.0)));

    let binary: BinaryMask = mask::threshold(&full);
    c.bench_function("RLE encode 2304x1536", |b| b.iter(|| rle::encode(black_box(&binary))));
    let coco = rle::encode(&binary);
    c.bench_function("RLE decode 2304x1536", |b| b.iter(|| rle::decode(black_box(&coco)).unwrap()));
    c.bench_function("polygons 2304x1536", |b| b.iter(|| polygon::polygons(black_box(&binary))));
}

criterion_group!(benches, kernels);
criterion_main!(benches);
