//! Durable batch jobs. Uploaded images are staged on disk, then handed to a queue: [`local`] keeps them in this
//! process's SQLite database and data directory; [`shared`] keeps them in Redis and a blob store, where every
//! replica's workers take them. A pool of worker threads processes one image at a time each; an image's outcome is
//! recorded together with its completion, so a crash or a killed worker loses nothing and duplicates nothing.

mod blobs;
mod local;
mod redis_link;
mod shared;
pub mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use crate::batch::{BatchTask, CocoResults, ImageOutcome, segment_file};
use crate::image_input::ImageLimits;
use crate::metrics::Metrics;
use crate::model::SamModel;
use crate::tenant::Tenant;
pub use blobs::BlobStore;
pub use redis_link::RedisLink;
use store::PendingImage;
pub use store::{JobStatus, JobSummary, StoreError};

#[derive(Debug, Clone)]
pub struct JobsConfig {
    pub data_dir: PathBuf,
    /// Images processed at once (worker threads).
    pub workers: usize,
    /// Ended jobs (and their results) are deleted after this long.
    pub retention: Duration,
    pub image_limits: ImageLimits,
    /// New jobs are refused while the disk under `data_dir` has less free space than this.
    pub min_free_disk_bytes: u64,
    pub quota: JobQuota,
}

/// What one tenant may have in flight (jobs queued or running): how many jobs, and how many bytes of images.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobQuota {
    pub jobs: Option<usize>,
    pub bytes: Option<u64>,
}

impl JobQuota {
    /// Whether a tenant that holds `held` (jobs, bytes) in flight may add a job of `incoming` bytes.
    fn admit(&self, held: (usize, u64), incoming: u64) -> Result<(), JobsError> {
        let (jobs, bytes) = held;
        if let Some(most) = self.jobs.filter(|&most| jobs >= most) {
            return Err(JobsError::TooManyJobs(format!(
                "{jobs} jobs of yours are queued or running, the most you may have at once ({most}); wait for one to end"
            )));
        }
        if let Some(most) = self.bytes.filter(|&most| bytes + incoming > most) {
            return Err(JobsError::OverStorageQuota(format!(
                "your jobs in flight would hold {} MiB of images, over your {} MiB",
                (bytes + incoming).div_ceil(1 << 20),
                most >> 20
            )));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The shared job store (Redis) cannot be reached: the caller may try again later.
    #[error("the shared job store is unreachable: {0}")]
    Unavailable(String),
    /// The disk under the data folder is (nearly) full: new uploads are refused until space is freed.
    #[error("{0}")]
    NoRoom(String),
    /// The tenant has as many jobs in flight as its quota allows.
    #[error("{0}")]
    TooManyJobs(String),
    /// The tenant's jobs in flight would hold more image bytes than its quota allows.
    #[error("{0}")]
    OverStorageQuota(String),
    #[error("{0}")]
    Internal(String),
}

impl From<redis::RedisError> for JobsError {
    fn from(error: redis::RedisError) -> Self {
        Self::Unavailable(error.to_string())
    }
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

    /// The bytes of all files received.
    fn bytes(&self) -> std::io::Result<u64> {
        (0..self.files.len()).map(|position| Ok(self.folder.join(position.to_string()).metadata()?.len())).sum()
    }

    /// The bytes of the file at `position`.
    fn read(&self, position: usize) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.folder.join(position.to_string()))
    }
}

impl Drop for StagedUpload {
    fn drop(&mut self) {
        if self.owned {
            let _ = std::fs::remove_dir_all(&self.folder);
        }
    }
}

/// One image a worker took from the queue.
pub struct Claim {
    pub image: PendingImage,
    /// The queue's handle of this work item (the Redis stream entry; empty for the local queue).
    ticket: String,
}

/// What a queue records of a new job, and the quota that admits it.
struct NewJob<'a> {
    model: &'a str,
    task: &'a BatchTask,
    /// Of its images.
    bytes: u64,
    quota: JobQuota,
}

/// Where jobs are kept and how workers take their images.
trait JobQueue: Send + Sync {
    /// Records a job of `owner` (a tenant's name) for the staged images, taking them over, if `quota` admits it
    /// next to the owner's jobs in flight; once this returns, the job survives a crash.
    fn submit(&self, id: &str, owner: &str, job: NewJob, upload: StagedUpload) -> Result<(), JobsError>;
    fn summary(&self, id: &str) -> Result<Option<JobSummary>, JobsError>;
    /// The outcomes of the images done so far, in upload order; `None` for an unknown job.
    fn outcomes(&self, id: &str) -> Result<Option<Vec<(String, ImageOutcome)>>, JobsError>;
    /// Cancels a job that has not ended; deletes one that has (its results with it).
    fn remove(&self, id: &str) -> Result<Removal, JobsError>;
    /// Whether a new job can be accepted now.
    fn accepting(&self) -> Result<(), JobsError> {
        Ok(())
    }
    /// The next image to process; waits up to about a second for one.
    fn claim(&self) -> Option<Claim>;
    fn image(&self, claim: &Claim) -> Result<Vec<u8>, String>;
    /// How often [`JobQueue::keep_claimed`] must be called while an image is processed, if at all.
    fn keep_claimed_every(&self) -> Option<Duration> {
        None
    }
    /// Tells the queue that the claim's worker is alive.
    fn keep_claimed(&self, _claim: &Claim) {}
    /// Records an image's outcome and completes its work item, together.
    fn finish(&self, claim: &Claim, outcome: &Result<ImageOutcome, String>);
    /// Periodic upkeep, called by the workers between images.
    fn maintain(&self) {}
}

pub struct Jobs {
    config: JobsConfig,
    queue: Box<dyn JobQueue>,
    /// Set by [`Jobs::stop`]: the workers take no more images and record nothing more.
    stopping: AtomicBool,
}

impl Jobs {
    /// Jobs of this process alone: opens (or creates) the data directory and its database.
    pub fn open(config: JobsConfig) -> Result<Self, String> {
        Self::prepare(&config)?;
        let queue = local::LocalQueue::open(&config.data_dir, config.retention)?;
        Ok(Self::with_queue(config, Box::new(queue)))
    }

    /// Jobs shared by the replicas of one Redis; `claim_timeout` is how long an image whose worker stopped
    /// answering stays claimed.
    pub fn open_shared(
        config: JobsConfig,
        link: Arc<RedisLink>,
        blobs: BlobStore,
        claim_timeout: Duration,
    ) -> Result<Self, String> {
        Self::prepare(&config)?;
        let queue = shared::SharedQueue::open(link, blobs, config.retention, claim_timeout)?;
        Ok(Self::with_queue(config, Box::new(queue)))
    }

    fn with_queue(config: JobsConfig, queue: Box<dyn JobQueue>) -> Self {
        Self { config, queue, stopping: AtomicBool::new(false) }
    }

    /// Clears half-received uploads (left by a crash) and makes their folder.
    fn prepare(config: &JobsConfig) -> Result<(), String> {
        let uploads = config.data_dir.join("uploads");
        let _ = std::fs::remove_dir_all(&uploads);
        std::fs::create_dir_all(&uploads).map_err(|e| format!("cannot create {}: {e}", uploads.display()))
    }

    /// Starts the worker threads; they run until [`Jobs::stop`].
    pub fn start(self: &Arc<Self>, models: BTreeMap<String, Arc<SamModel>>, metrics: Arc<Metrics>) {
        let models = Arc::new(models);
        for index in 0..self.config.workers.max(1) {
            let (jobs, models, metrics) = (Arc::clone(self), Arc::clone(&models), Arc::clone(&metrics));
            std::thread::Builder::new()
                .name(format!("job-worker-{index}"))
                .spawn(move || jobs.work(&models, &metrics))
                .expect("spawning a worker thread");
        }
    }

    /// At shutdown, before the process ends: the images in progress are left pending, for the next start (or
    /// another replica) to process again. Their outcome cannot be trusted: as the process exits, ONNX Runtime is
    /// torn down under a running inference, which then fails.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Whether a new job can be accepted now (checked before receiving its images), and the bytes its upload
    /// may take before the disk under the data folder passes `min_free_disk_bytes`.
    pub fn accepting(&self) -> Result<u64, JobsError> {
        self.queue.accepting()?;
        let dir = &self.config.data_dir;
        let free = fs4::available_space(dir)
            .map_err(|e| JobsError::Internal(format!("cannot read the free space under {}: {e}", dir.display())))?;
        match free.checked_sub(self.config.min_free_disk_bytes) {
            Some(room) if room > 0 => Ok(room),
            _ => Err(JobsError::NoRoom(format!(
                "the server's disk is nearly full ({} MiB free, new jobs need {} MiB kept free)",
                free >> 20,
                self.config.min_free_disk_bytes >> 20
            ))),
        }
    }

    /// A folder to receive the images of a new job.
    pub fn stage(&self) -> Result<StagedUpload, String> {
        let folder = self.config.data_dir.join("uploads").join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(&folder).map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
        Ok(StagedUpload { folder, files: Vec::new(), owned: true })
    }

    /// Records a job of `tenant` for the staged images; once this returns, the job survives a crash. The queue
    /// knows it by [`Tenant::scope`] of its id, so that only its tenant finds it.
    pub fn submit(
        &self,
        tenant: &Tenant,
        model: &str,
        task: &BatchTask,
        upload: StagedUpload,
    ) -> Result<String, JobsError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let bytes = upload.bytes().map_err(|e| JobsError::Internal(format!("cannot read the upload: {e}")))?;
        let job = NewJob { model, task, bytes, quota: self.config.quota };
        self.queue.submit(&tenant.scope(&id), tenant.name(), job, upload)?;
        Ok(id)
    }

    /// A tenant's job; `None` for an unknown job or another tenant's.
    pub fn summary(&self, tenant: &Tenant, id: &str) -> Result<Option<JobSummary>, JobsError> {
        let summary = self.queue.summary(&tenant.scope(id))?;
        Ok(summary.map(|summary| JobSummary { id: id.to_string(), ..summary }))
    }

    /// The COCO results of the images done so far; `None` for an unknown job or another tenant's.
    pub fn results(&self, tenant: &Tenant, id: &str) -> Result<Option<CocoResults>, JobsError> {
        let outcomes = self.queue.outcomes(&tenant.scope(id))?;
        Ok(outcomes.map(|outcomes| CocoResults::assemble(outcomes.iter().map(|(file, o)| (file.as_str(), o)))))
    }

    /// Cancels a tenant's job that has not ended; deletes one that has (its results with it).
    pub fn remove(&self, tenant: &Tenant, id: &str) -> Result<Removal, JobsError> {
        self.queue.remove(&tenant.scope(id))
    }

    fn work(&self, models: &BTreeMap<String, Arc<SamModel>>, metrics: &Metrics) {
        let stopping = || self.stopping.load(Ordering::SeqCst);
        while !stopping() {
            self.queue.maintain();
            let Some(claim) = self.queue.claim() else { continue };
            let outcome = self.keeping_claimed(&claim, || self.process(&claim, models));
            if stopping() {
                return;
            }
            self.queue.finish(&claim, &outcome);
            let label = if outcome.is_ok() { "succeeded" } else { "failed" };
            metrics.job_images.with_label_values(&[label]).inc();
            if let Err(message) = &outcome {
                let image = &claim.image;
                tracing::warn!(job = image.job_id, file = image.file_name, message, "image failed");
            }
        }
    }

    /// Runs `work`, telling the queue every so often that this worker still holds the claim.
    fn keeping_claimed<T>(&self, claim: &Claim, work: impl FnOnce() -> T) -> T {
        let Some(every) = self.queue.keep_claimed_every() else { return work() };
        let (done, finished) = mpsc::channel::<()>();
        std::thread::scope(|scope| {
            let queue = &self.queue;
            scope.spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(every) {
                    queue.keep_claimed(claim);
                }
            });
            let result = work();
            drop(done);
            result
        })
    }

    fn process(&self, claim: &Claim, models: &BTreeMap<String, Arc<SamModel>>) -> Result<ImageOutcome, String> {
        let image = &claim.image;
        let model = models.get(&image.model).ok_or_else(|| format!("model {:?} is not loaded", image.model))?;
        let bytes = self.queue.image(claim)?;
        let limits = &self.config.image_limits;
        // A panic in one image must not take the worker (and the jobs behind it) down.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            segment_file(model, &bytes, &image.file_name, limits, &image.task)
        }))
        .map_err(|_| "internal error while segmenting this image".to_string())?
        .map_err(|e| e.to_string())
    }
}
