//! What faces the network (docs/security.md): idle and trickling clients do not keep others waiting, HTTPS with
//! `--tls-cert`, CORS only for the listed origins, and job uploads refused with 507 when the disk is nearly full.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::test_certificates;
use common::jobs::{self, JOBS};
use common::server::{Client, Server};
use serde_json::json;

fn address(client: &Client) -> String {
    client.base.trim_start_matches("http://").to_string()
}

/// Median milliseconds of `count` clicks, each of which must be answered 200.
fn click_ms(client: &Client, image_id: &str, count: usize) -> f64 {
    let mut times: Vec<f64> = (0..count)
        .map(|_| {
            let started = Instant::now();
            let prompt = json!({"prompts": [{"points": [[475, 365]], "labels": [1]}]});
            let reply = client.post_json(&format!("/v1/images/{image_id}/segment"), &prompt);
            assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[count / 2]
}

/// Everything the server sent on `stream` before closing it, once it has closed it (or reset it, as it may when
/// the client was still sending), within `wait`; `None` while the connection stays open.
fn answer_when_closed(stream: &mut TcpStream, wait: Duration) -> Option<String> {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        _ => Some(String::from_utf8_lossy(&answer).into_owned()),
    }
}

#[test]
fn idle_and_trickling_clients_do_not_keep_others_waiting() {
    let server = Server::start(&["--client-timeout-s", "2", "--body-timeout-s", "3"]);
    let address = address(&server.client);
    let image_id = server.upload(&jobs::image("landscape.png"))["image_id"].as_str().unwrap().to_string();
    let alone = click_ms(&server.client, &image_id, 7);

    // 300 connections that send nothing, 25 that trickle their headers and 25 their upload's body.
    let idle: Vec<TcpStream> = (0..300).map(|_| TcpStream::connect(&address).unwrap()).collect();
    let upload_head =
        "POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000000\r\n\r\n";
    let mut head_tricklers: Vec<TcpStream> = (0..25).map(|_| TcpStream::connect(&address).unwrap()).collect();
    let mut body_tricklers: Vec<TcpStream> = (0..25)
        .map(|_| {
            let mut stream = TcpStream::connect(&address).unwrap();
            stream.write_all(upload_head.as_bytes()).unwrap();
            stream
        })
        .collect();
    let trickling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let trickler = {
        let trickling = Arc::clone(&trickling);
        std::thread::spawn(move || {
            let mut sent = 0;
            while trickling.load(std::sync::atomic::Ordering::Relaxed) {
                // A write fails once the server has given up on the connection: that is the point.
                for stream in &mut head_tricklers {
                    let _ = stream.write_all(&upload_head.as_bytes()[sent % upload_head.len()..][..1]);
                }
                for stream in &mut body_tricklers {
                    let _ = stream.write_all(b"\x89");
                }
                sent += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            (head_tricklers, body_tricklers)
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let crowded = click_ms(&server.client, &image_id, 7);
    eprintln!(
        "click with 300 idle and 50 trickling connections: {crowded:.1} ms vs {alone:.1} ms alone ({:.2}x)",
        crowded / alone
    );

    // The server let go of each of them in its time.
    let wait = Duration::from_secs(10);
    for mut stream in idle {
        let answer = answer_when_closed(&mut stream, wait).expect("an idle connection is closed");
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    }
    trickling.store(false, std::sync::atomic::Ordering::Relaxed);
    let (head_tricklers, body_tricklers) = trickler.join().unwrap();
    for mut stream in head_tricklers.into_iter().chain(body_tricklers) {
        assert!(answer_when_closed(&mut stream, wait).is_some(), "a trickling connection is closed");
    }
    // A body that stops coming is answered 408 (tricklers may not read it: the server resets a connection that
    // is still sending when it closes).
    let mut stalled = TcpStream::connect(&address).unwrap();
    stalled.write_all(&[upload_head.as_bytes(), b"\x89PNG"].concat()).unwrap();
    let answer = answer_when_closed(&mut stalled, wait).expect("a stalled upload is closed");
    assert!(answer.starts_with("HTTP/1.1 408") && answer.contains("body_timeout"), "{answer:?}");
    // And the server still answers as before.
    click_ms(&server.client, &image_id, 1);
}

/// GET `path` over HTTPS, trusting only the CA of `certificates`: the status line's code and the body.
fn https_get(port: u16, certificates: &std::path::Path, path: &str) -> std::io::Result<(u16, String)> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls::pki_types::CertificateDer::pem_file_iter(certificates.join("ca.pem")).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut stream = rustls::StreamOwned::new(connection, TcpStream::connect(("127.0.0.1", port))?);
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    Ok((status, answer.split("\r\n\r\n").nth(1).unwrap_or("").to_string()))
}

#[test]
fn tls_cert_and_key_serve_https_and_only_https() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let certificates = test_certificates("https");
    let (cert, key) = (certificates.join("server.pem"), certificates.join("server.key"));
    let server = Server::start(&["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    assert!(server.client.base.starts_with("https://127.0.0.1:"), "{}", server.client.base);
    let port: u16 = server.client.base.rsplit(':').next().unwrap().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while https_get(port, &certificates, "/readyz").map(|(status, _)| status).unwrap_or(0) != 200 {
        assert!(Instant::now() < deadline, "the server did not become ready over HTTPS");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, models) = https_get(port, &certificates, "/v1/models").unwrap();
    assert_eq!(status, 200);
    assert!(models.contains("\"tiny\""), "{models}");
    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain.write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let answer = answer_when_closed(&mut plain, Duration::from_secs(10)).expect("the server closes it");
    assert!(!answer.starts_with("HTTP/"), "{answer:?}");

    // A key that does not belong to the certificate: one clear line, no listening.
    let other = test_certificates("https-other");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_samserve"))
        .args(common::runtime_args())
        .args(["serve", "--port", "0", "--tls-cert", cert.to_str().unwrap()])
        .args(["--tls-key", other.join("server.key").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--tls-cert and --tls-key do not make a usable TLS identity"), "{stderr}");
}

/// The preflight of a page on `origin`: status and `Access-Control-Allow-Origin`.
fn preflight(client: &Client, origin: &str) -> (u16, Option<String>) {
    let request = ureq::options(format!("{}/v1/models", client.base))
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "authorization");
    allowed_origin(request.header("Origin", origin))
}

/// A GET from a page on `origin` with `key`: status and `Access-Control-Allow-Origin`.
fn cross_origin_get(client: &Client, origin: &str, key: &str) -> (u16, Option<String>) {
    let request = ureq::get(format!("{}/v1/models", client.base)).header("Authorization", format!("Bearer {key}"));
    allowed_origin(request.header("Origin", origin))
}

fn allowed_origin(request: ureq::RequestBuilder<ureq::typestate::WithoutBody>) -> (u16, Option<String>) {
    let reply = request.config().http_status_as_error(false).build().call().unwrap();
    let allowed = reply.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap().to_string());
    (reply.status().as_u16(), allowed)
}

#[test]
fn cors_lets_in_the_listed_origins_only() {
    const KEY: &str = "alice-key-0123456789abcdef";
    let app = "https://app.example.com";
    let keys = format!("alice:{KEY}");
    let listed = Server::start_with_env(&["--cors-origin", app], &[("SAMSERVE_API_KEYS", &keys)]);
    // The preflight carries no key and still passes; the request itself needs one.
    assert_eq!(preflight(&listed.client, app), (200, Some(app.to_string())));
    assert_eq!(cross_origin_get(&listed.client, app, KEY), (200, Some(app.to_string())));
    assert_eq!(cross_origin_get(&listed.client, app, "wrong-key-0123456789abcdef"), (401, Some(app.to_string())));
    let (status, allowed) = preflight(&listed.client, "https://evil.example.com");
    assert!(status >= 400 && allowed.is_none(), "{status} {allowed:?}");
    assert_eq!(cross_origin_get(&listed.client, "https://evil.example.com", KEY).1, None);

    let any = Server::start(&["--cors-origin", "*"]);
    assert_eq!(preflight(&any.client, "https://anywhere.example.org"), (200, Some("*".to_string())));

    let default = Server::start(&[]);
    assert_eq!(cross_origin_get(&default.client, app, KEY).1, None);
}

#[test]
fn job_uploads_get_507_while_the_disk_is_nearly_full() {
    let data_dir = common::temp_dir("full-disk");
    let data_dir_arg = data_dir.to_str().unwrap();
    // More free space asked for than any test machine has: the disk is "nearly full" whatever it holds.
    let server = Server::start(&["--data-dir", data_dir_arg, "--min-free-disk-mb", "1000000000"]);
    let image = jobs::image("landscape.png");
    let reply = server.post_form(JOBS, &[("image", Some("a.png"), &image)]);
    assert_eq!((reply.status, reply.error_code().as_str()), (507, "insufficient_storage"));
    assert!(reply.json()["error"]["message"].as_str().unwrap().contains("MiB free"));
    let staged = std::fs::read_dir(data_dir.join("uploads")).map_or(0, |entries| entries.count());
    assert_eq!(staged, 0, "a refused upload leaves nothing behind");
    // Everything else still works.
    assert_eq!(server.post("/v1/images", "image/png", &image).status, 200);
    drop(server);

    // With room again, the same data folder takes the job.
    let server = Server::start(&["--data-dir", data_dir_arg]);
    let job = jobs::submit(&server, &[("a.png", image)], &jobs::everything_spec(4));
    assert_eq!(jobs::wait_until_ended(&server, &job)["status"], "succeeded");
}
