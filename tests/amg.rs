//! "Segment everything" parity with the official SamAutomaticMaskGenerator (tests/fixtures/amg.json, made by
//! tools/make_amg_fixtures.py) and SAM2AutomaticMaskGenerator (tests/fixtures/amg_sam2.json): for each case, at least 95% of the official masks have a samserve mask with
//! IoU >= 0.9, and the mask count is within 10%. Through the library, the CLI and the HTTP route.

mod common;

use std::process::Command;

use samserve::amg::{self, AmgInput, AmgParams, GeneratedMask};
use samserve::image_input::{ImageLimits, decode_image};
use samserve::mask::{BinaryMask, rle};
use serde_json::{Value, json};

fn official_masks(case: &Value) -> Vec<(BinaryMask, f64)> {
    case["masks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let coco: rle::CocoRle = serde_json::from_value(m["segmentation"].clone()).unwrap();
            (rle::decode(&coco).unwrap(), m["predicted_iou"].as_f64().unwrap())
        })
        .collect()
}

fn params_of(case: &Value) -> AmgParams {
    serde_json::from_value(case["params"].clone()).unwrap()
}

/// Checks the parity bars; returns a one-line summary.
fn assert_parity(label: &str, official: &[(BinaryMask, f64)], ours: &[BinaryMask]) -> String {
    assert!(!official.is_empty(), "{label}: the fixture has no mask, so it tests nothing");
    let mut matched = 0;
    let mut worst = 1.0f64;
    for (mask, _) in official {
        let best = ours.iter().map(|m| m.iou(mask)).fold(0.0, f64::max);
        worst = worst.min(best);
        matched += usize::from(best >= 0.9);
    }
    let (count, expected) = (ours.len() as f64, official.len() as f64);
    let summary = format!("{label}: {matched}/{expected} official masks matched, {count} masks, worst IoU {worst:.3}");
    assert!(matched as f64 >= 0.95 * expected, "{summary}");
    assert!((count - expected).abs() <= 0.1 * expected, "{summary}");
    summary
}

fn binaries(masks: &[GeneratedMask]) -> Vec<BinaryMask> {
    masks.iter().map(GeneratedMask::binary).collect()
}

#[test]
fn generator_matches_the_official_one() {
    generator_parity("amg", "amg.json");
}

/// SAM2AutomaticMaskGenerator on the SAM 2 fixture model (tools/make_sam2_fixtures.py): its own default
/// pred_iou_thresh, and min_mask_region_area as its predictor's hole and sprinkle filling of the low-res logits.
#[test]
fn generator_matches_the_official_sam2_one() {
    generator_parity("sam2-samexporter", "amg_sam2.json");
}

fn generator_parity(model_name: &str, fixture_file: &str) {
    let fixture = common::read_json(fixture_file);
    let model = common::load_model(model_name);
    for case in fixture["cases"].as_array().unwrap() {
        let file = case["image"].as_str().unwrap();
        let bytes = std::fs::read(common::fixtures().join("images").join(file)).unwrap();
        let image = decode_image(&bytes, &ImageLimits::default()).unwrap();
        let params = params_of(case);
        let masks = amg::generate(&model, AmgInput::Image(&image), &params).unwrap();
        let official = official_masks(case);
        println!("{}", assert_parity(&format!("{file} {}", case["params"]), &official, &binaries(&masks)));
        // Same scores and crop boxes for masks that match exactly (PNG inputs decode identically).
        if file.ends_with(".png") {
            for (generated, reference) in masks.iter().zip(case["masks"].as_array().unwrap()) {
                let official_score = reference["predicted_iou"].as_f64().unwrap();
                assert!((f64::from(generated.predicted_iou) - official_score).abs() < 1e-3, "{file}: score");
                let crop = generated.crop_box;
                let expected: Vec<f64> = serde_json::from_value(reference["crop_box"].clone()).unwrap();
                assert_eq!(vec![crop.x0 as f64, crop.y0 as f64, crop.width() as f64, crop.height() as f64], expected);
            }
        }
    }
}

#[test]
fn cli_and_http_give_the_official_masks_too() {
    let fixture = common::read_json("amg.json");
    let case = &fixture["cases"][0];
    assert_eq!(case["params"], json!({}), "case 0 uses the defaults");
    let file = case["image"].as_str().unwrap();
    let image_path = common::fixtures().join("images").join(file);
    let model = common::fixtures().join("models").join("amg");
    let official = official_masks(case);

    let out = common::temp_dir("amg-cli").join("masks.json");
    let run = Command::new(env!("CARGO_BIN_EXE_samserve"))
        .args(common::runtime_args())
        .args(["everything", "--model"])
        .args([&model, &image_path])
        .arg("--out")
        .arg(&out)
        .env_remove("ORT_DYLIB_PATH")
        .env_remove("SAMSERVE_ORT_LIB")
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let written: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let decode_all = |masks: &Value| -> Vec<BinaryMask> {
        masks
            .as_array()
            .unwrap()
            .iter()
            .map(|m| rle::decode(&serde_json::from_value(m["rle"].clone()).unwrap()).unwrap())
            .collect()
    };
    println!("{}", assert_parity("cli", &official, &decode_all(&written["masks"])));

    let server = common::server::Server::spawn(&["--model", model.to_str().unwrap()], &[]);
    let uploaded = server.upload(&std::fs::read(&image_path).unwrap());
    let path = format!("/v1/images/{}/everything", uploaded["image_id"].as_str().unwrap());
    let reply = server.post_json(&path, &json!({"output": ["rle", "polygons"]}));
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let body = reply.json();
    println!("{}", assert_parity("http", &official, &decode_all(&body["masks"])));
    let first = &body["masks"][0];
    let reference = &case["masks"][0];
    assert_eq!(first["bbox"], reference["bbox"], "the official generator's bbox convention");
    assert_eq!(first["point_coords"], reference["point_coords"]);
    assert!(first["polygons"].is_array());

    // Crop layers need the pixels, which a cached image no longer has; bad parameters are 422; unknown image 404.
    let crops = server.post_json(&path, &json!({"crop_n_layers": 1}));
    assert_eq!((crops.status, crops.error_code().as_str()), (422, "invalid_request"));
    let bad = server.post_json(&path, &json!({"points_per_side": -3}));
    assert_eq!(bad.status, 422);
    let unknown = server.post_json("/v1/images/0000/everything", &json!({}));
    assert_eq!(unknown.error_code(), "image_not_found");
}
