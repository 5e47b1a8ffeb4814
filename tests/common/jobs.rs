//! Batch job calls for the job tests (`tests/jobs.rs`, `tests/replica_jobs.rs`), against a server or a proxy.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::server::Client;

pub const JOBS: &str = "/v1/jobs?model=tiny-lean";

pub fn image(name: &str) -> Vec<u8> {
    std::fs::read(super::fixtures().join("images").join(name)).unwrap()
}

/// Low thresholds so that the briefly trained fixture model yields masks.
pub fn everything_spec(points_per_side: u32) -> Value {
    json!({"mode": "everything", "everything": {
        "points_per_side": points_per_side, "pred_iou_thresh": 0.2, "stability_score_thresh": 0.0}})
}

pub fn submit(client: &Client, files: &[(&str, Vec<u8>)], spec: &Value) -> String {
    let spec = spec.to_string();
    let mut fields: Vec<(&str, Option<&str>, &[u8])> =
        files.iter().map(|(name, bytes)| ("image", Some(*name), bytes.as_slice())).collect();
    fields.push(("spec", None, spec.as_bytes()));
    let reply = client.post_form(JOBS, &fields);
    assert_eq!(reply.status, 202, "{}", String::from_utf8_lossy(&reply.body));
    let accepted = reply.json();
    assert_eq!(accepted["status"], "queued");
    assert_eq!(accepted["total"], files.len());
    accepted["job_id"].as_str().unwrap().to_string()
}

pub fn status(client: &Client, job: &str) -> Value {
    let reply = client.get(&format!("/v1/jobs/{job}"));
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    reply.json()
}

pub fn wait_until_ended(client: &Client, job: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let current = status(client, job);
        if ["succeeded", "failed", "cancelled"].contains(&current["status"].as_str().unwrap()) {
            return current;
        }
        assert!(Instant::now() < deadline, "job {job} did not end: {current}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn results(client: &Client, job: &str) -> Value {
    let reply = client.get(&format!("/v1/jobs/{job}/results"));
    assert_eq!(reply.status, 200);
    reply.json()
}
