//! Durable batch jobs: uploaded images kept on disk until their job ends, state in SQLite ([`store`]), a pool of
//! worker threads that resume whatever was pending when the server last stopped, cancel, and retention.

pub mod store;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::batch::{BatchTask, CocoResults, ImageOutcome, segment_file};
use crate::image_input::ImageLimits;
use crate::model::SamModel;
pub use store::{JobStatus, JobSummary, StoreError};
use store::{PendingImage, Store};

/// How often workers look for expired jobs at most and at least (a tenth of the retention in between).
const SWEEP_INTERVAL: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));

#[derive(Debug, Clone)]
pub struct JobsConfig {
    pub data_dir: PathBuf,
    /// Images processed at once (worker threads).
    pub workers: usize,
    /// Ended jobs (and their results) are deleted after this long.
    pub retention: Duration,
    pub image_limits: ImageLimits,
}

/// What a DELETE did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Cancelled,
    Deleted,
    NotFound,
}

/// Images received for a job that does not exist yet: a folder of files named by their position.
pub struct StagedUpload {
    folder: PathBuf,
    files: Vec<String>,
    /// Whether dropping this removes the folder (until a job owns it).
    owned: bool,
}

impl StagedUpload {
    pub fn file_names(&self) -> &[String] {
        &self.files
    }

    /// Where the next file goes; call [`StagedUpload::added`] once it is written.
    pub fn next_path(&self) -> PathBuf {
        self.folder.join(self.files.len().to_string())
    }

    pub fn added(&mut self, file_name: String) {
        self.files.push(file_name);
    }
}

impl Drop for StagedUpload {
    fn drop(&mut self) {
        if self.owned {
            let _ = std::fs::remove_dir_all(&self.folder);
        }
    }
}

pub struct Jobs {
    config: JobsConfig,
    store: Mutex<Store>,
    /// Images a worker is processing now (their rows stay `pending` until done, so a crash loses nothing).
    claimed: Mutex<HashSet<(String, usize)>>,
    wake: Condvar,
    wake_lock: Mutex<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Jobs {
    /// Opens (or creates) the data directory and the database; clears half-received uploads and image folders
    /// that no active job owns (left by a crash between receiving and recording a job).
    pub fn open(config: JobsConfig) -> Result<Self, String> {
        let images = config.data_dir.join("jobs");
        let uploads = config.data_dir.join("uploads");
        let _ = std::fs::remove_dir_all(&uploads);
        for folder in [&images, &uploads] {
            std::fs::create_dir_all(folder).map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
        }
        let store = Store::open(&config.data_dir.join("jobs.sqlite")).map_err(|e| e.to_string())?;
        if let Ok(entries) = std::fs::read_dir(&images) {
            for entry in entries.flatten() {
                let id = entry.file_name().to_string_lossy().into_owned();
                if !store.is_active(&id).unwrap_or(true) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(Self {
            config,
            store: Mutex::new(store),
            claimed: Mutex::new(HashSet::new()),
            wake: Condvar::new(),
            wake_lock: Mutex::new(()),
        })
    }

    /// Starts the worker threads; they run for the life of the process.
    pub fn start(self: &Arc<Self>, models: BTreeMap<String, Arc<SamModel>>) {
        let models = Arc::new(models);
        for index in 0..self.config.workers.max(1) {
            let (jobs, models) = (Arc::clone(self), Arc::clone(&models));
            std::thread::Builder::new()
                .name(format!("job-worker-{index}"))
                .spawn(move || jobs.work(&models))
                .expect("spawning a worker thread");
        }
    }

    /// A folder to receive the images of a new job.
    pub fn stage(&self) -> Result<StagedUpload, String> {
        let folder = self.config.data_dir.join("uploads").join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(&folder).map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
        Ok(StagedUpload { folder, files: Vec::new(), owned: true })
    }

    /// Records a job for the staged images; once this returns, the job survives a crash.
    pub fn submit(&self, model: &str, task: &BatchTask, mut upload: StagedUpload) -> Result<String, String> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let folder = self.images_folder(&id);
        std::fs::rename(&upload.folder, &folder).map_err(|e| format!("cannot keep the images: {e}"))?;
        upload.folder = folder.clone();
        sync_folder(&folder);
        lock(&self.store).create(&id, model, task, &upload.files).map_err(|e| e.to_string())?;
        upload.owned = false;
        self.wake.notify_all();
        Ok(id)
    }

    pub fn summary(&self, id: &str) -> Result<Option<JobSummary>, StoreError> {
        lock(&self.store).summary(id)
    }

    /// The COCO results of the images done so far; `None` for an unknown job.
    pub fn results(&self, id: &str) -> Result<Option<CocoResults>, StoreError> {
        let store = lock(&self.store);
        if store.summary(id)?.is_none() {
            return Ok(None);
        }
        let outcomes = store.outcomes(id)?;
        Ok(Some(CocoResults::assemble(outcomes.iter().map(|(file, outcome)| (file.as_str(), outcome)))))
    }

    /// Cancels a job that has not ended; deletes one that has (its results with it).
    pub fn remove(&self, id: &str) -> Result<Removal, StoreError> {
        let store = lock(&self.store);
        if store.summary(id)?.is_none() {
            return Ok(Removal::NotFound);
        }
        let removal = if store.cancel(id)? {
            Removal::Cancelled
        } else {
            store.delete(id)?;
            Removal::Deleted
        };
        drop(store);
        let _ = std::fs::remove_dir_all(self.images_folder(id));
        Ok(removal)
    }

    fn images_folder(&self, id: &str) -> PathBuf {
        self.config.data_dir.join("jobs").join(id)
    }

    fn work(&self, models: &BTreeMap<String, Arc<SamModel>>) {
        let mut last_sweep: Option<Instant> = None;
        let sweep_every = (self.config.retention / 10).clamp(SWEEP_INTERVAL.0, SWEEP_INTERVAL.1);
        loop {
            if last_sweep.is_none_or(|t| t.elapsed() >= sweep_every) {
                self.sweep();
                last_sweep = Some(Instant::now());
            }
            match self.claim() {
                Some(image) => {
                    let outcome = self.process(&image, models);
                    self.finish(&image, outcome);
                }
                None => {
                    let guard = lock(&self.wake_lock);
                    let _ = self.wake.wait_timeout(guard, Duration::from_secs(1));
                }
            }
        }
    }

    /// The next pending image no other worker has, marking its job running.
    fn claim(&self) -> Option<PendingImage> {
        let store = lock(&self.store);
        let mut claimed = lock(&self.claimed);
        let next = match store.pending(1, |job, position| claimed.contains(&(job.to_string(), position))) {
            Ok(mut found) => found.pop()?,
            Err(error) => {
                tracing::error!(%error, "cannot read pending job images");
                return None;
            }
        };
        if let Err(error) = store.mark_running(&next.job_id) {
            tracing::error!(%error, job = next.job_id, "cannot update job");
        }
        claimed.insert((next.job_id.clone(), next.position));
        Some(next)
    }

    fn process(&self, image: &PendingImage, models: &BTreeMap<String, Arc<SamModel>>) -> Result<ImageOutcome, String> {
        let model = models.get(&image.model).ok_or_else(|| format!("model {:?} is not loaded", image.model))?;
        let path = self.images_folder(&image.job_id).join(image.position.to_string());
        let bytes = std::fs::read(&path).map_err(|e| format!("the uploaded file is gone: {e}"))?;
        let limits = &self.config.image_limits;
        // A panic in one image must not take the worker (and the jobs behind it) down.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            segment_file(model, &bytes, &image.file_name, limits, &image.task)
        }))
        .map_err(|_| "internal error while segmenting this image".to_string())?
        .map_err(|e| e.to_string())
    }

    fn finish(&self, image: &PendingImage, outcome: Result<ImageOutcome, String>) {
        let ended = lock(&self.store).finish_image(&image.job_id, image.position, &outcome);
        lock(&self.claimed).remove(&(image.job_id.clone(), image.position));
        match ended {
            Ok(true) => {
                let _ = std::fs::remove_dir_all(self.images_folder(&image.job_id));
                tracing::info!(job = image.job_id, "job ended");
            }
            Ok(false) => {}
            Err(error) => tracing::error!(%error, job = image.job_id, "cannot record an image's outcome"),
        }
        if let Err(message) = &outcome {
            tracing::warn!(job = image.job_id, file = image.file_name, message, "image failed");
        }
    }

    /// Deletes jobs that ended longer ago than the retention.
    fn sweep(&self) {
        let expired = lock(&self.store).ended_before(self.config.retention.as_secs_f64());
        for id in expired.unwrap_or_default() {
            if let Err(error) = lock(&self.store).delete(&id) {
                tracing::error!(%error, job = id, "cannot delete an expired job");
            }
            let _ = std::fs::remove_dir_all(self.images_folder(&id));
        }
    }
}

/// Makes a rename durable: the folder's entry is on disk before the job is recorded.
fn sync_folder(folder: &Path) {
    if let Some(parent) = folder.parent()
        && let Ok(directory) = std::fs::File::open(parent)
    {
        let _ = directory.sync_all();
    }
}
