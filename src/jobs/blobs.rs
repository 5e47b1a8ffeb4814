//! Where shared jobs keep their images until the job ends, so that any replica can process any of them:
//! `--blob-store file:///shared/dir` (a folder every replica mounts), `--blob-store s3://bucket/prefix` (any
//! S3-compatible store, configured by the usual `AWS_*` variables), or, without `--blob-store`, Redis itself.

use std::sync::Arc;

use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::redis_link::RedisLink;

pub enum BlobStore {
    Objects {
        store: Arc<dyn ObjectStore>,
        prefix: ObjectPath,
        /// object_store is async; job workers and handlers call it from blocking threads.
        runtime: tokio::runtime::Runtime,
    },
    Redis(Arc<RedisLink>),
}

impl BlobStore {
    /// Opens the store a `--blob-store` URL names; the error is one line for the operator.
    pub fn open(url: &str) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("blob-store")
            .enable_all()
            .build()
            .map_err(|e| format!("--blob-store: {e}"))?;
        let (store, prefix): (Arc<dyn ObjectStore>, &str) = if let Some(folder) = url.strip_prefix("file://") {
            std::fs::create_dir_all(folder).map_err(|e| format!("--blob-store {url}: cannot create {folder}: {e}"))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(folder)
                .map_err(|e| format!("--blob-store {url}: {e}"))?;
            (Arc::new(store), "")
        } else if let Some(location) = url.strip_prefix("s3://") {
            let prefix = location.split_once('/').map_or("", |(_, prefix)| prefix);
            let store = object_store::aws::AmazonS3Builder::from_env()
                .with_url(url)
                .build()
                .map_err(|e| format!("--blob-store {url}: {e}"))?;
            (Arc::new(store), prefix)
        } else {
            return Err(format!("--blob-store {url}: expected file:///FOLDER or s3://BUCKET[/PREFIX]"));
        };
        Ok(Self::Objects { store, prefix: ObjectPath::from(prefix), runtime })
    }

    fn object(prefix: &ObjectPath, job_id: &str, position: usize) -> ObjectPath {
        prefix.clone().join("jobs").join(job_id).join(position.to_string())
    }

    fn redis_key(job_id: &str, position: usize) -> String {
        format!("samserve:{{jobs}}:image:{job_id}:{position}")
    }

    pub fn put(&self, job_id: &str, position: usize, bytes: Vec<u8>) -> Result<(), String> {
        match self {
            Self::Objects { store, prefix, runtime } => runtime
                .block_on(store.put(&Self::object(prefix, job_id, position), PutPayload::from(bytes)))
                .map(drop)
                .map_err(|e| format!("cannot store the image: {e}")),
            Self::Redis(link) => link
                .query::<()>(redis::cmd("SET").arg(Self::redis_key(job_id, position)).arg(bytes))
                .map_err(|e| format!("cannot store the image: {e}")),
        }
    }

    pub fn get(&self, job_id: &str, position: usize) -> Result<Vec<u8>, String> {
        let gone = |e: &dyn std::fmt::Display| format!("the uploaded file is gone: {e}");
        match self {
            Self::Objects { store, prefix, runtime } => runtime.block_on(async {
                let found = store.get(&Self::object(prefix, job_id, position)).await.map_err(|e| gone(&e))?;
                found.bytes().await.map(|bytes| bytes.to_vec()).map_err(|e| gone(&e))
            }),
            Self::Redis(link) => link
                .query::<Option<Vec<u8>>>(redis::cmd("GET").arg(Self::redis_key(job_id, position)))
                .map_err(|e| gone(&e))?
                .ok_or_else(|| gone(&"not in Redis")),
        }
    }

    /// Removes a job's images (of which there were `count`); failures are logged, not returned: the job's outcome
    /// does not depend on them.
    pub fn remove_job(&self, job_id: &str, count: usize) {
        let outcome = match self {
            Self::Objects { store, prefix, runtime } => runtime.block_on(async {
                let locations: Vec<_> = (0..count).map(|position| Ok(Self::object(prefix, job_id, position))).collect();
                let mut deleted = store.delete_stream(futures_util::stream::iter(locations).boxed());
                while let Some(result) = deleted.next().await {
                    match result {
                        Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(error) => return Err(error.to_string()),
                    }
                }
                Ok(())
            }),
            Self::Redis(_) if count == 0 => Ok(()),
            Self::Redis(link) => {
                let mut command = redis::cmd("DEL");
                for position in 0..count {
                    command.arg(Self::redis_key(job_id, position));
                }
                link.query::<()>(&command).map_err(|e| e.to_string())
            }
        };
        if let Err(error) = outcome {
            tracing::warn!(job = job_id, %error, "cannot remove a job's images from the blob store");
        }
    }
}
