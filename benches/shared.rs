//! What a click pays when its image's embedding comes from Redis (the first touch of that image on a replica)
//! instead of the replica's own cache (docs/scaling.md): one GET of the embedding file and its decoding, for the
//! embedding sizes of the published model families, as F32 and as F16 (`--cache-f16`). A local hit costs an LRU
//! lookup (well under a microsecond); the decoder run that follows is the same either way.
//!
//! `cargo bench --bench shared -- --redis redis://127.0.0.1:6379`: a table of p50 and p99 milliseconds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use samserve::engine::shared::SharedStore;
use samserve::metrics::Metrics;
use samserve::model::Embedding;

/// An embedding tensor: the decoder input it feeds, and its shape.
type TensorSpec = (&'static str, &'static [usize]);

/// The embedding tensors of each family at its published size.
const FAMILIES: [(&str, &[TensorSpec]); 3] = [
    ("SAM ViT-B/L/H, MobileSAM (1 x [256, 64, 64])", &[("image_embeddings", &[1, 256, 64, 64])]),
    (
        "transformers.js SAM, SlimSAM (2 x [256, 64, 64])",
        &[("image_embeddings", &[1, 256, 64, 64]), ("image_positional_embeddings", &[1, 256, 64, 64])],
    ),
    (
        "SAM 2 / 2.1 (3 tensors, 16 MiB in F32)",
        &[
            ("image_embed", &[1, 256, 64, 64]),
            ("high_res_feats_0", &[1, 32, 256, 256]),
            ("high_res_feats_1", &[1, 64, 128, 128]),
        ],
    ),
];

fn synthetic(tensors: &[TensorSpec]) -> Embedding {
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, shape)| {
            let count: usize = shape.iter().product();
            let bytes = (0..count).flat_map(|i| ((i % 977) as f32 * 0.01 - 4.0).to_le_bytes()).collect();
            (name.to_string(), shape.to_vec(), bytes)
        })
        .collect();
    let views = data.iter().map(|(name, shape, bytes)| {
        (name.as_str(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes).unwrap())
    });
    let metadata = HashMap::from([
        ("original_size".to_string(), "1500,1000".to_string()),
        ("resized_size".to_string(), "1024,683".to_string()),
    ]);
    let file = safetensors::serialize(views, Some(metadata)).unwrap();
    Embedding::from_safetensors(&file).unwrap().0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args.iter().position(|a| a == "--redis").and_then(|i| args.get(i + 1)).expect("--redis URL");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let store = SharedStore::connect(url, Duration::from_secs(600), Arc::new(Metrics::new())).await.unwrap();
        println!("| embedding | stored as | MiB | first touch on a replica: GET + decode, p50 | p99 |");
        println!("| --- | --- | --- | --- | --- |");
        for (family, tensors) in FAMILIES {
            let f32_embedding = synthetic(tensors);
            for (stored, embedding) in [("F32", f32_embedding.clone()), ("F16", f32_embedding.into_f16())] {
                let file = embedding.to_safetensors(HashMap::new());
                store.put_embedding("bench", &file).await;
                let mut samples = Vec::new();
                for _ in 0..40 {
                    let started = Instant::now();
                    let bytes = store.embedding("bench").await.expect("stored just before");
                    let decoded = Embedding::from_safetensors(&bytes).unwrap();
                    samples.push(started.elapsed().as_secs_f64() * 1e3);
                    assert_eq!(decoded.0.size_in_bytes(), embedding.size_in_bytes());
                }
                samples.sort_by(f64::total_cmp);
                let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
                println!(
                    "| {family} | {stored} | {:.1} | {:.2} | {:.2} |",
                    file.len() as f64 / 1048576.0,
                    at(0.5),
                    at(0.99)
                );
            }
        }
        store.remove_embedding("bench").await;
    });
}
