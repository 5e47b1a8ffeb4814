//! Blocking Redis connections for the shared jobs: their workers are threads, and the HTTP handlers already run job
//! calls on blocking threads. Idle connections are reused; one that failed is dropped and replaced.

use std::sync::{Arc, Mutex};

use redis::{Cmd, FromRedisValue, RedisResult};

use crate::engine::shared::SharedStore;
use crate::redis_target::BlockingConnection;

pub struct RedisLink {
    idle: Mutex<Vec<BlockingConnection>>,
    /// The Redis the replica shares embeddings through, and whether it is known to be unreachable (its pings,
    /// every 2 s): callers refuse work at once then.
    shared: Arc<SharedStore>,
}

impl RedisLink {
    pub fn new(shared: Arc<SharedStore>) -> Self {
        Self { idle: Mutex::new(Vec::new()), shared }
    }

    /// `Some(reason)` while Redis is unreachable.
    pub fn outage(&self) -> Option<String> {
        self.shared.outage()
    }

    /// Runs `command` on a connection of the pool.
    pub fn query<T: FromRedisValue>(&self, command: &Cmd) -> RedisResult<T> {
        let reused = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut connection = match reused {
            Some(connection) => connection,
            None => self.shared.target().connect_blocking()?,
        };
        let result = command.query(&mut connection);
        if result.is_ok() {
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(connection);
        }
        result
    }
}
