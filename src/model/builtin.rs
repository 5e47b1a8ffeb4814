//! The default model, embedded in the binary so that `samserve` segments out of the box wherever it runs
//! (`cargo install` included). Its source is the model folder `models/samserve-s`.

use std::path::Path;

use super::manifest::{Manifest, ManifestError};
use super::runtime::OnnxSource;

/// The name of the built-in model.
pub const BUILTIN_MODEL: &str = "samserve-s";
const FOLDER: &str = "models/samserve-s";
const MANIFEST: &str = include_str!("../../models/samserve-s/model.toml");
pub(super) const ENCODER: OnnxSource = OnnxSource::Memory(include_bytes!("../../models/samserve-s/encoder.onnx"));
pub(super) const DECODER: OnnxSource = OnnxSource::Memory(include_bytes!("../../models/samserve-s/decoder-lean.onnx"));

/// The embedded `model.toml` (its file names name the embedded networks in messages).
pub(super) fn manifest() -> Result<Manifest, ManifestError> {
    let manifest = Manifest::parse(MANIFEST, Path::new(FOLDER))?;
    debug_assert_eq!(manifest.name, BUILTIN_MODEL);
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_files_are_the_ones_the_manifest_names() {
        let manifest = manifest().unwrap();
        assert_eq!(manifest.name, BUILTIN_MODEL);
        assert_eq!(manifest.encoder, Path::new(FOLDER).join("encoder.onnx"));
        assert_eq!(manifest.decoder, Path::new(FOLDER).join("decoder-lean.onnx"));
    }
}
