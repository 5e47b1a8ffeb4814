//! What a model folder holds (docs/models.md, "Model folders"): its `model.toml`, or without one, the encoder and
//! the decoder told apart by their graphs' inputs.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Family;
use super::onnx_file::graph_names;

pub const MANIFEST_FILE: &str = "model.toml";
/// The largest `image_size` accepted: 16 times SAM's 1024, a 3 GiB float input.
const MAX_IMAGE_SIZE: usize = 16384;

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
        // TOML has nan and inf, and 1e39 is inf as f32: either would make every pixel NaN or infinite.
        if raw.pixel_mean.iter().any(|m| !m.is_finite()) {
            return Err(invalid("pixel_mean must be finite numbers".to_string()));
        }
        // The encoder input is S x S floats, allocated per image: 0 has no pixels, and a size past any model's
        // would only abort the first encoding for want of memory.
        if let Some(size) = raw.image_size.filter(|size| !(1..=MAX_IMAGE_SIZE).contains(size)) {
            return Err(invalid(format!("image_size {size} is not between 1 and {MAX_IMAGE_SIZE}")));
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::proptest_support::{config, mutated};

    const VALID: &str = r#"name = "tiny"
family = "sam"
encoder = "encoder.onnx"
decoder = "decoder.onnx"
image_size = 1024
pixel_mean = [123.675, 116.28, 103.53]
pixel_std = [58.395, 57.12, 57.375]
"#;

    const KEYS: &[&str] = &["name", "family", "encoder", "decoder", "image_size", "pixel_mean", "pixel_std", "other"];
    /// TOML's syntax and odd numbers, for the mutations.
    const TOKENS: &[&str] = &["=", "[", "]", ",", "\"", "\n", "nan", "inf", "-", "0", "e99", "#", "[table]"];

    fn folder() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
    }

    fn with(key: &str, value: &str) -> String {
        VALID
            .lines()
            .filter(|line| !line.starts_with(&format!("{key} =")))
            .chain([&*format!("{key} = {value}")])
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_valid_manifest_parses() {
        let manifest = Manifest::parse(VALID, folder()).unwrap();
        assert_eq!(
            (manifest.name.as_str(), manifest.family, manifest.image_size),
            ("tiny", Some(Family::Sam), Some(1024))
        );
        assert_eq!(manifest.encoder, folder().join("encoder.onnx"));
    }

    // Found by the property tests below: values that parsed and broke the model's first image.
    #[test]
    fn non_finite_means_and_unusable_image_sizes_are_refused() {
        for (key, value, message) in [
            ("pixel_mean", "[nan, 0, 0]", "pixel_mean must be finite"),
            ("pixel_mean", "[1, -inf, 0]", "pixel_mean must be finite"),
            ("pixel_mean", "[1e39, 0, 0]", "pixel_mean must be finite"),
            ("image_size", "0", "image_size 0 is not between 1 and 16384"),
            ("image_size", "1000000000000", "is not between 1 and 16384"),
        ] {
            let error = Manifest::parse(&with(key, value), folder()).unwrap_err().to_string();
            assert!(error.contains(message), "{key} = {value}: {error}");
        }
        assert!(Manifest::parse(&with("image_size", "16384"), folder()).is_ok());
    }

    /// Values TOML can hold, for any key.
    fn toml_value() -> impl Strategy<Value = String> {
        let float = prop_oneof![
            any::<f64>().prop_map(|v| format!("{v:?}")),
            prop::sample::select(vec!["nan", "-nan", "inf", "-inf", "0.0", "-0.0", "1e39", "1e-46", "5e-324", "1e300"])
                .prop_map(str::to_string),
        ];
        let scalar = prop_oneof![
            float.clone(),
            any::<i64>().prop_map(|v| v.to_string()),
            (0i64..3000).prop_map(|v| v.to_string()),
            "\"[a-z0-9./_ -]{0,12}\"",
            Just("true".to_string()),
        ];
        prop_oneof![
            3 => scalar.clone(),
            2 => prop::collection::vec(float, 0..5).prop_map(|v| format!("[{}]", v.join(", "))),
            1 => prop::collection::vec(scalar, 0..5).prop_map(|v| format!("[{}]", v.join(", "))),
        ]
    }

    fn check(manifest: Result<Manifest, ManifestError>) -> Result<(), TestCaseError> {
        match manifest {
            Ok(manifest) => {
                prop_assert!(manifest.pixel_std.iter().all(|s| s.is_normal()));
                prop_assert!(manifest.pixel_mean.iter().all(|m| m.is_finite()));
                prop_assert!(manifest.image_size.is_none_or(|size| (1..=MAX_IMAGE_SIZE).contains(&size)));
            }
            Err(error) => prop_assert!(matches!(error, ManifestError::Invalid { .. }), "{error}"),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(config(256))]

        #[test]
        fn any_text_parses_or_is_invalid(text in any::<String>()) {
            check(Manifest::parse(&text, folder()))?;
        }

        #[test]
        fn any_value_of_a_known_key_parses_or_is_invalid(
            key in prop::sample::select(KEYS.to_vec()),
            value in toml_value(),
        ) {
            check(Manifest::parse(&with(key, &value), folder()))?;
        }

        #[test]
        fn mutated_manifests_parse_or_are_invalid(
            bytes in mutated(VALID.as_bytes().to_vec(), 4, TOKENS)
        ) {
            check(Manifest::parse(&String::from_utf8_lossy(&bytes), folder()))?;
        }
    }
}
