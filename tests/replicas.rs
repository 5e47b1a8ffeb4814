//! Replicas sharing one Redis (`--redis`), behind a real nginx balancing round-robin, as docs/scaling.md deploys
//! them: any replica answers for an image another encoded, the encoder runs once over all of them, refinements
//! cross replicas, and a Redis outage degrades to each replica's own caches. Needs `redis-server` and `nginx` (Debian
//! packages; `.ci/run` installs them).

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::server::{Client, Server};
use serde_json::json;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn program(name: &str, debian_path: &str) -> PathBuf {
    let path = PathBuf::from(debian_path);
    assert!(path.exists(), "{name} is needed: apt-get install {name} (.ci/run installs it)");
    path
}

/// A `redis-server` of its own, without persistence, on a free port.
struct Redis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    fn start() -> Self {
        Self::start_on(free_port(), common::temp_dir("redis"))
    }

    fn start_on(port: u16, dir: PathBuf) -> Self {
        let child = Command::new(program("redis-server", "/usr/bin/redis-server"))
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let redis = Self { child, port, dir };
        let client = redis::Client::open(redis.url()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.get_connection().and_then(|mut c| redis::cmd("PING").query::<String>(&mut c)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(mut self) -> (u16, PathBuf) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.port, self.dir.clone())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx balancing round-robin over `backends`, as a proxy in front of replicas would.
struct Nginx {
    child: Child,
    client: Client,
}

impl Nginx {
    fn start(backends: &[&Server]) -> Self {
        let dir = common::temp_dir("nginx");
        // nginx's workers drop root: they must be able to write the request-body temp folders it makes in here.
        let readable = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755);
        std::fs::set_permissions(&dir, readable).unwrap();
        let port = free_port();
        let servers: String = backends
            .iter()
            .map(|server| format!("    server {};\n", server.base.trim_start_matches("http://")))
            .collect();
        let temp = |name: &str| dir.join(name).display().to_string();
        let config = format!(
            "daemon off;\nworker_processes 1;\npid {pid};\nerror_log {log} warn;\nevents {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {body};\n  proxy_temp_path {proxy};\n  \
             fastcgi_temp_path {fastcgi};\n  uwsgi_temp_path {uwsgi};\n  scgi_temp_path {scgi};\n  \
             client_max_body_size 64m;\n  upstream samserve {{\n{servers}  }}\n  server {{\n    \
             listen 127.0.0.1:{port};\n    location / {{ proxy_pass http://samserve; }}\n  }}\n}}\n",
            pid = temp("nginx.pid"),
            log = temp("error.log"),
            body = temp("body"),
            proxy = temp("proxy"),
            fastcgi = temp("fastcgi"),
            uwsgi = temp("uwsgi"),
            scgi = temp("scgi"),
        );
        let config_path = dir.join("nginx.conf");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new(program("nginx", "/usr/sbin/nginx"))
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&config_path)
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let client = Client::new(&format!("http://127.0.0.1:{port}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not listen: {}", read_log(&dir));
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, client }
    }
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
    // The image's metadata and its removal, from any replica.
    for server in &replicas {
        assert_eq!(server.get(&format!("/v1/images/{image_id}")).status, 200);
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

    let (port, dir) = redis.stop();
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

    let _redis = Redis::start_on(port, dir);
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
    let output = Command::new(env!("CARGO_BIN_EXE_samserve"))
        .args(common::runtime_args())
        .args(["serve", "--port", "0", "--redis", &format!("redis://127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("cannot reach Redis at redis://127.0.0.1"), "{stderr}");
}

#[test]
fn a_replica_takes_over_the_encode_of_one_that_died_holding_the_lock() {
    use sha2::Digest;
    let redis = Redis::start();
    let server = replica(&redis);
    let image = landscape();
    // The image's id, as the API derives it (model name, a zero byte, the bytes).
    let digest = sha2::Sha256::new().chain_update(b"tiny").chain_update([0]).chain_update(&image).finalize();
    let image_id: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    // A replica that took the image's lock and died: the lock stays until it expires unrefreshed.
    let mut connection = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
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
