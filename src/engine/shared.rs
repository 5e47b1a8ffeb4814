//! What replicas share through Redis (`--redis`, docs/scaling.md): image embeddings as a second cache level behind
//! each replica's own, the encoder lock that makes replicas receiving the same new image encode it once, and the
//! logits that `mask_input` refinements name.
//!
//! Redis is an optimization of a service that works without it: when it cannot be reached, every call here answers
//! "nothing shared" at once (`/readyz` says so, and a ping every 2 seconds notices its return), and the replica goes
//! on from its own caches.

use std::sync::Mutex;
use std::time::Duration;

use redis::{Cmd, FromRedisValue};

use crate::metrics::Metrics;
use crate::redis_target::{AsyncConnection, RedisTarget};
use crate::tenant::IdSecret;

/// How long an encoder lock lives without being refreshed: a replica that dies holding it is replaced after this.
pub const LOCK_TTL: Duration = Duration::from_secs(15);
/// How often the holder refreshes its lock while encoding.
pub const LOCK_REFRESH: Duration = Duration::from_secs(5);

/// Releases a lock only if this replica still holds it (it may have expired and been taken over).
const UNLOCK_SCRIPT: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";
/// Extends a lock only if this replica still holds it.
const REFRESH_SCRIPT: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0";

pub struct SharedStore {
    target: RedisTarget,
    connection: AsyncConnection,
    /// Time to live of shared embeddings and logits (Redis' own eviction policy may drop them sooner).
    ttl: Duration,
    /// The last failure, while Redis is unreachable.
    down: Mutex<Option<String>>,
    metrics: std::sync::Arc<Metrics>,
}

// Keys of images and logits are [`crate::tenant::Tenant::scope`]s: `TENANT.ID`, or the id alone without API keys.
fn embedding_key(key: &str) -> String {
    format!("samserve:embedding:{key}")
}

fn lock_key(key: &str) -> String {
    format!("samserve:encoding:{key}")
}

/// Where a replica announces the images it removed, so that the others drop their local copies.
const REMOVED_CHANNEL: &str = "samserve:removed";

fn logits_key(key: &str) -> String {
    format!("samserve:logits:{key}")
}

/// The server secret image ids are derived with, the same for every replica of this Redis.
const ID_SECRET_KEY: &str = "samserve:id-secret";

impl SharedStore {
    /// Connects and checks that Redis answers; the error is one line for the operator.
    pub async fn connect(url: &str, ttl: Duration, metrics: std::sync::Arc<Metrics>) -> Result<Self, String> {
        let shown = redacted(url);
        let target = RedisTarget::open(url).map_err(|e| format!("--redis {shown}: {e}"))?;
        let mut connection = target.connect().await.map_err(|e| format!("cannot reach Redis at {shown}: {e}"))?;
        let _: String =
            redis::cmd("PING").query_async(&mut connection).await.map_err(|e| format!("Redis at {shown}: {e}"))?;
        Ok(Self { target, connection, ttl, down: Mutex::new(None), metrics })
    }

    /// The secret every replica derives image ids with: the first replica to start stores one (without expiry, so
    /// `volatile-lru` never evicts it), the others read it. Should Redis lose it, ids change with it, as the shared
    /// embeddings they named are gone too.
    pub async fn id_secret(&self) -> Result<IdSecret, String> {
        let mut connection = self.connection.clone();
        let drawn = IdSecret::random().to_hex();
        let _: Option<String> = redis::cmd("SET")
            .arg(ID_SECRET_KEY)
            .arg(&drawn)
            .arg("NX")
            .query_async(&mut connection)
            .await
            .map_err(|e| format!("storing the id secret in Redis: {e}"))?;
        let stored: String = redis::cmd("GET")
            .arg(ID_SECRET_KEY)
            .query_async(&mut connection)
            .await
            .map_err(|e| format!("reading the id secret from Redis: {e}"))?;
        IdSecret::from_hex(&stored).ok_or_else(|| format!("{ID_SECRET_KEY} in Redis is not 64 hex digits"))
    }

    /// The Redis this store talks to, for other connections to the same one.
    pub fn target(&self) -> &RedisTarget {
        &self.target
    }

    /// `None` while Redis answers, else the last failure.
    pub fn outage(&self) -> Option<String> {
        self.down.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs a command; a failure is logged once per outage and answers `None`.
    async fn run<T: FromRedisValue>(&self, operation: &str, command: &Cmd) -> Option<T> {
        if self.skipping(operation) {
            return None;
        }
        let mut connection = self.connection.clone();
        self.record(operation, command.query_async::<T>(&mut connection).await)
    }

    /// During an outage only the watcher's pings go to Redis: requests do not wait on its timeouts one by one.
    fn skipping(&self, operation: &str) -> bool {
        operation != "ping" && self.outage().is_some()
    }

    /// Counts an operation's outcome and tracks whether Redis is down.
    fn record<T>(&self, operation: &str, outcome: redis::RedisResult<T>) -> Option<T> {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        let label = if outcome.is_ok() { "ok" } else { "error" };
        self.metrics.redis_operations.with_label_values(&[operation, label]).inc();
        match outcome {
            Ok(value) => {
                if down.take().is_some() {
                    tracing::info!("Redis answers again");
                }
                Some(value)
            }
            Err(error) => {
                if down.is_none() {
                    tracing::warn!(%error, "Redis unreachable: serving from this replica's caches until it returns");
                }
                *down = Some(error.to_string());
                None
            }
        }
    }

    /// Asks Redis whether it is there (for `/readyz` while no request has asked anything).
    pub async fn ping(&self) {
        let _: Option<String> = self.run("ping", &redis::cmd("PING")).await;
    }

    /// A shared embedding file ([`crate::model::Embedding::to_safetensors`]), if some replica stored it.
    pub async fn embedding(&self, key: &str) -> Option<Vec<u8>> {
        self.run::<Option<Vec<u8>>>("get_embedding", redis::cmd("GET").arg(embedding_key(key))).await.flatten()
    }

    pub async fn put_embedding(&self, key: &str, file: &[u8]) {
        let mut command = redis::cmd("SET");
        command.arg(embedding_key(key)).arg(file).arg("PX").arg(self.ttl.as_millis() as u64);
        let _: Option<()> = self.run("put_embedding", &command).await;
    }

    /// Removes the shared embedding and tells every replica to drop its copy; whether Redis had one.
    pub async fn remove_embedding(&self, key: &str) -> bool {
        let removed = self.run::<u64>("remove_embedding", redis::cmd("DEL").arg(embedding_key(key))).await;
        let _: Option<u64> = self.run("publish_removal", redis::cmd("PUBLISH").arg(REMOVED_CHANNEL).arg(key)).await;
        removed.unwrap_or(0) > 0
    }

    /// Calls `removed` with the storage key of every image another replica removes, for the life of the process (resubscribing
    /// after an outage; removals announced during one are missed, and those copies age out of the LRU).
    pub async fn follow_removals(&self, removed: impl Fn(&str)) {
        loop {
            if let Ok(mut pubsub) = self.target.pubsub_client().get_async_pubsub().await
                && pubsub.subscribe(REMOVED_CHANNEL).await.is_ok()
            {
                let mut messages = pubsub.on_message();
                while let Some(message) = futures_util::StreamExt::next(&mut messages).await {
                    if let Ok(key) = message.get_payload::<String>() {
                        removed(&key);
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Takes the encoder lock of an image for `owner`: `Some(true)` when taken, `Some(false)` when another replica
    /// holds it, `None` when Redis cannot say.
    pub async fn lock_encoding(&self, key: &str, owner: &str) -> Option<bool> {
        let mut command = redis::cmd("SET");
        command.arg(lock_key(key)).arg(owner).arg("NX").arg("PX").arg(LOCK_TTL.as_millis() as u64);
        self.run::<Option<String>>("lock", &command).await.map(|answer| answer.is_some())
    }

    pub async fn refresh_encoding_lock(&self, key: &str, owner: &str) {
        let mut command = redis::cmd("EVAL");
        command.arg(REFRESH_SCRIPT).arg(1).arg(lock_key(key)).arg(owner).arg(LOCK_TTL.as_millis() as u64);
        let _: Option<i64> = self.run("refresh_lock", &command).await;
    }

    pub async fn unlock_encoding(&self, key: &str, owner: &str) {
        let mut command = redis::cmd("EVAL");
        command.arg(UNLOCK_SCRIPT).arg(1).arg(lock_key(key)).arg(owner);
        let _: Option<i64> = self.run("unlock", &command).await;
    }

    /// Low-res logits ([h, w] f32, little-endian) a replica stored for a `logits_id` (stored under its tenant's key).
    pub async fn logits(&self, key: &str) -> Option<Vec<u8>> {
        self.run::<Option<Vec<u8>>>("get_logits", redis::cmd("GET").arg(logits_key(key))).await.flatten()
    }

    /// Stores several logits at once (sent together on the one multiplexed connection; a cluster spreads them).
    pub async fn put_logits(&self, entries: &[(String, Vec<u8>)]) {
        if entries.is_empty() || self.skipping("put_logits") {
            return;
        }
        let writes = entries.iter().map(|(key, bytes)| {
            let mut command = redis::cmd("SET");
            command.arg(logits_key(key)).arg(bytes).arg("PX").arg(self.ttl.as_millis() as u64);
            let mut connection = self.connection.clone();
            async move { command.query_async::<()>(&mut connection).await }
        });
        let outcome = futures_util::future::join_all(writes).await.into_iter().collect::<redis::RedisResult<()>>();
        let _: Option<()> = self.record("put_logits", outcome);
    }
}

/// The URL without its password, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_string(),
    }
}
