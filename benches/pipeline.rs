//! Stage timings of the samserve pipeline on the fixture models, for `tools/bench_vs_official.py`, which runs the
//! official segment-anything code on the same workloads in the same run and prints the ratios.
//!
//! `cargo bench --bench pipeline [-- --json]`: median milliseconds per stage (one line of JSON with --json).

use std::path::PathBuf;
use std::time::Instant;

use samserve::amg::{self, AmgInput, AmgParams};
use samserve::image_input::{ImageLimits, decode_image};
use samserve::model::{Device, Point, PointLabel, Prompt, Runtime, SamModel, SessionCounts};
use samserve::segment::{OutputFormat, SegmentOptions, segment};

fn median_ms(repeats: usize, mut work: impl FnMut()) -> f64 {
    work(); // warm-up
    let mut times: Vec<f64> = (0..repeats)
        .map(|_| {
            let started = Instant::now();
            work();
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[repeats / 2]
}

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let threads = std::env::var("BENCH_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(2);
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let runtime = Runtime::load(None, Device::Cpu, Some(threads)).unwrap_or_else(|e| panic!("{e}"));
    let official = SamModel::load(&fixtures.join("models/tiny"), &runtime, SessionCounts::default()).unwrap();
    let lean = SamModel::load(&fixtures.join("models/tiny-lean"), &runtime, SessionCounts::default()).unwrap();
    let bytes = std::fs::read(fixtures.join("images/large.jpg")).unwrap();
    let image = decode_image(&bytes, &ImageLimits::default()).unwrap();
    let embedding = official.encoder.encode(&image).unwrap();
    let click = |i: usize| Prompt {
        points: vec![Point { x: 300.0 + 200.0 * i as f64, y: 700.0, label: PointLabel::Foreground }],
        ..Prompt::default()
    };
    let eight: Vec<Prompt> = (0..8).map(click).collect();
    let rle = SegmentOptions { multimask: true, outputs: vec![OutputFormat::Rle] };
    // Segment everything: the AMG fixture model (its weights make the default thresholds keep masks).
    let amg_model = SamModel::load(&fixtures.join("models/amg"), &runtime, SessionCounts::default()).unwrap();
    let photo =
        decode_image(&std::fs::read(fixtures.join("images/landscape.png")).unwrap(), &ImageLimits::default()).unwrap();
    let everything = |params: &AmgParams| drop(amg::generate(&amg_model, AmgInput::Image(&photo), params).unwrap());
    let with_crops = AmgParams { crop_n_layers: 1, ..AmgParams::default() };

    let stages = [
        ("decode_image", median_ms(15, || drop(decode_image(&bytes, &ImageLimits::default()).unwrap()))),
        ("preprocess", median_ms(15, || drop(official.encoder.preprocess(&image)))),
        ("encode", median_ms(15, || drop(official.encoder.encode(&image).unwrap()))),
        ("decode_official", median_ms(30, || drop(official.decoder.decode(&embedding, &[click(0)]).unwrap()))),
        ("decode_lean", median_ms(30, || drop(lean.decoder.decode(&embedding, &[click(0)]).unwrap()))),
        ("decode_8_prompts_lean", median_ms(15, || drop(lean.decoder.decode(&embedding, &eight).unwrap()))),
        ("segment_multimask_rle", median_ms(15, || drop(segment(&official, &embedding, &[click(0)], &rle).unwrap()))),
        ("everything", median_ms(3, || everything(&AmgParams::default()))),
        ("everything_crops", median_ms(3, || everything(&with_crops))),
    ];
    if json {
        let map: serde_json::Map<String, serde_json::Value> =
            stages.iter().map(|(name, ms)| (name.to_string(), serde_json::json!(ms))).collect();
        println!("{}", serde_json::Value::Object(map));
    } else {
        println!(
            "image {}x{}, model input {} px, {threads} threads",
            image.width(),
            image.height(),
            official.encoder.input_size()
        );
        for (name, ms) in stages {
            println!("{name:>24}  {ms:9.3} ms");
        }
    }
}
