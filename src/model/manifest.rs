//! What a model folder holds (docs/models.md, "Model folders"): its `model.toml`, or without one, the encoder and
//! the decoder told apart by their graphs' inputs.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Family;
use super::onnx_file::graph_names;

pub const MANIFEST_FILE: &str = "model.toml";

/// A parsed `model.toml` with its file paths resolved against the model folder.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub name: String,
    /// The family `model.toml` states; otherwise the decoder's graph tells (it must agree either way).
    pub family: Option<Family>,
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
    family: Option<String>,
    encoder: PathBuf,
    decoder: PathBuf,
    image_size: Option<usize>,
    #[serde(default = "default_pixel_mean")]
    pixel_mean: [f32; 3],
    #[serde(default = "default_pixel_std")]
    pixel_std: [f32; 3],
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
    #[error("{folder} has no {MANIFEST_FILE}, and {message}")]
    Undetected { folder: PathBuf, message: String },
}

/// What SAM-family prompt decoders take and no encoder does: SamOnnxModel's points, transformers', EfficientSAM's.
const DECODER_INPUTS: [&str; 3] = ["point_coords", "input_points", "batched_point_coords"];
/// The decoder output of one score per mask token, and the token count of a multimask decoder.
const MASK_SCORES: &str = "iou_predictions";
const MULTIMASK_TOKENS: u64 = 4;

/// Whether `folder` holds a model: a `model.toml`, or ONNX files to find the encoder and decoder among.
pub fn is_model_folder(folder: &Path) -> bool {
    folder.join(MANIFEST_FILE).is_file() || onnx_files(folder).is_ok_and(|files| !files.is_empty())
}

/// The `.onnx` files directly in `folder`, sorted (external weight files have other extensions).
fn onnx_files(folder: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_file() && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx")))
        .collect();
    files.sort();
    Ok(files)
}

/// The name a folder gives its model.
fn folder_name(folder: &Path) -> Option<String> {
    folder.canonicalize().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
}

impl Manifest {
    /// Reads `<folder>/model.toml`, or without one, [`Self::detect`]s the folder. The model's name defaults to the
    /// folder's name.
    pub fn load(folder: &Path) -> Result<Self, ManifestError> {
        let path = folder.join(MANIFEST_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, folder),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && folder.is_dir() => Self::detect(folder),
            Err(error) => Err(ManifestError::Read { path, error }),
        }
    }

    /// A folder without `model.toml`: among its `.onnx` files, the decoder is the graph that takes points
    /// (`point_coords`, `input_points` or `batched_point_coords`) and the encoder the other one; there must be one
    /// encoder, and one decoder or several of which one gives the multimask candidates (`Acly/MobileSAM` ships a
    /// single-mask and a multimask decoder: the multimask one also answers single-mask requests as SamPredictor
    /// does). Everything else is the default.
    pub fn detect(folder: &Path) -> Result<Self, ManifestError> {
        let files = onnx_files(folder).map_err(|error| ManifestError::Read { path: folder.to_path_buf(), error })?;
        let name = folder_name(folder).ok_or_else(|| ManifestError::Undetected {
            folder: folder.to_path_buf(),
            message: "the folder has no name to give the model".into(),
        })?;
        Self::detect_among(name, folder, files)
    }

    /// [`Self::detect`] over a given list of `.onnx` files in `folder` (a model fetched from the hub: the files it
    /// chose in a snapshot that may hold other variants too).
    pub fn detect_among(name: String, folder: &Path, files: Vec<PathBuf>) -> Result<Self, ManifestError> {
        let undetected = |message: String| ManifestError::Undetected { folder: folder.to_path_buf(), message };
        let (mut encoders, mut decoders) = (Vec::new(), Vec::new());
        for file in files {
            let names = graph_names(&file)
                .map_err(|error| undetected(format!("{} is not an ONNX model it can read: {error}", file.display())))?;
            if DECODER_INPUTS.iter().any(|input| names.has_input(input)) {
                let masks = names.output(MASK_SCORES).and_then(|o| o.dims.as_ref()).and_then(|d| d.get(1).copied());
                decoders.push((file, masks.flatten()));
            } else {
                encoders.push(file);
            }
        }
        let multimask: Vec<&PathBuf> =
            decoders.iter().filter(|(_, masks)| *masks == Some(MULTIMASK_TOKENS)).map(|(file, _)| file).collect();
        let decoder = match (decoders.as_slice(), multimask.as_slice()) {
            ([(only, _)], _) => Some(only.clone()),
            (_, [multimask]) => Some((*multimask).clone()),
            _ => None,
        };
        let decoders: Vec<PathBuf> = decoders.into_iter().map(|(file, _)| file).collect();
        let (encoder, decoder) = match (encoders.as_slice(), decoder) {
            ([encoder], Some(decoder)) => (encoder.clone(), decoder),
            _ => {
                let list = |files: &[PathBuf]| {
                    let names: Vec<_> =
                        files.iter().filter_map(|f| f.file_name()).map(|n| n.to_string_lossy()).collect();
                    if names.is_empty() { "none".to_string() } else { names.join(", ") }
                };
                return Err(undetected(format!(
                    "its ONNX files are not one encoder and one decoder (nor several decoders, one of them \
                     multimask): encoders: {}; decoders, taking points (`point_coords`, `input_points` or `batched_point_coords`): {}; write a {MANIFEST_FILE} that \
                     names them",
                    list(&encoders),
                    list(&decoders)
                )));
            }
        };
        Ok(Self {
            name,
            family: None,
            encoder,
            decoder,
            image_size: None,
            pixel_mean: default_pixel_mean(),
            pixel_std: default_pixel_std(),
        })
    }

    /// Parses the text of `<folder>/model.toml`.
    pub fn parse(text: &str, folder: &Path) -> Result<Self, ManifestError> {
        let path = folder.join(MANIFEST_FILE);
        let invalid = |message: String| ManifestError::Invalid { path: path.clone(), message };
        let raw: RawManifest = toml::from_str(text).map_err(|e| invalid(e.message().to_string()))?;
        let family = match raw.family.as_deref().map(|name| (name, Family::from_name(name))) {
            None => None,
            Some((_, Some(family))) => Some(family),
            Some((name, None)) => {
                return Err(invalid(format!(
                    "family {name:?} is not supported (supported: \"sam\", \"sam2\", \"efficientsam\")"
                )));
            }
        };
        if raw.pixel_std.iter().any(|s| !s.is_normal()) {
            return Err(invalid("pixel_std must be non-zero".to_string()));
        }
        let name = match raw.name {
            Some(name) => name,
            None => folder_name(folder).ok_or_else(|| invalid("no name given and the folder has none".to_string()))?,
        };
        Ok(Self {
            name,
            family,
            encoder: folder.join(raw.encoder),
            decoder: folder.join(raw.decoder),
            image_size: raw.image_size,
            pixel_mean: raw.pixel_mean,
            pixel_std: raw.pixel_std,
        })
    }
}
