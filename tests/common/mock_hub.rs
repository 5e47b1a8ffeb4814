//! A local stand-in for the Hugging Face Hub's HTTP protocol, so that download tests run without the internet.
//!
//! It answers what the `hf-hub` crate (sync API) asks, the way huggingface.co answers it:
//! - `GET|HEAD /{repo}/resolve/{revision}/{file}`: LFS files get `302 Found` to an absolute CDN address
//!   (`/cdn/{sha256}` on this same server) with `X-Linked-Etag`, `X-Linked-Size`, `X-Repo-Commit` and a weak
//!   `ETag`; small files are served directly (`200`, or `206` for a Range) with `ETag: "<git blob sha1>"`.
//! - `GET /cdn/{sha256}`: the bytes, honouring `Range` (`206` + `Content-Range`, `416` past the end).
//! - `GET /api/{models|datasets|spaces}/{repo}[/revision/{revision}]`: the repo's info (`sha`, `siblings`).
//! - Errors carry the hub's `X-Error-Code` header: `RepoNotFound` (401 without a token, 404 with one: the hub
//!   does not tell a private repo from a missing one), `RevisionNotFound`, `EntryNotFound` (404), `GatedRepo`
//!   (401 without a token, 403 with a token that was not granted access).
//! - A renamed repo answers `307` with a relative `Location` under its new name.
//!
//! Repos are keyed as they appear in URLs: `"owner/name"` (or `"name"`) for models, `"datasets/owner/name"` for
//! datasets. Every response is `Connection: close`, one thread per connection.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Extensions the hub's default `.gitattributes` stores in LFS, plus ONNX's external data files.
const LFS_EXTENSIONS: &[&str] = &[
    "7z",
    "arrow",
    "bin",
    "bz2",
    "ckpt",
    "data",
    "ftz",
    "gz",
    "h5",
    "joblib",
    "lfs",
    "mlmodel",
    "model",
    "msgpack",
    "npy",
    "npz",
    "onnx",
    "onnx_data",
    "ot",
    "parquet",
    "pb",
    "pickle",
    "pkl",
    "pt",
    "pth",
    "rar",
    "safetensors",
    "tar",
    "tflite",
    "tgz",
    "wasm",
    "xz",
    "zip",
    "zst",
];

/// The hub refuses plain git files above 10 MiB, so bigger files are LFS whatever their name.
const LFS_SIZE_THRESHOLD: usize = 10 * 1024 * 1024;

/// Requests whose head is larger than this are refused: a test client never sends one.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// One request as received, for tests to assert on (what was fetched, with which Range and token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: String,
    /// The request target as sent: percent-encoding and query string included.
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
}

/// A local hub on `127.0.0.1:<ephemeral port>`; it stops accepting connections when dropped.
pub struct MockHub {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stopping: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl MockHub {
    /// Listens on an ephemeral port of 127.0.0.1 and serves each connection on its own thread.
    pub fn start() -> MockHub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("mock hub: binding 127.0.0.1:0");
        let addr = listener.local_addr().expect("mock hub: reading the bound address");
        let state = Arc::new(Mutex::new(State::default()));
        let stopping = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (state, stopping) = (state.clone(), stopping.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let state = state.clone();
                    // A broken connection only concerns the client that made it: nothing to report here.
                    std::thread::spawn(move || {
                        let _ = serve_connection(stream, &state, addr.port());
                    });
                }
                // Returning drops the listener: from now on connections are refused, as with a hub that is gone.
            })
        };
        MockHub { addr, state, stopping, acceptor: Some(acceptor) }
    }

    /// `http://127.0.0.1:PORT`, the value for `HF_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Commits `files` to `repo_id`'s `main` branch (creating the repo if needed) on top of the files it already
    /// has, as an upload does, and returns the new commit hash. Paths may have folders (`"onnx/model.onnx"`).
    pub fn add_repo(&self, repo_id: &str, files: &[(&str, Vec<u8>)]) -> String {
        self.commit(repo_id, files.iter().map(|(path, bytes)| (path.to_string(), bytes.clone())).collect(), None)
    }

    /// [`Self::add_repo`] with the commit hash given: a repo as it is at a revision a catalogue pins.
    pub fn add_repo_at(&self, repo_id: &str, commit: &str, files: &[(&str, Vec<u8>)]) {
        let files = files.iter().map(|(path, bytes)| (path.to_string(), bytes.clone())).collect();
        self.commit(repo_id, files, Some(commit.to_string()));
    }

    /// Commits every file under `folder` (recursively) to `repo_id`, at `prefix/<relative path>` (at the repo's
    /// root when `prefix` is empty), and returns the new commit hash.
    pub fn add_folder(&self, repo_id: &str, folder: &Path, prefix: &str) -> String {
        let mut files = Vec::new();
        collect_files(folder, folder, &mut files);
        assert!(!files.is_empty(), "mock hub: no files under {}", folder.display());
        let prefix = prefix.trim_matches('/');
        let files = files
            .into_iter()
            .map(|(path, bytes)| (if prefix.is_empty() { path } else { format!("{prefix}/{path}") }, bytes));
        self.commit(repo_id, files.collect(), None)
    }

    /// Makes `repo_id` gated: its files answer 401 `GatedRepo` without a token, 403 with another token than `token`.
    /// Its info stays public, as on the hub.
    pub fn require_token(&self, repo_id: &str, token: &str) {
        self.lock().repo_mut(repo_id).access = Access::Gated(token.to_string());
    }

    /// Makes `repo_id` private: without `token` everything about it answers `RepoNotFound`, as for a missing repo.
    pub fn make_private(&self, repo_id: &str, token: &str) {
        self.lock().repo_mut(repo_id).access = Access::Private(token.to_string());
    }

    /// Makes `old_repo_id` a former name of `new_repo_id` (a renamed repo): its URLs answer `307` with a relative
    /// `Location` under the new name.
    pub fn alias(&self, old_repo_id: &str, new_repo_id: &str) {
        self.lock().aliases.insert(old_repo_id.to_string(), new_repo_id.to_string());
    }

    /// Creates (or moves) the branch `name` of `repo_id` to its current `main` commit, which it returns.
    /// Names with a slash (`"refs/pr/1"`) exercise the client's percent-encoding of revisions.
    pub fn create_branch(&self, repo_id: &str, name: &str) -> String {
        let mut state = self.lock();
        let repo = state.repo_mut(repo_id);
        let head = repo.refs["main"].clone();
        repo.refs.insert(name.to_string(), head.clone());
        head
    }

    /// The commit hash `main` of `repo_id` points at.
    pub fn main_commit(&self, repo_id: &str) -> String {
        self.lock().repo_mut(repo_id).refs["main"].clone()
    }

    /// The etag a client keys its cache blob with (`blobs/<etag>`): the sha256 for an LFS file, the git blob sha1
    /// otherwise.
    pub fn etag(&self, repo_id: &str, file: &str) -> String {
        self.lock().head_blob(repo_id, file).etag()
    }

    /// The next download of `file` (its current content in `repo_id`) has one byte flipped in its body, so its
    /// sha256 no longer matches. Metadata probes (`Range: bytes=0-0`) and HEAD requests do not use it up.
    pub fn corrupt_once(&self, repo_id: &str, file: &str) {
        self.add_fault(repo_id, file, Fault::Corrupt);
    }

    /// The next download of `file` sends the headers with the full `Content-Length`, then half the body, then
    /// closes the connection, as a dropped network does. Metadata probes and HEAD requests do not use it up.
    pub fn drop_halfway_once(&self, repo_id: &str, file: &str) {
        self.add_fault(repo_id, file, Fault::DropHalfway);
    }

    /// `"METHOD PATH"` of every request so far, in order (the path as sent, query string included).
    pub fn requests(&self) -> Vec<String> {
        self.lock().log.iter().map(|r| format!("{} {}", r.method, r.path)).collect()
    }

    /// Every request so far with its `Range` and `Authorization` headers, e.g. to check that a resume asked for
    /// `bytes=N-`.
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.lock().log.clone()
    }

    pub fn clear_requests(&self) {
        self.lock().log.clear();
    }

    /// Stops accepting connections (also done on drop); requests already being served finish.
    pub fn stop(self) {}

    fn commit(&self, repo_id: &str, files: Vec<(String, Vec<u8>)>, sha: Option<String>) -> String {
        let mut state = self.lock();
        let blobs: Vec<(String, Blob)> = files
            .into_iter()
            .map(|(path, bytes)| {
                let path = path.trim_start_matches('/').to_string();
                assert!(
                    !path.is_empty() && path.split('/').all(|part| !part.is_empty() && part != "." && part != ".."),
                    "mock hub: {path:?} is not a file path inside a repo"
                );
                let blob = Blob::new(&path, bytes);
                (path, blob)
            })
            .collect();
        for (_, blob) in &blobs {
            state.cdn.insert(blob.sha256.clone(), blob.bytes.clone());
        }
        let repo = state.repos.entry(repo_id.to_string()).or_default();
        let parent = repo.refs.get("main").cloned().unwrap_or_default();
        let mut files = repo.commits.get(&parent).cloned().unwrap_or_default();
        files.extend(blobs);
        // Deterministic, yet distinct per repo and per history, like a git commit hash.
        let mut description = format!("repo {repo_id}\nparent {parent}\n");
        for (path, blob) in &files {
            description.push_str(&format!("{} {path}\n", blob.git_sha1));
        }
        let sha = sha.unwrap_or_else(|| hex(&sha1(description.as_bytes())));
        repo.commits.insert(sha.clone(), files);
        repo.refs.insert("main".to_string(), sha.clone());
        sha
    }

    fn add_fault(&self, repo_id: &str, file: &str, fault: Fault) {
        let mut state = self.lock();
        let sha256 = state.head_blob(repo_id, file).sha256;
        state.faults.entry(sha256).or_default().push_back(fault);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

impl Drop for MockHub {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // The acceptor is blocked in accept(): a connection wakes it up to see the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// A panic in one connection's thread must not make every later request (and the test) fail on a poisoned lock.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Default)]
struct State {
    repos: HashMap<String, Repo>,
    aliases: HashMap<String, String>,
    /// Every LFS object by sha256, as the CDN stores them (shared by all repos).
    cdn: HashMap<String, Arc<Vec<u8>>>,
    /// Pending faults by the sha256 of the content they apply to.
    faults: HashMap<String, VecDeque<Fault>>,
    log: Vec<LoggedRequest>,
}

impl State {
    fn repo_mut(&mut self, repo_id: &str) -> &mut Repo {
        self.repos.get_mut(repo_id).unwrap_or_else(|| panic!("mock hub: no repo {repo_id:?} (add_repo first)"))
    }

    fn head_blob(&mut self, repo_id: &str, file: &str) -> Blob {
        let repo = self.repo_mut(repo_id);
        let files = &repo.commits[&repo.refs["main"]];
        files.get(file).cloned().unwrap_or_else(|| panic!("mock hub: no file {file:?} in {repo_id:?}"))
    }

    /// The fault to apply to this body, if any; probes (`bytes=0-0`) and HEAD requests leave it pending.
    fn take_fault(&mut self, request: &Request, sha256: &str) -> Option<Fault> {
        if request.method != "GET" || request.header("range") == Some("bytes=0-0") {
            return None;
        }
        self.faults.get_mut(sha256)?.pop_front()
    }
}

#[derive(Default)]
struct Repo {
    /// Commit hash to its files (path to blob).
    commits: HashMap<String, BTreeMap<String, Blob>>,
    /// Branch name to commit hash; `main` always exists once the repo has a commit.
    refs: HashMap<String, String>,
    access: Access,
}

impl Repo {
    fn files_at(&self, revision: &str) -> Option<(&str, &BTreeMap<String, Blob>)> {
        let sha = self.refs.get(revision).map(String::as_str).unwrap_or(revision);
        self.commits.get_key_value(sha).map(|(sha, files)| (sha.as_str(), files))
    }
}

#[derive(Default)]
enum Access {
    #[default]
    Public,
    Gated(String),
    Private(String),
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Corrupt,
    DropHalfway,
}

#[derive(Clone)]
struct Blob {
    bytes: Arc<Vec<u8>>,
    sha256: String,
    /// The git blob id: of the content for a plain file, of the LFS pointer file for an LFS one.
    git_sha1: String,
    lfs: bool,
}

impl Blob {
    fn new(path: &str, bytes: Vec<u8>) -> Blob {
        let sha256 = hex(&Sha256::digest(&bytes));
        let extension = path.rsplit('/').next().and_then(|name| name.rsplit_once('.')).map(|(_, ext)| ext);
        let lfs = bytes.len() > LFS_SIZE_THRESHOLD
            || extension.is_some_and(|ext| LFS_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()));
        // Git stores an LFS file as its pointer file, so that is what its blob id hashes.
        let git_sha1 =
            if lfs { git_blob_sha1(lfs_pointer(&sha256, bytes.len()).as_bytes()) } else { git_blob_sha1(&bytes) };
        Blob { bytes: Arc::new(bytes), sha256, git_sha1, lfs }
    }

    fn etag(&self) -> String {
        if self.lfs { self.sha256.clone() } else { self.git_sha1.clone() }
    }
}

fn lfs_pointer(sha256: &str, size: usize) -> String {
    format!("version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n")
}

fn collect_files(root: &Path, dir: &Path, files: &mut Vec<(String, Vec<u8>)>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("mock hub: reading {}: {e}", dir.display()));
    let mut paths: Vec<_> = entries.map(|entry| entry.expect("mock hub: reading a folder entry").path()).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            collect_files(root, &path, files);
        } else {
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("mock hub: reading {}: {e}", path.display()));
            let relative = path.strip_prefix(root).expect("a path under the folder walked");
            let parts: Vec<_> = relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
            files.push((parts.join("/"), bytes));
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// HTTP

struct Request {
    method: String,
    target: String,
    /// Lower-cased names.
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn token(&self) -> Option<&str> {
        let value = self.header("authorization")?;
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }
}

struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// Send the full Content-Length but only half the body, then close.
    drop_halfway: bool,
}

impl Response {
    fn new(status: u16) -> Response {
        Response { status, headers: Vec::new(), body: Vec::new(), drop_halfway: false }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    fn body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        self.body = body.into();
        self.header("Content-Type", content_type)
    }

    /// The hub's error shape: the code and message in headers, the message in a JSON body.
    fn error(status: u16, code: Option<&str>, message: &str) -> Response {
        let mut response = Response::new(status).header("X-Error-Message", message);
        if let Some(code) = code {
            response = response.header("X-Error-Code", code);
        }
        response.body("application/json; charset=utf-8", json!({ "error": message }).to_string())
    }
}

fn serve_connection(mut stream: TcpStream, state: &Mutex<State>, port: u16) -> io::Result<()> {
    // A client that stops talking must not keep a thread forever.
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let Some(request) = read_request(&mut stream)? else { return Ok(()) };
    let response = {
        let mut state = lock(state);
        state.log.push(LoggedRequest {
            method: request.method.clone(),
            path: request.target.clone(),
            range: request.header("range").map(str::to_string),
            authorization: request.header("authorization").map(str::to_string),
        });
        route(&mut state, &request, port)
    };
    write_response(&mut stream, &request, &response)
}

/// Reads the request head (up to the blank line) and discards a Content-Length body: closing the socket with
/// unread input would reset the connection and could lose the response on the client's side.
fn read_request(stream: &mut TcpStream) -> io::Result<Option<Request>> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(position) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break position;
        }
        if buffer.len() > MAX_HEAD_BYTES {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "request head too large"));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split_whitespace();
    let (Some(method), Some(target)) = (request_line.next(), request_line.next()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad request line"));
    };
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    // An absolute-form target (as sent to a proxy) names the same path.
    let target = match target.strip_prefix("http://").and_then(|rest| rest.find('/').map(|i| &rest[i..])) {
        Some(path) => path.to_string(),
        None => target.to_string(),
    };
    let request = Request { method: method.to_ascii_uppercase(), target, headers };
    let body_length: usize = request.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut unread = body_length.saturating_sub(buffer.len() - head_end - 4);
    while unread > 0 {
        let n = stream.read(&mut chunk[..unread.min(4096)])?;
        if n == 0 {
            break;
        }
        unread -= n;
    }
    Ok(Some(request))
}

fn write_response(stream: &mut TcpStream, request: &Request, response: &Response) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", response.status, reason(response.status));
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\nServer: mock-hub\r\n\r\n", response.body.len()));
    stream.write_all(head.as_bytes())?;
    if request.method != "HEAD" {
        let sent = if response.drop_halfway { response.body.len() / 2 } else { response.body.len() };
        stream.write_all(&response.body[..sent])?;
    }
    stream.flush()?;
    // Closing our side is how the client learns that a cut body has ended early.
    stream.shutdown(Shutdown::Both)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        _ => "Unknown",
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Routes

fn route(state: &mut State, request: &Request, port: u16) -> Response {
    if request.method != "GET" && request.method != "HEAD" {
        return Response::error(405, None, "Method not allowed");
    }
    let (path, query) = request.target.split_once('?').unwrap_or((&request.target, ""));
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["cdn", sha256] => cdn(state, request, sha256),
        ["api", kind @ ("models" | "datasets" | "spaces"), rest @ ..] if !rest.is_empty() => {
            api_info(state, request, kind, rest, query)
        }
        _ => match segments.iter().position(|s| *s == "resolve") {
            Some(i) if i >= 1 && segments.len() >= i + 3 => resolve(state, request, &segments, i, query, port),
            _ => Response::error(404, None, "Sorry, we can't find the page you are looking for."),
        },
    }
}

/// `/{repo...}/resolve/{revision}/{file...}`, `resolve_at` being the index of the `resolve` segment.
fn resolve(
    state: &mut State,
    request: &Request,
    segments: &[&str],
    resolve_at: usize,
    query: &str,
    port: u16,
) -> Response {
    let repo_id = decode_segments(&segments[..resolve_at]);
    if let Some(new_id) = state.aliases.get(&repo_id) {
        let rest = segments[resolve_at..].join("/");
        let query = if query.is_empty() { String::new() } else { format!("?{query}") };
        let location = format!("/{new_id}/{rest}{query}");
        return Response::new(307)
            .header("Location", location.clone())
            .body("text/plain; charset=utf-8", format!("Temporary Redirect. Redirecting to {location}"));
    }
    let revision = percent_decode(segments[resolve_at + 1]);
    let file = decode_segments(&segments[resolve_at + 2..]);
    let token = request.token();
    let Some(repo) = state.repos.get(&repo_id) else { return repo_not_found(token) };
    if let Some(denied) = denied(repo, &repo_id, token, true) {
        return denied;
    }
    let Some((commit, files)) = repo.files_at(&revision) else {
        return Response::error(404, Some("RevisionNotFound"), &format!("Invalid rev id: {revision}"));
    };
    let Some(blob) = files.get(&file) else {
        return Response::error(404, Some("EntryNotFound"), "Entry not found");
    };
    let (commit, blob) = (commit.to_string(), blob.clone());
    if blob.lfs {
        let location = format!("http://127.0.0.1:{port}/cdn/{}", blob.sha256);
        return Response::new(302)
            .header("Location", location.clone())
            .header("X-Repo-Commit", commit)
            .header("X-Linked-Etag", format!("\"{}\"", blob.sha256))
            .header("X-Linked-Size", blob.bytes.len().to_string())
            .header("ETag", format!("W/\"{}\"", blob.git_sha1))
            .header("Accept-Ranges", "bytes")
            .body("text/plain; charset=utf-8", format!("Found. Redirecting to {location}"));
    }
    let fault = state.take_fault(request, &blob.sha256);
    serve_bytes(&blob.bytes, request, fault, "text/plain; charset=utf-8")
        .header("ETag", format!("\"{}\"", blob.git_sha1))
        .header("X-Repo-Commit", commit)
}

/// The CDN: any stored object by sha256, no authorization (its real URLs are signed).
fn cdn(state: &mut State, request: &Request, sha256: &str) -> Response {
    let Some(bytes) = state.cdn.get(sha256).cloned() else {
        return Response::error(404, None, "NoSuchKey");
    };
    let fault = state.take_fault(request, sha256);
    serve_bytes(&bytes, request, fault, "application/octet-stream").header("ETag", format!("\"{sha256}\""))
}

/// `/api/{kind}/{repo...}[/revision/{revision}]`: what `hf-hub`'s `info()` reads (`sha`, `siblings`), and the
/// usual fields around them. `?blobs=true` adds sizes and LFS details to the siblings, as on the hub.
fn api_info(state: &mut State, request: &Request, kind: &str, rest: &[&str], query: &str) -> Response {
    let repo_len = match rest.iter().position(|s| *s == "revision") {
        Some(i) if i >= 1 => i,
        _ => rest.len(),
    };
    let revision = match rest.get(repo_len + 1..) {
        Some(parts) if !parts.is_empty() => percent_decode(&parts.join("/")),
        _ => "main".to_string(),
    };
    let name = decode_segments(&rest[..repo_len]);
    let repo_id = if kind == "models" { name.clone() } else { format!("{kind}/{name}") };
    if let Some(new_id) = state.aliases.get(&repo_id) {
        let new_name = new_id.strip_prefix(&format!("{kind}/")).unwrap_or(new_id);
        let suffix: String = rest[repo_len..].iter().map(|s| format!("/{s}")).collect();
        let query = if query.is_empty() { String::new() } else { format!("?{query}") };
        let location = format!("/api/{kind}/{new_name}{suffix}{query}");
        return Response::new(307)
            .header("Location", location.clone())
            .body("text/plain; charset=utf-8", format!("Temporary Redirect. Redirecting to {location}"));
    }
    let token = request.token();
    let Some(repo) = state.repos.get(&repo_id) else { return repo_not_found(token) };
    if let Some(denied) = denied(repo, &repo_id, token, false) {
        return denied;
    }
    let Some((commit, files)) = repo.files_at(&revision) else {
        return Response::error(404, Some("RevisionNotFound"), &format!("Invalid rev id: {revision}"));
    };
    let blobs = query.split('&').any(|pair| pair == "blobs=true" || pair == "blobs=1");
    let siblings: Vec<Value> = files
        .iter()
        .map(|(path, blob)| {
            let mut sibling = json!({ "rfilename": path });
            if blobs {
                sibling["blobId"] = json!(blob.git_sha1);
                sibling["size"] = json!(blob.bytes.len());
                if blob.lfs {
                    let pointer_size = lfs_pointer(&blob.sha256, blob.bytes.len()).len();
                    sibling["lfs"] =
                        json!({ "sha256": blob.sha256, "size": blob.bytes.len(), "pointerSize": pointer_size });
                }
            }
            sibling
        })
        .collect();
    let mut info = json!({
        "_id": &hex(&sha1(format!("id {repo_id}").as_bytes()))[..24],
        "id": name,
        "author": name.split_once('/').map(|(owner, _)| owner),
        "sha": commit,
        "lastModified": "2024-01-01T00:00:00.000Z",
        "createdAt": "2024-01-01T00:00:00.000Z",
        "private": matches!(repo.access, Access::Private(_)),
        "gated": if matches!(repo.access, Access::Gated(_)) { json!("manual") } else { json!(false) },
        "disabled": false,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "siblings": siblings,
    });
    if kind == "models" {
        info["modelId"] = json!(name);
    }
    Response::new(200).body("application/json; charset=utf-8", info.to_string())
}

/// The hub does not tell a private repo from a missing one; anonymous clients get 401, signed-in ones 404.
fn repo_not_found(token: Option<&str>) -> Response {
    Response::error(if token.is_some() { 404 } else { 401 }, Some("RepoNotFound"), "Repository not found")
}

/// The refusal for `repo` given the request's token, if any. `files`: a gated repo shows its info to anyone and
/// only guards its files.
fn denied(repo: &Repo, repo_id: &str, token: Option<&str>, files: bool) -> Option<Response> {
    match &repo.access {
        Access::Public => None,
        Access::Private(expected) => (token != Some(expected.as_str())).then(|| repo_not_found(token)),
        Access::Gated(expected) => {
            if !files || token == Some(expected.as_str()) {
                None
            } else if token.is_none() {
                let message = format!(
                    "Access to model {repo_id} is restricted. You must have access to it and be authenticated to access it. Please log in."
                );
                Some(Response::error(401, Some("GatedRepo"), &message))
            } else {
                let message = format!(
                    "Access to model {repo_id} is restricted and you are not in the authorized list. Visit https://huggingface.co/{repo_id} to ask for access."
                );
                Some(Response::error(403, Some("GatedRepo"), &message))
            }
        }
    }
}

/// The bytes with Range support (a single range; anything else is ignored and the whole body is sent, as
/// RFC 9110 allows), then the fault, if any, applied to what is sent.
fn serve_bytes(bytes: &[u8], request: &Request, fault: Option<Fault>, content_type: &str) -> Response {
    let total = bytes.len();
    let (mut response, start, end) = match request.header("range").map(|r| parse_range(r, total)) {
        Some(RangeRequest::Unsatisfiable) => {
            return Response::error(416, None, "Requested Range Not Satisfiable")
                .header("Content-Range", format!("bytes */{total}"));
        }
        Some(RangeRequest::Slice(start, end)) => {
            let response = Response::new(206).header("Content-Range", format!("bytes {start}-{}/{total}", end - 1));
            (response, start, end)
        }
        Some(RangeRequest::Ignored) | None => (Response::new(200), 0, total),
    };
    response = response.header("Accept-Ranges", "bytes").body(content_type, &bytes[start..end]);
    match fault {
        Some(Fault::Corrupt) if !response.body.is_empty() => {
            let middle = response.body.len() / 2;
            response.body[middle] ^= 0xFF;
        }
        Some(Fault::DropHalfway) => response.drop_halfway = true,
        _ => {}
    }
    response
}

enum RangeRequest {
    /// `[start, end)`.
    Slice(usize, usize),
    Unsatisfiable,
    /// Malformed or multi-range: served as a plain 200.
    Ignored,
}

fn parse_range(header: &str, total: usize) -> RangeRequest {
    let Some(spec) = header.trim().strip_prefix("bytes=") else { return RangeRequest::Ignored };
    if spec.contains(',') {
        return RangeRequest::Ignored;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return RangeRequest::Ignored };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // A suffix range: the last N bytes.
        return match last.parse::<usize>() {
            Ok(0) => RangeRequest::Unsatisfiable,
            Ok(_) if total == 0 => RangeRequest::Unsatisfiable,
            Ok(n) => RangeRequest::Slice(total.saturating_sub(n), total),
            Err(_) => RangeRequest::Ignored,
        };
    }
    let Ok(start) = first.parse::<usize>() else { return RangeRequest::Ignored };
    let end = match last {
        "" => total,
        last => match last.parse::<usize>() {
            Ok(last) if last >= start => (last + 1).min(total),
            _ => return RangeRequest::Ignored,
        },
    };
    if start >= total { RangeRequest::Unsatisfiable } else { RangeRequest::Slice(start, end) }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex_pair = bytes.get(i + 1..i + 3).and_then(|pair| std::str::from_utf8(pair).ok());
        match (bytes[i], hex_pair.and_then(|pair| u8::from_str_radix(pair, 16).ok())) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

fn decode_segments(segments: &[&str]) -> String {
    segments.iter().map(|s| percent_decode(s)).collect::<Vec<_>>().join("/")
}

// ---------------------------------------------------------------------------------------------------------------
// Hashes

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Git's object id of a blob: sha1 over `blob {len}\0{content}` (what the hub sends as a plain file's ETag).
fn git_blob_sha1(content: &[u8]) -> String {
    let mut object = format!("blob {}\0", content.len()).into_bytes();
    object.extend_from_slice(content);
    hex(&sha1(&object))
}

fn sha1(data: &[u8]) -> Vec<u8> {
    use sha1::Digest as _;
    sha1::Sha1::digest(data).to_vec()
}
