//! Jobs shared by replicas through Redis (`--redis`; docs/scaling.md). A job is a hash; each of its images is an
//! entry of one stream that every replica's workers read through one consumer group, so each entry goes to one
//! worker. An entry stays pending until a Lua script records the image's outcome and acknowledges the entry in one
//! step (no duplicate, no gap); the entry of a worker that stopped answering for `--job-claim-timeout-s` is claimed
//! by another. Images live in the [`BlobStore`] until their job ends.
//!
//! Every key shares the hash tag `{jobs}`, so that the scripts' keys sit in one slot.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::RedisResult;

use super::store::{JobStatus, PendingImage};
use super::{BlobStore, Claim, JobQueue, JobSummary, JobsError, NewJob, RedisLink, Removal, StagedUpload};
use crate::batch::{BatchTask, ImageOutcome};
use crate::tenant::owner_of_scoped;

const QUEUE: &str = "samserve:{jobs}:queue";
const GROUP: &str = "workers";
/// An image whose processing stopped this many times without an outcome fails instead of being tried again (it may
/// be what kills its workers).
const MAX_DELIVERIES: u64 = 3;

fn job_key(id: &str) -> String {
    format!("samserve:{{jobs}}:job:{id}")
}

/// A tenant's jobs in flight (queued or running): job id -> bytes of its images. In the jobs' hash slot, so that
/// the scripts that start and end jobs keep it in step.
fn in_flight_key(owner: &str) -> String {
    format!("samserve:{{jobs}}:in-flight:{owner}")
}

/// Outcomes of the images that succeeded: position -> ImageOutcome JSON.
fn outcomes_key(id: &str) -> String {
    format!("samserve:{{jobs}}:outcomes:{id}")
}

/// Messages of the images that failed: position -> message.
fn errors_key(id: &str) -> String {
    format!("samserve:{{jobs}}:errors:{id}")
}

/// Records an image's outcome once and acknowledges its entry; ends the job after its last image. Returns the job's
/// image count when this call ended it, else 0.
/// KEYS: job, outcomes, errors, queue, in-flight. ARGV: group, entry, position, record, failed (0/1), now,
/// retention in ms, job id.
const FINISH_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1
  and redis.call('HEXISTS', KEYS[2], ARGV[3]) == 0 and redis.call('HEXISTS', KEYS[3], ARGV[3]) == 0 then
  if ARGV[5] == '1' then
    redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
    redis.call('HINCRBY', KEYS[1], 'failed', 1)
  else
    redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
  end
  redis.call('HINCRBY', KEYS[1], 'done', 1)
  redis.call('HSET', KEYS[1], 'updated_at', ARGV[6])
end
redis.call('XACK', KEYS[4], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[4], ARGV[2])
local job = redis.call('HMGET', KEYS[1], 'status', 'done', 'failed', 'total')
if (job[1] == 'queued' or job[1] == 'running') and tonumber(job[2]) == tonumber(job[4]) then
  local status = 'failed'
  if tonumber(job[2]) > tonumber(job[3]) then status = 'succeeded' end
  redis.call('HSET', KEYS[1], 'status', status, 'finished_at', ARGV[6])
  for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[7]) end
  redis.call('ZREM', KEYS[5], ARGV[8])
  return tonumber(job[4])
end
return 0
";

/// Cancels a job that has not ended (it expires after the retention), or deletes one that has. Returns
/// {-1 (unknown) | 1 (cancelled) | 0 (deleted), image count}.
/// KEYS: job, outcomes, errors, in-flight. ARGV: now, retention in ms, job id.
const REMOVE_SCRIPT: &str = r"
local job = redis.call('HMGET', KEYS[1], 'status', 'total')
if not job[1] then return {-1, 0} end
if job[1] == 'queued' or job[1] == 'running' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'updated_at', ARGV[1], 'finished_at', ARGV[1])
  for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
  redis.call('ZREM', KEYS[4], ARGV[3])
  return {1, tonumber(job[2])}
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return {0, tonumber(job[2])}
";

/// Records a job and queues one entry per image, at once, if the tenant's quota admits it next to its jobs in
/// flight; else changes nothing and returns what the tenant holds: {jobs, bytes} ({-1, -1}: recorded).
/// KEYS: job, queue, in-flight. ARGV: job id, image count, bytes, most jobs, most bytes (-1: no limit), then the
/// job's fields and values.
const SUBMIT_SCRIPT: &str = r"
local jobs = redis.call('ZCARD', KEYS[3])
local bytes = 0
for i, held in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES')) do
  if i % 2 == 0 then bytes = bytes + tonumber(held) end
end
local incoming, most_jobs, most_bytes = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if (most_jobs >= 0 and jobs >= most_jobs) or (most_bytes >= 0 and bytes + incoming > most_bytes) then
  return {jobs, bytes}
end
redis.call('ZADD', KEYS[3], incoming, ARGV[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
for position = 0, tonumber(ARGV[2]) - 1 do
  redis.call('XADD', KEYS[2], '*', 'job', ARGV[1], 'position', position)
end
return {-1, -1}
";

/// Acknowledges and deletes an entry without an outcome (its job was cancelled, deleted or expired).
/// KEYS: queue. ARGV: group, entry.
const DROP_SCRIPT: &str = r"
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 0
";

/// Marks a queued job running.
const START_SCRIPT: &str = r"
if redis.call('HGET', KEYS[1], 'status') == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'running', 'updated_at', ARGV[1])
end
return 0
";

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn to_time(seconds: &str) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs_f64(seconds.parse::<f64>().unwrap_or(0.0).max(0.0))
}

fn eval(script: &str, keys: &[String]) -> redis::Cmd {
    let mut command = redis::cmd("EVAL");
    command.arg(script).arg(keys.len()).arg(keys);
    command
}

fn corrupt(what: impl std::fmt::Display) -> JobsError {
    JobsError::Internal(format!("the shared job store holds unreadable data: {what}"))
}

/// A stream entry: its id and fields.
type Entry = (String, HashMap<String, String>);

pub struct SharedQueue {
    link: Arc<RedisLink>,
    blobs: BlobStore,
    retention: Duration,
    claim_timeout: Duration,
    /// This replica's name in the consumer group.
    consumer: String,
    /// Whether the workers already logged that Redis is unreachable.
    reported_outage: AtomicBool,
}

impl SharedQueue {
    pub fn open(
        link: Arc<RedisLink>,
        blobs: BlobStore,
        retention: Duration,
        claim_timeout: Duration,
    ) -> Result<Self, String> {
        let consumer = format!("replica-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let queue = Self { link, blobs, retention, claim_timeout, consumer, reported_outage: AtomicBool::new(false) };
        queue.create_group().map_err(|e| format!("cannot set up the shared job queue: {e}"))?;
        tracing::info!(consumer = queue.consumer, "job workers take images from the shared queue in Redis");
        Ok(queue)
    }

    /// Creates the stream and its consumer group unless they exist (Redis may also have lost them).
    fn create_group(&self) -> RedisResult<()> {
        let created =
            self.link.query::<()>(redis::cmd("XGROUP").arg("CREATE").arg(QUEUE).arg(GROUP).arg("0").arg("MKSTREAM"));
        match created {
            Err(error) if error.code() == Some("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    fn retention_ms(&self) -> u64 {
        (self.retention.as_millis() as u64).max(1)
    }

    /// An entry whose worker has not answered for the claim timeout, taken over, with its delivery count.
    fn reclaim(&self) -> RedisResult<Option<(Entry, u64)>> {
        let timeout = self.claim_timeout.as_millis() as u64;
        let mut pending = redis::cmd("XPENDING");
        pending.arg(QUEUE).arg(GROUP).arg("IDLE").arg(timeout).arg("-").arg("+").arg(1);
        let stalled: Vec<(String, String, u64, u64)> = self.link.query(&pending)?;
        let Some((id, _, _, deliveries)) = stalled.into_iter().next() else { return Ok(None) };
        let mut claim = redis::cmd("XCLAIM");
        claim.arg(QUEUE).arg(GROUP).arg(&self.consumer).arg(timeout).arg(&id);
        // Empty when another replica took it first; `None` inside when the entry was deleted meanwhile.
        let taken: Vec<Option<Entry>> = self.link.query(&claim)?;
        let Some(entry) = taken.into_iter().flatten().next() else { return Ok(None) };
        tracing::warn!(entry = entry.0, "took over a job image whose replica stopped answering");
        Ok(Some((entry, deliveries + 1)))
    }

    /// A new entry, waiting up to a second for one.
    fn read_new(&self) -> RedisResult<Option<Entry>> {
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP").arg(GROUP).arg(&self.consumer).arg("COUNT").arg(1).arg("BLOCK").arg(1000);
        read.arg("STREAMS").arg(QUEUE).arg(">");
        let reply: Option<Vec<(String, Vec<Entry>)>> = self.link.query(&read)?;
        Ok(reply.into_iter().flatten().flat_map(|(_, entries)| entries).next())
    }

    /// A stalled entry if there is one, else a new one; with its delivery count.
    fn next_entry(&self) -> RedisResult<Option<(Entry, u64)>> {
        match self.reclaim()? {
            Some(found) => Ok(Some(found)),
            None => Ok(self.read_new()?.map(|entry| (entry, 1))),
        }
    }

    fn try_claim(&self) -> Result<Option<Claim>, JobsError> {
        let (entry, deliveries) = match self.next_entry() {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(None),
            // Redis lost the queue (restarted without persistence): make it again.
            Err(error) if error.code() == Some("NOGROUP") => return Ok(self.create_group().map(|()| None)?),
            Err(error) => return Err(error.into()),
        };
        let (ticket, fields) = entry;
        let job_id = fields.get("job").cloned().unwrap_or_default();
        let position = fields.get("position").and_then(|p| p.parse::<usize>().ok());
        let mut lookup = redis::cmd("HMGET");
        lookup.arg(job_key(&job_id)).arg(&["status", "model", "task", "files"]);
        let [status, model, task, files]: [Option<String>; 4] = self.link.query(&lookup)?;
        let active = status.is_some_and(|s| s == "queued" || s == "running");
        let image = match (position, model, task, files) {
            (Some(position), Some(model), Some(task), Some(files)) if active => {
                let task: BatchTask = serde_json::from_str(&task).map_err(corrupt)?;
                let files: Vec<String> = serde_json::from_str(&files).map_err(corrupt)?;
                let file_name = files.get(position).cloned().ok_or_else(|| corrupt("a position past the files"))?;
                PendingImage { job_id, position, file_name, model, task }
            }
            // The job was cancelled, deleted or expired: its remaining entries are dropped.
            _ => {
                self.link.query::<()>(eval(DROP_SCRIPT, &[QUEUE.to_string()]).arg(GROUP).arg(&ticket))?;
                return Ok(None);
            }
        };
        let claim = Claim { image, ticket };
        if deliveries > MAX_DELIVERIES {
            let message = format!(
                "processing this image stopped {MAX_DELIVERIES} times without an outcome (its worker was killed, \
                 or ran out of memory)"
            );
            self.finish(&claim, &Err(message));
            return Ok(None);
        }
        self.link.query::<()>(eval(START_SCRIPT, &[job_key(&claim.image.job_id)]).arg(now()))?;
        Ok(Some(claim))
    }

    /// Records an image's outcome and acknowledges its entry; the job's image count when this ended it, else 0.
    fn finish_entry(&self, claim: &Claim, outcome: &Result<ImageOutcome, String>) -> Result<u64, JobsError> {
        let (record, failed) = match outcome {
            Ok(outcome) => (serde_json::to_string(outcome).map_err(corrupt)?, "0"),
            Err(message) => (message.clone(), "1"),
        };
        let id = &claim.image.job_id;
        let keys =
            [job_key(id), outcomes_key(id), errors_key(id), QUEUE.to_string(), in_flight_key(owner_of_scoped(id))];
        let mut command = eval(FINISH_SCRIPT, &keys);
        command.arg(GROUP).arg(&claim.ticket).arg(claim.image.position).arg(record).arg(failed);
        Ok(self.link.query(command.arg(now()).arg(self.retention_ms()).arg(id))?)
    }

    fn read_files(&self, id: &str) -> Result<Option<Vec<String>>, JobsError> {
        let files: Option<String> = self.link.query(redis::cmd("HGET").arg(job_key(id)).arg("files"))?;
        files.map(|files| serde_json::from_str(&files).map_err(corrupt)).transpose()
    }
}

impl JobQueue for SharedQueue {
    fn submit(&self, id: &str, owner: &str, job: NewJob, upload: StagedUpload) -> Result<(), JobsError> {
        let files = upload.file_names();
        for position in 0..files.len() {
            let bytes =
                upload.read(position).map_err(|e| JobsError::Internal(format!("cannot read the upload: {e}")))?;
            if let Err(error) = self.blobs.put(id, position, bytes) {
                self.blobs.remove_job(id, position);
                return Err(JobsError::Unavailable(error));
            }
        }
        let time = now().to_string();
        let fields = [
            ("model", job.model.to_string()),
            ("task", serde_json::to_string(job.task).map_err(corrupt)?),
            ("files", serde_json::to_string(files).map_err(corrupt)?),
            ("status", "queued".to_string()),
            ("total", files.len().to_string()),
            ("done", "0".to_string()),
            ("failed", "0".to_string()),
            ("created_at", time.clone()),
            ("updated_at", time),
        ];
        let limit = |most: Option<u64>| most.map_or(-1, |most| most as i64);
        let mut command = eval(SUBMIT_SCRIPT, &[job_key(id), QUEUE.to_string(), in_flight_key(owner)]);
        command.arg(id).arg(files.len()).arg(job.bytes);
        command.arg(limit(job.quota.jobs.map(|jobs| jobs as u64))).arg(limit(job.quota.bytes)).arg(&fields);
        let held: Result<(i64, i64), _> = self.link.query(&command);
        let admitted = match held {
            Ok((-1, _)) => Ok(()),
            Ok((jobs, bytes)) => {
                Err(job.quota.admit((jobs as usize, bytes as u64), job.bytes).err().unwrap_or_else(|| {
                    JobsError::Internal("the job store refused a job that the quota admits".to_string())
                }))
            }
            Err(error) => Err(error.into()),
        };
        if admitted.is_err() {
            self.blobs.remove_job(id, files.len());
        }
        admitted
    }

    fn summary(&self, id: &str) -> Result<Option<JobSummary>, JobsError> {
        let record: HashMap<String, String> = self.link.query(redis::cmd("HGETALL").arg(job_key(id)))?;
        if record.is_empty() {
            return Ok(None);
        }
        let field = |name: &str| record.get(name).map(String::as_str).unwrap_or_default();
        let count = |name: &str| field(name).parse::<usize>().map_err(|_| corrupt(format!("job field {name}")));
        let files: Vec<String> = serde_json::from_str(field("files")).map_err(corrupt)?;
        let errors: HashMap<usize, String> = self.link.query(redis::cmd("HGETALL").arg(errors_key(id)))?;
        let mut errors: Vec<(usize, String)> = errors.into_iter().collect();
        errors.sort();
        Ok(Some(JobSummary {
            id: id.to_string(),
            model: field("model").to_string(),
            status: JobStatus::parse(field("status")),
            total: count("total")?,
            done: count("done")?,
            failed: count("failed")?,
            created_at: to_time(field("created_at")),
            updated_at: to_time(field("updated_at")),
            errors: errors
                .into_iter()
                .map(|(position, message)| (files.get(position).cloned().unwrap_or_default(), message))
                .collect(),
        }))
    }

    fn outcomes(&self, id: &str) -> Result<Option<Vec<(String, ImageOutcome)>>, JobsError> {
        let Some(files) = self.read_files(id)? else { return Ok(None) };
        let outcomes: HashMap<usize, String> = self.link.query(redis::cmd("HGETALL").arg(outcomes_key(id)))?;
        let mut outcomes: Vec<(usize, String)> = outcomes.into_iter().collect();
        outcomes.sort_by_key(|(position, _)| *position);
        let outcomes = outcomes
            .into_iter()
            .map(|(position, outcome)| {
                let file = files.get(position).cloned().unwrap_or_default();
                Ok((file, serde_json::from_str(&outcome).map_err(corrupt)?))
            })
            .collect::<Result<Vec<_>, JobsError>>()?;
        Ok(Some(outcomes))
    }

    fn remove(&self, id: &str) -> Result<Removal, JobsError> {
        let keys = [job_key(id), outcomes_key(id), errors_key(id), in_flight_key(owner_of_scoped(id))];
        let mut command = eval(REMOVE_SCRIPT, &keys);
        command.arg(now()).arg(self.retention_ms()).arg(id);
        let (code, total): (i64, usize) = self.link.query(&command)?;
        if code < 0 {
            return Ok(Removal::NotFound);
        }
        self.blobs.remove_job(id, total);
        Ok(if code == 1 { Removal::Cancelled } else { Removal::Deleted })
    }

    fn accepting(&self) -> Result<(), JobsError> {
        self.link.outage().map_or(Ok(()), |reason| Err(JobsError::Unavailable(reason)))
    }

    fn claim(&self) -> Option<Claim> {
        match self.try_claim() {
            Ok(claim) => {
                if self.reported_outage.swap(false, Ordering::Relaxed) {
                    tracing::info!("job workers reach Redis again");
                }
                claim
            }
            Err(error) => {
                if !self.reported_outage.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%error, "job workers cannot take work from Redis; trying again every second");
                }
                std::thread::sleep(Duration::from_secs(1));
                None
            }
        }
    }

    fn image(&self, claim: &Claim) -> Result<Vec<u8>, String> {
        self.blobs.get(&claim.image.job_id, claim.image.position)
    }

    fn keep_claimed_every(&self) -> Option<Duration> {
        Some(self.claim_timeout / 3)
    }

    /// Resets the entry's idle time (claiming it again for this replica).
    fn keep_claimed(&self, claim: &Claim) {
        let mut command = redis::cmd("XCLAIM");
        command.arg(QUEUE).arg(GROUP).arg(&self.consumer).arg(0).arg(&claim.ticket).arg("JUSTID");
        let _ = self.link.query::<redis::Value>(&command);
    }

    /// Redis may be restarting: the outcome is retried until it is recorded, or until the entry would have been
    /// claimed by another worker anyway (which then processes the image again).
    fn finish(&self, claim: &Claim, outcome: &Result<ImageOutcome, String>) {
        let image = &claim.image;
        let deadline = Instant::now() + self.claim_timeout;
        loop {
            match self.finish_entry(claim, outcome) {
                Ok(0) => return,
                Ok(total) => {
                    self.blobs.remove_job(&image.job_id, total as usize);
                    tracing::info!(job = image.job_id, "job ended");
                    return;
                }
                Err(error) if Instant::now() >= deadline => {
                    tracing::error!(%error, job = image.job_id, "cannot record an image's outcome; it will be processed again");
                    return;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }
}
