//! In-process stage timings of the samserve pipeline: the "bare" side of `tools/benchmarks.py`, which runs them
//! next to the HTTP service and the official segment-anything code in one run and writes the ratios.
//!
//! `cargo bench --bench pipeline -- [--model DIR|builtin] [--image PATH] [--threads N] [--device D] [--ort-lib LIB]
//! [--only STAGE,...] [--json]`: p50 and p99 milliseconds per stage (one line of JSON with --json). Defaults: the AMG
//! fixture model, landscape.png, 2 threads, the CPU and the library `cargo build` fetched.
//! The `everything` stages start from the decoded image (encoding included), like the official generator.

use std::path::PathBuf;

use samserve::amg::{self, AmgInput, AmgParams};
use samserve::image_input::{ImageLimits, decode_image};
use samserve::model::{Device, Point, PointLabel, Prompt, Runtime, RuntimeOptions, SamModel, SessionCounts};
use samserve::segment::{OutputFormat, SegmentOptions, SmallRegions, segment};
use samserve::timing::percentiles;
use serde_json::json;

fn argument(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let threads = argument("--threads").and_then(|t| t.parse().ok()).unwrap_or(2);
    let device: Device = argument("--device").map_or(Ok(Device::Cpu), |d| d.parse()).unwrap_or_else(|e| panic!("{e}"));
    let runtime = Runtime::load(RuntimeOptions {
        library: argument("--ort-lib").map(PathBuf::from),
        device,
        intra_threads: Some(threads),
        ..RuntimeOptions::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let model_arg = argument("--model").unwrap_or_else(|| fixtures.join("models/amg").display().to_string());
    let model = if model_arg == "builtin" {
        SamModel::builtin(&runtime, SessionCounts::default())
    } else {
        SamModel::load(&PathBuf::from(&model_arg), &runtime, SessionCounts::default())
    }
    .unwrap_or_else(|e| panic!("{e}"));
    let image_path = argument("--image").map_or_else(|| fixtures.join("images/landscape.png"), PathBuf::from);
    let bytes = std::fs::read(&image_path).unwrap();
    let image = decode_image(&bytes, &ImageLimits::default()).unwrap();
    let embedding = model.encoder.encode(&image).unwrap();
    let host_embedding = embedding.without_device_copy();
    let (width, height) = (f64::from(image.width()), f64::from(image.height()));
    let clicks = [Prompt {
        points: vec![Point { x: width * 0.6, y: height * 0.6, label: PointLabel::Foreground }],
        ..Prompt::default()
    }];
    let single_rle =
        SegmentOptions { multimask: false, outputs: vec![OutputFormat::Rle], small_regions: SmallRegions::default() };
    let with_crops = AmgParams { crop_n_layers: 1, ..AmgParams::default() };

    // (name, timed runs, work); `--only a,b` picks some.
    type Stage<'a> = (&'static str, usize, Box<dyn FnMut() + 'a>);
    let stages: Vec<Stage> = vec![
        ("decode_image", 30, Box::new(|| drop(decode_image(&bytes, &ImageLimits::default()).unwrap()))),
        ("preprocess", 30, Box::new(|| drop(model.encoder.preprocess(&image)))),
        ("encode", 20, Box::new(|| drop(model.encoder.encode(&image).unwrap()))),
        (
            "decode_and_encode",
            20,
            Box::new(|| {
                let decoded = decode_image(&bytes, &ImageLimits::default()).unwrap();
                drop(model.encoder.encode(&decoded).unwrap());
            }),
        ),
        ("decoder_run", 200, Box::new(|| drop(model.decoder.decode(&embedding, &clicks).unwrap()))),
        // With encoder and decoder on one GPU, `decoder_run` takes the embedding on the device; this is the
        // same run given the host copy (as when the decoder runs elsewhere), to show what keeping it there saves.
        ("decoder_run_host_embedding", 200, Box::new(|| drop(model.decoder.decode(&host_embedding, &clicks).unwrap()))),
        ("segment_click_rle", 200, Box::new(|| drop(segment(&model, &embedding, &clicks, &single_rle).unwrap()))),
        ("everything", 3, Box::new(|| drop(amg::generate(&model, AmgInput::Image(&image), &AmgParams::default())))),
        ("everything_crops", 2, Box::new(|| drop(amg::generate(&model, AmgInput::Image(&image), &with_crops)))),
    ];
    let only: Option<Vec<String>> = argument("--only").map(|list| list.split(',').map(str::to_string).collect());
    let selected = |name: &str| only.as_ref().is_none_or(|only| only.iter().any(|o| o == name));
    let stages: Vec<(&str, (f64, f64))> = stages
        .into_iter()
        .filter(|(name, ..)| selected(name))
        .map(|(name, repeats, mut work)| (name, percentiles(repeats, &mut work)))
        .collect();
    let masks = |stage: &str, params: &AmgParams| {
        selected(stage).then(|| amg::generate(&model, AmgInput::Image(&image), params).map_or(0, |m| m.len()))
    };
    let counts = (masks("everything", &AmgParams::default()), masks("everything_crops", &with_crops));
    if json {
        let map: serde_json::Map<String, serde_json::Value> =
            stages.iter().map(|(name, (p50, p99))| (name.to_string(), json!({"p50": p50, "p99": p99}))).collect();
        let report = json!({
            "model": model.name(),
            "image": [image.width(), image.height()],
            "threads": threads,
            "devices": [model.placement.0.to_string(), model.placement.1.to_string()],
            "everything_masks": counts.0,
            "everything_crops_masks": counts.1,
            "stages": map,
        });
        println!("{report}");
    } else {
        let (encoder, decoder) = model.placement;
        println!(
            "{} on {}x{}, {threads} threads; encoder on {encoder}, decoder on {decoder}",
            model.name(),
            image.width(),
            image.height()
        );
        for (name, (p50, p99)) in stages {
            println!("{name:>20}  p50 {p50:9.3} ms  p99 {p99:9.3} ms");
        }
        println!("everything: {:?} masks, with a crop layer: {:?}", counts.0, counts.1);
    }
}
