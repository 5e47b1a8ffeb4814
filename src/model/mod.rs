//! The ONNX side: a model folder (manifest + encoder + decoder) and the ORT runtime. Knows nothing of HTTP.

mod decoder;
mod encoder;
pub mod manifest;
pub mod preprocess;
pub mod prompt;
mod resample;
pub mod runtime;

use std::path::Path;

use ort::session::Session;

pub use decoder::{DecodedPrompt, Decoder};
pub use encoder::{Embedding, Encoder};
pub use manifest::Manifest;
pub use preprocess::ImageSize;
pub use prompt::{Point, PointLabel, Prompt, PromptError};
pub use runtime::{Device, Runtime, RuntimeError};

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
}

/// A loaded SAM-family model: image encoder and prompt decoder.
pub struct SamModel {
    pub manifest: Manifest,
    pub encoder: Encoder,
    pub decoder: Decoder,
}

impl SamModel {
    /// Loads `<folder>/model.toml` and its ONNX files; shapes come from the ONNX files.
    pub fn load(folder: &Path, runtime: &Runtime) -> Result<Self, ModelError> {
        let manifest = Manifest::load(folder)?;
        let encoder = Encoder::new(open_session(runtime, &manifest.encoder)?, &manifest)?;
        let decoder = Decoder::new(
            open_session(runtime, &manifest.decoder)?,
            &manifest,
            encoder.embedding_shape(),
        )?;
        Ok(Self {
            manifest,
            encoder,
            decoder,
        })
    }

    pub fn name(&self) -> &str {
        &self.manifest.name
    }
}

fn open_session(runtime: &Runtime, file: &Path) -> Result<Session, ModelError> {
    runtime.session(file).map_err(|error| ModelError::Load {
        file: file.display().to_string(),
        error,
    })
}

/// The static dimensions of a session input or output (`None` for a dynamic one), or a contract error.
fn static_dims(outlets: &[ort::value::Outlet], name: &str, file: &Path) -> Result<Vec<Option<usize>>, ModelError> {
    let contract = |message: String| ModelError::Contract {
        file: file.display().to_string(),
        message,
    };
    let outlet = outlets
        .iter()
        .find(|o| o.name() == name)
        .ok_or_else(|| contract(format!("it has no `{name}`")))?;
    let shape = outlet
        .dtype()
        .tensor_shape()
        .ok_or_else(|| contract(format!("`{name}` is not a tensor")))?;
    Ok(shape
        .iter()
        .map(|&d| usize::try_from(d).ok().filter(|&d| d > 0))
        .collect())
}
