//! The Redis that `--redis` names: one server (`redis://...` or `rediss://...`), or a Redis Cluster given as several
//! of its nodes' URLs separated by commas. The rest of the service talks to either through the same connection
//! types; every key it writes is a single-slot operation (the job keys share the hash tag `{jobs}`).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::{Client, Cmd, Pipeline, RedisFuture, RedisResult, Value};

pub enum RedisTarget {
    Single(Client),
    Cluster {
        client: Box<ClusterClient>,
        /// Where removals are subscribed to: a PUBLISH on any node of a cluster reaches the subscribers of every node.
        first_node: Client,
    },
}

/// How long a connection attempt and a reply may take.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Blocking connections wait on blocking reads (a job worker's XREADGROUP ... BLOCK 1000) longer than that.
const BLOCKING_TIMEOUT: Duration = Duration::from_secs(5);

impl RedisTarget {
    pub fn open(url: &str) -> RedisResult<Self> {
        let nodes: Vec<&str> = url.split(',').map(str::trim).filter(|node| !node.is_empty()).collect();
        if let [single] = nodes[..] {
            return Ok(Self::Single(Client::open(single)?));
        }
        let client = ClusterClientBuilder::new(nodes.clone())
            .connection_timeout(TIMEOUT)
            .response_timeout(BLOCKING_TIMEOUT)
            .retries(1)
            .build()?;
        Ok(Self::Cluster { client: Box::new(client), first_node: Client::open(nodes[0])? })
    }

    /// A connection for async callers, reconnecting by itself after a failure.
    pub async fn connect(&self) -> RedisResult<AsyncConnection> {
        match self {
            Self::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(TIMEOUT))
                    .set_response_timeout(Some(TIMEOUT))
                    .set_number_of_retries(1);
                Ok(AsyncConnection::Single(client.get_connection_manager_with_config(config).await?))
            }
            Self::Cluster { client, .. } => Ok(AsyncConnection::Cluster(client.get_async_connection().await?)),
        }
    }

    /// A connection for blocking callers (job workers).
    pub fn connect_blocking(&self) -> RedisResult<BlockingConnection> {
        match self {
            Self::Single(client) => {
                let connection = client.get_connection_with_timeout(TIMEOUT)?;
                connection.set_read_timeout(Some(BLOCKING_TIMEOUT))?;
                connection.set_write_timeout(Some(BLOCKING_TIMEOUT))?;
                Ok(BlockingConnection::Single(connection))
            }
            Self::Cluster { client, .. } => {
                let connection = client.get_connection()?;
                connection.set_read_timeout(Some(BLOCKING_TIMEOUT))?;
                connection.set_write_timeout(Some(BLOCKING_TIMEOUT))?;
                Ok(BlockingConnection::Cluster(Box::new(connection)))
            }
        }
    }

    /// The client that subscribes to announcements.
    pub fn pubsub_client(&self) -> &Client {
        match self {
            Self::Single(client) => client,
            Self::Cluster { first_node, .. } => first_node,
        }
    }
}

#[derive(Clone)]
pub enum AsyncConnection {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for AsyncConnection {
    fn req_packed_command<'a>(&'a mut self, command: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(command),
            Self::Cluster(connection) => connection.req_packed_command(command),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

pub enum BlockingConnection {
    Single(redis::Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl redis::ConnectionLike for BlockingConnection {
    fn req_packed_command(&mut self, command: &[u8]) -> RedisResult<Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(command),
            Self::Cluster(connection) => connection.req_packed_command(command),
        }
    }

    fn req_packed_commands(&mut self, commands: &[u8], offset: usize, count: usize) -> RedisResult<Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(commands, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(commands, offset, count),
        }
    }

    /// A cluster routes each command by its key: pass the parsed command on rather than its bytes.
    fn req_command(&mut self, command: &Cmd) -> RedisResult<Value> {
        match self {
            Self::Single(connection) => connection.req_command(command),
            Self::Cluster(connection) => connection.req_command(command),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }

    fn supports_pipelining(&self) -> bool {
        match self {
            Self::Single(connection) => connection.supports_pipelining(),
            Self::Cluster(connection) => connection.supports_pipelining(),
        }
    }

    fn check_connection(&mut self) -> bool {
        match self {
            Self::Single(connection) => connection.check_connection(),
            Self::Cluster(connection) => connection.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            Self::Single(connection) => connection.is_open(),
            Self::Cluster(connection) => connection.is_open(),
        }
    }
}
