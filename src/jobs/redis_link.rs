//! Blocking Redis connections for the shared jobs: their workers are threads, and the HTTP handlers already run job
//! calls on blocking threads. Idle connections are reused; one that failed is dropped and replaced.

use std::sync::{Arc, Mutex};

use redis::{Cmd, FromRedisValue, RedisResult};

use crate::engine::shared::SharedStore;
use crate::redis_target::{BlockingConnection, RedisTarget};

pub struct RedisLink {
    target: RedisTarget,
    idle: Mutex<Vec<BlockingConnection>>,
    /// Whether Redis is known to be unreachable (its pings, every 2 s): callers refuse work at once then.
    shared: Arc<SharedStore>,
}

impl RedisLink {
    pub fn new(url: &str, shared: Arc<SharedStore>) -> Result<Self, String> {
        let target = RedisTarget::open(url).map_err(|e| format!("--redis: {e}"))?;
        Ok(Self { target, idle: Mutex::new(Vec::new()), shared })
    }

    /// `Some(reason)` while Redis is unreachable.
    pub fn outage(&self) -> Option<String> {
        self.shared.outage()
    }

    /// Runs `work` on a connection of the pool.
    pub fn with<T>(&self, work: impl FnOnce(&mut BlockingConnection) -> RedisResult<T>) -> RedisResult<T> {
        let reused = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut connection = match reused {
            Some(connection) => connection,
            None => self.target.connect_blocking()?,
        };
        let result = work(&mut connection);
        if result.is_ok() {
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(connection);
        }
        result
    }

    pub fn query<T: FromRedisValue>(&self, command: &Cmd) -> RedisResult<T> {
        self.with(|connection| command.query(connection))
    }
}
