//! The durable state of batch jobs: one SQLite database (WAL, synchronous=FULL) under the data directory.
//!
//! An image's outcome is written in the same transaction that marks it done, and a job's results are assembled
//! from those rows in upload order when read. A worker killed mid-image leaves the image `pending`, so after a
//! restart it is processed again from scratch: the results have neither duplicates nor gaps.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

use crate::batch::{BatchTask, ImageOutcome};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("job database holds unreadable data: {0}")]
    Corrupt(#[from] serde_json::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub(super) fn parse(text: &str) -> Self {
        match text {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            _ => Self::Cancelled,
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// A job's state as `GET /v1/jobs/{id}` reports it.
#[derive(Debug, Clone)]
pub struct JobSummary {
    pub id: String,
    pub model: String,
    pub status: JobStatus,
    pub total: usize,
    /// Images finished, successfully or not.
    pub done: usize,
    pub failed: usize,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    /// (file name, message) of each image that failed, in upload order.
    pub errors: Vec<(String, String)>,
}

/// An image waiting to be processed.
#[derive(Debug, Clone)]
pub struct PendingImage {
    pub job_id: String,
    pub position: usize,
    pub file_name: String,
    pub model: String,
    pub task: BatchTask,
}

pub struct Store {
    connection: Connection,
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn to_time(seconds: f64) -> SystemTime {
    UNIX_EPOCH + std::time::Duration::from_secs_f64(seconds.max(0.0))
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let connection = Connection::open(path)?;
        connection.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS jobs (
                 id TEXT PRIMARY KEY,
                 model TEXT NOT NULL,
                 task TEXT NOT NULL,
                 status TEXT NOT NULL,
                 total INTEGER NOT NULL,
                 created_at REAL NOT NULL,
                 updated_at REAL NOT NULL,
                 finished_at REAL,
                 owner TEXT NOT NULL DEFAULT '',
                 bytes INTEGER NOT NULL DEFAULT 0
             );
             CREATE TABLE IF NOT EXISTS job_images (
                 job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
                 position INTEGER NOT NULL,
                 file_name TEXT NOT NULL,
                 state TEXT NOT NULL,
                 outcome TEXT,
                 error TEXT,
                 PRIMARY KEY (job_id, position)
             );",
        )?;
        // Databases from before tenants: their jobs are the anonymous tenant's, of unknown size.
        let columns: Vec<String> = connection
            .prepare("SELECT name FROM pragma_table_info('jobs')")?
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        if !columns.iter().any(|column| column == "owner") {
            connection.execute_batch(
                "ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
                 ALTER TABLE jobs ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;",
            )?;
        }
        connection.execute_batch("CREATE INDEX IF NOT EXISTS jobs_in_flight ON jobs (owner, status);")?;
        Ok(Self { connection })
    }

    /// How many jobs of `owner` are queued or running, and the bytes of their images.
    pub fn in_flight(&self, owner: &str) -> Result<(usize, u64), StoreError> {
        let (jobs, bytes): (i64, i64) = self.connection.query_row(
            "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM jobs WHERE owner = ?1 AND status IN ('queued', 'running')",
            params![owner],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        Ok((jobs as usize, bytes as u64))
    }

    /// Records a new job with its images (file names in upload order), all pending.
    pub fn create(
        &mut self,
        id: &str,
        owner: &str,
        bytes: u64,
        model: &str,
        task: &BatchTask,
        files: &[String],
    ) -> Result<(), StoreError> {
        let transaction = self.connection.transaction()?;
        let time = now();
        transaction.execute(
            "INSERT INTO jobs (id, owner, bytes, model, task, status, total, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?7, ?7)",
            params![id, owner, bytes as i64, model, serde_json::to_string(task)?, files.len() as i64, time],
        )?;
        {
            let mut insert = transaction.prepare(
                "INSERT INTO job_images (job_id, position, file_name, state) VALUES (?1, ?2, ?3, 'pending')",
            )?;
            for (position, file) in files.iter().enumerate() {
                insert.execute(params![id, position as i64, file])?;
            }
        }
        transaction.commit()?;
        Ok(())
    }

    pub fn summary(&self, id: &str) -> Result<Option<JobSummary>, StoreError> {
        let job = self
            .connection
            .query_row(
                "SELECT model, status, total, created_at, updated_at FROM jobs WHERE id = ?1",
                params![id],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)? as usize,
                        row.get::<_, f64>(3)?,
                        row.get::<_, f64>(4)?,
                    ))
                },
            )
            .optional()?;
        let Some((model, status, total, created_at, updated_at)) = job else { return Ok(None) };
        let done: i64 = self.connection.query_row(
            "SELECT COUNT(*) FROM job_images WHERE job_id = ?1 AND state != 'pending'",
            params![id],
            |row| row.get(0),
        )?;
        let mut statement = self.connection.prepare(
            "SELECT file_name, error FROM job_images WHERE job_id = ?1 AND state = 'failed' ORDER BY position",
        )?;
        let errors = statement
            .query_map(params![id], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(JobSummary {
            id: id.to_string(),
            model,
            status: JobStatus::parse(&status),
            total,
            done: done as usize,
            failed: errors.len(),
            created_at: to_time(created_at),
            updated_at: to_time(updated_at),
            errors,
        }))
    }

    /// The outcomes of the images done so far, in upload order.
    pub fn outcomes(&self, id: &str) -> Result<Vec<(String, ImageOutcome)>, StoreError> {
        let mut statement = self.connection.prepare(
            "SELECT file_name, outcome FROM job_images WHERE job_id = ?1 AND state = 'done' ORDER BY position",
        )?;
        let rows = statement
            .query_map(params![id], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(file, outcome)| Ok((file, serde_json::from_str(&outcome)?)))
            .collect::<Result<Vec<_>, StoreError>>()
    }

    /// Pending images of queued or running jobs, oldest job first, at most `limit`, skipping those `skip` says.
    pub fn pending(&self, limit: usize, skip: impl Fn(&str, usize) -> bool) -> Result<Vec<PendingImage>, StoreError> {
        let mut statement = self.connection.prepare(
            "SELECT i.job_id, i.position, i.file_name, j.model, j.task FROM job_images i JOIN jobs j ON j.id = i.job_id
             WHERE j.status IN ('queued', 'running') AND i.state = 'pending'
             ORDER BY j.created_at, j.id, i.position",
        )?;
        let mut rows = statement.query([])?;
        let mut found = Vec::new();
        while let Some(row) = rows.next()? {
            let (job_id, position): (String, usize) = (row.get(0)?, row.get::<_, i64>(1)? as usize);
            if skip(&job_id, position) {
                continue;
            }
            let task: String = row.get(4)?;
            found.push(PendingImage {
                job_id,
                position,
                file_name: row.get(2)?,
                model: row.get(3)?,
                task: serde_json::from_str(&task)?,
            });
            if found.len() == limit {
                break;
            }
        }
        Ok(found)
    }

    pub fn mark_running(&self, id: &str) -> Result<(), StoreError> {
        self.connection.execute(
            "UPDATE jobs SET status = 'running', updated_at = ?2 WHERE id = ?1 AND status = 'queued'",
            params![id, now()],
        )?;
        Ok(())
    }

    /// Records one image's outcome; when it was the job's last pending image, the job ends (succeeded, or failed
    /// when no image succeeded). Returns whether the job ended with this call.
    pub fn finish_image(
        &mut self,
        id: &str,
        position: usize,
        outcome: &Result<ImageOutcome, String>,
    ) -> Result<bool, StoreError> {
        let transaction = self.connection.transaction()?;
        let time = now();
        match outcome {
            Ok(outcome) => transaction.execute(
                "UPDATE job_images SET state = 'done', outcome = ?3 WHERE job_id = ?1 AND position = ?2 AND state = 'pending'",
                params![id, position as i64, serde_json::to_string(outcome)?],
            )?,
            Err(message) => transaction.execute(
                "UPDATE job_images SET state = 'failed', error = ?3 WHERE job_id = ?1 AND position = ?2 AND state = 'pending'",
                params![id, position as i64, message],
            )?,
        };
        transaction.execute("UPDATE jobs SET updated_at = ?2 WHERE id = ?1", params![id, time])?;
        let (pending, succeeded): (i64, i64) = transaction.query_row(
            "SELECT COALESCE(SUM(state = 'pending'), 0), COALESCE(SUM(state = 'done'), 0) FROM job_images WHERE job_id = ?1",
            params![id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        let ended = pending == 0
            && transaction.execute(
                "UPDATE jobs SET status = ?2, finished_at = ?3 WHERE id = ?1 AND status IN ('queued', 'running')",
                params![id, if succeeded > 0 { "succeeded" } else { "failed" }, time],
            )? == 1;
        transaction.commit()?;
        Ok(ended)
    }

    /// Cancels a queued or running job; false when it had already ended.
    pub fn cancel(&self, id: &str) -> Result<bool, StoreError> {
        let time = now();
        let changed = self.connection.execute(
            "UPDATE jobs SET status = 'cancelled', updated_at = ?2, finished_at = ?2 WHERE id = ?1 AND status IN ('queued', 'running')",
            params![id, time],
        )?;
        Ok(changed == 1)
    }

    /// Deletes a job and its results.
    pub fn delete(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.connection.execute("DELETE FROM jobs WHERE id = ?1", params![id])? == 1)
    }

    /// Jobs that ended more than `age_seconds` ago.
    pub fn ended_before(&self, age_seconds: f64) -> Result<Vec<String>, StoreError> {
        let mut statement =
            self.connection.prepare("SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?1")?;
        let ids =
            statement.query_map(params![now() - age_seconds], |row| row.get(0))?.collect::<Result<Vec<_>, _>>()?;
        Ok(ids)
    }

    /// Whether the job exists and has not ended (its images are still needed).
    pub fn is_active(&self, id: &str) -> Result<bool, StoreError> {
        let status: Option<String> = self
            .connection
            .query_row("SELECT status FROM jobs WHERE id = ?1", params![id], |row| row.get(0))
            .optional()?;
        Ok(status.is_some_and(|s| !JobStatus::parse(&s).is_final()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amg::AmgParams;

    fn outcome(width: usize) -> ImageOutcome {
        ImageOutcome { width, height: 1, annotations: vec![] }
    }

    #[test]
    fn a_database_from_before_tenants_gets_owners_and_sizes() {
        let folder = std::env::temp_dir().join(format!("samserve-store-old-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let path = folder.join("jobs.sqlite");
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE jobs (id TEXT PRIMARY KEY, model TEXT NOT NULL, task TEXT NOT NULL, status TEXT NOT NULL,
                 total INTEGER NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL, finished_at REAL);
                 INSERT INTO jobs VALUES ('old', 'm', '{}', 'queued', 1, 0, 0, NULL);",
            )
            .unwrap();
        let store = Store::open(&path).unwrap();
        assert_eq!(store.in_flight("").unwrap(), (1, 0));
        drop(store);
        std::fs::remove_dir_all(&folder).unwrap();
    }

    #[test]
    fn a_job_ends_when_its_last_image_is_done_and_survives_reopening() {
        let folder = std::env::temp_dir().join(format!("samserve-store-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let path = folder.join("jobs.sqlite");
        let task = BatchTask::Everything { params: AmgParams::default() };
        {
            let mut store = Store::open(&path).unwrap();
            store
                .create("alice.j1", "alice", 300, "m", &task, &["a.png".into(), "b.png".into(), "c.png".into()])
                .unwrap();
            assert_eq!((store.in_flight("alice").unwrap(), store.in_flight("bob").unwrap()), ((1, 300), (0, 0)));
            assert!(!store.finish_image("alice.j1", 1, &Ok(outcome(2))).unwrap());
            // A second report for the same image changes nothing (no duplicates).
            assert!(!store.finish_image("alice.j1", 1, &Ok(outcome(9))).unwrap());
        }
        let mut store = Store::open(&path).unwrap();
        let pending: Vec<usize> = store.pending(10, |_, _| false).unwrap().iter().map(|p| p.position).collect();
        assert_eq!(pending, vec![0, 2]);
        assert!(!store.finish_image("alice.j1", 0, &Err("broken".into())).unwrap());
        assert!(store.finish_image("alice.j1", 2, &Ok(outcome(3))).unwrap());
        assert_eq!(store.in_flight("alice").unwrap(), (0, 0), "an ended job is no longer in flight");
        let summary = store.summary("alice.j1").unwrap().unwrap();
        assert_eq!((summary.status, summary.done, summary.failed), (JobStatus::Succeeded, 3, 1));
        assert_eq!(summary.errors, vec![("a.png".to_string(), "broken".to_string())]);
        let widths: Vec<usize> = store.outcomes("alice.j1").unwrap().iter().map(|(_, o)| o.width).collect();
        assert_eq!(widths, vec![2, 3]);
        assert!(!store.cancel("alice.j1").unwrap());
        assert!(store.delete("alice.j1").unwrap());
        assert!(store.summary("alice.j1").unwrap().is_none());
        std::fs::remove_dir_all(&folder).unwrap();
    }
}
