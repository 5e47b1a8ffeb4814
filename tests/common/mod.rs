//! Shared helpers for the integration tests: fixture paths and one ONNX Runtime per test binary.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;
use std::sync::OnceLock;

pub mod server;

use samserve::model::{Device, Runtime, RuntimeOptions, SamModel, SessionCounts};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures")
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

pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Runtime::load(RuntimeOptions { device: Device::Cpu, intra_threads: Some(1), ..RuntimeOptions::default() })
            .unwrap_or_else(|e| panic!("{e}"))
    })
}

pub fn load_model(name: &str) -> SamModel {
    SamModel::load(&fixtures().join("models").join(name), runtime(), SessionCounts::default())
        .unwrap_or_else(|e| panic!("{e}"))
}

pub fn read_json(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}
