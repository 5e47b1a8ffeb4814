//! Prometheus metrics of the service, in one registry rendered at `/metrics`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Latency buckets from 1 ms to 60 s.
const SECONDS_BUCKETS: [f64; 16] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0];

/// The counters of one cache.
pub struct CacheMetrics {
    pub hits: IntCounter,
    pub misses: IntCounter,
    pub evictions: IntCounter,
    pub bytes: IntGauge,
    pub entries: IntGauge,
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub http_in_flight: IntGauge,
    pub encoder_runs: IntCounterVec,
    pub encoder_seconds: HistogramVec,
    pub decoder_runs: IntCounterVec,
    pub decoder_seconds: HistogramVec,
    pub encoder_queue_depth: IntGauge,
    pub encoder_in_flight: IntGauge,
    pub load_shed: IntCounter,
    /// Segment-everything runs given up because their request timed out.
    pub everything_stopped: IntCounter,
    pub embedding_cache: CacheMetrics,
    pub logits_cache: CacheMetrics,
    /// Redis operations of a replica (`--redis`) by operation and outcome (`ok`, `error`).
    pub redis_operations: IntCounterVec,
    /// Job images this process finished, by outcome (`succeeded`, `failed`).
    pub job_images: IntCounterVec,
    /// Requests refused by a rate limit, by kind (`uploads`, `prompts`).
    pub rate_limited: IntCounterVec,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry.register(Box::new(metric.clone())).expect("metric names are unique");
    metric
}

fn cache_metrics(registry: &Registry, cache: &str, what: &str) -> CacheMetrics {
    let counter = |name: &str, help: &str| {
        register(
            registry,
            IntCounter::new(format!("samserve_{cache}_cache_{name}_total"), format!("{what}: {help}"))
                .expect("valid name"),
        )
    };
    let gauge = |name: &str, help: &str| {
        register(
            registry,
            IntGauge::new(format!("samserve_{cache}_cache_{name}"), format!("{what}: {help}")).expect("valid name"),
        )
    };
    CacheMetrics {
        hits: counter("hits", "lookups that found an entry"),
        misses: counter("misses", "lookups that found none"),
        evictions: counter("evictions", "entries dropped to stay within the byte budget"),
        bytes: gauge("bytes", "bytes held"),
        entries: gauge("entries", "entries held"),
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let opts = HistogramOpts::new(name, help).buckets(SECONDS_BUCKETS.to_vec());
            register(&registry, HistogramVec::new(opts, labels).expect("valid histogram"))
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(&registry, IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter"))
        };
        let gauge = |name: &str, help: &str| register(&registry, IntGauge::new(name, help).expect("valid gauge"));
        Self {
            http_requests: counter(
                "samserve_http_requests_total",
                "HTTP requests answered",
                &["route", "method", "status"],
            ),
            http_duration: histogram(
                "samserve_http_request_duration_seconds",
                "HTTP request latency",
                &["route", "method"],
            ),
            http_in_flight: gauge("samserve_http_requests_in_flight", "HTTP requests being answered"),
            encoder_runs: counter("samserve_encoder_runs_total", "image encoder runs", &["model"]),
            encoder_seconds: histogram(
                "samserve_encoder_run_seconds",
                "image decode + preprocess + encoder run time",
                &["model"],
            ),
            decoder_runs: counter(
                "samserve_decoder_runs_total",
                "segment calls (one or more decoder runs)",
                &["model"],
            ),
            decoder_seconds: histogram(
                "samserve_decoder_run_seconds",
                "decoder + mask post-processing time per call",
                &["model"],
            ),
            encoder_queue_depth: gauge("samserve_encoder_queue_depth", "images waiting for an encoder slot"),
            encoder_in_flight: gauge("samserve_encoder_in_flight", "encoder runs in progress"),
            load_shed: register(
                &registry,
                IntCounter::new(
                    "samserve_load_shed_total",
                    "requests refused with 503 because the encoder queue was full",
                )
                .expect("valid counter"),
            ),
            everything_stopped: register(
                &registry,
                IntCounter::new(
                    "samserve_everything_stopped_total",
                    "segment-everything runs stopped at their next batch because their request timed out",
                )
                .expect("valid counter"),
            ),
            embedding_cache: cache_metrics(&registry, "embedding", "image embedding cache"),
            logits_cache: cache_metrics(&registry, "logits", "low-res logits cache (mask_input)"),
            redis_operations: counter(
                "samserve_redis_operations_total",
                "Redis operations (--redis) by operation and outcome",
                &["operation", "outcome"],
            ),
            job_images: counter(
                "samserve_job_images_total",
                "batch job images this process finished, by outcome",
                &["outcome"],
            ),
            rate_limited: counter(
                "samserve_rate_limited_total",
                "requests refused by a rate limit (429), by kind",
                &["kind"],
            ),
            registry,
        }
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
