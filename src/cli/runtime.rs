//! The options every subcommand takes: which ONNX Runtime library, which device, how many threads.

use std::path::PathBuf;

use clap::Args;
use samserve::model::{Device, Runtime, RuntimeOptions};

#[derive(Args)]
#[command(next_help_heading = "ONNX Runtime options (any subcommand)")]
pub struct RuntimeArgs {
    /// The ONNX Runtime library to load (else $ORT_DYLIB_PATH, else the one `cargo build` fetched from PyPI).
    #[arg(long, env = "SAMSERVE_ORT_LIB", global = true)]
    ort_lib: Option<PathBuf>,
    /// Where the models run: auto (CUDA when it works, else the CPU), cpu, cuda or cuda:N (fail without CUDA).
    #[arg(long, env = "SAMSERVE_DEVICE", default_value = "auto", global = true)]
    device: Device,
    /// Where the decoder runs, if not where the encoder does (a small decoder can be as fast on the CPU).
    #[arg(long, env = "SAMSERVE_DECODER_DEVICE", global = true)]
    decoder_device: Option<Device>,
    /// Threads per ONNX Runtime session (default: ONNX Runtime's choice, one per core).
    #[arg(long, env = "SAMSERVE_THREADS", global = true)]
    threads: Option<usize>,
    /// Let idle ONNX Runtime threads spin (faster on an otherwise idle machine, slower when cores are shared).
    #[arg(long, env = "SAMSERVE_ORT_SPINNING", global = true)]
    ort_spinning: bool,
}

impl RuntimeArgs {
    /// Loads ONNX Runtime; `default_threads` applies when `--threads` is not given.
    pub fn load(&self, default_threads: Option<usize>) -> anyhow::Result<Runtime> {
        // ORT_DYLIB_PATH is the name ort's own users know.
        let library = self.ort_lib.clone().or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from));
        let options = RuntimeOptions {
            library,
            device: self.device,
            decoder_device: self.decoder_device,
            intra_threads: self.threads.or(default_threads),
            spinning: self.ort_spinning,
        };
        Ok(Runtime::load(options)?)
    }
}
