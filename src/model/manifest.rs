//! `model.toml`: what a model folder holds (docs/models.md, "Model folders").

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const MANIFEST_FILE: &str = "model.toml";

/// A parsed `model.toml` with its file paths resolved against the model folder.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub name: String,
    pub encoder: PathBuf,
    pub decoder: PathBuf,
    /// S, the longest side after ResizeLongestSide; when given, it must agree with the encoder's input.
    pub image_size: Option<usize>,
    pub pixel_mean: [f32; 3],
    pub pixel_std: [f32; 3],
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: Option<String>,
    #[serde(default = "default_family")]
    family: String,
    encoder: PathBuf,
    decoder: PathBuf,
    image_size: Option<usize>,
    #[serde(default = "default_pixel_mean")]
    pixel_mean: [f32; 3],
    #[serde(default = "default_pixel_std")]
    pixel_std: [f32; 3],
}

fn default_family() -> String {
    "sam".to_string()
}

/// The ImageNet statistics the official SAM models are trained with.
fn default_pixel_mean() -> [f32; 3] {
    [123.675, 116.28, 103.53]
}

fn default_pixel_std() -> [f32; 3] {
    [58.395, 57.12, 57.375]
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("invalid {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Manifest {
    /// Reads `<folder>/model.toml`. The model's name defaults to the folder's name.
    pub fn load(folder: &Path) -> Result<Self, ManifestError> {
        let path = folder.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|error| ManifestError::Read { path: path.clone(), error })?;
        Self::parse(&text, folder)
    }

    /// Parses the text of `<folder>/model.toml`.
    pub fn parse(text: &str, folder: &Path) -> Result<Self, ManifestError> {
        let path = folder.join(MANIFEST_FILE);
        let invalid = |message: String| ManifestError::Invalid { path: path.clone(), message };
        let raw: RawManifest = toml::from_str(text).map_err(|e| invalid(e.message().to_string()))?;
        if raw.family != "sam" {
            return Err(invalid(format!("family {:?} is not supported (supported: \"sam\")", raw.family)));
        }
        if raw.pixel_std.iter().any(|s| !s.is_normal()) {
            return Err(invalid("pixel_std must be non-zero".to_string()));
        }
        let name = match raw.name {
            Some(name) => name,
            None => folder
                .canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .ok_or_else(|| invalid("no name given and the folder has none".to_string()))?,
        };
        Ok(Self {
            name,
            encoder: folder.join(raw.encoder),
            decoder: folder.join(raw.decoder),
            image_size: raw.image_size,
            pixel_mean: raw.pixel_mean,
            pixel_std: raw.pixel_std,
        })
    }
}
