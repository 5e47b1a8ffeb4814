//! API keys and tenants (docs/security.md): keys are required where they should be and nowhere else, a tenant
//! never sees another's images, refinements or jobs (answers for "not yours" equal those for "does not exist"),
//! image ids cannot be computed from the image, and the keys file is read again on SIGHUP. Also across replicas
//! sharing a Redis (`redis-server`, which `.ci/run` installs).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::Redis;
use common::jobs::{self, JOBS};
use common::server::{Client, Reply, Server};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const ALICE: &str = "alice-key-0123456789abcdef";
const BOB: &str = "bob-key-0123456789abcdef";

fn keys_file(text: &str) -> std::path::PathBuf {
    let path = common::temp_dir("keys").join("keys");
    std::fs::write(&path, text).unwrap();
    path
}

fn landscape() -> Vec<u8> {
    jobs::image("landscape.png")
}

fn click(client: &Client, image_id: &str, mask_input: Option<&str>) -> Reply {
    let mut prompt = json!({"points": [[475, 365]], "labels": [1]});
    if let Some(logits_id) = mask_input {
        prompt["mask_input"] = json!(logits_id);
    }
    client.post_json(&format!("/v1/images/{image_id}/segment"), &json!({"prompts": [prompt]}))
}

/// Status and body: what a client can tell two answers apart by.
fn seen(reply: &Reply) -> (u16, Value) {
    (reply.status, reply.json())
}

fn unauthorized(reply: &Reply) -> String {
    assert_eq!(reply.status, 401, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.error_code(), "unauthorized");
    reply.headers.get("www-authenticate").expect("a challenge").to_str().unwrap().to_string()
}

/// What `client` sees of an image and a job by their ids: every route that reads, uses or deletes them.
fn every_lookup(client: &Client, image_id: &str, job_id: &str) -> Vec<(u16, Value)> {
    let image_path = format!("/v1/images/{image_id}");
    vec![
        seen(&client.get(&image_path)),
        seen(&click(client, image_id, None)),
        seen(&client.post_json(&format!("{image_path}/everything"), &json!({}))),
        seen(&client.get(&format!("{image_path}/embedding"))),
        seen(&client.delete(&image_path)),
        seen(&client.get(&format!("/v1/jobs/{job_id}"))),
        seen(&client.get(&format!("/v1/jobs/{job_id}/results"))),
        seen(&client.delete(&format!("/v1/jobs/{job_id}"))),
    ]
}

#[test]
fn keys_are_required_on_the_api_and_nowhere_else() {
    let path = keys_file(&format!("# tenants\nalice:{ALICE}\n\nbob:{BOB}\n"));
    let server = Server::start(&["--api-keys", path.to_str().unwrap()]);
    assert_eq!(unauthorized(&server.get("/v1/models")), "Bearer realm=\"samserve\"");
    let wrong = server.with_key("not-the-key-0123456789abcdef");
    assert_eq!(unauthorized(&wrong.get("/v1/models")), "Bearer realm=\"samserve\", error=\"invalid_token\"");
    // A percent-escaped path routes to the same handler, so it needs the same key.
    unauthorized(&server.get("/%76%31/models"));
    unauthorized(&server.post("/v1/images", "image/png", &landscape()));
    unauthorized(&server.get("/v1/jobs/0123"));
    unauthorized(&server.get("/no/such/route"));
    for open in ["/", "/healthz", "/readyz", "/openapi.json", "/metrics", "/assets/app.js", "/favicon.ico"] {
        assert_eq!(server.get(open).status, 200, "{open}");
    }
    assert_eq!(server.with_key(ALICE).get("/v1/models").status, 200);
    let header = |client: &Client, value: &str| {
        let request = ureq::get(format!("{}/v1/models", client.base)).header("Authorization", value);
        request.config().http_status_as_error(false).build().call().unwrap().status().as_u16()
    };
    assert_eq!(header(&server, &format!("bearer {ALICE}")), 200, "the scheme is case-insensitive");
    assert_eq!(header(&server, &format!("Basic {ALICE}")), 401);

    let keyed_metrics = Server::start(&["--api-keys", path.to_str().unwrap(), "--metrics-require-key"]);
    unauthorized(&keyed_metrics.get("/metrics"));
    assert_eq!(keyed_metrics.with_key(BOB).get("/metrics").status, 200);
}

#[test]
fn a_tenant_sees_nothing_of_another_tenants_images_refinements_and_jobs() {
    let server = Server::start_with_env(&[], &[("SAMSERVE_API_KEYS", &format!("alice:{ALICE},bob:{BOB}"))]);
    let (alice, bob) = (server.with_key(ALICE), server.with_key(BOB));
    let image = landscape();
    let upload = alice.upload(&image);
    let id = upload["image_id"].as_str().unwrap().to_string();
    // Not the plain content hash anyone could compute.
    let digest = Sha256::new().chain_update(upload["model"].as_str().unwrap()).chain_update([0]).chain_update(&image);
    let content_hash: String = digest.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect();
    assert_ne!(id, content_hash);
    let answer = click(&alice, &id, None);
    assert_eq!(answer.status, 200);
    let logits_id = answer.json()["results"][0]["logits_id"].as_str().unwrap().to_string();
    let job = jobs::submit(
        &alice,
        &[("a.png", image.clone())],
        &json!({"prompts": {"a.png": [{"points": [[10, 10]], "labels": [1]}]}}),
    );

    // Bob asks for each of alice's things by its id.
    let image_path = format!("/v1/images/{id}");
    let bob_sees = every_lookup(&bob, &id, &job);
    // Uploading the same image gives bob his own id and his own encode: a cache hit would tell him alice has it.
    let bobs = bob.upload(&image);
    assert_ne!(bobs["image_id"], upload["image_id"]);
    assert_eq!(bobs["cached"], false);
    assert_eq!(server.metric("samserve_encoder_runs_total{model=\"tiny\"}"), 2.0);
    let bobs_id = bobs["image_id"].as_str().unwrap();
    let borrowed = click(&bob, bobs_id, Some(&logits_id));
    assert_eq!((borrowed.status, borrowed.error_code().as_str()), (404, "logits_not_found"));

    // Alice still has everything bob tried to delete, and her refinement works.
    assert_eq!(alice.get(&image_path).status, 200);
    assert_eq!(click(&alice, &id, Some(&logits_id)).status, 200);
    let ended = jobs::wait_until_ended(&alice, &job);
    assert_eq!((ended["job_id"].as_str(), ended["status"].as_str()), (Some(job.as_str()), Some("succeeded")));
    assert_eq!(jobs::results(&alice, &job)["images"].as_array().unwrap().len(), 1);

    // What bob saw is exactly what anyone sees for ids that do not exist: alice's, once she deleted them.
    assert_eq!(alice.delete(&image_path).status, 204);
    assert_eq!(alice.delete(&format!("/v1/jobs/{job}")).status, 204);
    let gone = every_lookup(&alice, &id, &job);
    assert_eq!(bob_sees, gone);
    assert!(gone.iter().all(|(status, _)| *status == 404));
    assert_eq!(server.post_form(JOBS, &[]).status, 401);
}

#[test]
fn sighup_reloads_the_keys_file_and_a_broken_one_keeps_the_keys_in_force() {
    let path = keys_file(&format!("alice:{ALICE}\n"));
    let server = Server::start(&["--api-keys", path.to_str().unwrap()]);
    let (alice, carol) = (server.with_key(ALICE), server.with_key("carol-key-0123456789abcdef"));
    assert_eq!(alice.get("/v1/models").status, 200);
    let hangup = |expected_log: &str| {
        let status = Command::new("kill").args(["-HUP", &server.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        while !server.stderr().contains(expected_log) {
            assert!(Instant::now() < deadline, "no {expected_log:?} in the log:\n{}", server.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    std::fs::write(&path, "carol:carol-key-0123456789abcdef\n").unwrap();
    hangup("API keys reloaded");
    assert_eq!(alice.get("/v1/models").status, 401);
    assert_eq!(carol.get("/v1/models").status, 200);
    std::fs::write(&path, "carol:short\n").unwrap();
    hangup("API keys not reloaded");
    assert!(server.stderr().contains("line 1"));
    assert!(!server.stderr().contains("carol:short"), "keys never reach the log");
    assert_eq!(carol.get("/v1/models").status, 200);
}

#[test]
fn bad_key_settings_stop_the_server_with_one_line() {
    let path = keys_file("alice:short\n");
    let output = Command::new(env!("CARGO_BIN_EXE_samserve"))
        .args(common::runtime_args())
        .args(["serve", "--port", "0", "--api-keys", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 1: the key of alice must be at least 16"), "{stderr}");
    let both = Command::new(env!("CARGO_BIN_EXE_samserve"))
        .args(["serve", "--api-keys", path.to_str().unwrap(), "--api-key-list", "a:b"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&both.stderr).contains("cannot be used with"));
}

#[test]
fn replicas_sharing_a_redis_share_ids_and_tenants() {
    let redis = Redis::start();
    let model = common::fixtures().join("models").join("tiny");
    let keys = format!("alice:{ALICE},bob:{BOB}");
    let replica = || {
        Server::spawn(&["--model", model.to_str().unwrap(), "--redis", &redis.url()], &[("SAMSERVE_API_KEYS", &keys)])
    };
    let (first, second) = (replica(), replica());
    let id = first.with_key(ALICE).upload(&landscape())["image_id"].as_str().unwrap().to_string();
    // The second replica derives the same id (the secret is shared) and finds the embedding alice's.
    let again = second.with_key(ALICE).upload(&landscape());
    assert_eq!((again["image_id"].as_str(), again["cached"].as_bool()), (Some(id.as_str()), Some(true)));
    let answer = click(&second.with_key(ALICE), &id, None);
    assert_eq!(answer.status, 200);
    let logits_id = answer.json()["results"][0]["logits_id"].as_str().unwrap().to_string();
    assert_eq!(click(&first.with_key(ALICE), &id, Some(&logits_id)).status, 200);
    assert_eq!(second.with_key(BOB).get(&format!("/v1/images/{id}")).status, 404);
    assert_eq!(click(&second.with_key(BOB), &id, None).status, 404);
    let total: f64 = [&first, &second].iter().map(|s| s.metric("samserve_encoder_runs_total{model=\"tiny\"}")).sum();
    assert_eq!(total, 1.0);
}

#[test]
fn rate_limits_are_per_tenant_or_per_address_and_answer_429_with_retry_after() {
    let keys = format!("alice:{ALICE},bob:{BOB}");
    let limits =
        ["--rate-uploads", "0.01", "--rate-uploads-burst", "1", "--rate-prompts", "0.01", "--rate-prompts-burst", "2"];
    let server = Server::start_with_env(&limits, &[("SAMSERVE_API_KEYS", &keys)]);
    let (alice, bob) = (server.with_key(ALICE), server.with_key(BOB));
    let image_id = alice.upload(&landscape())["image_id"].as_str().unwrap().to_string();
    let refused = alice.post("/v1/images", "image/png", &jobs::image("tiny.png"));
    assert_limited(&refused, "uploads", 100);
    let refused_job = alice.post_form("/v1/jobs", &[("spec", None, b"{}")]);
    assert_limited(&refused_job, "uploads", 100);
    assert_eq!(server.metric("samserve_encoder_runs_total{model=\"tiny\"}"), 1.0, "a refused upload is not encoded");
    bob.upload(&landscape());
    for _ in 0..2 {
        assert_eq!(click(&alice, &image_id, None).status, 200);
    }
    assert_limited(&click(&alice, &image_id, None), "prompts", 100);
    // Reading is not limited, and a refused request was not counted against anything else.
    assert_eq!(alice.get(&format!("/v1/images/{image_id}")).status, 200);
    assert_eq!(server.metric("samserve_rate_limited_total{kind=\"uploads\"}"), 2.0);
    assert_eq!(server.metric("samserve_rate_limited_total{kind=\"prompts\"}"), 1.0);

    // Without keys, every client address has its own buckets: here all requests come from 127.0.0.1.
    let open = Server::start(&limits);
    open.upload(&landscape());
    assert_limited(&open.post("/v1/segment", "image/png", &landscape()), "uploads", 100);
}

/// A 429 `rate_limited` that names its kind and asks to come back after about `seconds` (rounded up).
fn assert_limited(reply: &Reply, kind: &str, seconds: u64) {
    assert_eq!(reply.status, 429, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.error_code(), "rate_limited");
    assert!(reply.json()["error"]["message"].as_str().unwrap().contains(kind));
    let retry_after: u64 = reply.headers.get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!((seconds - 1..=seconds).contains(&retry_after), "Retry-After: {retry_after}");
}

/// Submits a job of `files` (everything mode) and gives the reply.
fn submit_files(client: &Client, files: &[(&str, Vec<u8>)], spec: &Value) -> Reply {
    let spec = spec.to_string();
    let mut fields: Vec<(&str, Option<&str>, &[u8])> =
        files.iter().map(|(name, bytes)| ("image", Some(*name), bytes.as_slice())).collect();
    fields.push(("spec", None, spec.as_bytes()));
    client.post_form(JOBS, &fields)
}

/// With `--tenant-max-jobs 2 --tenant-max-job-mb 1`: a third job in flight is 429, images in flight past 1 MiB are
/// 507, each tenant counts its own, and ending a job (here: cancelling it) gives its place back.
fn check_job_quotas(server: &Server) {
    let (alice, bob) = (server.with_key(ALICE), server.with_key(BOB));
    // A job that keeps the one worker busy for seconds: everything with crops on a large photo (533 kB).
    let slow = json!({"mode": "everything", "everything": {"points_per_side": 32, "crop_n_layers": 1}});
    let small = [("p.jpg", jobs::image("portrait.jpg"))];
    let accepted = |reply: Reply| {
        assert_eq!(reply.status, 202, "{}", String::from_utf8_lossy(&reply.body));
        reply.json()["job_id"].as_str().unwrap().to_string()
    };
    let first = accepted(submit_files(&alice, &[("large.jpg", jobs::image("large.jpg"))], &slow));
    let second = accepted(submit_files(&alice, &small, &jobs::everything_spec(4)));
    let third = submit_files(&alice, &small, &jobs::everything_spec(4));
    assert_eq!((third.status, third.error_code().as_str()), (429, "too_many_jobs"));
    assert!(third.retry_after.is_none());
    accepted(submit_files(&bob, &small, &jobs::everything_spec(4)));

    assert_eq!(alice.delete(&format!("/v1/jobs/{second}")).status, 200);
    // 533 kB in flight + 4 x 165 kB would pass 1 MiB.
    let landscapes: Vec<(&str, Vec<u8>)> = ["a.png", "b.png", "c.png", "d.png"].map(|name| (name, landscape())).into();
    let too_big = submit_files(&alice, &landscapes, &jobs::everything_spec(4));
    assert_eq!((too_big.status, too_big.error_code().as_str()), (507, "storage_quota_exceeded"));
    assert_eq!(alice.delete(&format!("/v1/jobs/{first}")).status, 200);
    let fits = accepted(submit_files(&alice, &landscapes, &jobs::everything_spec(4)));
    assert_eq!(jobs::wait_until_ended(&alice, &fits)["status"], "succeeded");
}

#[test]
fn job_quotas_hold_for_each_tenant_alone_and_across_replicas() {
    let keys = format!("alice:{ALICE},bob:{BOB}");
    let quotas = ["--tenant-max-jobs", "2", "--tenant-max-job-mb", "1"];
    check_job_quotas(&Server::start_with_env(&quotas, &[("SAMSERVE_API_KEYS", &keys)]));

    let redis = Redis::start();
    let url = redis.url();
    let shared = [&quotas[..], &["--redis", &url]].concat();
    check_job_quotas(&Server::start_with_env(&shared, &[("SAMSERVE_API_KEYS", &keys)]));
}

#[test]
fn a_tenant_past_its_cache_share_evicts_its_own_images_only() {
    // One tiny-model embedding is 64 KiB: the cache holds 32, each tenant 16.
    let keys = format!("alice:{ALICE},bob:{BOB}");
    let server =
        Server::start_with_env(&["--cache-mb", "2", "--tenant-cache-mb", "1"], &[("SAMSERVE_API_KEYS", &keys)]);
    let (alice, bob) = (server.with_key(ALICE), server.with_key(BOB));
    let upload = |client: &Client, seed: u32| {
        client.upload(&common::synthetic_png(seed, 40, 30))["image_id"].as_str().unwrap().to_string()
    };
    let bobs: Vec<String> = (0..4).map(|seed| upload(&bob, seed)).collect();
    let alices: Vec<String> = (100..120).map(|seed| upload(&alice, seed)).collect();
    assert_eq!(server.metric("samserve_embedding_cache_evictions_total"), 4.0);
    for id in &bobs {
        assert_eq!(bob.get(&format!("/v1/images/{id}")).status, 200, "bob keeps his images");
    }
    let kept: Vec<u16> = alices.iter().map(|id| alice.get(&format!("/v1/images/{id}")).status).collect();
    assert_eq!(kept, [[404; 4].as_slice(), &[200; 16]].concat(), "alice's oldest went");
}
