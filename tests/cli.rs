//! The `samserve` binary: `segment` end to end, and clear one-line errors when something is missing or wrong.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use samserve::mask::rle;

fn samserve(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_samserve"))
        .args(args)
        .env_remove("ORT_DYLIB_PATH")
        .env_remove("SAMSERVE_ORT_LIB")
        .output()
        .unwrap()
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn out_file(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    dir.join(name)
}

/// The first case of `name` for `image` in `parity.json`: (prompt JSON, official best mask).
fn parity_case(image: &str, name: &str) -> (serde_json::Value, samserve::mask::BinaryMask) {
    parity_case_in("parity.json", image, name)
}

fn parity_case_in(fixture_file: &str, image: &str, name: &str) -> (serde_json::Value, samserve::mask::BinaryMask) {
    let fixtures = common::read_json(fixture_file);
    let case = fixtures["cases"].as_array().unwrap().iter().find(|c| c["image"] == image && c["name"] == name).unwrap();
    (case["prompt"].clone(), common::best_official_mask(case))
}

/// `samserve segment` on a fixture model and image, writing `out`; panics with stderr on failure.
fn segment_fixture(model: &str, image: &str, prompt_args: &[&str], out: &Path) {
    let model = common::fixtures().join("models").join(model);
    let image = common::fixtures().join("images").join(image);
    let mut args = vec!["segment", "--model", path_str(&model), path_str(&image), "--out", path_str(out)];
    args.extend_from_slice(prompt_args);
    let result = samserve(&args);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
}

#[test]
fn segment_writes_the_official_mask_as_png() {
    let (prompt, official) = parity_case("landscape.png", "box_point");
    let point = &prompt["points"][0];
    let bbox = prompt["box"].as_array().unwrap().iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",");
    let out = out_file("cli-box-point.png");
    let point = format!("{},{},1", point[0], point[1]);
    segment_fixture("tiny", "landscape.png", &["--point", &point, "--box", &bbox], &out);
    let png = image::open(&out).unwrap();
    assert_eq!(png.color(), image::ColorType::L8);
    let png = png.to_luma8();
    let mask = samserve::mask::BinaryMask::from_fn(png.width() as usize, png.height() as usize, |x, y| {
        png.get_pixel(x as u32, y as u32).0[0] == 255
    });
    assert!(mask.iou(&official) >= 0.99, "IoU {}", mask.iou(&official));
}

#[test]
fn segment_json_has_the_api_result_shape() {
    let (prompt, official) = parity_case("portrait.jpg", "point_multimask");
    let point = &prompt["points"][0];
    let out = out_file("cli-multimask.json");
    let point = format!("{},{}", point[0], point[1]);
    let args = ["--point", &point, "--multimask", "--json", "--output", "rle,polygons,png"];
    segment_fixture("tiny-lean", "portrait.jpg", &args, &out);
    let body: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(body["model"], "tiny-lean");
    assert_eq!((body["width"].as_u64(), body["height"].as_u64()), (Some(300), Some(520)));
    let masks = body["results"][0]["masks"].as_array().unwrap();
    assert_eq!(masks.len(), 3);
    let scores: Vec<f64> = masks.iter().map(|m| m["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "sorted by score: {scores:?}");
    for key in ["stability_score", "area", "bbox", "rle", "polygons", "png"] {
        assert!(masks[0].get(key).is_some(), "missing {key}");
    }
    let best: rle::CocoRle = serde_json::from_value(masks[0]["rle"].clone()).unwrap();
    assert!(rle::decode(&best).unwrap().iou(&official) >= 0.99);
}

#[test]
fn segment_takes_a_folder_of_samexporter_files_without_model_toml() {
    let (prompt, official) = parity_case_in("parity_samexporter.json", "gray.png", "box");
    let bbox = prompt["box"].as_array().unwrap().iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",");
    let out = out_file("cli-samexporter.png");
    segment_fixture("samexporter-hwc", "gray.png", &["--box", &bbox], &out);
    let png = image::open(&out).unwrap().to_luma8();
    let mask = samserve::mask::BinaryMask::from_fn(png.width() as usize, png.height() as usize, |x, y| {
        png.get_pixel(x as u32, y as u32).0[0] == 255
    });
    assert!(mask.iou(&official) >= 0.99, "IoU {}", mask.iou(&official));
}

/// The issue's "done when": `segment --model DIR IMAGE --point X,Y --json` on the two files samexporter writes for
/// SAM 2 answers what SAM2ImagePredictor answers.
#[test]
fn segment_takes_a_folder_of_sam2_files_and_answers_as_sam2_image_predictor() {
    let (prompt, official) = parity_case_in("parity_sam2.json", "landscape.png", "fg_bg");
    let points = prompt["points"].as_array().unwrap();
    let point = |i: usize| format!("{},{},{}", points[i][0], points[i][1], prompt["labels"][i]);
    let out = out_file("cli-sam2.json");
    segment_fixture("sam2-samexporter", "landscape.png", &["--point", &point(0), "--point", &point(1), "--json"], &out);
    let body: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let best: rle::CocoRle = serde_json::from_value(body["results"][0]["masks"][0]["rle"].clone()).unwrap();
    assert!(rle::decode(&best).unwrap().iou(&official) >= 0.99);
}

#[test]
fn segment_uses_the_built_in_model_by_default() {
    let out = out_file("cli-builtin.json");
    let image = common::fixtures().join("images/landscape.png");
    let result = samserve(&["segment", path_str(&image), "--point", "475,365", "--json", "--out", path_str(&out)]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let body: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(body["model"], "samserve-s");
    assert!(body["results"][0]["masks"][0]["area"].as_u64().unwrap() > 0);
}

fn stderr_of(result: &Output) -> String {
    assert!(!result.status.success());
    String::from_utf8_lossy(&result.stderr).into_owned()
}

#[test]
fn a_missing_onnx_runtime_library_is_one_line_that_says_what_to_do() {
    let image = common::fixtures().join("images/tiny.png");
    let model = common::fixtures().join("models/tiny");
    let args = ["segment", "--model", path_str(&model), path_str(&image), "--point", "3,3", "--out", "/dev/null"];
    let missing = stderr_of(&samserve(&[&["--ort-lib", "/nonexistent/libonnxruntime.so"], &args[..]].concat()));
    assert_eq!(missing.trim().lines().count(), 1, "{missing}");
    assert!(missing.contains("ONNX Runtime library not found") && missing.contains("SAMSERVE_ORT_LIB"), "{missing}");

    let not_a_library = out_file("not-a-library.so");
    std::fs::write(&not_a_library, b"this is not a shared library").unwrap();
    let unusable = stderr_of(&samserve(&[&["--ort-lib", path_str(&not_a_library)], &args[..]].concat()));
    assert_eq!(unusable.trim().lines().count(), 1, "{unusable}");
    assert!(unusable.contains("cannot use ONNX Runtime") && unusable.contains("1.31 or newer"), "{unusable}");
}

#[test]
fn bad_prompts_images_and_models_fail_cleanly() {
    let image = common::fixtures().join("images/tiny.png");
    let model = common::fixtures().join("models/tiny");
    let run = |model: &Path, image: &Path, point: &str| {
        samserve(&["segment", "--model", path_str(model), path_str(image), "--point", point, "--out", "/dev/null"])
    };
    let outside = stderr_of(&run(&model, &image, "500,3"));
    assert!(outside.contains("outside the 37x23 image"), "{outside}");
    let bad_label = stderr_of(&run(&model, &image, "3,3,5"));
    assert!(bad_label.contains("label"), "{bad_label}");
    let not_image = stderr_of(&run(&model, &model.join("model.toml"), "3,3"));
    assert!(not_image.contains("unsupported image format"), "{not_image}");
    let no_model = stderr_of(&run(&common::fixtures(), &image, "3,3"));
    assert!(no_model.contains("model.toml"), "{no_model}");
    for stderr in [outside, bad_label, not_image, no_model] {
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// A folder with images in a subfolder, a broken image and a non-image file (skipped).
fn batch_folder() -> PathBuf {
    let folder = common::temp_dir("batch");
    let images = common::fixtures().join("images");
    std::fs::create_dir_all(folder.join("sub")).unwrap();
    std::fs::copy(images.join("landscape.png"), folder.join("sub/landscape.png")).unwrap();
    std::fs::copy(images.join("gray.png"), folder.join("gray.png")).unwrap();
    std::fs::write(folder.join("broken.jpg"), b"\xff\xd8\xff not a jpeg").unwrap();
    std::fs::write(folder.join("notes.txt"), b"not an image").unwrap();
    folder
}

#[test]
fn batch_everything_on_a_folder_writes_coco_results_and_fails_on_the_broken_file() {
    let folder = batch_folder();
    let output = folder.join("results.json");
    let masks = folder.join("masks");
    let model = common::fixtures().join("models/tiny-lean");
    let run = samserve(&[
        "batch",
        "--model",
        path_str(&model),
        path_str(&folder),
        "--everything",
        "--points-per-side",
        "8",
        "--pred-iou-thresh",
        "0.2",
        "--stability-score-thresh",
        "0",
        "--output",
        path_str(&output),
        "--masks-dir",
        path_str(&masks),
        "--workers",
        "2",
    ]);
    let stderr = stderr_of(&run);
    assert!(stderr.contains("1 of 3 images failed") && stderr.contains("broken.jpg"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let results: serde_json::Value = serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap();
    let names: Vec<&str> =
        results["images"].as_array().unwrap().iter().map(|i| i["file_name"].as_str().unwrap()).collect();
    assert_eq!(names, ["gray.png", "sub/landscape.png"]);
    let annotations = results["annotations"].as_array().unwrap();
    assert!(!annotations.is_empty());
    let first_of_landscape = annotations.iter().position(|a| a["image_id"] == 2).unwrap();
    let png = image::open(masks.join(format!("sub/landscape/{}.png", 0))).unwrap().to_luma8();
    let coco: rle::CocoRle = serde_json::from_value(annotations[first_of_landscape]["segmentation"].clone()).unwrap();
    let decoded = rle::decode(&coco).unwrap();
    assert_eq!((png.width() as usize, png.height() as usize), (decoded.width, decoded.height));
    assert!(png.pixels().zip(&decoded.data).all(|(p, &v)| (p.0[0] == 255) == (v == 1)));
}

#[test]
fn batch_with_prompts_and_its_usage_errors() {
    let folder = batch_folder();
    let prompts = folder.join("prompts.json");
    std::fs::write(
        &prompts,
        br#"{"landscape.png": [{"box": [100, 80, 400, 300]}, {"points": [[5, 5]], "labels": [1]}]}"#,
    )
    .unwrap();
    let output = folder.join("prompted.json");
    let model = common::fixtures().join("models/tiny-lean");
    let landscape = folder.join("sub/landscape.png");
    let args = ["batch", "--model", path_str(&model), path_str(&landscape), "--output", path_str(&output)];
    let run = samserve(&[&args[..], &["--prompts", path_str(&prompts)]].concat());
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let results: serde_json::Value = serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap();
    let indices: Vec<u64> =
        results["annotations"].as_array().unwrap().iter().map(|a| a["prompt_index"].as_u64().unwrap()).collect();
    assert_eq!(indices, [0, 1]);

    let neither = stderr_of(&samserve(&args));
    assert!(neither.contains("--prompts FILE or --everything"), "{neither}");
    let gray = folder.join("gray.png");
    let unprompted = samserve(
        &[
            &["batch", "--model", path_str(&model), path_str(&gray), "--output", path_str(&output)][..],
            &["--prompts", path_str(&prompts)],
        ]
        .concat(),
    );
    assert!(stderr_of(&unprompted).contains("no prompts given for this file"));
    let missing = stderr_of(&samserve(&["batch", "/nonexistent/folder", "--everything", "--output", "/dev/null"]));
    assert!(missing.contains("/nonexistent/folder"), "{missing}");
}

#[test]
fn device_cuda_without_a_cuda_library_fails_with_what_to_do() {
    let image = common::fixtures().join("images/tiny.png");
    let args = ["--device", "cuda", "segment", path_str(&image), "--point", "3,3", "--out", "/dev/null"];
    let message = stderr_of(&samserve(&args));
    assert_eq!(message.trim().lines().count(), 1, "{message}");
    assert!(message.contains("no CUDA execution provider") && message.contains("onnxruntime-gpu"), "{message}");
    let bad = stderr_of(&samserve(&["--device", "cuda:one", "segment", path_str(&image), "--out", "/dev/null"]));
    assert!(bad.contains("auto, cpu, cuda or cuda:N"), "{bad}");
}

#[test]
fn serve_refuses_zero_workers_and_sessions_before_starting() {
    for option in ["--encoder-sessions", "--decoder-sessions", "--job-workers"] {
        let stderr = stderr_of(&samserve(&["serve", "--port", "0", option, "0"]));
        assert!(stderr.contains(option) && stderr.contains("must be at least 1"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // actix-web takes 1 to 512 HTTP workers and panics outside.
    for workers in ["0", "513"] {
        let stderr = stderr_of(&samserve(&["serve", "--port", "0", "--workers", workers]));
        assert!(stderr.contains("--workers") && stderr.contains("1..=512"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn a_single_mask_decoder_is_refused_for_everything_and_multimask() {
    let model = common::fixtures().join("models/samexporter-single");
    let image = common::fixtures().join("images/tiny.png");
    let (model, image) = (path_str(&model), path_str(&image));
    let everything = stderr_of(&samserve(&["everything", "--model", model, image, "--out", "/dev/null"]));
    let batch = stderr_of(&samserve(&["batch", "--model", model, image, "--everything", "--output", "/dev/null"]));
    let multimask = stderr_of(&samserve(&[
        "segment",
        "--model",
        model,
        image,
        "--point",
        "3,3",
        "--multimask",
        "--out",
        "/dev/null",
    ]));
    for stderr in [everything, batch, multimask] {
        assert!(stderr.contains("one mask per prompt") && stderr.trim().lines().count() == 1, "{stderr}");
    }
}

#[test]
fn models_inspect_says_what_a_folder_holds_or_why_it_cannot_be_served() {
    let inspect = |folder: &Path| samserve(&["--device", "cpu", "models", "inspect", path_str(folder)]);
    let models = common::fixtures().join("models");
    let hwc = inspect(&models.join("samexporter-hwc"));
    let report = String::from_utf8_lossy(&hwc.stdout);
    assert!(hwc.status.success(), "{}", String::from_utf8_lossy(&hwc.stderr));
    for expected in ["samexporter-hwc", "rgb_hwc", "S = 256", "[128, 16, 16]", "samserve_amg.encoder.onnx", "4 masks"] {
        assert!(report.contains(expected), "{expected} missing from:\n{report}");
    }
    let single = String::from_utf8_lossy(&inspect(&models.join("samexporter-single")).stdout).into_owned();
    assert!(single.contains("multimask      no") && single.contains("1 mask per prompt"), "{single}");
    let sam2 = String::from_utf8_lossy(&inspect(&models.join("sam2-samexporter")).stdout).into_owned();
    for expected in ["family         sam2", "high_res_feats_0 [", "image_embed [", "3 multimask candidates"] {
        assert!(sam2.contains(expected), "{expected} missing from:\n{sam2}");
    }
    let transformers = String::from_utf8_lossy(&inspect(&models.join("slimsam-transformers")).stdout).into_owned();
    for expected in ["image_positional_embeddings [", "points, no box, no mask_input", "vision_encoder.onnx"] {
        assert!(transformers.contains(expected), "{expected} missing from:\n{transformers}");
    }
    let refused = stderr_of(&inspect(&common::fixtures()));
    assert!(refused.contains("not one encoder and one decoder") && refused.trim().lines().count() == 1, "{refused}");
}
