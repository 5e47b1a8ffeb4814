//! The decoder as a web page runs it (onnxruntime-web), fed from the server's cached embedding: which decoders a
//! browser can run as they are, and the file of those with its SHA-256, read once when the model loads.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::onnx_file::has_external_data;
use super::point_inputs::PointInputs;
use super::{Decoder, Family, OnnxSource};

/// A decoder file that a browser can run.
pub struct BrowserDecoder {
    /// The bytes the server's own decoder sessions were opened from, kept rather than read again per request: what
    /// is served is what the server decodes with and what `sha256` names, whatever happens to the file on disk.
    bytes: Arc<[u8]>,
    sha256: String,
}

impl BrowserDecoder {
    /// The decoder's file when a browser can run it as it is, else why not: one file (no external data files), the
    /// point inputs of SamOnnxModel (`point_coords`, `point_labels`), a SAM or SAM 2 decoder, float32 inputs only.
    pub(super) fn load(source: OnnxSource, decoder: &Decoder, family: Family) -> Result<Self, String> {
        if decoder.point_inputs() != PointInputs::SamOnnx {
            let (coords, labels) = decoder.point_inputs().names();
            return Err(format!(
                "it takes its points as `{coords}` and `{labels}`, not `point_coords` and `point_labels`"
            ));
        }
        if !matches!(family, Family::Sam | Family::Sam2) {
            return Err(format!("it is an {} decoder, not a SAM or SAM 2 one", family.name()));
        }
        if decoder.takes_half_inputs() {
            return Err("it takes float16 inputs".to_string());
        }
        let bytes: Arc<[u8]> = match source {
            OnnxSource::File(path) => std::fs::read(path).map_err(|e| format!("its file cannot be read: {e}"))?.into(),
            OnnxSource::Memory(bytes) => bytes.into(),
        };
        match has_external_data(&bytes) {
            Ok(false) => {}
            Ok(true) => return Err("its weights are in external data files".to_string()),
            Err(error) => return Err(format!("its file cannot be read: {error}")),
        }
        let sha256 = Sha256::digest(&bytes).iter().map(|byte| format!("{byte:02x}")).collect();
        Ok(Self { bytes, sha256 })
    }

    /// The ONNX file's bytes.
    pub fn bytes(&self) -> Arc<[u8]> {
        Arc::clone(&self.bytes)
    }

    /// The SHA-256 of the file, 64 lowercase hex digits.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The first 16 hex digits of the SHA-256: enough to tell versions of the file apart in a URL.
    pub fn version(&self) -> &str {
        &self.sha256[..16]
    }
}
