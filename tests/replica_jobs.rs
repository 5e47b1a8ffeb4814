//! Batch jobs shared by replicas through Redis (`--redis`, docs/scaling.md), with real `redis-server`, nginx and an
//! S3-compatible server: a job submitted to one replica is processed by all of them, survives `kill -9` of a replica
//! and a Redis restart, and gives exactly the results of a single server without Redis.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::cluster::{Nginx, Redis, S3Server};
use common::jobs::{JOBS, everything_spec, image, results, status, submit, wait_until_ended};
use common::server::{Client, Server};
use serde_json::Value;

/// The corrupt one among the 30 images.
const CORRUPT: &str = "2-corrupt.png";

/// 30 images of the fixtures, one of them corrupt.
fn thirty_images() -> Vec<(String, Vec<u8>)> {
    let names = ["landscape.png", "portrait.jpg", "gray.png", "rgba.png", "tiny.png", "exif_rotated.jpg"];
    let mut files: Vec<(String, Vec<u8>)> =
        (0..5).flat_map(|round| names.map(|name| (format!("{round}-{name}"), image(name)))).collect();
    files[14] = (CORRUPT.to_string(), b"\x89PNG\r\n\x1a\n but not really".to_vec());
    files
}

fn submit_thirty(client: &Client) -> String {
    let files = thirty_images();
    let files: Vec<(&str, Vec<u8>)> = files.iter().map(|(name, bytes)| (name.as_str(), bytes.clone())).collect();
    submit(client, &files, &everything_spec(8))
}

fn tiny_lean() -> String {
    common::fixtures().join("models").join("tiny-lean").display().to_string()
}

/// The results of the same job on one server without Redis, computed once for the tests of this file.
fn single_node_results() -> &'static Value {
    static RESULTS: OnceLock<Value> = OnceLock::new();
    RESULTS.get_or_init(|| {
        let server = Server::spawn(&["--model", &tiny_lean()], &[]);
        let job = submit_thirty(&server);
        wait_until_ended(&server, &job);
        results(&server, &job)
    })
}

/// A replica with one job worker, taking over the images of a replica silent for 2 s.
fn replica(redis: &Redis, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let url = redis.url();
    let model = tiny_lean();
    let args = [&["--model", &model, "--redis", &url, "--job-workers", "1", "--job-claim-timeout-s", "2"], extra];
    Server::spawn(&args.concat(), env)
}

/// The replica's name in the shared queue's consumer group, from its log.
fn consumer_name(server: &Server) -> String {
    let log = server.stderr();
    let line = log.lines().find(|l| l.contains("shared queue in Redis")).expect("the queue's start line");
    let name = line.split("consumer=").nth(1).expect("a consumer field").split_whitespace().next().unwrap();
    name.trim_matches('"').to_string()
}

/// The queue entries a consumer has taken and not acknowledged.
fn held_entries(redis: &Redis, consumer: &str) -> Vec<String> {
    let mut connection = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
    let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg("samserve:{jobs}:queue")
        .arg("workers")
        .arg("-")
        .arg("+")
        .arg(100)
        .arg(consumer)
        .query(&mut connection)
        .unwrap();
    pending.into_iter().map(|(entry, ..)| entry).collect()
}

/// Images this replica finished, successfully or not.
fn images_done(server: &Server) -> f64 {
    ["succeeded", "failed"]
        .iter()
        .map(|o| server.metric(&format!("samserve_job_images_total{{outcome=\"{o}\"}}")))
        .sum()
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The job ended with every image done once, the corrupt one failed, and the single server's results.
fn assert_complete_and_equal_to_a_single_node(client: &Client, job: &str) {
    let ended = wait_until_ended(client, job);
    assert_eq!(ended["status"], "succeeded", "{ended}");
    assert_eq!((ended["done"].as_u64(), ended["failed"].as_u64()), (Some(30), Some(1)), "{ended}");
    assert_eq!(ended["errors"][0]["file"], CORRUPT);
    let results = results(client, job);
    assert_eq!(results["images"].as_array().unwrap().len(), 29, "no image twice, none missing");
    assert!(!results["annotations"].as_array().unwrap().is_empty());
    assert!(&results == single_node_results(), "the shared job's results differ from a single server's");
}

#[test]
fn a_job_is_processed_by_every_replica_and_survives_kill_9_of_one() {
    let redis = Redis::start_durable();
    let mut replicas: Vec<Server> = (0..3).map(|_| replica(&redis, &[], &[])).collect();
    let nginx = Nginx::start(&replicas.iter().collect::<Vec<_>>());
    single_node_results();
    let job = submit_thirty(&replicas[0]);
    wait_for("every replica finished an image", || replicas.iter().all(|r| images_done(r) >= 1.0));
    let at_kill = status(&nginx.client, &job);
    assert!(at_kill["done"].as_u64().unwrap() < 30, "the job ended before the kill: {at_kill}");
    let killed = replicas.remove(1);
    let consumer = consumer_name(&killed);
    drop(killed); // SIGKILL, most likely in the middle of an image
    let held = held_entries(&redis, &consumer);
    replicas.push(replica(&redis, &[], &[]));
    // Through nginx: whichever replica answers (nginx skips the dead one) reports the same job.
    assert_complete_and_equal_to_a_single_node(&nginx.client, &job);
    // What the killed replica held was taken over by another (unless the kill fell between two of its images).
    let logs: String = replicas.iter().map(Server::stderr).collect();
    for entry in held {
        assert!(
            logs.contains(&format!("took over a job image whose replica stopped answering entry=\"{entry}\"")),
            "{entry}: {logs}"
        );
    }
}

#[test]
fn a_job_survives_a_redis_restart_and_submissions_wait_while_redis_is_down() {
    let redis = Redis::start_durable();
    let blobs = common::temp_dir("blobs");
    let blob_store = format!("file://{}", blobs.display());
    let replicas: Vec<Server> = (0..2).map(|_| replica(&redis, &["--blob-store", &blob_store], &[])).collect();
    single_node_results();
    let job = submit_thirty(&replicas[0]);
    wait_for("a few images are done", || status(&replicas[1], &job)["done"].as_u64().unwrap() >= 3);

    let stopped = redis.stop();
    // Within a ping or two, submissions are refused before their images are received, and status reads too.
    let files = [("a.png", image("tiny.png"))];
    let form: Vec<(&str, Option<&str>, &[u8])> = vec![("image", Some("a.png"), &files[0].1)];
    wait_for("a submission is refused", || replicas[0].post_form(JOBS, &form).status == 503);
    let refused = replicas[0].post_form(JOBS, &form);
    assert_eq!((refused.status, refused.error_code()), (503, "job_store_unavailable".to_string()));
    assert_eq!(refused.retry_after.as_deref(), Some("1"));
    assert_eq!(replicas[1].get(&format!("/v1/jobs/{job}")).status, 503);

    let _redis = stopped.restart();
    wait_for("status reads work again", || replicas[1].get(&format!("/v1/jobs/{job}")).status == 200);
    assert_complete_and_equal_to_a_single_node(&replicas[1], &job);
    wait_for("the job's images are removed", || walk(&blobs).is_empty());
}

/// The files under a folder, recursively.
fn walk(folder: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files
}

#[test]
fn job_images_in_an_s3_bucket() {
    let s3 = S3Server::start("samserve-jobs");
    let redis = Redis::start_durable();
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(name, value)| (*name, value.as_str())).collect();
    let store = ["--blob-store", "s3://samserve-jobs/team/jobs"];
    let replicas: Vec<Server> = (0..2).map(|_| replica(&redis, &store, &env)).collect();
    single_node_results();
    let job = submit_thirty(&replicas[0]);
    let keys = s3.keys("samserve-jobs");
    assert!(!keys.is_empty() && keys.iter().all(|key| key.starts_with("team/jobs/jobs/")), "{keys:?}");
    assert_complete_and_equal_to_a_single_node(&replicas[1], &job);
    wait_for("the job's images are removed from the bucket", || s3.keys("samserve-jobs").is_empty());
}
