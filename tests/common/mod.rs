//! Shared helpers for the integration tests: fixture paths and one ONNX Runtime per test binary.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;
use std::sync::OnceLock;

pub mod cluster;
pub mod jobs;
pub mod mock_hub;
// The unit tests' own helpers (configuration, mutations), shared rather than copied.
#[path = "../../src/proptest_support.rs"]
pub mod proptest_support;
pub mod server;

use samserve::model::{Device, Runtime, RuntimeOptions, SamModel, SessionCounts};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures")
}

/// The Rust files under `path` (or `path` itself when it is a file), recursively.
pub fn rust_files(path: &std::path::Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).unwrap() {
        let entry = entry.unwrap().path();
        if entry.is_dir() || entry.extension().is_some_and(|e| e == "rs") {
            files.extend(rust_files(&entry));
        }
    }
    files
}

/// A new empty folder under the system's temporary folder, unique to this process and call.
pub fn temp_dir(label: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let folder = std::env::temp_dir().join(format!("samserve-test-{label}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(&folder).expect("creating a temporary folder");
    folder
}

/// The device the tests run the models on: `SAMSERVE_TEST_DEVICE` (`cpu` unless set; tools/gpu/check.sh runs the
/// parity tests with `cuda`), with the library `SAMSERVE_TEST_ORT_LIB` when set (else the one `cargo build`
/// fetched). Test-only names, so a user's own SAMSERVE_DEVICE or SAMSERVE_ORT_LIB never changes what tests check.
pub fn test_device() -> (String, Option<String>) {
    let device = std::env::var("SAMSERVE_TEST_DEVICE").unwrap_or_else(|_| "cpu".to_string());
    (device, std::env::var("SAMSERVE_TEST_ORT_LIB").ok())
}

/// [`test_device`] as samserve's command-line options.
pub fn runtime_args() -> Vec<String> {
    let (device, library) = test_device();
    let library = library.into_iter().flat_map(|path| ["--ort-lib".to_string(), path]);
    ["--device".to_string(), device].into_iter().chain(library).collect()
}

pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let (device, library) = test_device();
        let device: Device = device.parse().unwrap_or_else(|e| panic!("SAMSERVE_TEST_DEVICE: {e}"));
        let options = RuntimeOptions {
            library: library.map(PathBuf::from),
            device,
            intra_threads: Some(1),
            ..RuntimeOptions::default()
        };
        Runtime::load(options).unwrap_or_else(|e| panic!("{e}"))
    })
}

pub fn load_model(name: &str) -> SamModel {
    SamModel::load(&fixtures().join("models").join(name), runtime(), SessionCounts::default())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The highest-scored of the official masks of a parity case (`{"masks": [{"score", "size", "counts"}, ...]}`).
pub fn best_official_mask(case: &serde_json::Value) -> samserve::mask::BinaryMask {
    let score = |mask: &serde_json::Value| mask["score"].as_f64().expect("a score");
    let masks = case["masks"].as_array().expect("masks");
    let best = masks.iter().max_by(|a, b| score(a).total_cmp(&score(b))).expect("at least one mask");
    let size = [best["size"][0].as_u64().unwrap() as usize, best["size"][1].as_u64().unwrap() as usize];
    let counts = best["counts"].as_str().expect("RLE counts").to_string();
    samserve::mask::rle::decode(&samserve::mask::rle::CocoRle { size, counts }).expect("a valid RLE")
}

pub fn read_json(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A PNG of `width` x `height` whose pixels depend on `seed`, so that each seed is a new image.
pub fn synthetic_png(seed: u32, width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        let v = x.wrapping_mul(31).wrapping_add(y.wrapping_mul(17)).wrapping_add(seed.wrapping_mul(97));
        image::Rgb([(v % 251) as u8, ((v / 3) % 253) as u8, (seed % 256) as u8])
    });
    let mut bytes = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image).write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    bytes.into_inner()
}
