//! Blocking Redis connections for the shared jobs: their workers are threads, and the HTTP handlers already run job
//! calls on blocking threads. Idle connections are reused; one that failed is dropped and replaced.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::{Client, Cmd, Connection, FromRedisValue, RedisResult};

use crate::engine::shared::SharedStore;

/// How long a connection attempt and a reply may take; a blocking read asks for less than this.
const TIMEOUT: Duration = Duration::from_secs(5);

pub struct RedisLink {
    client: Client,
    idle: Mutex<Vec<Connection>>,
    /// Whether Redis is known to be unreachable (its pings, every 2 s): callers refuse work at once then.
    shared: Arc<SharedStore>,
}

impl RedisLink {
    pub fn new(url: &str, shared: Arc<SharedStore>) -> Result<Self, String> {
        let client = Client::open(url).map_err(|e| format!("--redis: {e}"))?;
        Ok(Self { client, idle: Mutex::new(Vec::new()), shared })
    }

    /// `Some(reason)` while Redis is unreachable.
    pub fn outage(&self) -> Option<String> {
        self.shared.outage()
    }

    /// Runs `work` on a connection of the pool.
    pub fn with<T>(&self, work: impl FnOnce(&mut Connection) -> RedisResult<T>) -> RedisResult<T> {
        let reused = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut connection = match reused {
            Some(connection) => connection,
            None => {
                let connection = self.client.get_connection_with_timeout(TIMEOUT)?;
                connection.set_read_timeout(Some(TIMEOUT))?;
                connection.set_write_timeout(Some(TIMEOUT))?;
                connection
            }
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
