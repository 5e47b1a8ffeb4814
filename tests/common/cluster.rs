//! Real Redis and nginx processes for the replica tests (`tests/replicas.rs`, `tests/replica_jobs.rs`): Debian's
//! `redis-server` and `nginx`, which `.ci/run` installs.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::server::{Client, Server};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn program(name: &str, debian_path: &str) -> PathBuf {
    let path = PathBuf::from(debian_path);
    assert!(path.exists(), "{name} is needed: apt-get install {name} (.ci/run installs it)");
    path
}

/// A `redis-server` of its own on a free port: without persistence, or durable (an append-only file fsynced on
/// every write, as docs/scaling.md asks for shared jobs).
pub struct Redis {
    child: Child,
    port: u16,
    dir: PathBuf,
    durable: bool,
    /// Whether it speaks only TLS (`rediss://`), with the certificates of [`Redis::start_tls`].
    tls: bool,
}

impl Redis {
    pub fn start() -> Self {
        Self::launch(free_port(), super::temp_dir("redis"), false, false, &[])
    }

    pub fn start_durable() -> Self {
        Self::launch(free_port(), super::temp_dir("redis"), true, false, &[])
    }

    /// A Redis on a TLS port only, with the certificates of [`test_certificates`].
    /// Clients trust it through `SSL_CERT_FILE` = [`Redis::ca_file`].
    pub fn start_tls() -> Self {
        let dir = test_certificates("redis-tls");
        Self::launch(free_port(), dir, false, true, &[])
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn launch(port: u16, dir: PathBuf, durable: bool, tls: bool, extra: &[&str]) -> Self {
        let persistence: &[&str] =
            if durable { &["--appendonly", "yes", "--appendfsync", "always"] } else { &["--appendonly", "no"] };
        let port_text = port.to_string();
        let listen = if tls {
            let files =
                ["--tls-cert-file", "server.pem", "--tls-key-file", "server.key", "--tls-ca-cert-file", "ca.pem"];
            [&["--port", "0", "--tls-port", &port_text, "--tls-auth-clients", "no"][..], &files].concat()
        } else {
            vec!["--port", &port_text]
        };
        let child = Command::new(program("redis-server", "/usr/bin/redis-server"))
            .args(listen)
            .args(["--bind", "127.0.0.1", "--save", ""])
            .args(persistence)
            .args(extra)
            .arg("--dir")
            .arg(&dir)
            .current_dir(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let redis = Self { child, port, dir, durable, tls };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !redis.answers() {
            assert!(Instant::now() < deadline, "redis-server did not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    /// Whether it answers a PING (for TLS: whether it listens; this process does not trust its CA).
    fn answers(&self) -> bool {
        if self.tls {
            return std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok();
        }
        let client = redis::Client::open(self.url()).unwrap();
        client.get_connection().and_then(|mut c| redis::cmd("PING").query::<String>(&mut c)).is_ok()
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", if self.tls { "rediss" } else { "redis" }, self.port)
    }

    /// Stops it with SIGKILL: no chance to save anything more.
    pub fn stop(mut self) -> StoppedRedis {
        let _ = self.child.kill();
        let _ = self.child.wait();
        StoppedRedis { port: self.port, dir: self.dir.clone(), durable: self.durable, tls: self.tls }
    }
}

/// A Redis Cluster of three primaries on free ports (made with `redis-cli --cluster create`), named to samserve by
/// its nodes' URLs separated by commas.
pub struct RedisCluster {
    nodes: Vec<Redis>,
}

impl RedisCluster {
    pub fn start() -> Self {
        let clustered = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"];
        let nodes: Vec<Redis> = (0..3)
            .map(|_| Redis::launch(free_port(), super::temp_dir("redis-cluster"), false, false, &clustered))
            .collect();
        let addresses: Vec<String> = nodes.iter().map(|node| format!("127.0.0.1:{}", node.port)).collect();
        let created = Command::new(program("redis-cli", "/usr/bin/redis-cli"))
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stdout));
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in &nodes {
            let mut connection = redis::Client::open(node.url()).unwrap().get_connection().unwrap();
            while !redis::cmd("CLUSTER")
                .arg("INFO")
                .query::<String>(&mut connection)
                .unwrap()
                .contains("cluster_state:ok")
            {
                assert!(Instant::now() < deadline, "the cluster did not become ready");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Self { nodes }
    }

    pub fn url(&self) -> String {
        self.nodes.iter().map(Redis::url).collect::<Vec<_>>().join(",")
    }
}

/// A Redis that was stopped, to start again on its port and folder (a durable one reloads its append-only file).
pub struct StoppedRedis {
    port: u16,
    dir: PathBuf,
    durable: bool,
    tls: bool,
}

impl StoppedRedis {
    pub fn restart(self) -> Redis {
        Redis::launch(self.port, self.dir, self.durable, self.tls, &[])
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx balancing round-robin over `backends`, as a proxy in front of replicas would.
pub struct Nginx {
    child: Child,
    pub client: Client,
}

impl Nginx {
    pub fn start(backends: &[&Server]) -> Self {
        let dir = super::temp_dir("nginx");
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

/// moto's S3-compatible server (PyPI `moto[server]`; `.ci/run` installs it into `target/ci-tools`), holding one
/// bucket: the blob store of `--blob-store s3://...` in the tests.
pub struct S3Server {
    child: Child,
    pub endpoint: String,
}

impl S3Server {
    pub fn start(bucket: &str) -> Self {
        let program = std::env::var("SAMSERVE_TEST_MOTO_SERVER").unwrap_or_else(|_| {
            let installed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ci-tools/bin/moto_server");
            installed.display().to_string()
        });
        assert!(
            Path::new(&program).exists(),
            "moto_server is needed at {program} (pip install 'moto[server]', or set SAMSERVE_TEST_MOTO_SERVER; \
             .ci/run installs it)"
        );
        let port = free_port();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let server = Self { child, endpoint: format!("http://127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
        let created = Client::new(&server.endpoint).put(&format!("/{bucket}"), b"");
        assert_eq!(created.status, 200, "creating the bucket: {}", String::from_utf8_lossy(&created.body));
        server
    }

    /// What `samserve serve --blob-store s3://...` needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
            ("AWS_ACCESS_KEY_ID", "testing".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
            ("AWS_DEFAULT_REGION", "us-east-1".to_string()),
        ]
    }

    /// The keys in the bucket (S3 ListObjectsV2).
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let listing = Client::new(&self.endpoint).get(&format!("/{bucket}?list-type=2"));
        let text = String::from_utf8_lossy(&listing.body).into_owned();
        text.split("<Key>").skip(1).filter_map(|rest| rest.split("</Key>").next()).map(str::to_string).collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A folder with a certificate for 127.0.0.1 (`server.pem`, `server.key`) signed by a CA of its own (`ca.pem`),
/// made with `openssl`.
pub fn test_certificates(label: &str) -> PathBuf {
    let dir = super::temp_dir(label);
    let openssl = |args: &[&str]| {
        let status = Command::new(program("openssl", "/usr/bin/openssl"))
            .args(args)
            .current_dir(&dir)
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success(), "openssl {args:?}");
    };
    let subject_alt_name = "subjectAltName=IP:127.0.0.1";
    std::fs::write(dir.join("server.ext"), subject_alt_name).unwrap();
    let key = ["-newkey", "rsa:2048", "-nodes", "-days", "1"];
    let ca = ["-x509", "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=samserve-test-ca"];
    openssl(&[&["req"][..], &key, &ca, &["-addext", "basicConstraints=critical,CA:TRUE"]].concat());
    openssl(&[&["req"][..], &key, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]].concat());
    let signed = ["-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem"];
    openssl(&[&["x509", "-req", "-days", "1", "-extfile", "server.ext"][..], &signed].concat());
    dir
}
