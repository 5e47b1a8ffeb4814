//! Batch jobs against the real server: results, per-image errors, cancel, bad submissions, and a job that survives
//! kill -9 or SIGTERM of the server, or its disk filling up, with results equal to an uninterrupted run.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::jobs::{JOBS, everything_spec, image, results, status, submit, wait_until_ended};
use common::server::Server;
use serde_json::json;

#[test]
fn prompts_job_gives_one_mask_per_prompt_and_records_a_corrupt_image() {
    let server = Server::start(&[]);
    let box_prompt = json!({"box": [100, 80, 400, 300]});
    let spec = json!({"prompts": {
        "landscape.png": [{"points": [[320, 200]], "labels": [1]}, box_prompt],
        "broken.png": [box_prompt],
        "portrait.jpg": [{"points": [[150, 260], [10, 10]], "labels": [1, 0]}],
    }});
    let files = [
        ("landscape.png", image("landscape.png")),
        ("broken.png", b"\x89PNG\r\n\x1a\n not really".to_vec()),
        ("portrait.jpg", image("portrait.jpg")),
    ];
    let job = submit(&server, &files, &spec);
    let ended = wait_until_ended(&server, &job);
    assert_eq!(ended["status"], "succeeded");
    assert_eq!(
        (ended["total"].as_u64(), ended["done"].as_u64(), ended["failed"].as_u64()),
        (Some(3), Some(3), Some(1))
    );
    assert_eq!(ended["errors"][0]["file"], "broken.png");
    assert!(ended["errors"][0]["message"].as_str().unwrap().contains("image"), "{ended}");

    let coco = results(&server, &job);
    let names: Vec<&str> =
        coco["images"].as_array().unwrap().iter().map(|i| i["file_name"].as_str().unwrap()).collect();
    assert_eq!(names, ["landscape.png", "portrait.jpg"]);
    assert_eq!((coco["images"][0]["width"].as_u64(), coco["images"][0]["height"].as_u64()), (Some(640), Some(427)));
    let annotations = coco["annotations"].as_array().unwrap();
    let keys: Vec<(u64, u64, u64)> = annotations
        .iter()
        .map(|a| (a["id"].as_u64().unwrap(), a["image_id"].as_u64().unwrap(), a["prompt_index"].as_u64().unwrap()))
        .collect();
    assert_eq!(keys, [(1, 1, 0), (2, 1, 1), (3, 2, 0)]);

    // The same masks as the interactive API gives for the same prompt.
    let uploaded = server.post("/v1/images?model=tiny-lean", "image/png", &image("landscape.png")).json();
    let answer = server.post_json(
        &format!("/v1/images/{}/segment", uploaded["image_id"].as_str().unwrap()),
        &json!({"prompts": [box_prompt]}),
    );
    let mask = &answer.json()["results"][0]["masks"][0];
    assert_eq!(annotations[1]["segmentation"], mask["rle"]);
    assert_eq!(annotations[1]["area"], mask["area"]);
    assert_eq!(annotations[1]["bbox"], mask["bbox"]);
}

#[test]
fn everything_job_and_its_lifecycle_cancel_then_delete() {
    let server = Server::start(&[]);
    let job = submit(&server, &[("a.png", image("landscape.png")), ("b.png", image("gray.png"))], &everything_spec(8));
    let ended = wait_until_ended(&server, &job);
    assert_eq!((ended["status"].as_str(), ended["failed"].as_u64()), (Some("succeeded"), Some(0)));
    let coco = results(&server, &job);
    let annotations = coco["annotations"].as_array().unwrap();
    assert!(!annotations.is_empty());
    for (index, annotation) in annotations.iter().enumerate() {
        assert_eq!(annotation["id"].as_u64(), Some(index as u64 + 1));
        assert!(annotation["point_coords"][0].is_array() && annotation["score"].as_f64().unwrap() > 0.2);
    }

    // A running job is cancelled by DELETE (its results so far stay), then deleted by a second DELETE.
    let files: Vec<(String, Vec<u8>)> = (0..12).map(|i| (format!("{i}.png"), image("landscape.png"))).collect();
    let files: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let long = submit(&server, &files, &everything_spec(16));
    let cancelled = server.delete(&format!("/v1/jobs/{long}"));
    assert_eq!(cancelled.status, 200);
    assert_eq!(cancelled.json()["status"], "cancelled");
    // The image in flight when the job was cancelled still finishes and counts; wait for it.
    let mut after = status(&server, &long);
    loop {
        std::thread::sleep(Duration::from_millis(1000));
        let again = status(&server, &long);
        if again["done"] == after["done"] {
            break;
        }
        after = again;
    }
    assert_eq!(after["status"], "cancelled");
    assert!(after["done"].as_u64().unwrap() < 12, "{after}");
    assert_eq!(results(&server, &long)["images"].as_array().unwrap().len() as u64, after["done"].as_u64().unwrap());
    assert_eq!(server.delete(&format!("/v1/jobs/{long}")).status, 204);
    assert_eq!(server.get(&format!("/v1/jobs/{long}")).error_code(), "job_not_found");
    assert_eq!(server.get(&format!("/v1/jobs/{long}/results")).status, 404);
    assert_eq!(server.delete(&format!("/v1/jobs/{long}")).status, 404);
}

#[test]
fn bad_submissions_are_refused_with_clear_errors() {
    let server = Server::start(&[]);
    let png = image("tiny.png");
    let code = |fields: &[(&str, Option<&str>, &[u8])]| {
        let reply = server.post_form(JOBS, fields);
        (reply.status, reply.error_code())
    };
    assert_eq!(code(&[("spec", None, b"{}")]), (422, "invalid_request".into()));
    assert_eq!(code(&[("image", Some("a.png"), &png), ("spec", None, b"{\"mode\": ")]), (400, "malformed_json".into()));
    assert_eq!(
        code(&[("image", Some("a.png"), &png), ("spec", None, br#"{"mode": "everything", "sped": 1}"#)]),
        (422, "invalid_request".into())
    );
    assert_eq!(
        code(&[("image", Some("a.png"), &png), ("spec", None, br#"{"prompts": {"b.png": [{"box": [0, 0, 1, 1]}]}}"#)]),
        (422, "invalid_request".into())
    );
    assert_eq!(
        code(&[("image", Some("a.png"), &png), ("image", Some("a.png"), &png)]),
        (422, "invalid_request".into())
    );
    assert_eq!(
        code(&[("image", Some("a.png"), &png), ("spec", None, br#"{"everything": {"points_per_side": 0}}"#)]),
        (422, "invalid_request".into())
    );
    assert_eq!(code(&[("image", Some("a.png"), &png), ("sepc", None, b"{}")]), (422, "invalid_request".into()));
    assert_eq!(
        code(&[("image", Some("a.png"), &png), ("spec", None, br#"{"output": ["png"]}"#)]),
        (422, "invalid_request".into())
    );
    let unknown_model = server.post_form("/v1/jobs?model=nope", &[("image", Some("a.png"), &png)]);
    assert_eq!(unknown_model.error_code(), "model_not_found");
    let not_multipart = server.post_json(JOBS, &json!({}));
    assert_eq!((not_multipart.status, not_multipart.error_code()), (415, "unsupported_media_type".into()));
    assert_eq!(server.get("/v1/jobs/0123").error_code(), "job_not_found");
    // Nothing above left a job behind or broke the server.
    let job = submit(&server, &[("a.png", png.clone())], &everything_spec(4));
    assert_eq!(wait_until_ended(&server, &job)["status"], "succeeded");
}

#[test]
fn a_job_survives_kill_9_and_resumes_with_the_same_results_as_an_uninterrupted_run() {
    job_resumes_after_a_stop_with_the_same_results_as_an_uninterrupted_run("KILL");
}

/// A graceful stop leaves the images in progress pending too: none is recorded as failed when the process's end
/// cuts its inference short.
#[test]
fn a_job_survives_sigterm_and_resumes_with_the_same_results_as_an_uninterrupted_run() {
    job_resumes_after_a_stop_with_the_same_results_as_an_uninterrupted_run("TERM");
}

/// Stops the server with `signal` in the middle of a job, restarts it, and compares the resumed job's results with
/// an uninterrupted run's.
fn job_resumes_after_a_stop_with_the_same_results_as_an_uninterrupted_run(signal: &str) {
    let data_dir = common::temp_dir(&format!("stopped-{signal}"));
    let data = data_dir.to_str().unwrap();
    let names = ["landscape.png", "portrait.jpg", "gray.png", "rgba.png", "large.jpg", "exif_rotated.jpg"];
    let files: Vec<(String, Vec<u8>)> =
        (0..3).flat_map(|round| names.map(|name| (format!("{round}-{name}"), image(name)))).collect();
    let files: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let spec = everything_spec(16);

    let server = Server::start(&["--data-dir", data]);
    let job = submit(&server, &files, &spec);
    let deadline = Instant::now() + Duration::from_secs(300);
    let at_kill = loop {
        let current = status(&server, &job);
        if current["done"].as_u64().unwrap() >= 2 {
            break current;
        }
        assert!(Instant::now() < deadline, "no progress: {current}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let pid = server.child.id().to_string();
    assert!(std::process::Command::new("kill").args([&format!("-{signal}"), &pid]).status().unwrap().success());
    server.terminate_after_signal(); // (SIGKILL: no chance to clean up)
    assert!(at_kill["done"].as_u64().unwrap() < files.len() as u64, "the job ended before the kill: {at_kill}");

    let restarted = Server::start(&["--data-dir", data]);
    let resumed = wait_until_ended(&restarted, &job);
    assert_eq!((resumed["status"].as_str(), resumed["failed"].as_u64()), (Some("succeeded"), Some(0)), "{resumed}");
    let uninterrupted = submit(&restarted, &files, &spec);
    wait_until_ended(&restarted, &uninterrupted);
    let (resumed, reference) = (results(&restarted, &job), results(&restarted, &uninterrupted));
    assert_eq!(resumed["images"].as_array().unwrap().len(), files.len());
    assert!(!reference["annotations"].as_array().unwrap().is_empty());
    assert!(resumed == reference, "the resumed job's results differ from an uninterrupted run");
    // The images of ended jobs are gone from disk.
    assert_eq!(std::fs::read_dir(data_dir.join("jobs")).unwrap().count(), 0);
}

/// A tmpfs mounted on a new folder, unmounted when dropped: a disk small enough to fill in a test.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// None where this machine does not let the tests mount one (not root, or a container without the right).
    fn mount(label: &str, megabytes: u32) -> Option<Self> {
        let path = common::temp_dir(label);
        let size = format!("size={megabytes}m");
        let mut mount = Command::new("mount");
        mount.args(["-t", "tmpfs", "-o", &size, "tmpfs"]).arg(&path).stderr(Stdio::null());
        mount.status().ok()?.success().then_some(Self { path })
    }

    /// Fills what is left of it with one file, which is returned.
    fn fill(&self) -> PathBuf {
        let path = self.path.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let page = [0u8; 4096];
        while file.write_all(&page).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// The disk under --data-dir fills up while a job runs, then frees up: the images that could not be recorded
/// stay pending and are done once there is room, with the results of an uninterrupted run; the database reads
/// back whole after a restart.
#[test]
fn a_disk_that_fills_up_mid_job_delays_its_images_and_corrupts_nothing() {
    let Some(disk) = SmallDisk::mount("small-disk", 24) else {
        eprintln!("skipped: this machine does not let the tests mount a tmpfs (it needs root)");
        return;
    };
    let data = disk.path.to_str().unwrap();
    let names = ["landscape.png", "portrait.jpg", "gray.png", "rgba.png"];
    let files: Vec<(String, Vec<u8>)> =
        (0..4).flat_map(|round| names.map(|name| (format!("{round}-{name}"), image(name)))).collect();
    let files: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let spec = everything_spec(16);
    let args = ["--data-dir", data, "--min-free-disk-mb", "0"];
    let server = Server::start(&args);
    let job = submit(&server, &files, &spec);
    let deadline = Instant::now() + Duration::from_secs(300);
    while status(&server, &job)["done"].as_u64().unwrap() < 2 {
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }

    let filler = disk.fill();
    std::thread::sleep(Duration::from_secs(3));
    let while_full = status(&server, &job);
    assert!(server.stderr().contains("database or disk is full"), "the disk never was full for the job");
    std::fs::remove_file(filler).unwrap();
    let ended = wait_until_ended(&server, &job);
    assert_eq!((ended["status"].as_str(), ended["failed"].as_u64()), (Some("succeeded"), Some(0)), "{ended}");
    eprintln!("{} of {} images done while the disk was full for 3 s", while_full["done"], files.len());

    drop(server);
    let restarted = Server::start(&args);
    assert_eq!(status(&restarted, &job), ended);
    let uninterrupted = submit(&restarted, &files, &spec);
    wait_until_ended(&restarted, &uninterrupted);
    assert!(results(&restarted, &job) == results(&restarted, &uninterrupted), "the results differ");
}

#[test]
fn ended_jobs_are_deleted_after_the_retention() {
    // 0.0005 hours = 1.8 s.
    let server = Server::start(&["--job-retention-hours", "0.0005"]);
    let job = submit(&server, &[("a.png", image("tiny.png"))], &everything_spec(4));
    assert_eq!(wait_until_ended(&server, &job)["status"], "succeeded");
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.get(&format!("/v1/jobs/{job}")).status == 200 {
        assert!(Instant::now() < deadline, "the job outlived its retention");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(server.get(&format!("/v1/jobs/{job}/results")).error_code(), "job_not_found");
}

/// A SAM 2 folder in a batch job: the job's mask for a prompt is SAM2ImagePredictor's (tests/fixtures/parity_sam2.json).
#[test]
fn a_sam2_model_answers_prompt_jobs_as_its_predictor() {
    let folder = common::fixtures().join("models/sam2-samexporter");
    let server = Server::spawn(&["--model", folder.to_str().unwrap()], &[]);
    let fixtures = common::read_json("parity_sam2.json");
    let case = fixtures["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["image"] == "landscape.png" && c["name"] == "box_point")
        .unwrap();
    let spec = json!({"prompts": {"landscape.png": [case["prompt"]]}}).to_string();
    let landscape = image("landscape.png");
    let reply =
        server.post_form("/v1/jobs", &[("image", Some("landscape.png"), &landscape), ("spec", None, spec.as_bytes())]);
    assert_eq!(reply.status, 202, "{}", String::from_utf8_lossy(&reply.body));
    let job = reply.json()["job_id"].as_str().unwrap().to_string();
    assert_eq!(wait_until_ended(&server, &job)["status"], "succeeded");
    let coco = results(&server, &job);
    let rle: samserve::mask::rle::CocoRle =
        serde_json::from_value(coco["annotations"][0]["segmentation"].clone()).unwrap();
    let iou = samserve::mask::rle::decode(&rle).unwrap().iou(&common::best_official_mask(case));
    assert!(iou >= 0.99, "IoU {iou}");
}
