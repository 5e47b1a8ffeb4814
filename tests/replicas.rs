//! Replicas sharing one Redis (`--redis`), behind a real nginx balancing round-robin, as docs/scaling.md deploys
//! them: any replica answers for an image another encoded, the encoder runs once over all of them, refinements
//! cross replicas, and a Redis outage degrades to each replica's own caches. Needs `redis-server` and `nginx` (Debian
//! packages; `.ci/run` installs them).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{Nginx, Redis, RedisCluster, free_port};
use common::server::{Client, Server};
use serde_json::json;

fn replica(redis: &Redis) -> Server {
    let model = common::fixtures().join("models").join("tiny");
    Server::spawn(&["--model", model.to_str().unwrap(), "--redis", &redis.url()], &[])
}

fn landscape() -> Vec<u8> {
    std::fs::read(common::fixtures().join("images").join("landscape.png")).unwrap()
}

fn encoder_runs(server: &Server) -> f64 {
    server.metric("samserve_encoder_runs_total{model=\"tiny\"}")
}

fn click(client: &Client, image_id: &str, point: [f64; 2], mask_input: Option<&str>) -> serde_json::Value {
    let mut prompt = json!({"points": [point], "labels": [1]});
    if let Some(logits_id) = mask_input {
        prompt["mask_input"] = json!(logits_id);
    }
    let reply = client.post_json(&format!("/v1/images/{image_id}/segment"), &json!({"prompts": [prompt]}));
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    reply.json()
}

#[test]
fn three_replicas_behind_nginx_answer_as_one_service() {
    let redis = Redis::start();
    let replicas = [replica(&redis), replica(&redis), replica(&redis)];
    let nginx = Nginx::start(&replicas.iter().collect::<Vec<_>>());
    let upload = nginx.client.upload(&landscape());
    let image_id = upload["image_id"].as_str().unwrap().to_string();

    // 20 clicks spread round-robin over the replicas; each answers from the one shared embedding.
    let mut logits_id: Option<String> = None;
    for i in 0..20 {
        let point = [400.0 + 5.0 * i as f64, 350.0];
        // Every fourth click refines the previous answer, whichever replica gave it.
        let refine = if i % 4 == 3 { logits_id.as_deref() } else { None };
        let answer = click(&nginx.client, &image_id, point, refine);
        logits_id = answer["results"][0]["logits_id"].as_str().map(str::to_string);
    }
    // The embedding a replica got from Redis answers exactly as the one it was encoded into.
    let answers: Vec<Vec<(serde_json::Value, serde_json::Value)>> = replicas
        .iter()
        .map(|server| {
            let answer = click(&server.client, &image_id, [475.0, 365.0], None);
            let masks = answer["results"][0]["masks"].as_array().unwrap().clone();
            masks.into_iter().map(|mask| (mask["rle"].clone(), mask["score"].clone())).collect()
        })
        .collect();
    assert!(!answers[0].is_empty() && answers.iter().all(|a| a == &answers[0]), "the same masks from every replica");
    let runs: f64 = replicas.iter().map(encoder_runs).sum();
    assert_eq!(runs, 1.0, "one encoder run over the replicas");
    for server in &replicas {
        assert!(server.metric("samserve_decoder_runs_total{model=\"tiny\"}") >= 1.0, "every replica answered clicks");
    }
    // The image's metadata, its embedding (the same bytes, whether encoded there or read from Redis) and its
    // removal, from any replica.
    let embedding_path = format!("/v1/images/{image_id}/embedding?dtype=f32");
    let embedding = replicas[0].get(&embedding_path);
    assert_eq!(embedding.status, 200);
    for server in &replicas {
        assert_eq!(server.get(&format!("/v1/images/{image_id}")).status, 200);
        assert!(server.get(&embedding_path).body == embedding.body, "the same embedding from every replica");
    }
    assert_eq!(nginx.client.delete(&format!("/v1/images/{image_id}")).status, 204);
    // Every replica drops its copy (announced through Redis); a newcomer finds none either.
    let deadline = Instant::now() + Duration::from_secs(5);
    for server in &replicas {
        while server.get(&format!("/v1/images/{image_id}")).status != 404 {
            assert!(Instant::now() < deadline, "a replica still answers for a removed image");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let newcomer = replica(&redis);
    assert_eq!(newcomer.get(&format!("/v1/images/{image_id}")).status, 404, "deleted from the shared store");
}

#[test]
fn replicas_receiving_the_same_new_image_at_once_encode_it_once() {
    let redis = Redis::start();
    let replicas = [replica(&redis), replica(&redis), replica(&redis)];
    let image = landscape();
    let uploads: Vec<serde_json::Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = replicas.iter().map(|server| scope.spawn(|| server.upload(&image))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(uploads.iter().all(|u| u["image_id"] == uploads[0]["image_id"]));
    assert_eq!(replicas.iter().map(encoder_runs).sum::<f64>(), 1.0, "the lock holder encodes; the others wait for it");
    assert_eq!(uploads.iter().filter(|u| u["cached"] == false).count(), 1, "one upload ran the encoder");
}

#[test]
fn a_redis_outage_degrades_to_each_replicas_own_caches_and_ends_when_redis_returns() {
    let redis = Redis::start();
    let server = replica(&redis);
    let upload = server.upload(&landscape());
    let image_id = upload["image_id"].as_str().unwrap().to_string();
    assert_eq!(server.get("/readyz").json()["status"], "ready");

    let stopped = redis.stop();
    let answer = click(&server.client, &image_id, [475.0, 365.0], None);
    let logits_id = answer["results"][0]["logits_id"].as_str().unwrap().to_string();
    click(&server.client, &image_id, [480.0, 370.0], Some(&logits_id));
    let mut other = landscape();
    other.extend_from_slice(b"trailing bytes make another upload");
    assert_eq!(server.post("/v1/images", "image/png", &other).status, 200, "uploads encode locally");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ready = server.get("/readyz").json();
    while ready["status"] != "degraded" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        ready = server.get("/readyz").json();
    }
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert!(ready["redis"].as_str().unwrap().starts_with("unreachable"), "{ready}");
    assert_eq!(server.get("/readyz").status, 200, "still ready: a balancer keeps sending clicks");

    let _redis = stopped.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.get("/readyz").json()["status"] != "ready" {
        assert!(Instant::now() < deadline, "readiness back to ready once Redis returns");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Shared again: a new replica finds what this one stores from now on.
    let mut third = landscape();
    third.extend_from_slice(b"a third image");
    let image_id = server.upload(&third)["image_id"].as_str().unwrap().to_string();
    let newcomer = replica(&_redis);
    click(&newcomer.client, &image_id, [475.0, 365.0], None);
    assert_eq!(encoder_runs(&newcomer), 0.0);
}

#[test]
fn redis_unreachable_at_start_is_one_line_and_exit() {
    let port = free_port();
    let error = start_failure(&format!("redis://127.0.0.1:{port}"), &[]);
    assert!(error.contains("cannot reach Redis at redis://127.0.0.1"), "{error}");
}

/// `samserve serve --redis URL`, expected to exit at start with one error line: that line.
fn start_failure(url: &str, env: &[(&str, &str)]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_samserve"))
        .args(common::runtime_args())
        .args(["serve", "--port", "0", "--redis", url])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    errors[0].to_string()
}

#[test]
fn a_replica_takes_over_the_encode_of_one_that_died_holding_the_lock() {
    let redis = Redis::start();
    let server = replica(&redis);
    let image = landscape();
    // The image's id, as the replicas derive it: keyed by the secret they share through Redis.
    let mut connection = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
    let secret: String = redis::cmd("GET").arg("samserve:id-secret").query(&mut connection).unwrap();
    let secret = samserve::tenant::IdSecret::from_hex(&secret).unwrap();
    let image_id = secret.image_id(&samserve::tenant::Tenant::anonymous(), "tiny", &image);
    // A replica that took the image's lock and died: the lock stays until it expires unrefreshed.
    let lock = format!("samserve:encoding:{image_id}");
    redis::cmd("SET").arg(&lock).arg("a-dead-replica").arg("PX").arg(1500).query::<()>(&mut connection).unwrap();
    let started = Instant::now();
    let upload = server.upload(&image);
    assert_eq!(upload["image_id"], image_id.as_str());
    assert!(started.elapsed() >= Duration::from_millis(1000), "it waited for the lock rather than ignore it");
    assert_eq!(upload["cached"], false, "then encoded the image itself");
    assert_eq!(encoder_runs(&server), 1.0);
    let left: Option<String> = redis::cmd("GET").arg(&lock).query(&mut connection).unwrap();
    assert_eq!(left, None, "and released its own lock");
}

#[test]
fn rediss_urls_reach_redis_over_tls_trusting_the_systems_roots_or_ssl_cert_file() {
    let redis = Redis::start_tls();
    let ca = redis.ca_file();
    let trusted = [("SSL_CERT_FILE", ca.to_str().unwrap())];
    let url = redis.url();
    let (first, second) =
        (Server::start_with_env(&["--redis", &url], &trusted), Server::start_with_env(&["--redis", &url], &trusted));
    let image_id = first.upload(&landscape())["image_id"].as_str().unwrap().to_string();
    click(&second.client, &image_id, [475.0, 365.0], None);
    assert_eq!(encoder_runs(&second), 0.0, "the embedding came through Redis");
    // Jobs use their own (blocking) connections: TLS too.
    let job =
        common::jobs::submit(&first, &[("a.png", common::jobs::image("tiny.png"))], &common::jobs::everything_spec(4));
    assert_eq!(common::jobs::wait_until_ended(&second, &job)["status"], "succeeded");

    // Trusting other CAs only (here: the server's own certificate, which is no CA), the server is refused: one line.
    let other = redis.ca_file().with_file_name("server.pem");
    let error = start_failure(&url, &[("SSL_CERT_FILE", other.to_str().unwrap())]);
    assert!(error.contains("cannot reach Redis at rediss://127.0.0.1") && error.contains("certificate"), "{error}");
}

#[test]
fn a_redis_cluster_named_by_its_nodes_shares_embeddings_removals_and_jobs() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let (first, second) = (Server::start(&["--redis", &url]), Server::start(&["--redis", &url]));
    let image_id = first.upload(&landscape())["image_id"].as_str().unwrap().to_string();
    // A multimask click stores three logits, on whichever nodes their keys hash to; refinements find them.
    let answer = click(&second.client, &image_id, [475.0, 365.0], None);
    assert_eq!(encoder_runs(&second), 0.0, "the embedding came through the cluster");
    let logits_id = answer["results"][0]["logits_id"].as_str().unwrap().to_string();
    click(&first.client, &image_id, [480.0, 370.0], Some(&logits_id));
    let job =
        common::jobs::submit(&first, &[("a.png", common::jobs::image("tiny.png"))], &common::jobs::everything_spec(4));
    assert_eq!(common::jobs::wait_until_ended(&second, &job)["status"], "succeeded");
    assert_eq!(second.delete(&format!("/v1/images/{image_id}")).status, 204);
    let deadline = Instant::now() + Duration::from_secs(5);
    while first.get(&format!("/v1/images/{image_id}")).status != 404 {
        assert!(Instant::now() < deadline, "the removal was not announced through the cluster");
        std::thread::sleep(Duration::from_millis(20));
    }
}
