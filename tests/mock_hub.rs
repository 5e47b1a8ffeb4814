//! The local Hugging Face Hub stand-in (`common::mock_hub`) answers the way huggingface.co does, checked over
//! plain HTTP: the download tests can only be as good as the hub they talk to.

mod common;

use common::mock_hub::MockHub;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A client that shows every status and redirect as is, as `hf-hub`'s metadata request does.
fn raw_agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).max_redirects(0).build().into()
}

struct Reply {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("no {name} header"))
    }
}

fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = raw_agent().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let (parts, mut body) = response.into_parts();
    let body = body.read_to_vec().unwrap_or_else(|e| panic!("GET {url}: reading the body: {e}"));
    Reply { status: parts.status.as_u16(), headers: parts.headers, body }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn model_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn lfs_files_redirect_to_the_cdn_with_the_linked_etag_and_size() {
    let hub = MockHub::start();
    let model = model_bytes(1000);
    let commit = hub.add_repo("acme/sam", &[("onnx/encoder.onnx", model.clone())]);
    assert_eq!(commit.len(), 40);
    assert!(commit.chars().all(|c| c.is_ascii_hexdigit()));

    // hf-hub's metadata probe: no redirect following, Range bytes=0-0.
    let url = format!("{}/acme/sam/resolve/main/onnx/encoder.onnx", hub.endpoint());
    let reply = get(&url, &[("Range", "bytes=0-0")]);
    assert_eq!(reply.status, 302);
    let sha = sha256_hex(&model);
    assert_eq!(reply.header("location"), format!("{}/cdn/{sha}", hub.endpoint()));
    assert_eq!(reply.header("x-linked-etag"), format!("\"{sha}\""));
    assert_eq!(reply.header("x-linked-size"), "1000");
    assert_eq!(reply.header("x-repo-commit"), commit);
    assert!(reply.header("etag").starts_with("W/\""));
    assert_eq!(hub.etag("acme/sam", "onnx/encoder.onnx"), sha);

    // The size comes from the CDN's Content-Range.
    let cdn = get(reply.header("location"), &[("Range", "bytes=0-0")]);
    assert_eq!((cdn.status, cdn.header("content-range"), cdn.body.as_slice()), (206, "bytes 0-0/1000", &model[..1]));

    // The commit hash resolves like the branch; a renamed repo redirects relatively to its new name.
    let by_commit = get(&format!("{}/acme/sam/resolve/{commit}/onnx/encoder.onnx", hub.endpoint()), &[]);
    assert_eq!((by_commit.status, by_commit.header("x-repo-commit")), (302, commit.as_str()));
    hub.alias("old/sam", "acme/sam");
    let renamed = get(&format!("{}/old/sam/resolve/main/onnx/encoder.onnx", hub.endpoint()), &[]);
    assert_eq!((renamed.status, renamed.header("location")), (307, "/acme/sam/resolve/main/onnx/encoder.onnx"));

    // A redirect-following client (hf-hub's download) gets the bytes from a resume point.
    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    let mut response = agent.get(&url).header("Range", "bytes=600-").call().expect("download from 600");
    assert_eq!(response.status().as_u16(), 206);
    assert_eq!(response.body_mut().read_to_vec().expect("body"), &model[600..]);
    let log = hub.request_log();
    let last = log.last().expect("logged requests");
    assert_eq!((last.path.as_str(), last.range.as_deref()), (format!("/cdn/{sha}").as_str(), Some("bytes=600-")));
}

#[test]
fn the_cdn_honours_ranges() {
    let hub = MockHub::start();
    let model = model_bytes(1000);
    hub.add_repo("acme/sam", &[("model.onnx_data", model.clone())]);
    let cdn = format!("{}/cdn/{}", hub.endpoint(), sha256_hex(&model));

    let whole = get(&cdn, &[]);
    assert_eq!((whole.status, whole.header("accept-ranges"), whole.body.as_slice()), (200, "bytes", model.as_slice()));
    let tail = get(&cdn, &[("Range", "bytes=100-")]);
    assert_eq!((tail.status, tail.header("content-range")), (206, "bytes 100-999/1000"));
    assert_eq!((tail.header("content-length"), tail.body.as_slice()), ("900", &model[100..]));
    let middle = get(&cdn, &[("Range", "bytes=10-19")]);
    assert_eq!(
        (middle.status, middle.header("content-range"), middle.body.as_slice()),
        (206, "bytes 10-19/1000", &model[10..20])
    );
    let past_the_end = get(&cdn, &[("Range", "bytes=1000-")]);
    assert_eq!((past_the_end.status, past_the_end.header("content-range")), (416, "bytes */1000"));

    // Faults hit the next download, not the metadata probe, and only once.
    hub.corrupt_once("acme/sam", "model.onnx_data");
    assert_eq!(get(&cdn, &[("Range", "bytes=0-0")]).body, &model[..1]);
    let corrupt = get(&cdn, &[]);
    assert_eq!(corrupt.body.iter().zip(&model).filter(|(a, b)| a != b).count(), 1);
    assert_eq!(get(&cdn, &[]).body, model);
    hub.drop_halfway_once("acme/sam", "model.onnx_data");
    let cut = raw_agent().get(&cdn).call().expect("headers").into_body().read_to_vec();
    assert!(cut.is_err(), "a body cut halfway reads as an error, not as a short file");
    assert_eq!(get(&cdn, &[]).body, model);
}

#[test]
fn small_files_are_served_directly_with_their_git_blob_sha1_as_etag() {
    let hub = MockHub::start();
    let commit =
        hub.add_repo("acme/sam", &[("config.json", b"hello world\n".to_vec()), ("onnx/decoder.onnx", model_bytes(10))]);

    let url = format!("{}/acme/sam/resolve/main/config.json", hub.endpoint());
    let probe = get(&url, &[("Range", "bytes=0-0")]);
    assert_eq!((probe.status, probe.header("content-range"), probe.body.as_slice()), (206, "bytes 0-0/12", &b"h"[..]));
    // `printf 'hello world\n' | git hash-object --stdin`
    assert_eq!(probe.header("etag"), "\"3b18e512dba79e4c8300dd08aeb37f8e728b8dad\"");
    assert_eq!(probe.header("x-repo-commit"), commit);
    assert!(probe.headers.get("x-linked-etag").is_none());
    let whole = get(&url, &[]);
    assert_eq!((whole.status, whole.body.as_slice()), (200, &b"hello world\n"[..]));

    // hf-hub's info(), and a branch whose name needs percent-encoding.
    let info: Value =
        serde_json::from_slice(&get(&format!("{}/api/models/acme/sam/revision/main", hub.endpoint()), &[]).body)
            .expect("info JSON");
    assert_eq!(info["sha"], commit.as_str());
    assert_eq!(info["siblings"], serde_json::json!([{"rfilename": "config.json"}, {"rfilename": "onnx/decoder.onnx"}]));
    hub.create_branch("acme/sam", "refs/pr/1");
    let pr = get(&format!("{}/acme/sam/resolve/refs%2Fpr%2F1/config.json", hub.endpoint()), &[]);
    assert_eq!((pr.status, pr.header("x-repo-commit")), (200, commit.as_str()));

    // A second commit moves main and keeps the first reachable by its hash.
    let second = hub.add_repo("acme/sam", &[("config.json", b"{}\n".to_vec())]);
    assert_ne!(second, commit);
    assert_eq!(get(&url, &[]).header("x-repo-commit"), second);
    let old = get(&format!("{}/acme/sam/resolve/{commit}/config.json", hub.endpoint()), &[]);
    assert_eq!(old.body, b"hello world\n");
}

#[test]
fn errors_carry_the_hub_error_codes() {
    let hub = MockHub::start();
    hub.add_repo("acme/sam", &[("model.onnx", model_bytes(10))]);
    hub.add_repo("acme/gated", &[("model.onnx", model_bytes(10))]);
    hub.require_token("acme/gated", "hf_secret");
    let endpoint = hub.endpoint();
    let code = |reply: &Reply| (reply.status, reply.header("x-error-code").to_string());

    let missing_repo = get(&format!("{endpoint}/nobody/nothing/resolve/main/model.onnx"), &[]);
    assert_eq!(code(&missing_repo), (401, "RepoNotFound".to_string()));
    let body: Value = serde_json::from_slice(&missing_repo.body).expect("a JSON error");
    assert_eq!(body["error"], "Repository not found");
    let missing_info = get(&format!("{endpoint}/api/models/nobody/nothing/revision/main"), &[]);
    assert_eq!(code(&missing_info), (401, "RepoNotFound".to_string()));
    let missing_file = get(&format!("{endpoint}/acme/sam/resolve/main/nope.onnx"), &[]);
    assert_eq!(code(&missing_file), (404, "EntryNotFound".to_string()));
    let missing_revision = get(&format!("{endpoint}/acme/sam/resolve/v9/model.onnx"), &[]);
    assert_eq!(code(&missing_revision), (404, "RevisionNotFound".to_string()));

    let gated = format!("{endpoint}/acme/gated/resolve/main/model.onnx");
    assert_eq!(code(&get(&gated, &[])), (401, "GatedRepo".to_string()));
    assert_eq!(code(&get(&gated, &[("Authorization", "Bearer hf_other")])), (403, "GatedRepo".to_string()));
    assert_eq!(get(&gated, &[("Authorization", "Bearer hf_secret")]).status, 302);

    // Once stopped, the hub is gone: connections are refused.
    hub.stop();
    assert!(raw_agent().get(&format!("{endpoint}/api/models/acme/sam")).call().is_err());
}

/// The client the mock stands in for: hf-hub's sync API downloads through it, resumes a cut download with a
/// Range from its `.part` file, follows a rename, and reads the repo's info.
#[test]
fn hf_hub_downloads_and_resumes_through_the_mock() {
    use hf_hub::Cache;
    use hf_hub::api::sync::ApiBuilder;

    let hub = MockHub::start();
    let model = model_bytes(1000);
    let sha = sha256_hex(&model);
    let commit = hub.add_repo("acme/sam", &[("onnx/encoder.onnx", model.clone()), ("config.json", b"{}\n".to_vec())]);
    let cache = common::temp_dir("mock-hub-cache");
    let api = ApiBuilder::from_cache(Cache::new(cache.clone()))
        .with_endpoint(hub.endpoint())
        .with_token(None)
        .with_progress(false)
        .build()
        .expect("an hf-hub client");
    let repo = api.model("acme/sam".to_string());

    let info = repo.info().expect("the repo's info");
    assert_eq!(info.sha, commit);
    assert_eq!(info.siblings.len(), 2);

    hub.drop_halfway_once("acme/sam", "onnx/encoder.onnx");
    assert!(repo.download("onnx/encoder.onnx").is_err(), "a cut download fails");
    let part = cache.join("models--acme--sam").join("blobs").join(format!("{sha}.part"));
    assert_eq!(std::fs::metadata(&part).expect("the .part file").len(), 500);
    let path = repo.download("onnx/encoder.onnx").expect("the resumed download");
    assert_eq!(std::fs::read(&path).expect("the downloaded file"), model);
    assert!(path.ends_with(format!("models--acme--sam/snapshots/{commit}/onnx/encoder.onnx")), "{}", path.display());
    let resumed =
        hub.request_log().iter().any(|r| r.path == format!("/cdn/{sha}") && r.range.as_deref() == Some("bytes=500-"));
    assert!(resumed, "{:?}", hub.request_log());

    // A small file, through a renamed repo: its blob is named by its git blob sha1.
    hub.alias("old/sam", "acme/sam");
    let config = api.model("old/sam".to_string()).download("config.json").expect("a file of a renamed repo");
    assert_eq!(std::fs::read(&config).expect("the downloaded file"), b"{}\n");
    assert!(cache.join("models--old--sam").join("blobs").join(hub.etag("acme/sam", "config.json")).exists());

    let missing = api.model("nobody/nothing".to_string()).download("model.onnx").expect_err("a missing repo");
    assert!(missing.to_string().contains("401"), "{missing}");
    let _ = std::fs::remove_dir_all(&cache);
}
