//! `samserve eval` and COCO loading: the numbers an independent implementation of the protocol (with the official
//! pre- and post-processing, tools/make_coco_fixtures.py) gets for the fixture model; pycocotools' polygon
//! rasterization; clear errors for malformed annotation files.

mod common;

use std::path::PathBuf;
use std::process::Command;

use samserve::coco::{self, CocoError};
use samserve::mask::{polygon, rle};

fn coco_dir() -> PathBuf {
    common::fixtures().join("coco")
}

#[test]
fn eval_reproduces_the_reference_numbers() {
    let model = common::load_model("tiny");
    let dataset = coco::load(&coco_dir().join("annotations.json")).unwrap();
    let report = samserve::eval::evaluate(&model, &dataset, &coco_dir().join("images")).unwrap();
    let expected = common::read_json("coco/expected_tiny.json");
    assert_eq!(report.instances as u64, expected["instances"].as_u64().unwrap());
    assert_eq!(report.images, 3);
    let ours = serde_json::to_value(&report.miou).unwrap();
    for (mode, value) in expected["miou"].as_object().unwrap() {
        let (ours, reference) = (ours[mode].as_f64().unwrap(), value.as_f64().unwrap());
        assert!((ours - reference).abs() < 2e-3, "{mode}: {ours} vs {reference}");
    }
}

#[test]
fn the_three_segmentation_forms_load() {
    let dataset = coco::load(&coco_dir().join("annotations.json")).unwrap();
    let counts: Vec<usize> = dataset.iter().map(|image| image.instances.len()).collect();
    // Image 1: compressed RLE, image 2: uncompressed RLE, image 3: polygons (its crowd annotation left out).
    assert_eq!(counts, vec![1, 4, 3], "{counts:?}");
    assert_eq!((dataset[2].width, dataset[2].height), (160, 128));
    assert!(dataset.iter().all(|image| image.instances.iter().all(|m| m.area() > 0)));
}

#[test]
fn polygons_rasterize_exactly_like_pycocotools() {
    let vectors = common::read_json("polygons.json");
    for (i, vector) in vectors.as_array().unwrap().iter().enumerate() {
        let rings: Vec<Vec<f64>> = serde_json::from_value(vector["rings"].clone()).unwrap();
        let (height, width) = (vector["height"].as_u64().unwrap() as usize, vector["width"].as_u64().unwrap() as usize);
        let mask = polygon::rasterize(&rings, height, width).unwrap();
        assert_eq!(rle::encode(&mask).counts, vector["counts"].as_str().unwrap(), "polygon case {i}");
    }
}

fn load_text(name: &str, text: &str) -> Result<Vec<coco::CocoImage>, CocoError> {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, text).unwrap();
    coco::load(&path)
}

#[test]
fn malformed_annotation_files_say_what_is_wrong() {
    let image = r#"{"id": 1, "file_name": "a.png", "width": 4, "height": 3}"#;
    let cases = [
        ("not-json.json", "{ nope".to_string(), "not a COCO annotation file"),
        ("no-images.json", r#"{"annotations": []}"#.to_string(), "images"),
        (
            "unknown-image.json",
            format!(
                r#"{{"images": [{image}], "annotations": [{{"id": 7, "image_id": 2, "segmentation": [[0,0,1,0,1,1]]}}]}}"#
            ),
            "image_id 2 is not among the images",
        ),
        (
            "short-polygon.json",
            format!(
                r#"{{"images": [{image}], "annotations": [{{"id": 7, "image_id": 1, "segmentation": [[0,0,1,1]]}}]}}"#
            ),
            "at least 3 points",
        ),
        (
            "wrong-size.json",
            format!(
                r#"{{"images": [{image}], "annotations": [{{"id": 7, "image_id": 1, "segmentation": {{"size": [5, 5], "counts": "0"}}}}]}}"#
            ),
            "RLE size [5, 5] is not the image's [3, 4]",
        ),
        (
            "bad-counts.json",
            format!(
                r#"{{"images": [{image}], "annotations": [{{"id": 7, "image_id": 1, "segmentation": {{"size": [3, 4], "counts": [5, 2]}}}}]}}"#
            ),
            "RLE runs cover 7 pixels",
        ),
        (
            "bad-type.json",
            format!(r#"{{"images": [{image}], "annotations": [{{"id": 7, "image_id": 1, "segmentation": 3}}]}}"#),
            "segmentation must be polygons",
        ),
    ];
    for (name, text, expected) in cases {
        let message = load_text(name, &text).unwrap_err().to_string();
        assert!(message.contains(expected), "{name}: {message}");
        assert!(message.contains(name), "{name}: the file is named in {message}");
    }
    let missing = coco::load(&PathBuf::from("/nonexistent/annotations.json")).unwrap_err();
    assert!(matches!(missing, CocoError::Read { .. }));
}

#[test]
fn the_cli_prints_the_report_as_json() {
    let output = Command::new(env!("CARGO_BIN_EXE_samserve"))
        .args(["--device", "cpu", "eval", "--json", "--model"])
        .arg(common::fixtures().join("models/tiny-lean"))
        .arg("--coco")
        .arg(coco_dir().join("annotations.json"))
        .arg("--images")
        .arg(coco_dir().join("images"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["model"], "tiny-lean");
    assert_eq!(report["instances"], 8);
    for mode in ["point_top", "point_best_of_3", "points_3", "box", "box_point"] {
        let value = report["miou"][mode].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&value), "{mode}: {value}");
    }
}

#[test]
fn a_single_mask_decoder_is_measured_on_the_one_mask_it_offers() {
    let model = common::load_model("samexporter-single");
    let dataset = coco::load(&coco_dir().join("annotations.json")).unwrap();
    let report = samserve::eval::evaluate(&model, &dataset, &coco_dir().join("images")).unwrap();
    assert_eq!(report.masks_per_click, 1);
    assert_eq!(report.miou.point_top, report.miou.point_best_of_3);
    assert!(report.table().contains("1 point (best of 1)"), "{}", report.table());
    let multimask = samserve::eval::evaluate(&common::load_model("tiny"), &dataset, &coco_dir().join("images"));
    assert_eq!(multimask.unwrap().masks_per_click, 3);
}
