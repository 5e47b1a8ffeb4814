//! An embedding as a safetensors file: its tensors by decoder input name, and metadata. Two uses: what replicas
//! share through Redis (the tensors as stored, F32 or F16 as `--cache-f16` keeps them, and the image's sizes), and
//! what a decoder elsewhere is fed from (the page's, in the browser: the tensors in the float type it asks for).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use half::f16;
use ndarray::ArrayD;
use safetensors::{Dtype, SafeTensors};
use serde::Serialize;

use super::{Embedding, EmbeddingDtype, EmbeddingPart, EmbeddingTensor};
use crate::model::{ImageSize, ModelError};

const ORIGINAL: &str = "original_size";
const RESIZED: &str = "resized_size";

#[derive(Debug, thiserror::Error)]
#[error("not a samserve embedding: {0}")]
pub struct EmbeddingFileError(String);

impl Embedding {
    /// The host tensors as stored (device copies are not written) and `metadata`, with the sizes added as `"H,W"`:
    /// what [`Self::from_safetensors`] reads.
    pub fn to_safetensors(&self, mut metadata: HashMap<String, String>) -> Vec<u8> {
        let size = |s: ImageSize| format!("{},{}", s.height, s.width);
        metadata.insert(ORIGINAL.to_string(), size(self.original));
        metadata.insert(RESIZED.to_string(), size(self.resized));
        let tensors = self.parts.iter().map(|part| match &part.tensor {
            EmbeddingTensor::F32(tensor) => (Dtype::F32, le_bytes(tensor, f32::to_le_bytes)),
            EmbeddingTensor::F16(tensor) => (Dtype::F16, le_bytes(tensor, f16::to_le_bytes)),
        });
        self.write_file(tensors.collect(), &metadata)
    }

    /// The tensors in `dtype` and `metadata` as it is. F32: the values the decoder is fed (f16 storage widened
    /// exactly, or the device copy, see [`EmbeddingPart::fed_f32`]); F16: the host tensors, rounded to the nearest
    /// f16 where stored as f32.
    pub fn to_safetensors_as(
        &self,
        dtype: EmbeddingDtype,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<u8>, ModelError> {
        let tensors = self.parts.iter().map(|part| {
            Ok(match (dtype, &part.tensor) {
                (EmbeddingDtype::F32, _) => (Dtype::F32, le_bytes(&*part.fed_f32()?, f32::to_le_bytes)),
                (EmbeddingDtype::F16, EmbeddingTensor::F32(tensor)) => {
                    (Dtype::F16, le_bytes(tensor, |value| f16::from_f32(value).to_le_bytes()))
                }
                (EmbeddingDtype::F16, EmbeddingTensor::F16(tensor)) => (Dtype::F16, le_bytes(tensor, f16::to_le_bytes)),
            })
        });
        Ok(self.write_file(tensors.collect::<Result<_, ModelError>>()?, &metadata))
    }

    /// safetensors' layout: the header's length (u64, little-endian), the header (JSON, padded with spaces to a
    /// multiple of 8 bytes), then each part's data (`tensors`, in the parts' order). Written here because
    /// `safetensors::serialize` writes the metadata in the order of a `HashMap`, which changes from call to call:
    /// the same embedding must always be the same bytes (one ETag names them).
    fn write_file(&self, tensors: Vec<(Dtype, Vec<u8>)>, metadata: &HashMap<String, String>) -> Vec<u8> {
        #[derive(Serialize)]
        #[serde(untagged)]
        enum Entry<'a> {
            Metadata(BTreeMap<&'a str, &'a str>),
            Tensor { dtype: Dtype, shape: &'a [usize], data_offsets: [usize; 2] },
        }
        let sorted = metadata.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect();
        let mut header = BTreeMap::from([("__metadata__", Entry::Metadata(sorted))]);
        let mut offset = 0;
        for (part, (dtype, bytes)) in self.parts.iter().zip(&tensors) {
            let data_offsets = [offset, offset + bytes.len()];
            header
                .insert(&part.decoder_input, Entry::Tensor { dtype: *dtype, shape: part.tensor.shape(), data_offsets });
            offset += bytes.len();
        }
        let mut json = serde_json::to_vec(&header).expect("strings and numbers serialize");
        json.resize(json.len().next_multiple_of(8), b' ');
        let mut file = Vec::with_capacity(8 + json.len() + offset);
        file.extend_from_slice(&(json.len() as u64).to_le_bytes());
        file.extend_from_slice(&json);
        for (_, bytes) in &tensors {
            file.extend_from_slice(bytes);
        }
        file
    }

    /// The embedding and the metadata of a file [`Self::to_safetensors`] wrote. Tensors come back in the order
    /// written (the decoder takes them by name anyway).
    pub fn from_safetensors(bytes: &[u8]) -> Result<(Self, HashMap<String, String>), EmbeddingFileError> {
        let error = |message: String| EmbeddingFileError(message);
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| error(e.to_string()))?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let file = SafeTensors::deserialize(bytes).map_err(|e| error(e.to_string()))?;
        let size = |key: &str| -> Result<ImageSize, EmbeddingFileError> {
            let text = metadata.get(key).ok_or_else(|| error(format!("no {key}")))?;
            let parsed: Option<Vec<usize>> = text.split(',').map(|n| n.trim().parse().ok()).collect();
            match parsed.as_deref() {
                Some([height, width]) => Ok(ImageSize::new(*height, *width)),
                _ => Err(error(format!("{key} {text:?}"))),
            }
        };
        let (original, resized) = (size(ORIGINAL)?, size(RESIZED)?);
        // The header's order: offsets ascending, the order the tensors were written in.
        let mut named = file.tensors();
        named.sort_by_key(|(_, view)| view.data().as_ptr() as usize);
        let mut parts = Vec::with_capacity(named.len());
        for (name, view) in named {
            let shape = view.shape().to_vec();
            let tensor = match view.dtype() {
                Dtype::F32 => EmbeddingTensor::F32(array(shape, view.data(), f32::from_le_bytes)?),
                Dtype::F16 => EmbeddingTensor::F16(array(shape, view.data(), f16::from_le_bytes)?),
                other => return Err(error(format!("{name}: dtype {other:?}"))),
            };
            parts.push(EmbeddingPart { decoder_input: Arc::from(name.as_str()), tensor, on_device: None });
        }
        Ok((Self { parts, original, resized }, metadata))
    }
}

fn array<T, const N: usize>(
    shape: Vec<usize>,
    bytes: &[u8],
    from_le: impl Fn([u8; N]) -> T,
) -> Result<ArrayD<T>, EmbeddingFileError> {
    let values: Vec<T> =
        bytes.chunks_exact(N).map(|chunk| from_le(chunk.try_into().expect("chunks of N bytes"))).collect();
    ArrayD::from_shape_vec(shape, values).map_err(|e| EmbeddingFileError(e.to_string()))
}

impl EmbeddingTensor {
    fn shape(&self) -> &[usize] {
        match self {
            Self::F32(tensor) => tensor.shape(),
            Self::F16(tensor) => tensor.shape(),
        }
    }
}

/// The little-endian bytes of a tensor's values (converted by `to_le`), in logical (row-major) order.
fn le_bytes<T: Copy, const N: usize>(tensor: &ArrayD<T>, to_le: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    tensor.iter().flat_map(|&value| to_le(value)).collect()
}
