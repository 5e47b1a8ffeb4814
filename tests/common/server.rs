//! The real `samserve serve` process on an ephemeral port, and a small HTTP client for it.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Server {
    pub child: Child,
    /// Requests to this server (`server.get(...)` and the like, through `Deref`).
    pub client: Client,
    /// Everything the server wrote to stderr so far (drained by a thread, so the server never blocks on it).
    stderr: Arc<Mutex<String>>,
}

/// A response: status, the Retry-After header if any, the headers and the body.
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub headers: ureq::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// The API error code of an error reply.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"].as_str().expect("an error body").to_string()
    }
}

pub fn fixture_models() -> Vec<String> {
    ["tiny", "tiny-lean"].iter().map(|m| super::fixtures().join("models").join(m).display().to_string()).collect()
}

impl Server {
    /// Starts `samserve serve --port 0` with the fixture models and `extra` arguments; waits until ready.
    pub fn start(extra: &[&str]) -> Self {
        Self::start_with_env(extra, &[])
    }

    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let models = fixture_models().join(",");
        Self::spawn(&[&["--model", models.as_str()], extra].concat(), env)
    }

    /// `samserve serve --port 0` with only `args`: no --model means the built-in model. Without --data-dir,
    /// a fresh temporary one.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        let data_dir = super::temp_dir("data");
        let data_dir_args = ["--data-dir", data_dir.to_str().expect("UTF-8 path")];
        // A test that picks its device also gets the library `cargo build` fetched.
        let runtime_args = if args.contains(&"--device") { Vec::new() } else { super::runtime_args() };
        let mut child = Command::new(env!("CARGO_BIN_EXE_samserve"))
            .args(runtime_args)
            .args(["--threads", "1", "serve", "--port", "0"])
            .args(args)
            .args(if args.contains(&"--data-dir") { &[][..] } else { &data_dir_args[..] })
            .envs(env.iter().copied())
            .env_remove("ORT_DYLIB_PATH")
            .env_remove("SAMSERVE_ORT_LIB")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the samserve binary runs");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("the server prints its address");
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(read @ 1..) = pipe.read(&mut chunk) {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk[..read]));
            }
        });
        let base = line.trim().rsplit(' ').next().expect("an address").to_string();
        assert!(base.starts_with("http://") || base.starts_with("https://"), "unexpected first line {line:?}");
        let server = Self { child, client: Client::new(&base), stderr };
        if base.starts_with("https://") {
            return server; // this client speaks plain HTTP only: the caller checks readiness its own way
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.get("/readyz").status != 200 {
            assert!(Instant::now() < deadline, "the server did not become ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// What the server has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for the exit after a signal; returns whether it exited successfully, and its stderr.
    pub fn terminate_after_signal(mut self) -> (bool, String) {
        let exit = self.child.wait().expect("the server exits");
        std::thread::sleep(Duration::from_millis(100)); // the last of stderr
        let stderr = self.stderr.lock().unwrap().clone();
        (exit.success(), stderr)
    }
}

/// An HTTP client of one base address (a server, or a proxy in front of several), with an API key or none.
pub struct Client {
    pub base: String,
    agent: ureq::Agent,
    key: Option<String>,
}

impl Client {
    pub fn new(base: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        Self { base: base.trim_end_matches('/').to_string(), agent, key: None }
    }

    /// The same base, sending `Authorization: Bearer KEY`.
    pub fn with_key(&self, key: &str) -> Self {
        Self { base: self.base.clone(), agent: self.agent.clone(), key: Some(key.to_string()) }
    }

    fn reply(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
        let mut response = result.expect("the server answers");
        let retry_after = response.headers().get("retry-after").map(|v| v.to_str().expect("ASCII header").to_string());
        let body = response.body_mut().with_config().limit(200 << 20).read_to_vec().expect("a readable body");
        Reply { status: response.status().as_u16(), retry_after, headers: response.headers().clone(), body }
    }

    fn authorized<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.key {
            Some(key) => request.header("Authorization", format!("Bearer {key}")),
            None => request,
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        Self::reply(self.authorized(self.agent.get(format!("{}{path}", self.base))).call())
    }

    /// A GET with one more request header.
    pub fn get_with_header(&self, path: &str, name: &str, value: &str) -> Reply {
        Self::reply(self.authorized(self.agent.get(format!("{}{path}", self.base)).header(name, value)).call())
    }

    pub fn delete(&self, path: &str) -> Reply {
        Self::reply(self.authorized(self.agent.delete(format!("{}{path}", self.base))).call())
    }

    pub fn post(&self, path: &str, content_type: &str, body: &[u8]) -> Reply {
        let request = self.agent.post(format!("{}{path}", self.base)).header("Content-Type", content_type);
        Self::reply(self.authorized(request).send(body))
    }

    pub fn put(&self, path: &str, body: &[u8]) -> Reply {
        Self::reply(self.authorized(self.agent.put(format!("{}{path}", self.base))).send(body))
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.post(path, "application/json", body.to_string().as_bytes())
    }

    /// multipart/form-data with (name, file name or None, bytes) fields.
    pub fn post_form(&self, path: &str, fields: &[(&str, Option<&str>, &[u8])]) -> Reply {
        let boundary = "samserve-test-boundary-7d1f";
        let mut body = Vec::new();
        for (name, file_name, bytes) in fields {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes(),
            );
            if let Some(file_name) = file_name {
                body.extend_from_slice(
                    format!("; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream").as_bytes(),
                );
            }
            body.extend_from_slice(b"\r\n\r\n");
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        self.post(path, &format!("multipart/form-data; boundary={boundary}"), &body)
    }

    /// Uploads an image; panics unless 200.
    pub fn upload(&self, bytes: &[u8]) -> Value {
        let reply = self.post("/v1/images", "image/png", bytes);
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
        reply.json()
    }

    /// The value of a metric line (`name{labels} value`), 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        let text = String::from_utf8(self.get("/metrics").body).expect("UTF-8 metrics");
        text.lines()
            .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .map_or(0.0, |value| value.trim().parse().expect("a number"))
    }
}

impl std::ops::Deref for Server {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
