//! The ONNX Runtime environment: finding `libonnxruntime` at run time and putting sessions on a device.
//!
//! `cuda` means CUDA or an error that says why not (a CPU build of the library, missing NVIDIA libraries, no GPU);
//! `auto` means CUDA when it works, else the CPU, saying which and why. The NVIDIA libraries of a pip-installed
//! `onnxruntime-gpu[cuda,cudnn]` live in `site-packages/nvidia/*/lib`, beside the library's own folder; they are
//! loaded from there first, so no LD_LIBRARY_PATH is needed.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider};
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;

/// Where `cargo build` put the library it fetched from PyPI (see build.rs).
const BUNDLED_LIBRARY: &str = env!("SAMSERVE_BUNDLED_ORT");

/// Which hardware should run a network: `auto`, `cpu`, `cuda` or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// CUDA (GPU 0) when the library and a GPU allow it, otherwise the CPU.
    Auto,
    Cpu,
    /// CUDA on this GPU only: fail instead of falling back to the CPU.
    Cuda(i32),
}

impl FromStr for Device {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|index| index.parse::<i32>().ok())
                .filter(|&index| index >= 0)
                .map(Self::Cuda)
                .ok_or_else(|| format!("`{text}` is not a device: use auto, cpu, cuda or cuda:N")),
        }
    }
}

/// Where a session really runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Cpu,
    Cuda(i32),
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(index) => write!(f, "cuda:{index}"),
        }
    }
}

/// Which network a session is for (each can have its own device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    Encoder,
    Decoder,
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
    #[error(
        "--device cuda: the ONNX Runtime library {0} has no CUDA execution provider (it is a CPU build); install \
         the GPU build (`pip install onnxruntime-gpu[cuda,cudnn]`) and point --ort-lib at its \
         onnxruntime/capi/libonnxruntime.so.*, or use --device auto or cpu"
    )]
    NoCudaProvider(PathBuf),
    #[error("ONNX Runtime: {0}")]
    Ort(#[from] ort::Error),
}

/// How to load ONNX Runtime and open sessions.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// The library (`--ort-lib`); the one `cargo build` fetched when `None`.
    pub library: Option<PathBuf>,
    pub device: Device,
    /// Where the decoder runs; `device` when `None`.
    pub decoder_device: Option<Device>,
    /// Threads per session (ONNX Runtime's choice when `None`).
    pub intra_threads: Option<usize>,
    /// Let idle ONNX Runtime threads spin. Off by default: the encoder and decoder sessions, the HTTP workers and
    /// the mask post-processing share the cores, and spinning threads take CPU from each other (an encoder run
    /// took twice as long next to another busy process).
    pub spinning: bool,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self { library: None, device: Device::Auto, decoder_device: None, intra_threads: None, spinning: false }
    }
}

/// A loaded ONNX Runtime and the devices its sessions go to.
pub struct Runtime {
    environment: Environment,
    encoder_device: Device,
    decoder_device: Device,
    /// Why CUDA is out of the question for `auto` (a CPU build of the library), if it is.
    cuda_missing: Option<String>,
    intra_threads: Option<usize>,
    spinning: bool,
}

impl Runtime {
    /// Loads the library and checks that the devices asked for can be had.
    pub fn load(options: RuntimeOptions) -> Result<Self, RuntimeError> {
        let RuntimeOptions { library, device, decoder_device, intra_threads, spinning } = options;
        let path = library.unwrap_or_else(|| PathBuf::from(BUNDLED_LIBRARY));
        if !path.exists() {
            return Err(RuntimeError::LibraryMissing(path));
        }
        let decoder_device = decoder_device.unwrap_or(device);
        let wants_cuda = [device, decoder_device].iter().any(|d| *d != Device::Cpu);
        if wants_cuda {
            preload_nvidia_libraries(&path);
        }
        let builder = ort::init_from(&path).map_err(|e| RuntimeError::LibraryUnusable(e.to_string()))?;
        let environment = builder.with_name("samserve").build()?;
        let mut cuda_missing = None;
        if wants_cuda && !ep::CUDA::is_available().unwrap_or(false) {
            if [device, decoder_device].iter().any(|d| matches!(d, Device::Cuda(_))) {
                return Err(RuntimeError::NoCudaProvider(path));
            }
            let reason = format!("{} is a CPU build of ONNX Runtime", path.display());
            tracing::info!(reason, "CUDA is not available; the models run on the CPU");
            cuda_missing = Some(reason);
        }
        Ok(Self { environment, encoder_device: device, decoder_device, cuda_missing, intra_threads, spinning })
    }

    /// Opens an ONNX model as a session on its network's device; says where it really runs. With `auto`, a CUDA
    /// failure (no GPU, missing NVIDIA libraries) falls back to the CPU and is logged with its reason.
    pub fn session(&self, model: OnnxSource, network: Network) -> Result<(Session, Placement), ort::Error> {
        let device = match network {
            Network::Encoder => self.encoder_device,
            Network::Decoder => self.decoder_device,
        };
        let gpu = match device {
            Device::Cpu => None,
            Device::Auto if self.cuda_missing.is_some() => None,
            Device::Auto => Some(0),
            Device::Cuda(index) => Some(index),
        };
        if let Some(index) = gpu {
            match self.open(model, Some(index)) {
                Ok(session) => return Ok((session, Placement::Cuda(index))),
                Err(error) if device == Device::Auto => {
                    tracing::warn!(?network, %error, "CUDA failed; the session runs on the CPU");
                }
                Err(error) => return Err(ort::Error::new(format!("--device cuda:{index}: {error}"))),
            }
        }
        Ok((self.open(model, None)?, Placement::Cpu))
    }

    fn open(&self, model: OnnxSource, cuda: Option<i32>) -> Result<Session, ort::Error> {
        let mut builder = Session::builder(&self.environment)?
            .with_optimization_level(GraphOptimizationLevel::Level3)?
            .with_intra_op_spinning(self.spinning)?
            .with_inter_op_spinning(self.spinning)?;
        if let Some(index) = cuda {
            builder = builder
                .with_execution_providers([ep::CUDA::default().with_device_id(index).build().error_on_failure()])?;
        }
        if let Some(threads) = self.intra_threads {
            builder = builder.with_intra_threads(threads)?;
        }
        match model {
            OnnxSource::File(path) => builder.commit_from_file(path),
            OnnxSource::Memory(bytes) => builder.commit_from_memory(bytes),
        }
    }
}

/// Loads the CUDA and cuDNN libraries of the `nvidia-*` wheels installed beside a pip-installed library
/// (`site-packages/onnxruntime/capi/libonnxruntime.so` -> `site-packages/nvidia/*/lib/*.so*`), so that the CUDA
/// provider finds them without LD_LIBRARY_PATH. Libraries that fail to load are left to the provider's own error.
fn preload_nvidia_libraries(library: &Path) {
    let Some(site_packages) = library.parent().and_then(Path::parent).and_then(Path::parent) else { return };
    let Ok(packages) = std::fs::read_dir(site_packages.join("nvidia")) else { return };
    let mut pending: Vec<PathBuf> = packages
        .flatten()
        .filter_map(|package| std::fs::read_dir(package.path().join("lib")).ok())
        .flat_map(|entries| entries.flatten().map(|entry| entry.path()))
        .filter(|path| path.file_name().is_some_and(|name| is_cuda_provider_dependency(&name.to_string_lossy())))
        .collect();
    // A library loads once the ones it links against are loaded (cuBLAS needs cuBLASLt, cuDNN's parts its graph
    // library): retry the failures until a round loads nothing more, whatever the order.
    loop {
        let before = pending.len();
        pending.retain(|file| ort::util::preload_dylib(file.as_path()).is_err());
        if pending.is_empty() || pending.len() == before {
            break;
        }
    }
    for file in pending {
        tracing::debug!(file = %file.display(), "not preloaded");
    }
}

/// The NVIDIA libraries ONNX Runtime's CUDA provider opens (a PyTorch environment has many more).
fn is_cuda_provider_dependency(file_name: &str) -> bool {
    const PREFIXES: [&str; 7] =
        ["libcudart.", "libcublas.", "libcublasLt.", "libcurand.", "libcufft.", "libcudnn", "libnvrtc"];
    file_name.contains(".so") && PREFIXES.iter().any(|prefix| file_name.starts_with(prefix))
}

/// Where the bytes of an ONNX model come from.
#[derive(Debug, Clone, Copy)]
pub enum OnnxSource<'a> {
    File(&'a Path),
    /// Embedded in the binary (the built-in model).
    Memory(&'a [u8]),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse() {
        assert_eq!("auto".parse(), Ok(Device::Auto));
        assert_eq!("CPU".parse(), Ok(Device::Cpu));
        assert_eq!("cuda".parse(), Ok(Device::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(Device::Cuda(3)));
        assert!("cuda:-1".parse::<Device>().is_err());
        assert!("tpu".parse::<Device>().unwrap_err().contains("auto, cpu, cuda or cuda:N"));
        assert_eq!(Placement::Cuda(1).to_string(), "cuda:1");
    }

    #[test]
    fn only_the_cuda_providers_libraries_are_preloaded() {
        for name in ["libcublasLt.so.13", "libcudnn_graph.so.9", "libnvrtc-builtins.so.13.5", "libcudart.so.13"] {
            assert!(is_cuda_provider_dependency(name), "{name}");
        }
        for name in ["libnccl.so.2", "libcusparse.so.12", "libnvblas.so.13", "libcudnn.txt"] {
            assert!(!is_cuda_provider_dependency(name), "{name}");
        }
    }
}
