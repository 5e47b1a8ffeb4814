//! The ONNX side: a model folder (manifest + encoder + decoder) and the ORT runtime. Knows nothing of HTTP.

mod browser;
mod builtin;
mod decoder;
mod encoder;
mod family;
mod float_io;
pub mod manifest;
pub mod onnx_file;
mod point_inputs;
mod pool;
pub mod preprocess;
pub mod prompt;
mod resample;
pub mod runtime;

use std::path::Path;

use ort::session::Session;

pub use browser::BrowserDecoder;
pub use builtin::BUILTIN_MODEL;
pub use decoder::{DecodedPrompt, Decoder, MaskTokens};
pub use encoder::{Embedding, EmbeddingDtype, Encoder, EncoderInput, InputLayout};
pub use family::Family;
pub use manifest::Manifest;
pub use preprocess::ImageSize;
pub use prompt::{Point, PointLabel, Prompt, PromptError};
pub use runtime::{Device, Network, OnnxSource, Placement, Runtime, RuntimeError, RuntimeOptions};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    #[error("{file}: {error}")]
    Load { file: String, error: ort::Error },
    #[error("{file} does not follow the SAM ONNX contract: {message}")]
    Contract { file: String, message: String },
    #[error("inference failed: {0}")]
    Run(#[from] ort::Error),
    #[error("prompt {index}: {error}")]
    Prompt { index: usize, error: PromptError },
    /// A request the model's files cannot answer (not a fault of the model, nor of the request's form).
    #[error("{0}")]
    Unsupported(String),
}

/// How many ONNX Runtime sessions of each network to open: runs of one network that can be in flight at once.
#[derive(Debug, Clone, Copy)]
pub struct SessionCounts {
    pub encoder: usize,
    pub decoder: usize,
}

impl Default for SessionCounts {
    fn default() -> Self {
        Self { encoder: 1, decoder: 1 }
    }
}

/// A loaded SAM-family model: image encoder and prompt decoder.
pub struct SamModel {
    pub manifest: Manifest,
    pub encoder: Encoder,
    pub decoder: Decoder,
    /// Where the encoder and decoder sessions really run.
    pub placement: (Placement, Placement),
    /// The decoder's file for a web page to run, or why a browser cannot run it.
    pub browser_decoder: Result<BrowserDecoder, String>,
}

impl SamModel {
    /// Loads `<folder>/model.toml` and its ONNX files; shapes come from the ONNX files.
    pub fn load(folder: &Path, runtime: &Runtime, sessions: SessionCounts) -> Result<Self, ModelError> {
        Self::from_manifest(Manifest::load(folder)?, runtime, sessions)
    }

    /// Opens the ONNX files a manifest names (a folder's, or the files a hub download chose).
    pub fn from_manifest(manifest: Manifest, runtime: &Runtime, sessions: SessionCounts) -> Result<Self, ModelError> {
        let (encoder, decoder) = (manifest.encoder.clone(), manifest.decoder.clone());
        Self::open(manifest, OnnxSource::File(&encoder), OnnxSource::File(&decoder), runtime, sessions)
    }

    /// The model built into the binary (`models/samserve-s`), usable wherever the binary runs.
    pub fn builtin(runtime: &Runtime, sessions: SessionCounts) -> Result<Self, ModelError> {
        let manifest = builtin::manifest()?;
        Self::open(manifest, builtin::ENCODER, builtin::DECODER, runtime, sessions)
    }

    fn open(
        manifest: Manifest,
        encoder_source: OnnxSource,
        decoder_source: OnnxSource,
        runtime: &Runtime,
        sessions: SessionCounts,
    ) -> Result<Self, ModelError> {
        let (encoder_sessions, encoder_placement) =
            open_sessions(runtime, encoder_source, Network::Encoder, &manifest.encoder, sessions.encoder)?;
        let (decoder_sessions, decoder_placement) =
            open_sessions(runtime, decoder_source, Network::Decoder, &manifest.decoder, sessions.decoder)?;
        let decoder_inputs = decoder_sessions[0].inputs();
        let family = Family::of_decoder(decoder_inputs.iter().map(|input| input.name()));
        if let Some(stated) = manifest.family.filter(|&stated| stated != family) {
            return Err(ModelError::Contract {
                file: manifest.decoder.display().to_string(),
                message: format!(
                    "model.toml says family = {:?}, but this is a {} decoder",
                    stated.name(),
                    family.name()
                ),
            });
        }
        let mut encoder = Encoder::new(encoder_sessions, &manifest, family, decoder_inputs)?;
        let decoder = Decoder::new(decoder_sessions, &manifest, &encoder)?;
        let browser_decoder = BrowserDecoder::load(decoder_source, &decoder, family);
        // A device copy is fed to the decoder as it is: both ends must be float32.
        let same_gpu = matches!(encoder_placement, Placement::Cuda(_)) && encoder_placement == decoder_placement;
        if same_gpu && encoder.binds_to_device() && !decoder.takes_half_embeddings() {
            encoder.keep_embeddings_on(encoder_placement);
        }
        Ok(Self { manifest, encoder, decoder, placement: (encoder_placement, decoder_placement), browser_decoder })
    }

    pub fn name(&self) -> &str {
        &self.manifest.name
    }
}

/// `count` sessions of one network and where they run (the first one's device: they are opened alike); `file`
/// names it in errors.
fn open_sessions(
    runtime: &Runtime,
    source: OnnxSource,
    network: Network,
    file: &Path,
    count: usize,
) -> Result<(Vec<Session>, Placement), ModelError> {
    let opened = (0..count.max(1))
        .map(|_| runtime.session(source, network))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ModelError::Load { file: file.display().to_string(), error })?;
    let placement = opened[0].1;
    Ok((opened.into_iter().map(|(session, _)| session).collect(), placement))
}

/// The static dimensions of a session input or output (`None` for a dynamic one), or a contract error.
fn static_dims(outlets: &[ort::value::Outlet], name: &str, file: &Path) -> Result<Vec<Option<usize>>, ModelError> {
    let contract = |message: String| ModelError::Contract { file: file.display().to_string(), message };
    let outlet = outlets.iter().find(|o| o.name() == name).ok_or_else(|| contract(format!("it has no `{name}`")))?;
    let shape = outlet.dtype().tensor_shape().ok_or_else(|| contract(format!("`{name}` is not a tensor")))?;
    Ok(shape.iter().map(|&d| usize::try_from(d).ok().filter(|&d| d > 0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The built-in model as the plain path runs it, and as the IoBinding path does with the CPU standing in as
    /// the device; and an image.
    fn plain_and_bound() -> (SamModel, SamModel, image::RgbImage) {
        // One runtime for the tests that run in parallel: ONNX Runtime allows one environment per process.
        static RUNTIME: std::sync::OnceLock<Runtime> = std::sync::OnceLock::new();
        let runtime = RUNTIME.get_or_init(|| {
            Runtime::load(RuntimeOptions { device: Device::Cpu, ..RuntimeOptions::default() }).unwrap()
        });
        let plain = SamModel::builtin(runtime, SessionCounts::default()).unwrap();
        let mut bound = SamModel::builtin(runtime, SessionCounts::default()).unwrap();
        bound.encoder.keep_embeddings_on(Placement::Cpu);
        let image = image::RgbImage::from_fn(96, 64, |x, y| image::Rgb([(x * 2) as u8, (y * 3) as u8, 90]));
        (plain, bound, image)
    }

    /// The IoBinding path (embedding left on the encoder's device and fed to the decoder as it is) is the one a
    /// shared GPU takes; with the CPU standing in as the device it must give what the plain path gives.
    #[test]
    fn embeddings_kept_on_the_device_decode_like_host_copies() {
        let (plain, bound, image) = plain_and_bound();
        let (host, kept) = (plain.encoder.encode(&image).unwrap(), bound.encoder.encode(&image).unwrap());
        assert!(!host.on_device() && kept.on_device());
        assert!(host.tensors_f32().eq(kept.tensors_f32()));
        let prompts =
            [Prompt { points: vec![Point { x: 40.0, y: 30.0, label: PointLabel::Foreground }], ..Prompt::default() }];
        let (a, b) = (plain.decoder.decode(&host, &prompts).unwrap(), bound.decoder.decode(&kept, &prompts).unwrap());
        assert_eq!((&a[0].scores, &a[0].low_res), (&b[0].scores, &b[0].low_res));
    }

    /// An embedding file in f32 holds what the decoder is fed: with `--cache-f16` and a device copy kept (the
    /// decoder takes that one as it is), the device copy's values, not the rounded cache entry's.
    #[test]
    fn embedding_files_in_f32_hold_the_values_the_decoder_is_fed() {
        let (plain, bound, image) = plain_and_bound();
        let exact = plain.encoder.encode(&image).unwrap();
        let (rounded, kept) = (exact.clone().into_f16(), bound.encoder.encode(&image).unwrap().into_f16());
        let file = |embedding: &Embedding, dtype| embedding.to_safetensors_as(dtype, Default::default()).unwrap();
        assert!(file(&kept, EmbeddingDtype::F32) == file(&exact, EmbeddingDtype::F32));
        assert!(file(&rounded, EmbeddingDtype::F32) != file(&exact, EmbeddingDtype::F32), "f16 rounds");
        assert!(file(&kept, EmbeddingDtype::F16) == file(&rounded, EmbeddingDtype::F16));
        assert!(file(&exact, EmbeddingDtype::F16) == file(&rounded, EmbeddingDtype::F16));
    }
}
