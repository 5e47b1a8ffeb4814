//! Files from the Hugging Face Hub through the `hf-hub` crate, in the standard cache layout shared with Python
//! (`<cache>/models--OWNER--REPO/{blobs,snapshots/<commit>,refs}`), configured as huggingface_hub is: `HF_ENDPOINT`,
//! `HF_HUB_CACHE` / `HF_HOME`, `HF_TOKEN` (or the token file), `HF_HUB_OFFLINE`.
//!
//! `hf-hub` resumes an interrupted download from its `.part` file and retries a dropped connection from where it
//! stopped; it does not check what it received, so every file is checked here against the hash the hub gave for it
//! (the SHA-256 of an LFS file, the git blob hash of a small one) and removed when they differ.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use hf_hub::{Repo, RepoType};
use sha2::Digest;

/// Tries per file after the first when the connection drops; each resumes where the last one stopped.
const RETRIES: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{0}")]
    Fetch(String),
    #[error("{what} is not in the Hugging Face cache ({cache}) and HF_HUB_OFFLINE is set")]
    Offline { what: String, cache: String },
    #[error(
        "{file}: the download does not match the hash the hub gave for it ({algorithm} {expected}, got {actual}); \
         nothing was kept, run the command again to download it again"
    )]
    Corrupt { file: String, algorithm: &'static str, expected: String, actual: String },
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
}

/// Where files come from and where they go.
#[derive(Debug, Clone)]
pub struct Hub {
    pub endpoint: String,
    /// The hub cache (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
    pub cache: PathBuf,
    token: Option<String>,
    pub offline: bool,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.trim().is_empty())
}

/// huggingface_hub's reading of a boolean variable.
fn env_flag(name: &str) -> bool {
    env(name).is_some_and(|value| matches!(value.trim().to_ascii_lowercase().as_str(), "1" | "on" | "yes" | "true"))
}

impl Hub {
    /// Configured from the environment, as the Python client is.
    pub fn from_env() -> Self {
        let home = env("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            let cache = env("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| env("HOME").map(PathBuf::from).unwrap_or_default().join(".cache"));
            cache.join("huggingface")
        });
        let cache = env("HF_HUB_CACHE").map(PathBuf::from).unwrap_or_else(|| home.join("hub"));
        let token_file = env("HF_TOKEN_PATH").map(PathBuf::from).unwrap_or_else(|| home.join("token"));
        let token = env("HF_TOKEN").or_else(|| {
            std::fs::read_to_string(token_file).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
        });
        Self {
            endpoint: env("HF_ENDPOINT")
                .unwrap_or_else(|| "https://huggingface.co".to_string())
                .trim_end_matches('/')
                .to_string(),
            cache,
            token,
            offline: env_flag("HF_HUB_OFFLINE"),
        }
    }

    fn api(&self) -> Result<Api, HubError> {
        ApiBuilder::new()
            .with_cache_dir(self.cache.clone())
            .with_endpoint(self.endpoint.clone())
            .with_token(self.token.clone())
            .with_progress(false)
            .with_retries(RETRIES)
            .with_user_agent("samserve", env!("CARGO_PKG_VERSION"))
            .build()
            .map_err(|error| HubError::Fetch(format!("cannot set up the hub client: {error}")))
    }

    /// `<cache>/models--OWNER--REPO`.
    pub fn repo_folder(&self, repo: &str) -> PathBuf {
        self.cache.join(Repo::model(repo.to_string()).folder_name())
    }

    /// The cached snapshot of `revision` (a commit, or a branch whose ref was recorded), if any.
    pub fn cached_snapshot(&self, repo: &str, revision: &str) -> Option<PathBuf> {
        let folder = self.repo_folder(repo);
        let commit = if is_commit(revision) {
            revision.to_string()
        } else {
            std::fs::read_to_string(folder.join("refs").join(revision)).ok()?.trim().to_string()
        };
        let snapshot = folder.join("snapshots").join(commit);
        snapshot.is_dir().then_some(snapshot)
    }

    /// The cached copy of `path`, if the snapshot of `revision` has it.
    pub fn cached(&self, repo: &str, revision: &str, path: &str) -> Option<PathBuf> {
        let file = self.cached_snapshot(repo, revision)?.join(path);
        file.is_file().then_some(file)
    }

    /// The files of the repo at `revision`: from the hub's model info, or offline from the cached snapshot.
    pub fn listing(&self, repo: &str, revision: &str) -> Result<Vec<String>, HubError> {
        if self.offline {
            let snapshot = self.cached_snapshot(repo, revision).ok_or_else(|| self.offline_error(repo, revision))?;
            return files_under(&snapshot).map_err(|error| HubError::Io { path: snapshot, error });
        }
        let info =
            self.api()?.repo(model_repo(repo, revision)).info().map_err(|e| self.explain(repo, revision, None, e))?;
        Ok(info.siblings.into_iter().map(|sibling| sibling.rfilename).collect())
    }

    /// `path` from the cache, or downloaded (and checked) when the cache lacks it.
    pub fn fetch(&self, repo: &str, revision: &str, path: &str) -> Result<PathBuf, HubError> {
        match self.cached(repo, revision, path) {
            Some(file) => Ok(file),
            None if self.offline => Err(self.offline_error(repo, &format!("{revision}/{path}"))),
            None => self.download(repo, revision, path),
        }
    }

    /// Asks the hub which version of `path` `revision` names and downloads it unless the cache has that one:
    /// what `samserve pull` does to bring a branch up to date.
    pub fn refresh(&self, repo: &str, revision: &str, path: &str) -> Result<PathBuf, HubError> {
        if self.offline {
            return self.fetch(repo, revision, path);
        }
        let api = self.api()?;
        let url = api.repo(model_repo(repo, revision)).url(path);
        let metadata = api.metadata(&url).map_err(|e| self.explain(repo, revision, Some(path), e))?;
        let current = self.repo_folder(repo).join("snapshots").join(metadata.commit_hash()).join(path);
        if current.is_file() {
            // The branch may have moved to a commit whose files the cache already holds.
            if !is_commit(revision) {
                write_ref(&self.repo_folder(repo), revision, metadata.commit_hash())?;
            }
            return Ok(current);
        }
        self.download(repo, revision, path)
    }

    fn download(&self, repo: &str, revision: &str, path: &str) -> Result<PathBuf, HubError> {
        let started = Instant::now();
        let api_repo = self.api()?.repo(model_repo(repo, revision));
        let downloaded = if std::io::stderr().is_terminal() {
            api_repo.download_with_progress(path, indicatif::ProgressBar::new(0))
        } else {
            api_repo.download_with_progress(path, LogProgress::default())
        }
        .map_err(|e| self.explain(repo, revision, Some(path), e))?;
        verify(&downloaded, &format!("{repo}/{path}"))?;
        tracing::info!(
            repo,
            revision,
            file = path,
            seconds = started.elapsed().as_secs_f64(),
            "downloaded and verified"
        );
        Ok(downloaded)
    }

    fn offline_error(&self, repo: &str, what: &str) -> HubError {
        HubError::Offline { what: format!("{repo}@{what}"), cache: self.cache.display().to_string() }
    }

    /// One clear line for what the hub or the network answered.
    fn explain(&self, repo: &str, revision: &str, path: Option<&str>, error: ApiError) -> HubError {
        let what = match path {
            Some(path) => format!("{repo}@{revision}: {path}"),
            None => format!("{repo}@{revision}"),
        };
        let status = match &error {
            ApiError::RequestError(inner) => match inner.as_ref() {
                ureq::Error::StatusCode(code) => Some(*code),
                _ => None,
            },
            ApiError::TooManyRetries(_) => None,
            _ => None,
        };
        HubError::Fetch(match status {
            Some(401) => format!(
                "{what}: the hub answered 401: no such repository, or a private or gated one that needs a token \
                 (set HF_TOKEN)"
            ),
            Some(403) => format!(
                "{what}: the hub answered 403: this token may not read it (a gated model's terms may need accepting on its page)"
            ),
            Some(404) if path.is_some() => format!("{what}: not found on the hub (404): no such file or revision"),
            Some(404) => format!("{what}: not found on the hub (404): no such repository or revision"),
            Some(code) => format!("{what}: the hub answered HTTP {code}"),
            None => format!(
                "{what}: cannot download from {}: {error} (HF_ENDPOINT picks a mirror; HF_HUB_OFFLINE=1 uses the cache only)",
                self.endpoint
            ),
        })
    }
}

fn model_repo(repo: &str, revision: &str) -> Repo {
    Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string())
}

/// A full commit hash (rather than a branch or tag).
pub fn is_commit(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

fn write_ref(repo_folder: &Path, revision: &str, commit: &str) -> Result<(), HubError> {
    let path = repo_folder.join("refs").join(revision);
    let io = |error| HubError::Io { path: path.clone(), error };
    std::fs::create_dir_all(path.parent().unwrap_or(repo_folder)).map_err(io)?;
    std::fs::write(&path, commit).map_err(io)
}

/// Every file under `folder` (recursively), as sorted paths relative to it with `/` separators.
pub(super) fn files_under(folder: &Path) -> std::io::Result<Vec<String>> {
    fn walk(root: &Path, folder: &Path, files: &mut Vec<String>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(folder)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(root, &path, files)?;
            } else if let Ok(relative) = path.strip_prefix(root) {
                files.push(relative.to_string_lossy().replace('\\', "/"));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(folder, folder, &mut files)?;
    files.sort();
    Ok(files)
}

/// Checks a downloaded file against its blob's name, the hub's ETag: the SHA-256 of an LFS file (64 hex digits) or
/// the git blob SHA-1 of a small one (40). On a mismatch the blob and the snapshot's link to it are removed.
fn verify(pointer: &Path, shown: &str) -> Result<(), HubError> {
    let io = |error| HubError::Io { path: pointer.to_path_buf(), error };
    let blob = pointer.canonicalize().map_err(io)?;
    let expected = blob.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    let is_hex = expected.bytes().all(|b| b.is_ascii_hexdigit());
    let (algorithm, actual) = match expected.len() {
        64 if is_hex => ("SHA-256", file_digest::<sha2::Sha256>(&blob, None).map_err(io)?),
        40 if is_hex => {
            let size = blob.metadata().map_err(io)?.len();
            ("git SHA-1", file_digest::<sha1::Sha1>(&blob, Some(format!("blob {size}\0"))).map_err(io)?)
        }
        _ => {
            tracing::warn!(file = shown, etag = expected, "the hub gave no hash for this file: not verified");
            return Ok(());
        }
    };
    if actual == expected {
        return Ok(());
    }
    for path in [pointer, blob.as_path()] {
        if let Err(error) = std::fs::remove_file(path) {
            tracing::warn!(path = %path.display(), %error, "cannot remove a corrupt download");
        }
    }
    Err(HubError::Corrupt { file: shown.to_string(), algorithm, expected, actual })
}

fn file_digest<D: Digest>(path: &Path, prefix: Option<String>) -> std::io::Result<String> {
    let mut hasher = D::new();
    if let Some(prefix) = prefix {
        hasher.update(prefix.as_bytes());
    }
    let mut file = std::fs::File::open(path)?;
    let mut buffer = vec![0; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hasher.finalize().iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Download progress as log lines (not a terminal: a service's log, CI): one every few seconds and at the end.
#[derive(Default)]
struct LogProgress {
    file: String,
    size: usize,
    done: usize,
    started: Option<Instant>,
    logged: Option<Instant>,
}

impl hf_hub::api::Progress for LogProgress {
    fn init(&mut self, size: usize, filename: &str) {
        self.file = filename.to_string();
        self.size = size;
        self.done = 0;
        let now = Instant::now();
        self.started.get_or_insert(now);
        if self.logged.is_none() {
            tracing::info!(file = filename, mb = size as f64 / 1e6, "downloading");
            self.logged = Some(now);
        }
    }

    fn update(&mut self, size: usize) {
        self.done += size;
        let now = Instant::now();
        if self.logged.is_some_and(|logged| now - logged >= Duration::from_secs(5)) {
            self.logged = Some(now);
            let seconds = self.started.map_or(0.0, |s| (now - s).as_secs_f64()).max(1e-3);
            let rate = self.done as f64 / seconds;
            let eta = self.size.saturating_sub(self.done) as f64 / rate.max(1.0);
            tracing::info!(
                file = self.file,
                done_mb = self.done as f64 / 1e6,
                total_mb = self.size as f64 / 1e6,
                mb_per_s = rate / 1e6,
                eta_s = eta.round(),
                "downloading"
            );
        }
    }

    fn finish(&mut self) {}
}
