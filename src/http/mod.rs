//! The HTTP service (docs/api.md): actix-web, one module per route group, one error type.

mod auth;
mod body;
mod downloads;
mod edge;
mod error;
mod everything;
mod fallback;
mod images;
mod jobs;
mod ops;
mod page;
mod rate;
mod segment;
mod spec;

use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{Condition, Next, from_fn};
use actix_web::web::{self, Data};
use actix_web::{App, HttpServer};
use anyhow::{Context, bail};
use utoipa::OpenApi;

pub use error::ApiError;

use auth::ApiKeySpec;
use edge::BodyTimeoutSpec;
use everything::EverythingRequestSpec;
use rate::RateLimitSpec;
use spec::RetryAfterSpec;

use crate::api_keys::ApiKeys;
use crate::engine::shared::SharedStore;
use crate::engine::{Engine, EngineConfig};
use crate::hub::{self, Hub, ModelSpec};
use crate::image_input::ImageLimits;
use crate::jobs::{BlobStore, JobQuota, Jobs, JobsConfig, RedisLink};
use crate::metrics::Metrics;
use crate::model::manifest::is_model_folder;
use crate::model::{BUILTIN_MODEL, Runtime, SamModel, SessionCounts};
use crate::rate_limit::{Limiter, RateLimit};
use crate::tenant::IdSecret;

/// Options of `samserve serve`; each is also an environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeOptions {
    /// Address to listen on.
    #[arg(long, env = "SAMSERVE_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 picks a free one; the address is printed).
    #[arg(long, env = "SAMSERVE_PORT", default_value_t = 8080)]
    pub port: u16,
    /// A model to serve; repeatable or a comma list: a catalogue name (`samserve models list`),
    /// hf:OWNER/REPO[@REVISION][/SUBFOLDER], a model folder, or samserve-s (the built-in demo model). Hub models are
    /// downloaded once into the Hugging Face cache. Without it: the built-in model, and every model folder in --models.
    #[arg(long = "model", alias = "model-dir", env = "SAMSERVE_MODEL", value_delimiter = ',')]
    pub model_specs: Vec<String>,
    /// A directory of model folders, loaded beside the built-in model when no --model is given (if it exists).
    #[arg(long, env = "SAMSERVE_MODELS", default_value = "models")]
    pub models: PathBuf,
    /// The model used when a request names none (default: the built-in model if loaded, else the first by name).
    #[arg(long, env = "SAMSERVE_DEFAULT_MODEL")]
    pub default_model: Option<String>,
    /// Memory for cached image embeddings, in MiB (least recently used are evicted).
    #[arg(long, env = "SAMSERVE_CACHE_MB", default_value_t = 1024)]
    pub cache_mb: usize,
    /// Keep cached embeddings as f16: twice as many fit in --cache-mb (masks stay within the parity bounds).
    #[arg(long, env = "SAMSERVE_CACHE_F16")]
    pub cache_f16: bool,
    /// Memory for cached low-res logits (mask_input refinement), in MiB.
    #[arg(long, env = "SAMSERVE_LOGITS_CACHE_MB", default_value_t = 128)]
    pub logits_cache_mb: usize,
    /// Each tenant's share of --cache-mb, in MiB (and the same fraction of --logits-cache-mb): a tenant past it
    /// evicts its own least recently used images, never another's. Default: no share.
    #[arg(long, env = "SAMSERVE_TENANT_CACHE_MB")]
    pub tenant_cache_mb: Option<usize>,
    /// Encoder runs in flight at once (one ONNX Runtime encoder session per model each).
    #[arg(long, env = "SAMSERVE_ENCODER_SESSIONS", default_value_t = 1, value_parser = at_least_one)]
    pub encoder_sessions: usize,
    /// Uploads that may wait for the encoder; more are refused at once with 503 and Retry-After.
    #[arg(long, env = "SAMSERVE_ENCODER_QUEUE", default_value_t = 32)]
    pub encoder_queue: usize,
    /// Decoder sessions per model: segment requests decoded at once.
    #[arg(long, env = "SAMSERVE_DECODER_SESSIONS", default_value_t = 2, value_parser = at_least_one)]
    pub decoder_sessions: usize,
    /// Largest request body (an image upload), in MiB.
    #[arg(long, env = "SAMSERVE_MAX_BODY_MB", default_value_t = 50)]
    pub max_body_mb: usize,
    /// Largest JSON body of a segment request, in KiB.
    #[arg(long, env = "SAMSERVE_MAX_JSON_KB", default_value_t = 1024)]
    pub max_json_kb: usize,
    /// Largest decoded image, in pixels (checked from the header, before decoding).
    #[arg(long, env = "SAMSERVE_MAX_PIXELS", default_value_t = 50_000_000)]
    pub max_pixels: u64,
    /// Most prompts in one segment request.
    #[arg(long, env = "SAMSERVE_MAX_PROMPTS", default_value_t = 256)]
    pub max_prompts: usize,
    /// Time limit of one request, in seconds (then 503 with Retry-After; accepted encodes still finish and are cached).
    #[arg(long, env = "SAMSERVE_REQUEST_TIMEOUT_S", default_value_t = 60.0)]
    pub request_timeout_s: f64,
    /// HTTP worker threads, 1 to 512 (default: one per CPU core). Model work runs on its own threads.
    #[arg(long, env = "SAMSERVE_WORKERS", value_parser = http_workers())]
    pub workers: Option<usize>,
    /// Where batch jobs keep their state (SQLite) and uploaded images.
    #[arg(long, env = "SAMSERVE_DATA_DIR", default_value = "samserve-data")]
    pub data_dir: PathBuf,
    /// Job images processed at once.
    #[arg(long, env = "SAMSERVE_JOB_WORKERS", default_value_t = 1, value_parser = at_least_one)]
    pub job_workers: usize,
    /// New jobs are refused (507) while the disk under --data-dir has less free space than this, in MiB.
    #[arg(long, env = "SAMSERVE_MIN_FREE_DISK_MB", default_value_t = 512)]
    pub min_free_disk_mb: u64,
    /// Jobs that each tenant (everyone, without API keys) may have queued or running at once; one more is refused
    /// with 429 `too_many_jobs`. Default: unlimited.
    #[arg(long, env = "SAMSERVE_TENANT_MAX_JOBS", value_parser = at_least_one)]
    pub tenant_max_jobs: Option<usize>,
    /// MiB of images that each tenant's queued and running jobs may hold together; a job that would pass it is
    /// refused with 507 `storage_quota_exceeded`. Default: unlimited.
    #[arg(long, env = "SAMSERVE_TENANT_MAX_JOB_MB")]
    pub tenant_max_job_mb: Option<u64>,
    /// Hours that an ended job and its results are kept.
    #[arg(long, env = "SAMSERVE_JOB_RETENTION_HOURS", default_value_t = 168.0)]
    pub job_retention_hours: f64,
    /// Largest job upload (all its images), in MiB.
    #[arg(long, env = "SAMSERVE_MAX_JOB_MB", default_value_t = 2048)]
    pub max_job_mb: usize,
    /// Most images in one job.
    #[arg(long, env = "SAMSERVE_MAX_JOB_IMAGES", default_value_t = 10_000)]
    pub max_job_images: usize,
    /// Redis shared by replicas of this service (`redis://[[USER]:PASSWORD@]HOST:PORT[/DB]`, `rediss://` for
    /// TLS, or a Redis Cluster as several node URLs separated by commas): image embeddings, encoder locks,
    /// refinement logits and batch jobs are shared, so any replica answers any request (docs/scaling.md).
    #[arg(long, env = "SAMSERVE_REDIS_URL")]
    pub redis: Option<String>,
    /// Seconds that shared embeddings and logits live in Redis (Redis' own eviction may drop them sooner).
    #[arg(long = "redis-ttl-s", env = "SAMSERVE_REDIS_TTL_S", default_value_t = 86_400)]
    pub redis_ttl_s: u64,
    /// Where shared jobs (`--redis`) keep their images until the job ends, readable by every replica:
    /// `file:///FOLDER` (a folder every replica mounts) or `s3://BUCKET[/PREFIX]` (S3-compatible, configured by the
    /// `AWS_*` variables: AWS_ENDPOINT, AWS_ACCESS_KEY_ID, ...). Default: in Redis itself.
    #[arg(long, env = "SAMSERVE_BLOB_STORE", requires = "redis")]
    pub blob_store: Option<String>,
    /// Seconds after which a job image whose replica stopped answering (killed, cut off) is taken by another.
    #[arg(long = "job-claim-timeout-s", env = "SAMSERVE_JOB_CLAIM_TIMEOUT_S", default_value_t = 60.0)]
    pub job_claim_timeout_s: f64,
    /// API keys, one `TENANT:KEY` per line (`#` comments; read again on SIGHUP): every route but the page, health
    /// checks, the spec and /metrics then needs `Authorization: Bearer KEY`, and each tenant sees only its own
    /// images, refinements and jobs (docs/security.md).
    #[arg(long = "api-keys", env = "SAMSERVE_API_KEYS_FILE", value_name = "FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// API keys given inline instead of a file: `TENANT:KEY` pairs separated by commas.
    #[arg(
        long = "api-key-list",
        env = "SAMSERVE_API_KEYS",
        value_name = "PAIRS",
        hide_env_values = true,
        conflicts_with = "api_keys_file"
    )]
    pub api_key_list: Option<String>,
    /// With API keys, /metrics needs a key too (any tenant's).
    #[arg(long, env = "SAMSERVE_METRICS_REQUIRE_KEY")]
    pub metrics_require_key: bool,
    /// Uploads (images, one-shot segments, jobs) per second for each tenant, or each client address without API
    /// keys; more get 429 with Retry-After. Fractions allowed (0.5: one every 2 s). Default: unlimited.
    #[arg(long, env = "SAMSERVE_RATE_UPLOADS", value_parser = positive_rate)]
    pub rate_uploads: Option<f64>,
    /// Uploads at once after a quiet while (with --rate-uploads).
    #[arg(long, env = "SAMSERVE_RATE_UPLOADS_BURST", default_value_t = 10, value_parser = at_least_one)]
    pub rate_uploads_burst: usize,
    /// Prompt requests (segment or everything on an uploaded image) per second for each tenant or client address.
    /// Default: unlimited.
    #[arg(long, env = "SAMSERVE_RATE_PROMPTS", value_parser = positive_rate)]
    pub rate_prompts: Option<f64>,
    /// Prompt requests at once after a quiet while (with --rate-prompts).
    #[arg(long, env = "SAMSERVE_RATE_PROMPTS_BURST", default_value_t = 50, value_parser = at_least_one)]
    pub rate_prompts_burst: usize,
    /// Seconds a client has to send a request's headers (idle connections are closed after this too); then 408.
    #[arg(long = "client-timeout-s", env = "SAMSERVE_CLIENT_TIMEOUT_S", default_value_t = 5.0, value_parser = positive_seconds)]
    pub client_timeout_s: f64,
    /// Seconds a client has to send a request's body once its headers are in; then 408 and the connection closes.
    #[arg(long = "body-timeout-s", env = "SAMSERVE_BODY_TIMEOUT_S", default_value_t = 60.0, value_parser = positive_seconds)]
    pub body_timeout_s: f64,
    /// Open connections at most, all HTTP workers together; more wait for the operating system's accept queue.
    #[arg(long, env = "SAMSERVE_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = at_least_one)]
    pub max_connections: usize,
    /// Web pages on these origins (`https://app.example.com`, or `*` for any) may call the API from the browser;
    /// repeat the flag or separate with commas. Default: none (same origin only).
    #[arg(long = "cors-origin", env = "SAMSERVE_CORS_ORIGINS", value_delimiter = ',', value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,
    /// Serve HTTPS with this certificate chain (PEM), for deployments without a TLS-terminating proxy.
    #[arg(long, env = "SAMSERVE_TLS_CERT", value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "SAMSERVE_TLS_KEY", value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Seconds that in-flight requests get to finish after SIGTERM (Ctrl-C stops at once).
    #[arg(long, env = "SAMSERVE_SHUTDOWN_TIMEOUT_S", default_value_t = 30)]
    pub shutdown_timeout_s: u64,
}

/// actix-web takes 1 to 512 HTTP workers (and panics outside).
fn http_workers() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..=512)
}

/// A count that must be positive: no sessions or workers at all would leave requests waiting forever.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(count) => Ok(count),
        Err(error) => Err(error.to_string()),
    }
}

/// A duration in seconds: finite and above 0.
fn positive_seconds(text: &str) -> Result<f64, String> {
    positive_number(text, "seconds")
}

/// A rate: a finite number of requests per second above 0.
fn positive_rate(text: &str) -> Result<f64, String> {
    positive_number(text, "requests per second")
}

fn positive_number(text: &str, unit: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(number) if number.is_finite() && number > 0.0 => Ok(number),
        Ok(_) => Err(format!("must be a number of {unit} above 0")),
        Err(error) => Err(error.to_string()),
    }
}

/// Limits the handlers apply.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub max_body_bytes: usize,
    pub max_json_bytes: usize,
    pub max_prompts: usize,
    pub request_timeout: Duration,
    pub body_timeout: Duration,
    pub max_job_bytes: usize,
    pub max_job_images: usize,
}

/// What every handler gets: the engine once the models are loaded, the metrics, the limits and the API keys.
pub struct AppState {
    engine: OnceLock<Arc<Engine>>,
    /// Set with the engine: jobs start once the models are loaded.
    jobs: OnceLock<Arc<Jobs>>,
    metrics: Arc<Metrics>,
    limits: HttpLimits,
    /// `None`: no keys, one anonymous tenant.
    keys: Option<Arc<ApiKeys>>,
    metrics_require_key: bool,
    rates: rate::RateLimits,
}

impl AppState {
    /// The engine, or 503 `not_ready` while the models load.
    fn engine(&self) -> Result<Arc<Engine>, ApiError> {
        self.engine.get().cloned().ok_or_else(ApiError::not_ready)
    }

    /// The batch jobs, or 503 `not_ready` while the models load.
    fn jobs(&self) -> Result<Arc<Jobs>, ApiError> {
        self.jobs.get().cloned().ok_or_else(ApiError::not_ready)
    }

    /// Runs `work` under the per-request time limit.
    async fn within_time_limit<T>(&self, work: impl Future<Output = T>) -> Result<T, ApiError> {
        tokio::time::timeout(self.limits.request_timeout, work)
            .await
            .map_err(|_| ApiError::timeout(self.limits.request_timeout.as_secs_f64()))
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "samserve", description = "Promptable image segmentation (Segment Anything) over HTTP"),
    paths(
        images::upload,
        images::metadata,
        images::remove,
        downloads::embedding,
        segment::segment_image,
        segment::segment_once,
        everything::everything,
        jobs::submit,
        jobs::status,
        jobs::results,
        jobs::remove,
        ops::models,
        downloads::decoder_file,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        ops::openapi
    ),
    // (In this order: the last two declare what the others' responses and bodies imply.)
    modifiers(&ApiKeySpec, &RateLimitSpec, &EverythingRequestSpec, &BodyTimeoutSpec, &RetryAfterSpec)
)]
pub struct ApiDoc;

/// What to serve: the --model list, or the built-in model and the model folders (a model.toml or ONNX files) in
/// --models (which need not exist) other than the built-in model's own source folder.
fn model_specs(options: &ServeOptions) -> anyhow::Result<Vec<ModelSpec>> {
    if !options.model_specs.is_empty() {
        return options.model_specs.iter().map(|text| ModelSpec::parse(text)).collect();
    }
    let mut folders: Vec<PathBuf> = match std::fs::read_dir(&options.models) {
        Ok(listing) => listing
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| is_model_folder(path) && !path.ends_with(BUILTIN_MODEL))
            .collect(),
        Err(_) => vec![],
    };
    folders.sort();
    Ok(std::iter::once(ModelSpec::Builtin).chain(folders.into_iter().map(ModelSpec::Folder)).collect())
}

fn load_engine(
    runtime: &Runtime,
    options: &ServeOptions,
    specs: Vec<ModelSpec>,
    id_secret: IdSecret,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Engine> {
    let sessions = SessionCounts { encoder: options.encoder_sessions, decoder: options.decoder_sessions };
    let hub = Hub::from_env();
    let mut models: Vec<SamModel> = Vec::new();
    for spec in specs {
        let started = Instant::now();
        let model = hub::materialize(&spec, &hub, false)?.load(runtime, sessions)?;
        if models.iter().any(|m| m.name() == model.name()) {
            bail!("{} is a model named {:?}, a name already loaded", spec.served_name(), model.name());
        }
        let (encoder, decoder) = model.placement;
        tracing::info!(model = model.name(), %encoder, %decoder, seconds = started.elapsed().as_secs_f64(), "model loaded");
        if spec == ModelSpec::Builtin {
            tracing::warn!("{}", hub::builtin_model_notice());
        }
        models.push(model);
    }
    let default_model = match &options.default_model {
        Some(name) if models.iter().any(|m| m.name() == name) => name.clone(),
        Some(name) => bail!("--default-model {name:?} is not among the loaded models"),
        None if models.iter().any(|m| m.name() == BUILTIN_MODEL) => BUILTIN_MODEL.to_string(),
        None => models.iter().map(|m| m.name().to_string()).min().context("no model loaded")?,
    };
    let config = EngineConfig {
        embedding_cache_bytes: options.cache_mb << 20,
        embeddings_f16: options.cache_f16,
        logits_cache_bytes: options.logits_cache_mb << 20,
        tenant_cache_share: options.tenant_cache_mb.map(|mb| (mb as f64 / options.cache_mb.max(1) as f64).min(1.0)),
        encoder_queue: options.encoder_queue,
        encoder_slots: options.encoder_sessions,
        decoder_slots: options.decoder_sessions * models.len(),
        image_limits: ImageLimits { max_bytes: options.max_body_mb << 20, max_pixels: options.max_pixels },
        id_secret,
    };
    Ok(Engine::new(models, default_model, config, metrics))
}

/// Asks Redis every 2 seconds, so that `/readyz` tells an outage (and its end) even while no request does.
async fn watch_redis(store: Arc<SharedStore>) {
    let mut every = tokio::time::interval(Duration::from_secs(2));
    loop {
        every.tick().await;
        store.ping().await;
    }
}

/// The API keys of the options, if any; a keys file is read again on SIGHUP.
fn load_api_keys(options: &ServeOptions) -> anyhow::Result<Option<Arc<ApiKeys>>> {
    let keys = match (&options.api_keys_file, &options.api_key_list) {
        (Some(path), _) => ApiKeys::from_file(path.clone()),
        (None, Some(list)) => ApiKeys::from_list(list),
        (None, None) => return Ok(None),
    };
    let keys = Arc::new(keys.map_err(anyhow::Error::msg)?);
    #[cfg(unix)]
    if options.api_keys_file.is_some() {
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let reloaded = Arc::clone(&keys);
        actix_web::rt::spawn(async move {
            while hangups.recv().await.is_some() {
                match reloaded.reload() {
                    Ok(count) => tracing::info!(keys = count, "API keys reloaded"),
                    Err(error) => tracing::error!(%error, "API keys not reloaded: the previous keys stay in force"),
                }
            }
        });
    }
    Ok(Some(keys))
}

/// Counts, times and logs every request by its route pattern (not its raw path, to keep label sets small).
async fn observe(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let metrics = Arc::clone(&request.app_data::<Data<AppState>>().expect("state is registered").metrics);
    let route = request.match_pattern().unwrap_or_else(|| "unmatched".to_string());
    let method = request.method().to_string();
    metrics.http_in_flight.inc();
    // Decrements even if the client goes away and the future is dropped.
    struct InFlight(Arc<Metrics>);
    impl Drop for InFlight {
        fn drop(&mut self) {
            self.0.http_in_flight.dec();
        }
    }
    let _in_flight = InFlight(Arc::clone(&metrics));
    let started = Instant::now();
    let response = next.call(request).await?;
    let seconds = started.elapsed().as_secs_f64();
    let status = response.status().as_u16().to_string();
    metrics.http_requests.with_label_values(&[route.as_str(), method.as_str(), status.as_str()]).inc();
    metrics.http_duration.with_label_values(&[route.as_str(), method.as_str()]).observe(seconds);
    tracing::info!(%method, %route, %status, ms = seconds * 1e3, "request");
    Ok(response)
}

fn routes(config: &mut web::ServiceConfig) {
    config
        .service(images::upload)
        .service(images::metadata)
        .service(images::remove)
        .service(downloads::embedding)
        .service(segment::segment_image)
        .service(segment::segment_once)
        .service(everything::everything)
        .service(jobs::submit)
        .service(jobs::status)
        .service(jobs::results)
        .service(jobs::remove)
        .service(ops::models)
        .service(downloads::decoder_file)
        .service(ops::healthz)
        .service(ops::readyz)
        .service(ops::metrics)
        .service(ops::openapi)
        .service(page::index)
        .service(page::favicon)
        .service(page::asset)
        .service(page::onnxruntime_web)
        .default_service(web::to(fallback::unrouted));
}

/// Errors of actix's own extractors (path, query) in the API's format.
fn extractor_errors(config: &mut web::ServiceConfig) {
    config
        .app_data(web::QueryConfig::default().error_handler(|e, _| ApiError::invalid_request(e.to_string()).into()))
        .app_data(web::PathConfig::default().error_handler(|e, _| ApiError::invalid_request(e.to_string()).into()));
}

/// The batch jobs: this process's own, or shared by the replicas of one Redis.
fn open_jobs(options: &ServeOptions, shared: Option<&Arc<SharedStore>>) -> anyhow::Result<Jobs> {
    let config = JobsConfig {
        data_dir: options.data_dir.clone(),
        workers: options.job_workers,
        retention: Duration::from_secs_f64(options.job_retention_hours.max(0.0) * 3600.0),
        image_limits: ImageLimits { max_bytes: options.max_body_mb << 20, max_pixels: options.max_pixels },
        min_free_disk_bytes: options.min_free_disk_mb << 20,
        quota: JobQuota { jobs: options.tenant_max_jobs, bytes: options.tenant_max_job_mb.map(|mb| mb << 20) },
    };
    let Some(shared) = shared else {
        return Jobs::open(config)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("opening the job store in {}", options.data_dir.display()));
    };
    let link = Arc::new(RedisLink::new(Arc::clone(shared)));
    let blobs = match &options.blob_store {
        Some(url) => BlobStore::open(url).map_err(anyhow::Error::msg)?,
        None => BlobStore::Redis(Arc::clone(&link)),
    };
    let claim_timeout = Duration::from_secs_f64(options.job_claim_timeout_s.max(0.1));
    Jobs::open_shared(config, link, blobs, claim_timeout).map_err(anyhow::Error::msg)
}

/// Serves until SIGTERM or Ctrl-C. Listens first (healthz answers, readyz says 503), then loads the models.
pub async fn serve(runtime: Runtime, options: ServeOptions) -> anyhow::Result<()> {
    // A mistyped model name fails here, before anything listens.
    let specs = model_specs(&options)?;
    let metrics = Arc::new(Metrics::new());
    // Redis unreachable at start is a configuration error: stop with one line rather than run unshared.
    let shared = match &options.redis {
        Some(url) => {
            let ttl = Duration::from_secs(options.redis_ttl_s.max(1));
            let store = SharedStore::connect(url, ttl, Arc::clone(&metrics)).await.map_err(anyhow::Error::msg)?;
            let store = Arc::new(store);
            actix_web::rt::spawn(watch_redis(Arc::clone(&store)));
            Some(store)
        }
        None => None,
    };
    let id_secret = match &shared {
        Some(store) => store.id_secret().await.map_err(anyhow::Error::msg)?,
        None => IdSecret::random(),
    };
    let jobs = Arc::new(open_jobs(&options, shared.as_ref())?);
    let state = Data::new(AppState {
        engine: OnceLock::new(),
        jobs: OnceLock::new(),
        keys: load_api_keys(&options)?,
        metrics_require_key: options.metrics_require_key,
        rates: rate::RateLimits {
            uploads: options
                .rate_uploads
                .map(|rate| Limiter::new(RateLimit { rate, burst: options.rate_uploads_burst as f64 })),
            prompts: options
                .rate_prompts
                .map(|rate| Limiter::new(RateLimit { rate, burst: options.rate_prompts_burst as f64 })),
        },
        metrics: Arc::clone(&metrics),
        limits: HttpLimits {
            max_body_bytes: options.max_body_mb << 20,
            max_json_bytes: options.max_json_kb << 10,
            max_prompts: options.max_prompts,
            request_timeout: Duration::from_secs_f64(options.request_timeout_s.max(0.001)),
            body_timeout: Duration::from_secs_f64(options.body_timeout_s),
            max_job_bytes: options.max_job_mb << 20,
            max_job_images: options.max_job_images,
        },
    });
    let listener = TcpListener::bind((options.host.as_str(), options.port))
        .with_context(|| format!("cannot listen on {}:{}", options.host, options.port))?;
    let address = listener.local_addr()?;
    let app_state = state.clone();
    let cors_origins = options.cors_origins.clone();
    let workers = options.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .configure(extractor_errors)
            .configure(routes)
            .wrap(from_fn(edge::limit_body_time))
            .wrap(from_fn(rate::limit_rates))
            .wrap(from_fn(auth::authenticate))
            // Outside the key check: a browser's preflight carries no key.
            .wrap(Condition::new(!cors_origins.is_empty(), edge::cors(&cors_origins)))
            .wrap(from_fn(observe))
    })
    .workers(workers)
    .max_connections(options.max_connections.div_ceil(workers))
    .client_request_timeout(Duration::from_secs_f64(options.client_timeout_s))
    .shutdown_timeout(options.shutdown_timeout_s);
    let (server, scheme) = match (&options.tls_cert, &options.tls_key) {
        (Some(cert), Some(key)) => (server.listen_rustls_0_23(listener, edge::tls_config(cert, key)?)?, "https"),
        _ => (server.listen(listener)?, "http"),
    };
    let server = server.run();
    println!("samserve listening on {scheme}://{address}");
    tracing::info!(%address, "listening");

    let handle = server.handle();
    let failure: Arc<Mutex<Option<anyhow::Error>>> = Arc::default();
    let loader_failure = Arc::clone(&failure);
    let job_metrics = Arc::clone(&metrics);
    let jobs_to_stop = Arc::clone(&jobs);
    actix_web::rt::spawn(async move {
        let loaded =
            tokio::task::spawn_blocking(move || load_engine(&runtime, &options, specs, id_secret, metrics)).await;
        let loaded = loaded.map(|engine| {
            engine.map(|engine| match shared {
                Some(store) => engine.with_shared_store(store),
                None => engine,
            })
        });
        match loaded.map_err(anyhow::Error::from).and_then(|engine| engine) {
            Ok(engine) => {
                jobs.start(engine.model_map(), Arc::clone(&job_metrics));
                let engine = Arc::new(engine);
                if engine.shared_store().is_some() {
                    let follower = Arc::clone(&engine);
                    actix_web::rt::spawn(async move {
                        let store = follower.shared_store().expect("checked above");
                        store.follow_removals(|key| follower.forget_image(key)).await;
                    });
                }
                let _ = state.engine.set(engine);
                let _ = state.jobs.set(jobs);
                tracing::info!("ready");
            }
            Err(error) => {
                *loader_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
                handle.stop(false).await;
            }
        }
    });
    let served = server.await;
    jobs_to_stop.stop();
    served?;
    match failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test;

    /// Before the models are loaded: alive, not ready, and model routes answer 503 with Retry-After.
    #[actix_web::test]
    async fn not_ready_until_the_models_are_loaded() {
        let state = Data::new(AppState {
            engine: OnceLock::new(),
            jobs: OnceLock::new(),
            keys: None,
            metrics_require_key: false,
            rates: rate::RateLimits::default(),
            metrics: Arc::new(Metrics::new()),
            limits: HttpLimits {
                max_body_bytes: 1 << 20,
                max_json_bytes: 1 << 10,
                max_prompts: 4,
                request_timeout: Duration::from_secs(1),
                body_timeout: Duration::from_secs(1),
                max_job_bytes: 1 << 20,
                max_job_images: 4,
            },
        });
        let app = test::init_service(
            App::new().app_data(state).configure(routes).wrap(from_fn(auth::authenticate)).wrap(from_fn(observe)),
        )
        .await;
        let status = |path: &'static str| {
            let request = test::TestRequest::get().uri(path).to_request();
            test::call_service(&app, request)
        };
        assert_eq!(status("/healthz").await.status(), 200);
        let readyz = status("/readyz").await;
        assert_eq!(readyz.status(), 503);
        assert_eq!(readyz.headers().get("retry-after").unwrap(), "1");
        let body: serde_json::Value = test::read_body_json(readyz).await;
        assert_eq!(body["error"]["code"], "not_ready");
        assert_eq!(status("/v1/models").await.status(), 503);
        let upload =
            test::TestRequest::post().uri("/v1/images").insert_header(("content-type", "image/png")).to_request();
        assert_eq!(test::call_service(&app, upload).await.status(), 503);
    }
}
