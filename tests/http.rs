//! The HTTP service, tested over HTTP against the real `samserve serve` on an ephemeral port.

mod common;

use std::sync::{Arc, Barrier};

use common::server::Server;
use common::synthetic_png;
use samserve::mask::rle::{self, CocoRle};
use serde_json::{Value, json};

fn fixture_image(name: &str) -> Vec<u8> {
    std::fs::read(common::fixtures().join("images").join(name)).unwrap()
}

fn decode_rle(value: &Value) -> samserve::mask::BinaryMask {
    let coco: CocoRle = serde_json::from_value(value.clone()).unwrap();
    rle::decode(&coco).unwrap()
}

fn click(x: f64, y: f64) -> Value {
    json!({"points": [[x, y]], "labels": [1]})
}

/// The server still answers a good request.
fn assert_still_serving(server: &Server, image_id: &str) {
    assert_eq!(server.get("/healthz").status, 200);
    let reply = server.post_json(&format!("/v1/images/{image_id}/segment"), &json!({"prompts": [click(10.0, 10.0)]}));
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
}

#[test]
fn every_route_answers_as_the_api_says() {
    let server = Server::start(&[]);
    assert_eq!(server.get("/healthz").json()["status"], "ok");
    assert_eq!(server.get("/readyz").json()["status"], "ready");

    let models = server.get("/v1/models").json();
    let names: Vec<&str> = models["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["tiny", "tiny-lean"]);
    assert_eq!(models["models"][0]["default"], true);
    assert_eq!(models["models"][0]["embedding_shape"], json!([64, 16, 16]));
    assert_eq!(models["models"][1]["decoder"], "lean");

    // Raw body upload, then the same bytes as multipart: one id, one encoder run.
    let landscape = fixture_image("landscape.png");
    let first = server.upload(&landscape);
    assert_eq!(
        (first["width"].as_u64(), first["height"].as_u64(), first["cached"].as_bool()),
        (Some(640), Some(427), Some(false))
    );
    assert_eq!(first["model"], "tiny");
    let id = first["image_id"].as_str().unwrap().to_string();
    let again = server.post_form("/v1/images", &[("image", Some("landscape.png"), &landscape)]).json();
    assert_eq!((again["image_id"].as_str(), again["cached"].as_bool()), (Some(id.as_str()), Some(true)));
    assert_eq!(server.metric("samserve_encoder_runs_total{model=\"tiny\"}"), 1.0);
    let lean = server.post("/v1/images?model=tiny-lean", "image/png", &landscape).json();
    assert_eq!(lean["model"], "tiny-lean");
    assert_ne!(lean["image_id"], first["image_id"]);

    let metadata = server.get(&format!("/v1/images/{id}"));
    assert_eq!(metadata.status, 200);
    assert_eq!(metadata.json()["width"], 640);

    // Several prompts in one request: one result each, in order, as when asked one by one.
    let prompts = json!([click(475.0, 365.0), {"box": [400, 320, 550, 415]}, {"points": [[390, 150], [475, 365]], "labels": [1, 0]}]);
    let together = server.post_json(
        &format!("/v1/images/{id}/segment"),
        &json!({"prompts": prompts, "output": ["rle", "polygons", "png", "logits"]}),
    );
    assert_eq!(together.status, 200, "{}", String::from_utf8_lossy(&together.body));
    let together = together.json();
    assert_eq!((together["image_id"].as_str(), together["width"].as_u64()), (Some(id.as_str()), Some(640)));
    let results = together["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    for (i, result) in results.iter().enumerate() {
        let mask = &result["masks"][0];
        assert!(mask["logits_id"].is_string());
        assert_eq!(result["logits_id"], mask["logits_id"], "a result's logits_id is its best mask's");
        for key in ["score", "stability_score", "area", "bbox", "rle", "polygons", "png", "logits"] {
            assert!(mask.get(key).is_some(), "result {i} lacks {key}");
        }
        let alone = server.post_json(&format!("/v1/images/{id}/segment"), &json!({"prompts": [prompts[i]]})).json();
        assert_eq!(alone["results"][0]["masks"][0]["rle"], mask["rle"], "prompt {i}");
    }
    let multimask = server
        .post_json(&format!("/v1/images/{id}/segment"), &json!({"prompts": [click(475.0, 365.0)], "multimask": true}))
        .json();
    let scores: Vec<f64> =
        multimask["results"][0]["masks"].as_array().unwrap().iter().map(|m| m["score"].as_f64().unwrap()).collect();
    assert_eq!(scores.len(), 3);
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");

    // One shot: upload + segment, and the embedding lands in the cache.
    let portrait = fixture_image("portrait.jpg");
    let request = json!({"prompts": [click(150.0, 260.0)]}).to_string();
    let once = server
        .post_form("/v1/segment", &[("image", Some("portrait.jpg"), &portrait), ("request", None, request.as_bytes())]);
    assert_eq!(once.status, 200, "{}", String::from_utf8_lossy(&once.body));
    let once = once.json();
    assert_eq!((once["width"].as_u64(), once["height"].as_u64()), (Some(300), Some(520)));
    assert_eq!(server.get(&format!("/v1/images/{}", once["image_id"].as_str().unwrap())).status, 200);

    let openapi = server.get("/openapi.json").json();
    assert!(openapi["openapi"].as_str().unwrap().starts_with('3'));
    for path in [
        "/v1/images",
        "/v1/images/{image_id}",
        "/v1/images/{image_id}/segment",
        "/v1/segment",
        "/v1/models",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(openapi["paths"].get(path).is_some(), "openapi lacks {path}");
    }

    let metrics = String::from_utf8(server.get("/metrics").body).unwrap();
    for name in [
        "samserve_http_requests_total",
        "samserve_http_request_duration_seconds_bucket",
        "samserve_encoder_run_seconds_bucket",
        "samserve_decoder_run_seconds_bucket",
        "samserve_encoder_queue_depth",
        "samserve_embedding_cache_hits_total",
        "samserve_embedding_cache_misses_total",
        "samserve_embedding_cache_evictions_total",
        "samserve_embedding_cache_bytes",
        "samserve_logits_cache_bytes",
    ] {
        assert!(metrics.contains(name), "metrics lack {name}");
    }
    assert!(metrics.contains("route=\"/v1/images/{image_id}/segment\""), "routes are labelled by pattern");

    assert_eq!(server.delete(&format!("/v1/images/{id}")).status, 204);
    assert_eq!(server.get(&format!("/v1/images/{id}")).error_code(), "image_not_found");
    assert_eq!(server.delete(&format!("/v1/images/{id}")).status, 404);
}

#[test]
fn with_no_model_options_the_built_in_model_is_served() {
    // Run from the crate root, --models defaults to `models/`, the built-in model's own source folder.
    let server = Server::spawn(&[], &[]);
    let models = server.get("/v1/models").json();
    assert_eq!(models["models"].as_array().unwrap().len(), 1, "{models}");
    assert_eq!(
        (models["models"][0]["name"].as_str(), models["models"][0]["default"].as_bool()),
        (Some("samserve-s"), Some(true))
    );
    let upload = server.upload(&fixture_image("landscape.png"));
    assert_eq!(upload["model"], "samserve-s");
    let id = upload["image_id"].as_str().unwrap();
    assert_still_serving(&server, id);
}

#[test]
fn a_folder_of_samexporter_files_is_served_as_published() {
    let folder = common::fixtures().join("models/samexporter-hwc");
    let server = Server::spawn(&["--model", folder.to_str().unwrap()], &[]);
    let model = &server.get("/v1/models").json()["models"][0];
    assert_eq!((model["name"].as_str(), model["encoder_input"].as_str()), (Some("samexporter-hwc"), Some("rgb_hwc")));
    let fixtures = common::read_json("parity_samexporter.json");
    let cases = fixtures["cases"].as_array().unwrap();
    let id = server.upload(&fixture_image("landscape.png"))["image_id"].as_str().unwrap().to_string();
    for case in cases.iter().filter(|c| c["image"] == "landscape.png" && c["prompt"].get("refine_from").is_none()) {
        let body = json!({"prompts": [case["prompt"]], "multimask": case["multimask"]});
        let answer = server.post_json(&format!("/v1/images/{id}/segment"), &body).json();
        let iou = decode_rle(&answer["results"][0]["masks"][0]["rle"]).iou(&common::best_official_mask(case));
        assert!(iou >= 0.99, "{}: IoU {iou} with SamPredictor's mask", case["name"]);
    }
}

#[test]
fn a_single_mask_decoder_refuses_what_it_cannot_answer() {
    let folder = common::fixtures().join("models/samexporter-single");
    let server = Server::spawn(&["--model", folder.to_str().unwrap()], &[]);
    assert_eq!(server.get("/v1/models").json()["models"][0]["single_mask"], true);
    let landscape = fixture_image("landscape.png");
    let id = server.upload(&landscape)["image_id"].as_str().unwrap().to_string();
    let path = format!("/v1/images/{id}/segment");
    let single = server.post_json(&path, &json!({"prompts": [click(475.0, 365.0)]}));
    assert_eq!(single.status, 200);
    assert_eq!(single.json()["results"][0]["masks"].as_array().unwrap().len(), 1);
    let multimask = server.post_json(&path, &json!({"prompts": [click(475.0, 365.0)], "multimask": true}));
    assert_eq!((multimask.status, multimask.error_code().as_str()), (422, "invalid_request"));
    assert!(multimask.json()["error"]["message"].as_str().unwrap().contains("one mask per prompt"));
    let everything = server.post_json(&format!("/v1/images/{id}/everything"), &json!({}));
    assert_eq!((everything.status, everything.error_code().as_str()), (422, "invalid_request"));
    let job = server.post_form("/v1/jobs", &[("image", Some("a.png"), &landscape)]);
    assert_eq!((job.status, job.error_code().as_str()), (422, "invalid_request"));
    assert_still_serving(&server, &id);
}

#[test]
fn a_sam2_folder_serves_clicks_refinement_and_everything() {
    let folder = common::fixtures().join("models/sam2-samexporter");
    let server = Server::spawn(&["--model", folder.to_str().unwrap()], &[]);
    let info = server.get("/v1/models").json()["models"][0].clone();
    assert_eq!((info["family"].as_str(), info["single_mask"].as_bool()), (Some("sam2"), Some(false)));
    let tensors: Vec<&str> =
        info["embedding_tensors"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(tensors, ["high_res_feats_0", "high_res_feats_1", "image_embed"]);
    let id = server.upload(&fixture_image("landscape.png"))["image_id"].as_str().unwrap().to_string();
    let path = format!("/v1/images/{id}/segment");
    let multimask = server.post_json(&path, &json!({"prompts": [click(475.0, 365.0)], "multimask": true})).json();
    let candidates = multimask["results"][0]["masks"].as_array().unwrap();
    assert_eq!(candidates.len(), 3);
    // The export has no single-mask token: a single-mask request gets the best candidate.
    let single = server.post_json(&path, &json!({"prompts": [click(475.0, 365.0)]})).json();
    let best = &single["results"][0]["masks"].as_array().unwrap()[0];
    assert_eq!(
        (best["score"].clone(), best["area"].clone()),
        (candidates[0]["score"].clone(), candidates[0]["area"].clone())
    );
    let mut refine = click(475.0, 365.0);
    refine["mask_input"] = multimask["results"][0]["logits_id"].clone();
    assert_eq!(server.post_json(&path, &json!({"prompts": [refine]})).status, 200);
    let cleaned = json!({"prompts": [click(475.0, 365.0)], "max_hole_area": 40, "max_sprinkle_area": 40});
    assert_eq!(server.post_json(&path, &cleaned).status, 200);
    let everything = server.post_json(
        &format!("/v1/images/{id}/everything"),
        &json!({"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}),
    );
    assert_eq!(everything.status, 200);
    assert!(!everything.json()["masks"].as_array().unwrap().is_empty());
    assert_still_serving(&server, &id);
}

#[test]
fn sam2_options_on_a_sam_model_are_refused() {
    let server = Server::spawn(&[], &[]);
    let id = server.upload(&fixture_image("landscape.png"))["image_id"].as_str().unwrap().to_string();
    let reply = server.post_json(
        &format!("/v1/images/{id}/segment"),
        &json!({"prompts": [click(475.0, 365.0)], "max_hole_area": 40}),
    );
    assert_eq!((reply.status, reply.error_code().as_str()), (422, "invalid_request"));
    assert!(reply.json()["error"]["message"].as_str().unwrap().contains("SAM 2"));
    assert_still_serving(&server, &id);
}

#[test]
fn a_decoder_without_a_box_input_refuses_boxes_with_422() {
    let folder = common::fixtures().join("models/slimsam-transformers");
    let server = Server::spawn(&["--model", folder.to_str().unwrap()], &[]);
    let info = server.get("/v1/models").json()["models"][0].clone();
    assert_eq!((info["boxes"].as_bool(), info["mask_input"].as_bool()), (Some(false), Some(false)));
    assert!(info["max_points"].is_null());
    let landscape = fixture_image("landscape.png");
    let id = server.upload(&landscape)["image_id"].as_str().unwrap().to_string();
    let path = format!("/v1/images/{id}/segment");
    let boxed = server.post_json(&path, &json!({"prompts": [click(475.0, 365.0), {"box": [400, 300, 520, 420]}]}));
    assert_eq!((boxed.status, boxed.error_code().as_str()), (422, "invalid_request"));
    assert!(boxed.json()["error"]["message"].as_str().unwrap().contains("prompt 1: box"));
    let spec = br#"{"prompts": {"a.png": [{"box": [400, 300, 520, 420]}]}}"#;
    let job = server.post_form("/v1/jobs", &[("image", Some("a.png"), &landscape), ("spec", None, spec)]);
    assert_eq!((job.status, job.error_code().as_str()), (422, "invalid_request"));
    assert_eq!(server.post_json(&path, &json!({"prompts": [click(475.0, 365.0)]})).status, 200);
    assert_still_serving(&server, &id);
}

#[test]
fn a_decoder_without_mask_input_refuses_refinement_and_does_the_rest() {
    let folder = common::fixtures().join("models/edgesam");
    let server = Server::spawn(&["--model", folder.to_str().unwrap()], &[]);
    assert_eq!(server.get("/v1/models").json()["models"][0]["mask_input"], false);
    let id = server.upload(&fixture_image("landscape.png"))["image_id"].as_str().unwrap().to_string();
    let path = format!("/v1/images/{id}/segment");
    let first = server.post_json(&path, &json!({"prompts": [click(475.0, 365.0)], "multimask": true})).json();
    assert_eq!(first["results"][0]["masks"].as_array().unwrap().len(), 3);
    let mut refine = click(475.0, 365.0);
    refine["mask_input"] = first["results"][0]["logits_id"].clone();
    let refused = server.post_json(&path, &json!({"prompts": [refine]}));
    assert_eq!((refused.status, refused.error_code().as_str()), (422, "invalid_request"));
    assert!(refused.json()["error"]["message"].as_str().unwrap().contains("takes no mask input"));
    assert_eq!(server.post_json(&format!("/v1/images/{id}/everything"), &json!({})).status, 200);
}

#[test]
fn models_folders_without_model_toml_are_found_in_the_models_directory() {
    let models = common::fixtures().join("models");
    let server = Server::spawn(&["--models", models.to_str().unwrap()], &[]);
    let listed = server.get("/v1/models").json();
    let names: Vec<&str> = listed["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    let expected = [
        "amg",
        "edgesam",
        "efficientsam",
        "sam-hq",
        "sam-vit-b",
        "sam2-samexporter",
        "sam2-transformers",
        "sam2-transformers-fp16",
        "samexporter-external",
        "samexporter-hwc",
        "samexporter-quantized",
        "samexporter-single",
        "samserve-s",
        "slimsam-transformers",
        "slimsam-transformers-quantized",
        "tiny",
        "tiny-fp16",
        "tiny-lean",
    ];
    assert_eq!(names, expected);
    let efficientsam = listed["models"].as_array().unwrap().iter().find(|m| m["name"] == "efficientsam").unwrap();
    assert_eq!((efficientsam["family"].as_str(), efficientsam["max_points"].as_u64()), (Some("efficientsam"), Some(6)));
}

#[test]
fn images_one_pixel_thin_segment_like_any_other() {
    // Their short side rounds to 0 pixels at the model's input size; it once panicked into a 500.
    let server = Server::spawn(&[], &[]);
    for (width, height) in [(600, 1), (1, 600)] {
        let upload = server.upload(&synthetic_png(width, width, height));
        let id = upload["image_id"].as_str().unwrap();
        let (x, y) = (f64::from(width) / 2.0, f64::from(height) / 2.0);
        let reply = server.post_json(&format!("/v1/images/{id}/segment"), &json!({"prompts": [click(x, y)]}));
        assert_eq!(reply.status, 200, "{width}x{height}: {}", String::from_utf8_lossy(&reply.body));
        let mask = decode_rle(&reply.json()["results"][0]["masks"][0]["rle"]);
        assert_eq!((mask.width, mask.height), (width as usize, height as usize));
        let everything = server.post_json(&format!("/v1/images/{id}/everything"), &json!({"points_per_side": 4}));
        assert_eq!(everything.status, 200, "{}", String::from_utf8_lossy(&everything.body));
    }
}

#[test]
fn concurrent_uploads_of_one_image_run_the_encoder_once() {
    let server = Arc::new(Server::start(&[]));
    let image = Arc::new(synthetic_png(7, 900, 700));
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (server, image, barrier) = (Arc::clone(&server), Arc::clone(&image), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                server.upload(&image)
            })
        })
        .collect();
    let replies: Vec<Value> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(replies.iter().all(|r| r["image_id"] == replies[0]["image_id"]));
    assert_eq!(replies.iter().filter(|r| r["cached"] == false).count(), 1, "one upload ran the encoder");
    assert_eq!(server.metric("samserve_encoder_runs_total{model=\"tiny\"}"), 1.0);
}

#[test]
fn mask_input_refinement_matches_sam() {
    let server = Server::start(&[]);
    let fixtures = common::read_json("parity.json");
    let case = fixtures["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "refine" && c["image"] == "landscape.png")
        .unwrap();
    let id = server.upload(&fixture_image("landscape.png"))["image_id"].as_str().unwrap().to_string();
    let path = format!("/v1/images/{id}/segment");
    let first = server.post_json(&path, &json!({"prompts": [case["prompt"]["refine_from"]], "multimask": true})).json();
    let logits_id = first["results"][0]["logits_id"].as_str().unwrap();
    let prompt = json!({"points": case["prompt"]["points"], "labels": case["prompt"]["labels"]});
    let plain = server.post_json(&path, &json!({"prompts": [prompt]})).json();
    let mut refined_prompt = prompt.clone();
    refined_prompt["mask_input"] = json!(logits_id);
    let refined = server.post_json(&path, &json!({"prompts": [refined_prompt]})).json();
    let refined_mask = decode_rle(&refined["results"][0]["masks"][0]["rle"]);
    assert_ne!(decode_rle(&plain["results"][0]["masks"][0]["rle"]), refined_mask, "mask_input changed nothing");
    let official: CocoRle =
        serde_json::from_value(json!({"size": case["masks"][0]["size"], "counts": case["masks"][0]["counts"]}))
            .unwrap();
    let iou = refined_mask.iou(&rle::decode(&official).unwrap());
    assert!(iou >= 0.99, "refined mask IoU with SamPredictor's: {iou}");

    refined_prompt["mask_input"] = json!("0123456789abcdef");
    let unknown = server.post_json(&path, &json!({"prompts": [refined_prompt]}));
    assert_eq!((unknown.status, unknown.error_code().as_str()), (404, "logits_not_found"));
}

#[test]
fn bad_requests_get_their_documented_errors_and_change_nothing() {
    let server =
        Server::start(&["--max-body-mb", "1", "--max-json-kb", "8", "--max-pixels", "4000000", "--max-prompts", "4"]);
    let id = server.upload(&fixture_image("tiny.png"))["image_id"].as_str().unwrap().to_string();
    let segment = format!("/v1/images/{id}/segment");
    let png = fixture_image("landscape.png");
    let mut bomb = synthetic_png(1, 1, 1);
    // Rewrite the 1x1 header to claim 50000 x 50000 pixels (and fix its CRC).
    bomb[16..20].copy_from_slice(&50_000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&50_000u32.to_be_bytes());
    let crc = crc32fast::hash(&bomb[12..29]);
    bomb[29..33].copy_from_slice(&crc.to_be_bytes());
    let mut corrupt = png.clone();
    corrupt[100..400].fill(0x5A);
    let five_prompts =
        json!({"prompts": [click(1.0, 1.0), click(2.0, 2.0), click(3.0, 3.0), click(4.0, 4.0), click(5.0, 5.0)]});

    let json_cases: Vec<(&str, String, u16, &str)> = vec![
        ("malformed JSON", "{\"prompts\": [".into(), 400, "malformed_json"),
        ("zero-byte body", String::new(), 400, "empty_body"),
        ("wrong shape", "{\"prompts\": 3}".into(), 422, "invalid_request"),
        ("unknown field", "{\"prompts\": [], \"typo\": 1}".into(), 422, "invalid_request"),
        ("no prompts", "{\"prompts\": []}".into(), 422, "invalid_request"),
        ("too many prompts", five_prompts.to_string(), 422, "invalid_request"),
        ("empty prompt", "{\"prompts\": [{}]}".into(), 422, "invalid_prompt"),
        ("point outside", json!({"prompts": [click(38.0, 5.0)]}).to_string(), 422, "invalid_prompt"),
        ("negative point", json!({"prompts": [click(-1.0, 5.0)]}).to_string(), 422, "invalid_prompt"),
        ("NaN", "{\"prompts\": [{\"points\": [[NaN, 3]], \"labels\": [1]}]}".into(), 422, "invalid_prompt"),
        ("unknown label", "{\"prompts\": [{\"points\": [[3, 3]], \"labels\": [2]}]}".into(), 422, "invalid_prompt"),
        ("labels mismatch", "{\"prompts\": [{\"points\": [[3, 3]], \"labels\": []}]}".into(), 422, "invalid_prompt"),
        ("flipped box", "{\"prompts\": [{\"box\": [10, 10, 5, 20]}]}".into(), 422, "invalid_prompt"),
        ("box of five", "{\"prompts\": [{\"box\": [0, 0, 5, 5, 5]}]}".into(), 422, "invalid_request"),
        ("box outside", "{\"prompts\": [{\"box\": [0, 0, 50, 20]}]}".into(), 422, "invalid_prompt"),
        (
            "unknown output",
            "{\"prompts\": [{\"box\": [0, 0, 5, 5]}], \"output\": [\"svg\"]}".into(),
            422,
            "invalid_request",
        ),
        (
            "oversized JSON",
            format!("{{\"prompts\": [], \"pad\": \"{}\"}}", "x".repeat(9 << 10)),
            413,
            "payload_too_large",
        ),
    ];
    for (what, body, status, code) in json_cases {
        let reply = server.post(&segment, "application/json", body.as_bytes());
        assert_eq!((reply.status, reply.error_code().as_str()), (status, code), "{what}");
        assert!(!reply.json()["error"]["message"].as_str().unwrap().is_empty(), "{what}");
    }
    let unknown_image = server.post_json("/v1/images/0000/segment", &json!({"prompts": [click(1.0, 1.0)]}));
    assert_eq!((unknown_image.status, unknown_image.error_code().as_str()), (404, "image_not_found"));

    let uploads: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("wrong content type", "text/plain", b"hello".to_vec(), 415, "unsupported_media_type"),
        ("not an image", "image/png", b"hello, not a picture".to_vec(), 415, "unsupported_image_format"),
        ("corrupt image", "image/png", corrupt, 415, "undecodable_image"),
        ("truncated image", "image/png", png[..png.len() / 3].to_vec(), 415, "undecodable_image"),
        ("zero-byte body", "image/png", vec![], 400, "empty_body"),
        ("oversized body", "image/png", vec![7u8; 3 << 20], 413, "payload_too_large"),
        ("decompression bomb", "image/png", bomb, 413, "image_too_large"),
    ];
    for (what, content_type, body, status, code) in uploads {
        let reply = server.post("/v1/images", content_type, &body);
        assert_eq!((reply.status, reply.error_code().as_str()), (status, code), "{what}");
    }
    let unknown_model = server.post("/v1/images?model=nope", "image/png", &png);
    assert_eq!((unknown_model.status, unknown_model.error_code().as_str()), (404, "model_not_found"));
    let no_image_field = server.post_form("/v1/images", &[]);
    assert_eq!((no_image_field.status, no_image_field.error_code().as_str()), (400, "malformed_body"));
    let unknown_field = server.post_form("/v1/images", &[("picture", Some("x.png"), &png)]);
    assert_eq!((unknown_field.status, unknown_field.error_code().as_str()), (422, "invalid_request"));
    let one_shot_json = server.post("/v1/segment", "application/json", b"{}");
    assert_eq!(one_shot_json.status, 415);
    let one_shot_no_request = server.post_form("/v1/segment", &[("image", Some("x.png"), &png)]);
    assert_eq!((one_shot_no_request.status, one_shot_no_request.error_code().as_str()), (400, "malformed_body"));

    // Paths that no route serves, and routes asked with other methods.
    let nowhere = server.get("/v1/nowhere");
    assert_eq!((nowhere.status, nowhere.error_code().as_str()), (404, "not_found"));
    let put = server.put(&format!("/v1/images/{id}"), b"x");
    assert_eq!(
        (put.status, put.error_code().as_str(), put.headers["allow"].to_str().unwrap()),
        (405, "method_not_allowed", "GET, DELETE")
    );
    let trace = ureq::trace(format!("{}/v1/images", server.base)).config().http_status_as_error(false).build();
    let trace = trace.call().unwrap();
    assert_eq!((trace.status().as_u16(), trace.headers()["allow"].to_str().unwrap()), (405, "POST"));

    // Nothing was encoded by the failures, and the server keeps serving.
    assert_eq!(server.metric("samserve_encoder_runs_total{model=\"tiny\"}"), 1.0);
    assert_eq!(server.metric("samserve_embedding_cache_entries"), 1.0);
    assert_still_serving(&server, &id);
}

#[test]
fn the_embedding_cache_is_bounded_in_bytes() {
    // One tiny-model embedding is 64 x 16 x 16 float32 = 64 KiB: 1 MiB holds 16.
    let server = Server::start(&["--cache-mb", "1"]);
    let ids: Vec<String> = (0..20u32)
        .map(|seed| server.upload(&synthetic_png(seed, 40, 30))["image_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(server.metric("samserve_embedding_cache_evictions_total"), 4.0);
    assert_eq!(server.metric("samserve_embedding_cache_bytes"), (1 << 20) as f64);
    for (i, id) in ids.iter().enumerate() {
        let expected = if i < 4 { 404 } else { 200 };
        assert_eq!(server.get(&format!("/v1/images/{id}")).status, expected, "image {i}");
    }
    // Least recently USED goes first: touching image 4 makes image 5 the next to leave.
    assert_eq!(
        server.post_json(&format!("/v1/images/{}/segment", ids[4]), &json!({"prompts": [click(1.0, 1.0)]})).status,
        200
    );
    server.upload(&synthetic_png(99, 40, 30));
    assert_eq!(server.get(&format!("/v1/images/{}", ids[4])).status, 200);
    assert_eq!(server.get(&format!("/v1/images/{}", ids[5])).status, 404);

    // Stored as f16, the same megabyte holds twice as many, and they still answer prompts.
    let half = Server::start(&["--cache-mb", "1", "--cache-f16"]);
    let ids: Vec<String> = (0..40u32)
        .map(|seed| half.upload(&synthetic_png(seed, 40, 30))["image_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(half.metric("samserve_embedding_cache_evictions_total"), 8.0);
    assert_eq!(half.metric("samserve_embedding_cache_bytes"), (1 << 20) as f64);
    let answer = half.post_json(&format!("/v1/images/{}/segment", ids[39]), &json!({"prompts": [click(1.0, 1.0)]}));
    assert_eq!(answer.status, 200);
}

#[test]
fn a_full_encoder_queue_sheds_load_at_once_with_retry_after() {
    let server = Arc::new(Server::start(&["--encoder-queue", "0"]));
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8u32)
        .map(|seed| {
            let (server, barrier) = (Arc::clone(&server), Arc::clone(&barrier));
            let image = synthetic_png(1000 + seed, 2400, 1800);
            std::thread::spawn(move || {
                barrier.wait();
                server.post("/v1/images", "image/png", &image)
            })
        })
        .collect();
    let replies: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let shed: Vec<_> = replies.iter().filter(|r| r.status == 503).collect();
    assert!(replies.iter().any(|r| r.status == 200), "the first upload is served");
    assert!(!shed.is_empty(), "with no queue, concurrent uploads are refused");
    assert!(replies.iter().all(|r| r.status == 200 || r.status == 503));
    for reply in &shed {
        assert_eq!(reply.error_code(), "overloaded");
        assert_eq!(reply.retry_after.as_deref(), Some("1"));
    }
    assert_eq!(server.metric("samserve_load_shed_total"), shed.len() as f64);
}

#[test]
fn a_timed_out_upload_still_finishes_and_is_cached() {
    let server = Server::start(&["--request-timeout-s", "0.001"]);
    let image = synthetic_png(5, 2400, 1800);
    let reply = server.post("/v1/images", "image/png", &image);
    assert_eq!((reply.status, reply.error_code().as_str()), (503, "timeout"));
    assert_eq!(reply.retry_after.as_deref(), Some("1"));
    // Accepted work is not lost: the encode completes and fills the cache.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while server.metric("samserve_embedding_cache_entries") < 1.0 {
        assert!(std::time::Instant::now() < deadline, "the encode never finished");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(server.metric("samserve_encoder_runs_total{model=\"tiny\"}"), 1.0);
}

#[test]
fn a_timed_out_everything_stops_and_frees_its_decoder() {
    let server = Server::start(&["--request-timeout-s", "2", "--decoder-sessions", "1"]);
    let id = server.upload(&synthetic_png(3, 64, 48))["image_id"].as_str().unwrap().to_string();
    // 16384 decoder runs of one point: far more than 2 s.
    let heavy = json!({"points_per_side": 128, "points_per_batch": 1});
    let reply = server.post_json(&format!("/v1/images/{id}/everything"), &heavy);
    assert_eq!((reply.status, reply.error_code().as_str()), (503, "timeout"));
    // The generator gives up at its next batch instead of running on for the dropped answer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while server.metric("samserve_everything_stopped_total") < 1.0 {
        assert!(std::time::Instant::now() < deadline, "the timed-out generator never stopped");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Its decoder slot (the only one) is free again.
    let reply = server.post_json(&format!("/v1/images/{id}/segment"), &json!({"prompts": [click(30.0, 20.0)]}));
    assert_eq!(reply.status, 200);
}

#[test]
fn sigterm_lets_in_flight_requests_finish() {
    let server = Arc::new(Server::start_with_env(&["--shutdown-timeout-s", "120"], &[("LOG_FORMAT", "json")]));
    let id = server.upload(&fixture_image("large.jpg"))["image_id"].as_str().unwrap().to_string();
    // A slow request: 8 prompts, 3 full-size 2304x1536 masks each.
    let prompts: Vec<Value> = (0..8).map(|i| click(100.0 + 250.0 * f64::from(i), 700.0)).collect();
    let body = json!({"prompts": prompts, "multimask": true});
    let slow = {
        let server = Arc::clone(&server);
        std::thread::spawn(move || server.post_json(&format!("/v1/images/{id}/segment"), &body))
    };
    // The /metrics request itself is one in flight; wait for the slow one to be the second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while server.metric("samserve_http_requests_in_flight") < 2.0 {
        assert!(std::time::Instant::now() < deadline, "the slow request never started");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let (success, stderr) = {
        let status =
            std::process::Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let reply = slow.join().unwrap();
        assert_eq!(reply.status, 200, "the in-flight request was cut");
        assert_eq!(reply.json()["results"].as_array().unwrap().len(), 8);
        Arc::try_unwrap(server).ok().expect("the only handle").terminate_after_signal()
    };
    assert!(success, "exit status after SIGTERM");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        serde_json::from_str::<Value>(line)
            .unwrap_or_else(|e| panic!("LOG_FORMAT=json wrote a non-JSON line ({e}): {line}"));
    }
}

#[test]
fn device_auto_falls_back_to_the_cpu_and_says_so() {
    // The library `cargo build` fetches is the CPU build of ONNX Runtime.
    let server = Server::spawn(&["--device", "auto"], &[("RUST_LOG", "info")]);
    let models = server.get("/v1/models").json();
    let model = &models["models"][0];
    assert_eq!((model["encoder_device"].as_str(), model["decoder_device"].as_str()), (Some("cpu"), Some("cpu")));
    let log = server.stderr();
    assert!(log.contains("CUDA is not available") && log.contains("CPU build"), "{log}");
    assert!(log.contains("encoder=cpu") && log.contains("decoder=cpu"), "{log}");
}
