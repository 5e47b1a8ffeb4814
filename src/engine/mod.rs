//! The one place that owns the models and the caches, and schedules work on them.
//!
//! Encoding: uploads are content-addressed; a cached image is answered at once, concurrent uploads of the same
//! image share one encoder run (single flight), and a bounded queue in front of a fixed number of encoder slots
//! sheds load with [`EngineError::Overloaded`] instead of letting requests pile up. Decoding: a fixed number of
//! decoder slots, each request's prompts decoded together. All model work runs on blocking threads, never on the
//! async executor. An encode that was accepted runs to completion and fills the cache even if its caller leaves; a
//! segment-everything run, whose result only its caller wants, stops when its request times out.

mod cache;
pub mod shared;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use ndarray::Array2;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::amg::{self, AmgError, AmgInput, AmgParams, GeneratedMask};
use crate::image_input::{ImageError, ImageLimits, decode_image};
use crate::metrics::Metrics;
use crate::model::{Embedding, EmbeddingDtype, ImageSize, ModelError, Prompt, PromptError, SamModel};
use crate::segment::{PromptResult, SegmentOptions, segment};
use crate::tenant::{IdSecret, Tenant};
use cache::ByteLru;
use shared::SharedStore;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub embedding_cache_bytes: usize,
    /// Store cached embeddings as f16 (half the memory; masks stay within parity).
    pub embeddings_f16: bool,
    pub logits_cache_bytes: usize,
    /// The fraction of each cache that one tenant's entries may hold (`None`: all of it).
    pub tenant_cache_share: Option<f64>,
    /// Images that may wait for a busy encoder; one more is refused with `Overloaded`.
    pub encoder_queue: usize,
    /// Encoder runs in flight at once (over all models).
    pub encoder_slots: usize,
    /// Segment calls in flight at once (over all models).
    pub decoder_slots: usize,
    pub image_limits: ImageLimits,
    /// What image ids are derived with (shared by replicas).
    pub id_secret: IdSecret,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("no model named {0:?} is loaded")]
    ModelNotFound(String),
    #[error("no image {0:?} (never uploaded, deleted or evicted from the cache)")]
    ImageNotFound(String),
    #[error("no logits {0:?} for mask_input (unknown or evicted from the cache)")]
    LogitsNotFound(String),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("prompt {index}: {error}")]
    Prompt { index: usize, error: PromptError },
    #[error("{0}")]
    InvalidParams(String),
    #[error("the encoder is busy and its queue is full ({waiting} images waiting); retry later")]
    Overloaded { waiting: usize },
    #[error("inference failed: {0}")]
    Inference(String),
}

impl From<ModelError> for EngineError {
    fn from(error: ModelError) -> Self {
        match error {
            ModelError::Prompt { index, error } => Self::Prompt { index, error },
            ModelError::Unsupported(message) => Self::InvalidParams(message),
            other => Self::Inference(other.to_string()),
        }
    }
}

impl From<AmgError> for EngineError {
    fn from(error: AmgError) -> Self {
        match error {
            AmgError::Model(error) => error.into(),
            stopped @ AmgError::Stopped => Self::Inference(stopped.to_string()),
            invalid => Self::InvalidParams(invalid.to_string()),
        }
    }
}

/// An encoded image in the cache.
#[derive(Debug)]
pub struct ImageRecord {
    /// The id its tenant knows it by.
    pub image_id: String,
    pub model: String,
    pub width: usize,
    pub height: usize,
    pub embedding: Embedding,
    /// Image decoding + preprocessing + encoder time, in milliseconds.
    pub encode_ms: f64,
}

/// What an upload got: the record, and whether it was already there (no encoder run for this request).
pub struct Upload {
    pub record: Arc<ImageRecord>,
    pub cached: bool,
}

/// The answer to a segment call.
pub struct Segmentation {
    pub record: Arc<ImageRecord>,
    pub results: Vec<PromptResult>,
    pub decode_ms: f64,
}

/// One prompt of a segment call: `mask_input` names logits from an earlier answer (`logits_id`).
pub struct PromptRequest {
    pub prompt: Prompt,
    pub mask_input: Option<String>,
}

/// The answer to an `everything` call.
pub struct Everything {
    pub record: Arc<ImageRecord>,
    pub masks: Vec<GeneratedMask>,
    pub elapsed_ms: f64,
}

/// An upload's encode, awaited by every request for the same image: the record, and whether this replica ran the
/// encoder for it (rather than finding it in Redis).
type SharedEncode = Shared<BoxFuture<'static, Result<(Arc<ImageRecord>, bool), EngineError>>>;

pub struct Engine {
    models: BTreeMap<String, Arc<SamModel>>,
    default_model: String,
    config: EngineConfig,
    metrics: Arc<Metrics>,
    /// Caches and encodes in flight are keyed by [`Tenant::scope`] of the id: each tenant sees only its own.
    embeddings: Mutex<ByteLru<String, Arc<ImageRecord>>>,
    logits: Mutex<ByteLru<String, Arc<Array2<f32>>>>,
    encoding: Mutex<HashMap<String, SharedEncode>>,
    /// Encodes admitted and not finished (waiting or running).
    pending: AtomicUsize,
    encoder_slots: Arc<Semaphore>,
    decoder_slots: Arc<Semaphore>,
    /// Embeddings, encoder locks and logits shared with other replicas (`--redis`).
    shared: Option<Arc<SharedStore>>,
    /// This replica's name in the encoder locks it takes.
    replica: String,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A cache of `bytes` in which each tenant may hold `share` of them.
fn cache<V: Clone>(bytes: usize, share: Option<f64>) -> ByteLru<String, V> {
    ByteLru::new(bytes, share.map_or(usize::MAX, |share| (bytes as f64 * share) as usize))
}

impl Engine {
    /// `models` must not be empty; `default_model` must be one of them.
    pub fn new(models: Vec<SamModel>, default_model: String, config: EngineConfig, metrics: Arc<Metrics>) -> Self {
        let models: BTreeMap<String, Arc<SamModel>> =
            models.into_iter().map(|model| (model.name().to_string(), Arc::new(model))).collect();
        assert!(models.contains_key(&default_model), "the default model is loaded");
        Self {
            embeddings: Mutex::new(cache(config.embedding_cache_bytes, config.tenant_cache_share)),
            logits: Mutex::new(cache(config.logits_cache_bytes, config.tenant_cache_share)),
            encoding: Mutex::new(HashMap::new()),
            pending: AtomicUsize::new(0),
            encoder_slots: Arc::new(Semaphore::new(config.encoder_slots.max(1))),
            decoder_slots: Arc::new(Semaphore::new(config.decoder_slots.max(1))),
            shared: None,
            replica: uuid::Uuid::new_v4().simple().to_string(),
            models,
            default_model,
            config,
            metrics,
        }
    }

    /// Shares embeddings and logits with the other replicas that use `store`.
    pub fn with_shared_store(mut self, store: Arc<SharedStore>) -> Self {
        self.shared = Some(store);
        self
    }

    /// The shared store, when replicas share one.
    pub fn shared_store(&self) -> Option<&SharedStore> {
        self.shared.as_deref()
    }

    pub fn models(&self) -> impl Iterator<Item = &SamModel> {
        self.models.values().map(Arc::as_ref)
    }

    /// Every loaded model by name (for the job workers).
    pub fn model_map(&self) -> BTreeMap<String, Arc<SamModel>> {
        self.models.clone()
    }

    pub fn default_model(&self) -> &str {
        &self.default_model
    }

    /// The float type `model`'s decoder takes the embeddings it encodes from: f16 where the cache keeps them so
    /// (widened), unless a device copy in f32 stays beside the cache entry and the decoder takes that.
    pub fn embedding_dtype(&self, model: &SamModel) -> EmbeddingDtype {
        if self.config.embeddings_f16 && !model.encoder.keeps_embeddings_on_device() {
            EmbeddingDtype::F16
        } else {
            EmbeddingDtype::F32
        }
    }

    /// A loaded model by name, or the default model.
    pub fn model(&self, name: Option<&str>) -> Result<Arc<SamModel>, EngineError> {
        let name = name.unwrap_or(&self.default_model);
        self.models.get(name).cloned().ok_or_else(|| EngineError::ModelNotFound(name.to_string()))
    }

    /// Decodes and encodes an uploaded image once per tenant, or finds it in the tenant's cache. (Tenants do not
    /// share encodes of identical images: a fast `cached` answer would tell one that another uploaded it.)
    pub async fn add_image(
        self: &Arc<Self>,
        tenant: &Tenant,
        model: Option<&str>,
        bytes: Vec<u8>,
    ) -> Result<Upload, EngineError> {
        let model = self.model(model)?;
        let id = self.config.id_secret.image_id(tenant, model.name(), &bytes);
        let key = tenant.scope(&id);
        let (encode, leader) = {
            // Holding `encoding` while looking in the cache: a finished encode is in the cache before it leaves
            // `encoding`, so no upload can miss both and start a second run.
            let mut encoding = lock(&self.encoding);
            if let Some(record) = lock(&self.embeddings).get(&key, &self.metrics.embedding_cache) {
                return Ok(Upload { record, cached: true });
            }
            match encoding.get(&key) {
                Some(running) => (running.clone(), false),
                None => {
                    // Admission happens under the `encoding` lock, so the count cannot race past the bound.
                    let pending = self.pending.load(Ordering::SeqCst);
                    let slots = self.config.encoder_slots.max(1);
                    if pending >= slots + self.config.encoder_queue {
                        self.metrics.load_shed.inc();
                        return Err(EngineError::Overloaded { waiting: pending.saturating_sub(slots) });
                    }
                    self.pending.fetch_add(1, Ordering::SeqCst);
                    self.metrics.encoder_queue_depth.inc();
                    let engine = Arc::clone(self);
                    let run = engine.obtain(model, key.clone(), id, bytes).boxed().shared();
                    encoding.insert(key, run.clone());
                    // Driven on its own, so the work finishes even if every caller goes away.
                    tokio::spawn(run.clone());
                    (run, true)
                }
            }
        };
        let (record, encoded) = encode.await?;
        Ok(Upload { record, cached: !(leader && encoded) })
    }

    /// An admitted upload's embedding (stored under `key`, known as `id`): from the replicas' shared store, else
    /// encoded here (once over all replicas when they share one). Leaves it in the local cache.
    async fn obtain(
        self: Arc<Self>,
        model: Arc<SamModel>,
        key: String,
        id: String,
        bytes: Vec<u8>,
    ) -> Result<(Arc<ImageRecord>, bool), EngineError> {
        let outcome = match self.shared.clone() {
            Some(shared) => self.obtain_shared(&shared, model, &key, id, bytes).await,
            None => self.encode(model, id, bytes).await.map(|record| (record, true)),
        };
        self.pending.fetch_sub(1, Ordering::SeqCst);
        if let Ok((record, _)) = &outcome {
            let size = record.embedding.size_in_bytes();
            lock(&self.embeddings).insert(key.clone(), Arc::clone(record), size, &self.metrics.embedding_cache);
        }
        lock(&self.encoding).remove(&key);
        outcome
    }

    /// Another replica's embedding, or this replica's encode under the image's lock: a replica that loses the race
    /// waits for the winner's result, and takes over when the winner dies (its lock expires unrefreshed).
    async fn obtain_shared(
        &self,
        shared: &SharedStore,
        model: Arc<SamModel>,
        key: &str,
        id: String,
        bytes: Vec<u8>,
    ) -> Result<(Arc<ImageRecord>, bool), EngineError> {
        let waited = Instant::now();
        loop {
            if let Some(record) = self.shared_record(shared, key, &id).await {
                self.metrics.encoder_queue_depth.dec();
                return Ok((record, false));
            }
            match shared.lock_encoding(key, &self.replica).await {
                Some(true) => break,
                // Redis cannot say: encode here rather than wait on it.
                None => return self.encode(model, id, bytes).await.map(|record| (record, true)),
                Some(false) => {
                    tracing::debug!(
                        image = key,
                        seconds = waited.elapsed().as_secs_f64(),
                        "another replica is encoding"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        let encode = self.encode(model, id, bytes);
        tokio::pin!(encode);
        let mut refresh = tokio::time::interval(shared::LOCK_REFRESH);
        refresh.tick().await;
        let outcome = loop {
            tokio::select! {
                outcome = &mut encode => break outcome,
                _ = refresh.tick() => shared.refresh_encoding_lock(key, &self.replica).await,
            }
        };
        if let Ok(record) = &outcome {
            shared.put_embedding(key, &record_file(record)).await;
        }
        shared.unlock_encoding(key, &self.replica).await;
        outcome.map(|record| (record, true))
    }

    /// An image another replica encoded (stored under `key`, known as `id`), from the shared store.
    async fn shared_record(&self, shared: &SharedStore, key: &str, id: &str) -> Option<Arc<ImageRecord>> {
        let file = shared.embedding(key).await?;
        match record_from_file(id, &file) {
            Ok(record) => Some(Arc::new(record)),
            Err(error) => {
                tracing::warn!(image = key, %error, "an unreadable shared embedding: ignored");
                None
            }
        }
    }

    /// The record of a tenant's image: this replica's cache, else the shared store (then cached here too).
    pub async fn find_record(&self, tenant: &Tenant, image_id: &str) -> Result<Arc<ImageRecord>, EngineError> {
        let key = tenant.scope(image_id);
        if let Some(record) = lock(&self.embeddings).get(&key, &self.metrics.embedding_cache) {
            return Ok(record);
        }
        let not_found = || EngineError::ImageNotFound(image_id.to_string());
        let shared = self.shared.as_deref().ok_or_else(not_found)?;
        let record = self.shared_record(shared, &key, image_id).await.ok_or_else(not_found)?;
        let size = record.embedding.size_in_bytes();
        lock(&self.embeddings).insert(key, Arc::clone(&record), size, &self.metrics.embedding_cache);
        Ok(record)
    }

    /// Runs the encoder on this replica.
    async fn encode(&self, model: Arc<SamModel>, id: String, bytes: Vec<u8>) -> Result<Arc<ImageRecord>, EngineError> {
        let slot = Arc::clone(&self.encoder_slots).acquire_owned().await.expect("the semaphore is never closed");
        self.metrics.encoder_queue_depth.dec();
        self.metrics.encoder_in_flight.inc();
        let (limits, metrics, record_id) = (self.config.image_limits, Arc::clone(&self.metrics), id);
        let half = self.config.embeddings_f16;
        let outcome = tokio::task::spawn_blocking(move || -> Result<ImageRecord, EngineError> {
            let started = Instant::now();
            let image = decode_image(&bytes, &limits)?;
            let embedding = model.encoder.encode(&image)?;
            let embedding = if half { embedding.into_f16() } else { embedding };
            let seconds = started.elapsed().as_secs_f64();
            metrics.encoder_runs.with_label_values(&[model.name()]).inc();
            metrics.encoder_seconds.with_label_values(&[model.name()]).observe(seconds);
            Ok(ImageRecord {
                image_id: record_id,
                model: model.name().to_string(),
                width: image.width() as usize,
                height: image.height() as usize,
                embedding,
                encode_ms: seconds * 1e3,
            })
        })
        .await
        .unwrap_or_else(|panic| Err(EngineError::Inference(format!("the encoder thread failed: {panic}"))));
        self.metrics.encoder_in_flight.dec();
        drop(slot);
        outcome.map(Arc::new)
    }

    /// The record of a tenant's image (this replica's cache, without touching its recency, or the shared store).
    pub async fn image(&self, tenant: &Tenant, image_id: &str) -> Option<Arc<ImageRecord>> {
        let local = lock(&self.embeddings).peek(&tenant.scope(image_id));
        match local {
            Some(record) => Some(record),
            None => self.find_record(tenant, image_id).await.ok(),
        }
    }

    /// An image's embedding as a safetensors file for a decoder that runs elsewhere (the page's, in the browser):
    /// the tensors in `dtype`, named by the decoder inputs they feed, and in the metadata what that decoder's caller
    /// needs to move prompts into the model's frame and read masks back (docs/api.md).
    pub async fn embedding_file(
        &self,
        record: Arc<ImageRecord>,
        dtype: EmbeddingDtype,
    ) -> Result<Vec<u8>, EngineError> {
        let model = self.model(Some(&record.model))?;
        let size = |s: ImageSize| format!("[{}, {}]", s.height, s.width);
        let embedding = &record.embedding;
        let metadata = HashMap::from([
            ("model".to_string(), record.model.clone()),
            ("family".to_string(), model.encoder.family().name().to_string()),
            ("image_id".to_string(), record.image_id.clone()),
            ("original_size".to_string(), size(embedding.original)),
            ("resized_size".to_string(), size(embedding.resized)),
            ("input_size".to_string(), model.encoder.input_size().to_string()),
            ("low_res_size".to_string(), size(model.decoder.low_res_size())),
        ]);
        // Megabytes of values to convert and copy: off the async executor.
        tokio::task::spawn_blocking(move || Ok(record.embedding.to_safetensors_as(dtype, metadata)?))
            .await
            .unwrap_or_else(|panic| Err(EngineError::Inference(format!("the embedding file failed: {panic}"))))
    }

    /// Drops this replica's copy of an image (by its storage key) that another replica removed.
    pub fn forget_image(&self, key: &str) {
        lock(&self.embeddings).remove(&key.to_string(), &self.metrics.embedding_cache);
    }

    /// Frees a tenant's image embedding, here, in the shared store and (announced through it) on the other
    /// replicas; false if it was in neither.
    pub async fn remove_image(&self, tenant: &Tenant, image_id: &str) -> bool {
        let key = tenant.scope(image_id);
        let local = lock(&self.embeddings).remove(&key, &self.metrics.embedding_cache);
        let shared = match &self.shared {
            Some(shared) => shared.remove_embedding(&key).await,
            None => false,
        };
        local || shared
    }

    /// Decodes prompts against a cached image; each mask gets a `logits_id` for later refinement, and each result
    /// the `logits_id` of its best mask.
    pub async fn segment(
        &self,
        tenant: &Tenant,
        image_id: &str,
        requests: Vec<PromptRequest>,
        options: SegmentOptions,
    ) -> Result<Segmentation, EngineError> {
        let record = self.find_record(tenant, image_id).await?;
        self.segment_record(tenant, record, requests, options).await
    }

    /// [`Engine::segment`] for a record in hand (an upload just made), whatever the cache has done since.
    pub async fn segment_record(
        &self,
        tenant: &Tenant,
        record: Arc<ImageRecord>,
        requests: Vec<PromptRequest>,
        options: SegmentOptions,
    ) -> Result<Segmentation, EngineError> {
        let mut prompts = Vec::with_capacity(requests.len());
        for PromptRequest { mut prompt, mask_input } in requests {
            if let Some(logits_id) = mask_input {
                prompt.mask_input = Some(self.find_logits(tenant, &logits_id).await?);
            }
            prompts.push(prompt);
        }
        let model = self.model(Some(&record.model))?;
        let slot = self.decoder_slot().await;
        let (metrics, job_record) = (Arc::clone(&self.metrics), Arc::clone(&record));
        let (mut results, decode_ms) = tokio::task::spawn_blocking(move || -> Result<_, EngineError> {
            let _slot = slot;
            let started = Instant::now();
            let results = segment(&model, &job_record.embedding, &prompts, &options)?;
            let seconds = started.elapsed().as_secs_f64();
            metrics.decoder_runs.with_label_values(&[model.name()]).inc();
            metrics.decoder_seconds.with_label_values(&[model.name()]).observe(seconds);
            Ok((results, seconds * 1e3))
        })
        .await
        .unwrap_or_else(|panic| Err(EngineError::Inference(format!("the decoder thread failed: {panic}"))))?;
        let mut shared_logits = Vec::new();
        {
            let mut logits = lock(&self.logits);
            for result in &mut results {
                for mask in &mut result.masks {
                    let logits_id = uuid::Uuid::new_v4().simple().to_string();
                    let key = tenant.scope(&logits_id);
                    let size = mask.low_res.len() * std::mem::size_of::<f32>();
                    if self.shared.is_some() {
                        shared_logits.push((key.clone(), logits_file(&mask.low_res)));
                    }
                    logits.insert(key, Arc::clone(&mask.low_res), size, &self.metrics.logits_cache);
                    mask.logits_id = Some(logits_id);
                }
                result.logits_id = result.masks.first().and_then(|best| best.logits_id.clone());
            }
        }
        if let Some(shared) = &self.shared {
            // Before answering: a refinement may reach another replica as soon as the answer is out.
            shared.put_logits(&shared_logits).await;
        }
        Ok(Segmentation { record, results, decode_ms })
    }

    /// A decoder slot, for the blocking thread to hold: it stays taken until the work ends, even if the request that
    /// started it has gone.
    async fn decoder_slot(&self) -> OwnedSemaphorePermit {
        Arc::clone(&self.decoder_slots).acquire_owned().await.expect("the semaphore is never closed")
    }

    /// A tenant's logits named by a `logits_id`: this replica's cache, else the shared store.
    async fn find_logits(&self, tenant: &Tenant, logits_id: &str) -> Result<Arc<Array2<f32>>, EngineError> {
        let key = tenant.scope(logits_id);
        if let Some(logits) = lock(&self.logits).get(&key, &self.metrics.logits_cache) {
            return Ok(logits);
        }
        let not_found = || EngineError::LogitsNotFound(logits_id.to_string());
        let shared = self.shared.as_deref().ok_or_else(not_found)?;
        let bytes = shared.logits(&key).await.ok_or_else(not_found)?;
        let logits = Arc::new(logits_from_file(&bytes).ok_or_else(not_found)?);
        let size = logits.len() * std::mem::size_of::<f32>();
        lock(&self.logits).insert(key, Arc::clone(&logits), size, &self.metrics.logits_cache);
        Ok(logits)
    }

    /// Automatic mask generation on a tenant's cached image (one crop layer: crops need the pixels, see
    /// [`amg::generate`]).
    pub async fn everything(
        &self,
        tenant: &Tenant,
        image_id: &str,
        params: AmgParams,
    ) -> Result<Everything, EngineError> {
        params.validate()?;
        let record = self.find_record(tenant, image_id).await?;
        let model = self.model(Some(&record.model))?;
        let slot = self.decoder_slot().await;
        // Dropping this future (the request timed out) stops the generator at its next batch.
        let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
        let (job_record, job_stop, metrics) = (Arc::clone(&record), Arc::clone(&stop.0), Arc::clone(&self.metrics));
        let (masks, elapsed_ms) = tokio::task::spawn_blocking(move || -> Result<_, EngineError> {
            let _slot = slot;
            let started = Instant::now();
            let input = AmgInput::Embedding(&job_record.embedding);
            let masks = amg::generate_unless_stopped(&model, input, &params, &job_stop).inspect_err(|error| {
                if matches!(error, AmgError::Stopped) {
                    metrics.everything_stopped.inc();
                }
            })?;
            Ok((masks, started.elapsed().as_secs_f64() * 1e3))
        })
        .await
        .unwrap_or_else(|panic| Err(EngineError::Inference(format!("the generator thread failed: {panic}"))))?;
        Ok(Everything { record, masks, elapsed_ms })
    }
}

/// Sets its flag when dropped: when the future holding it completes or is dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// An image record as the shared store keeps it: the embedding's safetensors file with the record in its metadata.
fn record_file(record: &ImageRecord) -> Vec<u8> {
    let metadata = HashMap::from([
        ("model".to_string(), record.model.clone()),
        ("encode_ms".to_string(), record.encode_ms.to_string()),
    ]);
    record.embedding.to_safetensors(metadata)
}

fn record_from_file(image_id: &str, file: &[u8]) -> Result<ImageRecord, String> {
    let (embedding, metadata) = Embedding::from_safetensors(file).map_err(|e| e.to_string())?;
    let model = metadata.get("model").cloned().ok_or("no model in the metadata")?;
    let encode_ms = metadata.get("encode_ms").and_then(|ms| ms.parse().ok()).unwrap_or(0.0);
    Ok(ImageRecord {
        image_id: image_id.to_string(),
        model,
        width: embedding.original.width,
        height: embedding.original.height,
        embedding,
        encode_ms,
    })
}

/// Low-res logits as the shared store keeps them: height and width (u32 LE), then the f32 values (LE).
fn logits_file(logits: &Array2<f32>) -> Vec<u8> {
    let (height, width) = logits.dim();
    let mut bytes = Vec::with_capacity(8 + logits.len() * 4);
    bytes.extend_from_slice(&(height as u32).to_le_bytes());
    bytes.extend_from_slice(&(width as u32).to_le_bytes());
    bytes.extend(logits.iter().flat_map(|value| value.to_le_bytes()));
    bytes
}

fn logits_from_file(bytes: &[u8]) -> Option<Array2<f32>> {
    let dimension = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize);
    let (height, width) = (dimension(0)?, dimension(4)?);
    let values: Vec<f32> =
        bytes.get(8..)?.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
    Array2::from_shape_vec((height, width), values).ok()
}
