//! The ONNX Runtime environment: finding `libonnxruntime` at run time and choosing execution providers.

use std::path::{Path, PathBuf};

use ort::environment::Environment;
use ort::ep::{self, ExecutionProviderDispatch};
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;

/// Where `cargo build` put the library it fetched from PyPI (see build.rs).
const BUNDLED_LIBRARY: &str = env!("SAMSERVE_BUNDLED_ORT");

/// Which hardware runs the models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// CUDA when the library and a GPU allow it, otherwise the CPU.
    Auto,
    Cpu,
    /// CUDA only: fail instead of falling back to the CPU.
    Cuda,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "ONNX Runtime library not found at {0}: run `cargo build` on a machine with python3 and pip (it fetches \
         onnxruntime from PyPI), or point --ort-lib / SAMSERVE_ORT_LIB at libonnxruntime (1.31 or newer)"
    )]
    LibraryMissing(PathBuf),
    #[error("cannot use ONNX Runtime: {0}; point --ort-lib / SAMSERVE_ORT_LIB at libonnxruntime 1.31 or newer")]
    LibraryUnusable(String),
    #[error("ONNX Runtime: {0}")]
    Ort(#[from] ort::Error),
}

/// A loaded ONNX Runtime with the execution providers every session gets.
pub struct Runtime {
    environment: Environment,
    providers: Vec<ExecutionProviderDispatch>,
    intra_threads: Option<usize>,
}

impl Runtime {
    /// Loads the library: `library` (from `--ort-lib`) or else the one `cargo build` fetched.
    pub fn load(library: Option<&Path>, device: Device, intra_threads: Option<usize>) -> Result<Self, RuntimeError> {
        let path = library.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(BUNDLED_LIBRARY));
        if !path.exists() {
            return Err(RuntimeError::LibraryMissing(path));
        }
        let builder = ort::init_from(&path).map_err(|e| RuntimeError::LibraryUnusable(e.to_string()))?;
        let environment = builder.with_name("samserve").build()?;
        let providers = match device {
            Device::Cpu => vec![],
            Device::Auto => vec![ep::CUDA::default().build()],
            Device::Cuda => vec![ep::CUDA::default().build().error_on_failure()],
        };
        Ok(Self { environment, providers, intra_threads })
    }

    /// Opens an ONNX model as a session with this runtime's providers (the CPU always last, as the fallback).
    pub fn session(&self, model: OnnxSource) -> Result<Session, ort::Error> {
        let mut builder = Session::builder(&self.environment)?
            .with_optimization_level(GraphOptimizationLevel::Level3)?
            .with_execution_providers(&self.providers)?;
        if let Some(threads) = self.intra_threads {
            builder = builder.with_intra_threads(threads)?;
        }
        match model {
            OnnxSource::File(path) => builder.commit_from_file(path),
            OnnxSource::Memory(bytes) => builder.commit_from_memory(bytes),
        }
    }
}

/// Where the bytes of an ONNX model come from.
#[derive(Debug, Clone, Copy)]
pub enum OnnxSource<'a> {
    File(&'a Path),
    /// Embedded in the binary (the built-in model).
    Memory(&'a [u8]),
}
