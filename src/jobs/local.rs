//! The jobs of one process: state in SQLite ([`super::store`]), images in `--data-dir/jobs/<job_id>/`. Workers
//! resume whatever was pending when the server last stopped.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::store::Store;
use super::{Claim, JobQueue, JobSummary, JobsError, NewJob, Removal, StagedUpload};
use crate::batch::ImageOutcome;

/// How often expired jobs are looked for at most and at least (a tenth of the retention in between).
const SWEEP_INTERVAL: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));
/// The pause after an image's outcome could not be recorded, before the worker goes on.
const RECORD_RETRY_PAUSE: Duration = Duration::from_secs(1);

pub struct LocalQueue {
    data_dir: PathBuf,
    retention: Duration,
    store: Mutex<Store>,
    /// Images a worker is processing now (their rows stay `pending` until done, so a crash loses nothing).
    claimed: Mutex<HashSet<(String, usize)>>,
    wake: Condvar,
    wake_lock: Mutex<()>,
    last_sweep: Mutex<Option<Instant>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LocalQueue {
    /// Opens (or creates) the database; clears image folders that no active job owns (left by a crash between
    /// receiving and recording a job).
    pub fn open(data_dir: &Path, retention: Duration) -> Result<Self, String> {
        let images = data_dir.join("jobs");
        std::fs::create_dir_all(&images).map_err(|e| format!("cannot create {}: {e}", images.display()))?;
        let store = Store::open(&data_dir.join("jobs.sqlite")).map_err(|e| e.to_string())?;
        if let Ok(entries) = std::fs::read_dir(&images) {
            for entry in entries.flatten() {
                let id = entry.file_name().to_string_lossy().into_owned();
                if !store.is_active(&id).unwrap_or(true) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(Self {
            data_dir: data_dir.to_path_buf(),
            retention,
            store: Mutex::new(store),
            claimed: Mutex::new(HashSet::new()),
            wake: Condvar::new(),
            wake_lock: Mutex::new(()),
            last_sweep: Mutex::new(None),
        })
    }

    fn images_folder(&self, id: &str) -> PathBuf {
        self.data_dir.join("jobs").join(id)
    }

    /// The next pending image no other worker has, marking its job running.
    fn next_pending(&self) -> Option<Claim> {
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
        Some(Claim { image: next, ticket: String::new() })
    }
}

impl JobQueue for LocalQueue {
    fn submit(&self, id: &str, owner: &str, job: NewJob, mut upload: StagedUpload) -> Result<(), JobsError> {
        // One lock from the quota check to the record: two submissions cannot both take the last place.
        let mut store = lock(&self.store);
        job.quota.admit(store.in_flight(owner)?, job.bytes)?;
        let folder = self.images_folder(id);
        std::fs::rename(&upload.folder, &folder)
            .map_err(|e| JobsError::Internal(format!("cannot keep the images: {e}")))?;
        upload.folder = folder.clone();
        sync_folder(&folder);
        store.create(id, owner, job.bytes, job.model, job.task, &upload.files)?;
        drop(store);
        upload.owned = false;
        self.wake.notify_all();
        Ok(())
    }

    fn summary(&self, id: &str) -> Result<Option<JobSummary>, JobsError> {
        Ok(lock(&self.store).summary(id)?)
    }

    fn outcomes(&self, id: &str) -> Result<Option<Vec<(String, ImageOutcome)>>, JobsError> {
        let store = lock(&self.store);
        if store.summary(id)?.is_none() {
            return Ok(None);
        }
        Ok(Some(store.outcomes(id)?))
    }

    fn remove(&self, id: &str) -> Result<Removal, JobsError> {
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

    fn claim(&self) -> Option<Claim> {
        if let Some(claim) = self.next_pending() {
            return Some(claim);
        }
        let guard = lock(&self.wake_lock);
        let _ = self.wake.wait_timeout(guard, Duration::from_secs(1));
        None
    }

    fn image(&self, claim: &Claim) -> Result<Vec<u8>, String> {
        let path = self.images_folder(&claim.image.job_id).join(claim.image.position.to_string());
        std::fs::read(&path).map_err(|e| format!("the uploaded file is gone: {e}"))
    }

    fn finish(&self, claim: &Claim, outcome: &Result<ImageOutcome, String>) {
        let image = &claim.image;
        // One transaction: on a full disk it leaves the database as it was, and the image pending.
        let ended = lock(&self.store).finish_image(&image.job_id, image.position, outcome);
        lock(&self.claimed).remove(&(image.job_id.clone(), image.position));
        match ended {
            Ok(true) => {
                let _ = std::fs::remove_dir_all(self.images_folder(&image.job_id));
                tracing::info!(job = image.job_id, "job ended");
            }
            Ok(false) => {}
            Err(error) => {
                tracing::error!(%error, job = image.job_id, "cannot record an image's outcome: it stays pending");
                // It is processed again (a full disk: until there is room); not at once, so that a full disk does not
                // keep a core busy.
                std::thread::sleep(RECORD_RETRY_PAUSE);
            }
        }
    }

    /// Deletes jobs that ended longer ago than the retention.
    fn maintain(&self) {
        let sweep_every = (self.retention / 10).clamp(SWEEP_INTERVAL.0, SWEEP_INTERVAL.1);
        {
            let mut last_sweep = lock(&self.last_sweep);
            if last_sweep.is_some_and(|t| t.elapsed() < sweep_every) {
                return;
            }
            *last_sweep = Some(Instant::now());
        }
        let expired = lock(&self.store).ended_before(self.retention.as_secs_f64());
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
